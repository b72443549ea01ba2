"""S3 access shared by exports, snapshots and convert: boto3's transfer manager, one client setup.

The endpoint follows the usual variables (``AWS_ENDPOINT_URL_S3``, ``MLFLOW_S3_ENDPOINT_URL``), so
the same code talks to AWS, MinIO or a loopback moto server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mlflow_sync.errors import ConnectionFailure, UsageError

MB = 1024 * 1024


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, relative: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key.rstrip('/')}/{relative.lstrip('/')}" if self.key else relative)


def is_s3_uri(value: str | os.PathLike) -> bool:
    return str(value).startswith("s3://")


def parse_s3_uri(uri: str) -> S3Location:
    if not is_s3_uri(uri):
        raise UsageError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise UsageError(f"S3 URI {uri!r} has no bucket")
    return S3Location(bucket, key)


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


@lru_cache(maxsize=4)
def _client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 10, "mode": "adaptive"})
    )


def client():
    """An S3 client for the configured endpoint (cached; boto3 clients are thread-safe)."""
    return _client(endpoint_url())


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    # Multipart above 64 MB keeps every part far below S3's 5 GB single-PUT limit.
    return TransferConfig(multipart_threshold=64 * MB, multipart_chunksize=64 * MB, max_concurrency=8)


def _failure(action: str, location: S3Location, exc: Exception) -> ConnectionFailure:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    if code in ("404", "NoSuchKey", "NotFound"):
        return ConnectionFailure(f"S3 object {location.uri} does not exist")
    if code == "NoSuchBucket":
        return ConnectionFailure(f"S3 bucket {location.bucket!r} does not exist")
    if code in ("403", "AccessDenied"):
        return ConnectionFailure(f"access denied to {location.uri} while trying to {action} (check the IAM policy)")
    return ConnectionFailure(f"cannot {action} {location.uri}: {code}")


def download_file(uri: str, path: str | Path) -> Path:
    """Download one object with the transfer manager (parallel ranged GETs for large objects)."""
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        client().download_file(location.bucket, location.key, str(path), Config=transfer_config())
    except (ClientError, BotoCoreError) as exc:
        path.unlink(missing_ok=True)
        raise _failure("download", location, exc) from exc
    return path


def upload_file(path: str | Path, uri: str, *, checksum: bool = True) -> None:
    """Upload one file (multipart above the threshold) with an S3-side SHA-256 checksum."""
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    extra = {"ChecksumAlgorithm": "SHA256"} if checksum else None
    try:
        client().upload_file(str(path), location.bucket, location.key, ExtraArgs=extra, Config=transfer_config())
    except (ClientError, BotoCoreError) as exc:
        raise _failure("upload", location, exc) from exc


def head(uri: str) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    try:
        return client().head_object(Bucket=location.bucket, Key=location.key)
    except (ClientError, BotoCoreError) as exc:
        raise _failure("read", location, exc) from exc


def list_objects(uri: str):
    """Yield every object under a prefix: dicts with Key, Size, ETag (and checksums when present)."""
    yield from _paged(uri, "list_objects_v2", "Contents", "list")


def list_incomplete_uploads(uri: str):
    """Yield the multipart uploads under a prefix that were started and never completed nor aborted
    (a killed upload): dicts with Key, UploadId, Initiated. S3 keeps (and bills) their parts."""
    yield from _paged(uri, "list_multipart_uploads", "Uploads", "list the uploads under")


def _paged(uri: str, operation: str, items: str, action: str):
    """Every item of a paginated listing under a prefix; a failure names what we tried to do."""
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    paginator = client().get_paginator(operation)
    try:
        for page in paginator.paginate(Bucket=location.bucket, Prefix=location.key):
            yield from page.get(items, [])
    except (ClientError, BotoCoreError) as exc:
        raise _failure(action, location, exc) from exc


def abort_upload(uri: str, upload_id: str) -> None:
    """Abort an incomplete multipart upload: S3 drops its parts."""
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    try:
        client().abort_multipart_upload(Bucket=location.bucket, Key=location.key, UploadId=upload_id)
    except (ClientError, BotoCoreError) as exc:
        raise _failure("abort the upload of", location, exc) from exc


def list_children(uri: str) -> tuple[set[str], set[str]]:
    """(object names, sub-folder names) directly under a prefix: one request, whatever lies deeper."""
    from botocore.exceptions import BotoCoreError, ClientError

    location = parse_s3_uri(uri)
    prefix = location.key.rstrip("/") + "/" if location.key.strip("/") else ""
    try:
        page = client().list_objects_v2(Bucket=location.bucket, Prefix=prefix, Delimiter="/")
    except (ClientError, BotoCoreError) as exc:
        raise _failure("list", location, exc) from exc
    names = {item["Key"][len(prefix):] for item in page.get("Contents", [])}
    folders = {item["Prefix"][len(prefix):].rstrip("/") for item in page.get("CommonPrefixes", [])}
    return names, folders
