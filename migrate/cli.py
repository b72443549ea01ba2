"""Commands of this capability; the root CLI mounts them with ``register``."""

from __future__ import annotations

from datetime import datetime, timezone
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
    TargetOpt,
    VerboseOpt,
    WorkersOpt,
    parse_assignments,
)
from mlflow_sync.state import work_dir_for

ExperimentsOpt = Annotated[list[str] | None, typer.Option(
    "--experiment", "-e", help="Only this experiment (name or id); repeatable.", show_default=False)]
ModelsOpt = Annotated[list[str] | None, typer.Option(
    "--model", "-m", help="Only this registered model or prompt (name); repeatable.", show_default=False)]
SinceOpt = Annotated[str | None, typer.Option(
    "--since", help="Only runs started at or after this time (ISO 8601, UTC if no zone).", show_default=False)]
UntilOpt = Annotated[str | None, typer.Option(
    "--until", help="Only runs started before this time (ISO 8601).", show_default=False)]
WorkDirOpt = Annotated[Path | None, typer.Option(
    "--work-dir", "-w", help="Journal, ID map and report live here; run again with the same one to resume. "
    "Default: a directory of this source/target pair under $MLFLOW_SYNC_HOME (printed), reused next time.",
    show_default=False)]
NoSourceTagsOpt = Annotated[bool, typer.Option(
    "--no-source-tags", help="Do not write the mlflow_exim.* tags recording source times, users and fields "
    "(the source-id tag that makes re-runs safe is always written).")]
RenameExperimentOpt = Annotated[list[str] | None, typer.Option(
    "--rename-experiment", help="OLD=NEW experiment name; repeatable.", show_default=False)]
RenameModelOpt = Annotated[list[str] | None, typer.Option(
    "--rename-model", help="OLD=NEW registered model name; repeatable.", show_default=False)]


def _millis(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not an ISO 8601 date or time (e.g. 2024-05-01T12:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _filters(experiments, models, since, until, skip_kinds: frozenset[str]):
    from mlflow_sync.migrate.exporter import ExportFilters

    return ExportFilters(experiments=list(experiments or []), models=list(models or []),
                         since_ms=_millis(since, "--since"), until_ms=_millis(until, "--until"),
                         skip_kinds=skip_kinds)


def _import_options(no_source_tags: bool, rename_experiment, rename_model, workers: int, skip_kinds: frozenset[str]):
    from mlflow_sync.migrate.importer import ImportOptions

    return ImportOptions(source_tags=not no_source_tags,
                         experiment_renames=parse_assignments(rename_experiment, "--rename-experiment", "OLD=NEW"),
                         model_renames=parse_assignments(rename_model, "--rename-model", "OLD=NEW"), workers=workers,
                         skip_kinds=skip_kinds)


def export_command(
    source: SourceOpt = None,
    to: Annotated[str | None, typer.Option("--to", help="Export directory or s3://bucket/prefix.",
                                              show_default=False)] = None,
    experiment: ExperimentsOpt = None,
    model: ModelsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    skip_kind: SkipKindOpt = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a tracking server (every object kind it supports) into a directory or S3, with a manifest.

    Examples:

    ```
    mlflow-sync export --source http://mlflow.internal:5000 --to ./export

    mlflow-sync export -s sqlite:///mlflow.db \\
        --to s3://my-bucket/mlflow-export --experiment fraud
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.migrate import service

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    if not to:
        raise UsageError("no export location given: pass --to DIR or --to s3://bucket/prefix")
    filters = _filters(experiment, model, since, until, profile.skipped(skip_kind))
    with connect_side(profile, "source", source, max_rps=max_rps) as server:
        if dry_run:
            result = service.export_plan(server, filters)
            output.emit(result, output.key_values("export plan (nothing written)", result))
            return
        manifest = service.export(server, to, filters=filters, workers=workers or profile.workers)
    summary = {"export": to, "counts": manifest["counts"], "bytes": manifest["total_bytes"],
               "source lacks": manifest["source"]["lacks"], "seconds": manifest["seconds"]}
    output.emit(summary, output.key_values("export complete", summary))


def import_command(
    from_: Annotated[str | None, typer.Option("--from", help="Export directory or s3://bucket/prefix.",
                                                 show_default=False)] = None,
    target: TargetOpt = None,
    work_dir: WorkDirOpt = None,
    no_source_tags: NoSourceTagsOpt = False,
    rename_experiment: RenameExperimentOpt = None,
    rename_model: RenameModelOpt = None,
    skip_kind: SkipKindOpt = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Import an export into a tracking server: idempotent, resumable, writes an ID map.

    Examples:

    ```
    mlflow-sync import --from ./export --target http://127.0.0.1:5001 \\
        --work-dir ./import-work

    mlflow-sync import --from s3://my-bucket/mlflow-export \\
        --target arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC \\
        --work-dir ./work
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.migrate import service

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    if not from_:
        raise UsageError("no export given: pass --from DIR or --from s3://bucket/prefix")
    if dry_run:
        result = service.import_plan(from_, work_dir)
        output.emit(result, output.key_values("import plan (nothing written)", result))
        return
    options = _import_options(no_source_tags, rename_experiment, rename_model, workers or profile.workers,
                              profile.skipped(skip_kind))
    with connect_side(profile, "target", target, max_rps=max_rps) as server:
        work_dir = work_dir_for("import", work_dir, from_, server.display)
        result = service.import_export(server, from_, work_dir, options=options).as_dict()
    output.emit(result, output.key_values("import complete", {k: result[k] for k in ("counts", "seconds", "id_map")}))


def migrate_command(
    source: SourceOpt = None,
    target: TargetOpt = None,
    work_dir: WorkDirOpt = None,
    experiment: ExperimentsOpt = None,
    model: ModelsOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    skip_kind: SkipKindOpt = None,
    no_source_tags: NoSourceTagsOpt = False,
    rename_experiment: RenameExperimentOpt = None,
    rename_model: RenameModelOpt = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the validation step.")] = False,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    dry_run: DryRunOpt = False,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export, import and validate in one command; run it again with the same --work-dir to resume.

    Exit code 0 only when everything was imported and validation found the target complete.

    Examples:

    ```
    mlflow-sync migrate --source http://old-mlflow:5000 \\
        --target arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC \\
        --work-dir ./migration

    mlflow-sync migrate -c configs/self-managed-to-app.yaml \\
        --work-dir ./migration --dry-run
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.migrate import service

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    filters = _filters(experiment, model, since, until, profile.skipped(skip_kind))
    if dry_run:
        with connect_side(profile, "source", source, max_rps=max_rps) as server:
            result = service.export_plan(server, filters)
        output.emit(result, output.key_values("migration plan (nothing written)", result))
        return
    options = _import_options(no_source_tags, rename_experiment, rename_model, workers or profile.workers,
                              profile.skipped(skip_kind))
    with connect_side(profile, "source", source, max_rps=max_rps) as src, \
            connect_side(profile, "target", target, max_rps=max_rps) as dst:
        work_dir = work_dir_for("migrate", work_dir, src.display, dst.display)
        result = service.migrate(src, dst, work_dir, filters=filters, options=options,
                                 validate=not no_validate).as_dict()
    output.emit(result, output.key_values("migration complete", {
        k: result[k] for k in ("counts", "seconds", "id_map", "validation")}))


def demo_command(
    work_dir: Annotated[Path, typer.Option("--work-dir", "-w", help="Where the demo stores, export and reports "
                                           "go.")] = Path("mlflow-sync-demo"),
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build a realistic MLflow 3 source on SQLite, migrate it to a second store, validate, show the report.

    Needs no server and no network.

    Examples:

    ```
    mlflow-sync demo

    mlflow-sync demo --work-dir /tmp/mlflow-sync-demo --json
    ```
    """
    from mlflow_sync.migrate.demo import run_demo

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    result = run_demo(work_dir)
    output.emit(result, output.key_values("demo complete", result))


def register(app: typer.Typer) -> None:
    """Add export, import, migrate and demo to the root app."""
    app.command("export")(export_command)
    app.command("import")(import_command)
    app.command("migrate")(migrate_command)
    app.command("demo")(demo_command)
