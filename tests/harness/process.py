"""Subprocess plumbing shared by the harness servers: ports, logs, readiness, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import requests


class ServerStartError(RuntimeError):
    """A harness server exited or never became ready; the message carries its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS may hand it out again; startup detects that)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def clean_environ() -> dict[str, str]:
    """os.environ without the AWS, MLflow and SageMaker settings of the developer's shell."""
    prefixes = ("AWS_", "MLFLOW_", "_MLFLOW_", "SAGEMAKER_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def tail(path: Path, lines: int = 50) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except FileNotFoundError:
        return ""


class ManagedProcess:
    """A child process in its own session (process group) with stdout+stderr sent to a log file.

    Running each server in a fresh session lets `stop()` signal the whole tree (the `mlflow
    server` CLI forks a uvicorn worker), so nothing outlives the harness.
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ):
        self.name = name
        self.cmd = list(cmd)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.cmd,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def log_tail(self, lines: int = 50) -> str:
        return tail(self.log_path, lines)

    def wait_http(
        self,
        url: str,
        timeout: float,
        ready: Callable[[requests.Response], bool] = lambda r: r.status_code == 200,
    ) -> None:
        """Poll `url` until `ready(response)`, else raise ServerStartError with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise ServerStartError(
                    f"{self.name} exited with code {self._proc.returncode} before it was ready.\n"
                    f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                if ready(requests.get(url, timeout=2)):
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} did not answer {url} within {timeout:.0f}s.\n"
                    f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it if it is still there after `timeout` seconds."""
        if self._proc.returncode is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children that ignored SIGTERM but outlived the leader are still in the group.
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
