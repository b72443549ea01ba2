"""The version matrix harness itself: a real server of each MLflow version in MATRIX_VERSIONS
(its own cached venv), filled by fill.py with that version's client and read back by dump.py
with the same client; and the current client's dump of a current harness server."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.harness.compare_dumps import compare, count_kinds
from tests.harness.versions import (
    CURRENT,
    MATRIX_VERSIONS,
    VersionedServer,
    build_all,
    build_seconds,
    run_json,
)

pytestmark = [pytest.mark.version_matrix, pytest.mark.slow]

ALL_DUMP_KINDS = [
    "experiments", "runs", "registered_models", "logged_models", "traces", "prompts",
    "evaluation_datasets",
]  # fmt: skip
# What a server of each version holds (and its own client reads back).
DUMP_KINDS = {
    "2.13.2": ["experiments", "runs", "registered_models"],
    "2.16.2": ["experiments", "runs", "registered_models", "traces"],
    "3.0.1": ["experiments", "runs", "registered_models", "logged_models", "traces", "prompts"],
    "3.4.0": ALL_DUMP_KINDS,
    "3.18.0": ALL_DUMP_KINDS,
}
# What fill.py cannot make with each version's client.
NOT_MADE = {
    "2.13.2": {
        "traces", "spans", "assessments", "logged_models", "logged_model_metrics",
        "run_model_inputs", "prompts", "prompt_versions", "prompt_aliases",
        "evaluation_datasets", "dataset_records",
    },
    "2.16.2": {
        "assessments", "logged_models", "logged_model_metrics", "run_model_inputs", "prompts",
        "prompt_versions", "prompt_aliases", "evaluation_datasets", "dataset_records",
    },
    "3.0.1": {"assessments", "evaluation_datasets", "dataset_records"},
    "3.4.0": set(),
    "3.18.0": set(),
}  # fmt: skip
EVERY_FILL_KIND = {
    "experiments", "runs", "deleted_runs", "metric_points", "artifacts", "run_dataset_inputs",
    "run_model_inputs", "registered_models", "model_versions", "staged_versions", "aliases",
    "traces", "spans", "assessments", "logged_models", "logged_model_metrics", "prompts",
    "prompt_versions", "prompt_aliases", "evaluation_datasets", "dataset_records",
}  # fmt: skip


@pytest.fixture(scope="session")
def version_venvs():
    """The venv of every matrix version (built in parallel threads if missing: minutes)."""
    started = time.monotonic()
    venvs = build_all(MATRIX_VERSIONS)
    print(f"\nversion venvs ready in {time.monotonic() - started:.1f}s; build seconds: "
          f"{ {v: build_seconds(v) for v in MATRIX_VERSIONS} }")  # fmt: skip
    return venvs


def check_dump_holds_the_fill(summary: dict, dump: dict) -> None:
    assert count_kinds(dump) == summary["counts"]
    assert set(summary.get("trace_ids", [])) <= set(dump.get("traces", {}))
    assert compare(dump, dump) == []


@pytest.mark.parametrize("version", MATRIX_VERSIONS)
def test_each_version_serves_fills_and_dumps_with_its_own_client(
    version, version_venvs, moto, tmp_path
):
    with VersionedServer(moto, version, workdir=tmp_path) as server:
        assert server.server_version() == version
        assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
        started = time.monotonic()
        summary = run_json(version, "fill.py", tracking_uri=server.url, moto=moto)
        filled = time.monotonic()
        dump = run_json(version, "dump.py", tracking_uri=server.url, moto=moto)
        dumped = time.monotonic()
        # What mlflow-sync's own client (3.17) reads of the same server
        current = run_json(CURRENT, "dump.py", tracking_uri=server.url, moto=moto)
        keys = server.artifact_keys()
    print(f"\nmlflow {version}: server up in {server.startup_seconds:.1f}s, fill "
          f"{filled - started:.1f}s, dump {dumped - filled:.1f}s; made {summary['counts']}; "
          f"skipped {sorted(summary['skipped'])}")  # fmt: skip

    assert summary["mlflow_version"] == dump["mlflow_version"] == version
    assert set(summary["kinds"]) == EVERY_FILL_KIND - NOT_MADE[version]
    assert dump["kinds"] == DUMP_KINDS[version]
    check_dump_holds_the_fill(summary, dump)
    # dump.py is client-neutral: the current client reads the same (and prompts: none).
    assert set(current["kinds"]) >= set(dump["kinds"])
    assert compare(dump, current) == []
    assert keys, "proxied artifacts went to the server's S3 prefix"
    runs = dump["runs"]
    assert runs["matrix-exp-a/child-a"]["parent"] == "matrix-exp-a/run-a1"
    assert runs["matrix-exp-a/deleted-a"]["lifecycle_stage"] == "deleted"
    assert runs["matrix-exp-a/run-a1"]["metrics"]["loss"] == [
        [0, 1_700_000_000_000, 1.0], [1, 1_700_000_001_000, 0.5], [2, 1_700_000_002_000, 0.3333],
    ]  # fmt: skip
    model = dump["registered_models"]["matrix-model"]
    assert model["aliases"] == {"champion": "3"}
    assert {n: v["stage"] for n, v in model["versions"].items()} == {
        "1": "Production", "2": "Staging", "3": "None",
    }  # fmt: skip
    assert model["versions"]["3"]["run"] == "matrix-exp-b/run-b1"
    if "prompts" in dump["kinds"]:
        prompt = dump["prompts"]["matrix-prompt"]
        assert prompt["aliases"] == {"production": "1"}
        assert prompt["versions"]["2"]["template"] == "Answer {{question}} in one word."
    if "logged_models" in dump["kinds"]:
        logged = dump["logged_models"]["matrix-logged"]
        # carried exactly: MLflow writes one entry per registration path (int and str versions)
        entries = json.loads(logged["tags"]["mlflow.modelVersions"])
        assert {(e["name"], str(e["version"])) for e in entries} == {("matrix-logged-model", "1")}
        assert runs["matrix-exp-b/eval-run"]["model_inputs"] == ["<model:matrix-logged>"]
        assert dump["registered_models"]["matrix-logged-model"]["versions"]["1"]["source"] == (
            "models:/<model:matrix-logged>"
        )


def test_the_current_client_fills_and_dumps_a_current_server(mlflow_server, moto):
    server = mlflow_server()
    summary = run_json(CURRENT, "fill.py", tracking_uri=server.url, moto=moto)
    dump = run_json(CURRENT, "dump.py", tracking_uri=server.url, moto=moto)
    assert set(summary["kinds"]) == EVERY_FILL_KIND
    assert dump["kinds"] == ALL_DUMP_KINDS
    check_dump_holds_the_fill(summary, dump)


def test_parallel_callers_build_a_venv_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tests.harness import versions

    monkeypatch.setenv("MLFLOW_SYNC_VENV_CACHE", str(tmp_path))
    builds = []

    def fake_build(version, venv):
        builds.append(version)
        time.sleep(0.3)
        venv.mkdir(exist_ok=True)
        marker = {"requirements": versions.requirements(version), "missing": []}
        (venv / versions._MARKER).write_text(json.dumps(marker))

    monkeypatch.setattr(versions, "_build", fake_build)
    with ThreadPoolExecutor(4) as pool:
        venvs = list(pool.map(versions.server_venv, ["9.9.9"] * 4))
    assert builds == ["9.9.9"]
    assert venvs == [tmp_path / "mlflow-9.9.9"] * 4
    monkeypatch.setitem(versions.PINS, "9.9.9", ("numpy<2",))  # other pins: built anew
    versions.server_venv("9.9.9")
    assert builds == ["9.9.9", "9.9.9"]


def test_compare_names_what_differs():
    source = {
        "kinds": ["experiments", "runs"],
        "experiments": {"a": {"tags": {"t": "1"}, "lifecycle_stage": "active"}},
        "runs": {"a/r": {"params": {"p": "1"}}, "a/gone": {}},
    }
    target = {
        "kinds": ["experiments", "runs", "traces"],
        "experiments": {"a": {"tags": {"t": "2"}, "lifecycle_stage": "active"}},
        "runs": {"a/r": {"params": {"p": "1", "extra": "x"}}},
        "traces": {"tr-1": {}},
    }
    assert compare(source, target) == [
        "experiments['a']['tags']['t']: source \"1\" != target \"2\"",
        "runs['a/gone']: missing in target (source: {})",
        "runs['a/r']['params']['extra']: only in target (\"x\")",
    ]
    assert compare(source, target, kinds=["experiments"]) == [
        "experiments['a']['tags']['t']: source \"1\" != target \"2\""
    ]
    assert compare(source, source) == []
