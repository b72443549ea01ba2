"""A stand-in for the SageMaker managed MLflow front door: SigV4-verifying, ARN-routing proxy.

Point the sagemaker-mlflow plugin at it with SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT=<emulator.url>
and use ARN tracking URIs; each ARN is served by one (local) MLflow server. Every request must
carry a valid SigV4 signature for the ARN's region and service, made with the dummy
credentials, or it is refused with 403 and a JSON {"code", "message"} body.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from mlflow_sync.connection import mlflow_globals
from tests.harness.proxy import (
    FaultHook,
    LoopbackProxy,
    ProxyRequest,
    Rejected,
    RequestCounter,
    RequestRecord,
)
from tests.harness.s3 import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY

DEFAULT_ACCOUNT = "123456789012"
TRACKING_SERVER_HEADER = "x-mlflow-sm-tracking-server-arn"
APP_HEADER = "x-sm-mlflow-app-arn"

_ARN_RE = re.compile(
    r"arn:(?P<partition>aws|aws-us-gov):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<kind>mlflow-tracking-server|mlflow-app)/(?P<resource>[A-Za-z0-9-]+)"
)
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class SageMakerArn:
    arn: str
    partition: str
    region: str
    account: str
    kind: str  # "mlflow-tracking-server" or "mlflow-app"
    resource: str

    @classmethod
    def parse(cls, arn: str) -> SageMakerArn:
        match = _ARN_RE.fullmatch(arn)
        if not match:
            raise ValueError(f"not a SageMaker MLflow tracking server or app ARN: {arn!r}")
        return cls(arn=arn, **match.groupdict())

    @property
    def service(self) -> str:
        """SigV4 signing service name."""
        return "sagemaker-mlflow" if self.kind == "mlflow-tracking-server" else "sagemaker"

    @property
    def routing_header(self) -> str:
        return TRACKING_SERVER_HEADER if self.kind == "mlflow-tracking-server" else APP_HEADER


def tracking_server_arn(name: str, region: str = AWS_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:mlflow-tracking-server/{name}"


def app_arn(app_id: str, region: str = AWS_REGION, account: str = DEFAULT_ACCOUNT) -> str:
    return f"arn:aws:sagemaker:{region}:{account}:mlflow-app/{app_id}"


def sign_request(
    method: str,
    url: str,
    *,
    region: str,
    service: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    access_key: str = AWS_ACCESS_KEY_ID,
    secret_key: str = AWS_SECRET_ACCESS_KEY,
    when: datetime | None = None,
) -> dict[str, str]:
    """`headers` plus X-Amz-Date, X-Amz-Content-SHA256 and Authorization, signed the way
    sagemaker_mlflow.auth.AuthBoto signs (every header present is signed). For building
    deliberately wrong requests in tests; the plugin itself is the reference."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    timestamp = (when or datetime.now(timezone.utc)).strftime(SIGV4_TIMESTAMP)
    request.context["timestamp"] = timestamp
    request.headers["X-Amz-Date"] = timestamp
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return dict(request.headers.items())


class SageMakerEmulator(LoopbackProxy):
    """One endpoint for many ARNs, each routed to its own MLflow server.

    Use servers with `artifacts="direct"`: ARN clients write artifacts to S3 themselves and
    cannot use proxied `mlflow-artifacts:` URIs. Requests go to the server's `direct_url`, so
    they are counted here (`counter`, `counter_for(arn)`), not in the server's own counter.
    """

    buffer_body = True  # the body's hash is part of the signature

    def __init__(
        self,
        *,
        access_key: str = AWS_ACCESS_KEY_ID,
        secret_key: str = AWS_SECRET_ACCESS_KEY,
        max_clock_skew: timedelta = timedelta(minutes=5),
        faults: FaultHook | None = None,
    ):
        super().__init__(faults=faults)
        self.access_key = access_key
        self.secret_key = secret_key
        self.max_clock_skew = max_clock_skew
        self._arns: dict[str, SageMakerArn] = {}
        self._counters: dict[str, RequestCounter] = {}

    def add(self, arn: str, upstream_url: str) -> str:
        """Serve `arn` from the MLflow server at `upstream_url`; returns the ARN."""
        parsed = SageMakerArn.parse(arn)
        self.add_upstream(arn, upstream_url)
        self._counters[arn] = RequestCounter()
        self._arns[arn] = parsed
        return arn

    def add_tracking_server(self, server, name: str | None = None, **arn_parts) -> str:
        """Register `server` (an MlflowServer) as a tracking server ARN."""
        return self.add(tracking_server_arn(name or server.name, **arn_parts), server.direct_url)

    def add_app(self, server, app_id: str | None = None, **arn_parts) -> str:
        """Register `server` (an MlflowServer) as an MLflow App ARN."""
        app_id = app_id or f"app-{uuid.uuid4().hex[:12].upper()}"
        return self.add(app_arn(app_id, **arn_parts), server.direct_url)

    def counter_for(self, arn: str) -> RequestCounter:
        return self._counters[arn]

    def record(self, request: ProxyRequest, status: int | None, **extra) -> RequestRecord:
        record = super().record(request, status, **extra)
        if request.upstream in self._counters:
            self._counters[request.upstream].record(record)
        return record

    def route(self, request: ProxyRequest) -> str:
        arn = self._routed_arn(request)
        request.upstream = arn.arn  # rejections below still count against this ARN
        self._verify_signature(request, arn)
        return arn.arn

    def _routed_arn(self, request: ProxyRequest) -> SageMakerArn:
        present = [h for h in (TRACKING_SERVER_HEADER, APP_HEADER) if request.headers.get(h)]
        if len(present) != 1:
            raise Rejected(
                403,
                "MissingRoutingHeader",
                f"expected exactly one of {TRACKING_SERVER_HEADER}, {APP_HEADER}; got {present}",
            )
        value = request.headers[present[0]]
        arn = self._arns.get(value)
        if arn is None:
            raise Rejected(403, "UnknownArn", f"no MLflow server registered for {value!r}")
        if arn.routing_header != present[0]:
            raise Rejected(
                403,
                "WrongRoutingHeader",
                f"{arn.kind} ARNs go in {arn.routing_header}, not {present[0]}",
            )
        return arn

    def _verify_signature(self, request: ProxyRequest, arn: SageMakerArn) -> None:
        headers = request.headers
        auth = _AUTH_RE.fullmatch((headers.get("Authorization") or "").strip())
        if auth is None:
            raise Rejected(403, "MissingAuthenticationToken", "no SigV4 Authorization header")
        access_key, scope_date, region, service, terminator = (
            auth["credential"].split("/") + [""] * 5
        )[:5]
        if access_key != self.access_key:
            raise Rejected(
                403, "UnrecognizedClientException", f"unknown access key {access_key!r}"
            )
        if terminator != "aws4_request":
            raise Rejected(
                403, "IncompleteSignature", f"bad credential scope {auth['credential']!r}"
            )
        if region != arn.region:
            raise Rejected(
                403,
                "InvalidSignatureException",
                f"credential scope region {region!r}, expected the ARN's region {arn.region!r}",
            )
        if service != arn.service:
            raise Rejected(
                403,
                "InvalidSignatureException",
                f"credential scope service {service!r}, expected {arn.service!r} for {arn.kind}",
            )

        amz_date = headers.get("X-Amz-Date") or ""
        try:
            signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
        except ValueError:
            raise Rejected(403, "IncompleteSignature", f"bad X-Amz-Date {amz_date!r}") from None
        if abs(datetime.now(timezone.utc) - signed_at) > self.max_clock_skew:
            raise Rejected(
                403, "SignatureExpired", f"X-Amz-Date {amz_date} is outside the allowed clock skew"
            )
        if scope_date != amz_date[:8]:
            raise Rejected(
                403, "IncompleteSignature", "credential scope date differs from X-Amz-Date"
            )

        signed_names = auth["signed"].split(";")
        required = {"host", "x-amz-date", arn.routing_header}
        if missing := required - set(signed_names):
            raise Rejected(403, "IncompleteSignature", f"headers not signed: {sorted(missing)}")
        body = request.body or b""
        if headers.get("X-Amz-Content-SHA256") != hashlib.sha256(body).hexdigest():
            raise Rejected(
                403, "XAmzContentSHA256Mismatch", "X-Amz-Content-SHA256 is not the body's hash"
            )

        expected = self._signature(request, signed_names, access_key, arn, amz_date)
        if not hmac.compare_digest(expected, auth["signature"]):
            raise Rejected(
                403,
                "SignatureDoesNotMatch",
                "the request signature we calculated does not match the signature you provided",
            )

    def _signature(self, request, signed_names, access_key, arn, amz_date) -> str:
        """Recompute with botocore from what was received: method, path and query verbatim,
        exactly the signed headers, the body, the request's own timestamp."""
        replay = AWSRequest(
            method=request.method,
            url=f"http://{request.headers['Host']}{request.target}",
            data=request.body or b"",
        )
        for name in signed_names:
            for value in request.headers.get_all(name) or []:
                replay.headers[name] = value  # HTTPHeaders appends: repeated headers stay repeated
        replay.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(access_key, self.secret_key), arn.service, arn.region)
        string_to_sign = signer.string_to_sign(replay, signer.canonical_request(replay))
        return signer.signature(string_to_sign, replay)


@contextlib.contextmanager
def use_tracking_uri(uri: str) -> Iterator[str]:
    """Set MLflow's global tracking URI (the sagemaker-mlflow plugin signs for the global URI,
    whatever the client's) and restore the previous state afterwards."""
    with mlflow_globals(uri):
        yield uri
