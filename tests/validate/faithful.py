"""Test data for the validator: a seeded source server and a faithful copy of it.

migrate/ is built in parallel, so the "faithful copy" the validator must accept is made here
with plain MlflowClient calls, following the importer's conventions: the source-identity tags
(``mlflow_exim.run_info.run_id`` and friends), start/end times, full metric histories, dataset
and model inputs/outputs, parent links, artifacts, registry versions in order, aliases,
traces and prompts.
"""

from __future__ import annotations

import tempfile

import mlflow
from mlflow.entities import (
    AssessmentSource,
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    LoggedModelOutput,
    Metric,
    Param,
    ViewType,
)
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from mlflow_sync.connection import Server
from mlflow_sync.identity import LOGGED_MODEL_ID_TAG, RUN_ID_TAG, TRACE_ID_TAG

T0 = 1_700_000_000_000  # fixed epoch ms so copies are reproducible
DATASET_RECORDS = [
    {"inputs": {"question": "why"}, "expectations": {"answer": "because"}, "tags": {"level": "easy"}},
    {"inputs": {"question": "how"}, "expectations": {"answer": "carefully"}},
]
COPIED_TRACE_TAGS_SKIP = ("mlflow.artifactLocation", "mlflow.traceName", "mlflow.trace.spansLocation")


def seed_source(server: Server) -> dict:
    """Two experiments, parent/child runs with history (NaN and inf included), artifacts, a dataset
    input, a logged model used as input and output, a registered model with an alias, a trace and
    a prompt with two versions and an alias, an assessment on the trace, a logged-model metric and
    artifact, a model version in a stage and an evaluation dataset. Returns ids the tests use."""
    client = server.client
    exp_a = client.create_experiment("exp-a", tags={"team": "vision", "mlflow.note.content": "main"})
    exp_b = client.create_experiment("exp-b")
    parent = client.create_run(exp_a, run_name="parent", start_time=T0, tags={"team": "vision"})
    pid = parent.info.run_id
    client.log_batch(pid, params=[Param("lr", "0.01"), Param("epochs", "3")], metrics=[
        Metric("loss", value, T0 + step * 1000, step) for step, value in enumerate([1.0, 0.5, float("nan"), 0.25])
    ] + [Metric("acc", float("inf"), T0 + 5000, 0), Metric("acc", 0.9, T0 + 6000, 1)])
    client.log_text(pid, "hello world", "notes/readme.txt")
    client.log_dict(pid, {"a": 1, "b": [1, 2, 3]}, "config.json")
    client.log_inputs(pid, datasets=[DatasetInput(
        Dataset("train", "d1g3st", "local", '{"uri": "/data/train.csv"}', None, None),
        [InputTag("mlflow.data.context", "training")])])
    model = client.create_logged_model(exp_a, name="net", source_run_id=pid, params={"layers": "2"},
                                       tags={"framework": "torch"}, model_type="classifier")
    client.finalize_logged_model(model.model_id, "READY")
    client.log_metric(pid, "val_acc", 0.8, timestamp=T0 + 7000, step=0, model_id=model.model_id)
    with tempfile.TemporaryDirectory() as scratch:
        with open(f"{scratch}/MLmodel", "w") as handle:
            handle.write("flavors: {}\n")
        client.log_model_artifact(model.model_id, f"{scratch}/MLmodel")
    client.log_outputs(pid, [LoggedModelOutput(model.model_id, 3)])
    client.set_terminated(pid, "FINISHED", end_time=T0 + 60_000)

    child = client.create_run(exp_a, run_name="child", start_time=T0 + 10_000,
                              tags={"mlflow.parentRunId": pid, "stage": "eval"})
    cid = child.info.run_id
    client.log_batch(cid, params=[Param("split", "test")], metrics=[Metric("score", 0.7, T0 + 11_000, 0)])
    client.log_inputs(cid, models=[LoggedModelInput(model.model_id)])
    client.set_terminated(cid, "FINISHED", end_time=T0 + 20_000)

    other = client.create_run(exp_b, run_name="solo", start_time=T0 + 30_000)
    client.log_param(other.info.run_id, "seed", "42")
    client.set_terminated(other.info.run_id, "FAILED", end_time=T0 + 31_000)

    client.create_registered_model("classifier", tags={"owner": "ml"}, description="the classifier")
    for _ in range(2):
        client.create_model_version("classifier", f"runs:/{pid}/model", run_id=pid, tags={"note": "v"},
                                    description="a version")
    client.set_registered_model_alias("classifier", "champion", "2")
    client.transition_model_version_stage("classifier", "1", "Staging")
    dataset = client.create_dataset("qa-set", experiment_id=[exp_a], tags={"purpose": "eval"})
    client._tracking_client.store.upsert_dataset_records(dataset.dataset_id, DATASET_RECORDS)

    with server.activate():
        span = client.start_trace("answer", inputs={"question": "why"}, tags={"topic": "faq"},
                                  experiment_id=exp_a, start_time_ns=(T0 + 2000) * 1_000_000, run_id=pid)
        client.end_trace(span.trace_id, outputs={"answer": "because"}, end_time_ns=(T0 + 2500) * 1_000_000)
        mlflow.flush_trace_async_logging()
        mlflow.log_feedback(trace_id=span.trace_id, name="quality", value=True,
                            source=AssessmentSource(source_type="HUMAN", source_id="alice"))
        mlflow.genai.register_prompt("greeting", "Hello {{name}}", commit_message="first", tags={"lang": "en"})
        mlflow.genai.register_prompt("greeting", "Hi {{name}}!", commit_message="second", tags={"lang": "en"})
        mlflow.genai.set_prompt_alias("greeting", "production", 1)
    return {"exp_a": exp_a, "exp_b": exp_b, "parent": pid, "child": cid, "model": model.model_id,
            "trace": span.trace_id}


def faithful_copy(source: Server, target: Server, *, skip_runs: tuple[str, ...] = ()) -> dict[str, str]:
    """Copy everything ``seed_source`` makes (and the general shape of such data) to ``target``.

    ``skip_runs``: run names left out (to simulate an import that lost them). Returns the run map.
    """
    src, dst = source.client, target.client
    run_map: dict[str, str] = {}
    model_map: dict[str, str] = {}
    experiments = {}
    for experiment in src.search_experiments(view_type=ViewType.ALL):
        if experiment.name == "Default":
            target_id = dst.get_experiment_by_name("Default").experiment_id
            for key, value in experiment.tags.items():
                dst.set_experiment_tag(target_id, key, value)
        else:
            target_id = dst.create_experiment(experiment.name, tags=experiment.tags)
        experiments[experiment.experiment_id] = target_id

    parents = {}
    for source_exp, target_exp in experiments.items():
        runs = src.search_runs([source_exp], run_view_type=ViewType.ALL, max_results=1000)
        for run in sorted(runs, key=lambda r: r.info.start_time):
            if run.info.run_name in skip_runs:
                continue
            tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
            tags[RUN_ID_TAG] = run.info.run_id
            copy = dst.create_run(target_exp, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
            new_id = copy.info.run_id
            run_map[run.info.run_id] = new_id
            if "mlflow.parentRunId" in run.data.tags:
                parents[new_id] = run.data.tags["mlflow.parentRunId"]
            metrics = [Metric(m.key, m.value, m.timestamp, m.step)
                       for key in run.data.metrics for m in src.get_metric_history(run.info.run_id, key)
                       if not m.model_id]  # model-linked points are copied with their logged model
            dst.log_batch(new_id, metrics=metrics, params=[Param(k, v) for k, v in run.data.params.items()])
            if run.inputs and run.inputs.dataset_inputs:
                dst.log_inputs(new_id, datasets=run.inputs.dataset_inputs)
            with tempfile.TemporaryDirectory() as scratch:
                if src.list_artifacts(run.info.run_id):
                    local = src.download_artifacts(run.info.run_id, "", scratch)
                    dst.log_artifacts(new_id, local)
        for model in src.search_logged_models([source_exp]):
            copy = dst.create_logged_model(
                target_exp, name=model.name, source_run_id=run_map.get(model.source_run_id),
                params=model.params, tags={**model.tags, LOGGED_MODEL_ID_TAG: model.model_id},
                model_type=model.model_type)
            dst.finalize_logged_model(copy.model_id, "READY")
            model_map[model.model_id] = copy.model_id
            for metric in model.metrics or []:
                dst.log_metric(run_map[metric.run_id], metric.key, metric.value, timestamp=metric.timestamp,
                               step=metric.step, model_id=copy.model_id)
            with tempfile.TemporaryDirectory() as scratch:
                if src.list_logged_model_artifacts(model.model_id):
                    repository = get_artifact_repository(model.artifact_location, tracking_uri=source.tracking_uri)
                    dst.log_model_artifacts(copy.model_id, repository.download_artifacts("", dst_path=scratch))

    # Second pass: links between objects need the id maps.
    for source_id, target_id in run_map.items():
        run = src.get_run(source_id)
        if target_id in parents and parents[target_id] in run_map:
            dst.set_tag(target_id, "mlflow.parentRunId", run_map[parents[target_id]])
        model_inputs = [LoggedModelInput(model_map[m.model_id]) for m in run.inputs.model_inputs or []]
        if model_inputs:
            dst.log_inputs(target_id, models=model_inputs)
        model_outputs = [LoggedModelOutput(model_map[m.model_id], m.step)
                         for m in (run.outputs.model_outputs if run.outputs else None) or []]
        if model_outputs:
            dst.log_outputs(target_id, model_outputs)
        dst.update_run(target_id, status=run.info.status)
        if run.info.end_time:
            dst.set_terminated(target_id, run.info.status, end_time=run.info.end_time)
        if run.info.lifecycle_stage == "deleted":
            dst.delete_run(target_id)

    for model in src.search_registered_models():
        if model.tags.get("mlflow.prompt.is_prompt") == "true":
            continue
        dst.create_registered_model(model.name, tags=model.tags, description=model.description)
        versions = sorted(src.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version))
        for version in versions:
            run_id = run_map.get(version.run_id)
            source_uri = version.source
            if version.run_id and run_id:
                source_uri = source_uri.replace(version.run_id, run_id)
            dst.create_model_version(model.name, source_uri, run_id=run_id, tags=version.tags,
                                     description=version.description)
            if version.current_stage and version.current_stage != "None":
                dst.transition_model_version_stage(model.name, version.version, version.current_stage)
        for alias, number in (model.aliases or {}).items():
            dst.set_registered_model_alias(model.name, alias, number)

    source_store, target_store = src._tracking_client.store, dst._tracking_client.store
    for dataset in src.search_datasets():
        experiment_ids = [experiments[e] for e in source_store.get_dataset_experiment_ids(dataset.dataset_id)]
        copy = dst.create_dataset(dataset.name, experiment_id=experiment_ids, tags=dataset.tags)
        records, _ = source_store._load_dataset_records(dataset.dataset_id, max_results=None)
        target_store.upsert_dataset_records(copy.dataset_id, [
            {key: value for key, value in record.to_dict().items() if key in ("inputs", "expectations", "tags")}
            for record in records])

    copies = {}  # source trace id -> (target trace id, assessments)
    with target.activate():
        for source_exp, target_exp in experiments.items():
            for trace in src.search_traces(locations=[source_exp]):
                root = trace.data.spans[0]
                tags = {k: v for k, v in trace.info.tags.items() if k not in COPIED_TRACE_TAGS_SKIP}
                tags[TRACE_ID_TAG] = trace.info.trace_id
                span = dst.start_trace(root.name, inputs=root.inputs, tags=tags, experiment_id=target_exp,
                                       start_time_ns=root.start_time_ns,
                                       run_id=run_map.get(trace.info.trace_metadata.get("mlflow.sourceRun")))
                dst.end_trace(span.trace_id, outputs=root.outputs, end_time_ns=root.end_time_ns)
                copies[trace.info.trace_id] = (span.trace_id, trace.info.assessments or [])
        mlflow.flush_trace_async_logging()
        for target_trace, assessments in copies.values():
            for assessment in assessments:
                mlflow.log_feedback(trace_id=target_trace, name=assessment.name, value=assessment.value,
                                    source=assessment.source)
        for prompt in src.search_prompts():
            versions = sorted(src.search_prompt_versions(prompt.name), key=lambda v: int(v.version))
            for version in versions:
                mlflow.genai.register_prompt(prompt.name, version.template, commit_message=version.commit_message,
                                             tags={k: v for k, v in version.tags.items()
                                                   if not k.startswith("mlflow_sync.")})
            registered = src._get_registry_client().get_registered_model(prompt.name)
            for alias, number in (registered.aliases or {}).items():
                mlflow.genai.set_prompt_alias(prompt.name, alias, int(number))
    return run_map
