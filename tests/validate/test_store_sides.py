"""Sides read from stores: a snapshot (local or on S3) and an export on S3, and the one-line
refusal of a location that is none of the side kinds (see validate/sides.py)."""

from __future__ import annotations

import json
import shutil
import tempfile

import pytest

from mlflow_sync import s3
from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from tests.validate.faithful import faithful_copy

RUN = "experiments/exp-a/runs/parent"


@pytest.fixture(scope="module")
def snapshot_store(seeded_source, tmp_path_factory):
    """The seeded source snapshotted once with the real `mlflow-sync snapshot create` command."""
    server, _, _ = seeded_source
    store = tmp_path_factory.mktemp("validate-snapshots") / "store"
    assert main(["snapshot", "create", "--source", server.url, "--to", str(store), "--quiet"]) == 0
    [manifest] = store.glob("snapshots/*.json")
    return store, json.loads(manifest.read_text())


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Temporary files of this test land here, so the test can see they are removed."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def _combined(path) -> list[str]:
    return path.read_text().splitlines()


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_snapshot_side_matches_its_source_and_is_cleaned_up(seeded_source, snapshot_store, scratch, tmp_path):
    server, _, _ = seeded_source
    store, snapshot = snapshot_store
    report_file = tmp_path / "report.json"
    assert main(["validate", "-s", str(store), "-t", server.url, "--metric-history", "--checksum",
                 "--report-json", str(report_file), "--quiet"]) == 0
    report = json.loads(report_file.read_text())
    assert report["source"] == f"snapshot {store}#{snapshot['id']}"  # the latest, named in the report
    assert report["requests"]["source"] == {}
    for kind in ("run", "param", "metric_history", "artifact", "logged_model", "model_version", "trace",
                 "prompt_version", "evaluation_dataset_records"):
        assert report["summary"].get(kind, {}).get("matched"), kind
    assert list(scratch.iterdir()) == []  # the materialised copy is gone

    # the same snapshot chosen by id, as the target
    assert main(["validate", "-s", server.url, "-t", f"{store}#{snapshot['id']}", "--checks", "experiments,runs",
                 "--quiet"]) == 0


@pytest.mark.slow  # a faithful copy of the seeded source (~20 s)
def test_snapshot_side_names_the_run_a_target_lacks(seeded_source, snapshot_store, mlflow_server, tmp_path):
    _, source, _ = seeded_source
    store, _ = snapshot_store
    target_server = mlflow_server("sqlite", "proxied")
    with connect(target_server.url, role="target") as target:
        faithful_copy(source, target, skip_runs=("child",))
    combined = tmp_path / "combined.txt"
    assert main(["validate", "-s", str(store), "-t", target_server.url, "--checks", "experiments,runs",
                 "--combined", str(combined), "--quiet"]) == 4
    assert [line for line in _combined(combined) if line[0] != "="] == ["+ experiments/exp-a/runs/child"]


def test_damaged_snapshot_is_refused_like_restore_refuses_it(seeded_source, snapshot_store, tmp_path, scratch,
                                                            capsys):
    server, _, _ = seeded_source
    original, snapshot = snapshot_store
    store = tmp_path / "store"
    shutil.copytree(original, store)
    relative, info = next((r, i) for r, i in sorted(snapshot["export_manifest"]["files"].items())
                          if r.endswith("artifacts/notes/readme.txt"))
    blob = store / "blobs" / info["sha256"][:2] / info["sha256"]
    data = bytearray(blob.read_bytes())
    data[0] ^= 0x01  # one byte, same size
    blob.write_bytes(bytes(data))
    capsys.readouterr()

    assert main(["validate", "-s", str(store), "-t", server.url, "--quiet"]) == 4
    error = _error(capsys)
    assert f"snapshot {snapshot['id']}" in error and "damaged" in error and relative in error
    assert list(scratch.iterdir()) == []
    # checks that read no artifact read no damaged file: the rest of the snapshot still validates
    assert main(["validate", "-s", str(store), "-t", server.url, "--checks", "experiments,runs", "--quiet"]) == 0

    manifest = store / "snapshots" / f"{snapshot['id']}.json"
    edited = json.loads(manifest.read_text())
    edited["counts"]["runs"] += 1
    manifest.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main(["validate", "-s", str(store), "-t", server.url, "--checks", "experiments", "--quiet"]) == 4
    assert "manifest checksum differs" in _error(capsys)


def test_s3_export_and_s3_snapshot_sides(seeded_source, moto, monkeypatch, tmp_path, capsys):
    server, _, _ = seeded_source
    bucket = moto.make_bucket("validate-sides")
    export, snapshots = f"s3://{bucket}/exports/one", f"s3://{bucket}/dr"
    assert main(["export", "--source", server.url, "--to", export, "--quiet"]) == 0
    assert main(["snapshot", "create", "--source", server.url, "--to", snapshots, "--quiet"]) == 0
    downloads = []
    real_download = s3.download_file
    monkeypatch.setattr(s3, "download_file", lambda uri, path: downloads.append(uri) or real_download(uri, path))

    report_file = tmp_path / "report.json"
    assert main(["validate", "-s", export, "-t", server.url, "--metric-history", "--checksum",
                 "--report-json", str(report_file), "--quiet"]) == 0
    report = json.loads(report_file.read_text())
    assert report["source"] == f"export {export}"
    assert report["summary"]["artifact"]["matched"] >= 2 and report["summary"]["logged_model_artifact"]["matched"]
    assert downloads and not [uri for uri in downloads if "/artifacts/" in uri]  # contents proved by S3 checksums

    assert main(["validate", "-s", snapshots, "-t", export, "--checksum", "--quiet"]) == 0

    # same size, other bytes, in the export's copy of an artifact: found from the bytes themselves
    key = next(k for k in moto.list_keys(bucket, "exports/one/experiments/") if k.endswith("notes/readme.txt"))
    moto.boto3_client("s3").put_object(Bucket=bucket, Key=key, Body=b"HELLO WORLD")
    combined = tmp_path / "combined.txt"
    assert main(["validate", "-s", server.url, "-t", export, "--checks", "experiments,runs,artifacts", "--checksum",
                 "--combined", str(combined), "--quiet"]) == 4
    assert [line for line in _combined(combined) if line[0] != "="] == [f"* {RUN}/artifacts/notes/readme.txt"]


def _missing(tmp):
    return tmp / "missing"


def _empty(tmp):
    return tmp


def _unrelated(tmp):
    (tmp / "notes.txt").write_text("x")
    return tmp


def _database_file(tmp):
    (tmp / "mlflow.db").write_text("x")
    return tmp / "mlflow.db"


def _unfinished_export(tmp):
    (tmp / "experiments").mkdir()
    return tmp


def _id_on_an_export(tmp):
    (tmp / "manifest.json").write_text("{}")
    return f"{tmp}#latest"


@pytest.mark.parametrize("make, expected", [
    (_missing, "no such directory"),
    (_empty, "(it is empty)"),
    (_unrelated, "neither an mlflow-sync export (no manifest.json) nor a snapshot store"),
    (_database_file, "sqlite:///"),
    (_unfinished_export, "has no manifest.json"),
    (_id_on_an_export, "is not a snapshot store"),
])
def test_a_location_that_is_no_side_is_one_line_usage_error(tmp_path, capsys, make, expected):
    assert main(["validate", "-s", str(make(tmp_path)), "-t", "http://127.0.0.1:9"]) == 2
    assert expected in _error(capsys)


def test_store_locations_that_are_no_side(moto, snapshot_store, capsys):
    store, _ = snapshot_store
    assert main(["validate", "-s", f"{store}#20000101T000000Z", "-t", "http://127.0.0.1:9"]) == 2
    assert "no snapshot '20000101T000000Z'" in _error(capsys)
    bucket = moto.make_bucket("validate-nothing")
    assert main(["validate", "-s", f"s3://{bucket}/nothing/here", "-t", "http://127.0.0.1:9"]) == 2
    assert "neither an mlflow-sync export" in _error(capsys)
