"""The shared connection layer against real `mlflow server` processes and the SigV4 front door."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import mlflow
import pytest
import requests

from mlflow_sync.budget import CONCURRENT_LOG_BATCHES
from mlflow_sync.config import RetrySettings
from mlflow_sync.connection import connect
from mlflow_sync.errors import ConnectionFailure
from tests.harness import Delay, FaultRule, ResetAfterForward, Respond

FAST_RETRY = RetrySettings(max_attempts=5, initial_wait=0.05, max_wait=2, max_total_seconds=20, timeout=10)


def test_two_servers_at_once_leave_global_state_alone(mlflow_server):
    source_server, target_server = mlflow_server("sqlite"), mlflow_server("sqlite")
    global_uri = mlflow.get_tracking_uri()
    with connect(source_server.url, role="source") as source, connect(target_server.url, role="target") as target:
        source.client.create_experiment("only-in-source")
        target.client.create_experiment("only-in-target")
        run = source.client.create_run(source.client.get_experiment_by_name("only-in-source").experiment_id)
        source.client.log_text(run.info.run_id, "hello", "notes/hello.txt")
        assert source.client.get_experiment_by_name("only-in-target") is None
        assert target.client.get_experiment_by_name("only-in-source") is None
        assert source.client.list_artifacts(run.info.run_id, "notes")[0].path == "notes/hello.txt"
    assert mlflow.get_tracking_uri() == global_uri
    assert source_server.counter.count("experiments/create") == 1
    assert target_server.counter.count("experiments/create") == 1
    assert source_server.counter.count("mlflow-artifacts") >= 1
    assert target_server.counter.count("mlflow-artifacts") == 0


@pytest.mark.parametrize("preset", [None, "sqlite:///preset.db"], ids=["unset", "set"])
def test_activate_puts_mlflow_globals_back_exactly(mlflow_server, monkeypatch, preset):
    """A fluent-API block must not pin MLflow's default URI (or its environment variables) on
    exit: later clients without a registry URI would then talk to ./mlflow.db."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    if preset:
        mlflow.set_tracking_uri(preset)
    before = (tracking_utils._tracking_uri, registry_utils._registry_uri, _uri_environment())

    server = mlflow_server("sqlite")
    with connect(server.url, role="source") as source, source.activate():
        assert mlflow.get_registry_uri() == source.registry_uri
        mlflow.MlflowClient().create_registered_model("through-the-globals")

    assert (tracking_utils._tracking_uri, registry_utils._registry_uri, _uri_environment()) == before
    assert [m.name for m in mlflow.MlflowClient(tracking_uri=server.url).search_registered_models()] == [
        "through-the-globals"
    ]


def _uri_environment() -> dict[str, str | None]:
    import os

    return {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}


def test_database_uri_and_http_side_by_side(mlflow_server, tmp_path):
    server = mlflow_server("sqlite")
    with connect(f"sqlite:///{tmp_path}/embedded.db", role="target") as embedded, connect(server.url) as remote:
        embedded.client.create_experiment("embedded-only")
        assert remote.client.get_experiment_by_name("embedded-only") is None
        assert embedded.transport is None
        assert embedded.capabilities().version == mlflow.__version__


def test_capabilities_come_from_the_server(mlflow_server):
    server = mlflow_server("sqlite")
    with connect(server.url) as connected:
        capabilities = connected.capabilities()
    assert capabilities.version == mlflow.__version__  # the harness runs this library's server
    assert capabilities.logged_models and capabilities.traces and capabilities.evaluation_datasets
    assert server.counter.count("GET /version") == 1


def test_two_different_arns_at_once_each_signed_for_itself(mlflow_server, sagemaker_endpoint):
    """Tracking server -> MLflow App in one process, global tracking URI not an ARN (field notes)."""
    tracking_arn = sagemaker_endpoint.add_tracking_server(mlflow_server("sqlite", "direct"))
    app_arn = sagemaker_endpoint.add_app(mlflow_server("sqlite", "direct"))
    assert not mlflow.get_tracking_uri().startswith("arn:")
    with connect(tracking_arn, role="source") as source, connect(app_arn, role="target") as target:
        errors = []

        def work(server, name):
            try:
                for i in range(5):
                    experiment_id = server.client.create_experiment(f"{name}-{i}")
                    run = server.client.create_run(experiment_id)
                    server.client.log_param(run.info.run_id, "p", "v")
                    server.client.log_text(run.info.run_id, "artifact", "a.txt")
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s, n)) for s, n in ((source, "src"), (target, "tgt"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert {e.name for e in source.client.search_experiments()} >= {f"src-{i}" for i in range(5)}
        assert not [e for e in target.client.search_experiments() if e.name.startswith("src-")]
        assert not [e for e in source.client.search_experiments() if e.name.startswith("tgt-")]
        assert source.capabilities().version == mlflow.__version__
    assert sagemaker_endpoint.counter.rejected == []
    assert sagemaker_endpoint.counter_for(tracking_arn).count("experiments/create") == 5
    assert sagemaker_endpoint.counter_for(app_arn).count("experiments/create") == 5


def test_wrong_credentials_for_an_arn_fail_in_one_line(mlflow_server, sagemaker_endpoint, monkeypatch):
    app_arn = sagemaker_endpoint.add_app(mlflow_server("sqlite", "direct"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret")
    with connect(app_arn, role="target") as target, pytest.raises(ConnectionFailure) as caught:
        target.check()
    message = str(caught.value)
    assert "refused access (HTTP 403)" in message and "sagemaker:CallMlflowAppApi" in message
    assert "not-the-right-secret" not in message
    assert sagemaker_endpoint.counter.rejected


def test_retries_honour_retry_after_then_succeed(mlflow_server):
    server = mlflow_server("sqlite")
    throttled = FaultRule(Respond(429, {"Retry-After": "1"}, b'{"error_code": "REQUEST_LIMIT_EXCEEDED"}'),
                          path_contains="experiments/create", times=1)
    unavailable = FaultRule(Respond(503, {}, b"busy"), path_contains="experiments/create", times=1)
    server.proxy.faults = lambda request: throttled(request) or unavailable(request)
    with connect(server.url, retry=FAST_RETRY) as connected:
        started = time.monotonic()
        experiment_id = connected.client.create_experiment("after-429-and-503")
        elapsed = time.monotonic() - started
        assert connected.client.get_experiment(experiment_id).name == "after-429-and-503"
        assert connected.transport.retry_stats.retries == 2
    assert elapsed >= 1.0, "Retry-After: 1 was honoured"
    statuses = [r.status for r in server.counter.snapshot() if "experiments/create" in r.endpoint]
    assert statuses == [429, 503, 200]


# MLflow's own answer when its SQL store had no free pooled connection (seen under load).
BUSY_DATABASE = (b'{"error_code": "BAD_REQUEST", "message": "(sqlalchemy.exc.TimeoutError) QueuePool limit of '
                 b'size 5 overflow 10 reached, connection timed out, timeout 30.00 (Background on this error '
                 b'at: https://sqlalche.me/e/20/3o7r)"}')


def test_a_busy_database_answer_is_retried_but_a_bad_request_is_not(mlflow_server):
    server = mlflow_server("sqlite")
    server.proxy.faults = FaultRule(Respond(400, {}, BUSY_DATABASE), path_contains="runs/create", times=2)
    with connect(server.url, retry=FAST_RETRY) as connected:
        experiment_id = connected.client.create_experiment("busy")
        run = connected.client.create_run(experiment_id)
        assert connected.transport.retry_stats.retries == 2
        with pytest.raises(Exception, match="INVALID_PARAMETER_VALUE"):
            connected.client.log_param(run.info.run_id, "", "no key")
        assert connected.transport.retry_stats.retries == 2
        assert len(connected.client.search_runs([experiment_id])) == 1
    assert [r.status for r in server.counter.snapshot() if "runs/create" in r.endpoint] == [400, 400, 200]


SEVEN_CONNECTIONS = (("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "4"), ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "3"))


def _log_batch_body(run_id: str, params: int = 20, steps: int = 20) -> dict:
    return {"run_id": run_id, "params": [{"key": f"p{i}", "value": "v"} for i in range(params)],
            "metrics": [{"key": f"m{k}", "value": 1.0, "timestamp": 1000 + step, "step": step}
                        for k in range(10) for step in range(steps)]}


@pytest.mark.slow
def test_concurrent_log_batches_deadlock_the_servers_pool_but_ours_stay_below_it(mlflow_server):
    """Upstream "log-batch-pool-deadlock": sixteen log-batches at once on a seven-connection pool take
    every connection for their outer sessions and wait 30 s for the inner ones; some then fail with
    400 "QueuePool limit". mlflow-sync keeps CONCURRENT_LOG_BATCHES in flight per server: none fails."""
    server = mlflow_server("sqlite", env=SEVEN_CONNECTIONS)
    with connect(server.url) as connected:
        experiment_id = connected.client.create_experiment("pool")
        run_ids = [connected.client.create_run(experiment_id).info.run_id for _ in range(24)]
    together = threading.Barrier(16)

    def raw(run_id: str) -> requests.Response:  # heavy enough that all of them hold a connection at once
        together.wait()
        return requests.post(f"{server.direct_url}/api/2.0/mlflow/runs/log-batch", timeout=120,
                             json=_log_batch_body(run_id, params=100, steps=90))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(raw, run_ids[:16]))
    assert any(a.status_code == 400 and "QueuePool limit" in a.text for a in answers), \
        [(a.status_code, a.text[:200]) for a in answers]

    server.counter.reset()
    server.proxy.faults = FaultRule(Delay(0.3), path_contains="runs/log-batch")  # each holds its slot >= 0.3 s
    with connect(server.url) as connected, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda run_id: connected.transport.request(
            "POST", "/api/2.0/mlflow/runs/log-batch", json=_log_batch_body(run_id)), run_ids[16:]))
    batches = [r for r in server.counter.snapshot() if "log-batch" in r.endpoint]
    assert [r.status for r in batches] == [200] * 8
    arrivals = sorted(r.arrival for r in batches)
    assert max(sum(1 for b in arrivals if a <= b < a + 0.29) for a in arrivals) == CONCURRENT_LOG_BATCHES


def test_retry_budget_is_bounded_and_reported(mlflow_server):
    server = mlflow_server("sqlite")
    server.proxy.faults = FaultRule(Respond(503, {}, b"down"), path_contains="experiments/create")
    settings = RetrySettings(max_attempts=4, initial_wait=0.05, max_wait=0.2, max_total_seconds=5, timeout=5)
    with connect(server.url, retry=settings) as connected, pytest.raises(Exception) as caught:
        connected.client.create_experiment("never")
    assert "503" in str(caught.value)
    assert server.counter.count("experiments/create") == 4


@pytest.mark.parametrize("kind", ["run", "experiment", "registered_model", "model_version"])
def test_a_retried_create_never_leaves_a_duplicate(mlflow_server, kind):
    """The server creates the object, then the connection is reset: the retry must find it."""
    server = mlflow_server("sqlite")
    with connect(server.url, retry=FAST_RETRY) as connected:
        client = connected.client
        experiment_id = client.create_experiment("guarded")
        run = client.create_run(experiment_id)
        client.create_registered_model("guarded-model")
        endpoint = {
            "run": "runs/create",
            "experiment": "experiments/create",
            "registered_model": "registered-models/create",
            "model_version": "model-versions/create",
        }[kind]
        reset = FaultRule(ResetAfterForward(), path_contains=endpoint, times=1)
        server.proxy.faults = reset
        if kind == "run":
            created = client.create_run(experiment_id, run_name="once")
            found = client.search_runs([experiment_id], "attributes.run_name = 'once'")
            assert [r.info.run_id for r in found] == [created.info.run_id]
        elif kind == "experiment":
            created_id = client.create_experiment("exactly-once")
            assert client.get_experiment_by_name("exactly-once").experiment_id == created_id
        elif kind == "registered_model":
            assert client.create_registered_model("exactly-once-model").name == "exactly-once-model"
        else:
            version = client.create_model_version("guarded-model", f"runs:/{run.info.run_id}/m", run.info.run_id)
            versions = client.search_model_versions("name = 'guarded-model'")
            assert [v.version for v in versions] == [version.version] == ["1"]
    assert reset.fired == 1, "the server made the object and the client saw a reset"


def test_rate_limit_holds_at_the_server_for_many_threads(mlflow_server):
    server = mlflow_server("sqlite")
    budget, seconds, threads = 20, 4.0, 8
    with connect(server.url, max_rps=budget) as connected:
        experiment_id = connected.client.create_experiment("paced")
        server.counter.reset()
        deadline = time.monotonic() + seconds

        def hammer():
            while time.monotonic() < deadline:
                connected.client.get_experiment(experiment_id)

        workers = [threading.Thread(target=hammer) for _ in range(threads)]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.monotonic() - started
    assert server.counter.max_in_window(1.0) <= budget
    assert server.counter.total / elapsed >= 0.9 * budget


def test_unreachable_server_fails_fast_in_one_line():
    started = time.monotonic()
    with connect("http://127.0.0.1:9", role="target") as server, pytest.raises(ConnectionFailure) as caught:
        server.check()
    assert time.monotonic() - started < 30
    assert str(caught.value) == "cannot reach target http://127.0.0.1:9: connection refused"
