"""Point-in-time snapshots of a tracking server: create, list, verify, restore, prune.

A snapshot is a full export (see migrate/exporter.py) whose files are stored content-addressed by
sha256 (see snapshot_store.py), plus one manifest per snapshot naming every file, its sha256
and size, the export's own manifest, the counts, and the client and server versions. A new
snapshot uploads only the blobs the store does not hold yet, so unchanged runs, artifacts and
models cost no storage; the source is still read in full (a snapshot is a complete copy).

The manifest carries a checksum of its own content. ``verify`` recomputes every blob's sha256
and names missing, corrupt and extra files; ``restore`` refuses a snapshot that fails it unless
forced, rebuilds the export directory from the blobs and imports it with the importer (so an
interrupted restore resumes with the same work directory).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mlflow_sync import migrate
from mlflow_sync.connection import Server
from mlflow_sync.errors import MismatchError, UsageError
from mlflow_sync.export_format import ExportLayout, client_versions, load_manifest, sha256_of, write_json
from mlflow_sync.migrate import ExportFilters, ImportOptions
from mlflow_sync.paging import paged
from mlflow_sync.registry import all_registered_models, is_prompt
from mlflow_sync.sync.snapshot_store import BLOBS, SNAPSHOTS, blob_key, open_store, snapshot_key

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "mlflow-sync-snapshot"
SNAPSHOT_FORMAT_VERSION = 1
STAGING_PREFIX = "mlflow-sync-snapshot-staging-"
STAGING_LOCK = ".lock"


def _checksum(snapshot: dict) -> str:
    body = {k: v for k, v in snapshot.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _new_id(existing: set[str]) -> str:
    base = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in existing:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _held(listing: dict[str, int], info: dict) -> bool:
    """Does the store (its ``listing``) hold the blob of this manifest entry, at its size?"""
    return listing.get(blob_key(info["sha256"])) == info["size"]


def snapshot_ids(listing: dict[str, int]) -> list[str]:
    """Snapshot ids in a store listing, oldest first (ids sort by time)."""
    prefix = f"{SNAPSHOTS}/"
    return sorted(k[len(prefix):-len(".json")] for k in listing if k.startswith(prefix) and k.endswith(".json")
                  and "/" not in k[len(prefix):])


# -- create --------------------------------------------------------------------------------------


def create_snapshot(source: Server, to: str, *, workers: int, staging: Path | None = None) -> dict:
    """Export the source in full and store what the snapshot store does not hold yet; returns the summary."""

    started = time.monotonic()
    store = open_store(to)
    listing = store.listing()
    ids = snapshot_ids(listing)
    with _staging_directory(staging) as tmp:
        export_dir = tmp / "export"
        migrate.export(source, str(export_dir), filters=ExportFilters(), workers=workers)
        export_manifest = load_manifest(ExportLayout(export_dir))
        stored_files = stored_bytes = 0
        for relative, info in export_manifest["files"].items():
            if _held(listing, info):
                continue
            key = blob_key(info["sha256"])
            store.put_file(export_dir / relative, key)
            listing[key] = info["size"]
            stored_files += 1
            stored_bytes += info["size"]
    snapshot = {
        "format": SNAPSHOT_FORMAT,
        "format_version": SNAPSHOT_FORMAT_VERSION,
        "id": _new_id(set(ids)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "previous": ids[-1] if ids else None,
        "client": client_versions(),
        "server": {"display": source.display, "kind": source.spec.kind,
                   "mlflow_version": export_manifest["source"].get("mlflow_version")},
        "counts": export_manifest["counts"],
        "total_bytes": export_manifest["total_bytes"],
        "files": len(export_manifest["files"]),
        "stored_files": stored_files,
        "stored_bytes": stored_bytes,
        "export_manifest": export_manifest,
    }
    snapshot["checksum"] = _checksum(snapshot)
    store.write_json(snapshot_key(snapshot["id"]), snapshot)  # last: a snapshot exists once its blobs do
    summary = _summary(snapshot)
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["location"] = store.display(snapshot_key(snapshot["id"]))
    return summary


@contextmanager
def _staging_directory(parent: Path | None):
    """A private directory for the full export, locked while a create uses it.

    A killed create leaves its export behind (a full copy of the source); the next create on this
    machine removes every staging directory whose lock nobody holds any more.
    """
    root = Path(parent or tempfile.gettempdir())
    for stale in root.glob(f"{STAGING_PREFIX}*"):
        _remove_if_abandoned(stale)
    path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        with open(path / f"{STAGING_LOCK}.new", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            os.replace(path / f"{STAGING_LOCK}.new", path / STAGING_LOCK)  # visible to others only once held
            yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_if_abandoned(directory: Path) -> None:
    try:
        lock = open(directory / STAGING_LOCK)
    except OSError:
        return  # not ours, or being set up right now
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a running create
        log.info("removing %s, left by a snapshot create that did not finish", directory)
        try:
            shutil.rmtree(directory)
        except OSError as exc:
            log.warning("could not remove %s, left by a snapshot create that did not finish: %s", directory, exc)


def _summary(snapshot: dict) -> dict:
    return {key: snapshot.get(key) for key in ("id", "created", "counts", "total_bytes", "files", "stored_files",
                                               "stored_bytes", "previous")} | {
        "client_mlflow": snapshot["client"].get("mlflow"), "mlflow_sync": snapshot["client"].get("mlflow_sync"),
        "server_mlflow": snapshot["server"].get("mlflow_version"), "server": snapshot["server"].get("display")}


# -- list ----------------------------------------------------------------------------------------


def list_snapshots(location: str) -> list[dict]:
    store = open_store(location)
    return [_summary(_load(store, snapshot_id)) for snapshot_id in snapshot_ids(store.listing())]


def _load(store, snapshot_id: str) -> dict:
    try:
        snapshot = store.read_json(snapshot_key(snapshot_id))
    except (OSError, ValueError) as exc:
        raise MismatchError(f"snapshot {snapshot_id} at {store.uri}: manifest unreadable ({exc})") from exc
    if snapshot.get("format") != SNAPSHOT_FORMAT:
        raise UsageError(f"{store.display(snapshot_key(snapshot_id))} is not an mlflow-sync snapshot manifest")
    if snapshot.get("format_version", 0) > SNAPSHOT_FORMAT_VERSION:
        raise UsageError(f"snapshot {snapshot_id} uses format {snapshot['format_version']}; upgrade mlflow-sync")
    return snapshot


def _resolve(store, listing: dict[str, int], snapshot_id: str | None) -> str:
    ids = snapshot_ids(listing)
    if not ids:
        raise UsageError(f"no snapshot at {store.uri}")
    if snapshot_id is None or snapshot_id == "latest":
        return ids[-1]
    if snapshot_id not in ids:
        raise UsageError(f"no snapshot {snapshot_id!r} at {store.uri} (have: {', '.join(ids[-5:])})")
    return snapshot_id


# -- verify --------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    location: str
    snapshots: list[str]
    checked_files: int = 0
    checked_bytes: int = 0
    seconds: float = 0.0
    problems: list[dict] = field(default_factory=list)  # {"path", "problem", "in"}

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok,
                "mb_per_second": round(self.checked_bytes / 1e6 / self.seconds, 1) if self.seconds else None}

    def raise_if_failed(self) -> None:
        if self.problems:
            named = "; ".join(f"{p['path']} {p['problem']}" for p in self.problems[:3])
            more = f" and {len(self.problems) - 3} more" if len(self.problems) > 3 else ""
            raise MismatchError(f"snapshot verification failed at {self.location}: {len(self.problems)} "
                                f"problem(s): {named}{more}")


def verify_snapshots(location: str, snapshot_id: str | None = None, *, workers: int = 4) -> VerifyReport:
    """Recompute every checksum against the manifests; extra files are reported when checking them all."""
    started = time.monotonic()
    store = open_store(location)
    listing = store.listing()
    ids = snapshot_ids(listing) if snapshot_id is None else [_resolve(store, listing, snapshot_id)]
    if not ids:
        raise UsageError(f"no snapshot at {store.uri}")
    report = VerifyReport(store.uri, ids)
    wanted: dict[str, dict] = {}  # blob key -> {"size", "sha256", "in": [snapshot:path]}
    for each in ids:
        try:
            snapshot = _load(store, each)
        except MismatchError as exc:
            report.problems.append({"path": snapshot_key(each), "problem": "unreadable", "in": [str(exc)]})
            continue
        if snapshot.get("checksum") != _checksum(snapshot):
            report.problems.append({"path": store.display(snapshot_key(each)),
                                    "problem": "corrupt (manifest checksum differs)", "in": [each]})
        for relative, info in snapshot["export_manifest"]["files"].items():
            entry = wanted.setdefault(blob_key(info["sha256"]), {"size": info["size"], "sha256": info["sha256"],
                                                                  "in": []})
            entry["in"].append(f"{each}:{relative}")

    def check(item: tuple[str, dict]) -> dict | None:
        key, entry = item
        where = {"path": f"{store.display(key)} ({entry['in'][0].split(':', 1)[1]})", "blob": key, "in": entry["in"]}
        if key not in listing:
            return {**where, "problem": "missing"}
        if listing[key] != entry["size"]:
            return {**where, "problem": f"corrupt (size {listing[key]}, expected {entry['size']})"}
        if store.sha256(key) != entry["sha256"]:
            return {**where, "problem": "corrupt (sha256 differs)"}
        return None

    with ThreadPoolExecutor(workers) as pool:
        for problem in pool.map(check, sorted(wanted.items())):
            if problem:
                report.problems.append(problem)
    report.checked_files = len(wanted)
    report.checked_bytes = sum(e["size"] for e in wanted.values())
    if snapshot_id is None:
        known = set(wanted) | {snapshot_key(i) for i in ids}
        for key in sorted(set(listing) - known):
            report.problems.append({"path": store.display(key), "problem": "extra (not in any manifest)", "in": []})
        for key, _ in store.incomplete_uploads():
            report.problems.append({"path": store.display(key), "in": [],
                                    "problem": "incomplete upload (an interrupted create; prune removes it)"})
    report.seconds = round(time.monotonic() - started, 3)
    return report


# -- restore -------------------------------------------------------------------------------------


def plan_snapshot(source: Server, location: str) -> dict:
    """--dry-run of ``snapshot create``: what the source holds (counts, artifact bytes), and how many
    snapshots the repository holds already; nothing is read beyond that, nothing written."""
    plan = migrate.export_plan(source, ExportFilters())
    store = open_store(location)
    return {"source": source.display, "repo": store.uri, "counts": plan["counts"], "bytes": plan["bytes"],
            "source_lacks": plan["source_lacks"], "snapshots_in_repo": len(snapshot_ids(store.listing()))}


def plan_restore(location: str, target: Server, work_dir: Path, *, snapshot_id: str | None = None) -> dict:
    """--dry-run of ``snapshot restore``: the snapshot it would restore (its counts, bytes, and files
    whose blob the repository lacks or holds at another size), refused as the restore would refuse
    it (a damaged manifest, a target that is not empty); nothing is written."""
    store, snapshot, listing = open_snapshot(location, snapshot_id)
    if not (work_dir / migrate.JOURNAL).exists():
        _require_empty(target)
    files = snapshot["export_manifest"]["files"]
    absent = sorted(relative for relative, info in files.items() if not _held(listing, info))
    return {"snapshot": snapshot["id"], "repo": store.uri, "target": target.display, "counts": snapshot["counts"],
            "bytes": snapshot["total_bytes"], "files": len(files),
            "files_missing_from_repo": absent, "resumes": (work_dir / migrate.JOURNAL).exists()}


def restore_snapshot(location: str, target: Server, work_dir: Path, *, snapshot_id: str | None = None,
                     force: bool = False, workers: int = 8, validate_against: Server | None = None) -> dict:
    """Verify, rebuild the export from the blobs, import it into an empty target, then check it."""

    store = open_store(location)
    listing = store.listing()
    chosen = _resolve(store, listing, snapshot_id)
    report = verify_snapshots(location, chosen, workers=workers)
    if not report.ok and not force:
        first = report.problems[0]
        raise MismatchError(f"snapshot {chosen} fails verification ({len(report.problems)} problem(s); first: "
                            f"{first['path']} {first['problem']}): not restoring it (--force restores what is intact)")
    work_dir.mkdir(parents=True, exist_ok=True)
    if not (work_dir / migrate.JOURNAL).exists():
        _require_empty(target)
    snapshot = _load(store, chosen)
    export_dir = work_dir / f"snapshot-{chosen}"
    damaged = {p["blob"] for p in report.problems if "blob" in p}
    manifest = materialize(store, snapshot, export_dir, leave_out=damaged, workers=workers)
    result = migrate.import_export(target, str(export_dir), work_dir, options=ImportOptions(workers=workers))
    summary = {"snapshot": chosen, "target": target.display, "imported": result.counts["imported"],
               "already_there": result.counts["already_there"], "seconds": result.seconds,
               "skipped_damaged_files": sorted(set(snapshot["export_manifest"]["files"]) - set(manifest["files"])),
               "server_mlflow_of_snapshot": snapshot["server"].get("mlflow_version"),
               "target_mlflow": target.capabilities().version}
    summary["count_check"] = _count_check(target, snapshot["counts"])
    if validate_against is not None:
        summary["validation"] = migrate.validate_target(validate_against, target, work_dir,
                                                        workers=workers)
    write_json(work_dir / "restore-report.json", summary)
    problems = summary["count_check"]["differences"]
    if problems:
        raise MismatchError(f"restored target differs from snapshot {chosen}: {'; '.join(problems[:3])} "
                            f"(report: {work_dir / 'restore-report.json'})")
    if validate_against is not None and not summary["validation"]["ok"]:
        raise MismatchError(f"validation found differences: {summary['validation']['summary']} "
                            f"(report: {summary['validation']['html']})")
    return summary


def open_snapshot(location: str, snapshot_id: str | None = None) -> tuple:
    """(store, manifest, store listing) of one snapshot, the latest by default.

    A manifest failing its own checksum is refused: nothing it names could be trusted.
    """
    store = open_store(location)
    listing = store.listing()
    chosen = _resolve(store, listing, snapshot_id)
    snapshot = _load(store, chosen)
    if snapshot.get("checksum") != _checksum(snapshot):
        raise MismatchError(f"snapshot {chosen} at {store.uri} is damaged: its manifest checksum differs "
                            "(see `mlflow-sync snapshot verify`)")
    return store, snapshot, listing


def rebuild_export(location: str, snapshot_id: str | None, local: Path, *, keep=lambda relative: True,
                   workers: int = 4) -> str:
    """Rebuild the export of a snapshot in ``local``, only the files ``keep`` selects, each checked
    against its sha256; a damaged snapshot raises. Returns the snapshot id (validate reads snapshots so)."""
    store, snapshot, listing = open_snapshot(location, snapshot_id)
    files = {relative: info for relative, info in snapshot["export_manifest"]["files"].items() if keep(relative)}
    absent = {blob_key(info["sha256"]) for info in files.values() if not _held(listing, info)}
    selected = {**snapshot, "export_manifest": {**snapshot["export_manifest"], "files": files}}
    rebuilt = materialize(store, selected, local, leave_out=absent, workers=workers)
    damaged = sorted(set(files) - set(rebuilt["files"]))
    if damaged:
        raise MismatchError(f"snapshot {snapshot['id']} at {store.uri} is damaged: {len(damaged)} file(s) missing or "
                            f"failing their checksum (first: {damaged[0]}); not validating against it (see "
                            "`mlflow-sync snapshot verify`)")
    return snapshot["id"]


def materialize(store, snapshot: dict, export_dir: Path, *, leave_out: set[str] = frozenset(),
                workers: int = 1) -> dict:
    """Rebuild the export directory from the blobs, checking each file's size and sha256 as it lands.

    Blobs in ``leave_out`` (known damaged: a forced restore) and files that fail the check are left
    out of the rebuilt manifest, so comparing it with the snapshot's names every file not restored.
    """
    manifest = dict(snapshot["export_manifest"])

    def fetch(item: tuple[str, dict]) -> bool:
        relative, info = item
        key = blob_key(info["sha256"])
        if key in leave_out:
            log.warning("leaving out damaged file %s", relative)
            return False
        path = export_dir / relative
        if path.is_file() and path.stat().st_size == info["size"] and sha256_of(path) == info["sha256"]:
            return True
        store.get_file(key, path)
        if path.stat().st_size == info["size"] and sha256_of(path) == info["sha256"]:
            return True
        path.unlink()
        log.warning("leaving out %s: blob %s fails its checksum", relative, store.display(key))
        return False

    items = sorted(manifest["files"].items())
    with ThreadPoolExecutor(max(1, workers)) as pool:
        kept = list(pool.map(fetch, items))
    manifest["files"] = {relative: info for (relative, info), ok in zip(items, kept) if ok}
    write_json(export_dir / "manifest.json", manifest)
    return manifest


def _require_empty(target: Server) -> None:
    from mlflow.entities import ViewType

    client = target.client
    experiments = client.search_experiments(view_type=ViewType.ALL, max_results=10)
    used = [e.name for e in experiments if e.experiment_id != "0" or client.search_runs(
        ["0"], run_view_type=ViewType.ALL, max_results=1)]
    models = list(itertools.islice(all_registered_models(client), 1))
    if used or models:
        what = f"experiment {used[0]!r}" if used else f"registered model {models[0].name!r}"
        raise UsageError(f"the target {target.display} is not empty ({what}): restore into an empty server, or "
                         "resume an interrupted restore with its --work-dir")


def _count_check(target: Server, expected: dict) -> dict:
    """Objects per kind on the target vs the snapshot's counts (the target may hold more only when reused)."""
    from mlflow.entities import ViewType

    client = target.client
    experiments = list(paged(lambda t: client.search_experiments(view_type=ViewType.ALL, max_results=1000,
                                                                  page_token=t)))
    runs = 0
    for start in range(0, len(experiments), 100):
        ids = [e.experiment_id for e in experiments[start:start + 100]]
        runs += sum(1 for _ in paged(lambda t, ids=ids: client.search_runs(
            ids, run_view_type=ViewType.ALL, max_results=1000, page_token=t)))
    models = [model for model in all_registered_models(client) if not is_prompt(model)]
    found = {"experiments": len(experiments), "runs": runs, "registered_models": len(models)}
    wanted = {kind: expected.get(kind, 0) for kind in found}
    return {"expected": wanted, "found": found,
            "differences": [f"{k}: {found[k]} on the target, {wanted[k]} in the snapshot" for k in wanted
                            if found[k] < wanted[k]]}


# -- prune ---------------------------------------------------------------------------------------


def prune_snapshots(location: str, keep: int, *, dry_run: bool = False) -> dict:
    """Remove all but the newest ``keep`` snapshots, then the blobs no kept snapshot references and the
    incomplete uploads of interrupted creates (run it while no create is writing to the location)."""
    if keep < 1:
        raise UsageError("--keep must be at least 1 (prune never removes the newest snapshot)")
    store = open_store(location)
    listing = store.listing()
    ids = snapshot_ids(listing)
    kept, removed = ids[-keep:], ids[:-keep] if len(ids) > keep else []
    referenced = set()
    for each in kept:
        referenced |= {blob_key(i["sha256"]) for i in _load(store, each)["export_manifest"]["files"].values()}
    orphans = sorted(k for k in listing if k.startswith(f"{BLOBS}/") and k not in referenced)
    unfinished = store.incomplete_uploads()
    if not dry_run:
        for each in removed:  # manifests first: a blob is only deleted once nothing kept can point at it
            store.delete(snapshot_key(each))
        for key in orphans:
            store.delete(key)
        for key, handle in unfinished:
            store.abort_upload(key, handle)
    return {"kept": kept, "removed": removed, "removed_blobs": len(orphans),
            "freed_bytes": sum(listing[k] for k in orphans), "aborted_uploads": len(unfinished), "dry_run": dry_run}
