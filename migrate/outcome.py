"""Per-object retries and the list of objects that still failed: nothing is lost silently."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from mlflow_sync.connection import first_line
from mlflow_sync.errors import SyncError, sync_error_in

log = logging.getLogger(__name__)

T = TypeVar("T")

OBJECT_ATTEMPTS = 3
"""Attempts per object. Each request inside already has the server's retry policy; this retries
the object as a whole (e.g. a half-uploaded artifact set) before reporting it."""


@dataclass(frozen=True)
class Failure:
    kind: str
    name: str
    source_id: str
    reason: str


class Outcome:
    """Counts of what was done per kind, and the failures, shared by worker threads."""

    def __init__(self):
        self.done: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.failures: list[Failure] = []
        self.stopped: SyncError | None = None
        self._lock = threading.Lock()

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.done[kind] += n

    def skip(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.skipped[kind] += n

    def fail(self, kind: str, name: str, source_id: str, exc: BaseException) -> None:
        failure = Failure(kind, name, source_id, first_line(exc))
        log.error("%s %r (%s) failed: %s", kind, name, source_id, failure.reason)
        with self._lock:
            self.failures.append(failure)

    def attempt(self, kind: str, name: str, source_id: str, action: Callable[[], T]) -> T | None:
        """Run ``action`` up to OBJECT_ATTEMPTS times; record a failure (and return None) if it never succeeds."""
        for attempt in range(1, OBJECT_ATTEMPTS + 1):
            if self.stopped is not None:
                raise self.stopped  # another worker hit a job-stopping error: start nothing new
            try:
                return action()
            except Exception as exc:  # noqa: BLE001 - reported below, by name, with its reason
                # A usage or connection problem (a server down for the whole retry budget arrives
                # wrapped in MLflow's exception, issue 7): stop the job, it is not this object's fault.
                stop = sync_error_in(exc)
                if stop is not None:
                    self.stopped = stop
                    raise stop from None
                if attempt == OBJECT_ATTEMPTS:
                    self.fail(kind, name, source_id, exc)
                    return None
                log.warning("%s %r: attempt %d failed (%s), retrying", kind, name, attempt, first_line(exc))
                time.sleep(attempt)
        return None

    def as_dict(self) -> dict:
        return {
            "done": dict(self.done),
            "skipped": dict(self.skipped),
            "failures": [asdict(f) for f in self.failures],
        }

    def raise_if_failed(self, what: str) -> None:
        if self.failures:
            first = self.failures[0]
            more = f" (and {len(self.failures) - 1} more, see the report)" if len(self.failures) > 1 else ""
            raise SyncError(f"{what}: {len(self.failures)} object(s) failed; first: {first.kind} "
                            f"{first.name!r}: {first.reason}{more}")
