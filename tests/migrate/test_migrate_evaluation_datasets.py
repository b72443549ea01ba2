"""GenAI evaluation datasets (``mlflow.genai.datasets``) travel with a migration: name, tags, linked
experiments (mapped to the target's), every record; a re-run, even without the journal, creates
no dataset and no record twice."""

from __future__ import annotations

import json

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import DATASET_ID_TAG
from mlflow_sync.migrate.demo_data import EVALUATION_RECORDS


def _build_source(client) -> dict:
    """Two experiments, one run, two datasets (same name: names need not be unique) with records."""
    first = client.create_experiment("qa")
    second = client.create_experiment("qa-extra")
    run = client.create_run(first, run_name="baseline")
    client.set_terminated(run.info.run_id)
    store = client._tracking_client.store
    shared = client.create_dataset("golden ✓", experiment_id=[first, second], tags={"purpose": "regression"})
    store.upsert_dataset_records(shared.dataset_id, EVALUATION_RECORDS)
    twin = client.create_dataset("golden ✓", experiment_id=[second])
    store.upsert_dataset_records(twin.dataset_id, EVALUATION_RECORDS[:1])
    return {"shared": shared.dataset_id, "twin": twin.dataset_id}


def _datasets(server) -> dict[str, dict]:
    """source dataset id -> {name, tags, experiment names, record inputs} of a target server (one copy each)."""
    client = server.client
    store = client._tracking_client.store
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    found = {}
    for dataset in client.search_datasets(max_results=1000):
        rows, _ = store._load_dataset_records(dataset.dataset_id, max_results=None)
        key = dataset.tags.get(DATASET_ID_TAG, dataset.dataset_id)
        assert key not in found, f"two copies of source dataset {key}"
        found[key] = {
            "name": dataset.name,
            "purpose": dataset.tags.get("purpose"),
            "experiments": sorted(names[e] for e in store.get_dataset_experiment_ids(dataset.dataset_id)),
            "inputs": sorted(json.dumps(row.inputs, sort_keys=True) for row in rows),
        }
    return found


def _validation_kinds(work, name: str = "validation.json") -> dict[str, set]:
    results = json.loads((work / name).read_text())["results"]
    kinds: dict[str, set] = {}
    for result in results:
        kinds.setdefault(result["kind"], set()).add(result["status"])
    return kinds


def test_evaluation_datasets_migrate_validate_and_never_duplicate(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    built = _build_source(source.client)
    work = tmp_path / "work"
    migrate = ["migrate", "--source", source_server.url, "--target", target_server.url, "--quiet"]

    assert main([*migrate, "--work-dir", str(work)]) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["validation"]["ok"] is True, report["validation"]
    assert _validation_kinds(work)["evaluation_dataset_records"] == {"="}  # compared, and the same
    manifest = json.loads((work / "export" / "manifest.json").read_text())
    assert manifest["counts"]["evaluation_datasets"] == 2
    assert manifest["counts"]["evaluation_dataset_records"] == len(EVALUATION_RECORDS) + 1
    assert any(path.startswith("evaluation_datasets/") for path in manifest["files"])
    id_map = json.loads((work / "id-map.json").read_text())
    assert set(id_map["evaluation_dataset"]) == set(built.values())
    assert main(["validate", "--source", source_server.url, "--target", str(work / "export"), "--quiet",
                 "--checks", "experiments,evaluation_datasets", "--report-json", str(tmp_path / "export.json")]) == 0
    assert _validation_kinds(tmp_path, "export.json")["evaluation_dataset_records"] == {"="}  # the export too

    target = connect(target_server.url, role="target")
    copies = _datasets(target)
    assert set(copies) == set(built.values())
    assert copies[built["shared"]]["experiments"] == ["qa", "qa-extra"]
    assert copies[built["shared"]]["purpose"] == "regression"
    assert len(copies[built["shared"]]["inputs"]) == len(EVALUATION_RECORDS)
    assert copies[built["twin"]]["experiments"] == ["qa-extra"]

    # A record lost on the target, then a fresh import (no journal): datasets found by their
    # source-id tag, the lost record restored, none doubled; validation compares them clean.
    copy_id = id_map["evaluation_dataset"][built["shared"]]
    store = target.client._tracking_client.store
    rows, _ = store._load_dataset_records(copy_id, max_results=None)
    store.delete_dataset_records(copy_id, [rows[0].dataset_record_id])
    assert main(["import", "--from", str(work / "export"), "--target", target_server.url, "--quiet",
                 "--work-dir", str(tmp_path / "again")]) == 0
    assert _datasets(target) == copies
    assert main(["validate", "--source", source_server.url, "--target", target_server.url, "--quiet",
                 "--checks", "experiments,evaluation_datasets", "--report-json", str(tmp_path / "v.json")]) == 0


def test_lost_answer_to_a_dataset_create_leaves_one_copy(mlflow_server, tmp_path):
    """The target creates the dataset, the connection drops before the answer: the retry finds it."""
    from tests.harness import FaultRule, ResetAfterForward

    source_server, target_server = mlflow_server(), mlflow_server()
    built = _build_source(connect(source_server.url, role="source").client)
    export = tmp_path / "export"
    assert main(["export", "--source", source_server.url, "--to", str(export), "--quiet"]) == 0
    reset = FaultRule(ResetAfterForward(), path_contains="datasets/create", times=1)
    target_server.proxy.faults = reset
    assert main(["import", "--from", str(export), "--target", target_server.url, "--quiet",
                 "--work-dir", str(tmp_path / "work")]) == 0
    assert reset.fired == 1
    assert sorted(_datasets(connect(target_server.url, role="target"))) == sorted(built.values())


def test_sync_carries_evaluation_datasets_and_their_new_records(mlflow_server, tmp_path):
    """Issue 11: sync used to carry no evaluation dataset at all, without a word (and its source
    inventory was never counted). A first cycle carries every dataset, a later one the records
    added since; a dataset left behind is named by the inventory check (exit 4)."""
    from mlflow_sync.sync import changes

    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    built = _build_source(source.client)
    args = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir",
            str(tmp_path / "standby"), "--overlap-minutes", "0", "--quiet"]
    assert main(args) == 0
    target = connect(target_server.url, role="target")
    assert set(_datasets(target)) == set(built.values())

    extra = {"inputs": {"question": "added later"}, "expectations": {"answer": "carried by the next cycle"}}
    source.client._tracking_client.store.upsert_dataset_records(built["twin"], [extra])
    assert main(args) == 0
    report = json.loads((tmp_path / "standby" / "sync-report.json").read_text())
    assert report["changes"]["evaluation_datasets"] == 1 and report["inventory"]["short"] == []
    assert json.dumps(extra["inputs"], sort_keys=True) in _datasets(target)[built["twin"]]["inputs"]
    assert len(_datasets(target)[built["twin"]]["inputs"]) == 2  # upserted: nothing twice

    lonely = tmp_path / "lonely"
    other_target = mlflow_server()
    original = changes.ChangeFinder._evaluation_datasets
    try:  # a sync whose change finder forgets datasets: the counts say so
        changes.ChangeFinder._evaluation_datasets = lambda self, experiments: None
        assert main(["sync", "--source", source_server.url, "--target", other_target.url, "--work-dir",
                     str(lonely), "--quiet"]) == 4
    finally:
        changes.ChangeFinder._evaluation_datasets = original
    report = json.loads((lonely / "sync-report.json").read_text())
    assert report["inventory"]["short"] == ["evaluation_datasets: 0 on the target, 2 on the source"]
