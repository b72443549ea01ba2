"""``mlflow-sync sync`` and ``mlflow-sync snapshot create|list|verify|restore|prune`` (parsing and printing only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

SyncWorkDirOpt = Annotated[Path | None, typer.Option(
    "--work-dir", "-w", help="Sync state, lock, journal and ID map live here: use the same one every time. "
    "Default: a directory of this source/target pair under $MLFLOW_SYNC_HOME (printed), reused next time.",
    show_default=False)]
RepoOpt = Annotated[str | None, typer.Option(
    "--repo", "-r", "--from", "--to", envvar="MLFLOW_SYNC_REPO",
    help="The snapshot repository: a directory or s3://bucket/prefix, the same on every snapshot command "
    "(--from/--to: earlier spellings).", show_default=False)]
SnapshotIdOpt = Annotated[str | None, typer.Option(
    "--snapshot", help="Snapshot id (see `snapshot list`); default: the latest.", show_default=False)]

snapshot_app = typer.Typer(help="Verifiable point-in-time snapshots: create, list, verify, restore, prune.",
                           no_args_is_help=True, rich_markup_mode="markdown")


def _show(title: str, data: dict) -> None:
    output.emit(data, output.key_values(title, data))


def _repo(value: str | None) -> str:
    if not value:
        raise UsageError("no snapshot repository given: pass --repo DIR or --repo s3://bucket/prefix "
                         "(or set MLFLOW_SYNC_REPO)")
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
    dry_run: DryRunOpt = False,
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
    from mlflow_sync.sync import plan_sync, sync

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    with connect_side(profile, "source", source, max_rps=max_rps) as source_server, \
            connect_side(profile, "target", target, max_rps=max_rps) as target_server:
        work_dir = work_dir_for("sync", work_dir, source_server.display, target_server.display)
        settings = {"mirror_deletes": delete, "workers": workers or profile.workers,
                    "overlap_minutes": profile.sync.overlap_minutes if overlap_minutes is None else overlap_minutes,
                    "skip_kinds": profile.skipped(skip_kind)}
        if dry_run:
            _show("sync plan (nothing written)", plan_sync(source_server, target_server, work_dir, **settings))
            return
        report = sync(source_server, target_server, work_dir, break_lock=break_lock, **settings)
    _show("sync complete", {k: report[k] for k in ("cycle", "changes", "imported", "seconds")})


@snapshot_app.command("create")
def snapshot_create(
    source: SourceOpt = None,
    repo: RepoOpt = None,
    dry_run: DryRunOpt = False,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Take a snapshot: stores only the files the repository does not hold yet (content-addressed).

    Examples:

    ```
    mlflow-sync snapshot create --source http://mlflow.internal:5000 \\
        --repo /backups/mlflow

    mlflow-sync snapshot create -s http://mlflow.internal:5000 \\
        --repo s3://dr-bucket/mlflow-snapshots
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.sync import create_snapshot, plan_snapshot

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    repo = _repo(repo)
    with connect_side(profile, "source", source, max_rps=max_rps) as server:
        if dry_run:
            _show("snapshot plan (nothing written)", plan_snapshot(server, repo))
            return
        summary = create_snapshot(server, repo, workers=workers or profile.workers)
    _show(f"snapshot {summary['id']} created", summary)


@snapshot_app.command("list")
def snapshot_list(
    repo: RepoOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the snapshots in a repository: time, counts, size, versions.

    Examples:

    ```
    mlflow-sync snapshot list --repo /backups/mlflow

    mlflow-sync snapshot list --repo s3://dr-bucket/mlflow-snapshots --json
    ```
    """
    from mlflow_sync.sync.snapshot import list_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    snapshots = list_snapshots(_repo(repo))

    def human(console) -> None:
        from rich.table import Table

        table = Table(title=f"snapshots at {repo}")
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
    repo: RepoOpt = None,
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
    mlflow-sync snapshot verify --repo /backups/mlflow

    mlflow-sync snapshot verify --repo s3://dr-bucket/mlflow-snapshots \\
        --snapshot 20250101T020000Z
    ```
    """
    from mlflow_sync.sync.snapshot import verify_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    report = verify_snapshots(_repo(repo), snapshot,
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
    repo: RepoOpt = None,
    target: TargetOpt = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", "-w", help="Rebuilt export, journal and report; the same one resumes a restore.",
        show_default=False)] = None,
    snapshot: SnapshotIdOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Restore even if verification fails (damaged files "
                                        "are left out).")] = False,
    validate_against: Annotated[str | None, typer.Option(
        "--validate-against", help="After restoring, validate the target against this server (e.g. the "
        "original source, if it is still up).", show_default=False)] = None,
    dry_run: DryRunOpt = False,
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
    mlflow-sync snapshot restore --repo /backups/mlflow \\
        --target http://127.0.0.1:5001 --work-dir ./restore

    mlflow-sync snapshot restore --repo s3://dr-bucket/mlflow-snapshots \\
        --snapshot 20250101T020000Z \\
        --target arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC \\
        --work-dir ./restore
    ```
    """
    from contextlib import nullcontext

    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.sync import plan_restore, restore_snapshot

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    repo = _repo(repo)
    with connect_side(profile, "target", target, max_rps=max_rps) as server, \
            (connect_side(profile, "source", validate_against, max_rps=max_rps) if validate_against
             else nullcontext()) as reference:
        work_dir = work_dir_for("restore", work_dir, repo, server.display)
        if dry_run:
            _show("restore plan (nothing written)", plan_restore(repo, server, work_dir, snapshot_id=snapshot))
            return
        summary = restore_snapshot(repo, server, work_dir, snapshot_id=snapshot, force=force,
                                   workers=workers or profile.workers, validate_against=reference)
    _show(f"snapshot {summary['snapshot']} restored", summary)


@snapshot_app.command("prune")
def snapshot_prune(
    repo: RepoOpt = None,
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest snapshots to keep.")] = 7,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove old snapshots and the files only they referenced (content of kept snapshots stays).

    Examples:

    ```
    mlflow-sync snapshot prune --repo /backups/mlflow --keep 14

    mlflow-sync snapshot prune --repo s3://dr-bucket/mlflow-snapshots \\
        --keep 7 --dry-run
    ```
    """
    from mlflow_sync.sync.snapshot import prune_snapshots

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    result = prune_snapshots(_repo(repo), keep,
                             dry_run=dry_run)
    _show("prune (dry run: nothing removed)" if dry_run else "prune complete", result)


def register(app: typer.Typer) -> None:
    """Add ``sync`` and the ``snapshot`` group to the root app."""
    app.command("sync")(sync_command)
    app.add_typer(snapshot_app, name="snapshot")
