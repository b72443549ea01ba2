"""Walking an MLflow artifact repository (any store MLflow supports, proxied or direct)."""

from __future__ import annotations

from collections.abc import Iterator


def list_entries(repo, path: str | None = None) -> Iterator:
    """Every file (FileInfo: path and size) under ``path`` of an artifact repository."""
    for entry in repo.list_artifacts(path):
        if entry.is_dir:
            yield from list_entries(repo, entry.path)
        else:
            yield entry


def list_files(repo, path: str | None = None) -> Iterator[str]:
    """The relative path of every file under ``path``."""
    for entry in list_entries(repo, path):
        yield entry.path
