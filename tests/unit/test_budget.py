"""Unit tests of mlflow_sync.budget: the per-server rate limiter and the retry policy."""

from __future__ import annotations

import email.utils
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import requests

from mlflow_sync import budget
from mlflow_sync.budget import (
    CONCURRENT_LOG_BATCHES,
    UNLIMITED,
    RateLimiter,
    RetryPolicy,
    RetryStats,
    TransientHTTPError,
    describe_failure,
    is_ambiguous,
    is_trace_span_download,
    is_transient,
    limiter_for,
    log_batch_slots_for,
    retry_after_seconds,
)
from mlflow_sync.config import RetrySettings

API = "http://tracking.example:5000/api/2.0/mlflow"


def make_response(status: int, text: str = "", *, headers: dict | None = None, method: str = "GET",
                  url: str = f"{API}/runs/get") -> requests.Response:
    response = requests.models.Response()
    response.status_code = status
    response._content = text.encode()
    response.encoding = "utf-8"
    response.headers.update(headers or {})
    response.url = url
    response.request = requests.Request(method, url).prepare()
    return response


class FakeClock:
    """Stands in for the ``time`` module inside mlflow_sync.budget: sleeping advances the clock."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter slept for a non-positive time"
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget, "time", fake)
    return fake


def send_times(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(clock.now)
    return times


# --- RateLimiter ------------------------------------------------------------------------------


def test_first_acquire_does_not_wait(clock):
    RateLimiter(10).acquire()
    assert clock.sleeps == []


@pytest.mark.parametrize("rps", [0, -1, -0.5])
def test_rps_must_be_positive(rps):
    with pytest.raises(ValueError):
        RateLimiter(rps)


def test_consecutive_sends_are_spread_half_an_interval_apart(clock):
    times = send_times(RateLimiter(10), clock, 5)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx([0.05] * 4)


@pytest.mark.parametrize("rps", [1, 3, 10, 50])
def test_no_sliding_window_of_one_second_holds_more_than_rps_sends(clock, rps):
    times = send_times(RateLimiter(rps), clock, 4 * rps + 3)
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + 1.0]
        assert len(in_window) <= rps, f"{len(in_window)} sends in the second from {start - times[0]:.3f}s"


@pytest.mark.parametrize("rps", [1, 4, 10, 25])
def test_long_run_pacing_is_about_n_minus_one_over_rps(clock, rps):
    count = 4 * rps + 1
    times = send_times(RateLimiter(rps), clock, count)
    elapsed = times[-1] - times[0]
    ideal = (count - 1) / rps
    assert ideal <= elapsed <= ideal * 1.05


def test_an_idle_slot_is_not_lost(clock):
    limiter = RateLimiter(10)
    limiter.acquire()
    clock.now += 5.0  # nobody sent anything for a while
    start = clock.now
    times = send_times(limiter, clock, 10)
    assert times[0] == start
    assert times[-1] - start == pytest.approx(9 * 0.05)  # only the spreading, no window wait


def test_fractional_rps_below_one_is_honoured(clock):
    rps = 0.5
    times = send_times(RateLimiter(rps), clock, 4)
    assert times[-1] - times[0] >= 0.95 * (len(times) - 1) / rps


def test_limiter_is_shared_between_threads_in_real_time():
    """Two clients of one server (each asking limiter_for itself) share one budget: 12 sends at
    50 rps cannot all go within 0.1 s, as they would with one limiter per thread."""
    key = f"http://shared-{uuid.uuid4().hex}"
    barrier = threading.Barrier(2)

    def client() -> None:
        limiter = limiter_for(key, 50)
        barrier.wait()
        for _ in range(6):
            limiter.acquire()

    threads = [threading.Thread(target=client) for _ in range(2)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    elapsed = time.monotonic() - start
    assert 11 * 0.01 * 0.9 <= elapsed < 1.0


# --- limiter_for / log_batch_slots_for -----------------------------------------------------------


def test_limiter_for_returns_one_limiter_per_server_and_rate():
    key = f"http://a-{uuid.uuid4().hex}"
    first = limiter_for(key, 20)
    assert isinstance(first, RateLimiter)
    assert first.rps == 20
    assert limiter_for(key, 20) is first
    assert limiter_for(key, 20.0) is first
    other_server = limiter_for(f"http://b-{uuid.uuid4().hex}", 20)
    assert other_server is not first
    other_rate = limiter_for(key, 5)
    assert other_rate is not first and other_rate.rps == 5


@pytest.mark.parametrize("rps", [None, 0])
def test_no_rps_means_unlimited(clock, rps):
    limiter = limiter_for(f"http://u-{uuid.uuid4().hex}", rps)
    assert limiter is UNLIMITED
    for _ in range(500):
        limiter.acquire()
    assert clock.sleeps == []
    assert clock.now == 1000.0


def test_log_batch_slots_are_shared_and_bounded():
    key = f"http://lb-{uuid.uuid4().hex}"
    slots = log_batch_slots_for(key)
    assert log_batch_slots_for(key) is slots
    assert log_batch_slots_for(f"http://other-{uuid.uuid4().hex}") is not slots
    taken = [slots.acquire(blocking=False) for _ in range(CONCURRENT_LOG_BATCHES)]
    assert all(taken)
    assert not slots.acquire(blocking=False)
    for _ in taken:
        slots.release()
    with pytest.raises(ValueError):  # bounded: a release without an acquire is a bug
        slots.release()


# --- which responses and failures are retried ---------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(status):
    assert is_transient(make_response(status))


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 409, 501, 505])
def test_other_statuses_are_not_transient(status):
    assert not is_transient(make_response(status, '{"error_code": "SOMETHING"}'))


@pytest.mark.parametrize("marker", ["QueuePool limit of size 5 overflow 10 reached",
                                    "(sqlite3.OperationalError) database is locked",
                                    "Deadlock found when trying to get lock; try restarting transaction",
                                    "could not serialize access due to concurrent update"])
def test_mlflow_busy_database_400_is_transient(marker):
    body = f'{{"error_code": "BAD_REQUEST", "message": "{marker}"}}'
    assert is_transient(make_response(400, body))
    assert not is_transient(make_response(404, body))  # only MLflow's 400 wraps database errors


def test_plain_400_is_not_transient():
    assert not is_transient(make_response(400, '{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}'))


@pytest.mark.parametrize("method, url, expected", [
    ("GET", f"{API}/get-trace-artifact?request_id=tr-1", True),
    ("GET", "http://h:5000/ajax-api/2.0/mlflow/get-trace-artifact", True),
    ("GET", "http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/traces/tr-1/artifacts/traces.json", True),
    ("POST", f"{API}/get-trace-artifact", False),
    ("GET", "http://h:5000/api/2.0/other/traces.json", False),
    ("GET", "http://h:5000/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model.pkl", False),
    ("GET", f"{API}/runs/get?run_id=x", False),
])
def test_is_trace_span_download(method, url, expected):
    assert is_trace_span_download(make_response(500, method=method, url=url)) is expected


def test_response_without_request_is_not_a_span_download():
    response = requests.models.Response()
    response.status_code = 500
    assert not is_trace_span_download(response)
    assert is_transient(response)


def test_500_of_a_span_download_is_final_but_other_failures_of_it_are_transient():
    url = f"{API}/get-trace-artifact?request_id=tr-1"
    assert not is_transient(make_response(500, method="GET", url=url))
    assert is_transient(make_response(503, method="GET", url=url))
    assert is_transient(make_response(500, method="POST", url=url))


@pytest.mark.parametrize("exc, expected", [
    (requests.exceptions.ConnectTimeout("connect timed out"), False),
    (requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"), False),
    (requests.ConnectionError("Connection aborted. ConnectionResetError(104, 'Connection reset by peer')"), True),
    (requests.exceptions.ReadTimeout("Read timed out. (read timeout=120)"), True),
    (requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), True),
    (TransientHTTPError(make_response(429)), False),
    (TransientHTTPError(make_response(408)), False),
    (TransientHTTPError(make_response(500)), True),
    (TransientHTTPError(make_response(502)), True),
    (TransientHTTPError(make_response(503)), True),
    (TransientHTTPError(make_response(504)), True),
    (ValueError("not a transport failure"), False),
    (requests.exceptions.InvalidURL("nope"), False),
])
def test_is_ambiguous(exc, expected):
    assert is_ambiguous(exc) is expected


# --- Retry-After --------------------------------------------------------------------------------


def test_retry_after_absent():
    assert retry_after_seconds(None) is None
    assert retry_after_seconds(make_response(503)) is None
    assert retry_after_seconds(make_response(503, headers={"Retry-After": ""})) is None


@pytest.mark.parametrize("value, seconds", [("5", 5.0), ("0", 0.0), ("1.5", 1.5), ("120", 120.0), ("-3", 0.0)])
def test_retry_after_delta_seconds(value, seconds):
    assert retry_after_seconds(make_response(429, headers={"Retry-After": value})) == seconds


def test_retry_after_header_name_is_case_insensitive():
    assert retry_after_seconds(make_response(429, headers={"retry-after": "7"})) == 7.0


def test_retry_after_http_date_in_the_future(clock):
    clock.now = 1_700_000_000.0
    value = email.utils.formatdate(clock.now + 30, usegmt=True)
    assert retry_after_seconds(make_response(503, headers={"Retry-After": value})) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero(clock):
    clock.now = 1_700_000_000.0
    value = email.utils.formatdate(clock.now - 3600, usegmt=True)
    assert retry_after_seconds(make_response(503, headers={"Retry-After": value})) == 0.0


def test_retry_after_rfc_example_date(clock):
    clock.now = 1445412480.0 - 10  # 10 s before Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(make_response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) \
        == pytest.approx(10.0)


def test_unparseable_retry_after_is_ignored():
    assert retry_after_seconds(make_response(503, headers={"Retry-After": "soon"})) is None


# --- describe_failure -------------------------------------------------------------------------


@pytest.mark.parametrize("exc, words", [
    (TransientHTTPError(make_response(503)), "HTTP 503"),
    (requests.ConnectionError("Failed to establish a new connection: [Errno 111] Connection refused"),
     "connection refused"),
    (requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"),
     "connection reset"),
    (requests.exceptions.ReadTimeout("HTTPConnectionPool(host='h', port=5000): Read timed out. (read timeout=1)"),
     "read timed out"),
    (requests.exceptions.ConnectTimeout("Connection to h timed out. (connect timeout=1)"), "timed out"),
    (requests.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed connection "
                              "without response'))"), "remote end closed"),
    (requests.exceptions.ChunkedEncodingError("IncompleteRead(10 bytes read)"), "ChunkedEncodingError"),
    (OSError("something odd"), "OSError"),
])
def test_describe_failure(exc, words):
    assert describe_failure(exc) == words


# --- RetryPolicy ------------------------------------------------------------------------------


def fast_policy(**overrides) -> RetryPolicy:
    settings = {"max_attempts": 4, "initial_wait": 0.001, "max_wait": 0.002, "max_total_seconds": 10.0}
    return RetryPolicy(RetrySettings(**{**settings, **overrides}))


class Script:
    """An ``attempt`` callable that plays outcomes in order (the last one repeats)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> requests.Response:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def test_success_is_returned_at_once():
    ok = make_response(200)
    attempt, stats = Script(ok), RetryStats()
    assert fast_policy().call(attempt, stats=stats) is ok
    assert attempt.calls == 1
    assert stats.retries == 0 and stats.waited_seconds == 0


def test_transient_status_is_retried_until_success():
    ok = make_response(200)
    attempt, stats = Script(make_response(503), make_response(429), ok), RetryStats()
    assert fast_policy().call(attempt, stats=stats) is ok
    assert attempt.calls == 3
    assert stats.retries == 2
    assert stats.waited_seconds > 0


@pytest.mark.parametrize("status", [400, 404, 409, 501])
def test_non_transient_status_is_returned_without_retry(status):
    failed = make_response(status, '{"error_code": "X"}')
    attempt = Script(failed, make_response(200))
    assert fast_policy().call(attempt) is failed
    assert attempt.calls == 1


def test_lasting_transient_status_is_returned_after_the_budget():
    last = make_response(503)
    attempt, stats = Script(make_response(502), make_response(504), make_response(500), last), RetryStats()
    assert fast_policy(max_attempts=4).call(attempt, stats=stats) is last
    assert attempt.calls == 4
    assert stats.retries == 3


def test_lasting_transient_exception_is_raised_after_the_budget():
    attempt = Script(requests.ConnectionError("Connection refused"))
    with pytest.raises(requests.ConnectionError):
        fast_policy(max_attempts=3).call(attempt)
    assert attempt.calls == 3


def test_transient_exception_is_retried_until_success():
    ok = make_response(200)
    attempt = Script(requests.exceptions.ReadTimeout("Read timed out"),
                     requests.exceptions.ChunkedEncodingError("broken"), ok)
    assert fast_policy().call(attempt) is ok
    assert attempt.calls == 3


def test_other_exceptions_are_not_retried():
    attempt = Script(KeyError("bug"), make_response(200))
    with pytest.raises(KeyError):
        fast_policy().call(attempt)
    assert attempt.calls == 1


def test_single_attempt_budget():
    failed = make_response(503)
    attempt = Script(failed, make_response(200))
    assert fast_policy(max_attempts=1).call(attempt) is failed
    assert attempt.calls == 1


def test_budget_in_time_stops_retrying():
    attempt = Script(make_response(503))
    started = time.monotonic()
    result = fast_policy(max_attempts=100, initial_wait=0.02, max_wait=0.02, max_total_seconds=0.06).call(attempt)
    assert result.status_code == 503
    assert 2 <= attempt.calls <= 7  # waits of 0.01..0.02 s, stop checked after each attempt
    assert time.monotonic() - started < 0.5


def test_before_retry_finding_the_object_makes_it_the_answer():
    found = make_response(200, '{"run": {}}')
    seen = []

    def before_retry(exc):
        seen.append(exc)
        return found

    attempt = Script(make_response(502), make_response(200))
    assert fast_policy().call(attempt, before_retry=before_retry) is found
    assert attempt.calls == 1
    assert len(seen) == 1 and isinstance(seen[0], TransientHTTPError) and seen[0].response.status_code == 502


def test_before_retry_finding_the_object_after_an_exception_returns_it():
    found = make_response(200)
    attempt = Script(requests.exceptions.ReadTimeout("Read timed out"))
    assert fast_policy().call(attempt, before_retry=lambda exc: found) is found
    assert attempt.calls == 1


def test_before_retry_finding_nothing_lets_the_retries_go_on():
    ok = make_response(200)
    seen = []
    attempt = Script(make_response(503), requests.ConnectionError("Connection reset by peer"), ok)
    assert fast_policy().call(attempt, before_retry=lambda exc: seen.append(exc)) is ok
    assert attempt.calls == 3
    assert [type(exc) for exc in seen] == [TransientHTTPError, requests.ConnectionError]


def test_before_retry_finding_the_object_at_the_last_failure_wins_over_the_error():
    found = make_response(200)
    checks = []

    def before_retry(exc):
        checks.append(exc)
        return found if len(checks) == 3 else None

    attempt = Script(requests.exceptions.ReadTimeout("Read timed out"))
    assert fast_policy(max_attempts=3).call(attempt, before_retry=before_retry) is found
    assert attempt.calls == 3


def test_before_retry_is_not_asked_about_final_answers():
    seen = []
    failed = make_response(404)
    assert fast_policy().call(Script(failed), before_retry=lambda exc: seen.append(exc)) is failed
    with pytest.raises(ValueError):
        fast_policy().call(Script(ValueError("x")), before_retry=lambda exc: seen.append(exc))
    assert seen == []


def test_retry_after_is_honoured():
    ok = make_response(200)
    attempt, stats = Script(make_response(429, headers={"Retry-After": "0.01"}), ok), RetryStats()
    # without Retry-After the first wait would be 0.25..0.5 s
    assert fast_policy(initial_wait=0.5, max_wait=5.0).call(attempt, stats=stats) is ok
    assert stats.waited_seconds == pytest.approx(0.01)


def test_retry_after_is_capped_by_max_wait():
    ok = make_response(200)
    attempt, stats = Script(make_response(503, headers={"Retry-After": "3600"}), ok), RetryStats()
    assert fast_policy(initial_wait=0.001, max_wait=0.01).call(attempt, stats=stats) is ok
    assert stats.waited_seconds == pytest.approx(0.01)


def test_malformed_retry_after_falls_back_to_backoff():
    ok = make_response(200)
    attempt = Script(make_response(503, headers={"Retry-After": "soon"}), ok)
    assert fast_policy().call(attempt) is ok


def wait_state(attempt_number: int, exc: BaseException | None = None):
    outcome = SimpleNamespace(exception=lambda: exc)
    return SimpleNamespace(attempt_number=attempt_number, outcome=outcome)


@pytest.mark.parametrize("attempt_number, ceiling", [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)])
def test_backoff_is_exponential_with_jitter_and_capped(attempt_number, ceiling):
    policy = RetryPolicy(RetrySettings(initial_wait=0.1, max_wait=0.5))
    exc = TransientHTTPError(make_response(503))
    waits = [policy._wait(wait_state(attempt_number, exc)) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) - min(waits) > ceiling / 10  # jittered, not a constant


def test_backoff_after_an_exception_ignores_retry_after_logic():
    policy = RetryPolicy(RetrySettings(initial_wait=0.1, max_wait=0.5))
    waits = [policy._wait(wait_state(2, requests.ConnectionError("reset"))) for _ in range(50)]
    assert all(0.1 <= w <= 0.2 for w in waits)
