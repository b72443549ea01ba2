"""Failures specific to converting checkpoints: all are bad input (exit code 2)."""

from __future__ import annotations

from mlflow_sync.errors import UsageError


class UnsafeArchive(UsageError):
    """The tarball tries to write outside its directory, holds devices, or is too large."""


class InvalidCheckpoint(UsageError):
    """The extracted files are not a loadable Hugging Face checkpoint."""


class TaskMismatch(UsageError):
    """The requested task cannot run on the checkpoint's architecture."""
