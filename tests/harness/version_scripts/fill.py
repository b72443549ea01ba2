"""Fill the MLflow server at MLFLOW_TRACKING_URI with a small, deterministic data set of every
kind the running MLflow client (2.13 ... 3.18) can make, and print a JSON summary (last line).

Runs under any MLflow client of the version matrix (tests/harness/versions.py); what a version
cannot do is found by feature detection and listed under "skipped". Names are fixed; run times,
metric timestamps and end times are fixed where the API takes them. The summary's "counts" use
the kinds and counting rules of compare_dumps.count_kinds(), so a dump of the filled server can
be checked against it.

Standalone: imports nothing from mlflow-sync (it runs in other versions' venvs).
"""

from __future__ import annotations

import os

# Export traces synchronously (3.x exports in a background thread by default): a trace must be
# on the server before its tags are set and before the script exits.
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
# Local servers: fail fast instead of MLflow's 7 retries with backoff (the caller's env wins).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402

warnings.filterwarnings("ignore")

VERSION = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", mlflow.__version__).groups())
T0 = 1_700_000_000_000  # run start times and metric timestamps (ms), fixed for determinism
EXPERIMENTS = ("matrix-exp-a", "matrix-exp-b")
MODEL = "matrix-model"
LOGGED_MODEL_REGISTRY = "matrix-logged-model"
PROMPT = "matrix-prompt"

client = MlflowClient()
counts: Counter = Counter()
skipped: dict[str, str] = {}
workdir = Path(tempfile.mkdtemp(prefix="matrix-fill-"))
_serial = iter(range(1000))


def log(message: str) -> None:
    print(f"[fill {mlflow.__version__}] {message}", file=sys.stderr, flush=True)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- runs ----------------------------------------------------------------------------------------


def make_run(experiment_id: str, name: str, parent_id: str | None = None, terminate: bool = True):
    index = next(_serial)
    start = T0 + index * 60_000
    tags = {"mlflow.runName": name, "owner": "matrix"}
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=name)
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("loss", round(1.0 / (step + 1), 4), start + step * 1000, step)
                 for step in range(3)],
        params=[Param("lr", "0.01"), Param("index", str(index))],
        tags=[RunTag("stage", "train")],
    )  # fmt: skip
    client.log_metric(run_id, "accuracy", 0.5 + index / 100, timestamp=start + 5000, step=0)
    notes = write(workdir / name / "notes.txt", f"notes of {name}\n")
    client.log_artifact(run_id, str(notes))
    tree = workdir / name / "tree"
    write(tree / "dir" / "data.json", json.dumps({"run": name, "values": [1, 2, 3]}))
    write(tree / "dir" / "deeper" / "more.txt", "x" * (100 + index))
    client.log_artifacts(run_id, str(tree), "nested")
    counts["runs"] += 1
    counts["metric_points"] += 4
    counts["artifacts"] += 3
    if terminate:
        client.set_terminated(run_id, "FINISHED", end_time=start + 30_000)
    return run


def log_dataset_input(run_id: str, name: str) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=name,
        digest=f"{name}-digest"[:36],
        source_type="local",
        source=json.dumps({"uri": f"/data/{name}.csv"}),
        schema=json.dumps({"mlflow_colspec": [{"type": "double", "name": "x"}]}),
        profile=json.dumps({"num_rows": 2}),
    )
    client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])
    counts["run_dataset_inputs"] += 1


def fill_runs() -> dict[str, dict]:
    """Two experiments, each: 2 runs, a nested child, a deleted run. Returns runs by key."""
    runs = {}
    for letter, experiment in zip("ab", EXPERIMENTS):
        tags = {"team": "matrix"} if letter == "a" else None
        experiment_id = client.create_experiment(experiment, tags=tags)
        counts["experiments"] += 1
        for n in (1, 2):
            runs[f"{letter}{n}"] = make_run(experiment_id, f"run-{letter}{n}")
        make_run(experiment_id, f"child-{letter}", parent_id=runs[f"{letter}1"].info.run_id)
        deleted = make_run(experiment_id, f"deleted-{letter}")
        client.delete_run(deleted.info.run_id)
        counts["deleted_runs"] += 1
        runs[f"exp-{letter}"] = experiment_id
    if hasattr(client, "log_inputs"):
        log_dataset_input(runs["a1"].info.run_id, "matrix-data")
        log_dataset_input(runs["b1"].info.run_id, "matrix-data")
    else:
        skipped["run_dataset_inputs"] = "no MlflowClient.log_inputs"
    return runs


# -- model registry ------------------------------------------------------------------------------


def fill_registry(runs: dict) -> None:
    client.create_registered_model(MODEL, tags={"task": "matrix"}, description="matrix model")
    counts["registered_models"] += 1
    for number, key in enumerate(("a1", "a2", "b1"), start=1):
        run = runs[key]
        mlmodel = write(workdir / f"model-{key}" / "MLmodel", f"flavors: {{}}\nrun: {key}\n")
        client.log_artifact(run.info.run_id, str(mlmodel), "model")
        counts["artifacts"] += 1
        client.create_model_version(
            MODEL,
            source=f"{run.info.artifact_uri}/model",
            run_id=run.info.run_id,
            tags={"built_from": key},
            description=f"version {number}",
        )
        counts["model_versions"] += 1
    client.set_model_version_tag(MODEL, "1", "validated", "yes")
    client.transition_model_version_stage(MODEL, "1", "Production")
    client.transition_model_version_stage(MODEL, "2", "Staging")
    counts["staged_versions"] += 2
    if hasattr(client, "set_registered_model_alias"):
        client.set_registered_model_alias(MODEL, "champion", "3")
        counts["aliases"] += 1
    else:
        skipped["aliases"] = "no MlflowClient.set_registered_model_alias"


# -- traces --------------------------------------------------------------------------------------


def _trace_id(span) -> str:
    # 2.x: request_id is the MLflow id, trace_id the OpenTelemetry hex; 3.x: trace_id is MLflow's.
    return span.trace_id if VERSION >= (3,) else span.request_id


def make_trace(label: str) -> str:
    with mlflow.start_span(name=f"{label}-root") as root:
        root.set_inputs({"question": f"what is {label}?"})
        root.set_attributes({"matrix.label": label, "matrix.depth": 0})
        with mlflow.start_span(name=f"{label}-retrieve") as span:
            span.set_inputs({"query": label})
            span.set_attribute("matrix.documents", 2)
            span.set_outputs(["doc-1", "doc-2"])
        with mlflow.start_span(name=f"{label}-generate") as span:
            span.set_attributes({"matrix.model": "echo", "matrix.temperature": 0.0})
            span.set_outputs({"answer": label.upper()})
        root.set_outputs({"answer": label.upper()})
        trace_id = _trace_id(root)
    if hasattr(mlflow, "flush_trace_async_logging"):
        mlflow.flush_trace_async_logging()
    client.set_trace_tag(trace_id, "matrix.label", label)
    try:
        spans = len(client.get_trace(trace_id).data.spans)
    except mlflow.exceptions.MlflowException as exc:
        spans = f"unreadable ({str(exc)[:200]})"
    if spans != 3:
        # Seen with clients older than their OpenTelemetry (their span processor never ends a
        # span: pin the OpenTelemetry of the client's release, tests/harness/versions.py).
        raise RuntimeError(f"trace {trace_id} reached the server with spans: {spans}, not 3")
    counts["traces"] += 1
    counts["spans"] += 3
    return trace_id


def log_assessments(trace_id: str) -> None:
    from mlflow.entities import AssessmentSource

    source = AssessmentSource(source_type="HUMAN", source_id="matrix-reviewer")
    try:
        mlflow.log_feedback(
            trace_id=trace_id, name="relevance", value=True, source=source, rationale="on topic"
        )
    except mlflow.exceptions.MlflowException as exc:
        if "only available for Databricks" not in str(exc):
            raise
        skipped["assessments"] = "this client logs assessments to Databricks only (3.0)"
        return
    mlflow.log_expectation(trace_id=trace_id, name="expected_answer", value="TRACED", source=source)
    counts["assessments"] += 2


def fill_traces(runs: dict) -> list[str]:
    # 2.13 clients carry an experimental tracing module, but 2.13 servers have no trace routes.
    if VERSION < (2, 14) or not hasattr(mlflow, "start_span"):
        skipped["traces"] = "no tracing before MLflow 2.14"
        return []
    trace_ids = []
    run = runs["a2"]
    with mlflow.start_run(run_id=run.info.run_id):  # resumed: the trace belongs to the run
        trace_ids.append(make_trace("traced"))
    client.set_terminated(run.info.run_id, "FINISHED", end_time=run.info.start_time + 30_000)
    mlflow.set_experiment(experiment_id=runs["exp-b"])
    trace_ids.append(make_trace("untraced"))
    if hasattr(mlflow, "log_feedback") and hasattr(mlflow, "log_expectation"):
        log_assessments(trace_ids[0])
    else:
        skipped["assessments"] = "no mlflow.log_feedback (assessments came in 3.0)"
    return trace_ids


# -- logged models (3.0+) ------------------------------------------------------------------------


def fill_logged_models(runs: dict) -> None:
    if VERSION < (3,) or not hasattr(mlflow, "initialize_logged_model"):
        skipped["logged_models"] = "no logged models before MLflow 3.0"
        return
    from mlflow import pyfunc
    from mlflow.entities import LoggedModelInput

    class Echo(pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.set_experiment(experiment_id=runs["exp-a"])
    with mlflow.start_run(run_name="model-run"):
        info = pyfunc.log_model(
            name="matrix-logged",
            python_model=Echo(),
            pip_requirements=["mlflow"],
            registered_model_name=LOGGED_MODEL_REGISTRY,
            params={"alpha": "0.5"},
            tags={"flavor": "pyfunc"},
            model_type="agent",
        )
        mlflow.log_metric("score", 0.75, step=1, model_id=info.model_id)
    counts["runs"] += 1
    counts["metric_points"] += 1  # the run's metric "score", linked to the model
    counts["logged_models"] += 1
    counts["registered_models"] += 1
    counts["model_versions"] += 1
    counts["logged_model_metrics"] += 1

    external = mlflow.initialize_logged_model(
        name="matrix-external",
        experiment_id=runs["exp-b"],
        tags={"origin": "external"},
        params={"beta": "2"},
        model_type="external",
    )
    if hasattr(mlflow, "finalize_logged_model"):
        from mlflow.entities import LoggedModelStatus

        mlflow.finalize_logged_model(external.model_id, LoggedModelStatus.READY)
    counts["logged_models"] += 1

    # A run that takes the logged model as input (run.inputs.model_inputs non-empty).
    eval_run = make_run(runs["exp-b"], "eval-run", terminate=False)
    client.log_inputs(eval_run.info.run_id, models=[LoggedModelInput(info.model_id)])
    client.set_terminated(eval_run.info.run_id, "FINISHED", end_time=T0 + 999_000)
    counts["run_model_inputs"] += 1


# -- prompts (3.0+) ------------------------------------------------------------------------------


def _prompt_api(name: str):
    genai = getattr(mlflow, "genai", None)
    return getattr(genai, name, None) or getattr(mlflow, name, None)


def fill_prompts() -> None:
    register, set_alias = _prompt_api("register_prompt"), _prompt_api("set_prompt_alias")
    if VERSION < (3,) or register is None:
        skipped["prompts"] = "no prompt registry before MLflow 3.0 in this matrix"
        return
    register(
        name=PROMPT,
        template="Answer {{question}} briefly.",
        commit_message="first",
        tags={"author": "matrix"},
    )
    register(
        name=PROMPT,
        template="Answer {{question}} in one word.",
        commit_message="shorter",
        tags={"author": "matrix", "reviewed": "yes"},
    )
    register(name="matrix-prompt-single", template="Say {{word}}.", commit_message="only")
    counts["prompts"] += 2
    counts["prompt_versions"] += 3
    if set_alias is not None:
        set_alias(PROMPT, alias="production", version=1)
        counts["prompt_aliases"] += 1


# -- evaluation datasets (3.4+) ------------------------------------------------------------------


def fill_evaluation_datasets(runs: dict) -> None:
    # 3.0-3.3 have a create_dataset for Databricks Unity Catalog tables only.
    if VERSION < (3, 4) or not hasattr(client, "search_datasets"):
        skipped["evaluation_datasets"] = "no evaluation datasets outside Databricks before 3.4"
        return
    from mlflow.genai.datasets import create_dataset

    dataset = create_dataset(
        name="matrix-eval", experiment_id=[runs["exp-a"]], tags={"team": "matrix"}
    )
    dataset.merge_records(
        [
            {"inputs": {"question": "2+2"}, "expectations": {"answer": "4"}},
            {"inputs": {"question": "capital of France"}, "expectations": {"answer": "Paris"}},
        ]
    )
    counts["evaluation_datasets"] += 1
    counts["dataset_records"] += 2


def main() -> None:
    started = time.monotonic()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("MLFLOW_TRACKING_URI is not set")
    runs = fill_runs()
    fill_registry(runs)
    trace_ids = fill_traces(runs)
    fill_logged_models(runs)
    fill_prompts()
    fill_evaluation_datasets(runs)
    summary = {
        "mlflow_version": mlflow.__version__,
        "kinds": sorted(k for k, v in counts.items() if v),
        "counts": dict(sorted(counts.items())),
        "skipped": skipped,
        "trace_ids": trace_ids,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
