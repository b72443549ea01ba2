"""Fixtures of the fault tests: quiet run links, a small retry budget written as a config profile."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml


@pytest.fixture(autouse=True)
def _no_run_links(monkeypatch):
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


CLIENT_TIMEOUT = 4.0
"""Seconds the tool waits for one answer in these tests: the proxy's slowest fault waits longer."""


def write_profile(path, **retry) -> str:
    """A config profile with a quick retry budget (overrides in ``retry``); returns its path."""
    settings = {"max_attempts": 12, "initial_wait": 0.05, "max_wait": 0.5, "max_total_seconds": 60,
                "timeout": CLIENT_TIMEOUT, **retry}
    path.write_text(yaml.safe_dump({"retry": settings, "workers": 4}))
    return str(path)


@pytest.fixture
def quick_profile(tmp_path) -> str:
    return write_profile(tmp_path / "quick.yaml")


def run_cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The installed console script in its own process, as a user runs it (quiet: errors only)."""
    script = os.path.join(os.path.dirname(sys.executable), "mlflow-sync")
    return subprocess.run([script, *args, "--quiet"], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true", **(env or {})})


def assert_one_line_error(stderr: str, *words: str) -> str:
    """stderr is exactly one `error: ...` line naming each of ``words``; no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]
