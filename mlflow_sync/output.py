"""Everything the tool shows: human tables or JSON on stdout, logs and progress on stderr.

Logging goes through one handler with the redacting filter, so no library (MLflow, boto3,
mlflow-export-import) can print a secret through us.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from mlflow_sync.redact import RedactingFilter, redact

NOISY_LOGGERS = ("urllib3", "botocore", "boto3", "s3transfer", "alembic", "mlflow", "mlflow_export_import", "git")


@dataclass
class OutputState:
    json: bool = False
    verbose: bool = False
    quiet: bool = False


state = OutputState()
stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)


def setup(*, json_output: bool = False, verbose: bool = False, quiet: bool = False) -> None:
    """Configure output and logging for one command run."""
    state.json, state.verbose, state.quiet = json_output, verbose, quiet
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mlflow_sync", False):
            root.removeHandler(handler)
    if stderr.is_terminal:
        handler = RichHandler(console=stderr, show_path=False, show_time=verbose, markup=False)
    else:  # logs and CI: one plain line per record, never wrapped
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._mlflow_sync = True
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    root.setLevel(level)
    logging.getLogger("mlflow_sync").setLevel(logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO)
    _route_mlflow_logs_through_us()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def _route_mlflow_logs_through_us() -> None:
    """MLflow installs its own stderr handler on import; send its records through ours instead,
    so they obey --quiet/--verbose and pass the redacting filter."""
    import mlflow  # noqa: F401 - importing configures MLflow's logger, which we then take over

    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True


def emit(data: Any, human: Callable[[Console], None]) -> None:
    """Print a command's result: ``data`` as JSON with --json, else ``human`` renders it."""
    if state.json:
        sys.stdout.write(redact(json.dumps(data, indent=2, default=str, ensure_ascii=False)) + "\n")
        sys.stdout.flush()
    else:
        human(stdout)


def key_values(title: str, result: dict) -> Callable[[Console], None]:
    """The human rendering of a flat result for :func:`emit`: one row per key, lists and dicts on one line."""
    def human(console: Console) -> None:
        from rich.table import Table

        table = Table(title=title, show_header=False, box=None)
        for key, value in result.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                value = ", ".join(map(str, value)) or "-"
            table.add_row(key, str(value))
        console.print(table)

    return human


def info(message: str) -> None:
    """A human status line on stderr (silent with --quiet or --json)."""
    if not (state.quiet or state.json):
        stderr.print(redact(message), markup=False, highlight=False)


class PlainProgress:
    """Progress for logs and CI: a line per task at most every ``every`` seconds, and at the end."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task_id in self.tasks:
            self._print(task_id)

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": 0, "start": time.monotonic(),
                               "printed": time.monotonic()}
        return task_id

    def update(self, task_id: int, *, total: float | None = None, advance: float = 0, **_: Any) -> None:
        task = self.tasks[task_id]
        if total is not None:
            task["total"] = total
        task["completed"] += advance
        if time.monotonic() - task["printed"] >= self.every:
            self._print(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _print(self, task_id: int) -> None:
        task = self.tasks[task_id]
        task["printed"] = time.monotonic()
        elapsed = max(time.monotonic() - task["start"], 1e-9)
        total = f"/{task['total']:.0f}" if task["total"] else ""
        info(f"{task['description']}: {task['completed']:.0f}{total} ({task['completed'] / elapsed:.1f}/s)")


class ObjectRateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f}/s")


def progress(*, transfer: bool = False) -> Progress | PlainProgress:
    """Rich bars (objects or bytes, rate, ETA) on a terminal; plain lines elsewhere."""
    if state.quiet or state.json or not stderr.is_terminal:
        return PlainProgress()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TransferSpeedColumn() if transfer else ObjectRateColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=False,
    )
