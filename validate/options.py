"""What a validation compares and how strictly (the documented tolerances live here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mlflow_sync.errors import UsageError

CHECKS = ("experiments", "runs", "artifacts", "logged_models", "registered_models", "traces", "prompts",
          "evaluation_datasets")
"""Everything ``--checks`` can select; all of them by default."""

DEFAULT_IGNORED_TAGS = (
    "mlflow_sync.*",          # added by mlflow-sync itself (idempotency keys of safe creates)
    "mlflow_exim.*",          # source-identity tags the importer writes
    "mlflow.parentRunId",     # compared as the mapped parent link (attributes/parent_run)
    "mlflow.artifactLocation",  # trace tag the server derives from the new trace id
    "mlflow.sourceRun",       # trace metadata, compared as the mapped linked run
    "mlflow.trace.sizeStats",  # trace metadata the server computes on ingest
    "mlflow.trace.sizeBytes",
    "mlflow.trace.infoFinalized",  # trace metadata an MLflow 3 server adds when a trace is created
    "mlflow.traceRequestId",  # span attribute holding the trace's own (new) id
    "mlflow.experimentId",    # span attribute holding the server-local experiment id
    "_mlflow_experiment_ids",  # prompt tag holding server-local experiment ids
)
"""Tag (and trace metadata / span attribute) keys the tool or the server add or rewrite:
not compared. Patterns are shell-style (fnmatch). ``--ignore-tag`` adds more."""


@dataclass(frozen=True)
class ValidateOptions:
    """Options of one validation.

    ``float_tolerance`` is relative: two finite floats match when
    ``|a - b| <= float_tolerance * max(|a|, |b|)`` (0, the default, means exact). NaN matches
    NaN and +/-inf match the same infinity, whatever the tolerance.
    ``ignore_paths`` are fnmatch patterns on object paths: matching objects are left out of the
    report (and counted in ``ignored``).
    """

    checks: tuple[str, ...] = CHECKS
    one_way: bool = False
    metric_history: bool = False
    checksum: bool = False
    float_tolerance: float = 0.0
    ignore_tags: tuple[str, ...] = ()
    ignore_paths: tuple[str, ...] = ()
    workers: int = 8
    skip_kinds: frozenset[str] = frozenset()  # kinds the job left out on purpose (--skip-kind)

    def __post_init__(self):
        unknown = sorted(set(self.checks) - set(CHECKS))
        if unknown:
            raise UsageError(f"unknown check(s) {', '.join(unknown)}: choose from {', '.join(CHECKS)}")
        if self.float_tolerance < 0:
            raise UsageError("--float-tolerance must be zero or positive")
        if self.workers < 1:
            raise UsageError("--workers must be at least 1")

    @property
    def ignored_tags(self) -> tuple[str, ...]:
        return DEFAULT_IGNORED_TAGS + tuple(self.ignore_tags)

    def wants(self, check: str) -> bool:
        return check in self.checks

    @property
    def skipped_checks(self) -> frozenset[str]:
        return frozenset(self.skip_kinds) & frozenset(CHECKS)

    def compares_run(self, run) -> bool:
        """Deleted source runs are compared unless the job skipped them (``--skip-kind deleted-runs``)."""
        return "deleted_runs" not in self.skip_kinds or run.lifecycle_stage != "deleted"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["checks"] = list(self.checks)
        data["ignore_tags"] = list(self.ignore_tags)
        data["ignore_paths"] = list(self.ignore_paths)
        data["skip_kinds"] = sorted(self.skip_kinds)
        return data


def parse_checks(value: str | None) -> tuple[str, ...]:
    """``"runs,artifacts"`` -> ("runs", "artifacts"); None or "all" -> every check."""
    if value is None or value.strip().lower() in ("", "all"):
        return CHECKS
    checks = tuple(part.strip().lower().replace("-", "_") for part in value.split(",") if part.strip())
    if not checks:  # "," would otherwise compare nothing and report a match
        raise UsageError(f"--checks {value!r} names no check: choose from {', '.join(CHECKS)}")
    return checks
