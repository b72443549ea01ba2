"""Export, import and one-shot migration between MLflow servers.

The public API, also used by sync and snapshots: :func:`export`, :func:`import_export` and
:func:`migrate` (the commands' plain functions), and the two engines they drive, :class:`Exporter`
(a source into the export format) and :class:`Importer` (the export format into a target).
"""

from mlflow_sync.migrate.exporter import (
    HISTORY_RUNS_PER_REQUEST,
    Exporter,
    ExportFilters,
    logged_model_record,
    prompt_record,
    registered_model_record,
)
from mlflow_sync.migrate.importer import Importer, ImportOptions, log_batch_bodies
from mlflow_sync.migrate.outcome import Outcome
from mlflow_sync.migrate.service import JOURNAL, export, export_plan, import_export, migrate, validate_target

__all__ = [
    "HISTORY_RUNS_PER_REQUEST",
    "JOURNAL",
    "ExportFilters",
    "Exporter",
    "ImportOptions",
    "Importer",
    "Outcome",
    "export",
    "export_plan",
    "import_export",
    "log_batch_bodies",
    "logged_model_record",
    "migrate",
    "prompt_record",
    "registered_model_record",
    "validate_target",
]
