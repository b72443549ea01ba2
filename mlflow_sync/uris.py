"""Parse and check what the user calls a server: a tracking URI, a database URI or a SageMaker ARN.

Everything is checked up front so a typo fails in one line before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from mlflow_sync.errors import UsageError
from mlflow_sync.redact import redact, register_secret

Kind = Literal["http", "db", "arn"]

DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SUPPORTED_PARTITIONS = ("aws", "aws-us-gov")

# arn:PARTITION:sagemaker:REGION:ACCOUNT:RESOURCE_TYPE/NAME
_ARN = re.compile(
    r"^arn:(?P<partition>[^:]*):(?P<service>[^:]*):(?P<region>[^:]*):(?P<account>[^:]*):"
    r"(?P<resource_type>[^/:]*)/(?P<resource_id>[^/:]*)$"
)
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9])*$")


@dataclass(frozen=True)
class SageMakerArn:
    """A SageMaker managed MLflow resource: a tracking server or a serverless MLflow App."""

    arn: str
    partition: str
    region: str
    account: str
    resource_type: Literal["mlflow-tracking-server", "mlflow-app"]
    resource_id: str

    @property
    def signing_service(self) -> str:
        return "sagemaker-mlflow" if self.resource_type == "mlflow-tracking-server" else "sagemaker"

    @property
    def routing_header(self) -> str:
        if self.resource_type == "mlflow-tracking-server":
            return "x-mlflow-sm-tracking-server-arn"
        return "x-sm-mlflow-app-arn"

    @property
    def default_endpoint(self) -> str:
        if self.resource_type == "mlflow-tracking-server":
            return f"https://{self.region}.experiments.sagemaker.aws"
        return f"https://mlflow.sagemaker.{self.region}.app.aws"


@dataclass(frozen=True)
class ServerSpec:
    """A checked server address. ``display`` is safe to print; ``uri`` may hold credentials."""

    kind: Kind
    uri: str
    registry_uri: str | None = None
    arn: SageMakerArn | None = None

    @property
    def display(self) -> str:
        return redact(self.uri)


def parse_arn(text: str) -> SageMakerArn:
    match = _ARN.match(text)
    if not match:
        raise UsageError(
            f"malformed SageMaker ARN {text!r}: expected "
            "arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME or ...:mlflow-app/app-ID"
        )
    parts = match.groupdict()
    if parts["partition"] not in SUPPORTED_PARTITIONS:
        raise UsageError(
            f"unsupported AWS partition {parts['partition']!r} in {text!r}: "
            f"SageMaker managed MLflow is available in {', '.join(SUPPORTED_PARTITIONS)}"
        )
    if parts["service"] != "sagemaker":
        raise UsageError(f"ARN {text!r} is for service {parts['service']!r}, not sagemaker")
    if not _REGION.match(parts["region"]):
        raise UsageError(f"ARN {text!r} has an invalid region {parts['region']!r}")
    if not _ACCOUNT.match(parts["account"]):
        raise UsageError(f"ARN {text!r} has an invalid account id {parts['account']!r} (12 digits)")
    if parts["resource_type"] not in ("mlflow-tracking-server", "mlflow-app"):
        raise UsageError(
            f"ARN {text!r} names a {parts['resource_type']!r}: expected mlflow-tracking-server or mlflow-app"
        )
    if not parts["resource_id"] or not _NAME.match(parts["resource_id"]):
        raise UsageError(f"ARN {text!r} has an invalid resource name {parts['resource_id']!r}")
    if parts["resource_type"] == "mlflow-app" and not parts["resource_id"].startswith("app-"):
        raise UsageError(f"ARN {text!r}: an MLflow App id starts with 'app-'")
    del parts["service"]
    return SageMakerArn(arn=text, **parts)


def _check_http(uri: str) -> None:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise UsageError(f"tracking URI {redact(uri)!r} has no host")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise UsageError(f"tracking URI {redact(uri)!r} has an invalid port") from None
    if parts.query or parts.fragment:
        raise UsageError(f"tracking URI {redact(uri)!r} must not carry a query or fragment")


def _check_db(uri: str, scheme: str) -> None:
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise UsageError(f"SQLite URI {uri!r} must look like sqlite:///path/to/file.db")
        return
    parts = urlsplit(uri)
    if not parts.hostname or not parts.path.strip("/"):
        raise UsageError(f"database URI {redact(uri)!r} needs a host and a database name")


def _remember_credentials(uri: str) -> None:
    parts = urlsplit(uri)
    if parts.password:
        register_secret(parts.password)
        register_secret(unquote(parts.password))
    elif parts.username and parts.scheme in ("http", "https"):
        register_secret(parts.username)  # https://token@host: the user part is the credential


def parse_server(uri: str, registry_uri: str | None = None) -> ServerSpec:
    """Classify and check ``uri``; raise :class:`UsageError` with one clear line if it is wrong."""
    uri = (uri or "").strip()
    if not uri:
        raise UsageError("no server given: pass a tracking URI, a database URI or a SageMaker ARN")
    if uri.startswith("arn:"):
        spec = ServerSpec(kind="arn", uri=uri, arn=parse_arn(uri))
    else:
        scheme = urlsplit(uri).scheme.lower()
        base_scheme = scheme.split("+", 1)[0]
        if scheme in ("http", "https"):
            _remember_credentials(uri)
            _check_http(uri)
            spec = ServerSpec(kind="http", uri=uri.rstrip("/"))
        elif base_scheme in DB_SCHEMES:
            _remember_credentials(uri)
            _check_db(uri, base_scheme)
            spec = ServerSpec(kind="db", uri=uri)
        elif not scheme or scheme == "file" or len(scheme) == 1:
            raise UsageError(
                f"{uri!r} is a local path: give an http(s) tracking server, a database URI "
                "(e.g. sqlite:///mlflow.db) or a SageMaker ARN (file stores are not supported)"
            )
        else:
            raise UsageError(
                f"unknown tracking URI scheme {scheme!r} in {redact(uri)!r}: "
                "expected http(s)://, sqlite:///, postgresql://, mysql:// or arn:aws:sagemaker:..."
            )
    if registry_uri:
        registry = parse_server(registry_uri)
        spec = ServerSpec(kind=spec.kind, uri=spec.uri, registry_uri=registry.uri, arn=spec.arn)
    return spec
