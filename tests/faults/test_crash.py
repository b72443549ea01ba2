"""SIGKILL `mlflow-sync migrate` at seeded points, one after the other, then let it finish.

tests/migrate/test_migrate_http.py already kills an import mid log-batch; these kill the whole
`migrate` while the export downloads artifacts, right after the server created a run, a logged
model and a model version whose answers the tool never saw, in the middle of an artifact upload
and while a model-version create is on its way. Each re-run resumes from the work directory;
at the end every object is in the target exactly once and validation (with checksums) is clean.
"""

from __future__ import annotations

import json
import random

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.faults.killing import KillPoint, kill_at
from tests.faults.test_fault_rates import RICH_SOURCE

SEED = 20261123


@pytest.mark.slow
def test_sigkill_at_seeded_points_then_resume_leaves_every_object_once(mlflow_server, tmp_path, quick_profile):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_rich_source(connect(source_server.url, role="source"), runs_per_experiment=1)
    work = tmp_path / "work"
    args = ["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
            "--config", quick_profile, "--quiet"]
    rng = random.Random(SEED)
    points = [
        KillPoint("export: artifact download", source_server.proxy, "GET /api/2.0/mlflow-artifacts/presigned/*",
                  rng.randint(1, 4), after_forward=False),
        KillPoint("import: run created, answer lost", target_server.proxy, "POST /api/2.0/mlflow/runs/create",
                  rng.randint(1, 3), after_forward=True),
        KillPoint("import: logged model created, answer lost", target_server.proxy,
                  "POST /api/2.0/mlflow/logged-models", rng.randint(1, 2), after_forward=True),
        KillPoint("import: mid artifact upload", target_server.proxy, "PUT /api/2.0/mlflow-artifacts/artifacts/*",
                  rng.randint(1, 4), after_forward=False),
        KillPoint("import: model version create in flight", target_server.proxy,
                  "POST /api/2.0/mlflow/model-versions/create", 1, after_forward=False),
        KillPoint("import: model version created, answer lost", target_server.proxy,
                  "POST /api/2.0/mlflow/model-versions/create", 1, after_forward=True),
    ]
    for point in points:
        kill_at(point, args)
    journal = (work / "journal.jsonl").read_text().splitlines()

    assert main(args) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is True, report["validation"]
    assert main(["validate", "--source", source_server.url, "--target", target_server.url, "--one-way",
                 "--checksum", "--metric-history", "--config", quick_profile, "--quiet"]) == 0
    held = assert_exactly_once(connect(target_server.url, role="target").client, RICH_SOURCE)
    record_summary("sigkill_resume", kills=[f"{p.name} (request #{p.nth})" for p in points],
                   journal_lines_before_final_run=len(journal), objects=held, lost=0)
