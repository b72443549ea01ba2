"""One-way incremental sync (``mlflow-sync sync``): a warm standby that costs what changed.

A cycle, under the lock of state.py:

1. find what changed on the source since the last successful cycle and export it into
   ``<work dir>/delta`` (changes.py);
2. import it with the migrate importer and the work directory's journal (``journal.jsonl``, the
   same source-id idempotence as ``import``): new objects are created once, however often a
   cycle is repeated or killed; objects the journal holds but that changed are marked for the
   importer again (experiments, registered models, prompts, logged models) or refreshed by
   difference (runs, model edits; refresh.py);
3. with ``--delete`` only, mirror deletions of runs, model versions, aliases and models;
4. save the state (atomically). A cycle that fails saves nothing, so the next one repeats it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow_sync import output
from mlflow_sync.config import DEFAULT_SYNC_OVERLAP_MINUTES
from mlflow_sync.connection import Server
from mlflow_sync.export_format import ExportLayout, write_json
from mlflow_sync.inventory import InventoryMismatch, carried_counts, count_target, take_source_inventory
from mlflow_sync.journal import CREATED, Journal
from mlflow_sync.migrate import Importer, ImportOptions, Outcome
from mlflow_sync.sync.changes import ChangeFinder, Delta
from mlflow_sync.sync.refresh import DELETED, Refresher
from mlflow_sync.sync.state import SyncLock, SyncState

log = logging.getLogger(__name__)

DELTA_DIR = "delta"
JOURNAL = "journal.jsonl"
REPORT = "sync-report.json"
STALE = "changed on the source"


def sync(source: Server, target: Server, work_dir: Path, *, mirror_deletes: bool = False, workers: int = 8,
         break_lock: bool = False, overlap_minutes: float = DEFAULT_SYNC_OVERLAP_MINUTES,
         skip_kinds: frozenset[str] = frozenset()) -> dict:
    """Run one sync cycle; returns its report (also written to ``sync-report.json``).

    ``overlap_minutes``: how far before the previous cycle's start this one looks for runs (clients
    whose clocks run behind); see changes.py for what the overlap costs."""
    started = time.monotonic()
    cycle_start_ms = int(time.time() * 1000)
    overlap_ms = _overlap_ms(overlap_minutes)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state = SyncState.load(work_dir, source.display, target.display)
    inventory = take_source_inventory(source, skip_kinds)
    with SyncLock(work_dir, target, break_lock=break_lock):
        journal = Journal(work_dir / JOURNAL)
        try:
            layout = ExportLayout(work_dir / DELTA_DIR)
            if layout.root.exists():
                shutil.rmtree(layout.root)  # a crashed cycle's delta: this cycle's window covers it again
            finder = _change_finder(source, layout, journal, state, mirror_deletes=mirror_deletes, workers=workers,
                                    overlap_minutes=overlap_minutes, skip_kinds=skip_kinds)
            delta = finder.find_and_export()
            outcome = _apply(delta, target, layout, journal, mirror_deletes=mirror_deletes, workers=workers)
            journal.write_id_map(work_dir)
        finally:
            journal.close()
        report = {
            "source": source.display, "target": target.display, "cycle": state.cycles + 1,
            "first": state.last_sync_ms is None, "changes": delta.counts(),
            "window": {"since_ms": finder.since, "overlap_minutes": overlap_minutes, "runs_read": len(delta.seen_runs),
                       "settled_runs_left_out": len(delta.excluded_runs)},
            "imported": dict(outcome.done), "already_there": dict(outcome.skipped),
            "failures": outcome.as_dict()["failures"], "notes": finder.exporter.notes,
            "seconds": round(time.monotonic() - started, 2),
            "requests": {"source": source.requests_by_endpoint(), "target": target.requests_by_endpoint()},
        }
        after, short = count_target(target, carried_counts(inventory, skip_kinds), expected_what="on the source")
        report["inventory"] = {"source": inventory.as_dict(), "target_after": after.as_dict(), "short": short}
        write_json(work_dir / REPORT, report)
        outcome.raise_if_failed(f"sync into {target.display} (report: {work_dir / REPORT}; run again to retry)")
        if short:  # the state does not advance: the next cycle looks at this window again
            hint = ("; runs started before this sync's window (clients whose clocks run behind) are only found with "
                    "a larger --overlap-minutes" if any(line.startswith("runs:") for line in short) else "")
            raise InventoryMismatch(f"after the sync the target {target.display} holds fewer objects than the "
                                    f"source: {'; '.join(short)}{hint} (report: {work_dir / REPORT})")
        _advance(state, delta, cycle_start_ms, overlap_ms).save(work_dir)
    return report


def plan_sync(source: Server, target: Server, work_dir: Path, *, mirror_deletes: bool = False, workers: int = 8,
              overlap_minutes: float = DEFAULT_SYNC_OVERLAP_MINUTES, skip_kinds: frozenset[str] = frozenset()) -> dict:
    """--dry-run of a sync: what the next cycle would carry, found exactly as a cycle finds it (the
    source is read, the changes are exported to a scratch directory that is then removed); nothing is
    written to the target or to the work dir, and no lock is taken."""
    state = SyncState.load(work_dir, source.display, target.display)
    take_source_inventory(source, skip_kinds)
    with tempfile.TemporaryDirectory(prefix="mlflow-sync-plan-") as scratch:
        if (work_dir / JOURNAL).exists():
            shutil.copy(work_dir / JOURNAL, Path(scratch) / JOURNAL)
        journal = Journal(Path(scratch) / JOURNAL)
        try:
            layout = ExportLayout(Path(scratch) / DELTA_DIR)
            finder = _change_finder(source, layout, journal, state, mirror_deletes=mirror_deletes, workers=workers,
                                    overlap_minutes=overlap_minutes, skip_kinds=skip_kinds)
            delta = finder.find_and_export()
            artifact_bytes = sum(p.stat().st_size for p in layout.root.rglob("*")
                                 if p.is_file() and "artifacts" in p.relative_to(layout.root).parts)
        finally:
            journal.close()
    return {"source": source.display, "target": target.display, "cycle": state.cycles + 1,
            "first": state.last_sync_ms is None, "changes": delta.counts(), "artifact_bytes": artifact_bytes,
            "window": {"since_ms": finder.since, "overlap_minutes": overlap_minutes}}


def _change_finder(source: Server, layout: ExportLayout, journal: Journal, state: SyncState, *, mirror_deletes: bool,
                   workers: int, overlap_minutes: float, skip_kinds: frozenset[str]) -> ChangeFinder:
    return ChangeFinder(source, layout, journal, state, mirror_deletes=mirror_deletes, workers=workers,
                        overlap_ms=_overlap_ms(overlap_minutes), carry_deleted_runs="deleted_runs" not in skip_kinds)


def _overlap_ms(overlap_minutes: float) -> int:
    return round(overlap_minutes * 60_000)


def _apply(delta: Delta, target: Server, layout: ExportLayout, journal: Journal, *, mirror_deletes: bool,
           workers: int) -> Outcome:
    importer = Importer(target, layout, journal, ImportOptions(workers=workers))
    refresher = Refresher(importer, mirror_deletes=mirror_deletes)
    for source_id in delta.changed_experiments:
        _rename_if_needed(delta, source_id, journal, target)
        journal.record("experiment", source_id, journal.target("experiment", source_id), STALE)
    for model_id in delta.changed_logged_models:
        journal.record("logged_model", model_id, journal.target("logged_model", model_id), CREATED)
    for name in delta.registered_models:
        if journal.is_done("registered_model", name):
            journal.record("registered_model", name, journal.target("registered_model", name), STALE)
    for name in delta.prompts:
        if journal.is_done("prompt", name):
            journal.record("prompt", name, name, STALE)
    for dataset_id in delta.evaluation_datasets:
        if journal.is_done("evaluation_dataset", dataset_id):
            journal.record("evaluation_dataset", dataset_id, journal.target("evaluation_dataset", dataset_id), STALE)
    _point_versions_at_known_runs(delta, importer)
    outcome = importer.run() if delta.to_import() else importer.outcome
    for experiment in delta.experiments:
        if experiment.experiment_id in delta.changed_experiments:
            outcome.attempt("experiment", experiment.name, experiment.experiment_id,
                            lambda e=experiment: refresher.refresh_experiment(e))
    if delta.changed_runs:
        with output.progress() as bar:
            task = bar.add_task("refresh changed runs", total=len(delta.changed_runs))

            def refresh(run) -> None:
                run_dir = layout.run_dir(run.info.experiment_id, run.info.run_id)
                if outcome.attempt("run", run.info.run_name or run.info.run_id, run.info.run_id,
                                   lambda: refresher.refresh_run(run_dir)):
                    outcome.count("refreshed_runs")
                bar.advance(task)

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(refresh, delta.changed_runs))
    for name, change in delta.registered_models.items():
        outcome.attempt("registered model", name, name, lambda n=name, c=change: refresher.refresh_model(n, c))
    for name, change in delta.prompts.items():
        outcome.attempt("prompt", name, name, lambda n=name, c=change: refresher.refresh_prompt(n, c))
    if mirror_deletes:
        outcome.count("deleted_runs", refresher.delete_runs(delta.deleted_runs))
        for prompts, names in _gone_models(delta, journal).items():
            for name in names:
                outcome.attempt("prompt" if prompts else "registered model", name, name,
                                lambda p=prompts, n=name: refresher.delete_model(n, prompt=p))
    return outcome


def _rename_if_needed(delta: Delta, source_id: str, journal: Journal, target: Server) -> None:
    """The importer finds experiments by name: a renamed source experiment is renamed on the target first."""
    experiment = next(e for e in delta.experiments if e.experiment_id == source_id)
    entry = journal.get("experiment", source_id)
    if entry.get("name") not in (None, experiment.name):
        target.client.rename_experiment(entry["target"], experiment.name)
        journal.record("experiment", source_id, entry["target"], STALE, name=experiment.name)


def _point_versions_at_known_runs(delta: Delta, importer: Importer) -> None:
    """A new version's source may lie under a run imported in an earlier cycle (not in this delta):
    tell the importer that run's source artifact URI, so it maps the version's source onto the target."""
    for run_id, artifact_uri in delta.source_artifact_uris.items():
        importer.run_sources.setdefault(run_id, {"info": {"artifact_uri": artifact_uri}})


def _gone_models(delta: Delta, journal: Journal) -> dict[bool, list[str]]:
    """Registered models and prompts the journal holds that the source no longer has (``--delete``)."""
    gone: dict[bool, list[str]] = {}
    for kind, names, prompts in (("registered_model", delta.model_names, False), ("prompt", delta.prompt_names, True)):
        missing = sorted(e["source"] for e in journal.entries(kind) if e["source"] not in names
                         and e["state"] != DELETED)
        if missing:
            gone[prompts] = missing
    return gone


def _advance(state: SyncState, delta: Delta, cycle_start_ms: int, overlap_ms: int) -> SyncState:
    # runs left out of this window were not read: keep what is known of them while a window can hold them
    carried = [r for r in delta.excluded_runs if r not in delta.seen_runs]
    settled = {**{r: state.settled_runs[r] for r in carried}, **delta.settled_runs}
    next_since = cycle_start_ms - overlap_ms
    state.settled_runs = {r: t for r, t in settled.items() if t >= next_since}
    state.run_fingerprints = {**{r: state.run_fingerprints[r] for r in carried if r in state.run_fingerprints},
                              **delta.seen_runs}
    state.last_sync_ms = cycle_start_ms
    state.cycles += 1
    state.running_runs = sorted(delta.running_runs)
    state.experiments = delta.experiment_fingerprints
    state.logged_models = delta.logged_models
    for name, change in delta.registered_models.items():
        state.registered_models[name] = change["state"]
    for name, change in delta.prompts.items():
        state.prompts[name] = change["state"]
    state.registered_models = {k: v for k, v in state.registered_models.items() if k in delta.model_names}
    state.prompts = {k: v for k, v in state.prompts.items() if k in delta.prompt_names}
    state.deleted_runs = sorted(set(state.deleted_runs) | set(delta.deleted_runs))
    return state
