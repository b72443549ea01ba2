"""A realistic MLflow 3 source: what the demo migrates and what the end-to-end tests compare.

Every object kind users have: experiments (unicode names, tags, a description), nested runs
across experiments, long parameter values, metric histories with NaN and infinities, dataset
inputs, nested artifacts, logged models (with params, metrics, artifacts, linked to runs),
registered models with versions, a deleted version (a gap), stages, aliases, tags and
descriptions, traces with spans and an assessment, a prompt with versions and an alias, and
(on request) a GenAI evaluation dataset with records.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path

from mlflow_sync.connection import Server

LONG_VALUE = "x" * 5000 + "-end"  # MLflow 3 allows params up to 6,000 characters


def build_rich_source(server: Server, *, runs_per_experiment: int = 3, with_traces: bool = True,
                      with_logged_models: bool = True, with_prompts: bool = True,
                      with_evaluation_datasets: bool = False) -> dict:
    """Fill ``server`` with one of everything; returns a summary of what was created."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    client = server.client
    summary: dict = {"experiments": [], "runs": [], "logged_models": [], "registered_models": [], "traces": 0}
    training = client.create_experiment("Träning/実験 🚀", tags={"team": "vision", "mlflow.note.content": "Main experiment"})
    evaluation = client.create_experiment("evaluation", tags={"stage": "eval"})
    summary["experiments"] = [training, evaluation]

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        (files / "plots").mkdir()
        (files / "plots" / "loss curve.txt").write_text("epoch,loss\n1,0.9\n2,0.5\n", encoding="utf-8")
        (files / "model_summary.json").write_text('{"layers": 3, "name": "ünïcode"}', encoding="utf-8")

        parent = client.create_run(training, run_name="parent sweep", tags={"mlflow.user": "alice", "kind": "sweep"})
        summary["runs"].append(parent.info.run_id)
        for index in range(runs_per_experiment):
            for experiment_id in (training, evaluation):
                run = client.create_run(
                    experiment_id,
                    run_name=f"child-{index} ✓",
                    start_time=1_700_000_000_000 + index * 1000,
                    tags={"mlflow.parentRunId": parent.info.run_id, "mlflow.user": "bob", "index": str(index)},
                )
                run_id = run.info.run_id
                summary["runs"].append(run_id)
                client.log_batch(
                    run_id,
                    params=[Param("learning_rate", str(0.01 * (index + 1))), Param("long_value", LONG_VALUE),
                            Param("ключ", "значение")],
                    metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000 + step, step) for step in range(120)]
                    + [Metric("accuracy", 0.5 + index / 10, 1_700_000_000_500, 0),
                       Metric("weird", math.nan, 1_700_000_000_001, 0),
                       Metric("weird", math.inf, 1_700_000_000_002, 1),
                       Metric("weird", -math.inf, 1_700_000_000_003, 2)],
                    tags=[RunTag("note", "ünïcode tag")],
                )
                client.log_inputs(run_id, datasets=[DatasetInput(
                    Dataset(name="train-set", digest=f"d{index}", source_type="local", source='{"uri": "/data/train"}',
                            schema='{"mlflow_colspec": []}', profile='{"num_rows": 10}'),
                    tags=[InputTag("mlflow.data.context", "training")],
                )])
                client.log_artifacts(run_id, str(files))
                status = "FAILED" if index == 1 else "FINISHED"
                client.set_terminated(run_id, status=status, end_time=1_700_000_100_000 + index)
        client.set_terminated(parent.info.run_id, status="FINISHED")
        deleted = client.create_run(evaluation, run_name="deleted run")
        client.set_terminated(deleted.info.run_id)
        client.delete_run(deleted.info.run_id)
        summary["deleted_runs"] = [deleted.info.run_id]

        model_ids = []
        if with_logged_models:
            for index, run_id in enumerate(summary["runs"][1:3]):
                model = client.create_logged_model(
                    training, name=f"classifier-{index}", source_run_id=run_id,
                    tags={"framework": "sklearn"}, params={"depth": str(3 + index)}, model_type="classifier",
                )
                repo = server.artifact_repository(model.artifact_location)
                (files / "MLmodel").write_text(f"artifact_path: model\nmodel_id: {model.model_id}\n")
                repo.log_artifact(str(files / "MLmodel"))
                client.log_batch(run_id, metrics=[Metric("val_auc", 0.9 + index / 100, 1_700_000_000_900, 0,
                                                         model_id=model.model_id)])
                client.finalize_logged_model(model.model_id, "READY")
                model_ids.append(model.model_id)
            summary["logged_models"] = model_ids

        name = "fraud détection"
        client.create_registered_model(name, tags={"owner": "risk"}, description="Fraud model ✓")
        sources = [f"models:/{m}" for m in model_ids] if model_ids else []
        while len(sources) < 3:
            sources.append(f"runs:/{summary['runs'][1]}/plots")
        linked_runs = dict(zip(model_ids, summary["runs"][1:3]))
        with _registry_scope(server):
            for number, source in enumerate(sources, start=1):
                model_id = source.split("/", 1)[1] if source.startswith("models:/") else None
                run_id = linked_runs[model_id] if model_id else summary["runs"][1]
                client.create_model_version(name, source, run_id=run_id, model_id=model_id,
                                            tags={"number": str(number)}, description=f"version {number}")
        client.delete_model_version(name, "2")  # a gap: live versions 1 and 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            client.transition_model_version_stage(name, "3", "Staging")
        client.set_registered_model_alias(name, "champion", "3")
        client.set_registered_model_alias(name, "baseline", "1")
        summary["registered_models"].append(name)

    if with_prompts:
        client.register_prompt("greeting-prompt", "Hello {{name}}!", commit_message="first")
        client.register_prompt("greeting-prompt", "Hi {{name}}, welcome!", commit_message="second")
        client.set_prompt_alias("greeting-prompt", "production", 1)
        summary["prompts"] = ["greeting-prompt"]

    if with_traces:
        summary["traces"] = _log_traces(server, training)
    if with_evaluation_datasets:
        summary["evaluation_datasets"] = [_evaluation_dataset(server, [training, evaluation])]
    return summary


EVALUATION_RECORDS = [
    {"inputs": {"question": "What is MLflow?"}, "expectations": {"expected_response": "An ML platform"},
     "tags": {"difficulty": "easy"}},
    {"inputs": {"question": "Wie spät ist es?", "context": ["Uhr", "Zeit"]},
     "expectations": {"expected_facts": ["time"], "score": 0.5}, "outputs": {"answer": "42"},
     "source": {"source_type": "HUMAN", "source_data": {"user": "alice"}}},
    {"inputs": {"question": "日本語?"}, "expectations": {"is_correct": True}},
]


def _evaluation_dataset(server: Server, experiment_ids: list[str]) -> str:
    """One GenAI evaluation dataset linked to both experiments, with three records."""
    dataset = server.client.create_dataset("qa-eval ✓", experiment_id=experiment_ids, tags={"purpose": "regression"})
    server.client._tracking_client.store.upsert_dataset_records(dataset.dataset_id, EVALUATION_RECORDS)
    return dataset.dataset_id


def _registry_scope(server: Server):
    """A database store resolves ``models:/m-...`` version sources through MLflow's *global*
    tracking URI: point it at this store while versions are created (http servers resolve them)."""
    return server.activate() if server.spec.kind == "db" else nullcontext()


def _log_traces(server: Server, experiment_id: str) -> int:
    """Two traces with nested spans and one assessment (fluent tracing needs the global URI)."""
    import mlflow
    from mlflow.entities import AssessmentSource

    count = 0
    with server.activate():
        mlflow.set_experiment(experiment_id=experiment_id)
        for question in ("What is MLflow?", "Wie spät ist es?"):
            with mlflow.start_span(name="answer", span_type="CHAIN") as root:
                root.set_inputs({"question": question})
                with mlflow.start_span(name="retrieve", span_type="RETRIEVER") as child:
                    child.set_inputs({"query": question})
                    child.set_outputs({"documents": ["doc-1", "doc-2"]})
                root.set_outputs({"answer": "42"})
            trace_id = mlflow.get_last_active_trace_id()
            mlflow.flush_trace_async_logging() if hasattr(mlflow, "flush_trace_async_logging") else None
            server.client.set_trace_tag(trace_id, "reviewed", "yes")
            mlflow.log_feedback(trace_id=trace_id, name="correct", value=True,
                                source=AssessmentSource(source_type="HUMAN", source_id="alice"))
            count += 1
    return count
