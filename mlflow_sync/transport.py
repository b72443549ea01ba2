"""How one side's HTTP requests reach its server: budget, retries, signing, counting, safe creates.

MLflow's REST layer sends every request through ``rest_utils._get_http_response_with_retries``.
:mod:`mlflow_sync.connection` routes the requests of each side here (by a per-side host name),
so each side has its own rate limit, retry policy, routing header and SigV4 signer, and two
servers (two different SageMaker ARNs included) can be used at once in one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from mlflow_sync.budget import (
    TRANSIENT_EXCEPTIONS,
    UNAVAILABLE_STATUS,
    RetryPolicy,
    RetryStats,
    describe_failure,
    is_ambiguous,
    limiter_for,
    log_batch_slots_for,
)
from mlflow_sync.config import RetrySettings
from mlflow_sync.errors import ServerUnavailable
from mlflow_sync.identity import REQUEST_ID_TAG
from mlflow_sync.paging import paged_json, quoted
from mlflow_sync.uris import ServerSpec

log = logging.getLogger(__name__)

"""Idempotency key the transport adds to creates that MLflow would otherwise repeat on retry."""

LOG_BATCH = "/runs/log-batch"  # limited in flight per server: see budget.CONCURRENT_LOG_BATCHES
ROUTING_HEADERS = ("x-mlflow-sm-tracking-server-arn", "x-sm-mlflow-app-arn")
_DROPPED_KWARGS = ("auth", "timeout", "verify")


def _endpoint_key(method: str, path: str) -> str:
    if "/mlflow-artifacts/artifacts/" in path:
        path = path.split("/mlflow-artifacts/artifacts/")[0] + "/mlflow-artifacts/artifacts/*"
    return f"{method.upper()} {path}"


def _json_response(payload: dict, like: requests.Response | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(payload).encode()
    response.headers["Content-Type"] = "application/json"
    response.encoding = "utf-8"
    if like is not None:
        response.url = like.url
    return response


def _error_code(response: requests.Response) -> str | None:
    try:
        return response.json().get("error_code")
    except ValueError:
        return None


class SideTransport:
    """Sends the requests of one side, inside that server's budget."""

    def __init__(self, spec: ServerSpec, base_url: str, *, max_rps: float | None, retry: RetrySettings):
        self.spec = spec
        self.base_url = base_url.rstrip("/")
        self.retry_settings = retry
        self.policy = RetryPolicy(retry)
        server_key = f"{self.base_url}|{spec.arn.arn if spec.arn else ''}"
        self.limiter = limiter_for(server_key, max_rps)
        self.log_batch_slots = log_batch_slots_for(server_key)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=64, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        parts = urlsplit(spec.uri) if spec.kind == "http" else None
        if parts and parts.username:
            # https://user:token@host or https://token@host: credentials travel as basic/bearer auth.
            if parts.password is not None:
                self.session.auth = (parts.username, parts.password)
            else:
                self.session.headers["Authorization"] = f"Bearer {parts.username}"
        self._signer = self._make_signer() if spec.arn else None
        self.name = spec.display  # how messages name this server ("target http://..." once connected)
        self.requests_by_endpoint: Counter[str] = Counter()
        self.retry_stats = RetryStats()
        # Set once a request failed for the whole retry budget: every later request of this job
        # fails at once with the same error instead of waiting out the budget again.
        self.gave_up: ServerUnavailable | None = None
        self._stats_lock = threading.Lock()

    def _make_signer(self) -> requests.auth.AuthBase:
        import os

        from sagemaker_mlflow.auth import AuthBoto

        return AuthBoto(
            self.spec.arn.region,
            self.spec.arn.signing_service,
            os.environ.get("SAGEMAKER_MLFLOW_ASSUME_ROLE_ARN") or None,
        )

    # -- one attempt -------------------------------------------------------------------------

    def _send_once(self, method: str, url: str, kwargs: dict, body_start: int | None) -> requests.Response:
        if body_start is not None:
            kwargs["data"].seek(body_start)  # a retried upload resends the file from its start
        path = urlsplit(url).path
        with self.log_batch_slots if path.endswith(LOG_BATCH) else contextlib.nullcontext():
            self.limiter.acquire()
            with self._stats_lock:
                self.requests_by_endpoint[_endpoint_key(method, path)] += 1
            return self.session.request(method, url, timeout=self.retry_settings.timeout, auth=self._signer,
                                        **kwargs)

    # -- the entry point MLflow's REST layer reaches -------------------------------------------

    def request(
        self, method: str, path_and_query: str, *, policy: RetryPolicy | None = None, **kwargs
    ) -> requests.Response:
        """Send one logical request; retried, paced, signed. ``path_and_query`` starts with '/'.

        ``policy`` replaces the server's retry policy for this request (a quick first check
        should not spend ten minutes on a server that is not there).
        """
        if self.gave_up is not None:
            raise ServerUnavailable(str(self.gave_up), last_failure=self.gave_up.last_failure)
        for name in _DROPPED_KWARGS:
            kwargs.pop(name, None)
        kwargs.pop("allow_redirects", None)
        headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() not in ROUTING_HEADERS}
        if self.spec.arn:
            headers[self.spec.arn.routing_header] = self.spec.arn.arn
        kwargs["headers"] = headers
        body = kwargs.get("data")
        body_start = body.tell() if hasattr(body, "seek") and hasattr(body, "tell") else None
        url = self.base_url + path_and_query
        guard = guard_for(method, urlsplit(path_and_query).path)
        if guard is not None:
            guard.prepare(kwargs)
        seen_ambiguous: list[bool] = []

        def before_retry(exc: BaseException) -> requests.Response | None:
            if guard is None or not is_ambiguous(exc):
                return None
            seen_ambiguous.append(True)
            return guard.find_existing(self, kwargs)

        attempts: list[float] = []

        def attempt() -> requests.Response:
            attempts.append(time.monotonic())
            return self._send_once(method, url, kwargs, body_start)

        try:
            response = (policy or self.policy).call(
                attempt,
                before_retry=before_retry,
                describe=f"{method} {urlsplit(path_and_query).path}",
                stats=self.retry_stats,
            )
        except TRANSIENT_EXCEPTIONS as exc:
            raise self._unavailable(describe_failure(exc), attempts, policy) from exc
        if response.status_code in UNAVAILABLE_STATUS:
            raise self._unavailable(f"HTTP {response.status_code}", attempts, policy)
        if guard is not None and seen_ambiguous and response.status_code == 400:
            if _error_code(response) == "RESOURCE_ALREADY_EXISTS":
                # An earlier attempt we could not see the answer to did create it.
                existing = guard.find_existing(self, kwargs)
                if existing is not None:
                    return existing
        return response

    def _unavailable(self, last: str, attempts: list[float], policy: RetryPolicy | None) -> ServerUnavailable:
        seconds = time.monotonic() - attempts[0] if attempts else 0.0
        failure = ServerUnavailable(
            f"{self.name} kept failing ({last}) for {len(attempts)} attempt(s) over {seconds:.0f}s, the whole "
            "retry budget: stopped; run the same command again once it answers (work already done is kept)",
            last_failure=last,
        )
        if policy is None:  # the server's own budget, not a quick probe with a policy of its own
            self.gave_up = failure
        return failure

    def call_json(self, method: str, endpoint: str, *, body: dict | None = None) -> dict:
        """A raw REST call inside the budget; raises for non-200 answers."""
        if method == "GET":
            response = self.request(method, endpoint, params=body)
        else:
            response = self.request(method, endpoint, json=body)
        if response.status_code != 200:
            from mlflow.exceptions import RestException

            try:
                payload = response.json()
            except ValueError:
                payload = {"error_code": "INTERNAL_ERROR", "message": f"HTTP {response.status_code}"}
            raise RestException(payload)
        return response.json() if response.content else {}


# -- safe creates ------------------------------------------------------------------------------


class CreateGuard:
    """Makes one non-idempotent create safe to retry: find what an ambiguous attempt made."""

    def prepare(self, kwargs: dict) -> None:
        """Add an idempotency key to the request body, if this kind of object carries tags."""

    def find_existing(self, transport: SideTransport, kwargs: dict) -> requests.Response | None:
        raise NotImplementedError


def _add_request_id(kwargs: dict, field: str = "tags") -> None:
    body = kwargs.get("json")
    if not isinstance(body, dict):
        return
    tags = body.setdefault(field, [])
    if not any(t.get("key") == REQUEST_ID_TAG for t in tags):
        tags.append({"key": REQUEST_ID_TAG, "value": uuid.uuid4().hex})


def _request_id(kwargs: dict, field: str = "tags") -> str | None:
    for tag in (kwargs.get("json") or {}).get(field, []):
        if tag.get("key") == REQUEST_ID_TAG:
            return tag["value"]
    return None


class _RunCreate(CreateGuard):
    def prepare(self, kwargs: dict) -> None:
        _add_request_id(kwargs)

    def find_existing(self, transport, kwargs):
        body = kwargs["json"]
        found = transport.call_json(
            "POST",
            "/api/2.0/mlflow/runs/search",
            body={
                "experiment_ids": [body["experiment_id"]],
                "filter": f"tags.`{REQUEST_ID_TAG}` = '{_request_id(kwargs)}'",
                "run_view_type": "ALL",
                "max_results": 1,
            },
        )
        runs = found.get("runs") or []
        return _json_response({"run": runs[0]}) if runs else None


class _ModelVersionCreate(CreateGuard):
    def prepare(self, kwargs: dict) -> None:
        _add_request_id(kwargs)

    def find_existing(self, transport, kwargs):
        wanted = _request_id(kwargs)
        versions = paged_json(lambda body: transport.call_json("GET", "/api/2.0/mlflow/model-versions/search", body=body),
                              "model_versions", {"filter": f"name = {quoted(kwargs['json']['name'])}", "max_results": 200})
        for version in versions:
            if any(t.get("key") == REQUEST_ID_TAG and t.get("value") == wanted for t in version.get("tags", [])):
                return _json_response({"model_version": version})
        return None


class _LoggedModelCreate(CreateGuard):
    """MLflow 3 logged models: a retried create after a lost answer would leave a second model."""

    def prepare(self, kwargs: dict) -> None:
        _add_request_id(kwargs)

    def find_existing(self, transport, kwargs):
        found = transport.call_json(
            "POST",
            "/api/2.0/mlflow/logged-models/search",
            body={
                "experiment_ids": [kwargs["json"]["experiment_id"]],
                "filter": f"tags.`{REQUEST_ID_TAG}` = '{_request_id(kwargs)}'",
                "max_results": 1,
            },
        )
        models = found.get("models") or []
        return _json_response({"model": models[0]}) if models else None


class _ExperimentCreate(CreateGuard):
    def find_existing(self, transport, kwargs):
        from mlflow.exceptions import RestException

        try:
            found = transport.call_json(
                "GET", "/api/2.0/mlflow/experiments/get-by-name", body={"experiment_name": kwargs["json"]["name"]}
            )
        except RestException:
            return None
        return _json_response({"experiment_id": found["experiment"]["experiment_id"]})


class _RegisteredModelCreate(CreateGuard):
    def find_existing(self, transport, kwargs):
        from mlflow.exceptions import RestException

        try:
            found = transport.call_json(
                "GET", "/api/2.0/mlflow/registered-models/get", body={"name": kwargs["json"]["name"]}
            )
        except RestException:
            return None
        return _json_response({"registered_model": found["registered_model"]})


_GUARDS: dict[tuple[str, str], CreateGuard] = {
    ("POST", "/api/2.0/mlflow/runs/create"): _RunCreate(),
    ("POST", "/api/2.0/mlflow/experiments/create"): _ExperimentCreate(),
    ("POST", "/api/2.0/mlflow/registered-models/create"): _RegisteredModelCreate(),
    ("POST", "/api/2.0/mlflow/model-versions/create"): _ModelVersionCreate(),
    ("POST", "/api/2.0/mlflow/logged-models"): _LoggedModelCreate(),
}


def register_guard(method: str, path: str, guard: CreateGuard) -> None:
    """Capabilities add guards for the creates they send (logged models, traces, prompts...)."""
    _GUARDS[(method.upper(), path)] = guard


def guard_for(method: str, path: str) -> CreateGuard | None:
    return _GUARDS.get((method.upper(), path))

