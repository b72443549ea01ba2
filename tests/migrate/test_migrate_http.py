"""export / import / migrate between real MLflow servers (http -> http), through the harness proxies."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import RUN_ID_TAG
from mlflow_sync.migrate.demo_data import LONG_VALUE, build_rich_source
from tests.harness import Respond
from tests.migrate.conftest import build_plain_runs


def _all_runs(client):
    from mlflow.entities import ViewType

    runs = []
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        runs += client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return runs


def _source_ids(client) -> Counter:
    return Counter(run.data.tags.get(RUN_ID_TAG) for run in _all_runs(client))


def test_migrate_rich_source_then_rerun_imports_nothing_twice(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    built = build_rich_source(source)
    work = tmp_path / "work"
    args = ["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
            "--quiet"]

    assert main(args) == 0
    report = json.loads((work / "report.json").read_text())
    assert report["validation"]["ok"] is True, report["validation"]
    assert report["failures"] == []

    target = connect(target_server.url, role="target")
    source_runs = {r.info.run_id: r for r in _all_runs(source.client)}
    target_runs = {r.data.tags[RUN_ID_TAG]: r for r in _all_runs(target.client)}
    assert set(target_runs) == set(source_runs)  # every run, the deleted one included
    for source_id, run in source_runs.items():
        copy = target_runs[source_id]
        assert copy.info.start_time == run.info.start_time
        assert copy.info.end_time == run.info.end_time
        assert copy.info.status == run.info.status
        assert copy.info.lifecycle_stage == run.info.lifecycle_stage
        assert copy.data.tags.get("mlflow.user") == run.data.tags.get("mlflow.user")
        assert copy.data.params == run.data.params
        for key in run.data.metrics:
            history = sorted((m.step, m.timestamp, repr(m.value)) for m in source.client.get_metric_history(source_id, key))
            copied = sorted((m.step, m.timestamp, repr(m.value))
                            for m in target.client.get_metric_history(copy.info.run_id, key))
            assert copied == history, key
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent:  # nested runs across experiments point at the imported parent
            assert copy.data.tags["mlflow.parentRunId"] == target_runs[parent].info.run_id
    child = next(r for r in target_runs.values() if r.data.params.get("long_value"))
    assert child.data.params["long_value"] == LONG_VALUE
    weird = target.client.get_metric_history(child.info.run_id, "weird")
    # MLflow's SQL store keeps +/-inf as +/-max float (sqlalchemy_store.sanitize_metric_value): the
    # source already holds those, and they must arrive unchanged; NaN survives as NaN.
    assert math.isnan(weird[0].value)
    assert sorted(m.value for m in weird[1:]) == [-sys.float_info.max, sys.float_info.max]

    versions = target.client.search_model_versions("name = 'fraud détection'")
    assert sorted(int(v.version) for v in versions) == [1, 3]  # the gap (deleted version 2) is kept
    model = target.client.get_registered_model("fraud détection")
    assert model.aliases == {"champion": "3", "baseline": "1"}
    assert target.client.get_model_version("fraud détection", "3").current_stage == "Staging"
    assert target.client.get_prompt_version("greeting-prompt", 2).template == "Hi {{name}}, welcome!"
    assert target.client.get_prompt_version_by_alias("greeting-prompt", "production").version == 1
    assert len(target.client.search_traces(locations=["1"], max_results=100)) == built["traces"]
    id_map = json.loads((work / "id-map.json").read_text())
    assert set(id_map["run"]) == set(source_runs)
    assert set(id_map["logged_model"]) == set(built["logged_models"])

    target_server.counter.reset()
    assert main(args) == 0  # a second run finds everything journaled
    creates = [e for e in target_server.counter.by_endpoint() if e.startswith("POST") and "create" in e]
    assert creates == []
    assert max(_source_ids(target.client).values()) == 1


def test_resume_after_sigkill_mid_import_ends_with_every_run_once(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    run_ids = build_plain_runs(source.client, 40)
    export_dir, work = tmp_path / "export", tmp_path / "work"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir), "--quiet"]) == 0

    command = [sys.executable, "-m", "mlflow_sync.cli", "import", "--from", str(export_dir), "--target",
               target_server.url, "--work-dir", str(work), "--workers", "2", "--quiet"]
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    process = subprocess.Popen([sys.executable, "-c", "from mlflow_sync.cli import run; run()", *command[3:]],
                               env=env)
    deadline = time.monotonic() + 120
    while target_server.counter.count("runs/log-batch") < 12 and process.poll() is None:
        assert time.monotonic() < deadline, "the import never got going"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    target = connect(target_server.url, role="target")
    assert 0 < len(_all_runs(target.client))  # killed mid-way: some runs are there

    assert main(command[3:]) == 0
    ids = _source_ids(target.client)
    assert set(ids) == set(run_ids) and max(ids.values()) == 1
    for run in _all_runs(target.client):  # no metric point logged twice by the resumed batches
        assert len(target.client.get_metric_history(run.info.run_id, "m3")) == len(
            source.client.get_metric_history(run.data.tags[RUN_ID_TAG], "m3"))
        assert run.info.status == "FINISHED"
        assert sorted(a.path for a in target.client.list_artifacts(run.info.run_id)) == ["config.yaml", "notes.txt"]


def test_requests_per_run_stay_within_budget(mlflow_server, tmp_path):
    """<= 5 requests per exported run at the source, <= 6 per imported run at the target."""
    source_server, target_server = mlflow_server(), mlflow_server()
    runs = 60
    build_plain_runs(connect(source_server.url, role="source").client, runs)
    source_server.counter.reset()
    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--no-validate", "--quiet"]) == 0
    at_source = source_server.counter.total / runs
    at_target = target_server.counter.total / runs
    assert at_source <= 5, source_server.counter.by_endpoint()
    assert at_target <= 6, target_server.counter.by_endpoint()


def test_damaged_export_is_refused_with_one_line(mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 2)
    export_dir = tmp_path / "export"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir), "--quiet"]) == 0
    run_file = next(export_dir.rglob("run.json"))
    run_file.write_text(run_file.read_text().replace("carol", "mallory"))
    code = main(["import", "--from", str(export_dir), "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: export") and "sha256 differs" in err[-1]
    assert target_server.counter.count("runs/create") == 0


def test_failing_object_is_reported_by_name_and_exit_code_is_non_zero(mlflow_server, tmp_path):
    source_server, target_server = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 3)
    export_dir, work = tmp_path / "export", tmp_path / "work"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir), "--quiet"]) == 0

    def refuse_one_artifact(request):  # one run's artifact upload is refused on every attempt
        if request.method == "PUT" and request.path.endswith("notes.txt") and _belongs_to(work, "run-1", request.path):
            return Respond(403, {"Content-Type": "application/json"},
                           b'{"error_code": "PERMISSION_DENIED", "message": "refused by test"}')
        return None

    target_server.proxy.faults = refuse_one_artifact
    import_args = ["import", "--from", str(export_dir), "--target", target_server.url, "--work-dir", str(work),
                   "--quiet"]
    assert main(import_args) == 1
    report = json.loads((work / "report.json").read_text())
    assert [(f["kind"], f["name"]) for f in report["failures"]] == [("run", "run-1")]
    assert "403" in report["failures"][0]["reason"]
    assert report["counts"]["imported"]["runs"] == 2

    target_server.proxy.faults = None
    assert main(import_args) == 0  # the next run completes the failed one, and only that one
    assert max(_source_ids(connect(target_server.url, role="target").client).values()) == 1


def _belongs_to(work, run_name: str, path: str) -> bool:
    """Is ``path`` under the target run the import created for source run ``run_name``?"""
    export_runs = {json.loads(p.read_text())["info"]["run_name"]: json.loads(p.read_text())["info"]["run_id"]
                   for p in (work.parent / "export").rglob("run.json")}
    journal = work / "journal.jsonl"
    if not journal.exists():
        return False
    targets = {e["target"] for e in map(json.loads, journal.read_text().splitlines())
               if e["kind"] == "run" and e["source"] == export_runs[run_name]}
    return any(f"/{target}/" in path for target in targets)
