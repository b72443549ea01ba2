"""Lean, idempotent, resumable import of an export directory into a target server.

Order: experiments -> runs created (so parents, logged models and versions can point at them)
-> logged models -> runs completed (data, inputs/outputs, artifacts, status) -> registered
models and versions -> prompts -> traces. Every step is journaled (see journal.py); before
creating anything it has no journal line for, the importer looks for an object carrying that
source id's tag (one paged search per experiment / model), so a kill between "server created
it" and "journal wrote it" never leads to a duplicate.

Requests per run at the target: ``runs/create``, one ``runs/log-batch`` per 1,000 values
(MLflow's limit), ``runs/log-inputs`` when the run has inputs, one upload per artifact file,
``runs/update`` for status and end time.
"""

from __future__ import annotations

import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_sync.connection import Server
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import ExportLayout, decode_float, load_manifest, read_json, verify_files
from mlflow_sync.identity import (
    DATASET_ID_TAG,
    DROPPED_TAGS,
    EXPERIMENT_ID_TAG,
    LOGGED_MODEL_ID_TAG,
    MODEL_VERSION_TAG,
    PLACEHOLDER_TAG,
    PROMPT_VERSION_TAG,
    RUN_ID_TAG,
)
from mlflow_sync.inventory import refusal
from mlflow_sync.journal import CREATED, DONE, Journal
from mlflow_sync.migrate.outcome import Outcome
from mlflow_sync.paging import paged, quoted
from mlflow_sync.transport import CreateGuard, _json_response, register_guard

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"
PROMPT_EXPERIMENTS_TAG = "_mlflow_experiment_ids"  # ",1,2,": experiments a prompt is linked to
ENTITIES_PER_BATCH = 1000  # MLflow's log-batch limits
PARAMS_TAGS_PER_BATCH = 100
DATASET_RECORDS_PER_UPSERT = 500


@dataclass
class ImportOptions:
    source_tags: bool = True
    experiment_renames: dict[str, str] = field(default_factory=dict)
    model_renames: dict[str, str] = field(default_factory=dict)
    workers: int = 8
    skip_kinds: frozenset[str] = frozenset()  # kinds left out on purpose (--skip-kind), see inventory.py

    def carries(self, kind: str) -> bool:
        return kind not in self.skip_kinds


class Importer:
    def __init__(self, target: Server, layout: ExportLayout, journal: Journal, options: ImportOptions | None = None,
                 progress=None):
        self.target = target
        self.client = target.client
        self.layout = layout
        self.journal = journal
        self.options = options or ImportOptions()
        self.outcome = Outcome()
        self.progress = progress
        self.run_sources: dict[str, dict] = {}  # source run id -> run.json (without metrics) for remapping
        self._fresh_runs: set[str] = set()  # source ids of runs this process created (nothing logged to them yet)
        self.target_traces: dict[str, dict] = {}  # target experiment id -> {trace id: TraceInfo}, see traces.py

    # -- entry point ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        manifest = load_manifest(self.layout)
        verify_files(self.layout, manifest)
        experiments = [read_json(p) for p in self.layout.experiment_files()]
        self._check_renames(experiments)
        capabilities = self.target.capabilities()
        self._refuse_kinds_the_target_cannot_hold(capabilities, manifest["counts"])
        for experiment in experiments:
            self.outcome.attempt("experiment", experiment["name"], experiment["experiment_id"],
                                 lambda e=experiment: self._import_experiment(e))
        runs = self._create_runs(experiments)
        logged_models = self.layout.logged_model_files() if self.options.carries("logged_models") else []
        for path in logged_models:
            record = read_json(path)
            self.outcome.attempt("logged model", record["name"], record["model_id"],
                                 lambda r=record, p=path: self._import_logged_model(r, p.parent))
        with ThreadPoolExecutor(self.options.workers) as pool:
            list(pool.map(self._complete_run, runs))
        for path in self.layout.registered_model_files() if self.options.carries("registered_models") else []:
            record = read_json(path)
            self.outcome.attempt("registered model", record["name"], record["name"],
                                 lambda r=record: self._import_registered_model(r))
        for path in logged_models:
            record = read_json(path)
            self.outcome.attempt("logged model", record["name"], record["model_id"],
                                 lambda r=record: self._restore_model_versions_tag(r))
        for path in self.layout.prompt_files() if self.options.carries("prompts") else []:
            record = read_json(path)
            self.outcome.attempt("prompt", record["name"], record["name"], lambda r=record: self._import_prompt(r))
        if capabilities.writes_traces and self.options.carries("traces"):
            for experiment in experiments:
                for path in self.layout.trace_files(experiment["experiment_id"]):
                    record = read_json(path)
                    trace_id = record["info"]["trace_id"]
                    self.outcome.attempt("trace", trace_id, trace_id, lambda r=record: self._import_trace(r))
        self._import_evaluation_datasets(capabilities)
        return self.outcome

    def _refuse_kinds_the_target_cannot_hold(self, capabilities, counts: dict) -> None:
        """An older target (or a service that disables a kind) gets what it can hold, but only when the
        user says so: otherwise nothing is written and the kinds are named."""
        held = {"logged_models": capabilities.logged_models, "traces": capabilities.writes_traces,
                "prompts": capabilities.prompts, "evaluation_datasets": capabilities.evaluation_datasets}
        refused = [kind for kind, can_hold in held.items()
                   if not can_hold and counts.get(kind) and self.options.carries(kind)]
        if refused:
            raise UsageError(f"the target {self.target.display} (MLflow {capabilities.version or 'of unknown version'}) "
                             f"cannot hold {refusal(refused, counts)}")

    def _tick(self) -> None:
        if self.progress:
            self.progress()

    def _check_renames(self, experiments: list[dict]) -> None:
        """A rename whose old name the export does not hold is a typo: refuse it before writing anything."""
        held = {"--rename-experiment": {e["name"] for e in experiments},
                "--rename-model": {read_json(p)["name"] for p in self.layout.registered_model_files()}}
        asked = {"--rename-experiment": self.options.experiment_renames, "--rename-model": self.options.model_renames}
        unknown = [f"{option} {old!r}" for option, renames in asked.items() for old in renames
                   if old not in held[option]]
        if unknown:
            raise UsageError(f"{', '.join(unknown)}: no such name in the export {self.layout.root}")

    # -- experiments ---------------------------------------------------------------------------

    def _import_experiment(self, record: dict) -> bool:
        source_id = record["experiment_id"]
        if self.journal.is_done("experiment", source_id):
            self.outcome.skip("experiments")
            return True
        name = self.options.experiment_renames.get(record["name"], record["name"])
        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            tags = {k: v for k, v in record["tags"].items() if k not in DROPPED_TAGS}
            if self.options.source_tags:
                tags[EXPERIMENT_ID_TAG] = source_id
            experiment_id = self.client.create_experiment(name, tags=tags)
        else:
            experiment_id = existing.experiment_id
            if existing.lifecycle_stage == "deleted" and record["lifecycle_stage"] != "deleted":
                self.client.restore_experiment(experiment_id)
            # Issue 7: an experiment of the same name may be the target's own; its tag values are
            # kept (validation reports them), only tags it lacks are added.
            kept = sorted(k for k, v in record["tags"].items()
                          if k not in DROPPED_TAGS and k in existing.tags and existing.tags[k] != v)
            if kept:
                log.warning("experiment %r already exists on the target with other values for %s: kept",
                            name, ", ".join(kept))
            for key, value in record["tags"].items():
                if key not in DROPPED_TAGS and key not in existing.tags:
                    self.client.set_experiment_tag(experiment_id, key, value)
        if record["lifecycle_stage"] == "deleted" and (existing is None or existing.lifecycle_stage != "deleted"):
            self.client.delete_experiment(experiment_id)
        self.journal.record("experiment", source_id, experiment_id, DONE, name=name)
        self.outcome.count("experiments")
        return True

    # -- runs: create ----------------------------------------------------------------------------

    def _create_runs(self, experiments: list[dict]) -> list[tuple[Path, dict]]:
        """Create every run not created yet; returns (run dir, run record) of runs to complete."""
        pending = []
        for experiment in experiments:
            target_experiment = self.journal.target("experiment", experiment["experiment_id"])
            if target_experiment is None:
                continue  # the experiment failed and is reported; its runs are not attempted
            records = []
            for path in self.layout.run_files(experiment["experiment_id"]):
                record = read_json(path)
                metrics = record.pop("metrics")
                self.run_sources[record["info"]["run_id"]] = record
                records.append((path.parent, record, metrics))
            if any(self.journal.get("run", r["info"]["run_id"]) is None for _, r, _ in records):
                found = self._existing_runs(target_experiment)
                to_create = []
                for _, record, _ in records:
                    source_id = record["info"]["run_id"]
                    if self.journal.get("run", source_id) is None and source_id in found:
                        run_id, artifact_uri = found[source_id]
                        self.journal.record("run", source_id, run_id, CREATED, artifact_uri=artifact_uri)
                    elif self.journal.get("run", source_id) is None:
                        to_create.append(record)
                with ThreadPoolExecutor(self.options.workers) as pool:
                    list(pool.map(lambda r, e=target_experiment: self.outcome.attempt(
                        "run", r["info"]["run_name"] or r["info"]["run_id"], r["info"]["run_id"],
                        lambda: self._create_run(r, e)), to_create))
            for run_dir, record, _ in records:
                source_id = record["info"]["run_id"]
                if self.journal.is_done("run", source_id):
                    self.outcome.skip("runs")
                elif self.journal.get("run", source_id) is not None:
                    pending.append((run_dir, source_id))
        return pending

    def _existing_runs(self, experiment_id: str) -> dict[str, tuple[str, str]]:
        """Runs already in the target experiment, by the source id they carry."""
        from mlflow.entities import ViewType

        found: dict[str, tuple[str, str]] = {}
        for run in paged(lambda token: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` != ''", run_view_type=ViewType.ALL,
                max_results=1000, page_token=token)):
            source_id = run.data.tags.get(RUN_ID_TAG)
            if source_id in found:
                log.warning("target experiment %s holds two runs from source run %s (%s and %s)",
                            experiment_id, source_id, found[source_id][0], run.info.run_id)
                continue
            found[source_id] = (run.info.run_id, run.info.artifact_uri)
        return found

    def _create_run(self, record: dict, experiment_id: str) -> bool:
        info = record["info"]
        tags = {RUN_ID_TAG: info["run_id"]}
        user = record["tags"].get("mlflow.user")
        if user:
            tags["mlflow.user"] = user  # MLflow takes the run's user from this tag
        run = self.client.create_run(experiment_id, start_time=info["start_time"], tags=tags,
                                     run_name=info["run_name"])
        self._fresh_runs.add(info["run_id"])
        self.journal.record("run", info["run_id"], run.info.run_id, CREATED, artifact_uri=run.info.artifact_uri)
        return True

    # -- runs: complete --------------------------------------------------------------------------

    def _complete_run(self, item: tuple[Path, str]) -> None:
        run_dir, source_id = item
        record = read_json(run_dir / "run.json")
        name = record["info"]["run_name"] or source_id
        if self.outcome.attempt("run", name, source_id, lambda: self._fill_run(run_dir, record)):
            self.outcome.count("runs")
        self._tick()

    def run_tags(self, record: dict) -> dict[str, str]:
        info = record["info"]
        tags = {k: v for k, v in record["tags"].items() if k not in DROPPED_TAGS}
        parent = tags.get(PARENT_TAG)
        if parent:
            target_parent = self.journal.target("run", parent)
            if target_parent:
                tags[PARENT_TAG] = target_parent
            else:
                log.warning("run %s: parent run %s was not imported; keeping the source id", info["run_id"], parent)
        if self.options.source_tags:
            for field_name in ("experiment_id", "user_id", "status", "start_time", "end_time", "lifecycle_stage",
                               "artifact_uri", "run_name"):
                value = info.get(field_name)
                if value is not None:
                    tags[f"mlflow_exim.run_info.{field_name}"] = str(value)
        tags[RUN_ID_TAG] = info["run_id"]
        return tags

    def _fill_run(self, run_dir: Path, record: dict) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        info = record["info"]
        entry = self.journal.get("run", info["run_id"])
        run_id = entry["target"]
        present = None
        if info["run_id"] not in self._fresh_runs:
            # Created by an earlier attempt or another work dir: it may hold inputs already (logging a
            # model input twice breaks a unique key) and may be deleted (a deleted run takes no writes).
            present = self.client.get_run(run_id)
            if present.info.lifecycle_stage == "deleted":
                self.client.restore_run(run_id)
        params = [Param(k, v) for k, v in record["params"].items()]
        tags = [RunTag(k, v) for k, v in self.run_tags(record).items()]
        metrics = [
            Metric(key, decode_float(value), timestamp, step)
            for key, points in record["metrics"].items() for step, timestamp, value in points
        ]
        for batch in log_batch_bodies(metrics, params, tags):
            self.client.log_batch(run_id, **batch)
        self._log_inputs_outputs(run_id, record, present)
        if record["artifacts"]:
            repo = self.target.artifact_repository(entry["artifact_uri"])
            repo.log_artifacts(str(run_dir / "artifacts"))
        if info["status"] != "RUNNING" or info["end_time"]:
            self.client.set_terminated(run_id, status=info["status"], end_time=info["end_time"])
        if info["lifecycle_stage"] == "deleted":
            self.client.delete_run(run_id)
        self.journal.record("run", info["run_id"], run_id, DONE, artifact_uri=entry["artifact_uri"])
        return True

    def _log_inputs_outputs(self, run_id: str, record: dict, present=None) -> None:
        """Log the run's dataset and model inputs and model outputs, leaving out those ``present``
        (the target run as an earlier attempt left it) already holds."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        held_datasets, held_models, held_outputs = _held_inputs_outputs(present)
        datasets = [
            DatasetInput(Dataset(**d["dataset"]), tags=[InputTag(k, v) for k, v in d["tags"].items()])
            for d in record["inputs"]["datasets"]
            if (d["dataset"]["name"], d["dataset"]["digest"]) not in held_datasets
        ]
        models = [m for m in self._mapped_models(record["inputs"]["models"]) if m not in held_models]
        if datasets or models:
            from mlflow.entities import LoggedModelInput

            self.client.log_inputs(run_id, datasets=datasets or None,
                                   models=[LoggedModelInput(m) for m in models] or None)
        outputs = [(self.journal.target("logged_model", o["model_id"]), o["step"]) for o in record["outputs"]["models"]]
        outputs = [(m, step) for m, step in outputs if m and m not in held_outputs]
        if outputs:
            from mlflow.entities import LoggedModelOutput

            self.client.log_outputs(run_id, [LoggedModelOutput(m, step) for m, step in outputs])

    def _restore_model_versions_tag(self, record: dict) -> bool:
        """Creating a model version makes the server rewrite the logged model's ``mlflow.modelVersions``
        tag with its own single entry; the source's value (MLflow may hold one entry per registration
        path) is put back as it was, renamed models renamed."""
        value = record["tags"].get(MODEL_VERSIONS_TAG)
        model_id = self.journal.target("logged_model", record["model_id"])
        if value is None or model_id is None:
            return True
        renames = self.options.model_renames
        if renames:
            try:
                entries = json.loads(value)
                value = json.dumps([{**e, "name": renames.get(e.get("name"), e.get("name"))} for e in entries])
            except (ValueError, TypeError, AttributeError):
                pass  # not the list MLflow writes: carried as it is
        if self.client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG) != value:
            self.client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: value})
        return True

    def _mapped_models(self, model_ids: list[str]) -> list[str]:
        return [t for t in (self.journal.target("logged_model", m) for m in model_ids) if t]

    # -- logged models ---------------------------------------------------------------------------

    def _import_logged_model(self, record: dict, model_dir: Path) -> bool:
        source_id = record["model_id"]
        if self.journal.is_done("logged_model", source_id):
            self.outcome.skip("logged_models")
            return True
        experiment_id = self.journal.target("experiment", record["experiment_id"])
        if experiment_id is None:
            raise RuntimeError(f"its experiment {record['experiment_id']} was not imported")
        entry = self.journal.get("logged_model", source_id)
        if entry is None:
            found = self.client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=f"tags.`{LOGGED_MODEL_ID_TAG}` = '{source_id}'",
                max_results=1)
            if found:
                model = found[0]
            else:
                tags = {k: v for k, v in record["tags"].items() if k not in DROPPED_TAGS}
                tags[LOGGED_MODEL_ID_TAG] = source_id
                model = self.client.create_logged_model(
                    experiment_id, name=record["name"], source_run_id=self.journal.target("run", record["source_run_id"])
                    if record["source_run_id"] else None,
                    tags=tags, params=record["params"] or None, model_type=record["model_type"],
                )
            self.journal.record("logged_model", source_id, model.model_id, CREATED,
                                artifact_location=model.artifact_location)
            entry = self.journal.get("logged_model", source_id)
        model_id = entry["target"]
        if record["artifacts"]:
            repo = self.target.artifact_repository(entry["artifact_location"])
            repo.log_artifacts(str(model_dir / "artifacts"))
        self._log_model_metrics(model_id, record)
        status = record["status"].rsplit(".", 1)[-1]
        if status in ("READY", "FAILED"):
            self.client.finalize_logged_model(model_id, status)
        self.journal.record("logged_model", source_id, model_id, DONE, artifact_location=entry["artifact_location"])
        self.outcome.count("logged_models")
        return True

    def _log_model_metrics(self, model_id: str, record: dict) -> None:
        """Model metrics are run metrics carrying the model id: log them to the imported run."""
        from mlflow.entities import Metric

        by_run: dict[str, list] = {}
        for m in record["metrics"]:
            run_id = self.journal.target("run", m["run_id"]) if m.get("run_id") else None
            if run_id is None:
                log.warning("logged model %s: metric %r has no imported run; not copied", record["name"], m["key"])
                continue
            by_run.setdefault(run_id, []).append(Metric(
                m["key"], decode_float(m["value"]), m["timestamp"], m["step"], model_id=model_id,
                dataset_name=m.get("dataset_name"), dataset_digest=m.get("dataset_digest")))
        for run_id, metrics in by_run.items():
            for batch in log_batch_bodies(metrics, [], []):
                self.client.log_batch(run_id, **batch)

    # -- registered models -----------------------------------------------------------------------

    def _map_source(self, source: str, run_id: str | None) -> tuple[str, str | None, str | None]:
        """Target (source URI, run id, logged model id) for a model version's source."""
        target_run = self.journal.target("run", run_id) if run_id else None
        if source.startswith("models:/m-"):
            model_id = self.journal.target("logged_model", source[len("models:/"):].split("/", 1)[0])
            if model_id is None:
                raise RuntimeError(f"its logged model {source} was not imported")
            return f"models:/{model_id}", target_run, model_id
        if source.startswith("runs:/") and run_id:
            if target_run is None:
                raise RuntimeError(f"its run {run_id} was not imported")
            return source.replace(f"runs:/{run_id}", f"runs:/{target_run}", 1), target_run, None
        run = self.run_sources.get(run_id) if run_id else None
        if run and run["info"]["artifact_uri"] and source.startswith(run["info"]["artifact_uri"]):
            entry = self.journal.get("run", run_id)
            return entry["artifact_uri"] + source[len(run["info"]["artifact_uri"]):], target_run, None
        return source, target_run, None

    def _import_registered_model(self, record: dict) -> bool:
        from mlflow.exceptions import MlflowException

        name = self.options.model_renames.get(record["name"], record["name"])
        if self.journal.is_done("registered_model", record["name"]):
            self.outcome.skip("registered_models")
            return True
        tags = {k: v for k, v in record["tags"].items() if k not in DROPPED_TAGS}
        try:
            self.client.create_registered_model(name, tags=tags, description=record["description"])
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        existing = {}
        for version in self.client.search_model_versions(f"name = {quoted(name)}", max_results=10000):
            source_version = version.tags.get(MODEL_VERSION_TAG)
            if source_version:
                existing[int(source_version)] = version
        live = {v["version"]: v for v in record["versions"]}
        for number in range(1, max(live, default=0) + 1):
            key = f"{record['name']}/{number}"
            if self.journal.is_done("model_version", key):
                continue
            if number in live:
                self._import_version(name, live[number], existing.get(number), key)
            else:
                self._fill_gap(name, number, existing.get(number), live, key)
        # Issue 7: an alias the target already points at a version it did not get from us is
        # the target's own; it is kept (validation reports it), not moved.
        ours = {str(v.version) for v in existing.values()} | {
            self.journal.target("model_version", f"{record['name']}/{n}") for n in live}
        aliases = self.client.get_registered_model(name).aliases if record["aliases"] else {}
        for alias, version in record["aliases"].items():
            target_version = self.journal.target("model_version", f"{record['name']}/{version}")
            if alias in aliases and str(aliases[alias]) not in ours:
                log.warning("model %r: alias %r already points at the target's own version %s: kept",
                            name, alias, aliases[alias])
            elif target_version:
                self.client.set_registered_model_alias(name, alias, target_version)
        self.journal.record("registered_model", record["name"], name, DONE)
        self.outcome.count("registered_models")
        return True

    def _registry_context(self):
        """A database target's registry resolves ``models:/`` sources through MLflow's *global*
        tracking URI (an HTTP server resolves them itself): point it at the target meanwhile."""
        from contextlib import nullcontext

        return self.target.activate() if self.target.spec.kind == "db" else nullcontext()

    def _import_version(self, name: str, version: dict, existing, key: str) -> None:
        if existing is None:
            source, run_id, model_id = self._map_source(version["source"], version["run_id"])
            tags = {k: v for k, v in version["tags"].items() if k not in DROPPED_TAGS}
            tags[MODEL_VERSION_TAG] = str(version["version"])
            with self._registry_context():
                existing = self.client.create_model_version(
                    name, source, run_id=run_id, tags=tags, run_link=version["run_link"] or None,
                    description=version["description"], await_creation_for=0, model_id=model_id,
                )
        if version["current_stage"] not in (None, "None") and existing.current_stage != version["current_stage"]:
            with warnings.catch_warnings():  # stages are deprecated, but sources still have them
                warnings.simplefilter("ignore", FutureWarning)
                self.client.transition_model_version_stage(name, existing.version, version["current_stage"],
                                                           archive_existing_versions=False)
        if str(existing.version) != str(version["version"]):
            log.warning("model %r: source version %s became version %s (the target already had versions)",
                        name, version["version"], existing.version)
        self.journal.record("model_version", key, str(existing.version), DONE)
        self.outcome.count("model_versions")

    def _fill_gap(self, name: str, number: int, existing, live: dict, key: str) -> None:
        """Keep later version numbers: create a placeholder for a deleted source version, then delete it."""
        if existing is None:
            next_live = live[min(n for n in live if n > number)]
            source, run_id, model_id = self._map_source(next_live["source"], next_live["run_id"])
            with self._registry_context():
                existing = self.client.create_model_version(
                    name, source, run_id=run_id, model_id=model_id, await_creation_for=0,
                    tags={MODEL_VERSION_TAG: str(number), PLACEHOLDER_TAG: "deleted on the source"},
                )
        self.client.delete_model_version(name, existing.version)
        self.journal.record("model_version", key, str(existing.version), DONE, deleted=True)

    # -- prompts ---------------------------------------------------------------------------------

    def _import_prompt(self, record: dict) -> bool:
        name = record["name"]
        if self.journal.is_done("prompt", name):
            self.outcome.skip("prompts")
            return True
        from mlflow.exceptions import MlflowException

        try:
            versions = list(self.client.search_prompt_versions(name, max_results=1000))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            versions = []
        existing = {int(v.tags[PROMPT_VERSION_TAG]): v for v in versions if PROMPT_VERSION_TAG in (v.tags or {})}
        for version in record["versions"]:
            key = f"{name}/{version['version']}"
            if self.journal.is_done("prompt_version", key):
                continue
            created = existing.get(version["version"])
            if created is None:
                # MlflowClient.register_prompt links the prompt to the *client's* active experiment (a
                # thread of its own): on a target that is an arbitrary one. Links are carried instead.
                self.client._link_prompt_to_experiment = _no_link
                tags = {k: v for k, v in version["tags"].items() if not k.startswith("mlflow.prompt.")
                        and k not in DROPPED_TAGS}
                tags[PROMPT_VERSION_TAG] = str(version["version"])
                created = self.client.register_prompt(
                    name, version["template"], commit_message=version["commit_message"], tags=tags,
                    response_format=version["response_format"], model_config=version["model_config"],
                )
            self.journal.record("prompt_version", key, str(created.version), DONE)
            self.outcome.count("prompt_versions")
        for alias, version in record["aliases"].items():
            target_version = self.journal.target("prompt_version", f"{name}/{version}")
            if target_version:
                self.client.set_prompt_alias(name, alias, int(target_version))
        wanted = self._carried_prompt_tags(record)
        held = self.client.get_prompt(name).tags if wanted else {}
        for key, value in wanted.items():
            if held.get(key) != value:
                self.client.set_prompt_tag(name, key, value)
        self.journal.record("prompt", name, name, DONE)
        self.outcome.count("prompts")
        return True

    def _carried_prompt_tags(self, record: dict) -> dict[str, str]:
        """The prompt's own tags (its versions carry theirs), its experiment links mapped to the
        target's experiment ids; MLflow's other internal tags are its to write."""
        tags = {k: v for k, v in record["tags"].items()
                if not k.startswith(("mlflow.prompt.", "_mlflow")) and k not in DROPPED_TAGS}
        linked = [self.journal.target("experiment", i) for i in record["tags"].get(PROMPT_EXPERIMENTS_TAG, "").split(",")
                  if i]
        if any(linked):
            tags[PROMPT_EXPERIMENTS_TAG] = f",{','.join(e for e in linked if e)},"
        return tags

    # -- traces ----------------------------------------------------------------------------------

    def _import_trace(self, record: dict) -> bool:
        from mlflow_sync.migrate.traces import import_trace

        source_id = record["info"]["trace_id"]
        if self.journal.is_done("trace", source_id):
            self.outcome.skip("traces")
            return True
        trace_id = import_trace(self, record)
        self.journal.record("trace", source_id, trace_id, DONE)
        self.outcome.count("traces")
        return True


    # -- evaluation datasets ---------------------------------------------------------------------

    def _import_evaluation_datasets(self, capabilities) -> None:
        """After traces, so records whose source is a trace can point at its copy."""
        paths = self.layout.evaluation_dataset_files()
        if paths and not capabilities.evaluation_datasets:
            self.outcome.fail("evaluation dataset", "(all)", "-", RuntimeError(
                f"the target runs MLflow {capabilities.version}, which has no evaluation datasets"))
            return
        for path in paths:
            record = read_json(path)
            self.outcome.attempt("evaluation dataset", record["name"], record["dataset_id"],
                                 lambda r=record: self._import_evaluation_dataset(r))

    def _import_evaluation_dataset(self, record: dict) -> bool:
        """Find the copy by its source-id tag or create it, link experiments, then upsert the records.

        MLflow upserts records by their inputs, so records already copied are updated in place,
        never added twice.
        """
        source_id = record["dataset_id"]
        if self.journal.is_done("evaluation_dataset", source_id):
            self.outcome.skip("evaluation_datasets")
            return True
        store = self.client._tracking_client.store
        experiment_ids = []
        for experiment in record["experiment_ids"]:
            target = self.journal.target("experiment", experiment)
            if target:
                experiment_ids.append(target)
            else:
                log.warning("evaluation dataset %r: experiment %s was not imported; not linked", record["name"],
                            experiment)
        tags = {k: v for k, v in record["tags"].items() if k not in DROPPED_TAGS}
        # Unquoted key: MLflow's dataset search keeps the backticks of tags.`key` and matches nothing.
        found = [d for d in self.client.search_datasets(
            filter_string=f"tags.{DATASET_ID_TAG} = {quoted(source_id)}", max_results=10)
            if (d.tags or {}).get(DATASET_ID_TAG) == source_id]
        if found:
            dataset = found[0]
            linked = set(store.get_dataset_experiment_ids(dataset.dataset_id))
            unlinked = [e for e in experiment_ids if e not in linked]
            if unlinked:
                self.client.add_dataset_to_experiments(dataset.dataset_id, unlinked)
            absent = {k: v for k, v in tags.items() if k not in (dataset.tags or {})}
            if absent:
                self.client.set_dataset_tags(dataset.dataset_id, absent)
        else:
            dataset = self.client.create_dataset(record["name"], experiment_id=experiment_ids or None,
                                                 tags={**tags, DATASET_ID_TAG: source_id})
        rows = [self._dataset_row(row) for row in record["records"]]
        for start in range(0, len(rows), DATASET_RECORDS_PER_UPSERT):
            store.upsert_dataset_records(dataset.dataset_id, rows[start:start + DATASET_RECORDS_PER_UPSERT])
        self.journal.record("evaluation_dataset", source_id, dataset.dataset_id, DONE, name=record["name"])
        self.outcome.count("evaluation_datasets")
        return True

    def _dataset_row(self, row: dict) -> dict:
        """An exported record as upsert input; a trace source points at the trace's copy when there is one."""
        copy = {k: v for k, v in row.items() if k in ("inputs", "expectations", "outputs", "tags", "source")}
        source = copy.get("source")
        trace_id = ((source or {}).get("source_data") or {}).get("trace_id") if isinstance(source, dict) else None
        target_trace = self.journal.target("trace", trace_id) if trace_id else None
        if target_trace:
            copy["source"] = {**source, "source_data": {**source["source_data"], "trace_id": target_trace}}
        return copy


class _EvaluationDatasetCreate(CreateGuard):
    """A retried ``datasets/create`` after a lost answer would leave a second copy: the create
    already carries the source dataset id tag, so look for the copy by it first."""

    def find_existing(self, transport, kwargs):
        import json

        source_id = json.loads((kwargs.get("json") or {}).get("tags") or "{}").get(DATASET_ID_TAG)
        if not source_id:
            return None
        found = transport.call_json("POST", "/api/3.0/mlflow/datasets/search", body={
            "filter_string": f"tags.{DATASET_ID_TAG} = {quoted(source_id)}", "max_results": 10})
        for dataset in found.get("datasets") or []:
            if any(t.get("key") == DATASET_ID_TAG and t.get("value") == source_id for t in dataset.get("tags") or []):
                return _json_response({"dataset": dataset})
        return None


register_guard("POST", "/api/3.0/mlflow/datasets/create", _EvaluationDatasetCreate())


def _no_link(*_args, **_kwargs) -> None:
    return None


def _held_inputs_outputs(run) -> tuple[set, set, set]:
    """(dataset (name, digest) pairs, model input ids, model output ids) a target run already holds."""
    if run is None:
        return set(), set(), set()
    inputs, outputs = run.inputs, getattr(run, "outputs", None)
    datasets = {(d.dataset.name, d.dataset.digest) for d in (inputs.dataset_inputs if inputs else [])}
    models = {m.model_id for m in (getattr(inputs, "model_inputs", None) or [])}
    produced = {m.model_id for m in (getattr(outputs, "model_outputs", None) or [])}
    return datasets, models, produced


def log_batch_bodies(metrics: list, params: list, tags: list):
    """log-batch bodies inside MLflow's limits: <= 1000 values, <= 100 params, <= 100 tags each."""
    params, tags, metrics = list(params), list(tags), list(metrics)
    while params or tags or metrics:
        batch_params, params = params[:PARAMS_TAGS_PER_BATCH], params[PARAMS_TAGS_PER_BATCH:]
        batch_tags, tags = tags[:PARAMS_TAGS_PER_BATCH], tags[PARAMS_TAGS_PER_BATCH:]
        room = ENTITIES_PER_BATCH - len(batch_params) - len(batch_tags)
        batch_metrics, metrics = metrics[:room], metrics[room:]
        yield {"metrics": batch_metrics, "params": batch_params, "tags": batch_tags}
