"""`mlflow-sync convert hf-tarball` end to end: moto S3 and SageMaker, real MLflow servers, the ARN path."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import mlflow
import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import mlflow_globals
from mlflow_sync.convert.extract import extract_tarball
from tests.convert.fixtures import device_member, file_member, link_member, sagemaker_tarball, tarball_with
from tests.harness import DEFAULT_BUCKET

TAG = "mlflow_sync.convert."


def _upload(moto, path, key=None) -> str:
    key = key or f"training/{uuid.uuid4().hex[:8]}/output/model.tar.gz"
    moto.boto3_client("s3").upload_file(str(path), DEFAULT_BUCKET, key)
    return f"s3://{DEFAULT_BUCKET}/{key}"


def _model_package(moto, model_data_url: str, group: str | None = None, status: str = "Approved") -> str:
    sagemaker = moto.boto3_client("sagemaker")
    spec = {
        "InferenceSpecification": {
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/hf:1", "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        }
    }
    if group:
        return sagemaker.create_model_package(ModelPackageGroupName=group, ModelApprovalStatus=status,
                                              **spec)["ModelPackageArn"]
    return sagemaker.create_model_package(ModelPackageName=f"pkg-{uuid.uuid4().hex[:8]}", **spec)["ModelPackageArn"]


def _client(uri: str) -> mlflow.MlflowClient:
    """Tracking *and registry* at ``uri`` (the registry otherwise follows MLflow's global default)."""
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _run_json(capsys, *args) -> dict:
    code = main(["convert", "hf-tarball", *args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.slow
def test_classifier_from_s3_into_an_http_server_verified_and_repacked(mlflow_server, moto, tiny_models, tmp_path, capsys):
    server = mlflow_server("sqlite", "proxied")
    tarball = tiny_models["classifier"]["tarball"]
    source = _upload(moto, tarball)
    repack = f"s3://{DEFAULT_BUCKET}/mlflow-models/classifier/mlflow-model.tar.gz"

    result = _run_json(capsys, source, "--target", server.url, "-n", "sentiment", "--verify", "--repack-to", repack)

    assert (result["version"], result["model_uri"], result["task"]) == ("1", "models:/sentiment/1", "text-classification")
    assert result["verification"]["passed"] and result["verification"]["samples"] == 3
    client = _client(server.url)
    version = client.get_model_version("sentiment", "1")
    assert version.tags[f"{TAG}source"] == source
    assert version.tags[f"{TAG}tarball_sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert version.tags[f"{TAG}repacked_to"] == repack
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[f"{TAG}verified"] == "true"
    assert run.data.tags[f"{TAG}source"] == source

    # The registered model loads and predicts like the original checkpoint (independently of --verify).
    import transformers

    with mlflow_globals(server.url):  # models:/ URIs need the global URI
        registered = mlflow.pyfunc.load_model("models:/sentiment/1")
    expected = transformers.pipeline("text-classification", model=str(tiny_models["classifier"]["dir"]))("i love it")
    assert registered.predict(["i love it"]).iloc[0]["label"] == expected[0]["label"]

    # The repacked tarball is in S3, holds the MLflow model at its root, the checkpoint files byte for byte.
    downloaded = tmp_path / "mlflow-model.tar.gz"
    moto.boto3_client("s3").download_file(DEFAULT_BUCKET, "mlflow-models/classifier/mlflow-model.tar.gz", str(downloaded))
    unpacked = extract_tarball(downloaded, parent=tmp_path).directory
    assert (unpacked / "MLmodel").is_file()
    for name in ("model.safetensors", "training_args.bin", "processor_config.json", "tokenizer.json"):
        assert (unpacked / "model" / name).read_bytes() == (tiny_models["classifier"]["dir"] / name).read_bytes()
    # ... and exactly the files of the logged model (kept locally, not downloaded back).
    with mlflow_globals(server.url):  # models:/ URIs need the global URI
        logged = Path(mlflow.artifacts.download_artifacts("models:/sentiment/1", dst_path=str(tmp_path / "logged")))
    (logged / "registered_model_meta").unlink(missing_ok=True)  # written by the models:/ download
    assert _files(unpacked) == _files(logged)
    requirements = (unpacked / "requirements.txt").read_text()
    assert f"transformers=={transformers.__version__}" in requirements
    repacked = mlflow.pyfunc.load_model(str(unpacked))
    assert repacked.predict(["i love it"]).iloc[0]["label"] == expected[0]["label"]


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_generator_by_model_package_arn_into_an_arn_target(mlflow_server, sagemaker_endpoint, moto, tiny_models, capsys):
    server = mlflow_server("sqlite", "direct")
    target = sagemaker_endpoint.add_app(server)
    source = _upload(moto, tiny_models["generator"]["tarball"])
    package_arn = _model_package(moto, source)

    result = _run_json(capsys, "--model-package-arn", package_arn, "--target", target, "-n", "tiny-gpt",
                       "--verify", "--max-new-tokens", "6", "--experiment", "imports")

    assert result["task"] == "text-generation" and result["verification"]["passed"]
    assert result["model_package_arn"] == package_arn and result["source"] == source
    assert sagemaker_endpoint.counter.rejected == []
    assert sagemaker_endpoint.counter_for(target).count("model-versions/create") == 1
    client = _client(server.url)
    version = client.get_model_version("tiny-gpt", "1")
    assert version.tags[f"{TAG}model_package_arn"] == package_arn
    assert client.get_experiment_by_name("imports") is not None
    # Artifacts went straight to S3, as ARN clients must write them.
    assert any(key.endswith("model/model.safetensors") for key in server.artifact_keys())


@pytest.mark.slow
def test_local_directory_into_a_database_uri(tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a sqlite:/// store keeps artifacts in ./mlruns
    target = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run_json(capsys, str(tiny_models["classifier"]["dir"]), "--target", target, "-n", "local-model")
    assert result["version"] == "1" and result["tarball_sha256"] is None
    client = _client(target)
    assert client.get_model_version("local-model", "1").tags[f"{TAG}task"] == "text-classification"


def test_human_output_prints_the_model_uri_and_version(tiny_models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["convert", "hf-tarball", str(tiny_models["generator"]["tarball"]), "--target",
                 f"sqlite:///{tmp_path / 'mlflow.db'}", "-n", "gen", "--max-new-tokens", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "registered gen version 1" in captured.out and "model URI: models:/gen/1" in captured.out


# --- bad inputs: one line, non-zero exit, nothing registered -----------------------------------------


def _break(checkpoint, tmp_path, how: str):
    """A SageMaker tarball of ``checkpoint`` broken in one way."""
    if how == "missing config.json":
        (checkpoint / "config.json").unlink()
    elif how == "no weights":
        (checkpoint / "model.safetensors").unlink()
    elif how == "corrupt safetensors":
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "missing tokenizer":
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            (checkpoint / name).unlink()
    return sagemaker_tarball(checkpoint, tmp_path / "broken.tar.gz")


def _malicious(tmp_path, how: str):
    path = tmp_path / "model.tar.gz"
    members = {
        "path traversal": [file_member("config.json", b"{}"), file_member("../evil.txt")],
        "absolute path": [file_member("/tmp/mlflow-sync-evil.txt")],
        "symlink escape": [link_member("weights", "../../../etc"), file_member("weights/x")],
        "hardlink escape": [link_member("config.json", "../../etc/passwd", hard=True)],
        "device file": [device_member("model.safetensors")],
    }
    if how == "oversized":
        return tarball_with(path, [file_member("model.safetensors", bytes(3 * 1024 * 1024))])
    return tarball_with(path, members[how])


BAD_INPUTS = {
    "path traversal": ("malicious", "outside the extraction directory"),
    "absolute path": ("malicious", "absolute path"),
    "symlink escape": ("malicious", "escapes the extraction directory"),
    "hardlink escape": ("malicious", "escapes the extraction directory"),
    "device file": ("malicious", "device or FIFO"),
    "oversized": ("malicious", "expands to more than"),
    "missing config.json": ("broken", "no config.json"),
    "no weights": ("broken", "no weights"),
    "corrupt safetensors": ("broken", "corrupt or truncated"),
    "missing tokenizer": ("broken", "no tokenizer"),
    "wrong task": ("task", "does not fit architecture BertForSequenceClassification"),
    "unknown model package ARN": ("package", "does not exist"),
    "S3 object missing": ("s3", "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_nonzero_and_registers_nothing(case, mlflow_server, moto, checkpoint_copy, tmp_path, capsys):
    server = mlflow_server("sqlite", "proxied")
    kind, message = BAD_INPUTS[case]
    extra: list[str] = []
    if kind == "malicious":
        args = [_upload(moto, _malicious(tmp_path, case))]
        extra = ["--max-extracted-gb", "0.001"] if case == "oversized" else []
    elif kind == "broken":
        args = [_upload(moto, _break(checkpoint_copy, tmp_path, case))]
    elif kind == "task":
        args = [_upload(moto, sagemaker_tarball(checkpoint_copy, tmp_path / "model.tar.gz")), "--task", "text-generation"]
    elif kind == "package":
        args = ["--model-package-arn", "arn:aws:sagemaker:us-east-1:123456789012:model-package/no-such-group/7"]
    else:
        args = [f"s3://{DEFAULT_BUCKET}/training/no-such-job/output/model.tar.gz"]

    code = main(["convert", "hf-tarball", *args, *extra, "--target", server.url, "-n", "must-not-exist"])

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code != 0
    assert "Traceback" not in err and len(errors) == 1 and err.strip().endswith(errors[0]), err
    assert message in errors[0]
    client = _client(server.url)
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_verify_refuses_tasks_it_cannot_compare_before_any_work(mlflow_server, tmp_path, checkpoint_copy, capsys):
    server = mlflow_server("sqlite", "proxied")
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["architectures"] = ["BertForTokenClassification"]
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    code = main(["convert", "hf-tarball", str(checkpoint_copy), "--target", server.url, "-n", "x", "--verify"])
    assert code == 2
    assert "--verify supports" in capsys.readouterr().err
    assert _client(server.url).search_registered_models() == []


# --- batch ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_from_a_list_file_reports_each_model_and_resumes(mlflow_server, moto, tiny_models, tmp_path, capsys):
    server = mlflow_server("sqlite", "proxied")
    classifier = _upload(moto, tiny_models["classifier"]["tarball"])
    missing_key = "training/late-job/output/model.tar.gz"
    generator_local = shutil.copy(tiny_models["generator"]["tarball"], tmp_path / "gen.tar.gz")
    list_file = tmp_path / "models.txt"
    list_file.write_text(
        "# source                       name          task\n"
        f"{classifier}   batch-sentiment\n"
        f"s3://{DEFAULT_BUCKET}/{missing_key}   batch-late\n"
        f"{generator_local}   batch-gen   text-generation\n"
    )
    state = tmp_path / "state.json"
    args = ["convert", "hf-tarball", "--from-list", str(list_file), "--target", server.url,
            "--state-file", str(state), "--json", "--max-new-tokens", "4"]

    assert main(args) == 1
    first = capsys.readouterr()
    report = json.loads(first.out)
    assert [m["status"] for m in report["models"]] == ["registered", "failed", "registered"]
    assert "does not exist" in report["models"][1]["error"]
    assert first.err.strip().splitlines()[-1].startswith("error: 1 of 3 models failed")

    _upload(moto, tiny_models["classifier"]["tarball"], missing_key)  # the late job's tarball appears
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert [m["status"] for m in second["models"]] == ["skipped", "registered", "skipped"]
    client = _client(server.url)
    assert sorted(m.name for m in client.search_registered_models()) == ["batch-gen", "batch-late", "batch-sentiment"]
    assert all(len(client.search_model_versions(f"name='{n}'")) == 1 for n in ("batch-gen", "batch-late", "batch-sentiment"))
    saved = json.loads(state.read_text())["models"]
    assert {entry["status"] for entry in saved.values()} == {"registered"}


@pytest.mark.slow
def test_batch_over_the_approved_versions_of_a_model_package_group(mlflow_server, moto, tiny_models, capsys):
    server = mlflow_server("sqlite", "proxied")
    group = f"hf-group-{uuid.uuid4().hex[:6]}"
    moto.boto3_client("sagemaker").create_model_package_group(ModelPackageGroupName=group)
    first = _model_package(moto, _upload(moto, tiny_models["classifier"]["tarball"]), group)
    _model_package(moto, _upload(moto, tiny_models["classifier"]["tarball"]), group, status="PendingManualApproval")
    third = _model_package(moto, _upload(moto, tiny_models["classifier"]["tarball"]), group)

    report = _run_json(capsys, "--model-package-group", group, "--target", server.url, "-n", "grouped",
                       "--state-file", str(server.workdir / f"{group}.json"))

    assert report["counts"] == {"registered": 2, "skipped": 0, "failed": 0}
    client = _client(server.url)
    versions = sorted(client.search_model_versions("name='grouped'"), key=lambda v: int(v.version))
    assert [v.tags[f"{TAG}model_package_arn"] for v in versions] == [first, third]


def test_batch_list_file_errors_name_the_line(tmp_path, capsys):
    list_file = tmp_path / "models.txt"
    list_file.write_text("s3://bucket/a/model.tar.gz\n")
    code = main(["convert", "hf-tarball", "--from-list", str(list_file), "--target", "sqlite:///x.db"])
    assert code == 2
    assert f"{list_file}:1: no registered model name" in capsys.readouterr().err

