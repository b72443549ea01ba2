"""What a sync remembers between runs (``sync-state.json``) and the lock that keeps it single.

The state is written atomically at the end of a successful cycle only: a cycle that crashed or
failed leaves the previous state, so the next run looks at the same window again and the
importer's journal and source-id tags make the repeated work free of duplicates.

The lock has two halves. A local lock file in the work directory (created with O_EXCL) stops two
syncs sharing one work directory; a lock tag on the target's Default experiment (id 0) stops two
syncs from different machines or work directories writing into one target. Both hold the
owner's host and pid: a lock whose owner process is gone (same host) is taken over, a lock whose
lease expired is taken over too; anything else is refused with a one-line error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mlflow_sync.connection import Server
from mlflow_sync.errors import SyncError, UsageError
from mlflow_sync.export_format import read_json, write_json

log = logging.getLogger(__name__)

STATE_FILE = "sync-state.json"
LOCK_FILE = "sync.lock"
LOCK_TAG = "mlflow_sync.sync.lock"
LOCK_EXPERIMENT = "0"  # the Default experiment: every MLflow server has it
LEASE_SECONDS = 6 * 3600
STATE_VERSION = 1


@dataclass
class SyncState:
    source: str | None = None
    target: str | None = None
    last_sync_ms: int | None = None  # client clock at the start of the last successful cycle
    cycles: int = 0
    running_runs: list[str] = field(default_factory=list)
    run_fingerprints: dict[str, str] = field(default_factory=dict)
    settled_runs: dict[str, int] = field(default_factory=dict)  # finished, copied: id -> latest of start/end time
    experiments: dict[str, str] = field(default_factory=dict)  # source id -> fingerprint
    logged_models: dict[str, str] = field(default_factory=dict)  # source id -> fingerprint (recent ones)
    registered_models: dict[str, dict] = field(default_factory=dict)  # name -> see changes.model_state
    prompts: dict[str, dict] = field(default_factory=dict)
    deleted_runs: list[str] = field(default_factory=list)  # source ids already deleted on the target
    version: int = STATE_VERSION

    @classmethod
    def load(cls, work_dir: Path, source: str, target: str) -> SyncState:
        path = work_dir / STATE_FILE
        if not path.exists():
            return cls(source=source, target=target)
        try:
            data = read_json(path)
            state = cls(**data)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path} is not a sync state file ({exc}); move it away to start over") from exc
        if state.version > STATE_VERSION:
            raise UsageError(f"{path} was written by a newer mlflow-sync (state version {state.version})")
        if (state.source, state.target) != (source, target):
            raise UsageError(f"{work_dir} holds the sync state of {state.source} -> {state.target}; use another "
                             "--work-dir for this pair")
        return state

    def save(self, work_dir: Path) -> None:
        write_json(work_dir / STATE_FILE, asdict(self))


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
            "since": int(time.time()), "expires": int(time.time()) + LEASE_SECONDS}


def _alive(holder: dict) -> bool:
    """Could the holder still be running? Only a process on this host can be checked."""
    if holder.get("host") != socket.gethostname():
        return holder.get("expires", 0) > time.time()
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True
    return holder.get("expires", 0) > time.time()


def _describe(holder: dict) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} since {since}"


class SyncLock:
    """``with SyncLock(work_dir, target): ...`` or a one-line SyncError naming the holder."""

    def __init__(self, work_dir: Path, target: Server, *, break_lock: bool = False):
        self.path = Path(work_dir) / LOCK_FILE
        self.target = target
        self.break_lock = break_lock
        self.owner = _owner()
        self._local = False

    def __enter__(self) -> SyncLock:
        self._take_local()
        try:
            self._take_target()
        except BaseException:
            self._release_local()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            current = self._target_holder()
            if current and current.get("token") == self.owner["token"]:
                self.target.client.delete_experiment_tag(LOCK_EXPERIMENT, LOCK_TAG)
        finally:
            self._release_local()

    def _take_local(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                except ValueError:
                    holder = {}
                if holder and _alive(holder) and not self.break_lock:
                    raise SyncError(f"another sync is running with this work directory ({_describe(holder)}; "
                                    f"lock file {self.path})") from None
                log.warning("taking over the lock %s from %s (no longer running)", self.path, _describe(holder))
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self.owner))
            self._local = True
            return
        raise SyncError(f"could not take the lock {self.path}")

    def _release_local(self) -> None:
        if self._local:
            self.path.unlink(missing_ok=True)
            self._local = False

    def _target_holder(self) -> dict | None:
        experiment = self.target.client.get_experiment(LOCK_EXPERIMENT)
        value = experiment.tags.get(LOCK_TAG)
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return {"host": "?", "pid": "?", "expires": 0}

    def _take_target(self) -> None:
        holder = self._target_holder()
        if holder and _alive(holder) and not self.break_lock:
            raise SyncError(f"the target {self.target.display} is locked by another sync ({_describe(holder)}); "
                            "wait for it, or pass --break-lock if that sync is gone")
        if holder:
            log.warning("taking over the target lock from %s (no longer running)", _describe(holder))
        self.target.client.set_experiment_tag(LOCK_EXPERIMENT, LOCK_TAG, json.dumps(self.owner))
        holder = self._target_holder()
        if not holder or holder.get("token") != self.owner["token"]:
            raise SyncError(f"another sync took the target lock at the same moment ({_describe(holder or {})})")
