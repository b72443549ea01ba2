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

    ```
    mlflow-sync info http://127.0.0.1:5000

    mlflow-sync info \\
        arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC --json
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_any
    from mlflow_sync.info import server_info

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    with connect_any(profile, server, max_rps=max_rps) as connected:
        result = server_info(connected)

    def human(console) -> None:
        from rich.table import Table

        table = Table(show_header=False, box=None)
        table.add_row("server", result["server"])
        table.add_row("kind", result["kind"])
        table.add_row("MLflow", result["mlflow_version"] or "unknown (no /version endpoint)")
        for name, present in result["capabilities"].items():
            table.add_row(name.replace("_", " "), "yes" if present else "no")
        inventory = result["inventory"]
        for kind, count in inventory["counts"].items():
            table.add_row(kind.replace("_", " "), str(count))
        if inventory["unsupported"]:
            table.add_row("cannot hold", ", ".join(kind.replace("_", " ") for kind in inventory["unsupported"]))
        console.print(table)

    output.emit(result, human)


def _register_capabilities() -> None:
    """Each capability folder adds its commands (migrate/, sync/, validate/, convert/)."""
    from mlflow_sync.convert import cli as convert_cli
    from mlflow_sync.migrate import cli as migrate_cli
    from mlflow_sync.sync import cli as sync_cli
    from mlflow_sync.validate import cli as validate_cli

    for module in (migrate_cli, sync_cli, validate_cli, convert_cli):
        module.register(app)


_register_capabilities()


def _click_exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name`` from wherever typer raises it.

    Newer typer vendors click as ``typer._click`` and raises that copy's classes; older typer
    raises ``click``'s. ``typer.BadParameter`` is re-exported by every typer version, so its
    module is the one typer really uses; ``click``'s own classes are added when click is installed.
    """
    modules = [sys.modules[typer.BadParameter.__module__]]
    try:
        import click.exceptions

        modules.append(click.exceptions)
    except ImportError:  # pragma: no cover - typer without click
        pass
    found = {getattr(module, name) for module in modules if isinstance(getattr(module, name, None), type)}
    return tuple(found)


def _one_line(text: object) -> str:
    from mlflow_sync.redact import redact

    return redact(" ".join(str(text).split()))


def _first_line(value: object) -> str:
    from mlflow_sync.connection import first_line  # names servers as the user gave them

    return first_line(value)


def _usage_line(exc) -> tuple[str, int]:
    """A parser error (no such option, bad value, missing value, extra argument, unknown command)."""
    message = _one_line(exc.format_message()).rstrip(".")
    if message[1:2].islower():  # "No such option" -> "no such option", but "URI ..." stays
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)  # None where click does not say which command (option missing its value)
    hint = ""
    if ctx is not None and ctx.help_option_names:
        hint = f" (try '{ctx.command_path} {ctx.help_option_names[0]}')"
    return f"error: {message}{hint}", exc.exit_code


def _help_shown(exc) -> tuple[None, int]:
    """A bare command group: its help is the answer, on stdout, exit 0 (as with --help)."""
    text = exc.format_message()  # typer's rich help is printed already; plain click carries it here
    if text.strip():
        sys.stdout.write(text.rstrip("\n") + "\n")
    return None, 0


def _mlflow_error(exc: BaseException) -> BaseException | None:
    module = sys.modules.get("mlflow.exceptions")  # never imported: it cannot be an MLflow error
    return exc if module is not None and isinstance(exc, module.MlflowException) else None


def _is(*types: type[BaseException]):
    return lambda exc: exc if isinstance(exc, types) else None


def _error_table():
    """Error type -> one line for stderr (None: nothing to say) and exit code, and whether --verbose
    adds the traceback. First match wins; :func:`render_error` is the only reader. Parser errors
    come before the rest so they are never taken for failures of the work itself."""
    click_exc = _click_exception_classes
    return (
        (_is(*click_exc("NoArgsIsHelpError")), _help_shown, False),
        (_is(typer.Exit, *click_exc("Exit")), lambda exc: (None, exc.exit_code), False),
        (_is(SystemExit), lambda exc: (None, exc.code if isinstance(exc.code, int) else 1), False),
        (_is(typer.Abort, KeyboardInterrupt, *click_exc("Abort")), lambda exc: ("error: interrupted", 130), False),
        (_is(*click_exc("UsageError")), _usage_line, False),  # bad command line: 2
        (_is(*click_exc("ClickException")),
         lambda exc: (f"error: {_one_line(exc.format_message())}", exc.exit_code), False),
        (sync_error_in, lambda exc: (f"error: {_first_line(exc)}", exc.exit_code), True),  # ours, maybe wrapped
        (_mlflow_error, lambda exc: (f"error: MLflow: {_first_line(exc.message)}", 1), True),
        (_is(OSError), lambda exc: (f"error: {_first_line(exc)}", 1), True),
        (_is(BaseException),
         lambda exc: (f"error: unexpected {type(exc).__name__}: {_first_line(exc)} (run with --verbose for details)",
                      1), True),
    )


def render_error(exc: BaseException) -> tuple[str | None, int, bool]:
    """One line (or None) and an exit code for any failure, and whether --verbose may add the
    traceback; the only place errors are rendered."""
    for match, render, traceback in _error_table():
        matched = match(exc)
        if matched is not None:
            line, code = render(matched)
            return line, code, traceback
    raise AssertionError("unreachable: the last row matches every exception")  # pragma: no cover


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, render any failure once as one line."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    try:
        result = app(args=argv, prog_name="mlflow-sync", standalone_mode=False)
    except BaseException as exc:  # noqa: BLE001 - the single place failures become one line
        line, code, traceback_allowed = render_error(exc)
        if traceback_allowed and output.state.verbose:
            import traceback

            from mlflow_sync.redact import redact

            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        if line is not None:
            sys.stderr.write(line + "\n")
        return code
    # Without standalone mode typer returns the code of a `typer.Exit` it caught (commands return None).
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
