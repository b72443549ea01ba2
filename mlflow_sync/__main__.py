"""`python -m mlflow_sync`: the same entry point as the `mlflow-sync` console script."""

from mlflow_sync.cli import run

if __name__ == "__main__":
    run()
