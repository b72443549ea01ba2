"""The bad-input catalogue: each case is one `error:` line, a non-zero exit, no traceback, and
nothing an earlier, successful migration wrote (work dir files, target objects) is lost.

Covered elsewhere and not repeated here (docs/guarantees.md lists them): unknown URI scheme,
unsupported partition and unreachable server for `info`, bad config keys and values
(tests/foundation/test_cli.py, test_redact_config.py, test_uris.py), wrong SigV4 credentials
(tests/foundation/test_connection.py), a changed export file (sha256 mismatch,
tests/migrate/test_migrate_http.py) and bad tarballs/checkpoints (tests/convert/).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.harness import Respond
from tests.migrate.conftest import build_plain_runs

WRITTEN = ("journal.jsonl", "id-map.json", "id-map.csv", "report.json")
RUNS = 3
PROMPT = "catalogue-prompt"


@pytest.fixture(scope="module")
def migrated(session_mlflow_server, tmp_path_factory):
    """A finished migration: (source server, target server, work dir) to run bad inputs against."""
    source_server, target_server = session_mlflow_server(), session_mlflow_server()
    source = connect(source_server.url, role="source").client
    build_plain_runs(source, RUNS, experiment="catalogue")
    source.register_prompt(PROMPT, "Hello {{name}}!")
    work = tmp_path_factory.mktemp("catalogue") / "work"
    assert main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir", str(work),
                 "--quiet"]) == 0
    return source_server, target_server, work


def _written(work: Path) -> dict[str, bytes]:
    return {name: (work / name).read_bytes() for name in WRITTEN}


def _damaged_export(work: Path, tmp_path: Path, damage) -> str:
    export = Path(shutil.copytree(work / "export", tmp_path / "export"))
    damage(export)
    return str(export)


def _truncate_a_run(export: Path) -> None:
    run_file = next(export.rglob("run.json"))
    run_file.write_bytes(run_file.read_bytes()[: run_file.stat().st_size // 2])


def _remove_an_artifact(export: Path) -> None:
    next(export.rglob("notes.txt")).unlink()


def _manifest_not_json(export: Path) -> None:
    (export / "manifest.json").write_text('{"format": "mlflow-sync-export", "files": {')


def _newer_format(export: Path) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["format_version"] = 99
    (export / "manifest.json").write_text(json.dumps(manifest))


def _no_manifest(export: Path) -> None:
    (export / "manifest.json").unlink()


ARN = "arn:aws:sagemaker:us-east-1:123456789012"
TARGET_CASES = [
    ("malformed tracking URI", "http//127.0.0.1:5000", 2, ""),
    ("ARN without a resource name", f"{ARN}:mlflow-tracking-server", 2, "mlflow-tracking-server"),
    ("ARN with a short account id", "arn:aws:sagemaker:us-east-1:1234:mlflow-app/app-X", 2, "1234"),
    ("ARN of another service", "arn:aws:s3:us-east-1:123456789012:mlflow-app/app-X", 2, "s3"),
    ("unsupported partition", "arn:aws-cn:sagemaker:cn-north-1:123456789012:mlflow-app/app-1", 2, "partition"),
    ("unreachable server", "http://127.0.0.1:9", 3, "connection refused"),
]
EXPORT_CASES = [
    ("truncated file", _truncate_a_run, 1, "sha256 differs"),
    ("missing file", _remove_an_artifact, 1, "missing"),
    ("manifest is not JSON", _manifest_not_json, 2, "manifest.json"),
    ("newer export format", _newer_format, 2, "upgrade mlflow-sync"),
    ("no manifest (unfinished export)", _no_manifest, 2, "no manifest.json"),
]


def _check(capsys, code: int, expected_code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _nothing_lost(migrated, before: dict[str, bytes]) -> None:
    _, target_server, work = migrated
    assert _written(work) == before
    assert_exactly_once(connect(target_server.url, role="target").client, {"experiment": 1, "run": RUNS})


@pytest.mark.parametrize("case, target, code, words", TARGET_CASES, ids=[c[0] for c in TARGET_CASES])
def test_bad_target_address(migrated, capsys, case, target, code, words):
    source_server, _, work = migrated
    before = _written(work)
    result = main(["import", "--from", str(work / "export"), "--target", target, "--work-dir", str(work),
                   "--quiet"])
    _check(capsys, result, code, words)
    _nothing_lost(migrated, before)
    record_summary(f"bad_input: {case}", exit_code=code, lost=0)


@pytest.mark.parametrize("case, damage, code, words", EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_damaged_export_dir(migrated, capsys, tmp_path, case, damage, code, words):
    _, target_server, work = migrated
    before = _written(work)
    export = _damaged_export(work, tmp_path, damage)
    target_server.counter.reset()
    result = main(["import", "--from", export, "--target", target_server.url, "--work-dir", str(work), "--quiet"])
    _check(capsys, result, code, words)
    assert [e for e in target_server.counter.by_endpoint() if e.startswith(("POST", "PUT", "PATCH", "DELETE"))
            and "search" not in e] == []
    _nothing_lost(migrated, before)
    record_summary(f"bad_input: export {case}", exit_code=code, lost=0)


@pytest.mark.parametrize("option", ["--rename-experiment", "--rename-model"])
def test_rename_of_a_name_the_export_lacks(migrated, capsys, option):
    """A typo in a rename map would otherwise import under the old name, silently."""
    _, target_server, work = migrated
    before = _written(work)
    target_server.counter.reset()
    result = main(["import", "--from", str(work / "export"), "--target", target_server.url, "--work-dir", str(work),
                   option, "no-such-name=new-name", "--quiet"])
    _check(capsys, result, 2, f"{option} 'no-such-name'", "no such name in the export")
    assert [e for e in target_server.counter.by_endpoint() if e.startswith(("POST", "PUT", "PATCH", "DELETE"))
            and "search" not in e] == []
    _nothing_lost(migrated, before)
    record_summary(f"bad_input: {option} of an unknown name", exit_code=2, lost=0)


def test_work_dir_of_another_target(migrated, session_mlflow_server, capsys):
    """Resuming a journal against another target would file runs under that target's experiment ids."""
    _, _, work = migrated
    before = _written(work)
    other = session_mlflow_server()
    other.counter.reset()
    result = main(["import", "--from", str(work / "export"), "--target", other.url, "--work-dir", str(work),
                   "--quiet"])
    _check(capsys, result, 2, "holds the import journal of", "use a new --work-dir")
    assert [e for e in other.counter.by_endpoint() if e.startswith(("POST", "PUT", "PATCH", "DELETE"))
            and "search" not in e] == []
    _nothing_lost(migrated, before)
    record_summary("bad_input: work dir of another target", exit_code=2, lost=0)


def test_refused_access_401(migrated, capsys):
    source_server, target_server, work = migrated
    before = _written(work)
    target_server.proxy.faults = lambda request: Respond(401, {"Content-Type": "application/json"},
                                                         b'{"error_code": "UNAUTHENTICATED", "message": "no"}')
    try:
        result = main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                       str(work), "--quiet"])
    finally:
        target_server.proxy.faults = None
    _check(capsys, result, 3, "refused access (HTTP 401)")
    _nothing_lost(migrated, before)
    record_summary("bad_input: 401 from the target", exit_code=3, lost=0)


def test_mlflow_app_without_call_permission(mlflow_server, sagemaker_endpoint, migrated, capsys, tmp_path):
    """SageMaker answers 403 AccessDenied when the role lacks sagemaker:CallMlflowAppApi."""
    _, _, work = migrated
    app = sagemaker_endpoint.add_app(mlflow_server("sqlite", "direct"))
    body = (b'{"__type": "AccessDeniedException", "message": "User is not authorized to perform: '
            b'sagemaker:CallMlflowAppApi"}')
    sagemaker_endpoint.faults = lambda request: Respond(403, {"Content-Type": "application/json"}, body)
    result = main(["import", "--from", str(work / "export"), "--target", app, "--work-dir",
                   str(tmp_path / "work"), "--quiet"])
    _check(capsys, result, 3, "refused access (HTTP 403)", "sagemaker:CallMlflowAppApi")
    record_summary("bad_input: MLflow App without sagemaker:CallMlflowAppApi", exit_code=3, lost=0)


FILTER_CASES = [
    ("migrate --experiment", "migrate", ["--experiment", "no-such-experiment"],
     "no experiment named 'no-such-experiment'"),
    ("migrate --model", "migrate", ["--model", "no-such-model"], "no registered model or prompt named 'no-such-model'"),
    ("migrate --model with a prompt and a typo", "migrate", ["--model", PROMPT, "--model", "no-such-prompt"],
     "no registered model or prompt named 'no-such-prompt'"),
    ("export --experiment", "export", ["--experiment", "catalogue", "--experiment", "no-such-experiment"],
     "no experiment named 'no-such-experiment'"),
    ("export --model", "export", ["--model", "no-such-model"], "no registered model or prompt named 'no-such-model'"),
    ("export --dry-run --model", "export", ["--dry-run", "--model", "no-such-model"], "'no-such-model'"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["existing", "new"])
@pytest.mark.parametrize("case, command, filters, words", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_unknown_name_in_a_filter(migrated, capsys, tmp_path, where, case, command, filters, words):
    """A typo in a filter fails before anything is written: no new work or export dir, the old one untouched."""
    source_server, target_server, work = migrated
    location = work if where == "existing" else tmp_path / "new"
    destination = {"migrate": ["--target", target_server.url, "--work-dir", str(location)],
                   "export": ["--to", str(location / "export")]}[command]
    before = _tree(work)
    target_server.counter.reset()
    result = main([command, "--source", source_server.url, *destination, *filters, "--quiet"])
    _check(capsys, result, 2, words)
    assert _tree(work) == before
    assert not (tmp_path / "new").exists()
    assert target_server.counter.total == 0
    _nothing_lost(migrated, {name: before[name] for name in WRITTEN})
    record_summary(f"bad_input: unknown name in {case} ({where} location)", exit_code=2, lost=0)


def test_a_prompt_name_is_a_model_name_for_the_filter(migrated, capsys, tmp_path):
    source_server, _, _ = migrated
    assert main(["export", "--source", source_server.url, "--to", str(tmp_path / "export"), "--model", PROMPT,
                 "--dry-run", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert (counts["prompts"], counts["prompt_versions"], counts["registered_models"]) == (1, 1, 0)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only): the disk fills up during the export."""
    mount_point = tmp_path / "tiny-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_in_the_work_dir(migrated, tiny_disk, capsys):
    source_server, target_server, _ = migrated
    (tiny_disk / "ballast").write_bytes(b"\0" * 60_000)  # leave almost nothing
    result = main(["migrate", "--source", source_server.url, "--target", target_server.url, "--work-dir",
                   str(tiny_disk / "work"), "--quiet"])
    _check(capsys, result, 1, "No space left on device")
    for path in (tiny_disk / "work").rglob("*.json"):  # nothing half-written under a final name
        json.loads(path.read_text())
    record_summary("bad_input: disk full in the work dir", exit_code=1, lost=0)
