"""Every pair users have: http -> ARN App, ARN tracking server -> ARN App, DB URI -> http, a target
writing S3 directly, and PostgreSQL/MariaDB sources. Sources are small and built once where they
can be shared; the comparison is the validator's (``migrate`` exits non-zero unless it is clean)
plus direct checks of the points users ask about."""

from __future__ import annotations

import json
import logging

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import RUN_ID_TAG
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.migrate.conftest import all_runs, build_plain_runs

log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def rich_direct_source(server_pool):
    """One rich source on a server whose clients write S3 directly: reachable over http and, once
    registered with a test's SageMaker emulator, by a tracking-server ARN. Tests only read it."""
    server = server_pool.acquire("sqlite", "direct")
    try:
        with connect(server.url, role="source") as source:
            built = build_rich_source(source, runs_per_experiment=1)
        yield server, built
    finally:
        server_pool.release(server)


def _migrate(source_uri: str, target_uri: str, work) -> dict:
    assert main(["migrate", "--source", source_uri, "--target", target_uri, "--work-dir", str(work),
                 "--quiet"]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is True, report
    return report


def _check_rich_copy(target_uri: str, built: dict) -> None:
    with connect(target_uri, role="target") as target:
        copies = {r.data.tags[RUN_ID_TAG]: r for r in all_runs(target.client)}
        assert set(copies) == set(built["runs"]) | set(built["deleted_runs"])
        assert copies[built["deleted_runs"][0]].info.lifecycle_stage == "deleted"
        assert target.client.get_registered_model("fraud détection").aliases == {"champion": "3", "baseline": "1"}
        assert sorted(int(v.version) for v in target.client.search_model_versions("name = 'fraud détection'")) == [1, 3]
        first = target.client.get_model_version("fraud détection", "1")
        assert first.source.startswith("models:/m-") and first.source != f"models:/{built['logged_models'][0]}"
        child = copies[built["runs"][1]]
        assert {a.path for a in target.client.list_artifacts(child.info.run_id)} == {"plots", "model_summary.json"}
        assert target.client.get_prompt_version_by_alias("greeting-prompt", "production").template == "Hello {{name}}!"


def _log_requests_per_run(pair: str, report: dict, runs: int) -> None:
    """Measured numbers for the report (not asserted here: the budget test asserts them)."""
    for side in ("source", "target"):
        log.warning("%s: %.1f requests per run at the %s", pair, sum(report["requests"][side].values()) / runs, side)


@pytest.mark.slow
def test_http_to_arn_mlflow_app(rich_direct_source, mlflow_server, sagemaker_endpoint, tmp_path):
    source_server, built = rich_direct_source
    app = sagemaker_endpoint.add_app(mlflow_server("sqlite", "direct"))
    report = _migrate(source_server.url, app, tmp_path / "work")
    assert sagemaker_endpoint.counter.rejected == []
    _check_rich_copy(app, built)
    _log_requests_per_run("http -> App", report, len(built["runs"]) + 1)


@pytest.mark.slow
def test_arn_tracking_server_to_arn_mlflow_app(rich_direct_source, mlflow_server, sagemaker_endpoint, tmp_path):
    source_server, built = rich_direct_source
    tracking = sagemaker_endpoint.add_tracking_server(source_server)
    app = sagemaker_endpoint.add_app(mlflow_server("sqlite", "direct"))
    report = _migrate(tracking, app, tmp_path / "work")
    assert sagemaker_endpoint.counter.rejected == []  # every request signed for its own ARN
    source_writes = [e for e in sagemaker_endpoint.counter_for(tracking).by_endpoint() if "create" in e]
    assert source_writes == []  # the source is only read
    assert sagemaker_endpoint.counter_for(app).count("runs/create") == len(built["runs"]) + 1
    _check_rich_copy(app, built)
    _log_requests_per_run("tracking server -> App", report, len(built["runs"]) + 1)


def test_database_uri_source_into_a_target_writing_s3_directly(mlflow_server, tmp_path, monkeypatch):
    """sqlite:/// -> http where the target server does not proxy artifacts (clients write S3)."""
    monkeypatch.chdir(tmp_path)  # the embedded store keeps its artifacts under ./mlruns
    source_uri = f"sqlite:///{tmp_path / 'source.db'}"
    with connect(source_uri, role="target") as store:  # only a target may be created from nothing
        built = build_rich_source(store, runs_per_experiment=1, with_traces=False)
    target_server = mlflow_server("sqlite", "direct")
    _migrate(source_uri, target_server.url, tmp_path / "work")
    _check_rich_copy(target_server.url, built)
    keys = target_server.artifact_keys()
    assert any(key.endswith("plots/loss curve.txt") for key in keys) and any(key.endswith("/MLmodel") for key in keys)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_postgresql_and_mariadb_sources(mlflow_server, backend, tmp_path):
    source_server, target_server = mlflow_server(backend), mlflow_server()
    with connect(source_server.url, role="source") as source:
        run_ids = build_plain_runs(source.client, 3, long_histories_every=2)
    _migrate(source_server.url, target_server.url, tmp_path / "work")
    with connect(target_server.url, role="target") as target:
        copies = {r.data.tags[RUN_ID_TAG]: r for r in all_runs(target.client)}
        assert set(copies) == set(run_ids)
        assert len(target.client.get_metric_history(copies[run_ids[0]].info.run_id, "m4")) == 100
