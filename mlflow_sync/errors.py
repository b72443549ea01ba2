"""The one error type the CLI renders: a single line for the user, a non-zero exit code."""

from __future__ import annotations


class SyncError(Exception):
    """A failure the user can act on.

    The message is one line, already redacted, and names what was wrong and where.
    ``exit_code`` distinguishes classes of failure for scripts: 2 bad input/usage,
    3 a server or store could not be reached or refused us, 4 data did not match
    (validation), 1 anything else.
    """

    exit_code = 1

    def __init__(self, message: str):
        from mlflow_sync.redact import redact

        super().__init__(redact(" ".join(str(message).split())))


class UsageError(SyncError):
    exit_code = 2


class ConnectionFailure(SyncError):
    exit_code = 3


class MismatchError(SyncError):
    exit_code = 4


class ServerUnavailable(ConnectionFailure):
    """A server kept failing (throttled, down, resetting, timing out) for the whole retry budget.

    Raised by the transport, so it may reach the caller wrapped in MLflow's own exception:
    find it with :func:`sync_error_in`. Jobs stop on it instead of failing object after object.
    ``last_failure`` is the last thing seen ("HTTP 503", "connection refused", "read timed out").
    """

    def __init__(self, message: str, *, last_failure: str):
        super().__init__(message)
        self.last_failure = last_failure


def sync_error_in(exc: BaseException | None) -> SyncError | None:
    """The SyncError that caused ``exc`` (itself, or one in its ``__cause__``/``__context__`` chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SyncError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
