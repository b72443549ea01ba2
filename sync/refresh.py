"""Bringing objects the target already holds up to date, and (only with ``--delete``) mirroring deletions.

New objects go through the importer; what it does not do for an object it has already
imported is here: a run that was RUNNING gets the metric points, params, tags, dataset inputs
and artifact files it does not have yet (compared with the target, so a repeated refresh sends
nothing), then its status and end time; registered models and versions get description, tag and
stage edits. Everything written is a difference: nothing is logged twice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow_sync.artifacts import list_files
from mlflow_sync.export_format import ExportLayout, decode_float, read_json
from mlflow_sync.identity import DROPPED_TAGS
from mlflow_sync.journal import DONE
from mlflow_sync.migrate import Exporter, Importer, log_batch_bodies

log = logging.getLogger(__name__)

DELETED = "deleted"  # journal state of an object removed from the target by --delete


class Refresher:
    def __init__(self, importer: Importer, *, mirror_deletes: bool):
        self.importer = importer
        self.client = importer.client
        self.journal = importer.journal
        self.mirror_deletes = mirror_deletes
        self.target_reader = Exporter(importer.target, ExportLayout(Path("/nonexistent")), workers=1)

    # -- experiments -----------------------------------------------------------------------------

    def refresh_experiment(self, experiment) -> None:
        """Tag values changed on the source (the importer only adds tags an existing experiment lacks)."""
        target_id = self.journal.target("experiment", experiment.experiment_id)
        current = self.client.get_experiment(target_id)
        for key, value in experiment.tags.items():
            if key not in DROPPED_TAGS and current.tags.get(key) != value:
                self.client.set_experiment_tag(target_id, key, value)

    # -- runs ------------------------------------------------------------------------------------

    def refresh_run(self, run_dir: Path) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        record = read_json(run_dir / "run.json")
        info = record["info"]
        entry = self.journal.get("run", info["run_id"])
        target_id = entry["target"]
        current = self.client.get_run(target_id)
        if info["lifecycle_stage"] == "active" and current.info.lifecycle_stage == "deleted":
            self.client.restore_run(target_id)
        tags = [RunTag(k, v) for k, v in self.importer.run_tags(record).items() if current.data.tags.get(k) != v]
        params = [Param(k, v) for k, v in record["params"].items() if k not in current.data.params]
        metrics = [Metric(key, decode_float(value), timestamp, step)
                   for key, points in self._missing_points(record["metrics"], current).items()
                   for step, timestamp, value in points]
        for batch in log_batch_bodies(metrics, params, tags):
            self.client.log_batch(target_id, **batch)
        self._log_missing_datasets(target_id, record, current)
        self._upload_missing_artifacts(run_dir, record, entry["artifact_uri"])
        if (info["status"], info["end_time"]) != (current.info.status, current.info.end_time) and (
                info["status"] != "RUNNING" or info["end_time"]):
            self.client.set_terminated(target_id, status=info["status"], end_time=info["end_time"])
        if info["lifecycle_stage"] == "deleted" and current.info.lifecycle_stage != "deleted" and self.mirror_deletes:
            self.client.delete_run(target_id)
        self.journal.record("run", info["run_id"], target_id, DONE, artifact_uri=entry["artifact_uri"])
        return True

    def _missing_points(self, history: dict[str, list], current) -> dict[str, list]:
        """Source points the target run lacks; target histories are read only for keys whose last point differs."""
        latest = {m.key: (m.step, m.timestamp, repr(m.value)) for m in getattr(current.data, "_metric_objs", [])}
        stale = []
        for key, points in history.items():
            last = max(((s, t, repr(decode_float(v))) for s, t, v in points), default=None)
            if key not in latest or last != latest[key]:
                stale.append(key)
        if not stale:
            return {}
        have = self.target_reader.histories([current])[current.info.run_id]
        missing = {}
        for key in stale:
            present = {(s, t, repr(decode_float(v))) for s, t, v in have.get(key, [])}
            points = [p for p in history[key] if (p[0], p[1], repr(decode_float(p[2]))) not in present]
            if points:
                missing[key] = points
        return missing

    def _log_missing_datasets(self, target_id: str, record: dict, current) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        have = {d.dataset.digest for d in (current.inputs.dataset_inputs if current.inputs else [])}
        missing = [DatasetInput(Dataset(**d["dataset"]), tags=[InputTag(k, v) for k, v in d["tags"].items()])
                   for d in record["inputs"]["datasets"] if d["dataset"]["digest"] not in have]
        if missing:
            self.client.log_inputs(target_id, datasets=missing)

    def _upload_missing_artifacts(self, run_dir: Path, record: dict, artifact_uri: str) -> None:
        if not record["artifacts"]:
            return
        repo = self.importer.target.artifact_repository(artifact_uri)
        have = set(list_files(repo, None))
        for relative in record["artifacts"]:
            if relative not in have:
                parent = str(Path(relative).parent)
                repo.log_artifact(str(run_dir / "artifacts" / relative), None if parent == "." else parent)

    def delete_runs(self, source_ids: list[str]) -> int:
        """Mirror source deletions (``--delete`` only): the target copies are deleted (restorable, like the source's)."""
        from mlflow.exceptions import MlflowException

        deleted = 0
        for source_id in source_ids:
            target_id = self.journal.target("run", source_id)
            try:
                if self.client.get_run(target_id).info.lifecycle_stage != "deleted":
                    self.client.delete_run(target_id)
                    deleted += 1
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
        return deleted

    # -- registered models -----------------------------------------------------------------------

    def refresh_model(self, name: str, change: dict) -> None:
        """Edits the importer does not make to a model it already holds: description, tags, versions, aliases."""
        previous, state, record = change["previous"], change["state"], change["record"]
        if previous is None:
            return  # new: the importer created it whole
        if state["description"] != previous["description"]:
            self.client.update_registered_model(name, description=state["description"] or "")
        for key, value in state["tags"].items():
            if previous["tags"].get(key) != value:
                self.client.set_registered_model_tag(name, key, value)
        for version in record["versions"]:
            number = str(version["version"])
            old = previous["versions"].get(number)
            target = self.journal.target("model_version", f"{name}/{number}")
            if old is None or old == state["versions"][number] or target is None:
                continue
            self._refresh_version(name, target, version)
        if self.mirror_deletes:
            self._mirror_model_deletions(name, previous, state)

    def _refresh_version(self, name: str, target: str, version: dict) -> None:
        import warnings

        current = self.client.get_model_version(name, target)
        if (current.description or "") != (version["description"] or ""):
            self.client.update_model_version(name, target, description=version["description"] or "")
        for key, value in version["tags"].items():
            if current.tags.get(key) != value:
                self.client.set_model_version_tag(name, target, key, value)
        if version["current_stage"] not in (None, "None") and current.current_stage != version["current_stage"]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.client.transition_model_version_stage(name, target, version["current_stage"],
                                                           archive_existing_versions=False)

    def _mirror_model_deletions(self, name: str, previous: dict, state: dict) -> None:
        held = previous.get("held") or {}
        for alias in (set(previous["aliases"]) | set(held.get("aliases", {}))) - set(state["aliases"]):
            self.client.delete_registered_model_alias(name, alias)
        for key in (set(previous["tags"]) | set(held.get("tags", []))) - set(state["tags"]):
            self.client.delete_registered_model_tag(name, key)
        for number in (set(previous["versions"]) | set(held.get("versions", []))) - set(state["versions"]):
            target = self.journal.target("model_version", f"{name}/{number}")
            if target:
                self.client.delete_model_version(name, target)

    def delete_model(self, name: str, *, prompt: bool) -> None:
        """A registered model or prompt the source no longer has (``--delete`` only)."""
        from mlflow.exceptions import MlflowException

        try:
            (self.client.delete_prompt if prompt else self.client.delete_registered_model)(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        self.journal.record("prompt" if prompt else "registered_model", name, name, DELETED)

    def refresh_prompt(self, name: str, change: dict) -> None:
        previous, state = change["previous"], change["state"]
        if previous is None or not self.mirror_deletes:
            return
        held = previous.get("held") or {}
        for alias in (set(previous["aliases"]) | set(held.get("aliases", {}))) - set(state["aliases"]):
            self.client.delete_prompt_alias(name, alias)
