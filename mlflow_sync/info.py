"""`mlflow-sync info`: what a server is, which MLflow it runs, what it can hold and what it holds."""

from __future__ import annotations

from dataclasses import asdict

from mlflow_sync.connection import Server
from mlflow_sync.inventory import take_inventory


def server_info(server: Server) -> dict:
    """Version and capabilities as the server reports them, and its inventory (counts per kind)."""
    capabilities = server.capabilities()
    inventory = take_inventory(server)
    return {
        "server": server.display,
        "kind": server.spec.kind,
        "arn": server.spec.arn.arn if server.spec.arn else None,
        "mlflow_version": capabilities.version,
        "capabilities": {k: v for k, v in asdict(capabilities).items() if k != "version"},
        "experiments": inventory.get("experiments"),
        "inventory": inventory.as_dict(),
    }
