"""Prove source and target match, object by object.

For other capabilities (migrate, snapshots)::

    from mlflow_sync.validate import ValidateOptions, validate
    report = validate(source_server, target_server, ValidateOptions(one_way=True))
    if not report.ok: ...

``validate`` never raises for differences; :func:`validate_and_report` writes the requested
report files and raises :class:`~mlflow_sync.errors.MismatchError` (exit code 4) on a mismatch.
"""

from mlflow_sync.validate.engine import validate
from mlflow_sync.validate.export_reader import ExportReader
from mlflow_sync.validate.options import CHECKS, ValidateOptions
from mlflow_sync.validate.results import ObjectResult, Report, Status
from mlflow_sync.validate.service import ReportFiles, ValidationMismatch, validate_and_report

__all__ = [
    "CHECKS",
    "ExportReader",
    "ObjectResult",
    "Report",
    "ReportFiles",
    "Status",
    "ValidateOptions",
    "ValidationMismatch",
    "validate",
    "validate_and_report",
]
