"""Fixtures of the migrate tests: quiet run links, a plain-run dataset builder, a run lister."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_run_links(monkeypatch):
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def all_runs(client) -> list:
    """Every run of every experiment (deleted ones included)."""
    from mlflow.entities import ViewType

    runs = []
    for experiment in client.search_experiments(view_type=ViewType.ALL):
        runs += client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return runs


def build_plain_runs(client, runs: int, *, experiment: str = "bench", long_histories_every: int = 3,
                     started_ms: int | None = None) -> list[str]:
    """The benchmark's run shape: 20 params, 10 metrics (100-step histories on every n-th run), 2 artifacts.

    ``started_ms``: a history instead of runs made now (run i starts i minutes after it, runs 30 s)."""
    import tempfile
    from pathlib import Path

    from mlflow.entities import Metric, Param

    experiment_id = client.create_experiment(experiment)
    run_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("config.yaml", "lr: 0.1\n"), ("notes.txt", "ok\n")):
            Path(tmp, name).write_text(text)
        for index in range(runs):
            start = None if started_ms is None else started_ms + index * 60_000
            run = client.create_run(experiment_id, run_name=f"run-{index}", tags={"mlflow.user": "carol"},
                                    start_time=start)
            steps = 100 if index % long_histories_every == 0 else 1
            client.log_batch(
                run.info.run_id,
                params=[Param(f"p{i}", f"value-{i}-{index}") for i in range(20)],
                metrics=[Metric(f"m{k}", k + s / 100, 1_700_000_000_000 + s, s) for k in range(10) for s in range(steps)],
            )
            client.log_artifacts(run.info.run_id, tmp)
            client.set_terminated(run.info.run_id, end_time=None if start is None else start + 30_000)
            run_ids.append(run.info.run_id)
    return run_ids
