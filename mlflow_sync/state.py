"""Where a job keeps its state when the user names no ``--work-dir``.

One directory per job kind and source/target pair, under ``$MLFLOW_SYNC_HOME`` (default
``$XDG_STATE_HOME/mlflow-sync``, else ``~/.local/state/mlflow-sync``): the same pair gets the
same directory on the next run, so an interrupted job resumes with no flag. The path is printed
at the start. Server addresses are displayed forms (credentials already masked) and only their
hash names the directory.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from mlflow_sync import output


def state_home() -> Path:
    explicit = os.environ.get("MLFLOW_SYNC_HOME")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mlflow-sync"


def work_dir_for(job: str, given: Path | None, *sides: str) -> Path:
    """``given`` when the user named one, else the job's directory for these sides (printed)."""
    if given is not None:
        return given
    digest = hashlib.sha256("\n".join((job, *sides)).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(side.rsplit("/", 1)[-1] or side for side in sides)).strip("-")
    path = state_home() / job / f"{label[:60]}-{digest}"
    output.info(f"work dir: {path} (the same for every run of this {job}; --work-dir picks another)")
    return path
