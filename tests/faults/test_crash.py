"""SIGKILL `mlflow-sync migrate` at seeded points, one after the other, then let it finish.

tests/migrate/test_migrate_http.py already kills an import mid log-batch; these kill the whole
`migrate` while the export downloads artifacts, right after the server created a run, a logged
model and a model version whose answers the tool never saw, in the middle of an artifact upload
and while a model-version create is on its way. Each re-run resumes from the work directory;
at the end every object is in the target exactly once and validation (with checksums) is clean.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.faults.test_fault_rates import RICH_SOURCE
from tests.harness import DelayAfterForward, ResetBeforeForward, normalize_path

SEED = 20261123


class KillPoint:
    """Hook that marks the `nth` request to `endpoint` ("METHOD /route") and holds it until the kill.

    ``after_forward``: the server acts on the request, the answer is held (the tool dies not
    knowing); otherwise the request is held before the server sees it and then dropped.
    """

    def __init__(self, name: str, server, endpoint: str, nth: int, *, after_forward: bool):
        self.name, self.server, self.endpoint, self.nth = name, server, endpoint, nth
        self.after_forward = after_forward
        self.seen = 0
        self.arrived = threading.Event()
        self.killed = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request):
        if f"{request.method} {normalize_path(request.path)}" != self.endpoint:
            return None
        with self._lock:
            self.seen += 1
            if self.seen != self.nth:
                return None
        if self.after_forward:
            return DelayAfterForward(20)
        self.arrived.set()
        self.killed.wait(60)
        return ResetBeforeForward()

    def reached(self) -> bool:
        if not self.after_forward:
            return self.arrived.is_set()
        return any(r.endpoint == self.endpoint and r.status == 200 and r.fault == "DelayAfterForward"
                   for r in self.server.counter.snapshot())


def _kill_at(point: KillPoint, args: list[str]) -> None:
    point.server.proxy.faults = point
    process = subprocess.Popen([sys.executable, "-c", "from mlflow_sync.cli import run; run()", *args],
                               env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    try:
        while not point.reached():
            assert process.poll() is None, (f"{point.name}: migrate ended first: {process.stderr.read()[-2000:]}",
                                            point.seen)
            assert time.monotonic() < deadline, f"{point.name}: never reached"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        point.killed.set()
        point.server.proxy.faults = None
        if process.poll() is None:
            process.kill()
        process.stderr.close()


@pytest.mark.slow
def test_sigkill_at_seeded_points_then_resume_leaves_every_object_once(mlflow_server, tmp_path, quick_profile):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_rich_source(connect(source_server.url, role="source"), runs_per_experiment=1)
    work = tmp_path / "work"
    args = ["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
            "--include-deleted-runs", "--config", quick_profile, "--quiet"]
    rng = random.Random(SEED)
    points = [
        KillPoint("export: artifact download", source_server, "GET /api/2.0/mlflow-artifacts/presigned/*",
                  rng.randint(1, 4), after_forward=False),
        KillPoint("import: run created, answer lost", target_server, "POST /api/2.0/mlflow/runs/create",
                  rng.randint(1, 3), after_forward=True),
        KillPoint("import: logged model created, answer lost", target_server,
                  "POST /api/2.0/mlflow/logged-models", rng.randint(1, 2), after_forward=True),
        KillPoint("import: mid artifact upload", target_server, "PUT /api/2.0/mlflow-artifacts/artifacts/*",
                  rng.randint(1, 4), after_forward=False),
        KillPoint("import: model version create in flight", target_server,
                  "POST /api/2.0/mlflow/model-versions/create", 1, after_forward=False),
        KillPoint("import: model version created, answer lost", target_server,
                  "POST /api/2.0/mlflow/model-versions/create", 1, after_forward=True),
    ]
    for point in points:
        _kill_at(point, args)
    journal = (work / "journal.jsonl").read_text().splitlines()

    assert main(args) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is True, report["validation"]
    assert main(["validate", "--source", source_server.url, "--target", target_server.url, "--one-way",
                 "--checksum", "--metric-history", "--config", quick_profile, "--quiet"]) == 0
    held = assert_exactly_once(connect(target_server.url, role="target").client, RICH_SOURCE)
    record_summary("sigkill_resume", kills=[f"{p.name} (request #{p.nth})" for p in points],
                   journal_lines_before_final_run=len(journal), objects=held, lost=0)
