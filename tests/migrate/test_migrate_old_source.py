"""A source on an older MLflow (2.x style: no logged models, traces or prompts). What exists is
decided from the server, never from the client's MLflow version (upstream stops after the first
run of each experiment, exit code 0): a real server is made to answer like an old one."""

from __future__ import annotations

import json

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import RUN_ID_TAG
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.harness import FaultRule, Respond
from tests.migrate.conftest import all_runs

NOT_FOUND = Respond(404, {"Content-Type": "application/json"},
                    b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "No API route found"}')
MLFLOW_3_ONLY = ("/logged-models", "/traces", "/mlflow/prompts", "/api/3.0/")


def answer_like_mlflow_2(server) -> None:
    rules = [FaultRule(NOT_FOUND, path_contains=part) for part in MLFLOW_3_ONLY]
    server.proxy.faults = lambda request: next((a for a in (rule(request) for rule in rules) if a), None)


def test_export_from_a_2x_style_server_gets_every_run_and_names_what_the_source_lacks(mlflow_server, tmp_path,
                                                                                      capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    with connect(source_server.url, role="source") as source:
        built = build_rich_source(source, runs_per_experiment=2, with_logged_models=False, with_traces=False,
                                  with_prompts=False)
    answer_like_mlflow_2(source_server)
    export_dir = tmp_path / "export"
    assert main(["export", "--source", source_server.url, "--to", str(export_dir),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source lacks"] == ["logged_models", "traces", "prompts", "evaluation_datasets"]
    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["source"]["lacks"] == ["logged_models", "traces", "prompts", "evaluation_datasets"]
    assert manifest["counts"]["runs"] == len(built["runs"]) + 1  # every run, the deleted one included
    assert manifest["counts"]["model_versions"] == 2
    assert any(record.fault for record in source_server.counter.snapshot())  # it did answer like an old one

    assert main(["import", "--from", str(export_dir), "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--quiet"]) == 0
    with connect(target_server.url, role="target") as target:
        copies = {r.data.tags[RUN_ID_TAG] for r in all_runs(target.client)}
        assert copies == set(built["runs"]) | set(built["deleted_runs"])
        assert sorted(int(v.version) for v in target.client.search_model_versions("name = 'fraud détection'")) == [1, 3]
