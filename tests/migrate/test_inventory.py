"""Never silent: what the source holds is counted with plain REST before and after, and a job that
did not carry something says so by name and exits non-zero (issue 11).

Also the same-version defects the counts and a second migration exposed: runs already on the
target written again (model inputs twice, writes to a deleted run), the logged model tag
``mlflow.modelVersions`` replaced by the target's own value, and deleted runs left behind by a
default migration.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.identity import RUN_ID_TAG
from mlflow_sync.inventory import take_inventory
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.harness import FaultRule, Respond
from tests.migrate.conftest import all_runs

pytestmark = pytest.mark.slow

MODEL_VERSIONS = '[{"name": "fraud d\\u00e9tection", "version": 1}, {"name": "fraud d\\u00e9tection", "version": "1"}]'


def _source_with_model_inputs(server) -> dict:
    """The rich source, plus a run that takes a logged model as input and the tag MLflow writes twice."""
    from mlflow.entities import LoggedModelInput

    with connect(server.url, role="source") as source:
        built = build_rich_source(source, runs_per_experiment=2)
        client = source.client
        model_id = built["logged_models"][0]
        client.log_inputs(built["runs"][0], models=[LoggedModelInput(model_id)])
        client.set_logged_model_tags(model_id, {"mlflow.modelVersions": MODEL_VERSIONS})
    return built


def _counts(server) -> dict:
    with connect(server.url, role="inventory") as side:
        return take_inventory(side).counts


def test_a_second_migrate_with_a_new_work_dir_creates_nothing_and_carries_deleted_runs_by_default(
        mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    built = _source_with_model_inputs(source_server)
    first = ["migrate", "--source", source_server.url, "--target", target_server.url, "--quiet"]

    assert main([*first, "--work-dir", str(tmp_path / "one")]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["validation"]["ok"] is True
    source_counts = report["inventory"]["source"]["counts"]
    assert source_counts["deleted_runs"] == 1 and source_counts["registered_models"] == 1
    after = report["inventory"]["target_after"]["counts"]
    for kind in ("runs", "deleted_runs", "logged_models", "traces", "model_versions", "prompts", "prompt_versions"):
        assert after[kind] == source_counts[kind], kind

    with connect(target_server.url, role="target") as target:
        copies = Counter(run.data.tags.get(RUN_ID_TAG) for run in all_runs(target.client))
        assert set(copies) == set(built["runs"]) | set(built["deleted_runs"])  # the deleted run came along
        model = target.client.search_logged_models(
            experiment_ids=[e.experiment_id for e in target.client.search_experiments()],
            filter_string="name = 'classifier-0'")[0]
        assert model.tags["mlflow.modelVersions"] == MODEL_VERSIONS  # the source's value, exactly

    before_second = _counts(target_server)
    assert main([*first, "--work-dir", str(tmp_path / "two")]) == 0, capsys.readouterr().err
    assert _counts(target_server) == before_second  # nothing created twice
    second = json.loads((tmp_path / "two" / "report.json").read_text())
    assert second["failures"] == [] and second["validation"]["ok"] is True


def test_skip_kind_deleted_runs_leaves_them_out_and_validation_compares_what_was_carried(
        mlflow_server, tmp_path, capsys):
    source_server, target_server = mlflow_server(), mlflow_server()
    with connect(source_server.url, role="source") as source:
        built = build_rich_source(source, runs_per_experiment=1, with_traces=False, with_prompts=False)
    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--skip-kind", "deleted-runs", "--quiet"]) == 0, capsys.readouterr().err
    with connect(target_server.url, role="target") as target:
        copies = {run.data.tags.get(RUN_ID_TAG) for run in all_runs(target.client)}
    assert copies == set(built["runs"])
    # validate on its own says the same, given the same --skip-kind, and names the run without it
    check = ["validate", "--source", source_server.url, "--target", target_server.url, "--quiet", "--combined",
             str(tmp_path / "objects.txt")]
    assert main([*check, "--skip-kind", "deleted-runs"]) == 0
    assert main(check) == 4
    missing = [line for line in (tmp_path / "objects.txt").read_text().splitlines() if line.startswith("+ ")]
    assert len(missing) == len(built["deleted_runs"]) and all("/runs/" in line for line in missing)


def test_an_emptied_registry_listing_fails_the_migration_naming_registered_models(mlflow_server, tmp_path, capsys):
    """The reader is fooled on purpose (every registered-model page comes back empty); the inventory,
    which also counts the models behind the version listing, is not."""
    source_server, target_server = mlflow_server(), mlflow_server()
    with connect(source_server.url, role="source") as source:
        build_rich_source(source, runs_per_experiment=1, with_traces=False, with_prompts=False)
    empty = FaultRule(Respond(200, {"Content-Type": "application/json"}, b"{}"),
                      path_contains="GET /api/2.0/mlflow/registered-models/search")
    source_server.proxy.faults = empty
    code = main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                 str(tmp_path / "work"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 4, err
    assert "registered_models: 0 exported, 1 on the source" in err
    assert err.count("\n") == 1 and err.startswith("error:")


def test_a_kind_no_job_carries_is_refused_before_anything_is_written_unless_skipped(mlflow_server, tmp_path,
                                                                                    capsys):
    source_server = mlflow_server(env={"MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"})
    target_server = mlflow_server()
    with connect(source_server.url, role="source") as source:
        source.client.create_experiment("plain")
        source.client.create_webhook("on-new-version", "https://127.0.0.1:9/hook", events=["model_version.created"])
    before = _counts(target_server)
    args = ["migrate", "--source", source_server.url, "--target", target_server.url, "--quiet"]

    assert main([*args, "--work-dir", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "holds webhooks (1)" in err and "--skip-kind webhooks" in err
    assert _counts(target_server) == before  # nothing written

    sync = ["sync", "--source", source_server.url, "--target", target_server.url, "--work-dir",
            str(tmp_path / "standby"), "--quiet"]
    assert main(sync) == 2  # sync, too, names what it would leave behind instead of dropping it
    assert "holds webhooks (1)" in capsys.readouterr().err
    assert _counts(target_server) == before and not (tmp_path / "standby" / "sync-state.json").exists()

    assert main([*args, "--work-dir", str(tmp_path / "skipped"), "--skip-kind", "webhooks"]) == 0, \
        capsys.readouterr().err
    assert _counts(target_server)["experiments"] == before["experiments"] + 1


def test_info_shows_the_inventory(mlflow_server, capsys):
    server = mlflow_server()
    with connect(server.url, role="source") as source:
        build_rich_source(source, runs_per_experiment=1, with_traces=False)
    assert main(["info", server.url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["inventory"]["counts"]["registered_models"] == 1
    assert shown["inventory"]["counts"]["prompts"] == 1
    assert shown["inventory"]["counts"]["deleted_runs"] == 1
