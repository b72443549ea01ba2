"""mlflow-sync: move MLflow tracking data between servers without losing anything, and prove it."""

__version__ = "0.1.0"
