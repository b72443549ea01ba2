"""``mlflow-sync sync`` and ``mlflow-sync snapshot create|list|verify|restore|prune`` (parsing and printing only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mlflow_sync import output
from mlflow_sync.errors import UsageError
from mlflow_sync.options import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    MaxRpsOpt,
    QuietOpt,
    SkipKindOpt,
    SourceOpt,
    SyncOverlapOpt,
    TargetOpt,
    VerboseOpt,
    WorkersOpt,
)
from mlflow_sync.state import work_dir_for

SyncWorkDirOpt = Annotated[Optional[Path], typer.Option(
    "--work-dir", "-w", help="Sync state, lock, journal and ID map live here: use the same one every time. "
    "Default: a directory of this source/target pair under $MLFLOW_SYNC_HOME (printed), reused next time.",
    show_default=False)]
SnapshotsOpt = Annotated[Optional[str], typer.Option(
    "--from", help="Snapshot location: directory or s3://bucket/prefix.", show_default=False)]
SnapshotIdOpt = Annotated[Optional[str], typer.Option(
    "--snapshot", help="Snapshot id (see `snapshot list`); default: the latest.", show_default=False)]

snapshot_app = typer.Typer(help="Verifiable point-in-time snapshots: create, list, verify, restore, prune.",
                           no_args_is_help=True, rich_markup_mode="markdown")


def _show(title: str, data: dict) -> None:
    from mlflow_sync.migrate.cli import _show_counts

    output.emit(data, _show_counts(title, data))


def _require(value, message: str):
    if not value:
        raise UsageError(message)
    return value


def sync_command(
    source: SourceOpt = None,
    target: TargetOpt = None,
    work_dir: SyncWorkDirOpt = None,
    delete: Annotated[bool, typer.Option("--delete", help="Mirror deletions of runs, model versions, aliases and "
                                         "models. Without it nothing on the target is ever deleted.")] = False,
    break_lock: Annotated[bool, typer.Option("--break-lock", help="Take over a lock left by a sync on another "
                                             "machine that is gone (a dead local process is detected by itself).")] = False,
    overlap_minutes: SyncOverlapOpt = None,
    skip_kind: SkipKindOpt = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """One-way incremental sync: the first run copies everything, later runs only what changed.

    Schedule it (cron, EventBridge) with the same --work-dir: it keeps its state there, resumes
    after a crash without duplicating anything, and refuses to run twice at once against a target.

    Examples:

    ```
    mlflow-sync sync --source http://mlflow.internal:5000 \\
        --target http://standby:5000 --work-dir ./standby

    mlflow-sync sync -s http://mlflow.internal:5000 \\
        -t arn:aws:sagemaker:eu-west-1:123456789012:mlflow-app/app-ABC \\
        -w /var/lib/mlflow-sync/dr --delete
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.migrate.sync import sync

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    with connect_side(profile, "source", source, max_rps=max_rps) as source_server, \
            connect_side(profile, "target", target, max_rps=max_rps) as target_server:
        work_dir = work_dir_for("sync", work_dir, source_server.display, target_server.display)
        report = sync(source_server, target_server, work_dir, mirror_deletes=delete,
                      workers=workers or profile.workers, break_lock=break_lock,
                      overlap_minutes=profile.sync.overlap_minutes if overlap_minutes is None else overlap_minutes,
                      skip_kinds=profile.skipped(skip_kind))
    _show("sync complete", {k: report[k] for k in ("cycle", "changes", "imported", "seconds")})


@snapshot_app.command("create")
def snapshot_create(
    source: SourceOpt = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Snapshot location: directory or s3://bucket/prefix.",
                                              show_default=False)] = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Take a snapshot: stores only the files the location does not hold yet (content-addressed).

    Examples:

    ```
    mlflow-sync snapshot create --source http://mlflow.internal:5000 \\
        --to /backups/mlflow

    mlflow-sync snapshot create -s http://mlflow.internal:5000 \\
        --to s3://dr-bucket/mlflow-snapshots
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.migrate.snapshot import create_snapshot

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    _require(to, "no snapshot location given: pass --to DIR or --to s3://bucket/prefix")
    with connect_side(profile, "source", source, max_rps=max_rps) as server:
        summary = create_snapshot(server, to, workers=workers or profile.workers)
    _show(f"snapshot {summary['id']} created", summary)


@snapshot_app.command("list")
def snapshot_list(
    location: SnapshotsOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the snapshots at a location: time, counts, size, versions.

    Examples:

    ```
    mlflow-sync snapshot list --from /backups/mlflow

    mlflow-sync snapshot list --from s3://dr-bucket/mlflow-snapshots --json
    ```
    """
    from mlflow_sync.migrate.snapshot import list_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    snapshots = list_snapshots(_require(location, "pass --from DIR or --from s3://bucket/prefix"))

    def human(console) -> None:
        from rich.table import Table

        table = Table(title=f"snapshots at {location}")
        for column in ("id", "created", "runs", "models", "size", "stored", "server MLflow", "client MLflow"):
            table.add_column(column)
        for s in snapshots:
            table.add_row(s["id"], s["created"], str(s["counts"].get("runs", 0)),
                          str(s["counts"].get("registered_models", 0)), f"{s['total_bytes']:,} B",
                          f"{s['stored_bytes']:,} B", str(s["server_mlflow"]), str(s["client_mlflow"]))
        console.print(table)

    output.emit(snapshots, human)


@snapshot_app.command("verify")
def snapshot_verify(
    location: SnapshotsOpt = None,
    snapshot: SnapshotIdOpt = None,
    workers: WorkersOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Recompute every checksum against the manifests; names missing, corrupt and extra files (exit 4).

    Without --snapshot every snapshot is checked and files no manifest names are reported as extra.

    Examples:

    ```
    mlflow-sync snapshot verify --from /backups/mlflow

    mlflow-sync snapshot verify --from s3://dr-bucket/mlflow-snapshots \\
        --snapshot 20250101T020000Z
    ```
    """
    from mlflow_sync.migrate.snapshot import verify_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    report = verify_snapshots(_require(location, "pass --from DIR or --from s3://bucket/prefix"), snapshot,
                              workers=workers or 4)
    data = report.as_dict()

    def human(console) -> None:
        console.print(f"checked {data['checked_files']} files ({data['checked_bytes']:,} bytes) of "
                      f"{len(data['snapshots'])} snapshot(s) in {data['seconds']} s")
        for problem in data["problems"]:
            console.print(f"  {problem['problem']}: {problem['path']}", markup=False, highlight=False)

    output.emit(data, human)
    report.raise_if_failed()


@snapshot_app.command("restore")
def snapshot_restore(
    location: SnapshotsOpt = None,
    target: TargetOpt = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", "-w", help="Rebuilt export, journal and report; the same one resumes a restore.",
        show_default=False)] = None,
    snapshot: SnapshotIdOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Restore even if verification fails (damaged files "
                                        "are left out).")] = False,
    validate_against: Annotated[Optional[str], typer.Option(
        "--validate-against", help="After restoring, validate the target against this server (e.g. the "
        "original source, if it is still up).", show_default=False)] = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore a snapshot into an empty server (verified first), then check the counts or validate.

    Examples:

    ```
    mlflow-sync snapshot restore --from /backups/mlflow \\
        --target http://127.0.0.1:5001 --work-dir ./restore

    mlflow-sync snapshot restore --from s3://dr-bucket/mlflow-snapshots \\
        --snapshot 20250101T020000Z \\
        --target arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC \\
        --work-dir ./restore
    ```
    """
    from contextlib import nullcontext

    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect, connect_side
    from mlflow_sync.migrate.snapshot import restore_snapshot

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    _require(location, "pass --from DIR or --from s3://bucket/prefix")
    with connect_side(profile, "target", target, max_rps=max_rps) as server, \
            (connect(validate_against, role="source", max_rps=max_rps if max_rps is not None else
                     profile.source.max_rps, retry=profile.retry) if validate_against else nullcontext()) as reference:
        work_dir = work_dir_for("restore", work_dir, location, server.display)
        summary = restore_snapshot(location, server, work_dir, snapshot_id=snapshot, force=force,
                                   workers=workers or profile.workers, validate_against=reference)
    _show(f"snapshot {summary['snapshot']} restored", summary)


@snapshot_app.command("prune")
def snapshot_prune(
    location: SnapshotsOpt = None,
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest snapshots to keep.")] = 7,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove old snapshots and the files only they referenced (content of kept snapshots stays).

    Examples:

    ```
    mlflow-sync snapshot prune --from /backups/mlflow --keep 14

    mlflow-sync snapshot prune --from s3://dr-bucket/mlflow-snapshots \\
        --keep 7 --dry-run
    ```
    """
    from mlflow_sync.migrate.snapshot import prune_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    result = prune_snapshots(_require(location, "pass --from DIR or --from s3://bucket/prefix"), keep,
                             dry_run=dry_run)
    _show("prune (dry run: nothing removed)" if dry_run else "prune complete", result)


def register(app: typer.Typer) -> None:
    """Add ``sync`` and the ``snapshot`` group to the root app."""
    app.command("sync")(sync_command)
    app.add_typer(snapshot_app, name="snapshot")
