"""Keep secrets out of every line the tool writes: logs, errors, reports, manifests.

Two layers: known secret *values* (from the environment and from URIs we parsed) are
replaced wherever they appear, and secret-shaped *patterns* (URI passwords, bearer tokens,
AWS signatures, access key ids) are masked even when we never saw the value before.
"""

from __future__ import annotations

import logging
import os
import re
import threading

MASK = "***"

SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "PGPASSWORD",
    "MYSQL_PWD",
)

_PATTERNS = [
    # scheme://user:password@host  ->  scheme://user:***@host
    (re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+(?=@)"), r"\g<pre>" + MASK),
    # scheme://token@host (no colon): the whole userinfo is a credential
    (re.compile(r"(?P<pre>\bhttps?://)[^/\s:@]+(?=@)"), r"\g<pre>" + MASK),
    (re.compile(r"(?i)(?P<pre>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\g<pre>" + MASK),
    (re.compile(r"(?i)(?P<pre>authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\n,}]+"), r"\g<pre>" + MASK),
    (re.compile(r"(?i)(?P<pre>\b(?:x-amz-security-token|x-amz-signature|signature|token|password|secret|"
                r"aws_secret_access_key|aws_session_token)['\"]?\s*[=:]\s*['\"]?)[^&\s'\",}]+"), r"\g<pre>" + MASK),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b"), MASK),
]

_known: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is masked wherever it shows up later."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def _known_values() -> list[str]:
    for name in SECRET_ENV_VARS:
        register_secret(os.environ.get(name))
    register_secret(os.environ.get("AWS_ACCESS_KEY_ID"))
    with _lock:
        return sorted(_known, key=len, reverse=True)


def redact(text: object) -> str:
    """Return ``text`` as a string with every secret masked."""
    out = str(text)
    for value in _known_values():
        if value in out:
            out = out.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out


class RedactingFilter(logging.Filter):
    """Masks secrets in every log record, whatever library emitted it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep what the library gave us, redacted
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
