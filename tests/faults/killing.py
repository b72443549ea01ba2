"""SIGKILL a command at a chosen request: hold that request in a fault proxy, then kill the process.

Shared by the crash tests of migrate (test_crash.py) and snapshot create (test_snapshot_crash.py).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import threading
import time

from tests.harness import DelayAfterForward, ResetBeforeForward, normalize_path


class KillPoint:
    """Hook that marks the `nth` request to `endpoint` ("METHOD /route", `*` matches anything) on
    `proxy` and holds it until the kill.

    ``after_forward``: the upstream acts on the request, the answer is held (the tool dies not
    knowing); otherwise the request is held before the upstream sees it and then dropped.
    """

    def __init__(self, name: str, proxy, endpoint: str, nth: int, *, after_forward: bool):
        self.name, self.proxy, self.endpoint, self.nth = name, proxy, endpoint, nth
        self.after_forward = after_forward
        self.seen = 0
        self.arrived = threading.Event()
        self.killed = threading.Event()
        self._lock = threading.Lock()

    def _matches(self, endpoint: str) -> bool:
        return fnmatch.fnmatchcase(endpoint, self.endpoint)

    def __call__(self, request):
        if not self._matches(f"{request.method} {normalize_path(request.path)}"):
            return None
        with self._lock:
            self.seen += 1
            if self.seen != self.nth:
                return None
        if self.after_forward:
            return DelayAfterForward(20)
        self.arrived.set()
        self.killed.wait(60)
        return ResetBeforeForward()

    def reached(self) -> bool:
        if not self.after_forward:
            return self.arrived.is_set()
        return any(self._matches(r.endpoint) and r.status == 200 and r.fault == "DelayAfterForward"
                   for r in self.proxy.counter.snapshot())


def kill_at(point: KillPoint, args: list[str], env: dict[str, str] | None = None) -> None:
    """Run `mlflow-sync *args` in its own process and SIGKILL it once `point` is reached."""
    point.proxy.faults = point
    process = subprocess.Popen([sys.executable, "-c", "from mlflow_sync.cli import run; run()", *args],
                               env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    try:
        while not point.reached():
            assert process.poll() is None, (f"{point.name}: {args[0]} ended first: {process.stderr.read()[-2000:]}",
                                            point.seen)
            assert time.monotonic() < deadline, f"{point.name}: never reached"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
    finally:
        point.killed.set()
        point.proxy.faults = None
        if process.poll() is None:
            process.kill()
        process.stderr.close()
