"""Reading an export directory written by ``mlflow-sync export`` as one side of a validation.

The directory format is migrate's (docs/export-format.md, ``mlflow_sync.export_format``):
objects are stored under their source ids, so a server validated against its own export
matches object by object on identical ids. Everything is read from local files: no requests.
Evaluation datasets are compared when the manifest counts them (exports of an MLflow 3 source
by this version); otherwise that check is skipped when either side is an export.

An export on S3 or a snapshot is read the same way from a local copy of its metadata (see
:mod:`.sides`); an S3 export's artifacts stay on S3 and are listed and hashed there.
"""

from __future__ import annotations

import math
from pathlib import Path

from mlflow_sync import s3
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import ExportLayout, decode_float, load_manifest, read_json, sha256_of
from mlflow_sync.validate.reader import (
    dataset_record_content,
    s3_artifact_checksum,
    s3_artifact_sha256,
    s3_artifacts,
    trace_record,
)
from mlflow_sync.validate.records import (
    ArtifactEntry,
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
    TraceRecord,
)


def _enum_name(value) -> str:
    """``"LoggedModelStatus.READY"`` or ``"READY"`` -> ``"READY"`` (str() of MLflow enums varies)."""
    return str(value).rsplit(".", 1)[-1]


def _latest(points: list[MetricPoint]) -> MetricPoint:
    """The point MLflow keeps as a run's latest metric: highest step, then timestamp, then value."""
    return max(points, key=lambda p: (p.step, p.timestamp, -math.inf if math.isnan(p.value) else p.value))


def is_artifact_file(relative: str) -> bool:
    """A file under a run's or logged model's ``artifacts/`` in an export (the bulk; everything else is JSON)."""
    parts = relative.split("/")
    return ((len(parts) > 5 and parts[0] == "experiments" and parts[2] == "runs" and parts[4] == "artifacts")
            or (len(parts) > 3 and parts[0] == "logged_models" and parts[2] == "artifacts"))


class ExportReader:
    """One side of a validation read from an export directory (see the module docstring).

    ``artifacts_at``: the export's own location on S3 when ``root`` holds only its metadata;
    artifacts are then read from there.
    """

    def __init__(self, root: str | Path, *, display: str | None = None, artifacts_at: str | None = None):
        self.layout = ExportLayout(Path(root))
        self.manifest = load_manifest(self.layout)
        has_datasets = "evaluation_datasets" in (self.manifest.get("counts") or {})
        self.unsupported_checks = frozenset() if has_datasets else frozenset({"evaluation_datasets"})
        self.display = display or f"export {self.layout.root}"
        self._remote_root = s3.parse_s3_uri(artifacts_at) if artifacts_at else None
        self.histories: dict[str, dict[str, list[MetricPoint]]] = {}
        self._model_inputs: dict[str, list[str]] = {}

    def requests_by_endpoint(self) -> dict[str, int]:
        return {}

    def experiments(self) -> list[ExperimentRecord]:
        return [ExperimentRecord(data["experiment_id"], data["name"], data["lifecycle_stage"], data.get("tags") or {})
                for data in map(read_json, self.layout.experiment_files())]

    def runs(self, experiment_id: str) -> list[RunRecord]:
        return [self._run(path, read_json(path)) for path in self.layout.run_files(experiment_id)]

    def _run(self, path: Path, data: dict) -> RunRecord:
        info = data["info"]
        histories = {key: [MetricPoint(step, timestamp, decode_float(value)) for step, timestamp, value in points]
                     for key, points in (data.get("metrics") or {}).items()}
        self.histories[info["run_id"]] = histories
        inputs = data.get("inputs") or {}
        self._model_inputs[info["run_id"]] = list(inputs.get("models") or [])
        return RunRecord(
            run_id=info["run_id"],
            experiment_id=info["experiment_id"],
            name=info.get("run_name") or "",
            status=info["status"],
            lifecycle_stage=info["lifecycle_stage"],
            start_time=info.get("start_time"),
            end_time=info.get("end_time"),
            artifact_uri=self._artifact_root(path.parent),
            params=data.get("params") or {},
            tags=data.get("tags") or {},
            metrics={key: _latest(points) for key, points in histories.items() if points},
            dataset_inputs=[
                DatasetInputRecord(d["dataset"]["name"], d["dataset"]["digest"], d["dataset"]["source_type"],
                                   d["dataset"]["source"], (d.get("tags") or {}).get("mlflow.data.context"))
                for d in inputs.get("datasets") or []
            ],
            model_outputs=[(m["model_id"], m["step"]) for m in (data.get("outputs") or {}).get("models") or []],
        )

    def _artifact_root(self, object_dir: Path) -> str:
        if self._remote_root is None:
            return str(object_dir / "artifacts")
        return self._remote_root.child(f"{object_dir.relative_to(self.layout.root).as_posix()}/artifacts").uri

    def metric_history(self, run: RunRecord, key: str) -> list[MetricPoint]:
        return self.histories.get(run.run_id, {}).get(key, [])

    def model_inputs(self, run: RunRecord) -> list[str]:
        return self._model_inputs.get(run.run_id, [])

    def artifacts(self, artifact_uri: str) -> dict[str, ArtifactEntry]:
        if s3.is_s3_uri(artifact_uri):
            return s3_artifacts(artifact_uri)
        root = Path(artifact_uri)
        if not root.is_dir():
            return {}
        entries = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                relative = path.relative_to(root).as_posix()
                entries[relative] = ArtifactEntry(relative, path.stat().st_size)
        return entries

    def artifact_sha256(self, artifact_uri: str, path: str) -> str:
        if s3.is_s3_uri(artifact_uri):
            return s3_artifact_sha256(artifact_uri, path)
        return sha256_of(Path(artifact_uri) / path)

    def artifact_checksum(self, artifact_uri: str, path: str) -> str | None:
        return s3_artifact_checksum(artifact_uri, path) if s3.is_s3_uri(artifact_uri) else None

    def logged_models(self, experiment_ids: list[str]) -> list[LoggedModelRecord]:
        wanted = set(experiment_ids)
        records = []
        for path in self.layout.logged_model_files():
            data = read_json(path)
            if data["experiment_id"] not in wanted:
                continue
            metrics = {}
            for metric in sorted(data.get("metrics") or [], key=lambda m: (m["step"], m["timestamp"])):
                metrics[metric["key"]] = decode_float(metric["value"])
            records.append(LoggedModelRecord(
                model_id=data["model_id"],
                experiment_id=data["experiment_id"],
                name=data["name"],
                source_run_id=data.get("source_run_id") or None,
                status=_enum_name(data["status"]),
                model_type=data.get("model_type"),
                params=data.get("params") or {},
                tags=data.get("tags") or {},
                metrics=metrics,
                artifact_location=self._artifact_root(path.parent),
                creation_timestamp=data.get("creation_timestamp"),
            ))
        return records

    def registered_models(self) -> list[RegisteredModelRecord]:
        records = []
        for data in map(read_json, self.layout.registered_model_files()):
            versions = {
                int(v["version"]): ModelVersionRecord(
                    version=int(v["version"]),
                    run_id=v.get("run_id") or None,
                    source=v.get("source") or "",
                    status=_enum_name(v["status"]),
                    stage=v.get("current_stage") or "None",
                    description=v.get("description") or "",
                    tags=v.get("tags") or {},
                    model_id=v.get("model_id") or None,
                )
                for v in data.get("versions") or []
            }
            records.append(RegisteredModelRecord(
                name=data["name"],
                description=data.get("description") or "",
                tags=data.get("tags") or {},
                aliases={alias: int(version) for alias, version in (data.get("aliases") or {}).items()},
                versions=versions,
            ))
        return records

    def traces(self, experiment_id: str) -> list[TraceRecord]:
        from mlflow.entities import Trace

        return [trace_record(Trace.from_dict(read_json(path)), experiment_id)
                for path in self.layout.trace_files(experiment_id)]

    def prompts(self) -> list[PromptRecord]:
        records = []
        for data in map(read_json, self.layout.prompt_files()):
            versions = {
                int(v["version"]): PromptVersionRecord(
                    version=int(v["version"]),
                    template=v.get("template"),
                    commit_message=v.get("commit_message"),
                    tags=v.get("tags") or {},
                    response_format=v.get("response_format"),
                )
                for v in data.get("versions") or []
            }
            records.append(PromptRecord(
                name=data["name"],
                description=data.get("description"),
                tags=data.get("tags") or {},
                aliases={alias: int(version) for alias, version in (data.get("aliases") or {}).items()},
                versions=versions,
            ))
        return records

    def evaluation_datasets(self) -> list[EvaluationDatasetRecord]:
        if "evaluation_datasets" in self.unsupported_checks:
            raise UsageError("this export holds no evaluation datasets")
        return [
            EvaluationDatasetRecord(
                dataset_id=data["dataset_id"],
                name=data["name"],
                tags=data.get("tags") or {},
                experiment_ids=list(data.get("experiment_ids") or []),
                records=[dataset_record_content(row) for row in data.get("records") or []],
            )
            for data in map(read_json, self.layout.evaluation_dataset_files())
        ]
