"""The SageMaker Pipeline that runs `mlflow-sync convert hf-tarball` in a ProcessingStep.

Built with the SageMaker Python SDK v2 (the optional ``[pipeline]`` extra). The step runs the
processing image (convert/image/) with the converter as its entrypoint, so no script is uploaded
and the definition is built offline. The pipeline parameters are those of the reference design
(seed 000); empty values mean "not given" to the converter.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field

from mlflow_sync.convert.converter import DEFAULT_EXPERIMENT
from mlflow_sync.errors import ConnectionFailure, UsageError

log = logging.getLogger(__name__)

DEFAULT_PIPELINE_NAME = "HFToMLflowRegistrationPipeline"
STEP_NAME = "ConvertHuggingFaceToMLflow"
ENTRYPOINT = ["mlflow-sync", "convert", "hf-tarball"]
# Inside a processing job only /opt/ml/processing lives on the job's volume (VolumeSizeInGB).
JOB_WORKDIR = "/opt/ml/processing/work"
INSTALL_HINT = "pip install 'mlflow-sync[pipeline]'"
PIPELINE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")


@dataclass(frozen=True)
class Parameter:
    name: str
    flag: str | None  # None: the converter's positional SOURCE
    help: str


# Order = the order of the reference design's parameters and of the container arguments.
PARAMETERS = (
    Parameter("S3ModelArtifact", None, "s3://.../model.tar.gz to convert (or leave empty and give SourceModelPackageArn)"),
    Parameter("MLflowTrackingArn", "--target", "MLflow tracking server or app ARN (any target URI works)"),
    Parameter("MLflowExperimentName", "--experiment", "experiment of the conversion runs"),
    Parameter("MLflowRegisteredModelName", "--registered-model-name", "registered model to add a version to"),
    Parameter("HFTask", "--task", "pipeline task; empty: inferred from config.json"),
    Parameter("MlflowModelTarS3Uri", "--repack-to", "s3://.../mlflow-model.tar.gz to upload; empty: none"),
    Parameter("SourceModelPackageArn", "--model-package-arn", "SageMaker Model Package to convert or to check "
              "S3ModelArtifact against; empty: none"),
)


@dataclass(frozen=True)
class PipelineSpec:
    image_uri: str
    role_arn: str
    name: str = DEFAULT_PIPELINE_NAME
    region: str | None = None
    instance_type: str = "ml.m5.xlarge"
    volume_size_gb: int = 100
    max_runtime_hours: int = 24
    verify: bool = False
    defaults: dict[str, str] = field(default_factory=dict)  # parameter name -> default value

    def check(self) -> None:
        if not PIPELINE_NAME.match(self.name):
            raise UsageError(f"pipeline name {self.name!r} must be letters, digits and single hyphens (max 256)")
        if not ROLE_ARN.match(self.role_arn):
            raise UsageError(f"--role {self.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
        if not self.image_uri.strip():
            raise UsageError("--image-uri is empty: give the processing image built from convert/image/")
        self.parameter_defaults()

    def parameter_defaults(self) -> dict[str, str]:
        unknown = set(self.defaults) - {p.name for p in PARAMETERS}
        if unknown:
            raise UsageError(f"unknown pipeline parameter(s): {', '.join(sorted(unknown))}")
        base = {p.name: "" for p in PARAMETERS}
        base["MLflowExperimentName"] = DEFAULT_EXPERIMENT
        return base | {name: value for name, value in self.defaults.items() if value is not None}


def _sdk():
    """The SDK v2 workflow classes, or a one-line error telling how to get them."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    try:
        from sagemaker.processing import Processor
        from sagemaker.workflow.parameters import ParameterString
        from sagemaker.workflow.pipeline import Pipeline
        from sagemaker.workflow.pipeline_context import PipelineSession
        from sagemaker.workflow.steps import ProcessingStep
    except ImportError as exc:
        raise UsageError(f"`convert pipeline` needs the SageMaker Python SDK v2 ({exc.name or 'sagemaker'} "
                         f"is missing): {INSTALL_HINT}") from None
    for name in ("sagemaker", "sagemaker.config", "sagemaker.workflow.utilities", "sagemaker.deprecations"):
        logging.getLogger(name).setLevel(logging.ERROR)  # config-file and deprecation chatter per call
    return Processor, ParameterString, Pipeline, PipelineSession, ProcessingStep


def _region(spec: PipelineSpec) -> str:
    import boto3

    region = spec.region or boto3.session.Session().region_name
    if not region:
        raise UsageError("no AWS region: pass --region or set AWS_REGION")
    return region


def build_pipeline(spec: PipelineSpec):
    """The SDK ``Pipeline`` object (definition() needs no AWS call)."""
    spec.check()
    Processor, ParameterString, Pipeline, PipelineSession, ProcessingStep = _sdk()
    import boto3

    session = PipelineSession(boto_session=boto3.session.Session(region_name=_region(spec)))
    defaults = spec.parameter_defaults()
    parameters = {p.name: ParameterString(name=p.name, default_value=defaults[p.name]) for p in PARAMETERS}
    arguments: list = []
    for parameter in PARAMETERS:
        if parameter.flag:
            arguments.append(parameter.flag)
        arguments.append(parameters[parameter.name])
    arguments += ["--work-dir", JOB_WORKDIR]
    if spec.verify:
        arguments.append("--verify")
    processor = Processor(
        image_uri=spec.image_uri,
        role=spec.role_arn,
        instance_count=1,
        instance_type=spec.instance_type,
        entrypoint=ENTRYPOINT,
        volume_size_in_gb=spec.volume_size_gb,
        max_runtime_in_seconds=spec.max_runtime_hours * 3600,
        sagemaker_session=session,
    )
    step = ProcessingStep(name=STEP_NAME, step_args=processor.run(arguments=arguments))
    return Pipeline(name=spec.name, parameters=list(parameters.values()), steps=[step], sagemaker_session=session)


def pipeline_definition(spec: PipelineSpec) -> dict:
    """The pipeline definition JSON, built offline."""
    return json.loads(build_pipeline(spec).definition())


def upsert_pipeline(spec: PipelineSpec, description: str | None = None) -> dict:
    """Create the pipeline, or update it if it exists; returns {"pipeline_arn", "action", "definition"}."""
    from botocore.exceptions import BotoCoreError, ClientError

    pipeline = build_pipeline(spec)
    try:
        existed = _exists(pipeline.sagemaker_session.sagemaker_client, spec.name)
        response = pipeline.upsert(role_arn=spec.role_arn, description=description)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConnectionFailure(f"cannot create or update pipeline {spec.name}: {error.get('Code')}: "
                                f"{error.get('Message')}") from exc
    except BotoCoreError as exc:
        raise ConnectionFailure(f"cannot create or update pipeline {spec.name}: {exc}") from exc
    return {
        "pipeline_arn": response["PipelineArn"],
        "action": "updated" if existed else "created",
        "definition": json.loads(pipeline.definition()),
    }


def _exists(client, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.describe_pipeline(PipelineName=name)
    except ClientError as exc:
        # AWS says ResourceNotFound; moto says ValidationException "Could not find pipeline".
        if exc.response.get("Error", {}).get("Code") in ("ResourceNotFound", "ValidationException"):
            return False
        raise
    return True
