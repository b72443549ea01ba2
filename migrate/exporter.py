"""Lean export: every object kind the source server holds, in a few requests per run.

Requests per run at the source: runs are read 1,000 per ``runs/search`` page; metric histories
come 100 runs per request and metric key from ``get-history-bulk`` (full histories, checked for
truncation); artifacts cost one listing per directory and one download per file. Logged models,
traces and registered models (prompts included) are paged the same way.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from mlflow_sync.artifacts import list_entries, list_files
from mlflow_sync.connection import Server
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import ExportLayout, build_manifest, encode_float, write_record
from mlflow_sync.histories import HistoryReader
from mlflow_sync.migrate.outcome import Outcome
from mlflow_sync.paging import paged, pages, quoted
from mlflow_sync.registry import aliases_of, registered_models

log = logging.getLogger(__name__)

RUNS_PAGE = 1000
HISTORY_RUNS_PER_REQUEST = 100  # MLflow's limit for get-history-bulk


@dataclass
class ExportFilters:
    """What to export. Empty lists mean everything."""

    experiments: list[str] = field(default_factory=list)  # names or ids
    models: list[str] = field(default_factory=list)  # registered model / prompt names
    since_ms: int | None = None  # run start_time >= since
    until_ms: int | None = None  # run start_time < until
    skip_kinds: frozenset[str] = frozenset()  # kinds left out on purpose (--skip-kind), see inventory.py

    @property
    def include_deleted_runs(self) -> bool:
        """Deleted runs are carried (as deleted) unless skipped: users restore them on the source."""
        return "deleted_runs" not in self.skip_kinds

    def carries(self, kind: str) -> bool:
        return kind not in self.skip_kinds

    @property
    def selective(self) -> bool:
        """Does the selection leave out runs or registry objects (so counts cannot equal the source's)?"""
        return bool(self.experiments or self.models or self.since_ms is not None or self.until_ms is not None)


class Exporter:
    def __init__(self, source: Server, layout: ExportLayout, *, filters: ExportFilters | None = None, workers: int = 8,
                 progress=None):
        self.source = source
        self.client = source.client
        self.layout = layout
        self.filters = filters or ExportFilters()
        self.workers = workers
        self.outcome = Outcome()
        self.progress = progress
        self._history_reader = HistoryReader(source)
        self._selected_runs: set[str] = set()
        self.notes: list[str] = []  # what the export carries other than the source has it, for the report

    # -- entry point ---------------------------------------------------------------------------

    def export(self, inventory: dict | None = None) -> dict:
        """Export everything selected, then write the manifest (with the source's ``inventory``,
        counted before); returns the manifest."""
        capabilities = self.source.capabilities()
        lacking = capabilities.lacking
        if lacking:
            log.warning("the source %s (MLflow %s) has no %s: %s not exported", self.source.display,
                        capabilities.version or "of unknown version", ", ".join(k.replace("_", " ") for k in lacking),
                        "they are" if len(lacking) > 1 else "it is")
        experiments = self.selected_experiments
        self._require_named_models()
        self.layout.root.mkdir(parents=True, exist_ok=True)
        self.layout.manifest.unlink(missing_ok=True)  # a re-export: the old manifest no longer describes the files
        for experiment in experiments:
            self.export_experiment(experiment)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="export-run") as pool:
            run_jobs = _BoundedJobs(pool, limit=2 * HISTORY_RUNS_PER_REQUEST)
            for experiment in experiments:
                self._export_runs(experiment, run_jobs)
                if capabilities.logged_models and self.filters.carries("logged_models"):
                    self._export_logged_models(experiment)
                if capabilities.traces and self.filters.carries("traces"):
                    self.export_traces([experiment])
            run_jobs.wait_all()
        self._export_registered_models()
        if capabilities.evaluation_datasets and self.filters.carries("evaluation_datasets"):
            self.export_evaluation_datasets(self.selected_datasets(experiments))
        counts = self._counts()
        if capabilities.evaluation_datasets and self.filters.carries("evaluation_datasets"):
            counts.setdefault("evaluation_datasets", 0)  # present (even 0): the export holds this source's datasets
        return build_manifest(
            self.layout,
            source={
                "server": self.source.display,
                "kind": self.source.spec.kind,
                "mlflow_version": capabilities.version,
                "capabilities": {k: v for k, v in asdict(capabilities).items() if k != "version"},
                "lacks": lacking,
            },
            counts=counts,
            options={
                "experiments": self.filters.experiments,
                "models": self.filters.models,
                "since_ms": self.filters.since_ms,
                "until_ms": self.filters.until_ms,
                "include_deleted_runs": self.filters.include_deleted_runs,
                "skip_kinds": sorted(self.filters.skip_kinds),
            },
            inventory=inventory,
            notes=self.notes,
        )

    def plan(self) -> dict:
        """What an export would hold, per kind, without writing anything: counts and artifact bytes.

        Costs what the export's listings cost (searches, one artifact listing per directory),
        none of its downloads.
        """
        from mlflow.entities import ViewType
        capabilities = self.source.capabilities()
        counts = {"experiments": 0, "runs": 0, "logged_models": 0, "traces": 0}
        artifact_bytes = {"runs": 0, "logged_models": 0}

        def size_of(uri: str | None) -> int:
            if not uri:
                return 0
            repo = self.source.artifact_repository(uri)
            return sum(entry.file_size or 0 for entry in list_entries(repo, None))

        view = ViewType.ALL if self.filters.include_deleted_runs else ViewType.ACTIVE_ONLY
        experiments = self.selected_experiments
        self._require_named_models()
        for experiment in experiments:
            counts["experiments"] += 1
            if experiment.lifecycle_stage == "deleted" and not self.filters.include_deleted_runs:
                continue
            for run in paged(lambda token, e=experiment: self.client.search_runs(
                    [e.experiment_id], filter_string=self._run_filter() or "", run_view_type=view,
                    max_results=RUNS_PAGE, page_token=token)):
                counts["runs"] += 1
                self._selected_runs.add(run.info.run_id)
                artifact_bytes["runs"] += size_of(run.info.artifact_uri)
            if capabilities.logged_models:
                for model in paged(lambda token, e=experiment: self.client.search_logged_models(
                        experiment_ids=[e.experiment_id], max_results=100, page_token=token)):
                    counts["logged_models"] += 1
                    artifact_bytes["logged_models"] += size_of(model.artifact_location)
            if capabilities.traces:
                counts["traces"] += sum(1 for _ in paged(lambda token, e=experiment: self.client.search_traces(
                    locations=[e.experiment_id], max_results=100, page_token=token, include_spans=False)))
        for kind, versions_kind, records in (("registered_models", "model_versions", self._selected_models(False)),
                                             ("prompts", "prompt_versions", self._selected_models(True))):
            counts[kind] = len(records)
            counts[versions_kind] = sum(n for _, n in records)
        if capabilities.evaluation_datasets:
            counts["evaluation_datasets"] = sum(1 for _ in self.selected_datasets(self.selected_experiments))
        return {"source": self.source.display, "mlflow_version": capabilities.version, "counts": counts,
                "bytes": artifact_bytes, "source_lacks": capabilities.lacking}

    def _selected_models(self, prompts: bool) -> list[tuple[str, int]]:
        """(name, number of versions) of the registered models, or prompts, the filters select."""
        wanted = set(self.filters.models)
        selected = []
        for model in self._registered_models(prompts):
            if wanted and model.name not in wanted:
                continue
            versions = self.prompt_versions(model) if prompts else list(paged(
                lambda token, m=model: self.client.search_model_versions(
                    filter_string=f"name = {quoted(m.name)}", max_results=10000, page_token=token)))
            if not prompts and self._outside_run_filter(model.name, versions):
                continue
            selected.append((model.name, len(versions)))
        return selected

    def _registered_models(self, prompts: bool):
        """Every registered model, or every prompt (a registered model tagged as one), on the source."""
        if prompts and not self.source.capabilities().prompts:
            return iter(())
        if not self.filters.carries("prompts" if prompts else "registered_models"):
            return iter(())
        return registered_models(self.client, prompts=prompts)

    def _require_named_models(self) -> None:
        """A --model name the source does not hold is a typo to report, not an empty export."""
        wanted = set(self.filters.models)
        if not wanted:
            return
        missing = wanted - {model.name for prompts in (False, True) for model in self._registered_models(prompts)}
        if missing:
            raise UsageError(f"no registered model or prompt named {sorted(missing)[0]!r} on the source "
                             f"{self.source.display}")

    def _counts(self) -> dict:
        counts = {"experiments": len(self.layout.experiment_files()), "runs": 0, "traces": 0}
        for path in self.layout.experiment_files():
            counts["runs"] += len(list((path.parent / "runs").glob("*/run.json")))
            counts["traces"] += len(list((path.parent / "traces").glob("*.json")))
        counts["logged_models"] = len(self.layout.logged_model_files())
        from mlflow_sync.export_format import read_json

        models = [read_json(p) for p in self.layout.registered_model_files()]
        prompts = [read_json(p) for p in self.layout.prompt_files()]
        counts["registered_models"] = len(models)
        counts["model_versions"] = sum(len(m["versions"]) for m in models)
        counts["prompts"] = len(prompts)
        counts["prompt_versions"] = sum(len(m["versions"]) for m in prompts)
        datasets = [read_json(p) for p in self.layout.evaluation_dataset_files()]
        if datasets:
            counts["evaluation_datasets"] = len(datasets)
            counts["evaluation_dataset_records"] = sum(len(d["records"]) for d in datasets)
        counts["metric_points"] = self.outcome.done.get("metric_points", 0) or None
        counts["traces_without_spans"] = self.outcome.done.get("traces_without_spans", 0) or None
        counts = {k: v for k, v in counts.items() if v is not None}
        return counts

    # -- experiments ---------------------------------------------------------------------------

    @cached_property
    def selected_experiments(self) -> list:
        """The experiments the filters select (every one without filters), listed once."""
        from mlflow.entities import ViewType

        wanted = set(self.filters.experiments)
        experiments = [
            e for e in paged(lambda token: self.client.search_experiments(
                view_type=ViewType.ALL, max_results=1000, page_token=token))
            if not wanted or e.name in wanted or e.experiment_id in wanted
        ]
        missing = wanted - {e.name for e in experiments} - {e.experiment_id for e in experiments}
        if missing:
            raise UsageError(f"no experiment named {sorted(missing)[0]!r} on the source {self.source.display}")
        return experiments

    @cached_property
    def _model_inputs_possible(self) -> bool:
        """Could a run have logged models as inputs (or outputs)? Only if the selected experiments
        hold any, on a server that has logged models. Derived on first use, so every caller of
        :meth:`export_run` (an export, a sync cycle) reads them the same way.

        ``runs/search`` answers without model inputs (MLflow loads them in ``runs/get`` only), so
        when logged models exist each run costs one ``runs/get`` more; without any, nothing more.
        """
        if not self.source.capabilities().logged_models:
            return False
        ids = [e.experiment_id for e in self.selected_experiments]
        return any(
            self.client.search_logged_models(experiment_ids=ids[start:start + 50], max_results=1)
            for start in range(0, len(ids), 50)
        )

    def export_experiment(self, experiment) -> None:
        write_record(self.layout.experiment_file(experiment.experiment_id), {
            "experiment_id": experiment.experiment_id,
            "name": experiment.name,
            "artifact_location": experiment.artifact_location,
            "lifecycle_stage": experiment.lifecycle_stage,
            "creation_time": experiment.creation_time,
            "last_update_time": experiment.last_update_time,
            "tags": dict(experiment.tags),
        })
        self.outcome.count("experiments")

    # -- runs ----------------------------------------------------------------------------------

    def _run_filter(self) -> str | None:
        clauses = []
        if self.filters.since_ms is not None:
            clauses.append(f"attributes.start_time >= {int(self.filters.since_ms)}")
        if self.filters.until_ms is not None:
            clauses.append(f"attributes.start_time < {int(self.filters.until_ms)}")
        return " and ".join(clauses) or None

    def _export_runs(self, experiment, run_jobs: _BoundedJobs) -> None:
        from mlflow.entities import ViewType

        view = ViewType.ALL if self.filters.include_deleted_runs else ViewType.ACTIVE_ONLY
        if experiment.lifecycle_stage == "deleted" and not self.filters.include_deleted_runs:
            return
        experiment_id = experiment.experiment_id
        for page in pages(lambda token: self.client.search_runs(
                [experiment_id], filter_string=self._run_filter() or "", run_view_type=view,
                max_results=RUNS_PAGE, page_token=token)):
            self._selected_runs.update(r.info.run_id for r in page)
            pending = [r for r in page if not self.layout.run_file(experiment_id, r.info.run_id).exists()]
            self.outcome.skip("runs", len(page) - len(pending))
            for start in range(0, len(pending), HISTORY_RUNS_PER_REQUEST):
                chunk = pending[start:start + HISTORY_RUNS_PER_REQUEST]
                histories = self.outcome.attempt(
                    "metric histories", f"{len(chunk)} runs of experiment {experiment.name}", experiment_id,
                    lambda chunk=chunk: self.histories(chunk),
                )
                if histories is None:
                    continue  # reported; these runs are not written, so a re-run exports them
                for run in chunk:  # downloads go on while the next chunk's histories are read
                    run_jobs.submit(self.export_run, run, histories[run.info.run_id])

    def export_run(self, run, history: dict) -> None:
        def action(run=run):
            if self._model_inputs_possible:
                run = self.client.get_run(run.info.run_id)  # runs/search leaves out model inputs
            run_dir = self.layout.run_dir(run.info.experiment_id, run.info.run_id)
            artifacts = self.download(run.info.artifact_uri, run_dir / "artifacts")
            write_record(run_dir / "run.json", run_record(run, history, artifacts))
            return True

        if self.outcome.attempt("run", run.info.run_name or run.info.run_id, run.info.run_id, action):
            self.outcome.count("runs")
        if self.progress:
            self.progress()

    def histories(self, runs) -> dict[str, dict[str, list]]:
        """Full metric histories of these runs: {run_id: {key: [[step, timestamp, value], ...]}}."""
        result: dict[str, dict[str, list]] = {r.info.run_id: {} for r in runs}
        keys: dict[str, list[str]] = defaultdict(list)
        for run in runs:
            for key in run.data.metrics:
                keys[key].append(run.info.run_id)
        for key, run_ids in keys.items():
            for metric in self._history_reader.fetch(run_ids, key):
                result[metric["run_id"]].setdefault(key, []).append(
                    [metric["step"], metric["timestamp"], encode_float(metric["value"])]
                )
        points = sum(len(h) for per_run in result.values() for h in per_run.values())
        self.outcome.count("metric_points", points)
        return result

    def download(self, artifact_uri: str | None, destination: Path) -> list[str]:
        """Download every artifact under ``artifact_uri``; returns their relative paths."""
        if not artifact_uri:
            return []
        if destination.exists():
            shutil.rmtree(destination)  # a half-finished earlier attempt
        repo = self.source.artifact_repository(artifact_uri)
        files = list(list_files(repo, None))
        if files:
            destination.mkdir(parents=True, exist_ok=True)
            for path in files:
                target = destination / path
                target.parent.mkdir(parents=True, exist_ok=True)
                repo._download_file(path, str(target))
        return files

    # -- logged models ---------------------------------------------------------------------------

    def _export_logged_models(self, experiment) -> None:
        models = paged(lambda token: self.client.search_logged_models(
            experiment_ids=[experiment.experiment_id], max_results=100, page_token=token))
        for model in models:
            def action(model=model):
                model_dir = self.layout.logged_model_dir(model.model_id)
                artifacts = self.download(model.artifact_location, model_dir / "artifacts")
                write_record(model_dir / "logged_model.json", logged_model_record(model, artifacts))
                return True

            if self.outcome.attempt("logged model", model.name, model.model_id, action) is not None:
                self.outcome.count("logged_models")

    # -- traces --------------------------------------------------------------------------------

    def export_traces(self, experiments, *, condition: str | None = None, skip=lambda trace_id: False) -> int:
        """Every trace of these experiments (matching the search ``condition``, and not ``skip``-ped),
        with its spans where the source has them; returns how many were written.

        Upstream defect (see upstream.py, "traces without spans"): ``search_traces(include_spans=True)``
        silently leaves out a trace whose span data cannot be downloaded. The trace infos come
        from a search without spans, the spans from a second search; a trace missing from the
        second is exported without spans, with a warning and a note. MLflow downloads span files
        stored as artifacts through its *global* tracking URI, hence ``activate()``.
        """
        names = {experiment.experiment_id: experiment.name for experiment in experiments}

        def search(include_spans: bool):
            return paged(lambda token: self.client.search_traces(
                locations=list(names), filter_string=condition, max_results=100, page_token=token,
                include_spans=include_spans))

        with self.source.activate():  # span files behind mlflow-artifacts:/ resolve through the global URI
            with_spans = {trace.info.trace_id: trace for trace in search(include_spans=True)}
        written = 0
        for info_only in search(include_spans=False):
            trace_id = info_only.info.trace_id
            if skip(trace_id):
                continue
            trace = with_spans.get(trace_id, info_only)
            experiment_id = trace.info.trace_location.mlflow_experiment.experiment_id
            if not trace.data.spans:
                name = names.get(experiment_id, experiment_id)
                log.warning("trace %s of experiment %r has no spans on the source; exported without spans",
                            trace_id, name)
                self.outcome.count("traces_without_spans")
                self.notes.append(f"trace {trace_id} (experiment {name!r}) exported without spans: the "
                                  "source server holds none for it")
            write_record(self.layout.trace_file(experiment_id, trace_id), trace.to_dict())
            self.outcome.count("traces")
            written += 1
        return written

    # -- registered models and prompts ---------------------------------------------------------

    def _export_registered_models(self) -> None:
        wanted = set(self.filters.models)
        for is_prompt in (False, True):
            for model in self._registered_models(is_prompt):
                if wanted and model.name not in wanted:
                    continue

                def action(model=model, is_prompt=is_prompt):
                    if is_prompt:
                        write_record(self.layout.prompt_file(model.name),
                                     prompt_record(model, self.prompt_versions(model)))
                        return True
                    versions = list(paged(lambda token: self.client.search_model_versions(
                        filter_string=f"name = {quoted(model.name)}", max_results=10000, page_token=token)))
                    if self._outside_run_filter(model.name, versions):
                        return False
                    write_record(self.layout.registered_model_file(model.name),
                                 registered_model_record(model, versions))
                    return True

                kind = "prompt" if is_prompt else "registered model"
                if self.outcome.attempt(kind, model.name, model.name, action):
                    self.outcome.count("prompts" if is_prompt else "registered_models")


    def _outside_run_filter(self, name: str, versions: list) -> bool:
        """With experiment or time filters and no --model, a registered model goes along only if
        its versions come from exported runs: a version cannot point at a run left behind."""
        run_filtered = self.filters.experiments or self.filters.since_ms is not None \
            or self.filters.until_ms is not None
        if not run_filtered or self.filters.models:
            return False
        outside = [v.version for v in versions if v.run_id and v.run_id not in self._selected_runs]
        if outside:
            log.info("registered model %r left out: versions %s come from runs outside the filters "
                     "(name it with --model to export it anyway)", name, ", ".join(map(str, outside)))
        return bool(outside)

    # -- evaluation datasets ---------------------------------------------------------------------

    def selected_datasets(self, experiments):
        """(dataset, its experiment ids): every dataset, or with --experiment those linked to a selected one."""
        store = self.client._tracking_client.store  # the entity's lazy reads go through the *global* store
        selected = {e.experiment_id for e in experiments}
        for dataset in paged(lambda token: self.client.search_datasets(max_results=1000, page_token=token)):
            experiment_ids = list(store.get_dataset_experiment_ids(dataset.dataset_id))
            if not self.filters.experiments or selected.intersection(experiment_ids):
                yield dataset, experiment_ids

    def export_evaluation_datasets(self, selected) -> None:
        """One file per GenAI evaluation dataset of ``selected`` ((dataset, experiment ids), see
        :meth:`selected_datasets`): name, tags, linked experiments and every record."""
        store = self.client._tracking_client.store
        for dataset, experiment_ids in selected:
            def action(dataset=dataset, experiment_ids=experiment_ids):
                rows, _ = store._load_dataset_records(dataset.dataset_id, max_results=None)
                write_record(self.layout.evaluation_dataset_file(dataset.dataset_id),
                           evaluation_dataset_record(dataset, experiment_ids, rows))
                return True

            if self.outcome.attempt("evaluation dataset", dataset.name, dataset.dataset_id, action):
                self.outcome.count("evaluation_datasets")

    def prompt_versions(self, prompt) -> list:
        return list(paged(lambda token: self.client.search_prompt_versions(
            prompt.name, max_results=1000, page_token=token)))


class _BoundedJobs:
    """Jobs submitted to a pool without waiting for them, at most ``limit`` unfinished at a time:
    the caller prepares the next jobs while the pool works, and memory stays bounded."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int):
        self.pool = pool
        self.limit = limit
        self._pending: deque[Future] = deque()

    def submit(self, fn, *args) -> None:
        while len(self._pending) >= self.limit:
            self._pending.popleft().result()
        self._pending.append(self.pool.submit(fn, *args))

    def wait_all(self) -> None:
        while self._pending:
            self._pending.popleft().result()


# -- records (the JSON documents of docs/export-format.md) --------------------------------------


def run_record(run, history: dict, artifacts: list[str]) -> dict:
    info = run.info
    inputs = run.inputs
    outputs = getattr(run, "outputs", None)
    return {
        "info": {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "experiment_id": info.experiment_id,
            "user_id": info.user_id,
            "status": info.status,
            "start_time": info.start_time,
            "end_time": info.end_time,
            "lifecycle_stage": info.lifecycle_stage,
            "artifact_uri": info.artifact_uri,
        },
        "params": dict(run.data.params),
        "tags": dict(run.data.tags),
        "metrics": history,
        "inputs": {
            "datasets": [
                {
                    "dataset": {
                        "name": d.dataset.name,
                        "digest": d.dataset.digest,
                        "source_type": d.dataset.source_type,
                        "source": d.dataset.source,
                        "schema": d.dataset.schema,
                        "profile": d.dataset.profile,
                    },
                    "tags": {t.key: t.value for t in d.tags},
                }
                for d in (inputs.dataset_inputs if inputs else [])
            ],
            "models": [m.model_id for m in (getattr(inputs, "model_inputs", None) or [])] if inputs else [],
        },
        "outputs": {
            "models": [{"model_id": m.model_id, "step": m.step} for m in (getattr(outputs, "model_outputs", None) or [])]
        },
        "artifacts": artifacts,
    }


def logged_model_record(model, artifacts: list[str]) -> dict:
    return {
        "model_id": model.model_id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "source_run_id": model.source_run_id,
        "model_type": model.model_type,
        "status": str(model.status),
        "status_message": model.status_message,
        "artifact_location": model.artifact_location,
        "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp,
        "tags": dict(model.tags),
        "params": dict(model.params),
        "metrics": [
            {
                "key": m.key, "value": encode_float(m.value), "timestamp": m.timestamp, "step": m.step,
                "run_id": m.run_id, "dataset_name": m.dataset_name, "dataset_digest": m.dataset_digest,
            }
            for m in (model.metrics or [])
        ],
        "artifacts": artifacts,
    }


def registered_model_record(model, versions) -> dict:
    return {
        "name": model.name,
        "description": model.description,
        "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp,
        "tags": dict(model.tags),
        "aliases": aliases_of(model),
        "versions": sorted(
            (
                {
                    "version": int(v.version),
                    "source": v.source,
                    "run_id": v.run_id,
                    "model_id": getattr(v, "model_id", None),
                    "status": v.status,
                    "current_stage": v.current_stage,
                    "description": v.description,
                    "user_id": v.user_id,
                    "run_link": v.run_link,
                    "creation_timestamp": v.creation_timestamp,
                    "tags": dict(v.tags),
                }
                for v in versions
            ),
            key=lambda v: v["version"],
        ),
    }


def prompt_record(prompt, versions) -> dict:
    return {
        "name": prompt.name,
        "description": prompt.description,
        "creation_timestamp": prompt.creation_timestamp,
        "tags": dict(prompt.tags),
        "aliases": aliases_of(prompt),
        "versions": sorted(
            (
                {
                    "version": int(v.version),
                    "template": v.template,
                    "commit_message": v.commit_message,
                    "tags": {k: val for k, val in (v.tags or {}).items()},
                    "response_format": v.response_format,
                    "model_config": v.model_config.to_dict() if hasattr(v.model_config, "to_dict") else v.model_config,
                    "creation_timestamp": v.creation_timestamp,
                    "user_id": v.user_id,
                }
                for v in versions
            ),
            key=lambda v: v["version"],
        ),
    }


DATASET_RECORD_KEYS = ("inputs", "expectations", "outputs", "tags", "source", "created_time", "created_by")
"""What an evaluation-dataset record keeps; its id and update times are the source server's own."""


def evaluation_dataset_record(dataset, experiment_ids: list[str], rows) -> dict:
    return {
        "dataset_id": dataset.dataset_id,
        "name": dataset.name,
        "tags": dict(dataset.tags or {}),
        "experiment_ids": sorted(experiment_ids),
        "created_time": dataset.created_time,
        "created_by": dataset.created_by,
        "records": [
            {key: value for key, value in row.to_dict().items() if key in DATASET_RECORD_KEYS and value is not None}
            for row in rows
        ],
    }


