"""snapshot create / list / verify / restore / prune on real servers (and S3 through moto)."""

from __future__ import annotations

import json

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.migrate.conftest import build_plain_runs


def _snapshot(location) -> dict:
    [path] = sorted(location.glob("snapshots/*.json"))[-1:]
    return json.loads(path.read_text())


@pytest.mark.slow
def test_snapshot_restore_into_empty_server_validates_clean(mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_rich_source(connect(source_server.url, role="source"), runs_per_experiment=1)
    snapshots, work = tmp_path / "snapshots", tmp_path / "restore"
    assert main(["snapshot", "create", "--source", source_server.url, "--to", str(snapshots), "--quiet"]) == 0
    assert main(["snapshot", "verify", "--from", str(snapshots), "--quiet"]) == 0

    assert main(["snapshot", "restore", "--from", str(snapshots), "--target", target_server.url, "--work-dir",
                 str(work), "--validate-against", source_server.url, "--quiet"]) == 0
    report = json.loads((work / "restore-report.json").read_text())
    assert report["validation"]["ok"] is True, report["validation"]
    assert report["count_check"]["differences"] == []

    capsys.readouterr()
    assert main(["snapshot", "list", "--from", str(snapshots), "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["server_mlflow"] and listed["client_mlflow"] and listed["mlflow_sync"]
    assert listed["counts"]["runs"] == report["count_check"]["found"]["runs"]


def _blob_of(snapshot: dict, suffix: str) -> tuple[str, str]:
    """(relative path, blob key) of the first snapshot file whose path ends with ``suffix``."""
    relative, info = next((r, i) for r, i in sorted(snapshot["export_manifest"]["files"].items()) if r.endswith(suffix))
    return relative, f"blobs/{info['sha256'][:2]}/{info['sha256']}"


def test_verify_names_corrupt_missing_and_extra_files_and_restore_refuses_unless_forced(
        mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 3)
    snapshots = tmp_path / "snapshots"
    assert main(["snapshot", "create", "--source", source_server.url, "--to", str(snapshots), "--quiet"]) == 0
    snapshot = _snapshot(snapshots)
    relative, blob = _blob_of(snapshot, "notes.txt")
    shared = [r for r, i in snapshot["export_manifest"]["files"].items() if blob.endswith(i["sha256"])]
    data = bytearray((snapshots / blob).read_bytes())
    data[0] ^= 0x01  # one byte
    (snapshots / blob).write_bytes(bytes(data))
    capsys.readouterr()

    assert main(["snapshot", "verify", "--from", str(snapshots), "--quiet"]) == 4
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert blob in error and relative in error and "corrupt (sha256 differs)" in error

    restore = ["snapshot", "restore", "--from", str(snapshots), "--target", target_server.url, "--work-dir",
               str(tmp_path / "restore"), "--quiet"]
    assert main(restore) == 4
    assert "not restoring it" in capsys.readouterr().err and target_server.counter.count("runs/create") == 0

    assert main([*restore, "--force"]) == 0  # what is intact is restored; the damaged file is left out
    target = connect(target_server.url, role="target").client
    runs = target.search_runs(["1"], max_results=10)
    assert len(runs) == 3
    without_notes = [r for r in runs if "notes.txt" not in {a.path for a in target.list_artifacts(r.info.run_id)}]
    assert len(without_notes) == len(shared)  # every run whose notes.txt had that content
    capsys.readouterr()
    assert main([*restore[:-3], "--work-dir", str(tmp_path / "other"), "--force", "--quiet"]) == 2
    assert "is not empty" in capsys.readouterr().err  # a restore never merges into live data

    _, other = _blob_of(snapshot, "run.json")
    (snapshots / other).unlink()
    (snapshots / "blobs" / "stray.bin").write_bytes(b"not ours")
    capsys.readouterr()
    assert main(["snapshot", "verify", "--from", str(snapshots), "--json"]) == 4
    problems = {p["path"]: p["problem"] for p in json.loads(capsys.readouterr().out)["problems"]}
    assert any(other in path and problem == "missing" for path, problem in problems.items())
    assert problems[str(snapshots / "blobs" / "stray.bin")] == "extra (not in any manifest)"


def test_incremental_snapshot_stores_only_the_new_runs_and_prune_keeps_what_is_referenced(mlflow_server, tmp_path,
                                                                                         capsys):
    source_server = mlflow_server()
    client = connect(source_server.url, role="source").client
    build_plain_runs(client, 3)
    snapshots = tmp_path / "snapshots"
    create = ["snapshot", "create", "--source", source_server.url, "--to", str(snapshots), "--quiet"]
    assert main(create) == 0
    first = _snapshot(snapshots)
    new_runs = build_plain_runs(client, 2, experiment="later")
    for run_id in new_runs:
        client.set_tag(run_id, "unique", run_id)  # run.json differs from the older runs' even with equal data
    assert main(create) == 0
    second = _snapshot(snapshots)
    assert second["previous"] == first["id"]

    old = {i["sha256"] for i in first["export_manifest"]["files"].values()}
    added = {r for r, i in second["export_manifest"]["files"].items() if i["sha256"] not in old}
    assert {r.split("/runs/")[1].split("/")[0] for r in added if "/runs/" in r} == set(new_runs)
    assert {r for r in added if "/runs/" not in r} <= {r for r in added if r.endswith("experiment.json")}
    assert second["stored_files"] == len({second["export_manifest"]["files"][r]["sha256"] for r in added})
    assert second["counts"]["runs"] == 5

    client.delete_experiment(client.get_experiment_by_name("later").experiment_id)
    assert main(create) == 0
    capsys.readouterr()
    assert main(["snapshot", "prune", "--from", str(snapshots), "--keep", "1", "--json"]) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["removed"] == [first["id"], second["id"]] and pruned["removed_blobs"] >= 0
    assert main(["snapshot", "verify", "--from", str(snapshots), "--quiet"]) == 0  # nothing kept lost, nothing extra
    assert len(list(snapshots.glob("snapshots/*.json"))) == 1


def test_snapshot_to_s3_create_verify_restore(moto, mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 2)
    location = f"s3://{moto.make_bucket('snapshots-test')}/mlflow/dr"
    assert main(["snapshot", "create", "--source", source_server.url, "--to", location, "--quiet"]) == 0
    assert main(["snapshot", "create", "--source", source_server.url, "--to", location, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["snapshot", "list", "--from", location, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2 and listed[1]["stored_files"] == 0  # nothing changed: nothing stored twice
    assert main(["snapshot", "verify", "--from", location, "--quiet"]) == 0
    assert main(["snapshot", "restore", "--from", location, "--target", target_server.url, "--work-dir",
                 str(tmp_path / "restore"), "--validate-against", source_server.url, "--quiet"]) == 0

    key = next(k for k in moto.list_keys("snapshots-test", "mlflow/dr/blobs/"))
    moto.boto3_client("s3").put_object(Bucket="snapshots-test", Key=key, Body=b"tampered")
    assert main(["snapshot", "verify", "--from", location, "--quiet"]) == 4
    assert key in capsys.readouterr().err


def test_one_repo_option_and_dry_runs_that_write_nothing(mlflow_server, tmp_path, capsys, monkeypatch):
    """Issue 13: the repository is --repo on every snapshot command (or MLFLOW_SYNC_REPO), and
    `snapshot create`, `snapshot restore` and `sync` have a --dry-run that writes nothing."""
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 3)
    repo = tmp_path / "repo"

    capsys.readouterr()
    assert main(["snapshot", "create", "--source", source_server.url, "--repo", str(repo), "--dry-run",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"]["runs"] == 3 and plan["snapshots_in_repo"] == 0
    assert not repo.exists()

    assert main(["snapshot", "create", "--source", source_server.url, "-r", str(repo), "--quiet"]) == 0
    monkeypatch.setenv("MLFLOW_SYNC_REPO", str(repo))
    assert main(["snapshot", "verify", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["snapshot", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)

    target_server.counter.reset()
    work = tmp_path / "restore"
    assert main(["snapshot", "restore", "--target", target_server.url, "--work-dir", str(work), "--dry-run",
                 "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["snapshot"] == listed["id"] and plan["counts"] == listed["counts"]
    assert plan["files_missing_from_repo"] == [] and plan["resumes"] is False
    assert not work.exists()
    writes = [r.path for r in target_server.counter.snapshot() if r.method == "POST" and not r.path.endswith("search")]
    assert writes == []

    sync_work = tmp_path / "sync"
    assert main(["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(sync_work),
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["first"] is True and plan["changes"]["new_runs"] == 3
    assert not sync_work.exists()
    with connect(target_server.url, role="target") as target:
        assert [e.name for e in target.client.search_experiments()] == ["Default"]

    assert main(["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(sync_work),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(sync_work),
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["first"] is False and plan["changes"]["new_runs"] == 0
    monkeypatch.delenv("MLFLOW_SYNC_REPO")
    assert main(["snapshot", "list"]) == 2  # no repository named: one clear line
