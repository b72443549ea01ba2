"""The `mlflow-sync` command itself: version, help, output modes, errors rendered once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from mlflow_sync import __version__
from mlflow_sync.cli import app, main


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    import os

    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "mlflow-sync"), *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mlflow-sync {__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "info" in result.stdout


def _commands(group, prefix: str = ""):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_documents_examples():
    root = typer.main.get_command(app)
    commands = dict(_commands(root))
    assert "info" in commands
    for name, command in commands.items():
        assert "Examples" in (command.help or ""), f"`mlflow-sync {name} --help` has no examples"


def test_info_human_and_json(shared_mlflow_server, capsys):
    url = shared_mlflow_server.url
    assert main(["info", url]) == 0
    human = capsys.readouterr().out
    assert "MLflow" in human and "logged models" in human
    assert main(["info", url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "http" and data["capabilities"]["traces"] is True and data["mlflow_version"]


def test_info_paces_its_requests_by_the_profile(shared_mlflow_server, tmp_path):
    """Issue 13: `info` ignored the profile's request budget (only --max-rps counted)."""
    from mlflow_sync import budget

    url = shared_mlflow_server.url
    profile = tmp_path / "paced.yaml"
    profile.write_text(f"source:\n  uri: {url}\n  max_rps: 7.5\ntarget:\n  max_rps: 3\n")
    limiters_before = set(budget._limiters)
    assert main(["info", url, "--config", str(profile), "--quiet"]) == 0
    assert {rps for _, rps in set(budget._limiters) - limiters_before} == {7.5}  # the side with this URI
    assert main(["info", url, "--max-rps", "11", "--config", str(profile), "--quiet"]) == 0
    assert any(rps == 11.0 for _, rps in budget._limiters)


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["info", "ftp://nowhere"], 2, "unknown tracking URI scheme"),
        (["info", "arn:aws-cn:sagemaker:cn-north-1:123456789012:mlflow-app/app-1"], 2, "unsupported AWS partition"),
        (["info", "http://127.0.0.1:9"], 3, "cannot reach server http://127.0.0.1:9: connection refused"),
        (["info", "http://alice:pa55-word-xyz@127.0.0.1:9"], 3, "alice:***@127.0.0.1:9"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, code, words):
    result = run_cli(*args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1]
    assert "Traceback" not in result.stderr
    assert "pa55-word-xyz" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "uri, words",
    [
        ("sqlite:///{tmp}/missing.db", "database file '{tmp}/missing.db' does not exist"),
        ("sqlite:///{tmp}/empty.db", "is not an MLflow database (no MLflow tables)"),
        ("postgresql://u:db-secret-pw@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db: connection failed"),
    ],
)
def test_database_sources_are_checked_and_never_created(tmp_path, uri, words):
    (tmp_path / "empty.db").write_bytes(b"")
    result = run_cli("info", uri.format(tmp=tmp_path))
    assert result.returncode == 3
    assert words.format(tmp=tmp_path) in result.stderr.strip().splitlines()[-1]
    assert "db-secret-pw" not in result.stderr
    assert not (tmp_path / "missing.db").exists()
    assert (tmp_path / "empty.db").stat().st_size == 0, "a source is never written to"


def test_bad_config_key_is_named(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("retry:\n  max_attempt: 3\n")
    result = run_cli("info", "sqlite:///" + str(tmp_path / "x.db"), "--config", str(profile))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: config file '{profile}': retry.max_attempt: unknown key"


def test_verbose_shows_the_traceback_but_still_masks_secrets(tmp_path):
    result = run_cli("info", "postgresql://u:hidden-db-pass@127.0.0.1:1/db", "--verbose")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "hidden-db-pass" not in result.stderr + result.stdout


def test_retry_logs_never_show_credentials(mlflow_server):
    from tests.harness import FaultRule, Respond

    server = mlflow_server("sqlite")
    server.proxy.faults = FaultRule(Respond(503, {}, b"busy"), path_contains="experiments/search", times=1)
    url = server.url.replace("http://", "http://alice:cli-secret-42@")
    result = run_cli("info", url, "--verbose", env={"MLFLOW_TRACKING_TOKEN": "env-token-value-77"})
    assert result.returncode == 0, result.stderr
    assert "HTTP 503; retry 1" in result.stderr
    for secret in ("cli-secret-42", "env-token-value-77"):
        assert secret not in result.stderr + result.stdout
