"""Fixtures of the validator tests: one seeded source per session, a fresh faithful copy per test."""

from __future__ import annotations

import pytest

from mlflow_sync.connection import connect
from tests.validate.faithful import faithful_copy, seed_source


@pytest.fixture(scope="session")
def seeded_source(session_mlflow_server):
    """A source server seeded once per session (tests must not change it)."""
    server = session_mlflow_server("sqlite", "proxied")
    with connect(server.url, role="source") as source:
        ids = seed_source(source)
        yield server, source, ids


@pytest.fixture
def copied(seeded_source, mlflow_server):
    """(source Server, target Server, target MlflowServer, seed ids, run map): a fresh faithful copy."""
    _, source, ids = seeded_source
    target_server = mlflow_server("sqlite", "proxied")
    with connect(target_server.url, role="target") as target:
        run_map = faithful_copy(source, target)
        yield source, target, target_server, ids, run_map
