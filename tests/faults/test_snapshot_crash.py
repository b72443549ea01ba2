"""SIGKILL `mlflow-sync snapshot create` at seeded points, one after the other, then let it finish.

The store is S3 (moto behind a fault proxy), so a kill can land in the middle of a blob PUT. The
points: while the export reads the source, mid blob upload (some blobs of the new snapshot
already stored), with every blob stored and the snapshot manifest on its way, and right after
the manifest was stored but before the tool heard back. After each kill only complete snapshots
are listed and each verifies clean; what a killed create left behind is reported by `verify` as
extra, then reused by the next create. The final snapshot restores into an empty server with
every object exactly once and a clean validation.

A kill between the parts of a multipart upload leaves an upload S3 keeps but never lists, and a
kill mid-copy into a local store a temporary file: `verify` names both, `prune` removes them.
"""

from __future__ import annotations

import json
import random

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.export_format import sha256_of
from mlflow_sync.migrate.demo_data import build_rich_source
from mlflow_sync.sync.snapshot import STAGING_PREFIX
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.faults.killing import KillPoint, kill_at
from tests.faults.test_fault_rates import RICH_SOURCE
from tests.harness import DEFAULT_BUCKET, LoopbackProxy
from tests.migrate.conftest import build_plain_runs

SEED = 20261124
EXTRA = "extra (not in any manifest)"


def _json(capsys, args: list[str]) -> tuple[int, object]:
    capsys.readouterr()
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _check_store(capsys, location: str, expected_ids: list[str]) -> list[str]:
    """Exactly the complete snapshots are listed and verify clean (nothing missing or corrupt, every
    checksum recomputed); returns the blobs reported extra (stored by a killed create)."""
    code, listed = _json(capsys, ["snapshot", "list", "--from", location])
    assert code == 0 and [s["id"] for s in listed] == expected_ids
    _, report = _json(capsys, ["snapshot", "verify", "--from", location])
    assert report["snapshots"] == expected_ids
    assert {p["problem"] for p in report["problems"]} <= {EXTRA}, report["problems"]
    extra = [p["path"] for p in report["problems"]]
    assert all(f"{location}/blobs/" in path for path in extra), extra
    return extra


@pytest.mark.slow
def test_sigkill_snapshot_create_at_seeded_points_then_create_again(mlflow_server, moto, tmp_path, quick_profile,
                                                                    capsys):
    source_server, restored_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    build_rich_source(source, runs_per_experiment=1)
    prefix = f"{tmp_path.name}/snapshots"
    location = f"s3://{DEFAULT_BUCKET}/{prefix}"
    create = ["snapshot", "create", "--source", source_server.url, "--to", location, "--config", quick_profile,
              "--quiet"]
    assert main(create) == 0
    [first] = _json(capsys, ["snapshot", "list", "--from", location])[1]
    for run_id in build_plain_runs(source.client, 2, experiment="added later"):
        source.client.set_tag(run_id, "unique", run_id)  # new content: the next snapshot has blobs to store

    rng = random.Random(SEED)
    staging = tmp_path / "tmp"
    staging.mkdir()
    with LoopbackProxy(moto.endpoint_url, name="s3") as s3_proxy:
        blob_put, manifest_put = (f"PUT /{DEFAULT_BUCKET}/{prefix}/{kind}/*" for kind in ("blobs", "snapshots"))
        points = [
            KillPoint("reading the source (artifact download)", source_server.proxy,
                      "GET /api/2.0/mlflow-artifacts/presigned/*", rng.randint(1, 4), after_forward=False),
            KillPoint("mid blob upload, earlier blobs stored", s3_proxy, blob_put, rng.randint(2, 4),
                      after_forward=False),
            KillPoint("every blob stored, manifest upload in flight", s3_proxy, manifest_put, 1, after_forward=False),
            KillPoint("manifest stored, answer lost", s3_proxy, manifest_put, 1, after_forward=True),
        ]
        complete, extra_after_kill, staged = [first["id"]], {}, {}
        for point in points:
            kill_at(point, create, env={"AWS_ENDPOINT_URL_S3": s3_proxy.url, "TMPDIR": str(staging)})
            if point.after_forward:  # the manifest made it: a complete snapshot the tool never reported
                complete = [s["id"] for s in _json(capsys, ["snapshot", "list", "--from", location])[1]]
                assert len(complete) == 2
            extra_after_kill[point.name] = len(_check_store(capsys, location, complete))
            staged[point.name] = len(list(staging.glob(f"{STAGING_PREFIX}*")))
        uploads = moto.boto3_client("s3").list_multipart_uploads(Bucket=DEFAULT_BUCKET, Prefix=prefix)
        assert uploads.get("Uploads", []) == []

    assert extra_after_kill["every blob stored, manifest upload in flight"] > 0  # the kills did leave blobs
    # a create killed while it still needs its export copy leaves it behind until the next create removes it
    assert list(staged.values()) == [1, 1, 0, 0], staged
    assert main(create) == 0
    code, listed = _json(capsys, ["snapshot", "list", "--from", location])
    # the create that wrote the second manifest found every blob stored by the killed ones before it
    assert len(listed) == 3 and [s["stored_files"] for s in listed[1:]] == [0, 0]
    assert _check_store(capsys, location, [s["id"] for s in listed]) == []

    assert main(["snapshot", "restore", "--from", location, "--target", restored_server.url, "--work-dir",
                 str(tmp_path / "restore"), "--validate-against", source_server.url, "--config", quick_profile,
                 "--quiet"]) == 0
    report = json.loads((tmp_path / "restore" / "restore-report.json").read_text())
    assert report["validation"]["ok"] is True, report["validation"]
    expected = {**RICH_SOURCE, "experiment": RICH_SOURCE["experiment"] + 1, "run": RICH_SOURCE["run"] + 2}
    held = assert_exactly_once(connect(restored_server.url, role="target").client, expected)
    record_summary("snapshot_create_sigkill", kills=[f"{p.name} (request #{p.nth})" for p in points],
                   extra_blobs_after_each_kill=extra_after_kill, staging_dirs_left_after_each_kill=staged,
                   objects=held, lost=0)


def test_verify_reports_and_prune_removes_a_local_write_a_kill_cut_short(shared_mlflow_server, tmp_path, capsys):
    """A local store writes each blob to a temporary name first: a kill mid-copy leaves that file."""
    location = tmp_path / "snapshots"
    assert main(["snapshot", "create", "--source", shared_mlflow_server.url, "--to", str(location), "--quiet"]) == 0
    half_written = location / "blobs" / "ab" / f".ab{'0' * 62}.tmp-99999"
    half_written.parent.mkdir(parents=True, exist_ok=True)
    half_written.write_bytes(b"half a blob")

    code, listed = _json(capsys, ["snapshot", "list", "--from", str(location)])
    assert code == 0 and len(listed) == 1
    code, report = _json(capsys, ["snapshot", "verify", "--from", str(location), "--snapshot", listed[0]["id"]])
    assert code == 0 and report["problems"] == []
    code, report = _json(capsys, ["snapshot", "verify", "--from", str(location)])
    assert code == 4 and [(p["problem"], p["path"]) for p in report["problems"]] == [
        ("incomplete upload (an interrupted create; prune removes it)", str(half_written))]
    code, pruned = _json(capsys, ["snapshot", "prune", "--from", str(location), "--keep", "1"])
    assert code == 0 and pruned["aborted_uploads"] == 1 and pruned["removed_blobs"] == 0
    assert not half_written.exists() and _json(capsys, ["snapshot", "verify", "--from", str(location)])[0] == 0
    record_summary("snapshot_incomplete_upload_local", reported=1, removed_by_prune=1, lost=0)


@pytest.mark.slow
def test_sigkill_mid_multipart_upload_then_create_verify_and_prune(mlflow_server, moto, tmp_path, capsys):
    """A blob above the multipart threshold: the kill lands between its parts, S3 keeps the started upload."""
    source_server = mlflow_server()
    client = connect(source_server.url, role="source").client
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(SEED).randbytes(65 * 1024 * 1024))  # one part of 64 MB and one more
    run = client.create_run(client.create_experiment("large artifacts"))
    client.log_artifact(run.info.run_id, str(big))
    client.set_terminated(run.info.run_id)
    prefix = f"{tmp_path.name}/snapshots"
    location = f"s3://{DEFAULT_BUCKET}/{prefix}"
    create = ["snapshot", "create", "--source", source_server.url, "--to", location, "--quiet"]
    blob = f"blobs/{sha256_of(big)[:2]}/{sha256_of(big)}"
    big.unlink()
    try:
        with LoopbackProxy(moto.endpoint_url, name="s3") as s3_proxy:
            point = KillPoint("mid multipart upload", s3_proxy, f"PUT /{DEFAULT_BUCKET}/{prefix}/{blob}", 1,
                              after_forward=False)
            kill_at(point, create, env={"AWS_ENDPOINT_URL_S3": s3_proxy.url})
        assert _json(capsys, ["snapshot", "list", "--from", location]) == (0, [])
        s3 = moto.boto3_client("s3")
        assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=DEFAULT_BUCKET, Prefix=prefix)["Uploads"]] == [
            f"{prefix}/{blob}"]

        assert main(create) == 0
        code, report = _json(capsys, ["snapshot", "verify", "--from", location])
        assert code == 4 and [(p["problem"], p["path"]) for p in report["problems"]] == [
            ("incomplete upload (an interrupted create; prune removes it)", f"{location}/{blob}")]
        code, pruned = _json(capsys, ["snapshot", "prune", "--from", location, "--keep", "1"])
        assert code == 0 and pruned["aborted_uploads"] == 1 and pruned["removed_blobs"] == 0
        assert s3.list_multipart_uploads(Bucket=DEFAULT_BUCKET, Prefix=prefix).get("Uploads", []) == []
        assert _json(capsys, ["snapshot", "verify", "--from", location])[0] == 0
    finally:
        moto.delete_prefix(DEFAULT_BUCKET, prefix)
    record_summary("snapshot_create_sigkill_multipart", kills=[point.name], incomplete_uploads_reported=1,
                   aborted_by_prune=1, lost=0)
