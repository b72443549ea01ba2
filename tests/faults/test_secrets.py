"""Known secret values in every place a user puts them; none may appear in any output or file.

AWS keys and a session token (moto and the SageMaker emulator accept them), a password in a
postgresql:// URI (the server trusts loopback, so any password works), basic auth in an http
URI (the proxy checks it arrived) and MLFLOW_TRACKING_TOKEN. Every command runs with --verbose
(the most log lines, tracebacks included); stdout, stderr (at the file descriptors) and every
file under the work root are scanned for each secret, also base64-encoded as in an
Authorization header. The console script's own process is covered by tests/foundation/test_cli.py.
"""

from __future__ import annotations

import base64
import subprocess

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from tests.faults.inventory import record_summary
from tests.harness import SageMakerEmulator, backend_available, create_database
from tests.migrate.conftest import build_plain_runs

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAULTSECRET4242",
    "AWS_SECRET_ACCESS_KEY": "fault-aws-secret-Zq81xx",
    "AWS_SESSION_TOKEN": "fault-session-token-Yx93yy",
    "MLFLOW_TRACKING_TOKEN": "fault-tracking-token-Wv75zz",
}
BASIC_USER, BASIC_PASSWORD = "alice", "fault-basic-pass-Ut64"
DB_PASSWORD = "fault-db-pass-Ts53"


def _forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"{BASIC_USER}:{secret}".encode()).decode()]


def _with_basic_auth(url: str) -> str:
    return url.replace("http://", f"http://{BASIC_USER}:{BASIC_PASSWORD}@")


@pytest.mark.slow
def test_no_secret_in_any_output_or_file(mlflow_server, moto, tmp_path, monkeypatch, capfd):
    secrets = [*SECRETS.values(), BASIC_PASSWORD, DB_PASSWORD]
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)  # moto and the emulator below accept exactly these
    source_server, http_target = mlflow_server(), mlflow_server()
    build_plain_runs(connect(source_server.url, role="source").client, 2, experiment="secrets")
    authorized = []
    source_server.proxy.faults = lambda request: authorized.append(request.headers.get("Authorization"))
    work = tmp_path / "work"
    commands = []
    source = _with_basic_auth(source_server.url)
    with SageMakerEmulator(access_key=SECRETS["AWS_ACCESS_KEY_ID"],
                           secret_key=SECRETS["AWS_SECRET_ACCESS_KEY"]) as emulator:
        monkeypatch.setenv("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT", emulator.url)
        app = emulator.add_app(mlflow_server("sqlite", "direct"))
        commands += [
            ["export", "--source", source, "--to", str(work / "export")],
            ["import", "--from", str(work / "export"), "--target", app, "--work-dir", str(work / "import")],
            ["migrate", "--source", source, "--target", _with_basic_auth(http_target.url), "--work-dir",
             str(work / "migrate")],
            ["validate", "--source", source, "--target", app, "--one-way", "--report-json",
             str(work / "validation.json"), "--html", str(work / "validation.html"), "--junit",
             str(work / "junit.xml")],
            # failures print the address they could not use: still masked
            ["migrate", "--source", source, "--target", "http://bob:" + BASIC_PASSWORD + "@127.0.0.1:9",
             "--work-dir", str(work / "unreachable")],
        ]
        if backend_available("postgresql"):
            database = create_database("postgresql", tmp_path)
            db_uri = database.uri.replace("://postgres@", f"://postgres:{DB_PASSWORD}@")
            assert DB_PASSWORD in db_uri, database.uri
            commands.append(["migrate", "--source", db_uri, "--target", app, "--work-dir", str(work / "from-db")])
        try:
            results = [_run(command, capfd) for command in commands]
        finally:
            if backend_available("postgresql"):
                database.drop()
        assert emulator.counter.rejected == []
    assert [r.returncode for r in results if r is not results[4]] == [0] * (len(results) - 1), [
        r.stderr[-1500:] for r in results]
    assert results[4].returncode == 3 and "bob:***@" in results[4].stderr
    assert f"Basic {base64.b64encode(f'{BASIC_USER}:{BASIC_PASSWORD}'.encode()).decode()}" in authorized

    scanned = 0
    for result in results:
        for stream in (result.stdout, result.stderr):
            _assert_clean(stream, secrets, f"output of {result.args[:2]}")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            scanned += 1
            _assert_clean(path.read_bytes().decode("utf-8", "replace"), secrets, str(path))
    assert scanned > 20  # export, journals, ID maps, reports, manifests were all written
    record_summary("secrets", commands=len(commands), files_scanned=scanned, secrets=len(secrets), found=0)


def _run(command: list[str], capfd) -> subprocess.CompletedProcess:
    """In this process (each command as `main` runs it), output captured at the file descriptors."""
    code = main([*command, "--verbose"])
    captured = capfd.readouterr()
    return subprocess.CompletedProcess(command, code, captured.out, captured.err)


def _assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        for form in _forms(secret):
            assert form not in text, f"{secret!r} appears in {where}"
