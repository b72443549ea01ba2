"""mlflow-sync sync between real servers: first copy, exact increments, no duplicates, deletions, locking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import RUN_ID_TAG
from mlflow_sync.sync.state import SyncLock
from tests.migrate.conftest import build_plain_runs
from tests.sync.conftest import register_versions

READ_ENDPOINTS = ("/get", "/search", "/list", "get-history", "/version", "/health", "/traces", "logged-models/search",
                  "datasets/search", "get-by-name")


def _writes(counter) -> Counter:
    """Requests that are not reads, by endpoint."""
    return Counter({ep: n for ep, n in counter.by_endpoint().items()
                    if not (ep.startswith("GET ") or any(r in ep for r in READ_ENDPOINTS))})


def _target_runs(client) -> dict:
    from mlflow.entities import ViewType

    runs = {}
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        for run in client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000):
            runs.setdefault(run.data.tags.get(RUN_ID_TAG), []).append(run)
    return runs


def test_sync_copies_everything_then_exactly_the_changes(mlflow_server, tmp_path):
    from mlflow.entities import Metric

    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source").client
    run_ids = build_plain_runs(source, 4)
    experiment_id = source.get_experiment_by_name("bench").experiment_id
    running = source.create_run(experiment_id, run_name="still training").info.run_id
    source.log_batch(running, metrics=[Metric("loss", 1.0, 1_700_000_000_000, 0)])
    register_versions(source, "fraud", run_ids[:2], {"champion": 1, "baseline": 1})
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(tmp_path / "w"),
            "--quiet"]

    assert main(args) == 0
    target = connect(target_server.url, role="target").client
    copies = _target_runs(target)
    assert set(copies) == set(run_ids) | {running} and all(len(c) == 1 for c in copies.values())
    assert copies[running][0].info.status == "RUNNING"
    assert target.get_registered_model("fraud").aliases == {"champion": "1", "baseline": "1"}

    added = build_plain_runs(source, 2, experiment="second")
    source.log_batch(running, metrics=[Metric("loss", 0.5, 1_700_000_001_000, 1), Metric("loss", 0.25, 1_700_000_002_000, 2)])
    source.create_model_version("fraud", f"runs:/{run_ids[2]}/model", run_id=run_ids[2], await_creation_for=0)
    source.set_registered_model_alias("fraud", "champion", "3")
    source_server.counter.reset()
    target_server.counter.reset()

    assert main(args) == 0
    writes = _writes(target_server.counter)
    assert writes["POST /api/2.0/mlflow/runs/create"] == 2  # the two new runs, nothing else
    assert writes["POST /api/2.0/mlflow/model-versions/create"] == 1
    assert writes["POST /api/2.0/mlflow/registered-models/alias"] == 1  # the moved alias only
    assert writes["POST /api/2.0/mlflow/experiments/create"] == 1
    # the new runs (run-0 has 1,000 metric points plus params and tags: two batches), the running run's new points
    assert writes["POST /api/2.0/mlflow/runs/log-batch"] == 3 + 1
    copies = _target_runs(target)
    assert set(copies) == set(run_ids) | {running} | set(added) and all(len(c) == 1 for c in copies.values())
    history = target.get_metric_history(copies[running][0].info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert target.get_registered_model("fraud").aliases == {"champion": "3", "baseline": "1"}

    source.set_terminated(running)
    target_server.counter.reset()
    assert main(args) == 0
    copy = target.get_run(copies[running][0].info.run_id)
    assert copy.info.status == "FINISHED" and copy.info.end_time == source.get_run(running).info.end_time
    assert _writes(target_server.counter)["POST /api/2.0/mlflow/runs/update"] == 1

    source_server.counter.reset()
    target_server.counter.reset()
    assert main(args) == 0  # nothing changed: reads only (plus the lock tag on the target)
    assert _writes(source_server.counter) == Counter()
    assert _writes(target_server.counter) == Counter({"POST /api/2.0/mlflow/experiments/set-experiment-tag": 1,
                                                      "POST /api/2.0/mlflow/experiments/delete-experiment-tag": 1})
    report = json.loads((tmp_path / "w" / "sync-report.json").read_text())
    assert report["changes"] == {k: 0 for k in report["changes"]}


def test_overlap_setting_decides_how_far_back_a_sync_looks_for_runs_from_late_clocks(mlflow_server, tmp_path,
                                                                                      monkeypatch):
    from mlflow_sync.sync import changes as sync_changes

    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source").client
    early = build_plain_runs(source, 2)
    experiment_id = source.get_experiment_by_name("bench").experiment_id
    profile = tmp_path / "standby.yaml"
    profile.write_text("sync:\n  overlap_minutes: 30\n")
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(tmp_path / "w"),
            "--config", str(profile), "--quiet"]
    assert main(args) == 0

    def run_from_late_clock(name: str, minutes_behind: int) -> str:
        """A run logged after that sync by a client whose clock runs ``minutes_behind`` behind."""
        then = int(time.time() * 1000) - minutes_behind * 60_000
        run_id = source.create_run(experiment_id, run_name=name, start_time=then).info.run_id
        source.log_param(run_id, "clock", f"{minutes_behind} minutes behind")
        source.set_terminated(run_id, end_time=then + 1000)
        return run_id

    inside, outside = run_from_late_clock("inside", 20), run_from_late_clock("outside", 50)
    target = connect(target_server.url, role="target").client

    def window() -> dict:
        return json.loads((tmp_path / "w" / "sync-report.json").read_text())["window"]

    # 30 minutes from the profile: the 20-minutes-late run is in, the 50 one is not, and the counts say so
    assert main(args) == 4
    assert set(_target_runs(target)) == set(early) | {inside}
    report = json.loads((tmp_path / "w" / "sync-report.json").read_text())
    assert report["inventory"]["short"] == ["runs: 3 on the target, 4 on the source"]
    # the runs the first sync read finished are left out of the window's searches by id
    assert window() == {**window(), "overlap_minutes": 30, "runs_read": 1, "settled_runs_left_out": 2}

    # the option overrides the profile; the failed cycle did not advance the state, so its window is read again
    assert main([*args, "--overlap-minutes", "60"]) == 0
    assert set(_target_runs(target)) == set(early) | {inside, outside}
    assert window() == {**window(), "overlap_minutes": 60, "runs_read": 2, "settled_runs_left_out": 2}

    # without leaving settled runs out, the window reads every copied run again: compared, never duplicated
    monkeypatch.setattr(sync_changes, "SETTLED_EXCLUSION_LIMIT", 0)
    target_server.counter.reset()
    assert main([*args, "--overlap-minutes", "60"]) == 0
    assert window() == {**window(), "runs_read": 4, "settled_runs_left_out": 0}
    copies = _target_runs(target)
    assert set(copies) == set(early) | {inside, outside} and all(len(c) == 1 for c in copies.values())
    assert _writes(target_server.counter) == Counter({"POST /api/2.0/mlflow/experiments/set-experiment-tag": 1,
                                                      "POST /api/2.0/mlflow/experiments/delete-experiment-tag": 1})


def test_delete_is_mirrored_only_when_asked(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source").client
    run_ids = build_plain_runs(source, 3)
    register_versions(source, "fraud", run_ids[:2], {"champion": 2})
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(tmp_path / "w"),
            "--quiet"]
    assert main(args) == 0
    target = connect(target_server.url, role="target").client
    copy = _target_runs(target)[run_ids[0]][0].info.run_id

    source.delete_run(run_ids[0])
    source.delete_registered_model_alias("fraud", "champion")
    source.delete_model_version("fraud", "1")
    assert main(args) == 0
    assert target.get_run(copy).info.lifecycle_stage == "active"  # without --delete nothing is deleted
    assert target.get_registered_model("fraud").aliases == {"champion": "2"}
    assert len(target.search_model_versions("name = 'fraud'")) == 2

    assert main([*args, "--delete"]) == 0
    assert target.get_run(copy).info.lifecycle_stage == "deleted"
    assert target.get_registered_model("fraud").aliases == {}
    assert [v.version for v in target.search_model_versions("name = 'fraud'")] == ["2"]
    assert main([*args, "--delete"]) == 0  # mirrored once: a repeat finds nothing to do


def test_second_sync_is_refused_while_one_holds_the_lock(mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 1)
    work = tmp_path / "w"
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--quiet"]
    with SyncLock(work, connect(target_server.url, role="target")):
        capsys.readouterr()
        assert main([*args, "--work-dir", str(work)]) == 1
        assert "another sync is running with this work directory" in capsys.readouterr().err
        assert main([*args, "--work-dir", str(tmp_path / "elsewhere")]) == 1  # same target, other machine/dir
        assert "is locked by another sync" in capsys.readouterr().err
        assert target_server.counter.count("runs/create") == 0
    assert main([*args, "--work-dir", str(work)]) == 0


@pytest.mark.slow
def test_sync_killed_mid_way_completes_on_rerun_without_duplicates(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source").client
    run_ids = build_plain_runs(source, 20)
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(tmp_path / "w"),
            "--workers", "2", "--quiet"]
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    process = subprocess.Popen([sys.executable, "-c", "from mlflow_sync.cli import run; run()", *args], env=env)
    deadline = time.monotonic() + 120
    while target_server.counter.count("runs/log-batch") < 8 and process.poll() is None:
        assert time.monotonic() < deadline, "the sync never got going"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    target = connect(target_server.url, role="target").client
    assert 0 < len(_target_runs(target)) < len(run_ids) + 1

    assert main(args) == 0  # the dead owner's locks are taken over; the journal resumes
    copies = _target_runs(target)
    assert set(copies) == set(run_ids) and all(len(c) == 1 for c in copies.values())
    for source_id, [copy] in copies.items():
        assert len(target.get_metric_history(copy.info.run_id, "m3")) == len(source.get_metric_history(source_id, "m3"))
        assert copy.info.status == "FINISHED"
    assert "mlflow_sync.sync.lock" not in target.get_experiment("0").tags


@pytest.mark.slow
def test_sync_of_every_object_kind_validates_clean_and_follows_new_traces_prompts_and_models(mlflow_server, tmp_path):
    from mlflow_sync.migrate.demo_data import build_rich_source

    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    build_rich_source(source, runs_per_experiment=1)
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(tmp_path / "w"),
            "--quiet"]
    # deleted runs are carried (as deleted), also one deleted before the first sync (issue 11)
    validate = ["validate", "--source", source_server.url, "--target", target_server.url, "--one-way", "--quiet"]
    assert main(args) == 0
    assert main(validate) == 0
    deleted = [r for r in _target_runs(connect(target_server.url, role="target").client).values()
               if r[0].info.lifecycle_stage == "deleted"]
    assert len(deleted) == 1

    client = source.client
    experiment_id = client.get_experiment_by_name("evaluation").experiment_id
    client.set_experiment_tag(experiment_id, "stage", "final")
    client.register_prompt("greeting-prompt", "Hello {{name}}, good to see you!", commit_message="third")
    run_id = client.create_run(experiment_id, run_name="packaging").info.run_id
    model = client.create_logged_model(experiment_id, name="packaged", source_run_id=run_id)
    client.finalize_logged_model(model.model_id, "READY")
    client.set_terminated(run_id)
    with source.activate():
        import mlflow

        mlflow.set_experiment(experiment_id=experiment_id)
        with mlflow.start_span("late question") as span:
            span.set_inputs({"q": "still there?"})
    target_server.counter.reset()
    assert main(args) == 0
    writes = _writes(target_server.counter)
    assert writes["POST /api/2.0/mlflow/runs/create"] == 1 and writes["POST /api/2.0/mlflow/logged-models"] == 1
    assert writes["POST /api/2.0/mlflow/model-versions/create"] == 1  # the prompt's new version
    assert main(validate) == 0
