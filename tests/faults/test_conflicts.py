"""A target that already holds different objects under the same names keeps them, and says so."""

from __future__ import annotations

import json

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import MODEL_VERSION_TAG, RUN_ID_TAG
from tests.faults.inventory import record_summary


def test_same_names_on_the_target_are_kept_and_reported(mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source").client
    target = connect(target_server.url, role="target").client
    for client, owner in ((source, "source-team"), (target, "target-team")):
        experiment_id = client.create_experiment("shared-name", tags={"owner": owner})
        run = client.create_run(experiment_id, run_name=f"run of {owner}")
        client.set_terminated(run.info.run_id)
        client.create_registered_model("shared-model", tags={"owner": owner})
        version = client.create_model_version("shared-model", f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias("shared-model", "champion", version.version)
    their_run = target.search_runs([target.get_experiment_by_name("shared-name").experiment_id])[0]

    work = tmp_path / "work"
    code = main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and err[-1].startswith("error: validation found differences"), err  # reported
    report = json.loads((work / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is False

    experiment = target.get_experiment_by_name("shared-name")  # nothing of the target's overwritten
    assert experiment.tags["owner"] == "target-team"
    runs = {r.info.run_id: r for r in target.search_runs([experiment.experiment_id])}
    assert their_run.info.run_id in runs and runs[their_run.info.run_id].data.tags == their_run.data.tags
    assert sorted(r.data.tags.get(RUN_ID_TAG, "theirs") for r in runs.values())[-1] == "theirs"
    assert len(runs) == 2  # the source's run was added next to it
    model = target.get_registered_model("shared-model")
    assert model.tags["owner"] == "target-team" and model.aliases == {"champion": "1"}
    versions = {v.version: v for v in target.search_model_versions("name = 'shared-model'")}
    assert MODEL_VERSION_TAG not in versions["1"].tags and versions["2"].tags[MODEL_VERSION_TAG] == "1"
    record_summary("bad_input: target holds other objects of the same names", exit_code=4, lost=0,
                   kept=["experiment tags", "runs", "registered model tags", "alias", "model versions"])
