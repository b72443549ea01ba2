"""Reading one side of a validation into records (see :mod:`.records`).

:class:`SideReader` is the interface the comparison engine uses. :class:`ServerReader` reads a
live server through :class:`mlflow_sync.connection.Server` (http, ARN or database URI); a reader
for an export directory or snapshot (:mod:`.export_reader`) implements the same methods.

Cost model (requests per side): experiments, runs (1,000 per page), logged models, registered
models and model versions, prompts and traces (a search without spans, then one with them) are
read with paged searches. Metric histories (one request per run and key) and artifact listings
(one per directory, or one paged S3 listing per run when the artifact root is on S3) are only
read when a check asks for them; model inputs (one ``runs/get`` per run) only when the compared
experiments hold logged models.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import tempfile
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

from mlflow_sync import s3
from mlflow_sync.artifacts import list_entries
from mlflow_sync.connection import Server
from mlflow_sync.export_format import sha256_of
from mlflow_sync.histories import MAX_RUNS_PER_REQUEST, HistoryReader
from mlflow_sync.paging import paged, paged_json
from mlflow_sync.registry import registered_models
from mlflow_sync.validate.records import (
    ArtifactEntry,
    AssessmentRecord,
    DatasetInputRecord,
    EvaluationDatasetRecord,
    ExperimentRecord,
    LoggedModelRecord,
    MetricPoint,
    ModelVersionRecord,
    PromptRecord,
    PromptVersionRecord,
    RegisteredModelRecord,
    RunRecord,
    SpanRecord,
    TraceRecord,
)

log = logging.getLogger(__name__)

RUNS_PAGE_SIZE = 1000


class SideReader(Protocol):
    """One side of a validation. ``display`` names it in reports (never contains secrets)."""

    display: str

    def experiments(self) -> list[ExperimentRecord]: ...
    def runs(self, experiment_id: str) -> list[RunRecord]: ...
    def metric_history(self, run: RunRecord, key: str) -> list[MetricPoint]: ...
    def model_inputs(self, run: RunRecord) -> list[str]: ...
    def artifacts(self, artifact_uri: str) -> dict[str, ArtifactEntry]: ...
    def artifact_sha256(self, artifact_uri: str, path: str) -> str: ...
    def artifact_checksum(self, artifact_uri: str, path: str) -> str | None: ...
    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModelRecord]: ...
    def registered_models(self) -> list[RegisteredModelRecord]: ...
    def traces(self, experiment_id: str) -> list[TraceRecord]: ...
    def prompts(self) -> list[PromptRecord]: ...
    def evaluation_datasets(self) -> list[EvaluationDatasetRecord]: ...
    def requests_by_endpoint(self) -> dict[str, int]: ...

    unsupported_checks: frozenset[str]
    """Checks this side cannot hold (e.g. an export without evaluation datasets): skipped."""


def _float(value) -> float:
    return float(value) if value is not None else math.nan


class ServerReader:
    """Reads a live tracking server (any kind :func:`mlflow_sync.connection.connect` accepts)."""

    def __init__(self, server: Server):
        self.server = server
        self.client = server.client
        self.display = server.display
        self._history_reader = HistoryReader(server)
        self._prefetched: dict[tuple[str, str], list[MetricPoint]] = {}

    @property
    def unsupported_checks(self) -> frozenset[str]:
        """Kinds this server cannot hold (an older MLflow), detected from the server itself."""
        return frozenset(self.server.capabilities().lacking)

    def requests_by_endpoint(self) -> dict[str, int]:
        return self.server.requests_by_endpoint()

    # -- tracking ----------------------------------------------------------------------------

    def experiments(self) -> list[ExperimentRecord]:
        from mlflow.entities import ViewType

        found = paged(lambda token: self.client.search_experiments(
            view_type=ViewType.ALL, max_results=1000, page_token=token))
        return [
            ExperimentRecord(e.experiment_id, e.name, e.lifecycle_stage, dict(e.tags)) for e in found
        ]

    def runs(self, experiment_id: str) -> list[RunRecord]:
        if self.server.transport is not None:
            return self._runs_from_rest(experiment_id)
        from mlflow.entities import ViewType

        found = paged(lambda token: self.client.search_runs(
            [experiment_id], run_view_type=ViewType.ALL, max_results=RUNS_PAGE_SIZE, page_token=token))
        return [_run_record(run) for run in found]

    def _runs_from_rest(self, experiment_id: str) -> list[RunRecord]:
        """Paged ``runs/search`` read as plain JSON: turning 1,000 runs per page into MLflow entities
        (protobuf parsing) costs more client time than the server takes to answer."""
        body = {"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": RUNS_PAGE_SIZE}
        pages = paged_json(lambda page_body: self.server.call("POST", "/api/2.0/mlflow/runs/search", page_body),
                           "runs", body)
        return [_run_record_from_json(run) for run in pages]

    def history_prefetches(self, runs: list[RunRecord]) -> list[Callable[[], None]]:
        """Jobs that read these runs' histories in bulk (one request per metric key and 100 runs),
        so that :meth:`metric_history` answers from memory instead of one request per run and key."""
        run_ids_by_key: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            for key in run.metrics:
                run_ids_by_key[key].append(run.run_id)
        return [
            partial(self._prefetch, key, run_ids[start:start + MAX_RUNS_PER_REQUEST])
            for key, run_ids in run_ids_by_key.items()
            for start in range(0, len(run_ids), MAX_RUNS_PER_REQUEST)
        ]

    def _prefetch(self, key: str, run_ids: list[str]) -> None:
        points: dict[str, list[MetricPoint]] = {run_id: [] for run_id in run_ids}
        for point in self._history_reader.fetch(run_ids, key):
            points[point["run_id"]].append(MetricPoint(point["step"], point["timestamp"], _float(point["value"])))
        for run_id, history in points.items():
            self._prefetched[(run_id, key)] = history

    def metric_history(self, run: RunRecord, key: str) -> list[MetricPoint]:
        prefetched = self._prefetched.pop((run.run_id, key), None)
        if prefetched is not None:
            return prefetched
        history = self.client.get_metric_history(run.run_id, key)
        return [MetricPoint(m.step, m.timestamp, _float(m.value)) for m in history]

    def model_inputs(self, run: RunRecord) -> list[str]:
        # Run searches leave model inputs out (MLflow 3.17); only runs/get returns them.
        inputs = self.client.get_run(run.run_id).inputs
        return [m.model_id for m in (inputs.model_inputs if inputs else None) or []]

    # -- artifacts ---------------------------------------------------------------------------

    def artifacts(self, artifact_uri: str) -> dict[str, ArtifactEntry]:
        if s3.is_s3_uri(artifact_uri):
            return s3_artifacts(artifact_uri)
        return {info.path: ArtifactEntry(info.path, info.file_size)
                for info in list_entries(self.server.artifact_repository(artifact_uri))}

    def artifact_sha256(self, artifact_uri: str, path: str) -> str:
        if s3.is_s3_uri(artifact_uri):
            return s3_artifact_sha256(artifact_uri, path)
        with tempfile.TemporaryDirectory(prefix="mlflow-sync-validate-") as scratch:
            return sha256_of(Path(self.server.artifact_repository(artifact_uri).download_artifacts(path, dst_path=scratch)))

    def artifact_checksum(self, artifact_uri: str, path: str) -> str | None:
        return s3_artifact_checksum(artifact_uri, path) if s3.is_s3_uri(artifact_uri) else None

    # -- models ------------------------------------------------------------------------------

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModelRecord]:
        records = []
        # The server caps experiment_ids per search; chunk to stay well inside it.
        for start in range(0, len(experiment_ids), 50):
            chunk = experiment_ids[start:start + 50]
            found = paged(lambda token, chunk=chunk: self.client.search_logged_models(
                chunk, max_results=100, page_token=token))
            records.extend(_logged_model_record(model) for model in found)
        return records

    def registered_models(self) -> list[RegisteredModelRecord]:
        models = {}
        for model in registered_models(self.client, prompts=False):
            models[model.name] = RegisteredModelRecord(
                name=model.name,
                description=model.description or "",
                tags=dict(model.tags),
                aliases={alias: int(version) for alias, version in (model.aliases or {}).items()},
                versions={},
            )
        if not models:
            return []
        # One paged search over every version instead of one search per model.
        for version in paged(lambda token: self.client.search_model_versions(max_results=10000, page_token=token)):
            model = models.get(version.name)
            if model is None:
                continue
            model.versions[int(version.version)] = ModelVersionRecord(
                version=int(version.version),
                run_id=version.run_id or None,
                source=version.source or "",
                status=str(version.status),
                stage=version.current_stage or "None",
                description=version.description or "",
                tags=dict(version.tags),
                model_id=getattr(version, "model_id", None) or None,
            )
        return list(models.values())

    # -- GenAI -------------------------------------------------------------------------------

    def traces(self, experiment_id: str) -> list[TraceRecord]:
        """Every trace of the experiment, with its spans where the side has them.

        MLflow's ``search_traces(include_spans=True)`` silently leaves out a trace whose span data
        is missing (see migrate/upstream.py, "traces without spans"), so the trace list comes from
        a search without spans and the spans from a second search; a trace absent from the second
        is compared as having no spans. Span files behind ``mlflow-artifacts:/`` are downloaded
        through MLflow's *global* tracking URI, hence ``activate()``.
        """
        def search(include_spans: bool):
            return paged(lambda token: self.client.search_traces(
                locations=[experiment_id], max_results=100, page_token=token, include_spans=include_spans))

        infos = list(search(include_spans=False))
        if not infos:
            return []
        with self.server.activate():
            with_spans = {trace.info.trace_id: trace for trace in search(include_spans=True)}
        return [trace_record(with_spans.get(trace.info.trace_id, trace), experiment_id) for trace in infos]

    def prompts(self) -> list[PromptRecord]:
        records = []
        for prompt in paged(lambda token: self.client.search_prompts(max_results=1000, page_token=token)):
            versions = {}
            for version in paged(lambda token, name=prompt.name: self.client.search_prompt_versions(
                    name, max_results=1000, page_token=token)):
                versions[int(version.version)] = PromptVersionRecord(
                    version=int(version.version),
                    template=version.template,
                    commit_message=version.commit_message,
                    tags=dict(version.tags or {}),
                    response_format=getattr(version, "response_format", None),
                )
            records.append(PromptRecord(
                name=prompt.name,
                description=prompt.description,
                tags=dict(prompt.tags or {}),
                aliases=self._prompt_aliases(prompt.name),
                versions=versions,
            ))
        return records

    def evaluation_datasets(self) -> list[EvaluationDatasetRecord]:
        # The entity's lazy properties read the *global* tracking store; read through this side's store.
        store = self.client._tracking_client.store
        records = []
        for dataset in paged(lambda token: self.client.search_datasets(max_results=1000, page_token=token)):
            rows, _ = store._load_dataset_records(dataset.dataset_id, max_results=None)
            records.append(EvaluationDatasetRecord(
                dataset_id=dataset.dataset_id,
                name=dataset.name,
                tags=dict(dataset.tags or {}),
                experiment_ids=list(store.get_dataset_experiment_ids(dataset.dataset_id)),
                records=[dataset_record_content(row.to_dict()) for row in rows],
            ))
        return records

    def _prompt_aliases(self, name: str) -> dict[str, int]:
        # Prompt version searches leave aliases out; the registered-model record carries them.
        model = self.client._get_registry_client().get_registered_model(name)
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}


DATASET_RECORD_FIELDS = ("inputs", "expectations", "outputs", "tags")
"""What a copy of an evaluation-dataset record must keep; ids, timestamps and users are server-local."""


def dataset_record_content(row: dict) -> dict:
    return {name: row.get(name) for name in DATASET_RECORD_FIELDS if row.get(name) not in (None, {}, [])}


# Artifacts on S3 (a server's direct artifact root, or an export on S3): read without the tracking server.


def s3_artifacts(artifact_uri: str) -> dict[str, ArtifactEntry]:
    """One paged S3 listing instead of a request per directory."""
    root = s3.parse_s3_uri(artifact_uri)
    prefix = root.key.rstrip("/") + "/" if root.key else ""
    entries = {}
    for item in s3.list_objects(s3.S3Location(root.bucket, prefix).uri):
        relative = item["Key"][len(prefix):]
        if relative and not relative.endswith("/"):
            entries[relative] = ArtifactEntry(relative, item.get("Size"), (item.get("ETag") or "").strip('"') or None)
    return entries


def s3_artifact_sha256(artifact_uri: str, path: str) -> str:
    """The object's stored full-object SHA-256 (S3 checked it on upload; exports and snapshots store one),
    else the SHA-256 of the downloaded bytes."""
    stored = s3_artifact_checksum(artifact_uri, path)
    if stored and "-" not in stored:
        return base64.b64decode(stored).hex()
    with tempfile.TemporaryDirectory(prefix="mlflow-sync-validate-") as scratch:
        return sha256_of(s3.download_file(s3.parse_s3_uri(artifact_uri).child(path).uri, Path(scratch) / "object"))


def s3_artifact_checksum(artifact_uri: str, path: str) -> str | None:
    """The S3 object's stored SHA-256 checksum (base64; "-N" suffix when composite), if it has one."""
    location = s3.parse_s3_uri(artifact_uri).child(path)
    try:
        head = s3.client().head_object(Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED")
    except Exception as exc:  # no checksum access: the caller downloads and hashes instead
        log.debug("no checksum for %s: %s", location.uri, exc)
        return None
    return head.get("ChecksumSHA256")


def _run_record(run) -> RunRecord:
    info, data = run.info, run.data
    metrics = {m.key: MetricPoint(m.step, m.timestamp, _float(m.value)) for m in data._metric_objs}
    inputs = run.inputs
    datasets = []
    if inputs is not None:
        for dataset_input in inputs.dataset_inputs or []:
            dataset = dataset_input.dataset
            context = next((t.value for t in dataset_input.tags or [] if t.key == "mlflow.data.context"), None)
            datasets.append(DatasetInputRecord(dataset.name, dataset.digest, dataset.source_type, dataset.source,
                                               context))
    outputs = getattr(run, "outputs", None)
    models_out = [(m.model_id, m.step) for m in (outputs.model_outputs if outputs else None) or []]
    return RunRecord(
        run_id=info.run_id,
        experiment_id=info.experiment_id,
        name=info.run_name or "",
        status=str(info.status),
        lifecycle_stage=info.lifecycle_stage,
        start_time=info.start_time,
        end_time=info.end_time,
        artifact_uri=info.artifact_uri,
        params=dict(data.params),
        tags=dict(data.tags),
        metrics=metrics,
        dataset_inputs=datasets,
        model_outputs=models_out,
    )


def _pairs(items) -> dict[str, str]:
    return {item["key"]: item.get("value", "") for item in items or []}


def _run_record_from_json(run: dict) -> RunRecord:
    """The REST form of a run (proto JSON: zero values and empty lists left out) as a record,
    with the same defaults MLflow's entities apply (an end time of 0 means none)."""
    info, data = run["info"], run.get("data", {})
    datasets = []
    for dataset_input in run.get("inputs", {}).get("dataset_inputs", []):
        dataset = dataset_input.get("dataset", {})
        datasets.append(DatasetInputRecord(
            dataset.get("name", ""), dataset.get("digest", ""), dataset.get("source_type", ""),
            dataset.get("source", ""), _pairs(dataset_input.get("tags")).get("mlflow.data.context")))
    return RunRecord(
        run_id=info["run_id"],
        experiment_id=info["experiment_id"],
        name=info.get("run_name", ""),
        status=info.get("status", "RUNNING"),
        lifecycle_stage=info.get("lifecycle_stage", ""),
        start_time=info.get("start_time", 0),
        end_time=info.get("end_time") or None,
        artifact_uri=info.get("artifact_uri", ""),
        params=_pairs(data.get("params")),
        tags=_pairs(data.get("tags")),
        metrics={m["key"]: MetricPoint(m.get("step", 0), m.get("timestamp", 0), float(m.get("value", 0.0)))
                 for m in data.get("metrics", [])},
        dataset_inputs=datasets,
        model_outputs=[(m["model_id"], m.get("step", 0)) for m in run.get("outputs", {}).get("model_outputs", [])],
    )


def _logged_model_record(model) -> LoggedModelRecord:
    metrics = {}
    for metric in sorted(model.metrics or [], key=lambda m: (m.step, m.timestamp)):
        metrics[metric.key] = _float(metric.value)
    return LoggedModelRecord(
        model_id=model.model_id,
        experiment_id=model.experiment_id,
        name=model.name,
        source_run_id=model.source_run_id or None,
        status=str(getattr(model.status, "name", model.status)),
        model_type=model.model_type,
        params=dict(model.params or {}),
        tags=dict(model.tags or {}),
        metrics=metrics,
        artifact_location=model.artifact_location,
        creation_timestamp=model.creation_timestamp,
    )


def _json_value(text):
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def trace_record(trace, experiment_id: str) -> TraceRecord:
    info = trace.info
    spans = list(trace.data.spans) if trace.data else []
    names = {span.span_id: span.name for span in spans}
    span_records = [
        SpanRecord(
            name=span.name,
            parent_name=names.get(span.parent_id) if span.parent_id else None,
            span_type=span.span_type,
            start_time_ns=span.start_time_ns,
            end_time_ns=span.end_time_ns,
            status=str(getattr(span.status.status_code, "value", span.status.status_code)),
            inputs=span.inputs,
            outputs=span.outputs,
            attributes={k: _json_value(v) for k, v in (span.attributes or {}).items()},
        )
        for span in sorted(spans, key=lambda s: (s.start_time_ns or 0, s.name))
    ]
    assessments = [
        AssessmentRecord(
            name=a.name,
            value=getattr(a, "value", None),
            source=getattr(getattr(a, "source", None), "source_type", None),
        )
        for a in getattr(info, "assessments", None) or []
    ]
    tags = dict(info.tags or {})
    return TraceRecord(
        trace_id=info.trace_id,
        experiment_id=experiment_id,
        request_time=info.request_time,
        execution_duration=info.execution_duration,
        state=str(getattr(info.state, "value", info.state)),
        name=tags.get("mlflow.traceName"),
        tags=tags,
        metadata=dict(info.trace_metadata or {}),
        spans=span_records,
        assessments=assessments,
    )
