"""The request budget: a per-server rate limit shared by every thread, and retries with tenacity.

Every request the tool sends to a tracking server, first attempts and retries alike, takes a
slot from that server's :class:`RateLimiter` first, so ``--max-rps`` holds at the server.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import tenacity

from mlflow_sync.config import RetrySettings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
UNAVAILABLE_STATUS = RETRYABLE_STATUS - {500}

# MLflow's SQL store answers a database it could not use for the moment with 400 BAD_REQUEST
# (sqlalchemy errors wrapped as MlflowException): an overloaded server, not a bad request.
# See migrate/upstream.py "db-overload-as-400".
TRANSIENT_DATABASE_ERRORS = (
    "QueuePool limit",  # no connection free within the pool timeout
    "database is locked",  # SQLite writer lock
    "Deadlock found",  # MySQL/MariaDB rolled the transaction back
    "could not serialize access",  # PostgreSQL serialization failure, rolled back
)


def is_trace_span_download(response: requests.Response) -> bool:
    """Is this the download of a trace's span file? A 500 there means the file is not in the artifact
    store (upstream defect "trace-span-file-missing"), which no retry changes."""
    request = getattr(response, "request", None)
    path = urlsplit(getattr(request, "url", None) or "").path
    return getattr(request, "method", None) == "GET" and (
        path.endswith("/get-trace-artifact") or (path.endswith("/traces.json") and "/mlflow-artifacts/" in path))


def is_transient(response: requests.Response) -> bool:
    """A response worth retrying: 408, 429, 500, 502, 503, 504 (not 501 or 505: retrying will not help),
    or MLflow's 400 for a busy database; a 500 for a trace's missing span file is final."""
    if response.status_code == 500 and is_trace_span_download(response):
        return False
    if response.status_code in RETRYABLE_STATUS:
        return True
    return response.status_code == 400 and any(marker in response.text for marker in TRANSIENT_DATABASE_ERRORS)
"""Still answered after the whole retry budget, these mean the server is unavailable: the job stops.
A lasting 500 is more likely this one object's problem: it is reported with the object instead."""


class RateLimiter:
    """At most ``rps`` requests in any sliding window of one second, spread out.

    Two rules, both enforced under one lock: a log of recent send times never holds more than
    ``floor(rps)`` entries younger than the window plus a small margin (which absorbs scheduling
    jitter between us and the server's clock, so the server never counts more than the budget in
    a second), and consecutive sends are at least ``1/(2*rps)`` apart: no bursts, but a slot
    nobody was ready for is not lost; the window still holds the average to ``rps``.
    """

    def __init__(self, rps: float, *, window: float = 1.0, margin: float = 0.03):
        if rps <= 0:
            raise ValueError("rps must be positive")
        self.rps = rps
        self._interval = 1.0 / (2 * rps)
        window = max(window, 1.0 / rps)  # below 1 rps: one request per 1/rps seconds, not one a second
        self._capacity = max(1, int(rps * window))
        self._window = window + margin
        self._sent: deque[float] = deque()
        self._next_send = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and now - self._sent[0] >= self._window:
                    self._sent.popleft()
                wait = self._next_send - now
                if len(self._sent) >= self._capacity:
                    wait = max(wait, self._sent[0] + self._window - now)
                if wait <= 0:
                    self._sent.append(now)
                    self._next_send = now + self._interval
                    return
            time.sleep(wait)


class _Unlimited:
    def acquire(self) -> None:
        return None


UNLIMITED = _Unlimited()

_limiters: dict[tuple[str, float], RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(server_key: str, rps: float | None) -> RateLimiter | _Unlimited:
    """The one limiter of a server in this process, however many clients talk to it."""
    if not rps:
        return UNLIMITED
    with _limiters_lock:
        key = (server_key, float(rps))
        if key not in _limiters:
            _limiters[key] = RateLimiter(rps)
        return _limiters[key]


CONCURRENT_LOG_BATCHES = 4
"""At most this many ``runs/log-batch`` requests in flight at one server (migrate/upstream.py
"log-batch-pool-deadlock"): MLflow's SQL store holds two pooled connections per log-batch (a
session around nested sessions), so as many concurrent log-batches as the pool has connections
(15 by default) deadlock the pool for 30 s and then fail. The server handles log-batches one
core's worth at a time anyway: four in flight keep it busy."""

_log_batch_slots: dict[str, threading.BoundedSemaphore] = {}


def log_batch_slots_for(server_key: str) -> threading.BoundedSemaphore:
    """The one log-batch semaphore of a server in this process, however many clients talk to it."""
    with _limiters_lock:
        return _log_batch_slots.setdefault(server_key, threading.BoundedSemaphore(CONCURRENT_LOG_BATCHES))


class TransientHTTPError(Exception):
    """A response worth retrying (see ``is_transient``); carries the response for Retry-After."""

    def __init__(self, response: requests.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    TransientHTTPError,
)


def is_ambiguous(exc: BaseException) -> bool:
    """True when the server may have acted on the request although we saw a failure.

    A refused connection or a 429 means the request was not processed; a reset, a read timeout
    or a 5xx from a gateway may come after the server already committed the change.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower():
        return False
    if isinstance(exc, TransientHTTPError):
        return exc.response.status_code not in (429, 408)
    return isinstance(exc, TRANSIENT_EXCEPTIONS)


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Seconds the server asked us to wait (delta-seconds or HTTP-date), if it said so."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: back off as usual
            return None
        return max(0.0, parsed.timestamp() - time.time())


def describe_failure(exc: BaseException) -> str:
    """A few words for a transport failure, without the library's long repr."""
    if isinstance(exc, TransientHTTPError):
        return str(exc)
    text = str(exc).lower()
    for marker in ("connection refused", "connection reset", "read timed out", "timed out", "remote end closed"):
        if marker in text:
            return marker
    return type(exc).__name__


@dataclass
class RetryStats:
    retries: int = 0
    waited_seconds: float = 0.0


class RetryPolicy:
    """Exponential backoff with full jitter, honouring Retry-After, bounded in attempts and time."""

    def __init__(self, settings: RetrySettings):
        self.settings = settings

    def _wait(self, state: tenacity.RetryCallState) -> float:
        s = self.settings
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_seconds(exc.response) if isinstance(exc, TransientHTTPError) else None
        if asked is not None:
            return min(asked, s.max_wait)
        ceiling = min(s.max_wait, s.initial_wait * (2 ** (state.attempt_number - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def call(
        self,
        attempt: Callable[[], requests.Response],
        *,
        before_retry: Callable[[BaseException], requests.Response | None] | None = None,
        describe: str = "request",
        stats: RetryStats | None = None,
    ) -> requests.Response:
        """Run ``attempt`` until it succeeds, is not transient, or the budget is spent.

        ``before_retry`` sees each transient failure before the next attempt; when it returns a
        response (for example the object an ambiguous create did make), that response is final.
        After the last attempt a transient *status* is returned as is, so the caller reports
        the server's own error; a transient exception is raised.
        """
        s = self.settings
        found: list[requests.Response] = []

        def once() -> requests.Response:
            response = attempt()
            if is_transient(response):
                raise TransientHTTPError(response)
            return response

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()
            wait = state.next_action.sleep if state.next_action else 0.0
            if stats is not None:
                stats.retries += 1
                stats.waited_seconds += wait
            log.info("%s: %s; retry %d in %.1fs", describe, describe_failure(exc), state.attempt_number, wait)

        def check_done(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception()
            if not isinstance(exc, TRANSIENT_EXCEPTIONS):
                return False
            if before_retry is not None:
                existing = before_retry(exc)
                if existing is not None:
                    found.append(existing)
                    return False
            return True

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(s.max_attempts) | tenacity.stop_after_delay(s.max_total_seconds),
            wait=self._wait,
            retry=check_done,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            response = retrying(once)
        except TransientHTTPError as exc:
            if found:
                return found[0]
            return exc.response
        except TRANSIENT_EXCEPTIONS:
            if found:
                return found[0]
            raise
        return response
