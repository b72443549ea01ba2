"""Sides other than two proxied servers: an export directory written by `mlflow-sync export`, and
two servers whose artifact stores are both on S3 (listings compared without downloads)."""

from __future__ import annotations

import json
import shutil

import pytest

from mlflow_sync import s3
from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.validate import ValidateOptions, validate
from mlflow_sync.validate.export_reader import ExportReader
from tests.validate.faithful import T0, faithful_copy

RUN = "experiments/exp-a/runs/parent"


@pytest.fixture(scope="module")
def export_dir(seeded_source, tmp_path_factory):
    """The seeded source exported once with the real `mlflow-sync export` command."""
    server, _, _ = seeded_source
    directory = tmp_path_factory.mktemp("validate-export") / "export"
    assert main(["export", "--source", server.url, "--to", str(directory), "--quiet"]) == 0
    return directory


def _failing(report) -> set[tuple[str, str, str]]:
    return {(r.status.value, r.kind, r.path) for r in report.failing()}


def test_server_matches_its_export(seeded_source, export_dir, tmp_path, capsys):
    server, source, _ = seeded_source
    report = validate(source, ExportReader(export_dir), ValidateOptions(metric_history=True, checksum=True))
    assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
    summary = report.summary()
    for kind in ("run", "param", "metric_history", "artifact", "logged_model", "model_version", "trace",
                 "prompt_version", "model_input", "model_output"):
        assert summary.get(kind, {}).get("matched"), kind
    assert summary["evaluation_dataset_records"]["matched"] == 1  # an export holds them too
    assert report.requests["target"] == {}  # read from disk
    # the CLI takes a directory on either side
    combined = tmp_path / "combined.txt"
    assert main(["validate", "-s", str(export_dir), "-t", server.url, "--checks", "experiments,runs",
                 "--combined", str(combined), "--quiet"]) == 0
    assert f"= {RUN}/params/lr" in combined.read_text().splitlines()


def test_damaged_export_is_reported(seeded_source, export_dir, tmp_path):
    server, _, ids = seeded_source
    damaged = tmp_path / "export"
    shutil.copytree(export_dir, damaged)
    run_file = next(damaged.glob(f"experiments/*/runs/{ids['parent']}/run.json"))
    data = json.loads(run_file.read_text())
    data["params"]["lr"] = "0.02"
    data["metrics"]["loss"][1][2] = 0.75
    run_file.write_text(json.dumps(data))
    (run_file.parent / "artifacts" / "notes" / "readme.txt").write_text("HELLO WORLD")
    combined = tmp_path / "combined.txt"
    code = main(["validate", "-s", server.url, "-t", str(damaged), "--checks", "experiments,runs,artifacts",
                 "--ignore", "*/inputs/models/*", "--metric-history", "--checksum", "--combined", str(combined), "--quiet"])
    assert code == 4
    lines = combined.read_text().splitlines()
    assert {f"* {RUN}/params/lr", f"* {RUN}/metrics/loss/history", f"* {RUN}/artifacts/notes/readme.txt"} <= set(lines)
    assert sum(line[0] != "=" for line in lines) == 3


def test_export_dir_without_manifest_is_a_usage_error(seeded_source, tmp_path, capsys):
    server, _, _ = seeded_source
    assert main(["validate", "-s", server.url, "-t", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def _seed_small(server) -> str:
    client = server.client
    experiment = client.create_experiment("s3-exp")
    run = client.create_run(experiment, run_name="r", start_time=T0)
    client.log_param(run.info.run_id, "p", "1")
    client.log_text(run.info.run_id, "hello world", "notes/readme.txt")
    client.log_dict(run.info.run_id, {"weights": list(range(50))}, "model/weights.json")
    client.set_terminated(run.info.run_id, "FINISHED", end_time=T0 + 1000)
    return run.info.run_id


def test_s3_stores_are_compared_by_listing_without_downloads(mlflow_server):
    source_server, target_server = mlflow_server("sqlite", "direct"), mlflow_server("sqlite", "direct")
    with connect(source_server.url, role="source") as source, connect(target_server.url, role="target") as target:
        _seed_small(source)
        run_map = faithful_copy(source, target)
        options = ValidateOptions(checks=("experiments", "runs", "artifacts"), checksum=True)
        source_server.counter.reset()
        target_server.counter.reset()
        report = validate(source, target, options)
        assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
        assert report.summary()["artifact"]["matched"] == 2
        # same size, other bytes: caught from the listings' ETags
        target_run = next(iter(run_map.values()))
        artifact_uri = target.client.get_run(target_run).info.artifact_uri
        assert artifact_uri.startswith("s3://")
        location = s3.parse_s3_uri(artifact_uri).child("notes/readme.txt")
        s3.client().put_object(Bucket=location.bucket, Key=location.key, Body=b"HELLO WORLD")
        changed = validate(source, target, options)
        failing = changed.failing()
        assert [(r.status.value, r.path) for r in failing] == [("*", "experiments/s3-exp/runs/r/artifacts/notes/readme.txt")]
        assert "ETag" in failing[0].detail
    for server in (source_server, target_server):
        endpoints = server.counter.by_endpoint()
        assert server.counter.count("runs/search") >= 2
        assert not [e for e in endpoints if "artifacts" in e], endpoints  # no listing or download via MLflow


def test_database_uri_side_reads_the_same_records(seeded_source):
    """A side given as a database URI is read through MLflow's store code (entities, not REST JSON)."""
    server, source, _ = seeded_source
    checks = ValidateOptions(checks=("experiments", "runs"))
    with connect(server.database.uri, role="source") as database_side:
        report = validate(database_side, source, checks)
    assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
    assert report.summary()["run"]["matched"] == 3 and report.summary()["param"]["matched"] == 4


def test_histories_are_read_in_bulk_and_a_changed_point_is_still_caught(mlflow_server):
    """One get-history-bulk request per metric key and 100 runs, never one request per run and key."""
    from mlflow.entities import Metric

    source_server, target_server = mlflow_server("sqlite", "proxied"), mlflow_server("sqlite", "proxied")
    with connect(source_server.url, role="source") as source, connect(target_server.url, role="target") as target:
        experiment = source.client.create_experiment("bulk")
        for index in range(3):
            run = source.client.create_run(experiment, run_name=f"r{index}", start_time=T0)
            source.client.log_batch(run.info.run_id, metrics=[
                Metric(key, step / 10, T0 + step, step) for key in ("loss", "acc") for step in range(5)])
            source.client.set_terminated(run.info.run_id, end_time=T0 + 10)
        run_map = faithful_copy(source, target)
        options = ValidateOptions(checks=("experiments", "runs"), metric_history=True)
        for server in (source_server, target_server):
            server.counter.reset()
        report = validate(source, target, options)
        assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
        assert report.summary()["metric_history"]["matched"] == 6
        for server in (source_server, target_server):
            endpoints = server.counter.by_endpoint()
            assert not [e for e in endpoints if e.endswith("metrics/get-history")], endpoints
            assert server.counter.count("metrics/get-history-bulk") == 2  # two keys, three runs
        copy = next(iter(run_map.values()))
        target.client.log_metric(copy, "loss", 9.0, timestamp=T0 + 2, step=2)  # one extra point
        changed = validate(source, target, options)
        assert {(r.status.value, r.kind) for r in changed.failing()} == {("*", "metric_history")}
