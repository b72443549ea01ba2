"""`mlflow-sync info`: what a server is, which MLflow it runs and what it can hold."""

from __future__ import annotations

from dataclasses import asdict

from mlflow_sync.connection import Server


def server_info(server: Server) -> dict:
    """Version and capabilities as the server reports them, plus the experiment count."""
    capabilities = server.capabilities()
    experiments = 0
    page_token = None
    while True:
        page = server.client.search_experiments(max_results=1000, page_token=page_token, view_type=3)
        experiments += len(page)
        page_token = page.token
        if not page_token:
            break
    return {
        "server": server.display,
        "kind": server.spec.kind,
        "arn": server.spec.arn.arn if server.spec.arn else None,
        "mlflow_version": capabilities.version,
        "capabilities": {k: v for k, v in asdict(capabilities).items() if k != "version"},
        "experiments": experiments,
    }
