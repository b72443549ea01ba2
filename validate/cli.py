"""Commands of this capability; the root CLI mounts them with ``register``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlflow_sync.options import (
    ConfigOpt,
    JsonOpt,
    MaxRpsOpt,
    QuietOpt,
    SkipKindOpt,
    VerboseOpt,
    WorkersOpt,
)

FileOpt = Path | None
_SIDE = ("http(s) tracking URI, database URI, SageMaker ARN, export directory (DIR or s3://bucket/prefix) or "
         "snapshot store (DIR or s3://...; latest snapshot, or LOCATION#ID for one).")
SideSourceOpt = Annotated[str | None, typer.Option("--source", "-s", help=f"Source: {_SIDE}", show_default=False)]
SideTargetOpt = Annotated[str | None, typer.Option("--target", "-t", help=f"Target: {_SIDE}", show_default=False)]


def validate_command(
    source: SideSourceOpt = None,
    target: SideTargetOpt = None,
    checks: Annotated[str | None, typer.Option(
        "--checks", help="Comma-separated subset of: experiments, runs, artifacts, logged_models, "
        "registered_models, traces, prompts, evaluation_datasets (default: all).", show_default=False)] = None,
    one_way: Annotated[bool, typer.Option("--one-way", help="Objects only in the target are fine.")] = False,
    metric_history: Annotated[bool, typer.Option(
        "--metric-history", help="Compare every metric's full history (step, timestamp, value); one request "
        "per run and metric key on each side.")] = False,
    checksum: Annotated[bool, typer.Option(
        "--checksum", help="Compare artifact contents (S3 ETags when both stores list them, else SHA-256: an S3 "
        "object's stored checksum, or the downloaded bytes), not only paths and sizes.")] = False,
    float_tolerance: Annotated[float, typer.Option(
        "--float-tolerance", min=0.0, help="Relative tolerance for metric values (NaN and inf compare as such).")
    ] = 0.0,
    ignore_tag: Annotated[list[str] | None, typer.Option(
        "--ignore-tag", help="Tag key pattern (fnmatch) not to compare; repeatable.", show_default=False)] = None,
    ignore: Annotated[list[str] | None, typer.Option(
        "--ignore", help="Object path pattern (fnmatch) to leave out of the report; repeatable.",
        show_default=False)] = None,
    combined: Annotated[FileOpt, typer.Option(
        "--combined", help="Write one line per object: '= path', '+ path' (only in source), '- path' (only "
        "in target), '* path' (differs), '! path' (unreadable).", show_default=False)] = None,
    report_json: Annotated[FileOpt, typer.Option("--report-json", help="Write the JSON report here.",
                                                 show_default=False)] = None,
    html: Annotated[FileOpt, typer.Option("--html", help="Write the self-contained HTML report here.",
                                          show_default=False)] = None,
    junit: Annotated[FileOpt, typer.Option("--junit", help="Write a JUnit XML report here (for CI).",
                                           show_default=False)] = None,
    skip_kind: SkipKindOpt = None,
    workers: WorkersOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Prove the target matches the source, object by object; exit code 4 when it does not.

    Compares experiments, runs (name, status, times, params, tags, metrics, inputs, outputs,
    parent links), artifacts, logged models, the model registry, traces, prompts and evaluation
    datasets. Either side may also be an export written by `mlflow-sync export` (a directory or
    s3://bucket/prefix) or a snapshot store written by `mlflow-sync snapshot create` (its latest
    snapshot, or LOCATION#ID for one; a damaged snapshot is refused).
    Report formats, tolerances and exit codes: docs/validation-report.md.

    Examples:

    ```
    mlflow-sync validate -s http://old:5000 \\
        -t arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC

    mlflow-sync validate -s http://old:5000 -t http://new:5000 \\
        --metric-history --checksum --html report.html

    mlflow-sync validate -s http://a:5000 -t http://b:5000 --one-way \\
        --combined objects.txt --junit junit.xml

    mlflow-sync validate -s http://old:5000 -t ./export --checksum

    mlflow-sync validate \\
        -s s3://dr-bucket/mlflow-snapshots#20250101T020000Z \\
        -t http://restored:5000
    ```
    """
    from mlflow_sync import output
    from mlflow_sync.config import load_profile
    from mlflow_sync.validate.options import ValidateOptions, parse_checks
    from mlflow_sync.validate.reports import render_summary
    from mlflow_sync.validate.service import ReportFiles, ValidationMismatch, validate_and_report
    from mlflow_sync.validate.sides import open_side

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    options = ValidateOptions(
        checks=parse_checks(checks),
        one_way=one_way,
        metric_history=metric_history,
        checksum=checksum,
        float_tolerance=float_tolerance,
        ignore_tags=tuple(ignore_tag or ()),
        ignore_paths=tuple(ignore or ()),
        workers=workers or profile.workers,
        skip_kinds=profile.skipped(skip_kind),
    )
    files = ReportFiles(json=report_json, html=html, junit=junit, combined=combined)
    files.check()
    with open_side(profile, "source", source, options, max_rps=max_rps) as source_server, \
            open_side(profile, "target", target, options, max_rps=max_rps) as target_server:
        try:
            report = validate_and_report(source_server, target_server, options, files)
        except ValidationMismatch as mismatch:
            report = mismatch.report
            output.emit(report.to_dict(), lambda console: render_summary(report, console))
            raise
    output.emit(report.to_dict(), lambda console: render_summary(report, console))


def register(app: typer.Typer) -> None:
    """Add ``mlflow-sync validate`` to the root app."""
    app.command("validate")(validate_command)
