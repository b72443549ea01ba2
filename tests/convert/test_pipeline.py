"""`mlflow-sync convert pipeline`: the definition built offline, run as the job would run it, upserted in moto."""

from __future__ import annotations

import json
import sys

import pytest

from mlflow_sync.cli import main
from mlflow_sync.convert.pipeline import ENTRYPOINT, JOB_WORKDIR, STEP_NAME
from mlflow_sync.convert.sources import Source, resolve_source
from tests.convert.test_hf_tarball_cli import _client, _model_package, _upload
from tests.harness import DEFAULT_BUCKET

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-sync-convert:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/hf-to-mlflow"
# The reference design's parameters (seed 000), in its order.
SEED_PARAMETERS = ["S3ModelArtifact", "MLflowTrackingArn", "MLflowExperimentName", "MLflowRegisteredModelName",
                   "HFTask", "MlflowModelTarS3Uri", "SourceModelPackageArn"]


@pytest.fixture
def sdk():
    pytest.importorskip("sagemaker.workflow.pipeline", reason="the [pipeline] extra (SageMaker SDK v2) is not installed")


@pytest.fixture
def offline(monkeypatch):
    """Dummy credentials and an AWS endpoint nobody listens on: any AWS call would fail."""
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDOFFLINE", "AWS_SECRET_ACCESS_KEY": "offline", "AWS_REGION": "us-east-1",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)


def _definition(capsys, *args) -> dict:
    code = main(["convert", "pipeline", "--image-uri", IMAGE, "--role", ROLE, *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def _job_arguments(definition: dict, values: dict[str, str]) -> list[str]:
    """The processing job's command line, with parameter references resolved as SageMaker would."""
    app = definition["Steps"][0]["Arguments"]["AppSpecification"]
    resolved = []
    for argument in app["ContainerArguments"]:
        if isinstance(argument, dict):
            resolved.append(values[argument["Get"].removeprefix("Parameters.")])
        else:
            resolved.append(argument)
    return resolved


def test_definition_is_built_offline_with_the_seed_parameters_and_the_converter_step(sdk, offline, tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    captured = _definition(capsys, "--region", "us-east-1", "--verify", "--instance-type", "ml.m5.2xlarge",
                           "--default", "HFTask=text-classification", "--default", "MLflowRegisteredModelName=m",
                           "--output", str(out))
    assert "wrote" in captured.out
    definition = json.loads(out.read_text())

    parameters = {p["Name"]: p for p in definition["Parameters"]}
    assert [p["Name"] for p in definition["Parameters"]] == SEED_PARAMETERS
    assert {p["Type"] for p in parameters.values()} == {"String"}
    assert parameters["HFTask"]["DefaultValue"] == "text-classification"
    assert parameters["MLflowRegisteredModelName"]["DefaultValue"] == "m"
    assert parameters["MLflowExperimentName"]["DefaultValue"] == "hf-tarball-imports"
    assert parameters["SourceModelPackageArn"]["DefaultValue"] == ""

    (step,) = definition["Steps"]
    assert (step["Name"], step["Type"]) == (STEP_NAME, "Processing")
    arguments = step["Arguments"]
    assert arguments["AppSpecification"]["ImageUri"] == IMAGE
    assert arguments["AppSpecification"]["ContainerEntrypoint"] == ENTRYPOINT
    assert arguments["RoleArn"] == ROLE
    assert arguments["ProcessingResources"]["ClusterConfig"] == {
        "InstanceType": "ml.m5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert arguments["StoppingCondition"] == {"MaxRuntimeInSeconds": 24 * 3600}
    assert _job_arguments(definition, {name: f"<{name}>" for name in SEED_PARAMETERS}) == [
        "<S3ModelArtifact>",
        "--target", "<MLflowTrackingArn>",
        "--experiment", "<MLflowExperimentName>",
        "--registered-model-name", "<MLflowRegisteredModelName>",
        "--task", "<HFTask>",
        "--repack-to", "<MlflowModelTarS3Uri>",
        "--model-package-arn", "<SourceModelPackageArn>",
        "--work-dir", JOB_WORKDIR,
        "--verify",
    ]

    # Without --output the definition goes to stdout, and is the same document.
    assert json.loads(_definition(capsys, "--region", "us-east-1", "--verify", "--instance-type", "ml.m5.2xlarge",
                                  "--default", "HFTask=text-classification", "--default",
                                  "MLflowRegisteredModelName=m", "--json").out) == definition


@pytest.mark.slow
def test_the_job_arguments_run_the_converter(sdk, mlflow_server, sagemaker_endpoint, moto, tiny_models, tmp_path, capsys):
    """What the processing job would execute, parameters resolved, converts and registers the model."""
    definition = json.loads(_definition(capsys, "--region", "us-east-1", "--json").out)
    app = definition["Steps"][0]["Arguments"]["AppSpecification"]
    server = mlflow_server("sqlite", "direct")
    target = sagemaker_endpoint.add_app(server)
    source = _upload(moto, tiny_models["classifier"]["tarball"])
    package_arn = _model_package(moto, source)
    repack = f"s3://{DEFAULT_BUCKET}/mlflow-models/from-pipeline/mlflow-model.tar.gz"
    defaults = {p["Name"]: p.get("DefaultValue", "") for p in definition["Parameters"]}

    def run_job(**values: str) -> int:
        argv = _job_arguments(definition, defaults | values)
        argv[argv.index(JOB_WORKDIR)] = str(tmp_path / "work")  # the job's volume, here
        return main([*app["ContainerEntrypoint"][1:], *argv])

    # Empty optionals (SOURCE, task) as the job passes them: the package names the tarball.
    assert run_job(MLflowTrackingArn=target, MLflowRegisteredModelName="piped", MlflowModelTarS3Uri=repack,
                   SourceModelPackageArn=package_arn) == 0
    capsys.readouterr()
    other = _upload(moto, tiny_models["classifier"]["tarball"])
    assert run_job(S3ModelArtifact=other, MLflowTrackingArn=target, MLflowRegisteredModelName="piped",
                   SourceModelPackageArn=package_arn) == 2
    assert f"points to {source}, not to SOURCE {other}" in capsys.readouterr().err

    (version,) = _client(server.url).search_model_versions("name='piped'")
    assert version.tags["mlflow_sync.convert.model_package_arn"] == package_arn
    assert version.tags["mlflow_sync.convert.source"] == source
    assert version.tags["mlflow_sync.convert.task"] == "text-classification"
    assert version.tags["mlflow_sync.convert.repacked_to"] == repack
    assert moto.boto3_client("s3").head_object(Bucket=DEFAULT_BUCKET, Key="mlflow-models/from-pipeline/mlflow-model.tar.gz")
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_a_source_and_the_model_package_it_came_from_are_accepted_together(moto, tiny_models):
    source = _upload(moto, tiny_models["classifier"]["tarball"])
    package_arn = _model_package(moto, source)
    assert resolve_source(source, package_arn) == Source(source, "s3", package_arn)


def test_upsert_creates_then_updates_the_pipeline_in_sagemaker(sdk, moto, tmp_path, capsys):
    name = "hf-to-mlflow-upsert"
    common = ["--name", name, "--region", "us-east-1", "--json"]
    created = json.loads(_definition(capsys, *common, "--upsert", "--output", str(tmp_path / "v1.json")).out)
    assert created["action"] == "created"
    sagemaker = moto.boto3_client("sagemaker")
    described = sagemaker.describe_pipeline(PipelineName=name)
    assert described["PipelineArn"] == created["pipeline_arn"] and described["RoleArn"] == ROLE
    assert json.loads(described["PipelineDefinition"]) == json.loads((tmp_path / "v1.json").read_text())

    updated = json.loads(_definition(capsys, *common, "--upsert", "--instance-type", "ml.m5.4xlarge",
                                     "--default", "HFTask=text-generation", "--output", str(tmp_path / "v2.json")).out)
    assert updated == {"pipeline_arn": created["pipeline_arn"], "action": "updated", "output": str(tmp_path / "v2.json")}
    described = json.loads(sagemaker.describe_pipeline(PipelineName=name)["PipelineDefinition"])
    assert described == json.loads((tmp_path / "v2.json").read_text())
    assert described["Steps"][0]["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.4xlarge"
    assert {p["Name"]: p["DefaultValue"] for p in described["Parameters"]}["HFTask"] == "text-generation"
    assert [p["PipelineName"] for p in sagemaker.list_pipelines(PipelineNamePrefix=name)["PipelineSummaries"]] == [name]


def _one_line_error(capsys, args: list[str]) -> str:
    code = main(["convert", "pipeline", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_without_the_sdk_the_command_says_how_to_install_it(offline, monkeypatch, capsys):
    for module in [name for name in sys.modules if name == "sagemaker" or name.startswith("sagemaker.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "sagemaker", None)  # import sagemaker -> ImportError
    err = _one_line_error(capsys, ["--image-uri", IMAGE, "--role", ROLE, "--region", "us-east-1"])
    assert "pip install 'mlflow-sync[pipeline]'" in err


@pytest.mark.parametrize("args, message", [
    (["--role", "pipeline-role"], "is not an IAM role ARN"),
    (["--role", ROLE, "--default", "HFTask"], "must look like NAME=VALUE"),
    (["--role", ROLE, "--default", "ModelName=x"], "unknown pipeline parameter(s): ModelName"),
    (["--role", ROLE, "--name", "bad_name"], "letters, digits and single hyphens"),
])
def test_bad_pipeline_options_are_one_line_errors(sdk, offline, capsys, args, message):
    assert message in _one_line_error(capsys, ["--image-uri", IMAGE, "--region", "us-east-1", *args])
