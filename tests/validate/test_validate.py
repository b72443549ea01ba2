"""The validator on real servers: a faithful copy validates clean, each corruption is reported
precisely (right kind, right object path, non-zero exit)."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from mlflow_sync import s3
from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.validate import Status, ValidateOptions, validate
from mlflow_sync.validate.export_reader import ExportReader
from tests.validate.faithful import faithful_copy

RUN = "experiments/exp-a/runs/parent"


def _sql(server, statement: str, *args) -> None:
    """Change the target's database behind the API (what no REST call can do, e.g. a param value)."""
    connection = server.database.connect()
    try:
        cursor = connection.cursor()
        cursor.execute(statement.replace("?", server.database.placeholder), args)
        assert cursor.rowcount >= 1, statement
        connection.commit()
    finally:
        connection.close()


def _artifact_key(target, server, run_id: str, path: str) -> tuple[str, str]:
    experiment = target.client.get_run(run_id).info.experiment_id
    return server.bucket, f"{server.prefix}/{experiment}/{run_id}/artifacts/{path}"


def _failing(report) -> set[tuple[str, str, str]]:
    return {(r.status.value, r.kind, r.path) for r in report.failing()}


def test_faithful_copy_validates_clean(copied):
    source, target, _, ids, _ = copied
    report = validate(source, target, ValidateOptions(metric_history=True, checksum=True))
    assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
    kinds = report.summary()
    # every object kind of the seed was actually compared, not skipped
    for kind in ("experiment", "run", "run_attribute", "param", "tag", "metric", "metric_history", "artifact",
                 "dataset_input", "model_input", "model_output", "logged_model", "registered_model",
                 "model_version", "alias", "trace", "prompt", "prompt_version", "prompt_alias",
                 "logged_model_param", "logged_model_tag", "logged_model_metric", "logged_model_artifact",
                 "registered_model_attribute", "registered_model_tag", "model_version_tag",
                 "evaluation_dataset", "evaluation_dataset_tag", "evaluation_dataset_attribute",
                 "evaluation_dataset_records"):
        assert kinds.get(kind, {}).get("matched"), kind
    paths = {r.path for r in report.results}
    assert f"{RUN}/params/lr" in paths and f"{RUN}/metrics/loss/history" in paths
    assert f"{RUN}/attributes/parent_run" not in paths
    assert "experiments/exp-a/runs/child/attributes/parent_run" in paths  # mapped link compared
    assert f"experiments/exp-a/traces/{ids['trace']}" in paths


def _run_deleted(source, target, server, ids, run_map):
    target.client.delete_run(run_map[ids["parent"]])
    return {("*", "run_attribute", f"{RUN}/attributes/lifecycle_stage")}


def _param_changed(source, target, server, ids, run_map):
    _sql(server, "UPDATE params SET value = ? WHERE run_uuid = ? AND key = ?", "0.02", run_map[ids["parent"]], "lr")
    return {("*", "param", f"{RUN}/params/lr")}


def _tag_removed(source, target, server, ids, run_map):
    target.client.delete_tag(run_map[ids["parent"]], "team")
    return {("+", "tag", f"{RUN}/tags/team")}


def _history_step_changed(source, target, server, ids, run_map):
    # Step 1 of 4: the latest value (what a plain metric check compares) stays the same.
    _sql(server, "UPDATE metrics SET value = ? WHERE run_uuid = ? AND key = ? AND step = ?",
         0.75, run_map[ids["parent"]], "loss", 1)
    return {("*", "metric_history", f"{RUN}/metrics/loss/history")}


def _artifact_removed(source, target, server, ids, run_map):
    bucket, key = _artifact_key(target, server, run_map[ids["parent"]], "notes/readme.txt")
    s3.client().delete_object(Bucket=bucket, Key=key)
    return {("+", "artifact", f"{RUN}/artifacts/notes/readme.txt")}


def _artifact_truncated(source, target, server, ids, run_map):
    bucket, key = _artifact_key(target, server, run_map[ids["parent"]], "notes/readme.txt")
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"hello")
    return {("*", "artifact", f"{RUN}/artifacts/notes/readme.txt")}


def _artifact_same_size_other_bytes(source, target, server, ids, run_map):
    bucket, key = _artifact_key(target, server, run_map[ids["parent"]], "notes/readme.txt")
    s3.client().put_object(Bucket=bucket, Key=key, Body=b"HELLO WORLD")
    return {("*", "artifact", f"{RUN}/artifacts/notes/readme.txt")}


def _model_version_missing(source, target, server, ids, run_map):
    target.client.delete_model_version("classifier", "1")
    return {("+", "model_version", "registered_models/classifier/versions/1")}


def _alias_moved(source, target, server, ids, run_map):
    target.client.set_registered_model_alias("classifier", "champion", "1")
    return {("*", "alias", "registered_models/classifier/aliases/champion")}


def _trace_missing(source, target, server, ids, run_map):
    experiment = target.client.get_experiment_by_name("exp-a").experiment_id
    target_trace = target.client.search_traces(locations=[experiment])[0].info.trace_id
    target.client.delete_traces(experiment, trace_ids=[target_trace])
    return {("+", "trace", f"experiments/exp-a/traces/{ids['trace']}")}


def _trace_spans_lost(source, target, server, ids, run_map):
    """The trace is still listed but its spans are gone: a search with spans would drop it silently."""
    experiment = target.client.get_experiment_by_name("exp-a").experiment_id
    (trace,) = target.client.search_traces(locations=[experiment], include_spans=False)
    _sql(server, "DELETE FROM spans WHERE trace_id = ?", trace.info.trace_id)
    return {("*", "trace", f"experiments/exp-a/traces/{ids['trace']}")}


def _prompt_version_changed(source, target, server, ids, run_map):
    _sql(server, "UPDATE model_version_tags SET value = ? WHERE name = ? AND version = ? AND key = ?",
         "Hey {{name}}", "greeting", 2, "mlflow.prompt.text")
    return {("*", "prompt_version", "prompts/greeting/versions/2")}


def _assessment_changed(source, target, server, ids, run_map):
    import mlflow

    experiment = target.client.get_experiment_by_name("exp-a").experiment_id
    trace = target.client.search_traces(locations=[experiment])[0]
    assessment = trace.info.assessments[0]
    with target.activate():
        mlflow.override_feedback(trace_id=trace.info.trace_id, assessment_id=assessment.assessment_id, value=False)
    return {("*", "trace", f"experiments/exp-a/traces/{ids['trace']}")}


def _stage_changed(source, target, server, ids, run_map):
    target.client.transition_model_version_stage("classifier", "1", "Production")
    return {("*", "model_version", "registered_models/classifier/versions/1")}


def _dataset_record_changed(source, target, server, ids, run_map):
    dataset = target.client.search_datasets()[0]
    target.client._tracking_client.store.upsert_dataset_records(
        dataset.dataset_id, [{"inputs": {"question": "how"}, "expectations": {"answer": "quickly"}}])
    return {("*", "evaluation_dataset_records", "evaluation_datasets/qa-set/records")}


def _start_time_shifted(source, target, server, ids, run_map):
    _sql(server, "UPDATE runs SET start_time = start_time + 3600000 WHERE run_uuid = ?", run_map[ids["parent"]])
    return {("*", "run_attribute", f"{RUN}/attributes/start_time")}


def _extra_run(source, target, server, ids, run_map):
    experiment = target.client.get_experiment_by_name("exp-a").experiment_id
    target.client.create_run(experiment, run_name="stray")
    return {("-", "run", "experiments/exp-a/runs/stray")}


CORRUPTIONS = {
    "run deleted": (_run_deleted, {}),
    "param value changed": (_param_changed, {}),
    "tag removed": (_tag_removed, {}),
    "metric history step changed": (_history_step_changed, {"metric_history": True}),
    "artifact removed": (_artifact_removed, {}),
    "artifact truncated": (_artifact_truncated, {}),
    "artifact same size, other bytes": (_artifact_same_size_other_bytes, {"checksum": True}),
    "model version missing": (_model_version_missing, {}),
    "alias moved": (_alias_moved, {}),
    "trace missing": (_trace_missing, {}),
    "trace spans lost": (_trace_spans_lost, {}),
    "prompt version changed": (_prompt_version_changed, {}),
    "trace assessment changed": (_assessment_changed, {}),
    "model version stage changed": (_stage_changed, {}),
    "evaluation dataset record changed": (_dataset_record_changed, {}),
    "start time shifted": (_start_time_shifted, {}),
    "extra run in target": (_extra_run, {}),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corruption_is_reported_precisely(copied, corruption):
    source, target, server, ids, run_map = copied
    corrupt, flags = CORRUPTIONS[corruption]
    expected = corrupt(source, target, server, ids, run_map)
    report = validate(source, target, ValidateOptions(**flags))
    assert not report.ok
    assert _failing(report) == expected, [(r.status.value, r.path, r.detail) for r in report.failing()]
    if flags:
        # the flag is what finds it: without it this corruption is invisible by design
        assert validate(source, target, ValidateOptions()).ok


def test_one_way_accepts_extra_objects(copied):
    source, target, server, ids, run_map = copied
    _extra_run(source, target, server, ids, run_map)
    report = validate(source, target, ValidateOptions(one_way=True))
    assert report.ok
    assert ("-", "experiments/exp-a/runs/stray") in {(r.status.value, r.path) for r in report.results}


def test_lost_run_is_missing(seeded_source, mlflow_server):
    _, source, _ = seeded_source
    server = mlflow_server("sqlite", "proxied")
    with connect(server.url, role="target") as target:
        faithful_copy(source, target, skip_runs=("child",))
        report = validate(source, target, ValidateOptions(checks=("experiments", "runs")))
    assert _failing(report) == {("+", "run", "experiments/exp-a/runs/child")}


def test_fingerprint_matches_runs_without_source_tag(copied):
    """Runs copied by another tool (no source-id tag) match by name, start time and params."""
    source, target, _, ids, run_map = copied
    for target_run in run_map.values():
        target.client.delete_tag(target_run, "mlflow_exim.run_info.run_id")
    report = validate(source, target, ValidateOptions(checks=("experiments", "runs")))
    assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]


def test_float_tolerance_and_ignore_lists(copied):
    source, target, server, ids, run_map = copied
    _sql(server, "UPDATE latest_metrics SET value = value * 1.0000001 WHERE run_uuid = ? AND key = ?",
         run_map[ids["child"]], "score")
    target.client.set_tag(run_map[ids["child"]], "added.by.ci", "x")
    checks = ("experiments", "runs")
    strict = validate(source, target, ValidateOptions(checks=checks))
    assert _failing(strict) == {("*", "metric", "experiments/exp-a/runs/child/metrics/score"),
                                ("-", "tag", "experiments/exp-a/runs/child/tags/added.by.ci")}
    lenient = validate(source, target, ValidateOptions(checks=checks, float_tolerance=1e-6,
                                                       ignore_tags=("added.*",)))
    assert lenient.ok
    ignored = validate(source, target, ValidateOptions(checks=checks, ignore_paths=("*/runs/child/*",)))
    assert ignored.ok and ignored.ignored > 0


def test_cli_writes_every_report_and_exits_4(copied, tmp_path, capsys):
    source, target, server, ids, run_map = copied
    _history_step_changed(source, target, server, ids, run_map)
    _tag_removed(source, target, server, ids, run_map)
    files = {name: tmp_path / name for name in ("report.json", "report.html", "junit.xml", "combined.txt")}
    code = main(["validate", "--source", source.spec.uri, "--target", server.url, "--metric-history",
                 "--report-json", str(files["report.json"]), "--html", str(files["report.html"]),
                 "--junit", str(files["junit.xml"]), "--combined", str(files["combined.txt"]), "--workers", "4"])
    assert code == 4
    terminal = capsys.readouterr().out
    rows = [line.replace("│", " ").replace("┃", " ").split() for line in terminal.splitlines()]
    assert ["kind", "matched", "missing", "extra", "differ", "error"] in rows  # the summary table
    assert ["metric_history", "3", "0", "0", "1", "0"] in rows and ["tag", "4", "1", "0", "0", "0"] in rows
    assert f"* {RUN}/metrics/loss/history" in terminal and "MISMATCH" in terminal
    lines = files["combined.txt"].read_text().splitlines()
    assert f"* {RUN}/metrics/loss/history" in lines and f"+ {RUN}/tags/team" in lines
    assert f"= {RUN}/params/lr" in lines
    assert all(line[:2] in ("= ", "+ ", "- ", "* ", "! ") for line in lines)
    data = json.loads(files["report.json"].read_text())
    assert data["schema_version"] == 1 and data["ok"] is False
    assert data["totals"]["differ"] == 1 and data["totals"]["missing"] == 1
    history = next(r for r in data["results"] if r["path"] == f"{RUN}/metrics/loss/history")
    assert history["series"]["source"][1] == [1, 0.5] and history["series"]["target"][1] == [1, 0.75]
    assert data["requests"]["source"]["POST /api/2.0/mlflow/runs/search"] >= 1
    suites = ElementTree.parse(files["junit.xml"]).getroot()
    failures = {case.get("name") for case in suites.iter("testcase") if case.find("failure") is not None}
    assert failures == {f"{RUN}/metrics/loss/history", f"{RUN}/tags/team"}
    html = files["report.html"].read_text()
    assert "<svg" in html and "MISMATCH" in html
    assert "<link" not in html and "src=" not in html and "url(" not in html  # self-contained


def test_cli_clean_copy_exits_0(copied, tmp_path, capsys):
    source, _, server, _, _ = copied
    assert main(["validate", "-s", source.spec.uri, "-t", server.url, "--checks", "experiments,runs",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["summary"]["run"]["matched"] == 3


def test_cli_bad_input_is_one_line(tmp_path, capsys, copied):
    source, _, server, _, _ = copied
    assert main(["validate", "-s", source.spec.uri, "-t", server.url, "--checks", "runs,bogus"]) == 2
    assert "unknown check(s) bogus" in capsys.readouterr().err
    assert main(["validate", "-s", source.spec.uri, "-t", server.url, "--html", str(tmp_path)]) == 2
    assert main(["validate", "-s", source.spec.uri, "-t", "http://127.0.0.1:9"]) == 3


def test_unreadable_objects_are_errors_not_crashes(copied):
    source, target, server, ids, run_map = copied
    from tests.harness import FaultRule, Respond

    server.proxy.faults = FaultRule(Respond(403, body=b"{}"), path_contains="metrics/get-history")
    report = validate(source, target, ValidateOptions(checks=("experiments", "runs"), metric_history=True))
    errors = {(r.status, r.path) for r in report.results if r.status is Status.ERROR}
    assert (Status.ERROR, f"{RUN}/metrics") in errors
    assert not report.ok


def test_model_inputs_by_mapped_id_and_spanless_traces(mlflow_server, tmp_path):
    """A real migration (new logged-model ids on the target) of runs with model inputs and of a
    trace without spans validates clean, as does the export it went through; then a removed and a
    changed model input and the spanless trace missing are each reported at their path."""
    from mlflow.entities import LoggedModelInput, LoggedModelOutput

    from tests.migrate.test_upstream_defects import _spanless_trace

    source_server, target_server = mlflow_server(), mlflow_server()
    with connect(source_server.url, role="source") as source, connect(target_server.url, role="target") as target:
        client = source.client
        experiment_id = client.create_experiment("scoring")
        trainer = client.create_run(experiment_id, run_name="trainer")
        model = client.create_logged_model(experiment_id, name="scorer", source_run_id=trainer.info.run_id)
        client.finalize_logged_model(model.model_id, "READY")
        client.log_outputs(trainer.info.run_id, [LoggedModelOutput(model.model_id, 0)])
        for name in ("evaluator", "reviewer"):
            run = client.create_run(experiment_id, run_name=name)
            client.log_inputs(run.info.run_id, models=[LoggedModelInput(model.model_id)])
        trace_id = _spanless_trace(source.tracking_uri, experiment_id)
        work = tmp_path / "work"
        assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                     str(work), "--no-validate", "--quiet"]) == 0

        (copy,) = target.client.search_logged_models([target.client.get_experiment_by_name("scoring").experiment_id])
        assert copy.model_id != model.model_id  # compared through the map, not literally
        for side in (target, ExportReader(work / "export")):
            report = validate(source, side, ValidateOptions())
            assert report.ok, [(r.status.value, r.path, r.detail) for r in report.failing()]
            assert report.summary()["model_input"]["matched"] == 2
            assert f"experiments/scoring/traces/{trace_id}" in {r.path for r in report.results}

        runs = {r.info.run_name: r.info.run_id for r in target.client.search_runs([copy.experiment_id])}
        _sql(target_server, "DELETE FROM inputs WHERE source_id = ? AND destination_type = 'MODEL_INPUT'",
             runs["evaluator"])
        _sql(target_server, "UPDATE inputs SET destination_id = ? WHERE source_id = ? AND destination_type = "
             "'MODEL_INPUT'", "m-elsewhere", runs["reviewer"])
        target.client.delete_traces(copy.experiment_id, trace_ids=[trace_id])
        base = "experiments/scoring"
        assert _failing(validate(source, target, ValidateOptions())) == {
            ("+", "model_input", f"{base}/runs/evaluator/inputs/models/{model.model_id}"),
            ("+", "model_input", f"{base}/runs/reviewer/inputs/models/{model.model_id}"),
            ("-", "model_input", f"{base}/runs/reviewer/inputs/models/(target model m-elsewhere)"),
            ("+", "trace", f"{base}/traces/{trace_id}"),
        }
