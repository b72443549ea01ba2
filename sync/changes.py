"""What changed on the source since the last sync, found with server-side filters, and its delta export.

Requests at the source per cycle, whatever the size of the server: one experiments listing; per
100 experiments one ``runs/search`` for runs started since the last sync, one for runs ended
since, one logged-model and one trace search filtered by time; ids of runs that were RUNNING
(100 per search); one registered-model and one prompt listing (1,000 per page) compared by
fingerprint, and one model-version search by ``last_updated_timestamp``. Changed objects are
then exported by the migrate exporter (metric histories in bulk, artifacts) into ``delta/``.

The window starts ``overlap_ms`` (the ``--overlap-minutes`` setting) before the last sync began:
clients set start and end times with their own clocks, so a run from a client whose clock runs
behind can carry times older than the sync that missed it. What keeps the overlap cheap:

- the "ended since" search asks only for runs that started before the window (the "started
  since" search already returned the others), so no run is sent twice;
- both searches leave out, by id (``run_id NOT IN``, up to ``SETTLED_EXCLUSION_LIMIT`` ids), the
  runs a previous sync already read as finished and copied (``SyncState.settled_runs``). The
  overlap is not for these: that sync saw them after they finished, and later edits of finished
  runs are not followed anyway (see the limits below). A run the previous sync missed, or saw
  RUNNING, is not on that list and is read; what the searches return is compared by fingerprint,
  so a run copied before is refreshed by difference, never created twice. (``run_id NOT IN``
  came in the same MLflow change, mlflow/mlflow#6945, as the ``run_id IN`` the RUNNING-run search
  below already needs.)

Known limits: a run that finished before the last sync is not looked at again (MLflow keeps
no update time for runs), nor is a run whose start and end times both lie before the window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mlflow_sync.connection import Server
from mlflow_sync.export_format import ExportLayout, build_manifest, write_json
from mlflow_sync.journal import Journal
from mlflow_sync.migrate import (
    HISTORY_RUNS_PER_REQUEST,
    Exporter,
    logged_model_record,
    prompt_record,
    registered_model_record,
)
from mlflow_sync.paging import paged, quoted
from mlflow_sync.registry import aliases_of, registered_models
from mlflow_sync.sync.state import SyncState

log = logging.getLogger(__name__)

IDS_PER_SEARCH = 100
# run ids left out of one window search: with up to IDS_PER_SEARCH experiment ids this stays under
# the 999 bound variables of older SQLite builds behind a server
SETTLED_EXCLUSION_LIMIT = 800


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def run_fingerprint(run) -> str:
    data = run.data
    metrics = sorted((m.key, repr(m.value), m.timestamp, m.step) for m in getattr(data, "_metric_objs", []))
    datasets = sorted(d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else []))
    info = run.info
    return fingerprint(info.status, info.end_time, info.lifecycle_stage, info.run_name, data.params, data.tags,
                       metrics, datasets)


def model_state(model, versions) -> dict:
    """What the state keeps of a registered model or prompt, to see alias moves and edits next time."""
    aliases = {alias: str(version) for alias, version in aliases_of(model).items()}
    return {
        "fingerprint": fingerprint(model.description, dict(model.tags), aliases,
                                   getattr(model, "last_updated_timestamp", None)),
        "description": model.description, "tags": dict(model.tags), "aliases": aliases,
        "versions": {str(v["version"]): version_fingerprint(v) for v in versions},
    }


def held_on_target(previous: dict, state: dict) -> dict | None:
    """Aliases, versions and tags deleted on the source but kept on the target (no ``--delete``), so a
    later ``--delete`` run still knows to remove them."""
    held = previous.get("held") or {}
    aliases = {**held.get("aliases", {}), **previous["aliases"]}
    kept = {
        "aliases": {a: v for a, v in aliases.items() if a not in state["aliases"]},
        "versions": sorted((set(held.get("versions", [])) | set(previous["versions"])) - set(state["versions"])),
        "tags": sorted((set(held.get("tags", [])) | set(previous["tags"])) - set(state["tags"])),
    }
    return kept if any(kept.values()) else None


def version_fingerprint(version: dict) -> str:
    return fingerprint(version.get("description"), version.get("tags"), version.get("current_stage"),
                       version.get("status"), version.get("template"))


@dataclass
class Delta:
    """The changes of one cycle, as written to the delta export directory."""

    experiments: list = field(default_factory=list)  # every source experiment (cheap: one listing)
    experiment_fingerprints: dict[str, str] = field(default_factory=dict)
    new_experiments: list[str] = field(default_factory=list)
    changed_experiments: list[str] = field(default_factory=list)  # journaled ids whose tags/name/stage changed
    new_runs: list = field(default_factory=list)
    changed_runs: list = field(default_factory=list)  # journaled runs whose fingerprint changed
    seen_runs: dict[str, str] = field(default_factory=dict)  # run id -> fingerprint of every candidate
    running_runs: list[str] = field(default_factory=list)
    settled_runs: dict[str, int] = field(default_factory=dict)  # read finished: id -> latest of start/end time
    excluded_runs: list[str] = field(default_factory=list)  # settled before, left out of this window's searches
    deleted_runs: list[str] = field(default_factory=list)  # source ids newly deleted (collected with --delete)
    logged_models: dict[str, str] = field(default_factory=dict)  # new or changed: id -> fingerprint
    changed_logged_models: list[str] = field(default_factory=list)
    unchanged_logged_models: set[str] = field(default_factory=set)
    traces: int = 0
    registered_models: dict[str, dict] = field(default_factory=dict)  # changed: name -> {"record", "state"}
    prompts: dict[str, dict] = field(default_factory=dict)
    evaluation_datasets: list[str] = field(default_factory=list)  # source ids of new or updated datasets
    source_artifact_uris: dict[str, str] = field(default_factory=dict)  # run id -> its source artifact URI
    model_names: set[str] = field(default_factory=set)  # every registered model on the source
    prompt_names: set[str] = field(default_factory=set)

    def to_import(self) -> bool:
        """Does the importer have anything to do (new objects, or journaled ones marked changed)?"""
        return bool(self.new_experiments or self.changed_experiments or self.new_runs or self.traces
                    or self.registered_models or self.prompts or self.evaluation_datasets
                    or set(self.logged_models) - self.unchanged_logged_models)

    def counts(self) -> dict:
        return {"new_runs": len(self.new_runs), "changed_runs": len(self.changed_runs),
                "changed_experiments": len(self.changed_experiments), "logged_models": len(self.logged_models),
                "traces": self.traces, "registered_models": len(self.registered_models),
                "prompts": len(self.prompts), "evaluation_datasets": len(self.evaluation_datasets),
                "deleted_runs": len(self.deleted_runs)}


class ChangeFinder:
    """Reads the source's changes since ``state`` and writes them as an export into ``layout``."""

    def __init__(self, source: Server, layout: ExportLayout, journal: Journal, state: SyncState, *,
                 mirror_deletes: bool, workers: int, overlap_ms: int, carry_deleted_runs: bool = True):
        self.source = source
        self.carry_deleted_runs = carry_deleted_runs  # deleted runs are copied (as deleted), as snapshots do
        self.client = source.client
        self.layout = layout
        self.journal = journal
        self.state = state
        self.mirror_deletes = mirror_deletes
        self.workers = workers
        self.exporter = Exporter(source, layout, workers=workers)
        self.since = None if state.last_sync_ms is None else state.last_sync_ms - overlap_ms
        self.delta = Delta()
        self.delta.excluded_runs = self._settled_in_window()

    def find_and_export(self) -> Delta:
        from mlflow.entities import ViewType

        capabilities = self.source.capabilities()
        self.layout.root.mkdir(parents=True, exist_ok=True)
        experiments = list(paged(lambda t: self.client.search_experiments(
            view_type=ViewType.ALL, max_results=1000, page_token=t)))
        self._experiments(experiments)
        live = [e.experiment_id for e in self.delta.experiments if e.lifecycle_stage == "active"]
        chunks = [live[i:i + IDS_PER_SEARCH] for i in range(0, len(live), IDS_PER_SEARCH)]
        for chunk in chunks:
            self._runs(chunk)
            if capabilities.logged_models:
                self._logged_models(chunk)
            if capabilities.traces:
                self._traces(chunk)
        self._running_runs()
        if self.mirror_deletes:
            self._deleted_runs(chunks)
        self._export_runs(self.delta.new_runs + self.delta.changed_runs)
        self._registered_models(is_prompt=False)
        if capabilities.prompts:
            self._registered_models(is_prompt=True)
        if capabilities.evaluation_datasets:
            self._evaluation_datasets(experiments)
        build_manifest(self.layout, source={"server": self.source.display, "kind": self.source.spec.kind,
                                            "mlflow_version": capabilities.version},
                       counts=self.delta.counts(), options={"sync_since_ms": self.since})
        return self.delta

    def _evaluation_datasets(self, experiments) -> None:
        """Datasets updated since the window opened, or never carried: exported whole; the importer
        upserts their records (records deleted on the source stay on the target)."""
        changed = [(dataset, experiment_ids) for dataset, experiment_ids in self.exporter.selected_datasets(experiments)
                   if self.since is None or (dataset.last_update_time or 0) >= self.since
                   or not self.journal.is_done("evaluation_dataset", dataset.dataset_id)]
        self.exporter.export_evaluation_datasets(changed)
        self.exporter.outcome.raise_if_failed(f"export of changed evaluation datasets from {self.source.display}")
        self.delta.evaluation_datasets = [dataset.dataset_id for dataset, _ in changed]

    # -- experiments -----------------------------------------------------------------------------

    def _experiments(self, experiments) -> None:
        for experiment in experiments:
            source_id = experiment.experiment_id
            journaled = self.journal.is_done("experiment", source_id)
            if experiment.lifecycle_stage == "deleted" and not journaled:
                continue  # never seen active: nothing to copy (and nothing to delete)
            fp = fingerprint(experiment.name, experiment.lifecycle_stage, dict(experiment.tags))
            self.delta.experiment_fingerprints[source_id] = fp
            self.delta.experiments.append(experiment)
            self.exporter.export_experiment(experiment)
            if not journaled:
                self.delta.new_experiments.append(source_id)
            elif self.state.experiments.get(source_id) not in (None, fp):
                if experiment.lifecycle_stage == "deleted" and not self.mirror_deletes:
                    continue
                self.delta.changed_experiments.append(source_id)

    # -- runs ------------------------------------------------------------------------------------

    def _search_runs(self, experiment_ids: list[str], filter_string: str, view=None):
        from mlflow.entities import ViewType

        default = ViewType.ALL if self.carry_deleted_runs else ViewType.ACTIVE_ONLY
        return paged(lambda t: self.client.search_runs(
            experiment_ids, filter_string=filter_string, run_view_type=view or default,
            max_results=1000, page_token=t))

    def _runs(self, experiment_ids: list[str]) -> None:
        if self.since is None:
            self._consider(self._search_runs(experiment_ids, ""))
            return
        self._consider(self._window_search(experiment_ids, f"attributes.start_time >= {self.since}"))
        self._consider(self._window_search(
            experiment_ids, f"attributes.end_time >= {self.since} AND attributes.start_time < {self.since}"))

    def _settled_in_window(self) -> list[str]:
        """Runs a previous sync read finished and copied whose times fall in this window, latest first."""
        if self.since is None:
            return []
        settled = [(t, run_id) for run_id, t in self.state.settled_runs.items()
                   if t >= self.since and self.journal.is_done("run", run_id)]
        return [run_id for _, run_id in sorted(settled, reverse=True)[:SETTLED_EXCLUSION_LIMIT]]

    def _window_search(self, experiment_ids: list[str], condition: str):
        if self.delta.excluded_runs:
            ids = ", ".join(f"'{r}'" for r in self.delta.excluded_runs)
            condition = f"{condition} AND attributes.run_id NOT IN ({ids})"
        return self._search_runs(experiment_ids, condition)

    def _running_runs(self) -> None:
        from mlflow.entities import ViewType

        pending = [r for r in self.state.running_runs if r not in self.delta.seen_runs]
        experiments = [e.experiment_id for e in self.delta.experiments]
        for start in range(0, len(pending), IDS_PER_SEARCH):
            ids = ", ".join(f"'{r}'" for r in pending[start:start + IDS_PER_SEARCH])
            for chunk in range(0, len(experiments), IDS_PER_SEARCH):
                self._consider(self._search_runs(experiments[chunk:chunk + IDS_PER_SEARCH],
                                                 f"attributes.run_id IN ({ids})", ViewType.ALL))

    def _consider(self, runs) -> None:
        for run in runs:
            run_id = run.info.run_id
            if run_id in self.delta.seen_runs:
                continue
            fp = run_fingerprint(run)
            self.delta.seen_runs[run_id] = fp
            if run.info.status == "RUNNING":
                self.delta.running_runs.append(run_id)
            elif run.info.lifecycle_stage == "active":
                self.delta.settled_runs[run_id] = max(run.info.start_time or 0, run.info.end_time or 0)
            if not self.journal.is_done("run", run_id):
                if run.info.lifecycle_stage == "active" or self.carry_deleted_runs:
                    self.delta.new_runs.append(run)
            elif self.state.run_fingerprints.get(run_id) != fp:
                self.delta.changed_runs.append(run)

    def _deleted_runs(self, chunks: list[list[str]]) -> None:
        from mlflow.entities import ViewType

        already = set(self.state.deleted_runs)
        for chunk in chunks:
            for run in self._search_runs(chunk, "", ViewType.DELETED_ONLY):
                run_id = run.info.run_id
                if run_id not in already and self.journal.get("run", run_id) is not None:
                    self.delta.deleted_runs.append(run_id)

    def _export_runs(self, runs) -> None:
        for start in range(0, len(runs), HISTORY_RUNS_PER_REQUEST):
            chunk = runs[start:start + HISTORY_RUNS_PER_REQUEST]
            histories = self.exporter.histories(chunk)
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(lambda run, h=histories: self.exporter.export_run(run, h[run.info.run_id]), chunk))
        self.exporter.outcome.raise_if_failed(f"export of changed runs from {self.source.display}")

    # -- logged models and traces ----------------------------------------------------------------

    def _logged_models(self, experiment_ids: list[str]) -> None:
        condition = None if self.since is None else f"last_updated_timestamp >= {self.since}"
        for model in paged(lambda t: self.client.search_logged_models(
                experiment_ids=experiment_ids, filter_string=condition, max_results=100, page_token=t)):
            fp = fingerprint(str(model.status), dict(model.tags), dict(model.params), model.last_updated_timestamp)
            done = self.journal.is_done("logged_model", model.model_id)
            if done and self.state.logged_models.get(model.model_id) == fp:
                self.delta.logged_models[model.model_id] = fp
                self.delta.unchanged_logged_models.add(model.model_id)
                continue
            if done:
                self.delta.changed_logged_models.append(model.model_id)
            model_dir = self.layout.logged_model_dir(model.model_id)
            artifacts = self.exporter.download(model.artifact_location, model_dir / "artifacts")
            write_json(model_dir / "logged_model.json", logged_model_record(model, artifacts))
            self.delta.logged_models[model.model_id] = fp

    def _traces(self, experiment_ids: list[str]) -> None:
        """New traces, read as the exporter reads them (spans of artifact-backed traces included, a
        trace whose spans the source lacks carried without them and noted)."""
        chosen = set(experiment_ids)
        self.delta.traces += self.exporter.export_traces(
            [e for e in self.delta.experiments if e.experiment_id in chosen],
            condition=None if self.since is None else f"trace.timestamp_ms >= {self.since}",
            skip=lambda trace_id: self.journal.is_done("trace", trace_id))

    # -- registered models and prompts -----------------------------------------------------------

    def _recently_updated_models(self) -> set[str]:
        """Models with a version edited since the window (a version tag does not touch its model)."""
        if self.since is None:
            return set()
        from mlflow.exceptions import MlflowException

        try:
            return {v.name for v in paged(lambda t: self.client.search_model_versions(
                f"last_updated_timestamp >= {self.since}", max_results=10000, page_token=t))}
        except MlflowException as exc:  # an older server: fingerprints of the models only
            log.info("the source cannot search model versions by update time (%s)", exc.message)
            return set()

    def _registered_models(self, *, is_prompt: bool) -> None:
        known = self.state.prompts if is_prompt else self.state.registered_models
        changed = self.delta.prompts if is_prompt else self.delta.registered_models
        names = self.delta.prompt_names if is_prompt else self.delta.model_names
        touched = set() if is_prompt else self._recently_updated_models()
        for model in registered_models(self.client, prompts=is_prompt):
            names.add(model.name)
            previous = known.get(model.name)
            quick = model_state(model, [])
            pending_deletions = self.mirror_deletes and (previous or {}).get("held")
            if previous and previous["fingerprint"] == quick["fingerprint"] and model.name not in touched \
                    and not pending_deletions:
                continue
            if is_prompt:
                record = prompt_record(model, self.exporter.prompt_versions(model))
                path = self.layout.prompt_file(model.name)
            else:
                versions = paged(lambda t, name=model.name: self.client.search_model_versions(
                    f"name = {quoted(name)}", max_results=10000, page_token=t))
                record = registered_model_record(model, versions)
                path = self.layout.registered_model_file(model.name)
            state = model_state(model, record["versions"])
            if previous and not self.mirror_deletes:
                state["held"] = held_on_target(previous, state)
            if previous and previous["fingerprint"] == state["fingerprint"] and previous["versions"] == state["versions"] \
                    and not pending_deletions:
                continue
            if not is_prompt:
                self._remember_version_runs(model.name, record["versions"])
            old_aliases = (previous or {}).get("aliases", {})
            # only aliases that are new or moved: the importer sets every alias of the record
            record["aliases"] = {a: v for a, v in record["aliases"].items() if old_aliases.get(a) != str(v)}
            write_json(path, record)
            changed[model.name] = {"record": record, "state": state, "previous": previous}

    def _remember_version_runs(self, name: str, versions: list[dict]) -> None:
        """Source artifact URIs of runs behind new versions whose source is a plain artifact path."""
        for version in versions:
            run_id = version["run_id"]
            if (run_id and not version["source"].startswith(("runs:/", "models:/"))
                    and not self.journal.is_done("model_version", f"{name}/{version['version']}")
                    and run_id not in self.delta.source_artifact_uris):
                self.delta.source_artifact_uris[run_id] = self.client.get_run(run_id).info.artifact_uri
