"""Fixtures of the sync and snapshot tests: quiet run links, small sources."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_run_links(monkeypatch):
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def register_versions(client, name: str, run_ids: list[str], aliases: dict[str, int]) -> None:
    """A registered model with one version per run (``runs:/<id>/model`` sources) and aliases."""
    client.create_registered_model(name, tags={"team": "fraud"}, description="scores transactions")
    for run_id in run_ids:
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, await_creation_for=0)
    for alias, version in aliases.items():
        client.set_registered_model_alias(name, alias, str(version))
