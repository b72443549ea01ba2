"""Options of export / import / migrate on one small source: --dry-run writes nothing, filters
(experiments, models, time window), --no-source-tags, rename maps, the ID map (JSON and CSV),
the manifest (versions, counts, sha256 per file), and an ``s3://`` export through moto."""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
import uuid
from pathlib import Path

import mlflow
import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import EXPERIMENT_ID_TAG, RUN_ID_TAG
from tests.migrate.conftest import all_runs

JANUARY, JUNE = 1_704_067_200_000, 1_717_200_000_000  # 2024-01-01, 2024-06-01 (UTC)
ARTIFACT = b"weights" * 100


@pytest.fixture(scope="module")
def small_source(server_pool):
    """Experiments alpha and beta (a January and a June run each, one 700-byte artifact per run),
    registered models m-alpha and m-beta (one version each). Tests only read it."""
    server = server_pool.acquire("sqlite", "proxied")
    try:
        with connect(server.url, role="source") as source, tempfile.TemporaryDirectory() as tmp:
            client = source.client
            Path(tmp, "weights.bin").write_bytes(ARTIFACT)
            runs = {}
            for name in ("alpha", "beta"):
                experiment_id = client.create_experiment(name)
                for label, start in (("jan", JANUARY), ("jun", JUNE)):
                    run = client.create_run(experiment_id, start_time=start, run_name=f"{name}-{label}",
                                            tags={"mlflow.user": "dana"})
                    client.log_param(run.info.run_id, "p", label)
                    client.log_artifact(run.info.run_id, str(Path(tmp, "weights.bin")))
                    client.set_terminated(run.info.run_id, end_time=start + 60_000)
                    runs[f"{name}-{label}"] = run.info.run_id
                client.create_registered_model(f"m-{name}")
                client.create_model_version(f"m-{name}", f"runs:/{runs[f'{name}-jun']}/weights.bin",
                                            run_id=runs[f"{name}-jun"])
        yield server, runs
    finally:
        server_pool.release(server)


def test_dry_run_prints_the_plan_and_writes_nothing(small_source, mlflow_server, tmp_path, capsys):
    source_server, runs = small_source
    target_server = mlflow_server()
    work = tmp_path / "work"
    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
                 "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["counts"] == {"experiments": 3, "runs": 4, "logged_models": 0, "traces": 0,  # + Default
                              "registered_models": 2, "model_versions": 2, "prompts": 0, "prompt_versions": 0,
                              "evaluation_datasets": 0}
    assert plan["bytes"] == {"runs": 4 * len(ARTIFACT), "logged_models": 0}
    assert plan["source_lacks"] == []
    assert not work.exists()
    assert target_server.counter.total == 0

    assert main(["export", "--source", source_server.url, "--to", str(tmp_path / "export"), "--dry-run", "--json",
                 "--experiment", "alpha", "--since", "2024-03-01"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["counts"]["experiments"], plan["counts"]["runs"]) == (1, 1)
    assert plan["counts"]["registered_models"] == 1  # m-alpha; m-beta's run is outside the filters
    assert plan["bytes"]["runs"] == len(ARTIFACT)
    assert not (tmp_path / "export").exists()


def test_filters_and_manifest(small_source, tmp_path):
    source_server, runs = small_source
    export_dir = tmp_path / "export"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir), "--experiment", "alpha",
                 "--model", "m-alpha", "--since", "2024-03-01", "--until", "2025-01-01T00:00+00:00",
                 "--quiet"]) == 0
    manifest = json.loads((export_dir / "manifest.json").read_text())
    exported_runs = {json.loads(p.read_text())["info"]["run_id"] for p in export_dir.rglob("run.json")}
    assert exported_runs == {runs["alpha-jun"]}
    assert [p.name for p in (export_dir / "registered_models").iterdir()] == ["m-alpha.json"]
    assert manifest["counts"] == {"experiments": 1, "runs": 1, "traces": 0, "logged_models": 0,
                                  "registered_models": 1, "model_versions": 1, "prompts": 0, "prompt_versions": 0,
                                  "evaluation_datasets": 0}
    assert manifest["options"]["experiments"] == ["alpha"] and manifest["options"]["since_ms"] == 1_709_251_200_000
    assert manifest["client"]["mlflow"] == mlflow.__version__ and manifest["client"]["mlflow_sync"]
    assert manifest["client"]["mlflow_export_import"]
    assert manifest["source"]["mlflow_version"] == mlflow.__version__ and manifest["source"]["kind"] == "http"
    on_disk = {p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for relative, entry in manifest["files"].items():
        data = (export_dir / relative).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert manifest["total_bytes"] == sum(e["size"] for e in manifest["files"].values())


def test_no_source_tags_renames_and_id_map(small_source, mlflow_server, tmp_path):
    source_server, runs = small_source
    target_server = mlflow_server()
    export_dir, work = tmp_path / "export", tmp_path / "work"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir), "--quiet"]) == 0
    assert main(["import", "--from", str(export_dir), "--target", target_server.url, "--work-dir", str(work),
                 "--no-source-tags", "--rename-experiment", "alpha=alpha-2024", "--rename-model",
                 "m-alpha=m-alpha-v2", "--quiet"]) == 0
    with connect(target_server.url, role="target") as target:
        client = target.client
        assert client.get_experiment_by_name("alpha") is None
        renamed = client.get_experiment_by_name("alpha-2024")
        assert EXPERIMENT_ID_TAG not in renamed.tags
        copies = {r.data.tags[RUN_ID_TAG]: r for r in all_runs(client)}
        assert set(copies) == set(runs.values())
        for copy in copies.values():  # only the source-id tag that makes re-runs safe
            assert [k for k in copy.data.tags if k.startswith("mlflow_exim.")] == [RUN_ID_TAG]
            assert copy.data.tags["mlflow.user"] == "dana"
        assert {copies[runs["alpha-jan"]].info.experiment_id} == {renamed.experiment_id}
        version = client.get_model_version("m-alpha-v2", "1")
        assert version.run_id == copies[runs["alpha-jun"]].info.run_id
        assert client.search_registered_models("name = 'm-alpha'") == []

        id_map = json.loads((work / "id-map.json").read_text())
        assert id_map["run"] == {source: copy.info.run_id for source, copy in copies.items()}
        assert id_map["experiment"][json.loads(next(export_dir.glob("experiments/*/experiment.json")).read_text())[
            "experiment_id"]]
        assert id_map["model_version"] == {"m-alpha/1": "1", "m-beta/1": "1"}
        assert id_map["registered_model"] == {"m-alpha": "m-alpha-v2", "m-beta": "m-beta"}
        with (work / "id-map.csv").open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert {(r["kind"], r["source_id"], r["target_id"], r["state"]) for r in rows} == {
            (kind, source, target_id, "done") for kind, mapping in id_map.items() for source, target_id in mapping.items()}


def test_export_to_s3_and_import_from_it(small_source, mlflow_server, moto, tmp_path, monkeypatch):
    source_server, runs = small_source
    target_server = mlflow_server()
    prefix = f"exports/{uuid.uuid4().hex}"
    uri = f"s3://{moto.make_bucket()}/{prefix}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["export", "--source", source_server.url, "--to", uri, "--experiment", "beta", "--quiet"]) == 0
    assert list(scratch.iterdir()) == [], "the export's local staging copy is removed once uploaded"
    keys = moto.list_keys("mlflow-sync-test", prefix + "/")
    assert f"{prefix}/manifest.json" in keys and any(k.endswith("artifacts/weights.bin") for k in keys)
    assert len(keys) == len(json.loads(_s3_text(uri + "/manifest.json"))["files"]) + 1
    assert main(["import", "--from", uri, "--target", target_server.url, "--work-dir", str(tmp_path / "work"),
                 "--quiet"]) == 0
    with connect(target_server.url, role="target") as target:
        copies = {r.data.tags[RUN_ID_TAG]: r for r in all_runs(target.client)}
        assert set(copies) == {runs["beta-jan"], runs["beta-jun"]}
        local = target.client.download_artifacts(copies[runs["beta-jun"]].info.run_id, "weights.bin", str(tmp_path))
        assert Path(local).read_bytes() == ARTIFACT


def _s3_text(uri: str) -> str:
    from mlflow_sync import s3

    location = s3.parse_s3_uri(uri)
    return s3.client().get_object(Bucket=location.bucket, Key=location.key)["Body"].read().decode()


def test_migrate_without_work_dir_keeps_its_state_per_pair_and_resumes_there(small_source, mlflow_server, tmp_path,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_SYNC_HOME", str(tmp_path / "home"))
    target_server = mlflow_server()
    args = ["migrate", "--source", small_source[0].url, "--target", target_server.url]
    assert main(args) == 0, capsys.readouterr().err
    (work,) = (tmp_path / "home" / "migrate").iterdir()
    assert f"work dir: {work}" in capsys.readouterr().err  # printed at the start
    assert json.loads((work / "report.json").read_text())["validation"]["ok"] is True
    imported = json.loads((work / "report.json").read_text())["counts"]["imported"]

    assert main(args) == 0  # the same pair: the same directory, whose journal says it is all there
    assert list((tmp_path / "home" / "migrate").iterdir()) == [work]
    rerun = json.loads((work / "report.json").read_text())["counts"]
    assert rerun["imported"] == {} and rerun["already_there"]["runs"] == imported["runs"]


def test_filtered_migrate_validates_exactly_the_selection(small_source, mlflow_server, tmp_path, monkeypatch):
    """Issue 13: `migrate --experiment X` used to skip validation and exit 0. It now validates the
    target against the selection it exported: what the filters left out is not reported missing,
    and a difference in what was selected makes the job exit 4, named in the report. (A run that
    never arrived is caught earlier, by the inventory: see test_inventory.py.)"""

    source_server, runs = small_source
    target_server = mlflow_server()
    work = tmp_path / "work"
    args = ["migrate", "--source", source_server.url, "--target", target_server.url, "--experiment", "alpha",
            "--quiet"]
    assert main([*args, "--work-dir", str(work)]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["validation"]["ok"] and report["validation"]["against"].startswith("selection exported to")
    validation = json.loads((work / "validation.json").read_text())
    compared_runs = {r["path"] for r in validation["results"] if r["kind"] == "run"}
    assert compared_runs == {"experiments/alpha/runs/alpha-jan", "experiments/alpha/runs/alpha-jun"}  # not beta

    from mlflow_sync.migrate import importer

    carry = importer.log_batch_bodies

    def without_params(metrics, params, tags):  # an importer that silently drops every param
        return carry(metrics, [], tags)

    monkeypatch.setattr(importer, "log_batch_bodies", without_params)
    lossy_target = mlflow_server()
    lossy_work = tmp_path / "lossy"
    assert main([*args[:4], lossy_target.url, *args[5:], "--work-dir", str(lossy_work)]) == 4
    validation = json.loads((lossy_work / "validation.json").read_text())
    failing = sorted(r["path"] for r in validation["results"] if r["status"] in ("+", "*", "!"))
    assert failing == ["experiments/alpha/runs/alpha-jan/params/p", "experiments/alpha/runs/alpha-jun/params/p"]
