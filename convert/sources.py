"""Where a checkpoint comes from: S3, a local tarball or directory, or a SageMaker Model Package.

``materialize`` turns any of them into a checked local directory and removes what it created.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow_sync import output, s3
from mlflow_sync.convert.extract import DEFAULT_MAX_EXTRACTED_BYTES, extract_tarball
from mlflow_sync.errors import ConnectionFailure, UsageError

log = logging.getLogger(__name__)

MODEL_PACKAGE_ARN = re.compile(
    r"^arn:aws(-[a-z]+)*:sagemaker:(?P<region>[a-z0-9-]+):\d{12}:model-package/(?P<name>[A-Za-z0-9-]+)(/\d+)?$"
)
MODEL_PACKAGE_GROUP_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")


@dataclass(frozen=True)
class Source:
    """A resolved checkpoint location. ``uri`` is an s3:// URI or a local path."""

    uri: str
    kind: str  # "s3", "tarball" or "directory"
    model_package_arn: str | None = None


@dataclass(frozen=True)
class LocalCheckpoint:
    directory: Path
    sha256: str | None  # of the tarball; None for a directory source
    tarball_bytes: int | None


def is_model_package_arn(value: str) -> bool:
    return bool(MODEL_PACKAGE_ARN.match(value))


def _sagemaker_client(region: str | None = None):
    import boto3

    return boto3.session.Session().client("sagemaker", region_name=region)


def _client_error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)


def model_data_url(model_package_arn: str) -> str:
    """DescribeModelPackage -> InferenceSpecification.Containers[0].ModelDataUrl."""
    from botocore.exceptions import BotoCoreError, ClientError

    match = MODEL_PACKAGE_ARN.match(model_package_arn)
    if not match:
        raise UsageError(
            f"malformed model package ARN {model_package_arn!r}: expected "
            "arn:aws:sagemaker:REGION:ACCOUNT:model-package/NAME/VERSION"
        )
    try:
        described = _sagemaker_client(match["region"]).describe_model_package(ModelPackageName=model_package_arn)
    except ClientError as exc:
        code = _client_error_code(exc)
        if code in ("ValidationException", "ResourceNotFound", "ResourceNotFoundException"):
            raise UsageError(f"model package {model_package_arn} does not exist") from exc
        raise ConnectionFailure(f"cannot describe model package {model_package_arn}: {code}") from exc
    except BotoCoreError as exc:
        raise ConnectionFailure(f"cannot describe model package {model_package_arn}: {exc}") from exc
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    url = containers[0].get("ModelDataUrl") if containers else None
    if not url:
        raise UsageError(f"model package {model_package_arn} has no ModelDataUrl in its inference specification")
    return url


def approved_model_packages(group_name: str) -> list[str]:
    """ARNs of the approved versions of a Model Package Group, oldest first."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not MODEL_PACKAGE_GROUP_NAME.match(group_name):
        raise UsageError(f"malformed model package group name {group_name!r}")
    client = _sagemaker_client()
    arns: list[tuple[int, str]] = []
    try:
        paginator = client.get_paginator("list_model_packages")
        for page in paginator.paginate(ModelPackageGroupName=group_name, ModelApprovalStatus="Approved"):
            for summary in page.get("ModelPackageSummaryList", []):
                arns.append((summary.get("ModelPackageVersion") or 0, summary["ModelPackageArn"]))
    except ClientError as exc:
        raise ConnectionFailure(f"cannot list model packages of group {group_name!r}: {_client_error_code(exc)}") from exc
    except BotoCoreError as exc:
        raise ConnectionFailure(f"cannot list model packages of group {group_name!r}: {exc}") from exc
    return [arn for _, arn in sorted(arns)]


def resolve_source(source: str | None, model_package_arn: str | None = None) -> Source:
    """Check the address and turn a model package into its S3 tarball (no download yet)."""
    if source and is_model_package_arn(source):
        if model_package_arn:
            raise UsageError("SOURCE is a model package ARN: do not also give --model-package-arn")
        source, model_package_arn = None, source
    if model_package_arn:
        url = model_data_url(model_package_arn)
        if source and source != url:
            # Both given (the pipeline passes both): the package must be that tarball's, or its tag would lie.
            raise UsageError(f"model package {model_package_arn} points to {url}, not to SOURCE {source}")
        if not s3.is_s3_uri(url):
            raise UsageError(f"model package {model_package_arn} points to {url!r}, not an s3:// URI")
        s3.head(url)
        return Source(url, "s3", model_package_arn)
    if not source:
        raise UsageError("no SOURCE given: pass an s3:// URI, a local tarball or directory, or --model-package-arn")
    if s3.is_s3_uri(source):
        location = s3.parse_s3_uri(source)
        if not location.key or location.key.endswith("/"):
            raise UsageError(f"{source} names a prefix, not a model.tar.gz object")
        s3.head(source)  # fails early, with one line, if the object is missing or unreadable
        return Source(source, "s3")
    path = Path(source).expanduser()
    if path.is_dir():
        return Source(str(path.resolve()), "directory")
    if path.is_file():
        return Source(str(path.resolve()), "tarball")
    raise UsageError(f"source {source!r} does not exist (expected s3://..., a local tarball or a directory)")


@contextmanager
def materialize(
    source: Source, *, workdir: str | Path | None = None, max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES
) -> Iterator[LocalCheckpoint]:
    """Yield the checkpoint as a local directory; everything created here is removed afterwards."""
    if source.kind == "directory":
        yield LocalCheckpoint(Path(source.uri), None, None)
        return
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-sync-convert-", dir=workdir))
    try:
        tarball = Path(source.uri)
        if source.kind == "s3":
            tarball = scratch / "model.tar.gz"
            output.info(f"downloading {source.uri}")
            s3.download_file(source.uri, tarball)
        extracted = extract_tarball(tarball, parent=scratch, max_extracted_bytes=max_extracted_bytes)
        if source.kind == "s3":
            tarball.unlink()  # the extracted copy is all we need: halve the disk footprint
        yield LocalCheckpoint(extracted.directory, extracted.sha256, extracted.compressed_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
