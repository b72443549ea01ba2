"""Fixtures shared by every mlflow-sync test: moto, MLflow servers, the SageMaker front door.

Servers are expensive (seconds) and resets are cheap (~0.1 s), so `mlflow_server` hands out
pooled servers emptied for each test. PostgreSQL/MySQL tests skip when those servers are not
reachable, unless MLFLOW_SYNC_REQUIRE_BACKENDS=1 (CI) turns the skip into a failure.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.harness import (
    BACKENDS,
    MlflowServer,
    MotoServer,
    SageMakerEmulator,
    ServerPool,
    aws_env,
    backend_available,
)


class _DropPluginHeaderNoise(logging.Filter):
    """sagemaker-mlflow's header provider fails on every non-ARN request and MLflow logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Encountered unexpected error during resolving request headers" not in (
            record.getMessage()
        )


def pytest_configure(config):
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    config.addinivalue_line("markers", "slow: end-to-end test that takes long (still runs in CI)")
    config.addinivalue_line(
        "markers",
        "version_matrix: runs servers/clients of other MLflow versions from cached venvs "
        "(tests/harness/versions.py; the first run builds them, minutes)",
    )
    logging.getLogger("mlflow.tracking.request_header.registry").addFilter(
        _DropPluginHeaderNoise()
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the log tails of every server the failing test used to its report."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        report.sections.extend(_server_logs(item).items())
    return report


def _server_logs(item) -> dict[str, str]:
    """Section title -> log tail, for each server among the test's fixtures (transitively)."""
    logs = {}
    for value in getattr(item, "funcargs", {}).values():
        servers = value.servers if isinstance(value, ServerFactory) else [value]
        for server in servers:
            if isinstance(server, MlflowServer):
                logs[f"mlflow server log: {server.name}"] = server.log_tail(60)
            elif isinstance(server, MotoServer):
                logs["moto server log"] = server.log_tail(30)
    return logs


def require_backend(backend: str) -> None:
    """Skip the test if `backend` is unreachable (fail if MLFLOW_SYNC_REQUIRE_BACKENDS=1)."""
    if backend_available(backend):
        return
    reason = f"{backend} is not reachable on 127.0.0.1 (see tests/harness/databases.py)"
    if os.environ.get("MLFLOW_SYNC_REQUIRE_BACKENDS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class ServerFactory:
    """`factory(backend="sqlite", artifacts="proxied", **MlflowServer options)` -> MlflowServer.

    Pooled factories hand out servers emptied by `reset()`; the others start new ones.
    """

    def __init__(self, pool: ServerPool | None = None, moto: MotoServer | None = None, tmp=None):
        self.pool = pool
        self.moto = moto
        self.tmp = tmp
        self.servers: list[MlflowServer] = []

    def __call__(self, backend: str = "sqlite", artifacts: str = "proxied", **options):
        require_backend(backend)
        if self.pool is not None:
            server = self.pool.acquire(backend, artifacts, **options)
        else:
            options.setdefault("workdir", self.tmp.mktemp(f"{backend}-{artifacts}"))
            server = MlflowServer(self.moto, backend, artifacts, **options).start()
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            if self.pool is not None:
                self.pool.release(server)
            else:
                server.stop()
        self.servers.clear()


@pytest.fixture(autouse=True)
def no_default_mlflow_store():
    """Fail the test that makes MLflow fall back to its default store in the working directory:
    that is always a leaked or missing URI, and in a user's shell it writes beside their files."""
    defaults = [Path("mlflow.db"), Path("mlruns")]
    existed = {path for path in defaults if path.exists()}
    yield
    created = [str(path) for path in defaults if path.exists() and path not in existed]
    assert not created, f"the test wrote MLflow's default store {created} in {Path.cwd()}"


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """moto server for the session; the AWS environment of the test process points at it."""
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in aws_env(server).items():
                mp.setenv(name, value)
            mp.delenv("AWS_PROFILE", raising=False)
            server.make_bucket()
            yield server


@pytest.fixture(scope="session")
def server_pool(moto, tmp_path_factory):
    pool = ServerPool(moto, workdir_factory=tmp_path_factory.mktemp)
    yield pool
    pool.close()


@pytest.fixture
def mlflow_server(server_pool):
    """Factory of empty servers for this test (pooled: reset, not restarted, between tests)."""
    factory = ServerFactory(pool=server_pool)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def session_mlflow_server(moto, tmp_path_factory):
    """Factory of servers that live (and keep their data) until the end of the session."""
    factory = ServerFactory(moto=moto, tmp=tmp_path_factory)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def shared_mlflow_server(session_mlflow_server):
    """One SQLite server with proxied artifacts for read-mostly tests: do not rely on it being
    empty, and leave nothing behind that other tests could trip over."""
    return session_mlflow_server("sqlite", "proxied")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Parametrises a test over sqlite/postgresql/mysql, skipping unreachable backends."""
    require_backend(request.param)
    return request.param


@pytest.fixture
def sagemaker_endpoint(moto, monkeypatch):
    """A SageMakerEmulator the sagemaker-mlflow plugin talks to for any ARN tracking URI.

    Register servers with `.add_tracking_server(server)` / `.add_app(server)` (use
    `artifacts="direct"` servers) and set the global URI with `use_tracking_uri(arn)`.
    """
    with SageMakerEmulator() as emulator:
        for name, value in aws_env(moto).items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", emulator.url)
        yield emulator
