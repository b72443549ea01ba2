"""The ready migration profiles in configs/ load, and say what the runbook says they do."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_sync.config import load_profile

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("name", "source_rps", "target_rps"), [
    ("self-managed-to-app.yaml", 40, 25),
    ("tracking-server-to-app.yaml", 25, 25),
    ("http-to-http.yaml", None, None),
])
def test_migration_profiles_load(name, source_rps, target_rps):
    profile = load_profile(CONFIGS / name)
    assert (profile.source.max_rps, profile.target.max_rps) == (source_rps, target_rps)
    assert profile.description and profile.retry.max_total_seconds >= 300
    assert name in (CONFIGS.parent / "docs" / "migration-runbook.md").read_text()
