"""Export, import and one-shot migration between MLflow servers."""
