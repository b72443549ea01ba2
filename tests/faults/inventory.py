"""What a target server holds, counted by the source id each copy carries: "exactly once" checks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mlflow_sync.identity import LOGGED_MODEL_ID_TAG, MODEL_VERSION_TAG, PROMPT_VERSION_TAG, RUN_ID_TAG, TRACE_ID_TAG

SUMMARY = Path(__file__).resolve().parents[2] / "test-artifacts" / "faults-summary.json"


def inventory(client) -> dict[str, Counter]:
    """{kind: Counter(source id -> copies)} of every imported object kind in a target."""
    from mlflow.entities import ViewType

    kinds: dict[str, Counter] = {k: Counter() for k in
                                 ("experiment", "run", "logged_model", "model_version", "prompt_version", "trace")}
    experiments = client.search_experiments(view_type=ViewType.ALL)
    for experiment in experiments:
        if experiment.name == "Default":
            continue
        kinds["experiment"][experiment.name] += 1
        ids = [experiment.experiment_id]
        for run in client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000):
            kinds["run"][run.data.tags.get(RUN_ID_TAG)] += 1
        for model in client.search_logged_models(experiment_ids=ids, max_results=1000):
            kinds["logged_model"][model.tags.get(LOGGED_MODEL_ID_TAG)] += 1
        for trace in client.search_traces(locations=ids, max_results=100):
            kinds["trace"][trace.info.tags.get(TRACE_ID_TAG)] += 1
    for model in client.search_registered_models(max_results=1000):
        for version in client.search_model_versions(f"name = '{model.name}'", max_results=1000):
            kinds["model_version"][f"{model.name}/{version.tags.get(MODEL_VERSION_TAG)}"] += 1
    for prompt in client.search_prompts(max_results=1000):
        for version in client.search_prompt_versions(prompt.name, max_results=1000):
            kinds["prompt_version"][f"{prompt.name}/{version.tags.get(PROMPT_VERSION_TAG)}"] += 1
    return kinds


def assert_exactly_once(client, expected: dict[str, int]) -> dict[str, int]:
    """Every kind holds `expected[kind]` distinct objects, none twice, none without its source id."""
    held = inventory(client)
    for kind, want in expected.items():
        copies = held[kind]
        assert None not in copies and "None" not in str(list(copies)), (kind, copies)
        assert len(copies) == want, (kind, dict(copies))
        assert max(copies.values(), default=1) == 1, (kind, dict(copies))
    return {kind: len(copies) for kind, copies in held.items()}


def record_summary(section: str, **values) -> None:
    """Add this test's numbers to test-artifacts/faults-summary.json (docs/guarantees.md quotes it)."""
    SUMMARY.parent.mkdir(exist_ok=True)
    data = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    data[section] = values
    tmp = SUMMARY.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(SUMMARY)
