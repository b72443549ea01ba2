"""The `mlflow-sync` command: option parsing and output only; the work lives in plain functions."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from mlflow_sync import __version__, output
from mlflow_sync.errors import sync_error_in
from mlflow_sync.options import ConfigOpt, JsonOpt, MaxRpsOpt, QuietOpt, VerboseOpt

app = typer.Typer(
    name="mlflow-sync",
    help="Move MLflow tracking data between servers without losing anything, and prove it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlflow-sync {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Move MLflow tracking data between servers without losing anything, and prove it.

    Servers are http(s) tracking URIs, database URIs (sqlite:///, postgresql://, mysql://)
    or SageMaker ARNs (tracking servers and MLflow Apps, through sagemaker-mlflow).
    """


@app.command("info")
def info_command(
    server: Annotated[str, typer.Argument(help="Tracking URI, database URI or SageMaker ARN.")],
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show a server's MLflow version and what it supports (logged models, traces, prompts...).

    Examples:

        mlflow-sync info http://127.0.0.1:5000

        mlflow-sync info arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC --json
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect
    from mlflow_sync.info import server_info

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    with connect(server, role="server", max_rps=max_rps, retry=profile.retry) as connected:
        result = server_info(connected)

    def human(console) -> None:
        from rich.table import Table

        table = Table(show_header=False, box=None)
        table.add_row("server", result["server"])
        table.add_row("kind", result["kind"])
        table.add_row("MLflow", result["mlflow_version"] or "unknown (no /version endpoint)")
        for name, present in result["capabilities"].items():
            table.add_row(name.replace("_", " "), "yes" if present else "no")
        table.add_row("experiments", str(result["experiments"]))
        console.print(table)

    output.emit(result, human)


def _register_capabilities() -> None:
    """Each capability folder adds its commands (migrate/, validate/, convert/)."""
    from mlflow_sync.convert import cli as convert_cli
    from mlflow_sync.migrate import cli as migrate_cli
    from mlflow_sync.validate import cli as validate_cli

    for module in (migrate_cli, validate_cli, convert_cli):
        module.register(app)


_register_capabilities()


def render_error(exc: BaseException) -> tuple[str, int]:
    """One line and an exit code for any failure; the only place errors are rendered."""
    from mlflow_sync.connection import first_line

    cause = sync_error_in(exc)
    if cause is not None:
        return f"error: {first_line(cause)}", cause.exit_code
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a hard dependency
        MlflowException = ()  # noqa: N806
    if isinstance(exc, MlflowException):
        return f"error: MLflow: {first_line(exc.message)}", 1
    if isinstance(exc, OSError):
        return f"error: {first_line(exc)}", 1
    return f"error: unexpected {type(exc).__name__}: {first_line(exc)} (run with --verbose for details)", 1


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, render any failure once as one line."""
    import click

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    try:
        app(args=argv, prog_name="mlflow-sync", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        sys.stderr.write("error: interrupted\n")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BaseException as exc:  # noqa: BLE001 - the single place failures become one line
        if isinstance(exc, SystemExit):
            return exc.code if isinstance(exc.code, int) else 1
        message, code = render_error(exc)
        if output.state.verbose:
            import traceback

            from mlflow_sync.redact import redact

            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        sys.stderr.write(message + "\n")
        return code
    return 0


def run() -> None:
    sys.exit(main())
