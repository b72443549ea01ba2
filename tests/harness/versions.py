"""Real MLflow servers and clients of OTHER MLflow versions, each from its own cached venv.

`server_venv(version)` builds (once, cached across sessions) a venv with `mlflow==version` and
the pins that version needs today; `VersionedServer` runs its `mlflow server` CLI behind the same
counting LoopbackProxy as `MlflowServer`; `run_client(version, script, ...)` runs a script with
that venv's python ("current" = the project venv's own python and MLflow).

Cache: ${MLFLOW_SYNC_VENV_CACHE:-~/.cache/mlflow-sync/server-venvs}/mlflow-<version>, complete
when its marker file `.complete` exists and names the same pins. A venv cannot be renamed (its
console scripts carry its absolute path in their shebangs), so it is built in place under an
fcntl lock and the marker is written last: a half-built directory has no marker and is removed
by the next builder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.harness.databases import Database, SqliteDatabase
from tests.harness.process import clean_environ, tail
from tests.harness.s3 import DEFAULT_BUCKET, MotoServer, aws_env
from tests.harness.servers import MlflowServer, server_environment

MATRIX_VERSIONS = ("2.13.2", "2.16.2", "3.0.1", "3.4.0", "3.18.0")
CURRENT = "current"  # pseudo-version: the project venv's python (sys.executable) and its MLflow

# What each version needs beside itself to start and to work as it did at its release.
# Measured 2026-12 with Python 3.11.7 and the package index of that day:
# - sqlalchemy<2.0.36 (2.13.2 ... 3.4.0): their mlflow/store/db/utils.py imports
#   FallbackAsyncAdaptedQueuePool, which SQLAlchemy 2.1 no longer has: the server exits at
#   startup ("Error initializing backend store"). 3.18.0 no longer imports it.
# - numpy<2 (2.13.2): it pins pyarrow<16, built for NumPy 1.x; with NumPy 2 the server logs
#   "A module that was compiled using NumPy 1.x cannot be run in NumPy 2" tracebacks.
# - OpenTelemetry of the release (2.16.2: 1.27, 3.0.1: 1.34, 3.4.0: 1.37): with 1.45 the span
#   processors of 2.16.2 and 3.0.1 never end a span (no `_shutdown` attribute: they skip
#   SimpleSpanProcessor.__init__), so traces reach the server without spans. 3.4.0 worked
#   with 1.45 too; it keeps its release's OpenTelemetry anyway. 2.13.2's server has no trace
#   routes, so its OpenTelemetry does not matter.
_OLD_SQLALCHEMY = "sqlalchemy<2.0.36"
PINS: dict[str, tuple[str, ...]] = {
    "2.13.2": (_OLD_SQLALCHEMY, "numpy<2"),
    "2.16.2": (_OLD_SQLALCHEMY, "opentelemetry-api<1.28", "opentelemetry-sdk<1.28"),
    "3.0.1": (_OLD_SQLALCHEMY, "opentelemetry-api<1.35", "opentelemetry-sdk<1.35"),
    "3.4.0": (_OLD_SQLALCHEMY, "opentelemetry-api<1.38", "opentelemetry-sdk<1.38"),
    "3.18.0": (),
}

# Requirements of `mlflow==X` that the package index lacks: mlflow 3.18.0 requires
# mlflow-tracing==3.18.0, which was never published (newest 3.17.2). mlflow-tracing is a subset
# of mlflow-skinny (same `mlflow` package files), so such a venv gets mlflow and mlflow-skinny
# with --no-deps and then their other requirements.
MISSING_REQUIREMENTS: dict[str, tuple[str, ...]] = {"3.18.0": ("mlflow-tracing",)}

_MARKER = ".complete"
_BUILD_TIMEOUT = 1200.0  # seconds per pip step


def venv_cache() -> Path:
    return Path(
        os.environ.get("MLFLOW_SYNC_VENV_CACHE")
        or Path.home() / ".cache" / "mlflow-sync" / "server-venvs"
    )


def requirements(version: str) -> list[str]:
    """Everything `pip install` gets for `version`'s venv."""
    return [f"mlflow=={version}", "boto3", *PINS.get(version, ())]


def _venv_dir(version: str) -> Path:
    return venv_cache() / f"mlflow-{version}"


def _marker_matches(venv: Path, version: str) -> bool:
    try:
        marker = json.loads((venv / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("requirements") == requirements(version) and marker.get(
        "missing"
    ) == list(MISSING_REQUIREMENTS.get(version, ()))


def server_venv(version: str) -> Path:
    """The venv of `version` (built now if missing or built with other pins). Safe to call from
    parallel threads, pytest-xdist workers and concurrent sessions: one builds, others wait."""
    if version == CURRENT:
        return Path(sys.prefix)
    venv = _venv_dir(version)
    if _marker_matches(venv, version):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"mlflow-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _marker_matches(venv, version):  # another process may have built it meanwhile
            _build(version, venv)
    return venv


def build_seconds(version: str) -> float | None:
    """How long the cached venv of `version` took to build (None if not built)."""
    try:
        return json.loads((_venv_dir(version) / _MARKER).read_text())["build_seconds"]
    except (OSError, ValueError, KeyError):
        return None


# Prints the requirements of the installed distributions argv[2:] (no extras), less argv[1]
# (comma-separated names), for a venv whose mlflow was installed with --no-deps.
_LIST_REQUIREMENTS = """
import importlib.metadata as md, sys
from pip._vendor.packaging.requirements import Requirement
skip = set(sys.argv[1].split(",")) | set(sys.argv[2:])
for dist in sys.argv[2:]:
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.name not in skip and (req.marker is None or req.marker.evaluate({"extra": ""})):
            print(str(req).split(";")[0])
"""


def _build(version: str, venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    log_path = venv.parent / f"mlflow-{version}.build.log"
    started = time.monotonic()
    reqs = requirements(version)
    missing = list(MISSING_REQUIREMENTS.get(version, ()))
    python = str(venv / "bin" / "python")
    env = {**clean_environ(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [python, "-m", "pip", "install"]
    with open(log_path, "w") as log:

        def step(cmd: list[str], capture: bool = False) -> str:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            try:
                result = subprocess.run(
                    cmd,
                    stdout=subprocess.PIPE if capture else log,
                    stderr=log if capture else subprocess.STDOUT,
                    env=env,
                    text=True,
                    timeout=_BUILD_TIMEOUT,
                )
                failed = result.returncode != 0
            except subprocess.TimeoutExpired:
                failed, result = True, None
            if capture and result is not None:
                log.write(result.stdout)
                log.flush()
            if failed:
                raise RuntimeError(
                    f"building the venv of mlflow {version} failed at: {' '.join(cmd)}\n"
                    f"--- last lines of {log_path} ---\n{tail(log_path, 40)}"
                )
            return result.stdout if capture else ""

        step([_base_python(), "-m", "venv", str(venv)])
        if not missing:
            step([*pip, *reqs])
        else:
            step([*pip, "--no-deps", f"mlflow=={version}", f"mlflow-skinny=={version}"])
            listed = step(
                [python, "-c", _LIST_REQUIREMENTS, ",".join(missing), "mlflow", "mlflow-skinny"],
                capture=True,
            )
            step([*pip, *listed.splitlines(), *reqs[1:]])
    seconds = round(time.monotonic() - started, 1)
    marker = {
        "version": version,
        "requirements": reqs,
        "missing": missing,
        "build_seconds": seconds,
    }
    (venv / _MARKER).write_text(json.dumps(marker, indent=1))


def _base_python() -> str:
    """The interpreter the project venv was made from (venvs are not made from venvs)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def build_all(versions: Sequence[str] = MATRIX_VERSIONS, max_workers: int = 5) -> dict[str, Path]:
    """Build the missing venvs of `versions` in parallel threads (pip mostly waits on I/O)."""
    versions = [v for v in dict.fromkeys(versions) if v != CURRENT]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(versions)))) as pool:
        futures = {v: pool.submit(server_venv, v) for v in versions}
        return {v: f.result() for v, f in futures.items()}


# -- servers -----------------------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, ...]:
    """"3.4.0" -> (3, 4, 0); CURRENT -> the project venv's MLflow version."""
    if version == CURRENT:
        import mlflow

        version = mlflow.__version__
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


class VersionedServer(MlflowServer):
    """`<venv of version>/bin/mlflow server` on a fresh SQLite file that the server itself
    creates and migrates (the harness's templates are migrated by the current MLflow, whose
    schema old servers refuse), behind a counting LoopbackProxy like `MlflowServer`.

    `artifacts="proxied"` (default): `--artifacts-destination s3://<bucket>/servers/<name>`;
    `"direct"`: `--default-artifact-root ... --no-serve-artifacts`. `extra_args` are appended
    to the command line. `reset()` works as for MlflowServer (rows back to the fresh state).
    """

    def __init__(
        self,
        moto: MotoServer,
        version: str,
        artifacts: str = "proxied",
        *,
        extra_args: Sequence[str] = (),
        bucket: str = DEFAULT_BUCKET,
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 180.0,
        workers: int = 1,
    ):
        if version == CURRENT:
            raise ValueError("use MlflowServer for the current MLflow")
        super().__init__(
            moto,
            "sqlite",
            artifacts,
            launcher="cli",
            bucket=bucket,
            env=env,
            workdir=workdir,
            startup_timeout=startup_timeout,
            workers=workers,
        )
        self.version = version
        self.extra_args = list(extra_args)
        self.name = f"mlflow-{version}-{self.name}"
        self.prefix = f"servers/{self.name}"
        self.venv: Path | None = None

    def start(self) -> VersionedServer:
        self.venv = server_venv(self.version)  # before the clock: a first build takes minutes
        return super().start()

    def server_version(self) -> str:
        """What the server's /version route answers."""
        import requests

        response = requests.get(f"{self.direct_url}/version", timeout=10)
        response.raise_for_status()
        return response.text.strip()

    def _create_database(self) -> Database:
        database = SqliteDatabase(self.workdir / "mlflow.db")
        database.drop()  # a workdir handed in twice must not hand over the old rows
        return database

    def _command(self) -> list[str]:
        if self.artifacts == "proxied":
            layout = ["--artifacts-destination", self.artifact_uri]
        else:
            layout = ["--default-artifact-root", self.artifact_uri, "--no-serve-artifacts"]
        return [
            str(self.venv / "bin" / "mlflow"), "server",
            "--backend-store-uri", self.database.uri,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            *layout, *self.extra_args,
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        env = server_environment(self.moto)
        if version_tuple(self.version) < (3,):
            env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)  # 3.x only
        env.update(self.extra_env)
        return env


# -- clients -----------------------------------------------------------------------------------

SCRIPTS = Path(__file__).parent / "version_scripts"


def client_python(version: str) -> str:
    return sys.executable if version == CURRENT else str(server_venv(version) / "bin" / "python")


def run_client(
    version: str,
    script: str | Path,
    *args: str,
    tracking_uri: str | None = None,
    moto: MotoServer | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> str:
    """Run `script` (a path, or a name in version_scripts/) with `version`'s python (CURRENT:
    this interpreter) and return its stdout; raise RuntimeError with the stderr tail if it fails.

    The environment is the caller's without AWS/MLflow settings, plus: telemetry off, AWS
    pointed at `moto` (clients that write artifacts directly), MLFLOW_TRACKING_URI=`tracking_uri`,
    and `env` last. It runs in a temporary directory, so a missing URI cannot leave a default
    store (mlflow.db, mlruns/) anywhere that matters.
    """
    script = Path(script)
    if not script.is_absolute() and not script.exists():
        script = SCRIPTS / script
    full_env = {**clean_environ(), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if version != CURRENT:
        full_env.pop("PYTHONPATH", None)  # nothing of the project venv may shadow the old MLflow
    if moto is not None:
        full_env.update(aws_env(moto))
    if tracking_uri is not None:
        full_env["MLFLOW_TRACKING_URI"] = tracking_uri
    full_env.update(env or {})
    cmd = [client_python(version), str(script), *args]
    with tempfile.TemporaryDirectory(prefix="mlflow-sync-client-") as cwd:
        try:
            result = subprocess.run(
                cmd, env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
            raise RuntimeError(
                f"{script.name} with mlflow {version} timed out after {timeout:.0f}s\n"
                f"--- stderr tail ---\n{_last_lines(stderr or '', 40)}"
            ) from None
    if result.returncode != 0:
        raise RuntimeError(
            f"{script.name} with mlflow {version} exited with {result.returncode}\n"
            f"--- stderr tail ---\n{_last_lines(result.stderr, 40)}"
        )
    return result.stdout


def run_json(version: str, script: str | Path, *args: str, **options) -> dict:
    """`run_client` for scripts whose last line of stdout is one JSON document (fill.py,
    dump.py); `options` as for run_client."""
    out = run_client(version, script, *args, **options)
    lines = out.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"{script} printed no JSON line last:\n{out[-2000:]}") from None


def _last_lines(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])
