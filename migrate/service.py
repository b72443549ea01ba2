"""The plain functions behind ``mlflow-sync export``, ``import`` and ``migrate`` (the CLI only parses)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_sync import output
from mlflow_sync.connection import Server
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import ExportLayout, load_manifest, read_json, write_json
from mlflow_sync.inventory import (
    InventoryMismatch,
    carried_counts,
    count_target,
    shortfalls,
    take_inventory,
    take_source_inventory,
)
from mlflow_sync.journal import Journal
from mlflow_sync.migrate.exporter import Exporter, ExportFilters
from mlflow_sync.migrate.importer import Importer, ImportOptions
from mlflow_sync.migrate.location import ExportLocation

log = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"
REPORT = "report.json"
TARGET_FILE = "target.json"  # which target this work dir's journal belongs to


@dataclass
class MigrateResult:
    """What a job did, written as ``report.json`` in the work directory."""

    action: str
    work_dir: str | None
    counts: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    requests: dict = field(default_factory=dict)
    id_map: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # carried, but not as the source has it (from the export)
    inventory: dict = field(default_factory=dict)
    validation: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _progress_callback(bar, task):
    return lambda: bar.advance(task)


def export(source: Server, to: str, *, filters: ExportFilters, workers: int, staging: Path | None = None) -> dict:
    """Export the source into ``to`` (directory or s3://); returns the manifest.

    The source is counted first (:mod:`mlflow_sync.inventory`): a kind it holds that no job
    carries is refused before anything is written, and an export holding fewer objects of a kind
    than the source (a reader's blind spot) fails once written, naming the kind.
    """
    started = time.monotonic()
    inventory = take_source_inventory(source, filters.skip_kinds)
    location = ExportLocation(to, staging)
    try:
        with output.progress() as bar:
            task = bar.add_task("export runs", total=None)
            exporter = Exporter(source, location.layout, filters=filters, workers=workers,
                                progress=_progress_callback(bar, task))
            manifest = exporter.export(inventory={"source": inventory.as_dict()})
        location.publish()
    finally:
        location.close()
    manifest["failures"] = exporter.outcome.as_dict()["failures"]
    manifest["seconds"] = round(time.monotonic() - started, 2)
    manifest["requests"] = source.requests_by_endpoint()
    exporter.outcome.raise_if_failed(f"export to {location.uri}")
    if not filters.selective:
        short = shortfalls(carried_counts(inventory, filters.skip_kinds), manifest["counts"],
                           expected_what="on the source", found_what="exported")
        if short:
            raise InventoryMismatch(f"the export of {source.display} is missing objects the source holds: "
                                    f"{'; '.join(short)} (manifest: {location.uri})")
    return manifest


def import_export(target: Server, source_location: str, work_dir: Path, *, options: ImportOptions) -> MigrateResult:
    """Import an export into the target, journaled in ``work_dir``; writes the ID map and report."""
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    target.capabilities()  # an unreachable or refusing target is named as such, before the work dir is claimed
    _claim_work_dir(work_dir, target)
    location = ExportLocation(source_location, work_dir / "staged-export")
    layout = location.fetch()
    journal = Journal(work_dir / JOURNAL)
    try:
        manifest = load_manifest(layout)
        before = take_inventory(target, uncarried_kinds=False)
        with output.progress() as bar:
            task = bar.add_task("import runs", total=manifest["counts"].get("runs"))
            importer = Importer(target, layout, journal, options, progress=_progress_callback(bar, task))
            outcome = importer.run()
        id_map = journal.write_id_map(work_dir)
    finally:
        journal.close()
    after, short = count_target(target, {kind: n for kind, n in manifest["counts"].items() if options.carries(kind)},
                                expected_what="in the export")
    result = MigrateResult(
        action="import", work_dir=str(work_dir), counts={"imported": dict(outcome.done),
                                                          "already_there": dict(outcome.skipped)},
        failures=outcome.as_dict()["failures"], seconds=round(time.monotonic() - started, 2),
        requests=target.requests_by_endpoint(), id_map=[str(p) for p in id_map], notes=manifest.get("notes", []),
        inventory={"source": (manifest.get("inventory") or {}).get("source"), "target_before": before.as_dict(),
                   "target_after": after.as_dict(), "short": short},
    )
    write_json(work_dir / REPORT, result.as_dict())
    outcome.raise_if_failed(f"import into {target.display} (report: {work_dir / REPORT})")
    if short:
        raise InventoryMismatch(f"the target {target.display} holds fewer objects than the export: "
                                f"{'; '.join(short)} (report: {work_dir / REPORT})")
    return result


def _claim_work_dir(work_dir: Path, target: Server) -> None:
    """A work dir's journal maps source ids to one target's ids: resuming it against another target
    would put runs into whatever experiments carry those ids there. Refuse instead."""
    owner_file = work_dir / TARGET_FILE
    if owner_file.exists():
        owner = read_json(owner_file).get("target")
        if owner != target.display:
            raise UsageError(f"{work_dir} holds the import journal of {owner}, not of {target.display}: use a new "
                             "--work-dir for this target")
    else:
        write_json(owner_file, {"target": target.display})


def import_plan(source_location: str, work_dir: Path | None) -> dict:
    """--dry-run of an import: counts and bytes per kind from the manifest, minus what is journaled."""
    location = ExportLocation(source_location, (work_dir / "staged-export") if work_dir else None)
    if location.is_remote:
        raise UsageError("--dry-run of an s3:// import needs the export locally: download it, or run without "
                         "--dry-run")
    manifest = load_manifest(location.layout)
    bytes_by_kind: dict[str, int] = {}
    for relative, info in manifest["files"].items():
        kind = "artifacts" if "/artifacts/" in relative else relative.split("/", 1)[0]
        bytes_by_kind[kind] = bytes_by_kind.get(kind, 0) + info["size"]
    journaled: dict[str, int] = {}
    if work_dir and (work_dir / JOURNAL).exists():
        journal = Journal(work_dir / JOURNAL)
        for entry in journal.entries():
            if entry["state"] == "done":
                journaled[entry["kind"]] = journaled.get(entry["kind"], 0) + 1
        journal.close()
    return {"counts": manifest["counts"], "bytes": bytes_by_kind, "already_imported": journaled,
            "source": manifest["source"]}


def export_plan(source: Server, filters: ExportFilters) -> dict:
    """--dry-run of an export or a migration: counts and artifact bytes per kind; writes nothing."""
    return Exporter(source, ExportLayout(Path("/nonexistent")), filters=filters).plan()


def migrate(source: Server, target: Server, work_dir: Path, *, filters: ExportFilters, options: ImportOptions,
            validate: bool = True) -> MigrateResult:
    """Export into ``work_dir/export`` (resumable), import (journaled), then validate the target."""
    started = time.monotonic()
    export_dir = work_dir / "export"  # the export creates the work dir once the filters name what exists
    export(source, str(export_dir), filters=filters, workers=options.workers)
    result = import_export(target, str(export_dir), work_dir, options=options)
    result.action = "migrate"
    result.seconds = round(time.monotonic() - started, 2)
    result.requests = {"source": source.requests_by_endpoint(), "target": target.requests_by_endpoint()}
    if validate:
        result.validation = validate_target(source, target, work_dir, workers=options.workers,
                                            skip_kinds=filters.skip_kinds,
                                            selection=export_dir if filters.selective else None)
    write_json(work_dir / REPORT, result.as_dict())
    if result.validation and not result.validation.get("ok", True):
        from mlflow_sync.errors import MismatchError

        raise MismatchError(f"validation found differences: {result.validation['summary']} "
                            f"(report: {result.validation['html']})")
    return result


def validate_target(source: Server, target: Server, work_dir: Path, *, workers: int,
                    skip_kinds: frozenset[str] = frozenset(), selection: Path | None = None) -> dict:
    """The validate step of ``migrate``: the validator compares source and target, reports go to the work dir.

    The target may hold objects of its own (``one_way``). A filtered job (``selection``: the export
    of what the filters selected, every file checked against its sha256) is validated against that
    selection, so objects the filters left out are not reported missing.
    """
    from mlflow_sync.validate import ExportReader, ReportFiles, ValidateOptions, ValidationMismatch, validate_and_report

    if selection is not None:
        output.info(f"filtered migration: the target is validated against the selection exported to {selection}")
    files = ReportFiles(json=work_dir / "validation.json", html=work_dir / "validation.html")
    try:
        side = ExportReader(selection) if selection is not None else source
        report = validate_and_report(side, target, ValidateOptions(one_way=True, metric_history=True,
                                                                     workers=workers, skip_kinds=skip_kinds), files)
        ok, summary = True, _summary(report)
    except ValidationMismatch as exc:
        ok, summary = False, str(exc)
    return {"ok": ok, "summary": summary, "json": str(files.json), "html": str(files.html),
            **({"against": f"selection exported to {selection}"} if selection is not None else {})}


def _summary(report) -> str:
    counts = getattr(report, "counts", None)
    if callable(counts):
        counts = counts()
    return str(counts) if counts else "all objects match"

