"""Real servers of every MLflow version users run (issue 11): each source version is filled by its
own client with what it can hold, migrated into each target version, migrated again with a new
work dir (nothing is created twice), and checked by an independent comparison: each side dumped by
its *own* client version (tests/harness/version_scripts/dump.py), never through mlflow-sync.

Older server versions run from venvs built once and cached outside the repository
(tests/harness/versions.py). Run the matrix alone with ``bash scripts/run-tests -m version_matrix``.
"""

from __future__ import annotations

import json

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.inventory import take_inventory
from tests.harness import MlflowServer
from tests.harness.compare_dumps import compare
from tests.harness.versions import CURRENT, MATRIX_VERSIONS, VersionedServer, build_all, run_json

pytestmark = [pytest.mark.version_matrix, pytest.mark.slow]

SOURCES = (*MATRIX_VERSIONS[:-1], CURRENT, MATRIX_VERSIONS[-1])  # oldest first, 3.18 last
TARGETS = (CURRENT, "3.18.0")
PAIRS = [(source, target) for source in SOURCES for target in TARGETS] + [
    ("2.13.2", "2.16.2"),  # an older target (a SageMaker tracking server may run 2.16) with what it can hold
    ("3.0.1", "3.0.1"),  # a 3.0 target: its trace lookup by id fails (HTTP 500), copies are found by listing
]


@pytest.fixture(scope="module")
def venvs():
    return build_all()


@pytest.fixture(scope="module")
def servers(moto, venvs, tmp_path_factory):
    """version -> a running server of that version (started once, reset by the user)."""
    started: dict[str, MlflowServer] = {}

    def get(version: str, role: str) -> MlflowServer:
        key = f"{role}-{version}"
        if key not in started:
            workdir = tmp_path_factory.mktemp(key)
            server = MlflowServer(moto, workdir=workdir) if version == CURRENT else \
                VersionedServer(moto, version, workdir=workdir)
            started[key] = server.start()
        return started[key]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def filled(servers, moto):
    """version -> (source server, what its fill made, its dump by its own client); filled once."""
    done: dict[str, tuple] = {}

    def get(version: str):
        if version not in done:
            server = servers(version, "source")
            made = run_json(version, "fill.py", tracking_uri=server.url, moto=moto)
            dump = run_json(version, "dump.py", tracking_uri=server.url, moto=moto)
            done[version] = (server, made, dump)
        return done[version]

    return get


def _counts(server) -> dict:
    with connect(server.url, role="inventory") as side:
        return take_inventory(side, uncarried_kinds=False).counts


@pytest.mark.parametrize(("source_version", "target_version"), PAIRS)
def test_every_source_version_migrates_completely(source_version, target_version, servers, filled, moto, tmp_path,
                                                  capsys):
    source, made, source_dump = filled(source_version)
    target = servers(target_version, "target")
    target.reset()
    args = ["migrate", "--source", source.url, "--target", target.url, "--quiet"]

    assert main([*args, "--work-dir", str(tmp_path / "first")]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "first" / "report.json").read_text())
    assert report["failures"] == [] and report["validation"]["ok"] is True
    assert report["notes"] == []  # every trace arrived with its spans

    if source_version.startswith("2."):  # kinds a 2.x source cannot hold are not applicable, never "!"
        capsys.readouterr()
        assert main(["validate", "--source", source.url, "--target", target.url, "--one-way", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert {"logged_models", "prompts", "evaluation_datasets"} <= set(shown["not_applicable"])
        assert shown["totals"]["error"] == 0

    counts = _counts(target)
    assert main([*args, "--work-dir", str(tmp_path / "second"), "--no-validate"]) == 0, capsys.readouterr().err
    assert _counts(target) == counts  # the second migration created nothing

    target_dump = run_json(target_version, "dump.py", tracking_uri=target.url, moto=moto)
    kinds = sorted(source_dump["kinds"])
    assert set(kinds) <= set(target_dump["kinds"])  # the target holds every kind the source does
    differences = compare(source_dump, target_dump, kinds)
    assert differences == [], "\n".join(differences)


def test_a_2x_server_missing_a_span_file_is_asked_once_and_the_report_names_the_trace(servers, moto, tmp_path,
                                                                                       capsys):
    """Old clients with a current OpenTelemetry leave traces without span files; a 2.x server then
    answers HTTP 500 for them every time. One attempt each, the trace carried as the server has it."""
    source = VersionedServer(moto, "2.16.2", workdir=tmp_path / "source").start()
    try:
        made = run_json("2.16.2", "fill.py", tracking_uri=source.url, moto=moto)
        span_file = sorted(k for k in source.artifact_keys() if k.endswith("traces.json"))[0]
        moto.boto3_client("s3").delete_object(Bucket=source.bucket, Key=span_file)
        lost = span_file.split("/traces/")[1].split("/")[0]
        assert lost in made["trace_ids"]
        target = servers(CURRENT, "target")
        target.reset()
        source.counter.reset()  # the fill read its traces back
        work = tmp_path / "work"
        assert main(["migrate", "--source", source.url, "--target", target.url, "--work-dir", str(work),
                     "--quiet"]) == 0, capsys.readouterr().err
        asked = [r for r in source.counter.snapshot() if r.path.endswith(f"{lost}/artifacts/traces.json")]
        assert [r.status for r in asked] == [500, 500]  # once by the export, once by the validation
        report = json.loads((work / "report.json").read_text())
        assert [note for note in report["notes"] if lost in note]
    finally:
        source.stop()


def test_an_older_target_is_refused_the_kinds_it_cannot_hold_before_anything_is_written(servers, filled, tmp_path,
                                                                                        capsys):
    source, made, _ = filled(CURRENT)
    target = servers("2.16.2", "target")
    target.reset()
    before = _counts(target)
    code = main(["migrate", "--source", source.url, "--target", target.url, "--work-dir", str(tmp_path / "w"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: the target") and err.count("\n") == 1
    for kind in ("logged_models", "traces", "prompts"):
        assert kind in err and f"--skip-kind {kind.replace('_', '-')}" in err
    assert _counts(target) == before  # nothing written


@pytest.mark.parametrize("source_version", ["2.16.2", "3.0.1", CURRENT])
def test_sync_from_an_older_source_carries_everything_and_counts_both_sides(source_version, servers, filled, moto,
                                                                            tmp_path, capsys):
    """sync reads older servers with the same client code as migrate, plus its own window searches and
    the inventory it now takes of both sides: a first cycle carries every object (its own client's
    dump finds them equal), a second finds nothing new, and neither reports a shortfall."""
    source, _, source_dump = filled(source_version)
    target = servers(CURRENT, "target")
    target.reset()
    args = ["sync", "--source", source.url, "--target", target.url, "--work-dir", str(tmp_path / "standby"), "--quiet"]
    counts = []
    for _ in range(2):
        assert main(args) == 0, capsys.readouterr().err
        report = json.loads((tmp_path / "standby" / "sync-report.json").read_text())
        assert report["failures"] == [] and report["inventory"]["short"] == [] and report["notes"] == []
        counts.append(_counts(target))
    assert report["changes"]["new_runs"] == 0 and counts[1] == counts[0]  # the second cycle created nothing
    target_dump = run_json(CURRENT, "dump.py", tracking_uri=target.url, moto=moto)
    kinds = sorted(source_dump["kinds"])
    differences = compare(source_dump, target_dump, kinds)
    assert differences == [], "\n".join(differences)
