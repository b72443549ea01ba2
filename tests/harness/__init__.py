"""Test harness for mlflow-sync: real MLflow servers, moto, counting/fault proxies, SigV4.

Importable by tests and benchmarks alike (no pytest dependency outside tests/conftest.py).
"""

from tests.harness.databases import BACKENDS, Database, backend_available, create_database
from tests.harness.process import ServerStartError
from tests.harness.proxy import (
    Delay,
    DelayAfterForward,
    DropAfter,
    FaultAction,
    FaultRule,
    LoopbackProxy,
    ProxyRequest,
    RandomFaults,
    Rejected,
    RequestCounter,
    RequestRecord,
    ResetAfterForward,
    ResetBeforeForward,
    Respond,
    default_fault_mix,
    describe_action,
    normalize_path,
)
from tests.harness.s3 import (
    AWS_ACCESS_KEY_ID,
    AWS_REGION,
    AWS_SECRET_ACCESS_KEY,
    DEFAULT_BUCKET,
    MotoServer,
    aws_env,
)
from tests.harness.sagemaker import (
    APP_HEADER,
    DEFAULT_ACCOUNT,
    TRACKING_SERVER_HEADER,
    SageMakerArn,
    SageMakerEmulator,
    app_arn,
    sign_request,
    tracking_server_arn,
    use_tracking_uri,
)
from tests.harness.servers import ARTIFACT_LAYOUTS, MlflowServer, ServerPool

__all__ = [
    "APP_HEADER",
    "ARTIFACT_LAYOUTS",
    "AWS_ACCESS_KEY_ID",
    "AWS_REGION",
    "AWS_SECRET_ACCESS_KEY",
    "BACKENDS",
    "DEFAULT_ACCOUNT",
    "DEFAULT_BUCKET",
    "TRACKING_SERVER_HEADER",
    "Database",
    "Delay",
    "DelayAfterForward",
    "DropAfter",
    "FaultAction",
    "FaultRule",
    "LoopbackProxy",
    "MlflowServer",
    "MotoServer",
    "ProxyRequest",
    "RandomFaults",
    "Rejected",
    "RequestCounter",
    "RequestRecord",
    "ResetAfterForward",
    "ResetBeforeForward",
    "Respond",
    "SageMakerArn",
    "SageMakerEmulator",
    "ServerPool",
    "ServerStartError",
    "app_arn",
    "aws_env",
    "backend_available",
    "create_database",
    "default_fault_mix",
    "describe_action",
    "normalize_path",
    "sign_request",
    "tracking_server_arn",
    "use_tracking_uri",
]
