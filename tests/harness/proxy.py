"""A counting, fault-injecting HTTP/1.1 reverse proxy on loopback.

Every MlflowServer sits behind one, so tests can assert how many requests a client sent
(per endpoint, per second) and make the "server" throttle, fail or drop connections.
"""

from __future__ import annotations

import bisect
import functools
import http.client
import json
import logging
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


# ---------------------------------------------------------------------------------------------
# Request accounting


@dataclass(frozen=True)
class RequestRecord:
    arrival: float  # time.monotonic() when the request line was read
    method: str
    path: str  # without the query string
    status: int | None  # None: the client connection was reset instead of answered
    upstream: str | None  # None: the proxy answered itself before routing
    rejected: str | None = None  # why the proxy refused the request (e.g. a SigV4 check)
    fault: str | None = None  # name of the injected fault action, if any

    @property
    def endpoint(self) -> str:
        return f"{self.method} {normalize_path(self.path)}"


class RequestCounter:
    """Thread-safe log of the requests a proxy handled.

    A request is recorded as soon as its outcome is known and before the client sees any of
    the reply, so a client that got its answer can assert on the counter without racing.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def total(self) -> int:
        with self._lock:
            return len(self._records)

    @property
    def rejected(self) -> list[RequestRecord]:
        return [r for r in self.snapshot() if r.rejected]

    def by_endpoint(self) -> Counter[str]:
        """Counter of "METHOD /path" with path parameters normalised (see `normalize_path`)."""
        return Counter(r.endpoint for r in self.snapshot())

    def count(self, endpoint_substring: str) -> int:
        """Requests whose "METHOD /normalised/path" contains `endpoint_substring`."""
        return sum(n for ep, n in self.by_endpoint().items() if endpoint_substring in ep)

    def max_in_window(self, seconds: float = 1.0) -> int:
        """Largest number of requests that arrived within any window of `seconds`."""
        arrivals = sorted(r.arrival for r in self.snapshot())
        best = 0
        for i, start in enumerate(arrivals):
            best = max(best, bisect.bisect_left(arrivals, start + seconds, lo=i) - i)
        return best


def normalize_path(path: str) -> str:
    """Map a concrete MLflow REST path to its route template.

    `/api/2.0/mlflow-artifacts/artifacts/1/abc/m.pkl` -> `/api/2.0/mlflow-artifacts/artifacts/*`,
    `/api/3.0/mlflow/traces/tr-12` -> `/api/3.0/mlflow/traces/{trace_id}`; other paths unchanged.
    """
    literals, templates = _mlflow_routes()
    if path in literals:
        return path
    for pattern, template in templates:
        if pattern.fullmatch(path):
            return template
    return path


@functools.cache
def _mlflow_routes():
    """(literal paths, [(regex, display template)]) of every route in MLflow's REST protos."""
    import re

    from mlflow.protos import databricks_pb2, mlflow_artifacts_pb2, model_registry_pb2, service_pb2

    services = [
        service_pb2.DESCRIPTOR.services_by_name["MlflowService"],
        model_registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
        mlflow_artifacts_pb2.DESCRIPTOR.services_by_name["MlflowArtifactsService"],
    ]
    routes = {
        (endpoint.path, endpoint.since.major)
        for service in services
        for method in service.methods
        for endpoint in method.GetOptions().Extensions[databricks_pb2.rpc].endpoints
    }
    # Flask-only routes of mlflow/server/__init__.py that carry a path parameter.
    routes.add(("/mlflow/logged-models/{model_id}/artifacts/files", 2))
    literals, templates = set(), []
    for path, major in routes:
        for prefix in (f"/api/{major}.0", f"/ajax-api/{major}.0"):
            full = prefix + path
            if "{" not in full and "<" not in full:
                literals.add(full)
                continue
            display = re.sub(r"<path:\w+>", "*", full)
            display = display.replace("{assessment.trace_id}", "{trace_id}")
            regex = re.escape(display).replace(r"\*", ".+")
            regex = re.sub(r"\\\{\w+\\\}", "[^/]+", regex)
            templates.append((re.compile(regex), display))
    # Most specific first: more literal characters win (".../traces/{id}/info" before "{id}").
    templates.sort(key=lambda item: -len(re.sub(r"\{\w+\}|\*", "", item[1])))
    return frozenset(literals), templates


# ---------------------------------------------------------------------------------------------
# Fault injection


@dataclass(frozen=True)
class Respond:
    """Answer with this status/headers/body instead of forwarding (e.g. 429 + Retry-After, 503)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class ResetBeforeForward:
    """Reset the client connection (TCP RST); the upstream never sees the request."""


@dataclass(frozen=True)
class ResetAfterForward:
    """Forward, let the upstream finish, then reset the client connection instead of replying."""


@dataclass(frozen=True)
class Delay:
    """Wait `seconds`, then forward normally."""

    seconds: float


@dataclass(frozen=True)
class DelayAfterForward:
    """Forward, let the upstream finish (the change is made), wait `seconds`, then reply.

    A slow answer to a request that already took effect: a client timing out here, or killed
    meanwhile, never learns that its create succeeded.
    """

    seconds: float


@dataclass(frozen=True)
class DropAfter:
    """Wait `seconds`, then reset the client connection; the upstream never sees the request.

    A request lost in a queue: with `seconds` above the client's read timeout, the client times
    out on a request the server never got (unlike `Delay`, which delivers it late).
    """

    seconds: float


FaultAction = Respond | ResetBeforeForward | ResetAfterForward | Delay | DelayAfterForward | DropAfter


@dataclass
class ProxyRequest:
    """What a fault hook or router sees of a request (the body only when the proxy buffers it)."""

    method: str
    target: str  # path and query exactly as received
    headers: Message
    arrival: float
    body: bytes | None = None
    upstream: str | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


FaultHook = Callable[[ProxyRequest], FaultAction | None]


class FaultRule:
    """A ready-made fault hook: `action` for requests matching all given criteria, `times` times.

    `path_contains` is matched against "METHOD /normalised/path"; `times=None` means always.
    """

    def __init__(
        self,
        action: FaultAction,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        upstream: str | None = None,
        times: int | None = None,
    ):
        self.action = action
        self.method = method
        self.path_contains = path_contains
        self.upstream = upstream
        self.times = times
        self.fired = 0
        self._lock = threading.Lock()

    def __call__(self, request: ProxyRequest) -> FaultAction | None:
        if self.method and request.method != self.method:
            return None
        if self.upstream and request.upstream != self.upstream:
            return None
        if self.path_contains and self.path_contains not in (
            f"{request.method} {normalize_path(request.path)}"
        ):
            return None
        with self._lock:
            if self.times is not None and self.fired >= self.times:
                return None
            self.fired += 1
        return self.action


class RandomFaults:
    """A seeded fault hook: each matching request gets a fault with probability `rate`.

    The fault is drawn (same seed, same sequence) from `actions`: by default every kind a
    throttled or flaky remote service shows: 429 with and without Retry-After, 500/502/503,
    resets before and after the upstream saw the request, a slow answer, and timeouts (set
    `timeout` above the client's read timeout): a request lost before the upstream saw it, and
    an answer lost after the upstream acted. Not in the mix: `Delay` beyond the client's
    timeout, i.e. a request delivered after the client gave up (see docs/guarantees.md).
    `injected` counts the faults fired, by action name; `limit` stops after that many.
    """

    def __init__(
        self,
        rate: float,
        *,
        seed: int = 0,
        actions: list[FaultAction] | None = None,
        timeout: float = 3.0,
        path_contains: str | None = None,
        limit: int | None = None,
    ):
        import random

        self.rate = rate
        self.actions = actions if actions is not None else default_fault_mix(timeout)
        self.path_contains = path_contains
        self.limit = limit
        self.injected: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.injected.values())

    def __call__(self, request: ProxyRequest) -> FaultAction | None:
        if self.path_contains and self.path_contains not in (
            f"{request.method} {normalize_path(request.path)}"
        ):
            return None
        with self._lock:
            if self.limit is not None and sum(self.injected.values()) >= self.limit:
                return None
            if self._random.random() >= self.rate:
                return None
            action = self._random.choice(self.actions)
            self.injected[describe_action(action)] += 1
        return action


def _json_error(status: int, code: str, **headers: str) -> Respond:
    body = json.dumps({"error_code": code, "message": f"injected HTTP {status}"}).encode()
    return Respond(status, {"Content-Type": "application/json", **headers}, body)


def default_fault_mix(timeout: float = 3.0) -> list[FaultAction]:
    """Every fault kind once: the mix `RandomFaults` draws from."""
    return [
        _json_error(429, "REQUEST_LIMIT_EXCEEDED", **{"Retry-After": "0"}),
        _json_error(429, "REQUEST_LIMIT_EXCEEDED"),
        _json_error(500, "INTERNAL_ERROR"),
        _json_error(502, "BAD_GATEWAY"),
        _json_error(503, "TEMPORARILY_UNAVAILABLE"),
        ResetBeforeForward(),
        ResetAfterForward(),
        Delay(0.3),
        DropAfter(timeout),
        DelayAfterForward(timeout),
    ]


def describe_action(action: FaultAction) -> str:
    """A short stable name: "429+Retry-After", "503", "ResetAfterForward", "Delay(0.3s)"."""
    if isinstance(action, Respond):
        retry_after = any(k.lower() == "retry-after" for k in action.headers)
        return f"{action.status}{'+Retry-After' if retry_after else ''}"
    if isinstance(action, (Delay, DelayAfterForward, DropAfter)):
        return f"{type(action).__name__}({action.seconds:g}s)"
    return type(action).__name__


class Rejected(Exception):
    """Raised by `LoopbackProxy.route` to answer the request itself with a JSON error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------
# The proxy


class _UpstreamPool:
    """Keep-alive connections to one upstream.

    A connection idle for longer than `max_idle` is never reused, so it cannot race the
    upstream's own keep-alive timeout (uvicorn closes idle connections after 5 s).
    """

    def __init__(self, host: str, port: int, timeout: float, max_idle: float = 2.0):
        self.host, self.port, self.timeout, self.max_idle = host, port, timeout, max_idle
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def get(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                since, conn = self._idle.pop()
                if now - since < self.max_idle and not _dropped(conn):
                    return conn
                conn.close()
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((time.monotonic(), conn))

    def close(self) -> None:
        with self._lock:
            for _, conn in self._idle:
                conn.close()
            self._idle.clear()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when the idle socket is readable, i.e. the upstream closed it (or sent junk)."""
    if conn.sock is None:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


class LoopbackProxy:
    """Threaded HTTP/1.1 reverse proxy on 127.0.0.1.

    Streams bodies both ways (Content-Length or chunked), strips hop-by-hop headers and sets
    Host to the upstream's host:port (the MLflow server's host check then accepts it).
    `faults` may be replaced at any time. Subclasses override `route()` (and set
    `buffer_body = True` when routing needs the body) to serve several upstreams.
    """

    buffer_body = False

    def __init__(
        self,
        upstream: str | None = None,
        *,
        name: str = "upstream",
        faults: FaultHook | None = None,
        upstream_timeout: float = 300.0,
    ):
        self.counter = RequestCounter()
        self.faults = faults
        self.upstream_timeout = upstream_timeout
        self._pools: dict[str, _UpstreamPool] = {}
        self._default_upstream = None
        if upstream is not None:
            self.add_upstream(name, upstream)
            self._default_upstream = name
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_upstream(self, name: str, url: str) -> None:
        parts = urlsplit(url)
        self._pools[name] = _UpstreamPool(parts.hostname, parts.port or 80, self.upstream_timeout)

    def route(self, request: ProxyRequest) -> str:
        """Name of the upstream for `request`; raise Rejected to refuse it."""
        return self._default_upstream

    def record(self, request: ProxyRequest, status: int | None, **extra) -> RequestRecord:
        record = RequestRecord(
            arrival=request.arrival,
            method=request.method,
            path=request.path,
            status=status,
            upstream=request.upstream,
            **extra,
        )
        self.counter.record(record)
        return record

    def start(self) -> LoopbackProxy:
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name=f"proxy-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(10)
            self._httpd = None
        for pool in self._pools.values():
            pool.close()

    def __enter__(self) -> LoopbackProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def _handler_for(proxy: LoopbackProxy) -> type[BaseHTTPRequestHandler]:
    return type("ProxyHandler", (_ProxyHandler,), {"proxy": proxy})


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # seconds an idle keep-alive client may hold its handler thread
    proxy: LoopbackProxy

    def log_message(self, fmt, *args):
        _log.debug("%s " + fmt, self.address_string(), *args)

    def handle_one_request(self):
        """Like the base class, but dispatch every method to `_serve`."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.send_error(414)
                return
            if not self.parse_request():
                return
            self._serve()
            if not self.wfile.closed:
                self.wfile.flush()
        except (ConnectionError, TimeoutError) as exc:
            _log.debug("client connection ended: %s", exc)
            self.close_connection = True

    # -- request handling ---------------------------------------------------------------------

    def _serve(self) -> None:
        proxy = self.proxy
        request = ProxyRequest(
            method=self.command, target=self.path, headers=self.headers, arrival=time.monotonic()
        )
        if proxy.buffer_body:
            request.body = b"".join(self._body_chunks())
        try:
            request.upstream = proxy.route(request)
        except Rejected as rej:
            self._finish_reading(request)
            proxy.record(request, rej.status, rejected=rej.code)
            body = json.dumps({"code": rej.code, "message": rej.message}).encode()
            self._reply(rej.status, {"Content-Type": "application/json"}, body)
            return

        action = proxy.faults(request) if proxy.faults else None
        fault = type(action).__name__ if action else None
        if isinstance(action, Respond):
            self._finish_reading(request)
            proxy.record(request, action.status, fault=fault)
            self._reply(action.status, action.headers, action.body)
            return
        if isinstance(action, DropAfter):
            time.sleep(action.seconds)
        if isinstance(action, (ResetBeforeForward, DropAfter)):
            proxy.record(request, None, fault=fault)
            self._reset()
            return
        if isinstance(action, Delay):
            time.sleep(action.seconds)
        delay_after = action.seconds if isinstance(action, DelayAfterForward) else 0.0
        self._forward(
            request, reset_after=isinstance(action, ResetAfterForward), fault=fault, delay_after=delay_after
        )

    def _forward(
        self, request: ProxyRequest, *, reset_after: bool, fault: str | None, delay_after: float = 0.0
    ) -> None:
        proxy = self.proxy
        pool = proxy._pools[request.upstream]
        conn = pool.get()
        try:
            self._send_upstream(conn, request, pool)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.close_connection = True
            proxy.record(request, 502, fault=fault)
            body = json.dumps({"code": "BAD_GATEWAY", "message": f"upstream failed: {exc}"})
            self._reply(502, {"Content-Type": "application/json"}, body.encode())
            return

        proxy.record(request, response.status, fault=fault)
        if delay_after:
            time.sleep(delay_after)
        if reset_after:
            response.read()
            self._release(conn, response, pool)
            self._reset()
            return
        try:
            self._relay_response(request, response)
        finally:
            if response.isclosed():
                self._release(conn, response, pool)
            else:  # the client went away mid-body
                conn.close()

    def _send_upstream(
        self, conn: http.client.HTTPConnection, request: ProxyRequest, pool: _UpstreamPool
    ) -> None:
        conn.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
        # Expect: 100-continue was already answered to the client by BaseHTTPRequestHandler.
        drop = _HOP_BY_HOP | _connection_tokens(self.headers) | {"host", "expect"}
        if request.body is not None:
            drop |= {"content-length"}
        for name, value in self.headers.items():
            if name.lower() not in drop:
                conn.putheader(name, value)
        conn.putheader("Host", f"{pool.host}:{pool.port}")
        chunked = request.body is None and _is_chunked(self.headers)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif request.body or (request.body is not None and "Content-Length" in self.headers):
            conn.putheader("Content-Length", str(len(request.body)))
        conn.endheaders()
        if request.body is not None:
            conn.send(request.body)
            return
        for chunk in self._body_chunks():
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            conn.send(b"0\r\n\r\n")

    def _relay_response(self, request: ProxyRequest, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        drop = _HOP_BY_HOP | _connection_tokens(response.msg)
        for name, value in response.msg.items():
            if name.lower() not in drop:
                self.send_header(name, value)
        status = response.status
        bodyless = request.method == "HEAD" or status in (204, 304) or status < 200
        rechunk = not bodyless and response.getheader("Content-Length") is None
        if rechunk:
            if self.request_version == "HTTP/1.1":
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True  # HTTP/1.0: the body ends when the connection does
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if bodyless:
            return
        chunked_out = rechunk and self.request_version == "HTTP/1.1"
        while chunk := response.read(_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked_out else chunk)
        if chunked_out:
            self.wfile.write(b"0\r\n\r\n")

    @staticmethod
    def _release(conn, response: http.client.HTTPResponse, pool: _UpstreamPool) -> None:
        if response.will_close:
            conn.close()
        else:
            pool.put(conn)

    # -- client side helpers ------------------------------------------------------------------

    def _body_chunks(self):
        """The request body as received (de-chunked), in pieces."""
        if _is_chunked(self.headers):
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline(3)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(_CHUNK, remaining))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(chunk)
                yield chunk

    def _finish_reading(self, request: ProxyRequest) -> None:
        """Consume an unread body so the connection can serve the next request."""
        if request.body is None:
            for _ in self._body_chunks():
                pass

    def _reply(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _reset(self) -> None:
        """Abort the client connection with a TCP RST (SO_LINGER 0), not a clean FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()


def _is_chunked(headers: Message) -> bool:
    return "chunked" in (headers.get("Transfer-Encoding") or "").lower()


def _connection_tokens(headers: Message) -> frozenset[str]:
    """Header names listed in Connection: (hop-by-hop by declaration)."""
    values = headers.get_all("Connection") or []
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())
