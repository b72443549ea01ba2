"""Real MLflow tracking servers (subprocesses) behind a counting LoopbackProxy."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import requests

from tests.harness.databases import Database, create_database
from tests.harness.process import ManagedProcess, clean_environ, free_port
from tests.harness.proxy import LoopbackProxy, RequestCounter
from tests.harness.s3 import DEFAULT_BUCKET, MotoServer, aws_env

ARTIFACT_LAYOUTS = ("proxied", "direct")
LAUNCHERS = ("uvicorn", "cli")

_serial = itertools.count(1)


def server_environment(moto: MotoServer) -> dict[str, str]:
    """Base environment of every harness MLflow server process."""
    return {
        **clean_environ(),
        **aws_env(moto),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # Job execution starts a runner and three huey consumer processes: ~6 s of CPU at
        # startup on 2 cores, and only GenAI scorers/evaluation jobs need it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def cli_worker_environment(store_uri: str, artifacts: str, artifact_uri: str) -> dict[str, str]:
    """The variables `mlflow server` (mlflow/cli + mlflow/server/__init__.py::_run_server) hands
    its uvicorn worker for these options. Starting uvicorn with them directly runs the same app
    without the CLI process, whose imports alone take ~5 s; test_harness checks the two agree.
    """
    env = {
        "_MLFLOW_SERVER_FILE_STORE": store_uri,
        "_MLFLOW_SERVER_REGISTRY_STORE": store_uri,
        "MLFLOW_TRACKING_URI": store_uri,
        "MLFLOW_REGISTRY_URI": store_uri,
        "MLFLOW_ENABLE_WORKSPACES": "false",
        "MLFLOW_SERVER_X_FRAME_OPTIONS": "SAMEORIGIN",
        "MLFLOW_SERVER_SECRETS_CACHE_TTL": "60",
        "MLFLOW_SERVER_SECRETS_CACHE_MAX_SIZE": "1000",
        "_MLFLOW_SERVER_BOOT_ID": uuid.uuid4().hex,
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
        "_MLFLOW_SGI_NAME": "uvicorn",
    }
    if artifacts == "proxied":
        env["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
        env["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
        env["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = artifact_uri
    else:
        env["_MLFLOW_SERVER_ARTIFACT_ROOT"] = artifact_uri
        env["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = "./mlartifacts"  # CLI default, unused
    return env


def _uvicorn_log_config() -> str:
    mlflow_dir = importlib.util.find_spec("mlflow").submodule_search_locations[0]
    return str(Path(mlflow_dir) / "server" / "uvicorn_log_config.yaml")


class MlflowServer:
    """One MLflow tracking server on 127.0.0.1, its own fresh database and S3 artifact prefix.

    `url` is a LoopbackProxy in front of the server (what clients should use; `counter` counts
    through it), `direct_url` the server itself. Artifacts go to
    `s3://<bucket>/servers/<name>` in moto: served through the server (`artifacts="proxied"`,
    `--artifacts-destination`) or written by clients directly (`"direct"`,
    `--default-artifact-root ... --no-serve-artifacts`, what SageMaker ARN clients need).

    `launcher="uvicorn"` (default) starts MLflow's uvicorn app with the environment the CLI
    would give it; `launcher="cli"` runs the `mlflow server` command itself (~5 s slower).
    """

    def __init__(
        self,
        moto: MotoServer,
        backend: str = "sqlite",
        artifacts: str = "proxied",
        *,
        launcher: str = "uvicorn",
        bucket: str = DEFAULT_BUCKET,
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 120.0,
        workers: int = 1,
    ):
        if artifacts not in ARTIFACT_LAYOUTS:
            raise ValueError(f"artifacts must be one of {ARTIFACT_LAYOUTS}, not {artifacts!r}")
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, not {launcher!r}")
        self.moto = moto
        self.backend = backend
        self.artifacts = artifacts
        self.launcher = launcher
        self.bucket = bucket
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.workers = workers  # server processes (uvicorn --workers)
        self.name = f"{backend}-{artifacts}-{os.getpid()}-{next(_serial)}"
        self.prefix = f"servers/{self.name}"
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"mlflow-sync-{self.name}-"))
        self.log_path = self.workdir / "server.log"
        self.port = 0
        self.startup_seconds: float | None = None
        self.database: Database | None = None
        self.proxy: LoopbackProxy | None = None
        self._process: ManagedProcess | None = None
        self._baseline = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counter(self) -> RequestCounter:
        return self.proxy.counter

    @property
    def artifact_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.alive

    @property
    def pid(self) -> int:
        return self._process.pid

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MlflowServer:
        started = time.monotonic()
        self.moto.make_bucket(self.bucket)
        self.database = self._create_database()
        try:
            self.port = free_port()
            self._process = ManagedProcess(
                f"mlflow server {self.name}",
                self._command(),
                env=self._environment(),
                log_path=self.log_path,
                cwd=self.workdir,
            )
            self._process.wait_http(f"{self.direct_url}/health", self.startup_timeout)
            self._warm_up()
            self._baseline = self.database.snapshot()
            self.proxy = LoopbackProxy(self.direct_url, name=self.name).start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self._process is not None:
            self._process.stop()
        if self.database is not None:
            self.database.drop()
            self.database = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Make the running server empty again, as if just started: database rows (ids restart),
        its S3 artifacts, the proxy's counter and fault hook. Takes well under a second."""
        self.proxy.faults = None
        self.database.restore(self._baseline)
        self.moto.delete_prefix(self.bucket, self.prefix + "/")
        self.counter.reset()

    def log_tail(self, lines: int = 50) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def artifact_keys(self) -> list[str]:
        """S3 keys under this server's artifact prefix."""
        return self.moto.list_keys(self.bucket, self.prefix + "/")

    # -- internals ---------------------------------------------------------------------------

    def _create_database(self) -> Database:
        """A migrated, empty database (a copy of the current MLflow's template)."""
        return create_database(self.backend, self.workdir)

    def _command(self) -> list[str]:
        address = ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        if self.launcher == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", "--log-config", _uvicorn_log_config(),
                *address, "mlflow.server.fastapi_app:app",
            ]  # fmt: skip
        if self.artifacts == "proxied":
            layout = ["--artifacts-destination", self.artifact_uri]
        else:
            layout = ["--default-artifact-root", self.artifact_uri, "--no-serve-artifacts"]
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.database.uri, *address, *layout,
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        env = server_environment(self.moto)
        if self.launcher == "uvicorn":
            env.update(cli_worker_environment(self.database.uri, self.artifacts, self.artifact_uri))
        env.update(self.extra_env)
        return env

    def _warm_up(self) -> None:
        """First store access: creates the Default experiment and fails early on schema trouble."""
        response = requests.get(
            f"{self.direct_url}/api/2.0/mlflow/experiments/get",
            params={"experiment_id": "0"},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"{self.name}: warm-up request failed with {response.status_code}: "
                f"{response.text[:500]}\n--- server log ---\n{self.log_tail()}"
            )


class ServerPool:
    """Hands out empty servers, reusing released ones (reset in well under a second) instead of
    starting new ones (seconds). Keyed by every constructor option."""

    def __init__(self, moto: MotoServer, workdir_factory: Callable[[str], Path] | None = None):
        """`workdir_factory(name)` gives each new server a directory for its log and SQLite file
        that outlives it (e.g. pytest's tmp_path_factory.mktemp); default: a temp dir removed
        on stop."""
        self.moto = moto
        self.workdir_factory = workdir_factory
        self._idle: dict[tuple, list[MlflowServer]] = {}
        self._keys: dict[MlflowServer, tuple] = {}
        self._lock = threading.Lock()

    def acquire(
        self, backend: str = "sqlite", artifacts: str = "proxied", **options
    ) -> MlflowServer:
        key = (backend, artifacts, tuple(sorted(
            (name, tuple(sorted(value.items())) if isinstance(value, Mapping) else value)
            for name, value in options.items())))
        while True:
            with self._lock:
                idle = self._idle.get(key)
                server = idle.pop() if idle else None
            if server is None:
                if self.workdir_factory is not None and "workdir" not in options:
                    options["workdir"] = self.workdir_factory(f"{backend}-{artifacts}")
                server = MlflowServer(self.moto, backend, artifacts, **options).start()
                with self._lock:
                    self._keys[server] = key
                return server
            if server.alive:
                server.reset()
                return server
            self._discard(server)

    def release(self, server: MlflowServer) -> None:
        if not server.alive:
            self._discard(server)
            return
        with self._lock:
            self._idle.setdefault(self._keys[server], []).append(server)

    def _discard(self, server: MlflowServer) -> None:
        server.stop()
        with self._lock:
            self._keys.pop(server, None)

    def close(self) -> None:
        with self._lock:
            servers, self._keys, self._idle = list(self._keys), {}, {}
        for server in servers:
            server.stop()
