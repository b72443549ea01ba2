"""Parsing and checking of every way a user names a server."""

from __future__ import annotations

import pytest

from mlflow_sync.errors import UsageError
from mlflow_sync.uris import parse_server

TRACKING_SERVER = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/team-a"
APP = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-app/app-ABC123XYZ"


@pytest.mark.parametrize(
    "uri, kind",
    [
        ("http://127.0.0.1:5000", "http"),
        ("https://mlflow.example.com/", "http"),
        ("https://mlflow.example.com/prefix", "http"),
        ("sqlite:///tmp/mlflow.db", "db"),
        ("sqlite:////abs/mlflow.db", "db"),
        ("postgresql://mlflow@db.internal:5432/mlflow", "db"),
        ("postgresql+psycopg2://u:p@db/mlflow", "db"),
        ("mysql+pymysql://root@127.0.0.1:3306/mlflow", "db"),
        (TRACKING_SERVER, "arn"),
        (APP, "arn"),
        ("arn:aws-us-gov:sagemaker:us-gov-west-1:123456789012:mlflow-app/app-X1", "arn"),
    ],
)
def test_valid_addresses(uri, kind):
    assert parse_server(uri).kind == kind


def test_arn_details():
    tracking = parse_server(TRACKING_SERVER).arn
    assert (tracking.region, tracking.account, tracking.resource_id) == ("us-east-1", "123456789012", "team-a")
    assert tracking.signing_service == "sagemaker-mlflow"
    assert tracking.routing_header == "x-mlflow-sm-tracking-server-arn"
    assert tracking.default_endpoint == "https://us-east-1.experiments.sagemaker.aws"
    app = parse_server(APP).arn
    assert app.signing_service == "sagemaker"
    assert app.routing_header == "x-sm-mlflow-app-arn"
    assert app.default_endpoint == "https://mlflow.sagemaker.eu-west-1.app.aws"


@pytest.mark.parametrize(
    "uri, words",
    [
        ("", "no server given"),
        ("arn:aws:sagemaker:us-east-1:123456789012", "malformed SageMaker ARN"),
        ("arn:aws-cn:sagemaker:cn-north-1:123456789012:mlflow-app/app-1", "unsupported AWS partition 'aws-cn'"),
        ("arn:aws:s3:us-east-1:123456789012:mlflow-app/app-1", "not sagemaker"),
        ("arn:aws:sagemaker:useast1:123456789012:mlflow-app/app-1", "invalid region"),
        ("arn:aws:sagemaker:us-east-1:1234:mlflow-app/app-1", "invalid account id"),
        ("arn:aws:sagemaker:us-east-1:123456789012:endpoint/foo", "expected mlflow-tracking-server or mlflow-app"),
        ("arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/foo", "starts with 'app-'"),
        ("arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/bad_name!", "invalid resource name"),
        ("ftp://host/x", "unknown tracking URI scheme 'ftp'"),
        ("databricks", "local path"),
        ("./mlruns", "local path"),
        ("file:///tmp/mlruns", "local path"),
        ("http://", "has no host"),
        ("http://host:notaport", "invalid port"),
        ("http://host:5000/?x=1", "query or fragment"),
        ("sqlite://relative.db", "sqlite:///path"),
        ("postgresql://host", "needs a host and a database name"),
    ],
)
def test_malformed_addresses_fail_in_one_line(uri, words):
    with pytest.raises(UsageError) as caught:
        parse_server(uri)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message


def test_credentials_in_uris_are_never_displayed():
    spec = parse_server("https://alice:hunter2-secret@mlflow.example.com")
    assert "hunter2-secret" not in spec.display
    assert "alice:***@" in spec.display
    token_spec = parse_server("https://tok_abcdef123456@mlflow.example.com")
    assert "tok_abcdef123456" not in token_spec.display
    with pytest.raises(UsageError) as caught:
        parse_server("postgresql://u:pa55word@db")
    assert "pa55word" not in str(caught.value)


def test_separate_registry_uri_is_checked():
    spec = parse_server("http://127.0.0.1:5000", registry_uri="sqlite:///reg.db")
    assert spec.registry_uri == "sqlite:///reg.db"
    with pytest.raises(UsageError):
        parse_server("http://127.0.0.1:5000", registry_uri="nope://x")
