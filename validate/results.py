"""Per-object results and the report that collects them (rclone-check semantics).

Every compared object gets one :class:`ObjectResult` with a status symbol, as in
``rclone check --combined``: ``=`` identical, ``+`` only in the source (missing from the
target), ``-`` only in the target (extra), ``*`` present on both sides but different, ``!``
could not be read. The JSON form is documented in docs/validation-report.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum

SCHEMA_VERSION = 1


class Status(str, Enum):
    SAME = "="
    MISSING = "+"
    EXTRA = "-"
    DIFFERS = "*"
    ERROR = "!"


SUMMARY_COLUMNS = {
    Status.SAME: "matched",
    Status.MISSING: "missing",
    Status.EXTRA: "extra",
    Status.DIFFERS: "differ",
    Status.ERROR: "error",
}


@dataclass
class ObjectResult:
    """One compared object. ``path`` names it, e.g. ``experiments/<name>/runs/<run>/params/<key>``."""

    status: Status
    kind: str
    path: str
    experiment: str | None = None
    detail: str = ""
    source: object = None
    target: object = None
    series: dict | None = None  # {"key", "source": [[step, value]...], "target": [...]} for charts

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status.value
        data["source"] = _jsonable(self.source)
        data["target"] = _jsonable(self.target)
        if self.series is None:
            del data["series"]
        else:
            data["series"] = {key: _jsonable(value) for key, value in self.series.items()}
        return data


def _jsonable(value):
    """JSON has no NaN/inf: write them as the strings MLflow's REST API uses."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return value


@dataclass
class Report:
    source: str
    target: str
    options: dict
    results: list[ObjectResult] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    seconds: float = 0.0
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # side -> endpoint -> count
    ignored: int = 0
    not_applicable: list[str] = field(default_factory=list)  # kinds the source cannot hold

    @property
    def one_way(self) -> bool:
        return bool(self.options.get("one_way"))

    def failing(self) -> list[ObjectResult]:
        """Results that make the validation fail (extra objects are fine with --one-way)."""
        bad = {Status.MISSING, Status.DIFFERS, Status.ERROR} | (set() if self.one_way else {Status.EXTRA})
        return [result for result in self.results if result.status in bad]

    @property
    def ok(self) -> bool:
        return not self.failing()

    def differences(self) -> list[ObjectResult]:
        return [result for result in self.results if result.status is not Status.SAME]

    def summary(self) -> dict[str, dict[str, int]]:
        """kind -> {matched, missing, extra, differ, error}, kinds in first-seen order."""
        counts: dict[str, Counter] = {}
        for result in self.results:
            counts.setdefault(result.kind, Counter())[result.status] += 1
        return {
            kind: {column: counter.get(status, 0) for status, column in SUMMARY_COLUMNS.items()}
            for kind, counter in counts.items()
        }

    def totals(self) -> dict[str, int]:
        totals = Counter()
        for row in self.summary().values():
            totals.update(row)
        return {column: totals.get(column, 0) for column in SUMMARY_COLUMNS.values()}

    def combined_lines(self) -> list[str]:
        return [f"{result.status.value} {result.path}" for result in self.results]

    def to_dict(self) -> dict:
        return {
            "schema": "mlflow-sync/validate-report",
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "target": self.target,
            "options": self.options,
            "started": self.started,
            "finished": self.finished,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "totals": self.totals(),
            "summary": self.summary(),
            "ignored": self.ignored,
            "not_applicable": self.not_applicable,
            "requests": self.requests,
            "results": [result.to_dict() for result in self.results],
        }
