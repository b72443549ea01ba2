"""Tests of the test harness itself: servers, moto, the counting/fault proxy, the SigV4 emulator."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
import requests

from tests.harness import (
    APP_HEADER,
    ARTIFACT_LAYOUTS,
    TRACKING_SERVER_HEADER,
    Delay,
    FaultRule,
    LoopbackProxy,
    MlflowServer,
    RequestCounter,
    RequestRecord,
    ResetAfterForward,
    ResetBeforeForward,
    Respond,
    ServerStartError,
    create_database,
    normalize_path,
    sign_request,
    tracking_server_arn,
    use_tracking_uri,
)
from tests.harness.process import ManagedProcess
from tests.harness.servers import cli_worker_environment, server_environment

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

EXPERIMENTS_CREATE = "/api/2.0/mlflow/experiments/create"
GET_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"


def _experiment_exists(server: MlflowServer, name: str) -> bool:
    """Asked of the server directly, so the check itself is not counted or faulted."""
    response = requests.get(
        server.direct_url + GET_BY_NAME, params={"experiment_name": name}, timeout=10
    )
    return response.status_code == 200


# --- servers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("artifacts", ARTIFACT_LAYOUTS)
def test_server_round_trip(mlflow_server, backend, artifacts, moto, tmp_path):
    server = mlflow_server(backend, artifacts)
    client = mlflow.MlflowClient(tracking_uri=server.url)

    experiment_id = client.create_experiment("round-trip")
    run_id = client.create_run(experiment_id).info.run_id
    payload = f"{backend} {artifacts}\n".encode()
    (tmp_path / "hello.txt").write_bytes(payload)
    client.log_artifact(run_id, str(tmp_path / "hello.txt"), "notes")
    downloaded = client.download_artifacts(run_id, "notes/hello.txt", str(tmp_path / "out"))

    assert Path(downloaded).read_bytes() == payload
    (key,) = server.artifact_keys()
    assert key == f"{server.prefix}/{experiment_id}/{run_id}/artifacts/notes/hello.txt"
    s3_object = moto.boto3_client("s3").get_object(Bucket=server.bucket, Key=key)
    assert s3_object["Body"].read() == payload

    endpoints = server.counter.by_endpoint()
    assert endpoints[f"POST {EXPERIMENTS_CREATE}"] == 1
    assert endpoints["POST /api/2.0/mlflow/runs/create"] == 1
    if artifacts == "proxied":
        # The upload goes through the server; MLflow 3 downloads from S3 with a presigned URL.
        assert endpoints["PUT /api/2.0/mlflow-artifacts/artifacts/*"] == 1
        assert endpoints["GET /api/2.0/mlflow-artifacts/presigned/*"] == 1
    else:
        assert server.counter.count("mlflow-artifacts") == 0


def test_reset_empties_a_running_server(mlflow_server, backend, tmp_path):
    server = mlflow_server(backend, "proxied")
    client = mlflow.MlflowClient(tracking_uri=server.url)
    first_id = client.create_experiment("kept-name")
    run_id = client.create_run(first_id).info.run_id
    (tmp_path / "a.txt").write_text("a")
    client.log_artifact(run_id, str(tmp_path / "a.txt"))
    client.create_registered_model("model")

    server.reset()

    assert server.counter.total == 0
    assert server.artifact_keys() == []
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.get_experiment_by_name("kept-name") is None
    assert client.search_registered_models() == []
    assert client.create_experiment("kept-name") == first_id  # ids restart as on a new server


def test_database_drop_removes_it(backend, tmp_path):
    database = create_database(backend, tmp_path)
    assert sorted(database.snapshot()) == ["alembic_version", "workspaces"]
    assert database.exists()
    database.drop()
    assert not database.exists()


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, ppid, process group) of every process, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        found.append((int(stat.parent.name), state, int(ppid), int(pgrp)))
    return found


def _children(pid: int) -> list[int]:
    return [child for child, _, ppid, _ in _processes() if ppid == pid]


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are not zombies (an orphan's zombie waits for pid 1)."""
    return [pid for pid, state, _, pgrp in _processes() if pgrp == pgid and state != "Z"]


@linux_only
@pytest.mark.parametrize("artifacts", ARTIFACT_LAYOUTS)
def test_cli_launcher_gives_the_worker_the_environment_the_default_launcher_uses(moto, artifacts):
    with MlflowServer(moto, "sqlite", artifacts, launcher="cli") as server:
        (worker,) = _children(server.pid)
        raw = Path(f"/proc/{worker}/environ").read_bytes().decode()
        environ = dict(item.split("=", 1) for item in raw.split("\0") if item)
        base = server_environment(moto)
        seen = {
            k: v
            for k, v in environ.items()
            if k.startswith(("MLFLOW_", "_MLFLOW_")) and k not in base
        }
        expected = cli_worker_environment(server.database.uri, artifacts, server.artifact_uri)
        seen.pop("_MLFLOW_SERVER_BOOT_ID")
        expected.pop("_MLFLOW_SERVER_BOOT_ID")
        assert seen == expected
        assert mlflow.MlflowClient(tracking_uri=server.url).create_experiment("via-cli") == "1"
        group = server.pid
        database_path = server.database.path
    assert _live_group_members(group) == []
    assert not database_path.exists()


def test_startup_failure_reports_the_log_tail(tmp_path):
    crash = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "print('boom: bad config', flush=True); raise SystemExit(3)"],
        env=os.environ,
        log_path=tmp_path / "crash.log",
    )
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*boom: bad config"):
        crash.wait_http("http://127.0.0.1:9/health", timeout=30)

    silent = ManagedProcess(
        "sleeper",
        [sys.executable, "-c", "import time; print('still booting', flush=True); time.sleep(60)"],
        env=os.environ,
        log_path=tmp_path / "sleep.log",
    )
    with pytest.raises(ServerStartError, match=r"(?s)did not answer.*still booting"):
        silent.wait_http("http://127.0.0.1:9/health", timeout=1)
    assert not silent.alive


@linux_only
def test_stop_kills_the_whole_process_group(tmp_path):
    stubborn_child = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    )
    parent_code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {stubborn_child!r}]); time.sleep(120)"
    )
    parent = ManagedProcess(
        "parent",
        [sys.executable, "-c", parent_code],
        env=os.environ,
        log_path=tmp_path / "tree.log",
    )
    deadline = time.monotonic() + 10
    while not _children(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _children(parent.pid)
    parent.stop(timeout=1)
    assert _live_group_members(parent.pid) == []


def test_moto_serves_s3_and_sagemaker(moto):
    import boto3  # the session environment points the default boto3 session at moto

    assert "mlflow-sync-test" in [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    sagemaker = moto.boto3_client("sagemaker")
    model_data = "s3://mlflow-sync-test/model.tar.gz"
    arn = sagemaker.create_model_package(
        ModelPackageName="harness-check",
        InferenceSpecification={
            "Containers": [{"Image": "img:1", "ModelDataUrl": model_data}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    containers = described["InferenceSpecification"]["Containers"]
    assert containers[0]["ModelDataUrl"] == model_data


# --- counting ---------------------------------------------------------------------------------


def test_counter_counts_by_endpoint_and_rate(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    client = mlflow.MlflowClient(tracking_uri=server.url)
    client.create_experiment("counted")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: client.get_experiment_by_name("counted"), range(40)))

    assert server.counter.total == 41
    assert server.counter.by_endpoint() == {
        f"POST {EXPERIMENTS_CREATE}": 1,
        f"GET {GET_BY_NAME}": 40,
    }
    assert server.counter.count("get-by-name") == 40
    assert {r.status for r in server.counter.snapshot()} == {200}
    assert 1 < server.counter.max_in_window(1.0) <= 41

    server.counter.reset()
    assert server.counter.total == 0


def test_shared_server_serves_read_requests(shared_mlflow_server):
    before = shared_mlflow_server.counter.count("experiments/search")
    client = mlflow.MlflowClient(tracking_uri=shared_mlflow_server.url)
    assert "Default" in [e.name for e in client.search_experiments()]
    assert shared_mlflow_server.counter.count("experiments/search") == before + 1


def test_max_in_window_is_a_sliding_window():
    counter = RequestCounter()
    for arrival in (0.0, 0.3, 0.6, 0.9, 2.0, 2.4, 10.0):
        counter.record(RequestRecord(arrival, "GET", "/x", 200, "up"))
    assert counter.max_in_window(1.0) == 4
    assert counter.max_in_window(0.65) == 3
    assert counter.max_in_window(0.2) == 1
    assert counter.max_in_window(100) == 7
    assert RequestCounter().max_in_window() == 0


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/m/model.pkl",
         "/api/2.0/mlflow-artifacts/artifacts/*"),
        ("/api/2.0/mlflow-artifacts/mpu/create/1/abc/big.bin",
         "/api/2.0/mlflow-artifacts/mpu/create/*"),
        ("/api/3.0/mlflow/traces/tr-123", "/api/3.0/mlflow/traces/{trace_id}"),
        ("/api/2.0/mlflow/traces/tr-123/info", "/api/2.0/mlflow/traces/{request_id}/info"),
        ("/api/2.0/mlflow/logged-models/m-1/tags/k",
         "/api/2.0/mlflow/logged-models/{model_id}/tags/{tag_key}"),
        ("/api/2.0/mlflow/logged-models/search", "/api/2.0/mlflow/logged-models/search"),
        ("/api/2.0/mlflow/runs/log-batch", "/api/2.0/mlflow/runs/log-batch"),
        ("/health", "/health"),
    ],
)  # fmt: skip
def test_normalize_path(path, endpoint):
    assert normalize_path(path) == endpoint


# --- proxy mechanics against a tiny upstream ----------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """Answers PUT/POST with the sha256 of the body; GET /chunked/<n> with n chunked bytes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/chunked/"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            remaining = int(self.path.rsplit("/", 1)[1])
            while remaining:
                piece = b"z" * min(remaining, 100_000)
                remaining -= len(piece)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = json.dumps({"host": self.headers["Host"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        digest = hashlib.sha256()
        if self.headers.get("Transfer-Encoding") == "chunked":
            while size := int(self.rfile.readline().strip(), 16):
                digest.update(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
        else:
            digest.update(self.rfile.read(int(self.headers["Content-Length"])))
        body = digest.hexdigest().encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def tiny_upstream():
    """Address ("127.0.0.1:<port>") of an `_Upstream` server."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{upstream.server_address[1]}"
    upstream.shutdown()
    upstream.server_close()


@pytest.fixture(scope="module")
def tiny_proxy(tiny_upstream):
    with LoopbackProxy(f"http://{tiny_upstream}", name="tiny") as proxy:
        yield proxy


def test_proxy_streams_bodies_both_ways(tiny_proxy, tiny_upstream):
    data = os.urandom(24 * 1024 * 1024)
    with requests.Session() as session:
        sized = session.put(tiny_proxy.url + "/sized", data=data)
        chunked = session.put(
            tiny_proxy.url + "/chunked",
            data=(data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)),
        )
        download = session.get(tiny_proxy.url + f"/chunked/{len(data)}")
        echo = session.get(tiny_proxy.url + "/echo?a=1&b=two")

    assert sized.status_code == chunked.status_code == 201
    assert sized.text == chunked.text == hashlib.sha256(data).hexdigest()
    assert len(download.content) == len(data)
    assert echo.json() == {"host": tiny_upstream, "path": "/echo?a=1&b=two"}


def test_proxy_handles_many_concurrent_requests(tiny_proxy):
    tiny_proxy.counter.reset()
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda i: requests.get(f"{tiny_proxy.url}/r{i}"), range(300)))
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 300
    assert tiny_proxy.counter.total == 300
    assert {r.upstream for r in tiny_proxy.counter.snapshot()} == {"tiny"}


# --- fault injection --------------------------------------------------------------------------


def test_respond_fault_answers_without_forwarding(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    server.proxy.faults = FaultRule(
        Respond(503, {"Content-Type": "text/plain"}, b"maintenance"), method="POST"
    )
    response = requests.post(server.url + EXPERIMENTS_CREATE, json={"name": "never"})
    assert (response.status_code, response.text) == (503, "maintenance")
    assert not _experiment_exists(server, "never")
    (record,) = server.counter.snapshot()
    assert (record.status, record.fault) == (503, "Respond")


def test_mlflow_client_retries_through_a_throttle(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    rule = FaultRule(
        Respond(429, {"Retry-After": "1"}), path_contains="experiments/create", times=1
    )
    server.proxy.faults = rule
    client = mlflow.MlflowClient(tracking_uri=server.url)
    started = time.monotonic()
    client.create_experiment("after-throttle")
    assert time.monotonic() - started >= 1.0
    assert rule.fired == 1
    statuses = [r.status for r in server.counter.snapshot()]
    assert statuses == [429, 200]


def test_reset_before_forward_never_reaches_the_server(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    server.proxy.faults = FaultRule(ResetBeforeForward(), times=1)
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + EXPERIMENTS_CREATE, json={"name": "dropped"})
    assert not _experiment_exists(server, "dropped")
    (record,) = server.counter.snapshot()
    assert (record.status, record.fault) == (None, "ResetBeforeForward")


def test_reset_after_forward_lets_the_server_do_the_work(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    server.proxy.faults = FaultRule(ResetAfterForward(), times=1)
    with pytest.raises(requests.ConnectionError):
        requests.post(server.url + EXPERIMENTS_CREATE, json={"name": "done-but-unacked"})
    assert _experiment_exists(server, "done-but-unacked")
    (record,) = server.counter.snapshot()
    assert (record.status, record.fault) == (200, "ResetAfterForward")
    # The fault fired once: the next request (on a new connection) is served normally.
    response = requests.get(server.url + GET_BY_NAME, params={"experiment_name": "x"})
    assert response.status_code == 404


def test_delay_fault_forwards_late(mlflow_server):
    server = mlflow_server("sqlite", "proxied")
    server.proxy.faults = FaultRule(Delay(0.6), times=1)
    started = time.monotonic()
    response = requests.get(server.url + GET_BY_NAME, params={"experiment_name": "Default"})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.6


def test_large_artifact_through_proxied_artifact_endpoints(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")  # stream via the server
    server = mlflow_server("sqlite", "proxied")
    client = mlflow.MlflowClient(tracking_uri=server.url)
    run_id = client.create_run(client.create_experiment("big")).info.run_id
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(40 * 1024 * 1024))
    client.log_artifact(run_id, str(blob))
    downloaded = Path(client.download_artifacts(run_id, "blob.bin", str(tmp_path / "out")))
    assert downloaded.read_bytes() == blob.read_bytes()
    endpoints = server.counter.by_endpoint()
    assert endpoints["PUT /api/2.0/mlflow-artifacts/artifacts/*"] == 1
    assert endpoints["GET /api/2.0/mlflow-artifacts/artifacts/*"] == 1


# --- SageMaker front door ---------------------------------------------------------------------


def test_plugin_signed_requests_reach_the_right_server(mlflow_server, sagemaker_endpoint, tmp_path):
    tracking, app = mlflow_server("sqlite", "direct"), mlflow_server("sqlite", "direct")
    tracking_arn = sagemaker_endpoint.add_tracking_server(tracking)
    app_arn = sagemaker_endpoint.add_app(app, region="eu-west-1")
    was_set = mlflow.is_tracking_uri_set()
    (tmp_path / "note.txt").write_text("signed")

    for arn, server in ((tracking_arn, tracking), (app_arn, app)):
        with use_tracking_uri(arn):
            client = mlflow.MlflowClient()
            name = f"exp with spaces + 'quotes' {arn.rsplit('/', 1)[1]}"
            experiment_id = client.create_experiment(name)
            assert client.get_experiment_by_name(name).experiment_id == experiment_id  # GET + query
            run_id = client.create_run(experiment_id).info.run_id
            client.set_tag(run_id, "team", "a b&c")
            found = client.search_runs([experiment_id], filter_string="tags.team = 'a b&c'")
            assert [r.info.run_id for r in found] == [run_id]
            client.log_artifact(run_id, str(tmp_path / "note.txt"))
            client.delete_tag(run_id, "team")

        assert sagemaker_endpoint.counter.rejected == []
        assert sagemaker_endpoint.counter_for(arn).count("experiments/create") == 1
        direct = mlflow.MlflowClient(tracking_uri=server.url)
        assert direct.get_experiment_by_name(name).experiment_id == experiment_id
        assert any(key.endswith(f"{run_id}/artifacts/note.txt") for key in server.artifact_keys())

    assert mlflow.is_tracking_uri_set() == was_set
    # ARN traffic is counted by the emulator; the servers' own proxies saw only the checks above.
    assert tracking.counter.total == app.counter.total == 1


def _signed(arn: str, url: str, body: bytes, **overrides) -> dict[str, str]:
    region, service = arn.split(":")[3], "sagemaker-mlflow"
    headers = {TRACKING_SERVER_HEADER: arn, "Content-Type": "application/json"}
    params = {"region": region, "service": service, "body": body, "headers": headers}
    return sign_request("POST", url, **{**params, **overrides})


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("valid", None),
        ("unsigned", "MissingAuthenticationToken"),
        ("wrong secret", "SignatureDoesNotMatch"),
        ("wrong region", "InvalidSignatureException"),
        ("wrong service", "InvalidSignatureException"),
        ("tampered body", "XAmzContentSHA256Mismatch"),
        ("tampered body and hash", "SignatureDoesNotMatch"),
        ("stale date", "SignatureExpired"),
        ("unknown ARN", "UnknownArn"),
        ("no routing header", "MissingRoutingHeader"),
        ("ARN in the App header", "WrongRoutingHeader"),
    ],
)
def test_emulator_rejects_bad_signatures(mlflow_server, sagemaker_endpoint, case, code):
    server = mlflow_server("sqlite", "direct")
    arn = sagemaker_endpoint.add_tracking_server(server, "harness")
    url = sagemaker_endpoint.url + EXPERIMENTS_CREATE
    name = f"case-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"name": name}).encode()

    if case == "unsigned":
        headers = {TRACKING_SERVER_HEADER: arn, "Content-Type": "application/json"}
    elif case == "wrong secret":
        headers = _signed(arn, url, body, secret_key="not-the-secret")
    elif case == "wrong region":
        headers = _signed(arn, url, body, region="us-west-2")
    elif case == "wrong service":
        headers = _signed(arn, url, body, service="sagemaker")
    elif case == "stale date":
        headers = _signed(arn, url, body, when=datetime.now(timezone.utc) - timedelta(minutes=6))
    elif case == "unknown ARN":
        other = tracking_server_arn("not-registered")
        headers = _signed(arn, url, body, headers={TRACKING_SERVER_HEADER: other})
    elif case == "no routing header":
        headers = _signed(arn, url, body, headers={"Content-Type": "application/json"})
    elif case == "ARN in the App header":
        headers = _signed(arn, url, body, headers={APP_HEADER: arn})
    else:
        headers = _signed(arn, url, body)
    if case.startswith("tampered body"):
        body = json.dumps({"name": name + "-tampered"}).encode()
        if case == "tampered body and hash":
            headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()

    response = requests.post(url, data=body, headers=headers)

    if code is None:
        assert response.status_code == 200, response.text
        assert _experiment_exists(server, name)
        return
    assert response.status_code == 403
    assert response.json()["code"] == code
    assert not _experiment_exists(server, name)
    (record,) = sagemaker_endpoint.counter.rejected
    assert (record.status, record.rejected) == (403, code)
