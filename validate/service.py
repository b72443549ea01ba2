"""Validation as a job: compare, write the report files, judge (sides are opened by :mod:`.sides`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow_sync.connection import Server
from mlflow_sync.errors import MismatchError, UsageError
from mlflow_sync.validate.engine import validate
from mlflow_sync.validate.options import ValidateOptions
from mlflow_sync.validate.reader import SideReader
from mlflow_sync.validate.results import Report


class ValidationMismatch(MismatchError):
    """The target does not match; carries the full report for whoever renders it."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ReportFiles:
    """Where to write reports (None: not written)."""

    json: Path | None = None
    html: Path | None = None
    junit: Path | None = None
    combined: Path | None = None

    def check(self) -> None:
        """Fail before any request if two reports would overwrite each other or a path is a directory."""
        paths = [p for p in (self.json, self.html, self.junit, self.combined) if p is not None]
        if len({p.resolve() for p in paths}) != len(paths):
            raise UsageError("two report options point at the same file")
        for path in paths:
            if path.is_dir():
                raise UsageError(f"report path {str(path)!r} is a directory")

    def write(self, report: Report) -> list[Path]:
        from mlflow_sync.validate.html import write_html
        from mlflow_sync.validate.reports import write_combined, write_json, write_junit

        written = []
        for path, writer in ((self.json, write_json), (self.html, write_html), (self.junit, write_junit),
                             (self.combined, write_combined)):
            if path is not None:
                written.append(writer(report, path))
        return written


def validate_and_report(source: Server | SideReader, target: Server | SideReader, options: ValidateOptions,
                        files: ReportFiles = ReportFiles()) -> Report:
    """Validate, write every requested report, raise MismatchError unless the target matches."""
    files.check()
    report = validate(source, target, options)
    files.write(report)
    if not report.ok:
        failing = report.failing()
        first = failing[0]
        raise ValidationMismatch(
            f"{len(failing)} object(s) do not match between {report.source} and {report.target}; "
            f"first: {first.status.value} {first.path}",
            report,
        )
    return report
