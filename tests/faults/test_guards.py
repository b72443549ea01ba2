"""Creates whose answer is lost (reset or timed out after the server acted) are not repeated."""

from __future__ import annotations

import pytest

from mlflow_sync.config import RetrySettings
from mlflow_sync.connection import connect
from tests.harness import DelayAfterForward, FaultRule, ResetAfterForward

QUICK = RetrySettings(max_attempts=5, initial_wait=0.05, max_wait=0.5, max_total_seconds=30, timeout=2)


@pytest.mark.parametrize("lost_answer", [ResetAfterForward(), DelayAfterForward(3)], ids=["reset", "timeout"])
def test_a_logged_model_create_with_a_lost_answer_is_made_once(mlflow_server, lost_answer):
    server = mlflow_server()
    with connect(server.url, role="target", retry=QUICK) as connected:
        client = connected.client
        experiment_id = client.create_experiment("guarded-models")
        rule = FaultRule(lost_answer, method="POST", path_contains="POST /api/2.0/mlflow/logged-models", times=1)
        server.proxy.faults = lambda request: rule(request) if request.path.endswith("/logged-models") else None
        created = client.create_logged_model(experiment_id, name="once")
        server.proxy.faults = None
        models = client.search_logged_models(experiment_ids=[experiment_id])
    assert rule.fired == 1
    assert [m.model_id for m in models] == [created.model_id]
