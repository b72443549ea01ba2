"""Atomic file writes: a file that exists is complete (a temporary name in the same directory, then
a rename). Temporary names look like ``.<name>.tmp-...`` (see :func:`is_temporary`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomically(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any, *, sort_keys: bool = False, indent: int = 1) -> Path:
    """Strict JSON (no NaN tokens) with a trailing newline, written atomically."""
    return write_atomically(path, json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False,
                                             sort_keys=sort_keys) + "\n")


def is_temporary(path: Path) -> bool:
    """A file :func:`write_atomically` has not finished (left behind by a killed process)."""
    return path.name.startswith(".") and ".tmp-" in path.name
