"""Secrets masking and profile loading: the shared pieces every command uses."""

from __future__ import annotations

import logging

import pytest

from mlflow_sync.config import load_profile
from mlflow_sync.errors import UsageError
from mlflow_sync.redact import RedactingFilter, redact, register_secret


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgresql://mlflow:S3cretPw@db:5432/mlflow", "S3cretPw"),
        ("mysql+pymysql://root:r00tpw@127.0.0.1/x failed", "r00tpw"),
        ("https://user:ghp_token123456@host/api", "ghp_token123456"),
        ("GET https://tok9876543210@host/api", "tok9876543210"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGciOiJIUzI1NiJ9.payload"),
        ("headers={'Authorization': 'AWS4-HMAC-SHA256 Credential=X, Signature=abcdef0123'}", "abcdef0123"),
        ("url?X-Amz-Security-Token=FwoGZXIvYXdzEBYaDH&X-Amz-Signature=deadbeef99", "FwoGZXIvYXdzEBYaDH"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG"),
    ],
)
def test_secret_shapes_are_masked(text, secret):
    assert secret not in redact(text)


def test_known_secret_values_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "opaque-token-value-42")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEJr")
    register_secret("db-password-xyz")
    text = "token opaque-token-value-42 session IQoJb3JpZ2luX2VjEJr pw db-password-xyz"
    masked = redact(text)
    for secret in ("opaque-token-value-42", "IQoJb3JpZ2luX2VjEJr", "db-password-xyz"):
        assert secret not in masked


def test_logging_filter_masks_records_from_any_library():
    record = logging.LogRecord("botocore", logging.INFO, __file__, 1, "connect %s", ("postgresql://u:topsecret@h/db",), None)
    RedactingFilter().filter(record)
    assert "topsecret" not in record.getMessage()


def test_profile_defaults_and_values(tmp_path):
    assert load_profile(None).retry.max_attempts == 10
    path = tmp_path / "p.yaml"
    path.write_text("target:\n  uri: http://127.0.0.1:5000\n  max_rps: 25\nworkers: 4\n")
    profile = load_profile(path)
    assert profile.target.max_rps == 25 and profile.workers == 4


@pytest.mark.parametrize(
    "content, words",
    [
        ("target:\n  max_rsp: 25\n", "target.max_rsp: unknown key"),
        ("target:\n  max_rps: -1\n", "target.max_rps: Input should be greater than 0"),
        ("retry:\n  max_attempts: many\n", "retry.max_attempts"),
        ("- just\n- a list\n", "must be a mapping"),
        ("target: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_bad_profiles_name_the_key(tmp_path, content, words):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        load_profile(path)
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_profile(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_profile(tmp_path / "nope.yaml")


def test_shipped_profiles_load():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert configs, "configs/ ships profiles"
    for path in configs:
        load_profile(path)
