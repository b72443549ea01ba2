"""moto's standalone server (S3, SageMaker, STS... on one port) as a subprocess."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import boto3
import requests

from tests.harness.process import ManagedProcess, clean_environ, free_port

AWS_ACCESS_KEY_ID = "AKIDMLFLOWSYNCTEST"
AWS_SECRET_ACCESS_KEY = "mlflow-sync-test-secret"
AWS_REGION = "us-east-1"
DEFAULT_BUCKET = "mlflow-sync-test"


def aws_env(moto: MotoServer) -> dict[str, str]:
    """Environment that points every AWS client (boto3, MLflow's S3 repo, the SageMaker plugin)
    at `moto` with the dummy credentials.

    AWS_ENDPOINT_URL (all services) also guarantees a test can never reach real AWS; the config
    and credential files are blanked so a developer's ~/.aws profiles cannot interfere.
    """
    return {
        "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "MLFLOW_S3_ENDPOINT_URL": moto.endpoint_url,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }


class MotoServer:
    """`python -m moto.server` on 127.0.0.1 and a free port. State lives in that process only."""

    def __init__(self, workdir: Path | None = None, startup_timeout: float = 60.0):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mlflow-sync-moto-"))
        self.startup_timeout = startup_timeout
        self.port = 0
        self._process: ManagedProcess | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.port = free_port()
        self._process = ManagedProcess(
            "moto server",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**clean_environ(), **aws_env(self)},
            log_path=self.workdir / "moto.log",
        )
        self._process.wait_http(f"{self.endpoint_url}/moto-api/data.json", self.startup_timeout)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 50) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def boto3_client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_ACCESS_KEY_ID,
            aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
        )

    def make_bucket(self, name: str = DEFAULT_BUCKET) -> str:
        """Create `name` unless it exists; return it."""
        s3 = self.boto3_client("s3")
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.boto3_client("s3").get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def delete_prefix(self, bucket: str, prefix: str) -> None:
        s3 = self.boto3_client("s3")
        keys = self.list_keys(bucket, prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})

    def reset(self) -> None:
        """Drop every bucket, model package... (moto's own reset endpoint)."""
        requests.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()

