"""Throttling, 5xx, resets and timeouts at a seeded rate: every object arrives exactly once.

Each `RandomFaults` hook draws from every fault kind (429 with and without Retry-After,
500/502/503, a reset before and after the server saw the request, a slow answer and one that
outlasts the client's timeout) for 5% of the requests on both sides.
"""

from __future__ import annotations

import json
import time

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.faults.conftest import CLIENT_TIMEOUT, assert_one_line_error, run_cli, write_profile
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.harness import RandomFaults
from tests.migrate.conftest import build_plain_runs

RATE = 0.05
RICH_SOURCE = {"experiment": 2, "run": 4, "logged_model": 2, "model_version": 2, "prompt_version": 2, "trace": 2}
"""What build_rich_source(runs_per_experiment=1) holds: the deleted run included, version 2 deleted."""


def _faults(seed: int) -> RandomFaults:
    return RandomFaults(RATE, seed=seed, timeout=CLIENT_TIMEOUT + 1)


@pytest.mark.slow
def test_migrate_and_validate_at_five_percent_faults(mlflow_server, tmp_path, quick_profile):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_rich_source(connect(source_server.url, role="source"), runs_per_experiment=1)
    source_faults, target_faults = _faults(7), _faults(11)
    source_server.proxy.faults, target_server.proxy.faults = source_faults, target_faults
    work = tmp_path / "work"

    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                 str(work), "--config", quick_profile, "--quiet"]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is True, report["validation"]
    assert main(["validate", "--source", source_server.url, "--target", target_server.url,
                 "--config", quick_profile, "--quiet", "--one-way", "--metric-history", "--checksum",
                 "--report-json", str(tmp_path / "validation.json")]) == 0
    injected = source_faults.injected + target_faults.injected
    source_server.proxy.faults = target_server.proxy.faults = None

    held = assert_exactly_once(connect(target_server.url, role="target").client, RICH_SOURCE)
    requests = source_server.counter.total + target_server.counter.total
    assert injected.total() >= 10, injected  # the run really went through faults
    record_summary("migrate_validate_5pct", requests=requests, faults=dict(injected), objects=held, lost=0)


def test_outage_longer_than_the_retry_budget_stops_then_resumes(mlflow_server, tmp_path, quick_profile):
    """The target fails every request after the first runs arrived: stop in one line, resume later."""
    source_server, target_server = mlflow_server(), mlflow_server()
    run_ids = build_plain_runs(connect(source_server.url, role="source").client, 6, long_histories_every=100)
    outage = RandomFaults(1.0, seed=3, timeout=CLIENT_TIMEOUT + 1)
    target_server.proxy.faults = lambda request: (
        outage(request) if target_server.counter.count("runs/log-batch") >= 2 else None)
    small_budget = write_profile(tmp_path / "budget.yaml", max_total_seconds=3, max_attempts=50)
    command = ["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
               str(tmp_path / "work")]

    started = time.monotonic()
    result = run_cli(*command, "--config", small_budget)
    assert result.returncode == 3, result.stderr
    stopped_after = time.monotonic() - started
    assert stopped_after < 60  # stopped, did not grind through every object
    assert_one_line_error(result.stderr, "target")

    target_server.proxy.faults = None
    assert main([*command, "--config", quick_profile, "--quiet"]) == 0
    report = json.loads((tmp_path / "work" / "report.json").read_text())
    assert report["validation"]["ok"] is True and report["failures"] == []
    held = assert_exactly_once(connect(target_server.url, role="target").client,
                               {"experiment": 1, "run": len(run_ids)})
    record_summary("outage_beyond_budget", faults=dict(outage.injected), objects=held, lost=0,
                   message=result.stderr.strip(), stopped_after_seconds=round(stopped_after, 1))


@pytest.mark.slow
def test_convert_at_five_percent_faults_registers_exactly_one_version(mlflow_server, tmp_path, quick_profile):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.convert.fixtures import build_text_classifier, sagemaker_tarball

    tarball = sagemaker_tarball(build_text_classifier(tmp_path / "checkpoint"), tmp_path / "model.tar.gz")
    server = mlflow_server()
    faults = _faults(13)
    server.proxy.faults = faults
    assert main(["convert", "hf-tarball", str(tarball), "--target", server.url, "-n", "faulty-sentiment",
                 "--config", quick_profile, "--quiet"]) == 0
    server.proxy.faults = None
    client = connect(server.url, role="target").client
    versions = client.search_model_versions("name = 'faulty-sentiment'")
    assert [v.version for v in versions] == ["1"]
    experiment = client.get_experiment_by_name("hf-tarball-imports")
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(client.search_logged_models(experiment_ids=[experiment.experiment_id])) == 1
    record_summary("convert_5pct", requests=server.counter.total, faults=dict(faults.injected),
                   versions=len(versions), lost=0)


def test_validate_stops_with_exit_3_when_a_side_stays_unavailable(mlflow_server, tmp_path, quick_profile):
    """Issue 13: validate during an outage used to turn every remaining read into a `!` result, each
    after waiting out the retry budget, then exit 4. It now stops once a side stayed unavailable for
    the whole budget: exit 3 in one line, like migrate, after about one budget, with no report."""
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 6)
    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--config", quick_profile, "--quiet"]) == 0
    outage = RandomFaults(1.0, seed=5, timeout=CLIENT_TIMEOUT + 1)
    target_server.counter.reset()
    target_server.proxy.faults = lambda request: (
        outage(request) if target_server.counter.count("runs/search") >= 1 else None)
    small_budget = write_profile(tmp_path / "budget.yaml", max_total_seconds=3, max_attempts=50)

    started = time.monotonic()
    result = run_cli("validate", "--source", source_server.url, "--target", target_server.url, "--config",
                     small_budget, "--metric-history", "--report-json", str(tmp_path / "validation.json"))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 60
    assert_one_line_error(result.stderr, "target")
    assert not (tmp_path / "validation.json").exists()  # no report that would read as "differs"
