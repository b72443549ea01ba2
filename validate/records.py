"""What the validator compares: plain records, independent of where they were read from.

A reader (a live server today; an export directory or a snapshot later) turns its side into
these records, so the comparison never touches MLflow entities or the REST API directly.
Timestamps are epoch milliseconds, as MLflow stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ExperimentRecord:
    experiment_id: str
    name: str
    lifecycle_stage: str
    tags: dict[str, str]

    @property
    def description(self) -> str | None:
        return self.tags.get("mlflow.note.content")


@dataclass
class MetricPoint:
    step: int
    timestamp: int
    value: float


@dataclass
class DatasetInputRecord:
    name: str
    digest: str
    source_type: str
    source: str
    context: str | None  # the mlflow.data.context input tag ("training", "eval"...)


@dataclass
class RunRecord:
    run_id: str
    experiment_id: str
    name: str
    status: str
    lifecycle_stage: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, MetricPoint]  # latest value per key
    dataset_inputs: list[DatasetInputRecord] = field(default_factory=list)
    model_outputs: list[tuple[str, int]] = field(default_factory=list)  # (logged model id, step)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")


@dataclass
class ArtifactEntry:
    path: str  # relative to the run's (or model's) artifact root
    size: int | None
    etag: str | None = None  # only from an S3 listing


@dataclass
class LoggedModelRecord:
    model_id: str
    experiment_id: str
    name: str
    source_run_id: str | None
    status: str
    model_type: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # latest value per key
    artifact_location: str
    creation_timestamp: int | None


@dataclass
class ModelVersionRecord:
    version: int
    run_id: str | None
    source: str
    status: str
    stage: str
    description: str
    tags: dict[str, str]
    model_id: str | None


@dataclass
class RegisteredModelRecord:
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]  # alias -> version number
    versions: dict[int, ModelVersionRecord]


@dataclass
class SpanRecord:
    name: str
    parent_name: str | None
    span_type: str | None
    start_time_ns: int | None
    end_time_ns: int | None
    status: str
    inputs: object
    outputs: object
    attributes: dict[str, object]


@dataclass
class AssessmentRecord:
    name: str
    value: object
    source: str | None


@dataclass
class TraceRecord:
    trace_id: str
    experiment_id: str
    request_time: int | None
    execution_duration: int | None
    state: str
    name: str | None
    tags: dict[str, str]
    metadata: dict[str, str]
    spans: list[SpanRecord]
    assessments: list[AssessmentRecord]

    @property
    def run_id(self) -> str | None:
        return self.metadata.get("mlflow.sourceRun")


@dataclass
class PromptVersionRecord:
    version: int
    template: object  # a string, or a list of chat messages
    commit_message: str | None
    tags: dict[str, str]
    response_format: object = None


@dataclass
class PromptRecord:
    name: str
    description: str | None
    tags: dict[str, str]
    aliases: dict[str, int]
    versions: dict[int, PromptVersionRecord]


@dataclass
class EvaluationDatasetRecord:
    """An MLflow 3 GenAI evaluation dataset (``mlflow.genai.datasets``) and its records."""

    dataset_id: str
    name: str
    tags: dict[str, str]
    experiment_ids: list[str]
    records: list[dict]  # each: inputs, expectations, outputs, tags (source-side ids left out)
