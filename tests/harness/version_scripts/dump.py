"""Dump EVERYTHING the MLflow server at MLFLOW_TRACKING_URI holds as one canonical JSON document
(printed as the last line of stdout), read with the running MLflow client (2.13 ... 3.18) and
plain REST where the client filters.

Keys are stable names, not ids: experiments by name, runs by "<experiment>/<run name>" (a
repeated name gets " #2", " #3" in start-time order), registered models / prompts / logged
models / evaluation datasets by name, model and prompt versions by number, traces by trace id
(a migration must keep those). "kinds" lists what the dump covers; a kind the server (or this
client) lacks is absent, with the reason under "absent" (not compared).

Left out or normalised, because they legitimately differ between two servers holding the
same data:
- ids: experiment ids (-> experiment names), run ids (-> "<run:exp/name>", also inside tag,
  metadata and attribute values), logged model ids (-> "<model:name>"), dataset ids, record
  ids, assessment ids; span ids lose 2.x clients' "0x" prefix;
- artifact locations/URIs: experiment artifact_location, run artifact_uri, model version
  source (-> "<run-artifacts>/<path>" or "models:/<model:name>"), run_link, logged model
  artifact_location; the trace tags `mlflow.artifactLocation` and `mlflow.trace.spansLocation`
  (where that server keeps spans); experiment ids in the prompt tag `_mlflow_experiment_ids`
  (-> sorted experiment names);
- tags added by migration tools: prefixes `mlflow_exim.` and `mlflow_sync.`;
- server-assigned times: experiment creation/last_update_time, registered model and model
  version creation/last_updated_timestamp, logged model creation/last_updated time,
  assessment create/last_update times, dataset and record created/last_update times and
  created_by/last_updated_by; (run start/end times, metric timestamps and trace/span times
  are kept: the API can set them);
- `mlflow.log-model.history` run tag: reduced to artifact paths and flavor names;
- trace metadata `mlflow.trace.infoFinalized`: an MLflow 3 server writes it when a trace is
  created through its trace routes (a 2.x or early 3.x trace never had it);
- evaluation dataset records' `outputs`: absent means empty, and the dataset schema's empty
  sections are left out (servers since 3.5 write an empty "outputs" where older ones wrote none);
- prompt version tag `_mlflow_prompt_type`: absent means "text" (every prompt was a text prompt
  before chat prompts came; a current client writes it on every version it registers);
- kept on purpose (a faithful copy keeps them): `mlflow.user`, model version `user_id`, run
  and trace times, span ids, trace ids, git/source tags, trace size metadata.
- a trace whose spans cannot be read is kept with "spans": null and "spans_error".

Standalone: imports nothing from mlflow-sync (it runs in other versions' venvs).
"""

from __future__ import annotations

import os

# Local servers: a failing request should fail fast (MLflow's default: 7 retries with backoff,
# minutes per unreadable trace). The caller's environment wins.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import mlflow  # noqa: E402
import requests  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import ViewType  # noqa: E402

warnings.filterwarnings("ignore")

VERSION = tuple(int(p) for p in re.match(r"(\d+)\.(\d+)\.(\d+)", mlflow.__version__).groups())
DROPPED_TAG_PREFIXES = ("mlflow_exim.", "mlflow_sync.")
# where the server keeps the spans: a property of the server, not of the trace
DROPPED_TRACE_TAGS = {"mlflow.artifactLocation", "mlflow.trace.spansLocation"}
PROMPT_TAG = "mlflow.prompt.is_prompt"
PROMPT_TEXT_TAG = "mlflow.prompt.text"
PROMPT_TYPE_TAG = "_mlflow_prompt_type"
SERVER_TRACE_METADATA = {"mlflow.trace.infoFinalized"}
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
MODEL_ID = re.compile(r"\bm-[0-9a-f]{32}\b")

uri = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
client = MlflowClient()
session = requests.Session()
absent: dict[str, str] = {}
workdir = Path(tempfile.mkdtemp(prefix="matrix-dump-"))

# id -> stable name, filled while reading, applied to every string at the end
run_names: dict[str, str] = {}
model_names: dict[str, str] = {}
experiment_names: dict[str, str] = {}


def log(message: str) -> None:
    print(f"[dump {mlflow.__version__}] {message}", file=sys.stderr, flush=True)


EXPERIMENT_IDS_TAG = "_mlflow_experiment_ids"  # 3.x prompts: ",1,2," (ids -> names)


def kept_tags(tags: dict | None) -> dict:
    kept = {k: v for k, v in (tags or {}).items() if not k.startswith(DROPPED_TAG_PREFIXES)}
    if EXPERIMENT_IDS_TAG in kept:
        ids = [i for i in kept[EXPERIMENT_IDS_TAG].split(",") if i]
        kept[EXPERIMENT_IDS_TAG] = sorted(experiment_names.get(i, i) for i in ids)
    return kept


def unique_key(taken: dict, key: str) -> str:
    if key not in taken:
        return key
    n = 2
    while f"{key} #{n}" in taken:
        n += 1
    return f"{key} #{n}"


def rest(method: str, path: str, **kwargs) -> dict:
    response = session.request(method, f"{uri}{path}", timeout=60, **kwargs)
    if response.status_code != 200:
        raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise RuntimeError(f"{method} {path}: not JSON: {response.text[:200]}") from None


def paged(fetch):
    """Items of every page of `fetch(page_token)` (PagedList-like results)."""
    token = None
    while True:
        page = fetch(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return


# -- experiments and runs ------------------------------------------------------------------------


def dump_experiments() -> dict:
    experiments = {}
    for exp in paged(
        lambda token: client.search_experiments(
            view_type=ViewType.ALL, max_results=1000, page_token=token
        )
    ):
        experiment_names[exp.experiment_id] = exp.name
        experiments[exp.name] = {"lifecycle_stage": exp.lifecycle_stage, "tags": kept_tags(exp.tags)}
    return experiments


def local_files(root: Path) -> dict:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        files[path.relative_to(root).as_posix()] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return files


def run_artifacts(run_id: str) -> dict:
    """Every file under the run's artifact root (one download of the root: MLflow lists it
    recursively and fetches the files in parallel)."""
    if not client.list_artifacts(run_id):
        return {}
    dst = Path(tempfile.mkdtemp(dir=workdir))
    return local_files(Path(client.download_artifacts(run_id, "", str(dst))))


def log_model_history(value: str):
    try:
        entries = json.loads(value)
        return sorted(
            [{"artifact_path": e.get("artifact_path"), "flavors": sorted(e.get("flavors", {}))}
             for e in entries],
            key=json.dumps,
        )  # fmt: skip
    except (ValueError, AttributeError, TypeError):
        return value


def dump_runs(experiments: dict) -> dict:
    raw = []
    for experiment_id, _experiment in experiment_names.items():
        raw.extend(
            paged(
                lambda token, eid=experiment_id: client.search_runs(
                    [eid], run_view_type=ViewType.ALL, max_results=1000, page_token=token,
                    order_by=["attributes.start_time ASC"],
                )
            )
        )  # fmt: skip
    raw.sort(key=lambda r: (experiment_names[r.info.experiment_id], r.info.start_time or 0,
                            r.info.run_name or ""))  # fmt: skip
    keys = {}
    for run in raw:
        name = run.info.run_name or run.data.tags.get("mlflow.runName") or ""
        key = unique_key(keys, f"{experiment_names[run.info.experiment_id]}/{name}")
        keys[key] = run
        run_names[run.info.run_id] = key
    runs = {}
    for key, run in keys.items():
        info, data = run.info, run.data
        tags = kept_tags(data.tags)
        parent_id = tags.pop("mlflow.parentRunId", None)
        if "mlflow.log-model.history" in tags:
            tags["mlflow.log-model.history"] = log_model_history(tags["mlflow.log-model.history"])
        metrics = {}
        for metric_key in sorted(data.metrics):
            history = client.get_metric_history(info.run_id, metric_key)
            metrics[metric_key] = sorted([m.step, m.timestamp, m.value] for m in history)
        entry = {
            "status": info.status,
            "start_time": info.start_time,
            "end_time": info.end_time,
            "lifecycle_stage": info.lifecycle_stage,
            "params": dict(data.params),
            "tags": tags,
            "metrics": metrics,
            "artifacts": run_artifacts(info.run_id),
            "parent": run_names.get(parent_id, parent_id),
        }
        if VERSION >= (3,):  # search_runs leaves out model inputs/outputs; get_run has them
            run = client.get_run(info.run_id)
        # Inputs and outputs only when there are some: clients without these fields (2.x) and
        # clients with them then dump a run alike.
        inputs = getattr(run, "inputs", None)
        if inputs is not None and inputs.dataset_inputs:
            entry["dataset_inputs"] = sorted(
                [{
                    "name": d.dataset.name, "digest": d.dataset.digest,
                    "source_type": d.dataset.source_type, "source": d.dataset.source,
                    "schema": d.dataset.schema, "profile": d.dataset.profile,
                    "tags": {t.key: t.value for t in d.tags},
                } for d in inputs.dataset_inputs or []],
                key=json.dumps,
            )  # fmt: skip
        model_inputs = getattr(inputs, "model_inputs", None)
        if model_inputs:
            entry["model_inputs"] = sorted(m.model_id for m in model_inputs)
        outputs = getattr(run, "outputs", None)
        if outputs is not None and getattr(outputs, "model_outputs", None):
            entry["model_outputs"] = sorted([m.model_id, m.step] for m in outputs.model_outputs)
        runs[key] = entry
    return runs


# -- registered models and prompts (plain REST: the 3.x client filters prompts out, and against
# -- a 2.x server that filter makes the search return nothing at all) ----------------------------


def rest_pages(path: str, field: str, params: dict) -> list:
    items, token = [], None
    while True:
        query = dict(params, **({"page_token": token} if token else {}))
        body = rest("GET", path, params=query)
        items.extend(body.get(field, []))
        token = body.get("next_page_token")
        if not token:
            return items


def tag_dict(tags: list | None) -> dict:
    return {t["key"]: t.get("value", "") for t in tags or []}


def version_source(version: dict) -> str | None:
    source = version.get("source") or ""
    match = MODEL_ID.search(source)
    if source.startswith("models:/") and match:
        return "models:/" + match.group(0)  # the model id is replaced by its name at the end
    if "/artifacts/" in source:
        return "<run-artifacts>/" + source.split("/artifacts/", 1)[1]
    if source.endswith("/artifacts"):
        return "<run-artifacts>"
    return None  # a location of the source server only


PROMPT_FILTER = "tags.`mlflow.prompt.is_prompt` = 'true'"


def search_registered_models() -> list[dict]:
    """Every registered model and prompt. 3.x servers leave prompts out of an unfiltered search
    and return them for a filter on the prompt tag (2.x servers: no prompts, empty answer)."""
    found = {}
    for extra in ({}, {"filter": PROMPT_FILTER}):
        for model in rest_pages(
            "/api/2.0/mlflow/registered-models/search",
            "registered_models",
            {"max_results": 100, **extra},
        ):
            found.setdefault(model["name"], model)
    return [found[name] for name in sorted(found)]


def search_versions(name: str, is_prompt: bool) -> list[dict]:
    escaped = name.replace("'", "\\'")
    query = f"name='{escaped}'" + (f" AND {PROMPT_FILTER}" if is_prompt else "")
    versions = rest_pages(
        "/api/2.0/mlflow/model-versions/search",
        "model_versions",
        {"filter": query, "max_results": 200},
    )
    if is_prompt and not versions:  # servers whose prompt versions lack the tag
        versions = rest_pages(
            "/api/2.0/mlflow/model-versions/search",
            "model_versions",
            {"filter": f"name='{escaped}'", "max_results": 200},
        )
    return versions


def dump_registry() -> tuple[dict, dict]:
    models, prompts = {}, {}
    for model in search_registered_models():
        name = model["name"]
        tags = tag_dict(model.get("tags"))
        is_prompt = tags.get(PROMPT_TAG) == "true"
        aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
        versions = {}
        for version in search_versions(name, is_prompt):
            vtags = kept_tags(tag_dict(version.get("tags")))
            if is_prompt:
                vtags.setdefault(PROMPT_TYPE_TAG, "text")
                versions[version["version"]] = {
                    "template": vtags.pop(PROMPT_TEXT_TAG, None),
                    "commit_message": version.get("description", ""),
                    "tags": vtags,
                }
                continue
            run_id = version.get("run_id") or None
            versions[version["version"]] = {
                "description": version.get("description", ""),
                "stage": version.get("current_stage"),
                "status": version.get("status"),
                "tags": vtags,
                "run": run_names.get(run_id, run_id),
                "source": version_source(version),
                "user_id": version.get("user_id", ""),
            }
        entry = {
            "description": model.get("description", ""),
            "tags": kept_tags(tags),
            "aliases": aliases,
            "versions": dict(sorted(versions.items(), key=lambda kv: int(kv[0]))),
        }
        (prompts if is_prompt else models)[name] = entry
    return models, prompts


# -- logged models (3.0+) ------------------------------------------------------------------------


def dump_logged_models() -> dict:
    if not hasattr(client, "search_logged_models"):
        raise RuntimeError(f"the MLflow {mlflow.__version__} client has no logged models")
    found = list(
        paged(
            lambda token: client.search_logged_models(
                experiment_ids=list(experiment_names), max_results=100, page_token=token
            )
        )
    )
    found.sort(key=lambda m: (m.creation_timestamp or 0, m.name))
    by_key = {}
    for model in found:
        key = unique_key(by_key, model.name)
        by_key[key] = model
        model_names[model.model_id] = key
    logged = {}
    for key, model in by_key.items():
        tags = kept_tags(model.tags)
        logged[key] = {
            "experiment": experiment_names.get(model.experiment_id, model.experiment_id),
            "status": str(getattr(model.status, "name", model.status)),
            "model_type": model.model_type,
            "source_run": run_names.get(model.source_run_id, model.source_run_id),
            "params": dict(model.params or {}),
            "tags": tags,
            "metrics": sorted(
                [m.key, m.value, m.step, m.timestamp, run_names.get(m.run_id, m.run_id)]
                for m in model.metrics or []
            ),
            "artifacts": logged_model_artifacts(model),
        }
    return logged


def logged_model_artifacts(model) -> dict:
    if not client.list_logged_model_artifacts(model.model_id):
        return {}
    from mlflow.artifacts import download_artifacts

    dst = Path(tempfile.mkdtemp(dir=workdir))
    return local_files(Path(download_artifacts(artifact_uri=model.artifact_location, dst_path=str(dst))))


# -- traces (2.14+) ------------------------------------------------------------------------------


def _value(x):
    return str(getattr(x, "name", None) or getattr(x, "value", None) or x) if x is not None else None


def dump_assessment(a) -> dict:
    feedback, expectation = getattr(a, "feedback", None), getattr(a, "expectation", None)
    source = getattr(a, "source", None)
    entry = {
        "name": a.name,
        "kind": "feedback" if feedback is not None else "expectation",
        "value": (feedback or expectation).value if (feedback or expectation) else None,
        "source": [_value(source.source_type), source.source_id] if source else None,
        "rationale": getattr(a, "rationale", None),
        "metadata": getattr(a, "metadata", None) or {},
        "span_id": getattr(a, "span_id", None),
        "valid": getattr(a, "valid", None),
    }
    error = getattr(feedback, "error", None)
    if error is not None:
        entry["error"] = [error.error_code, error.error_message]
    return entry


def trace_infos(experiment_id: str) -> list:
    """Infos of every trace of the experiment, spans not read. A 2.x client's search_traces
    reads the spans too and silently drops traces whose spans it cannot read: list over REST."""
    if VERSION >= (3,):
        return [
            t.info
            for t in paged(
                lambda token: client.search_traces(
                    experiment_ids=[experiment_id], max_results=100, page_token=token,
                    include_spans=False,
                )
            )
        ]  # fmt: skip
    from google.protobuf.json_format import ParseDict
    from mlflow.entities import TraceInfo
    from mlflow.protos.service_pb2 import TraceInfo as ProtoTraceInfo

    items = rest_pages(
        "/api/2.0/mlflow/traces", "traces", {"experiment_ids": experiment_id, "max_results": 100}
    )
    return [
        TraceInfo.from_proto(ParseDict(item, ProtoTraceInfo(), ignore_unknown_fields=True))
        for item in items
    ]


def _span_id(value: str | None) -> str | None:
    # 2.x clients show OpenTelemetry ids as "0x<hex>", 3.x clients as "<hex>"
    return value[2:] if value and value.startswith("0x") else value


def dump_span(span) -> dict:
    return {
        "name": span.name,
        "span_id": _span_id(span.span_id),
        "parent_id": _span_id(span.parent_id),
        "span_type": getattr(span, "span_type", None),
        "status": _value(getattr(span.status, "status_code", None)),
        "start_time_ns": span.start_time_ns,
        "end_time_ns": span.end_time_ns,
        "attributes": dict(sorted(span.attributes.items())),
        "events": [e.name for e in getattr(span, "events", None) or []],
    }


def spans_from_artifacts(info) -> list:
    """Spans from the trace's traces.json in the artifact store (how 2.x servers keep them; a
    3.x client's get_trace uses routes those servers do not have)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.entities import TraceData

    location = (info.tags or {}).get("mlflow.artifactLocation")
    if not location:
        raise RuntimeError("no mlflow.artifactLocation tag")
    dst = Path(tempfile.mkdtemp(dir=workdir))
    path = download_artifacts(artifact_uri=f"{location.rstrip('/')}/traces.json", dst_path=str(dst))
    return TraceData.from_dict(json.loads(Path(path).read_text())).spans


def dump_traces() -> dict:
    if not hasattr(client, "search_traces"):
        raise RuntimeError(f"the MLflow {mlflow.__version__} client has no traces")
    traces = {}
    for experiment_id in experiment_names:
        for info in trace_infos(experiment_id):
            trace_id = getattr(info, "trace_id", None) or info.request_id
            spans, spans_error = None, None
            try:
                trace = client.get_trace(trace_id)
                info, raw_spans = trace.info, trace.data.spans  # 3.x: info with assessments
            except Exception as exc:  # noqa: BLE001 - e.g. a 3.x client and a 2.x server
                try:
                    raw_spans = spans_from_artifacts(info)
                except Exception as exc2:  # noqa: BLE001 - a trace whose spans are unreadable
                    raw_spans = None
                    spans_error = f"{type(exc).__name__}: {str(exc)[:150]}; {str(exc2)[:150]}"
            if raw_spans is not None:
                spans = sorted(
                    (dump_span(span) for span in raw_spans),
                    key=lambda s: (s["start_time_ns"] or 0, s["span_id"]),
                )
            metadata = getattr(info, "trace_metadata", None)
            if metadata is None:
                metadata = info.request_metadata
            state = getattr(info, "state", None) or getattr(info, "status", None)
            tags = {k: v for k, v in kept_tags(info.tags).items() if k not in DROPPED_TRACE_TAGS}
            entry = {
                "experiment": experiment_names[experiment_id],
                "state": _value(state),
                "request_time": getattr(info, "request_time", None) or info.timestamp_ms,
                "execution_duration": getattr(info, "execution_duration", None)
                or getattr(info, "execution_time_ms", None),
                "tags": tags,
                "metadata": {k: v for k, v in (metadata or {}).items() if k not in SERVER_TRACE_METADATA},
                "assessments": sorted(
                    (dump_assessment(a) for a in getattr(info, "assessments", None) or []),
                    key=json.dumps,
                ),
                "spans": spans,
            }
            if spans_error:
                entry["spans_error"] = spans_error
            # keyed by the source trace's id: kept by a target that keeps ids, carried in the importer's
            # source-id tag where the server gives a trace an id of its own (MLflow 3.0)
            traces[(info.tags or {}).get("mlflow_exim.trace_info.trace_id") or trace_id] = entry
    return traces


# -- evaluation datasets (3.4+) ------------------------------------------------------------------


def dump_evaluation_datasets() -> dict:
    if not hasattr(client, "search_datasets"):
        raise RuntimeError(f"the MLflow {mlflow.__version__} client has no evaluation datasets")
    datasets = {}
    found = list(
        paged(lambda token: client.search_datasets(max_results=50, page_token=token))
    )
    for dataset in sorted(found, key=lambda d: (d.created_time or 0, d.name)):
        key = unique_key(datasets, dataset.name)
        records = []
        for record in dataset.records:
            source = record.source.to_dict() if record.source else None
            records.append({
                "inputs": record.inputs,
                "outputs": getattr(record, "outputs", None) or {},  # 3.5+; none before is empty
                "expectations": record.expectations,
                "tags": kept_tags(record.tags),
                "source_type": _value(record.source_type),
                "source": source,
            })  # fmt: skip
        datasets[key] = {
            "tags": kept_tags(dataset.tags),
            "schema": dataset_schema(dataset.schema),
            "profile": dataset.profile,
            "experiments": sorted(experiment_names.get(e, e) for e in dataset.experiment_ids),
            "records": sorted(records, key=lambda r: json.dumps(r, sort_keys=True, default=str)),
        }
    return datasets


def dataset_schema(schema: str | None):
    """The schema a server derives from the records, without its empty sections (servers since
    3.5 list an empty "outputs" section where older ones list none)."""
    try:
        parsed = json.loads(schema) if schema else None
    except ValueError:
        return schema
    if isinstance(parsed, dict):
        return {key: value for key, value in parsed.items() if value != {}}
    return parsed


# -- ids -> names --------------------------------------------------------------------------------


def rename_ids(value):
    """Replace run and logged model ids inside every string by their stable names."""
    if isinstance(value, dict):
        return {rename_ids(k): rename_ids(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rename_ids(v) for v in value]
    if isinstance(value, str):
        value = MODEL_ID.sub(lambda m: f"<model:{model_names.get(m.group(0), '?')}>", value)
        return RUN_ID.sub(
            lambda m: f"<run:{run_names[m.group(0)]}>" if m.group(0) in run_names else m.group(0),
            value,
        )
    return value


def optional(kind: str, fn, dump: dict) -> None:
    """Dump `kind` if the server (and this client) have it; else record why it is absent."""
    try:
        dump[kind] = fn()
    except Exception as exc:  # noqa: BLE001 - a server without the kind answers in many ways
        absent[kind] = f"{type(exc).__name__}: {str(exc)[:300]}"
        log(f"{kind} absent: {absent[kind]}")


def main() -> None:
    if not uri:
        sys.exit("MLFLOW_TRACKING_URI is not set")
    dump: dict = {"mlflow_version": mlflow.__version__}
    try:
        dump["server_version"] = session.get(f"{uri}/version", timeout=10).text.strip()[:40]
    except requests.RequestException:
        dump["server_version"] = None
    dump["experiments"] = dump_experiments()
    dump["runs"] = dump_runs(dump["experiments"])
    optional("logged_models", dump_logged_models, dump)  # before runs' model_inputs are renamed
    models, prompts = dump_registry()
    dump["registered_models"] = models
    if VERSION >= (3,) or prompts:
        dump["prompts"] = prompts
    else:
        absent["prompts"] = f"the MLflow {mlflow.__version__} client knows no prompts"
    optional("traces", dump_traces, dump)
    optional("evaluation_datasets", dump_evaluation_datasets, dump)
    dump["kinds"] = [
        k
        for k in ("experiments", "runs", "registered_models", "logged_models", "traces",
                  "prompts", "evaluation_datasets")
        if k in dump
    ]  # fmt: skip
    dump["absent"] = absent
    print(json.dumps(rename_ids(dump), sort_keys=True, default=str))


if __name__ == "__main__":
    main()
