"""One place to connect to a tracking server, whatever its address, with its own request budget.

``connect()`` gives a :class:`Server`: an ``MlflowClient`` bound to that server alone plus the
raw REST entry point the lean paths use. No MLflow global state is read or written, so a
source and a target (two SageMaker ARNs included) work side by side in one process.

How: an http or ARN server gets a private host name (``<role>-<n>.mlflow-sync.invalid``) as
its MLflow tracking URI. MLflow's REST layer builds every URL from that name; the one hook
below, installed once, hands each such request to that server's :class:`SideTransport`, which
sends it to the real endpoint with the server's rate limit, retries, routing header and SigV4
signer. Requests for any other host go to MLflow's own code untouched.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

import requests

from mlflow_sync.budget import RetryPolicy, describe_failure
from mlflow_sync.config import RetrySettings
from mlflow_sync.errors import ConnectionFailure, ServerUnavailable, SyncError
from mlflow_sync.redact import redact
from mlflow_sync.transport import SideTransport
from mlflow_sync.uris import ServerSpec, parse_server

log = logging.getLogger(__name__)

PRIVATE_DOMAIN = "mlflow-sync.invalid"

_transports: dict[str, SideTransport] = {}
_displays: dict[str, str] = {}
_counter = itertools.count(1)
_install_lock = threading.Lock()
_installed = False
_global_uri_lock = threading.RLock()


def _install_dispatch() -> None:
    """Route MLflow's HTTP requests for our private hosts to their transports (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from mlflow.utils import rest_utils

        original = rest_utils._get_http_response_with_retries

        def dispatch(
            method,
            url,
            max_retries,
            backoff_factor,
            backoff_jitter,
            retry_codes,
            raise_on_status=True,
            allow_redirects=None,
            respect_retry_after_header=True,
            **kwargs,
        ):
            parts = urlsplit(url)
            transport = _transports.get(parts.netloc)
            if transport is None:
                return original(
                    method, url, max_retries, backoff_factor, backoff_jitter, retry_codes,
                    raise_on_status, allow_redirects, respect_retry_after_header, **kwargs,
                )
            # MLflow's own retry settings are replaced by the server's budget and retry policy.
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return transport.request(method, path, **kwargs)

        rest_utils._get_http_response_with_retries = dispatch
        _quiet_plugin_header_errors()
        _installed = True


class _DropPluginHeaderNoise(logging.Filter):
    # sagemaker-mlflow's header provider reads the *global* tracking URI and fails for any non-ARN
    # one (field notes); our transports add the routing header per server instead.
    def filter(self, record: logging.LogRecord) -> bool:
        return "resolving request headers" not in record.getMessage()


def _quiet_plugin_header_errors() -> None:
    logging.getLogger("mlflow.tracking.request_header.registry").addFilter(_DropPluginHeaderNoise())


def humanize(text: str) -> str:
    """Replace private host names in a message with the server they stand for (redacted)."""
    for netloc, display in _displays.items():
        text = text.replace(f"http://{netloc}", display).replace(netloc, display)
    return redact(text)


@dataclass(frozen=True)
class Capabilities:
    """What the *server* supports (not what the client library could do)."""

    version: str | None
    logged_models: bool
    traces: bool
    prompts: bool
    evaluation_datasets: bool

    @property
    def lacking(self) -> list[str]:
        """The kinds beyond runs and the registry that this server cannot hold (an older MLflow)."""
        return [kind for kind in ("logged_models", "traces", "prompts", "evaluation_datasets")
                if not getattr(self, kind)]

    def at_least(self, *version: int) -> bool:
        """Does the server run this MLflow version or a later one? An unknown version is assumed new."""
        try:
            return tuple(int(part) for part in self.version.split(".")[:len(version)]) >= version
        except (AttributeError, ValueError):
            return True

    @property
    def writes_traces(self) -> bool:
        """Can this client create traces here? A 2.x server's traces can be read, not written: creating
        one takes MLflow 3's routes."""
        return self.traces and self.at_least(3)

    @property
    def ingests_spans(self) -> bool:
        """Does the server take spans as such (the OpenTelemetry route, MLflow 3.4 and later)? Before,
        a trace's spans are a file in its artifact location."""
        return self.at_least(3, 4)


@contextmanager
def mlflow_globals(tracking_uri: str, registry_uri: str | None = None):
    """Set MLflow's global tracking and registry URIs for the block, then put back exactly what
    was there before (unset included). Held under a process-wide lock."""
    import mlflow

    with _global_uri_lock:
        saved = _MlflowGlobals.save()
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri or tracking_uri)
        try:
            yield
        finally:
            saved.restore()


@dataclass(frozen=True)
class _MlflowGlobals:
    """MLflow's process-wide tracking/registry URIs: the module variables and the environment.

    Saving them through ``mlflow.get_tracking_uri()`` would read back the *default* URI
    (``sqlite:///mlflow.db`` in MLflow 3) and pin it on restore, and ``set_registry_uri(None)``
    leaves ``MLFLOW_REGISTRY_URI`` in the environment; both leak into every later client.
    """

    tracking_uri: str | None
    registry_uri: str | None
    environment: dict[str, str | None]

    _ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")

    @classmethod
    def save(cls) -> _MlflowGlobals:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        return cls(
            tracking_utils._tracking_uri,
            registry_utils._registry_uri,
            {name: os.environ.get(name) for name in cls._ENVIRONMENT},
        )

    def restore(self) -> None:
        import mlflow
        from mlflow.tracking._model_registry import utils as registry_utils

        mlflow.set_tracking_uri(self.tracking_uri)  # also resets the tracer provider
        registry_utils._registry_uri = self.registry_uri
        for name, value in self.environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Server:
    """One tracking server: its client, its budget and what it supports."""

    def __init__(self, spec: ServerSpec, *, role: str, max_rps: float | None, retry: RetrySettings):
        self.spec = spec
        self.role = role
        self.display = spec.display
        self.transport: SideTransport | None = None
        self._netlocs: list[str] = []
        if spec.kind == "db":
            self.tracking_uri = spec.uri
        else:
            self.transport = SideTransport(spec, self._endpoint(), max_rps=max_rps, retry=retry)
            self.transport.name = f"{role} {self.display}"
            self.tracking_uri = self._register(self.transport)
        self.registry_uri = self.tracking_uri
        if spec.registry_uri:
            registry = parse_server(spec.registry_uri)
            if registry.kind == "db":
                self.registry_uri = registry.uri
            else:
                self.registry_uri = self._register(
                    SideTransport(registry, registry.uri, max_rps=max_rps, retry=retry), registry.display
                )
        self._capabilities: Capabilities | None = None

    def artifact_repository(self, artifact_uri: str):
        """MLflow's artifact repository for a location of this server (``mlflow-artifacts:`` through
        its proxy, with this side's transport)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)

    @cached_property
    def client(self):
        """The ``MlflowClient`` of this server alone (a database is reached, and checked, first)."""
        from mlflow import MlflowClient

        if self.transport is None:
            self._check_database()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def _endpoint(self) -> str:
        if self.spec.kind == "http":
            parts = urlsplit(self.spec.uri)
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            return f"{parts.scheme}://{netloc}{parts.path}"
        # Same endpoint rules as sagemaker-mlflow, including its test/VPC override.
        return os.environ.get("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT") or self.spec.arn.default_endpoint

    def _register(self, transport: SideTransport, display: str | None = None) -> str:
        _install_dispatch()
        netloc = f"{self.role}-{next(_counter)}.{PRIVATE_DOMAIN}"
        _transports[netloc] = transport
        _displays[netloc] = display or self.display
        self._netlocs.append(netloc)
        return f"http://{netloc}"

    # -- raw REST, for the lean paths ------------------------------------------------------------

    def call(self, method: str, endpoint: str, body: dict | None = None) -> dict:
        """One REST call inside this server's budget (http and ARN servers only)."""
        if self.transport is None:
            raise TypeError(f"{self.display} is a database URI: use .client, not REST calls")
        return self.transport.call_json(method, endpoint, body=body)

    def _probe(self, method: str, endpoint: str, body: dict | None = None) -> bool:
        """Does the server have this endpoint? Anything but 'not found' means yes."""
        response = self.transport.request(method, endpoint, **({"params": body} if method == "GET" else {"json": body}))
        if response.status_code in (401, 403):
            raise _access_denied(self, response)
        return response.status_code not in (404, 405, 501)

    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = self._detect_capabilities()
        return self._capabilities

    def _detect_capabilities(self) -> Capabilities:
        if self.transport is None:
            import mlflow

            self.check()
            # A database URI is served by this client's own store code.
            return Capabilities(mlflow.__version__, True, True, True, True)
        self.check()
        response = self.transport.request("GET", "/version")
        version = response.text.strip() if response.status_code == 200 and len(response.text) < 40 else None
        logged_models = self._probe("POST", "/api/2.0/mlflow/logged-models/search", {"max_results": 1})
        traces = self._probe("GET", "/api/2.0/mlflow/traces", {"max_results": 1})
        datasets = self._probe("POST", "/api/3.0/mlflow/datasets/search", {"max_results": 1})
        return Capabilities(version, logged_models, traces, prompts=logged_models, evaluation_datasets=datasets)

    def check(self) -> None:
        """Fail with one clear line unless the server answers and lets us read."""
        if self.transport is None:
            try:
                self.client.search_experiments(max_results=1)
            except SyncError:
                raise
            except Exception as exc:  # the store's own message names the cause
                raise ConnectionFailure(f"cannot open {self.role} {self.display}: {first_line(exc)}") from exc
            return
        try:
            response = self.transport.request(
                "GET", "/api/2.0/mlflow/experiments/search", params={"max_results": 1}, policy=_QUICK_CHECK
            )
        except ServerUnavailable as exc:
            if exc.last_failure.startswith("HTTP "):
                raise ConnectionFailure(
                    f"{self.role} {self.display} answered {exc.last_failure} to every read attempt"
                ) from exc
            raise ConnectionFailure(f"cannot reach {self.role} {self.display}: {exc.last_failure}") from exc
        except requests.RequestException as exc:
            raise ConnectionFailure(f"cannot reach {self.role} {self.display}: {describe_failure(exc)}") from exc
        if response.status_code in (401, 403):
            raise _access_denied(self, response)
        if response.status_code != 200:
            raise ConnectionFailure(
                f"{self.role} {self.display} answered HTTP {response.status_code} to a read: "
                f"{first_line(response.text)[:200]}"
            )

    def _check_database(self) -> None:
        """Reach the database once, quickly, before MLflow's store would retry for minutes.

        Only a target may be created from nothing: a missing SQLite source is a typo, not an
        empty server.
        """
        import sqlalchemy

        from mlflow_sync.errors import UsageError

        uri = self.spec.uri
        if uri.startswith("sqlite:///"):
            path = uri[len("sqlite:///"):]
            if self.role != "target" and path != ":memory:" and not os.path.exists(path):
                raise ConnectionFailure(f"{self.role} database file {path!r} does not exist")
            if not os.path.exists(path):
                return  # a new target: MLflow creates it
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=_connect_timeout(uri))
        except ModuleNotFoundError as exc:
            raise UsageError(
                f"{self.role} {self.display} needs the {exc.name!r} database driver: "
                "pip install 'mlflow-sync[postgres]' or 'mlflow-sync[mysql]'"
            ) from None
        try:
            with engine.connect() as connection:
                tables = set(sqlalchemy.inspect(connection).get_table_names())
        except Exception as exc:  # driver errors vary; their first line names the cause
            original = getattr(exc, "orig", exc)
            raise ConnectionFailure(f"cannot open {self.role} {self.display}: {first_line(original)}") from None
        finally:
            engine.dispose()
        if self.role != "target" and "alembic_version" not in tables:
            # MLflow would create its tables here: never write to a source.
            raise ConnectionFailure(f"{self.role} {self.display} is not an MLflow database (no MLflow tables)")

    # -- fluent MLflow APIs ----------------------------------------------------------------------

    @contextmanager
    def activate(self):
        """Point MLflow's global tracking/registry URIs at this server for fluent APIs.

        Only for APIs with no client form (e.g. ``mlflow.transformers.log_model``); held under a
        process-wide lock so two servers never share the globals at once. On exit the globals are
        put back exactly as they were, unset included.
        """
        with mlflow_globals(self.tracking_uri, self.registry_uri):
            yield self

    def requests_by_endpoint(self) -> dict[str, int]:
        return dict(self.transport.requests_by_endpoint) if self.transport else {}

    def close(self) -> None:
        for netloc in self._netlocs:
            _transports.pop(netloc, None)
        self._netlocs.clear()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Server({self.role}: {self.display})"


_QUICK_CHECK = RetryPolicy(RetrySettings(max_attempts=3, initial_wait=0.5, max_wait=2, max_total_seconds=15, timeout=30))


def _connect_timeout(uri: str) -> dict:
    scheme = uri.split(":", 1)[0]
    return {"connect_timeout": 10} if scheme.startswith(("postgresql", "mysql")) else {}


def first_line(value: object) -> str:
    text = humanize(str(value)).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _access_denied(server: Server, response: requests.Response) -> ConnectionFailure:
    hint = ""
    if server.spec.arn and server.spec.arn.resource_type == "mlflow-app":
        hint = " (an MLflow App needs sagemaker:CallMlflowAppApi on the caller's role)"
    elif server.spec.arn:
        hint = " (the caller's role needs sagemaker-mlflow:* actions on this tracking server)"
    return ConnectionFailure(
        f"{server.role} {server.display} refused access (HTTP {response.status_code}){hint}: "
        f"{first_line(response.text)[:200]}"
    )


def connect(
    uri: str,
    *,
    role: str = "server",
    registry_uri: str | None = None,
    max_rps: float | None = None,
    retry: RetrySettings | None = None,
) -> Server:
    """Parse, check the address and build a :class:`Server` (no request is sent yet)."""
    spec = parse_server(uri, registry_uri)
    return Server(spec, role=role, max_rps=max_rps, retry=retry or RetrySettings())


def connect_any(profile, uri: str, *, max_rps: float | None = None) -> Server:
    """Connect a server named on its own (``info``): the request budget is the command line's, else
    that of the profile side with this URI, else the stricter of the profile's two budgets."""
    if max_rps is None:
        sides = [profile.source, profile.target]
        same = [side.max_rps for side in sides if side.uri == uri and side.max_rps]
        budgets = same or [side.max_rps for side in sides if side.max_rps]
        max_rps = min(budgets) if budgets else None
    return connect(uri, role="server", max_rps=max_rps, retry=profile.retry)


def connect_side(profile, role: str, uri: str | None = None, *, max_rps: float | None = None) -> Server:
    """Connect the ``source`` or ``target`` of a job: command-line values override the profile."""
    settings = getattr(profile, role)
    uri = uri or settings.uri
    if not uri:
        from mlflow_sync.errors import UsageError

        raise UsageError(f"no {role} given: pass --{role} or set {role}.uri in the config file")
    return connect(
        uri,
        role=role,
        registry_uri=settings.registry_uri,
        max_rps=max_rps if max_rps is not None else settings.max_rps,
        retry=profile.retry,
    )
