"""What one side of a validation is, decided in one place, and how it is opened.

A side is recognised from its location, first rule that applies:

- ``http(s)://``, a database URI or ``arn:``: a tracking server (checked by ``uris.parse_server``);
- ``s3://bucket/prefix``: an export when ``prefix/manifest.json`` exists, a snapshot store when
  ``prefix/snapshots/`` does (one listing request, whatever lies deeper);
- a local directory: an export when it holds ``manifest.json`` (or ``experiments/``: an export
  that never finished, refused by the manifest check), a snapshot store when it holds
  ``snapshots/*.json``.

Anything else (a missing path, a file, an empty or unrelated directory) is refused in one line.
A snapshot store means its latest snapshot; ``LOCATION#ID`` picks one (ids as ``snapshot list``
shows them and ``--snapshot ID`` takes them; ``#latest`` is the default spelled out).

Sides other than servers are read from a temporary local copy, removed afterwards: an S3
export's metadata (its artifacts stay on S3 and are listed and hashed there), or a snapshot
rebuilt by :func:`mlflow_sync.sync.rebuild_export`, which checks each file's sha256.
A snapshot with a damaged or missing file is refused, as ``snapshot restore`` refuses it
without ``--force``. Artifact files are only copied when the artifacts check runs.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

from mlflow_sync import s3
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import MANIFEST, is_temporary
from mlflow_sync.validate.options import ValidateOptions

SNAPSHOT_MARK = "#"
SERVER_HINT = "a tracking server (http(s)://, database URI, SageMaker ARN), an export directory or a snapshot store"


class SideKind(str, Enum):
    SERVER = "server"
    EXPORT = "export"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class Side:
    """A recognised side: its kind, where it is (without ``#ID``) and the snapshot asked for."""

    kind: SideKind
    location: str
    snapshot_id: str | None = None

    @property
    def on_s3(self) -> bool:
        return s3.is_s3_uri(self.location)


def _is_local_path(location: str) -> bool:
    scheme = urlsplit(location).scheme
    return not location.startswith("arn:") and (not scheme or len(scheme) == 1)  # "C:\..." is a path


def _kind_of_local(path: Path) -> SideKind | None:
    if (path / MANIFEST).is_file() or (path / "experiments").is_dir():
        return SideKind.EXPORT
    if any((path / "snapshots").glob("*.json")):
        return SideKind.SNAPSHOT
    return None


def _kind_of_s3(uri: str) -> SideKind | None:
    names, folders = s3.list_children(uri)
    if MANIFEST in names:
        return SideKind.EXPORT
    if "experiments" in folders:
        raise UsageError(f"{uri} has no manifest.json: an export that did not finish (run the export again to "
                         "complete it)")
    if "snapshots" in folders:
        return SideKind.SNAPSHOT
    return None


def _kind_of(location: str) -> SideKind | None:
    """The kind of a store location, None when it is neither an export nor a snapshot store."""
    if s3.is_s3_uri(location):
        return _kind_of_s3(location)
    path = Path(location).expanduser()
    if not path.exists():
        raise UsageError(f"{location}: no such directory; expected {SERVER_HINT}")
    if not path.is_dir():
        hint = f" (a SQLite database is given as sqlite:///{path})" if path.suffix == ".db" else ""
        raise UsageError(f"{location} is a file; expected {SERVER_HINT}{hint}")
    return _kind_of_local(path)


def recognise(location: str) -> Side:
    """Classify a side's location (see the module docstring); one-line UsageError when it is none."""
    if not (s3.is_s3_uri(location) or _is_local_path(location)):
        return Side(SideKind.SERVER, location)
    base, mark, snapshot_id = location.rpartition(SNAPSHOT_MARK)
    exists_as_is = not s3.is_s3_uri(location) and Path(location).expanduser().exists()
    if mark and base and not exists_as_is:
        if _kind_of(base) is not SideKind.SNAPSHOT:
            raise UsageError(f"{location}: '#{snapshot_id}' selects a snapshot, but {base} is not a snapshot store "
                             "(no snapshots/*.json)")
        return Side(SideKind.SNAPSHOT, base, snapshot_id or None)
    kind = _kind_of(location)
    if kind is None:
        empty = "" if s3.is_s3_uri(location) or any(Path(location).expanduser().iterdir()) else " (it is empty)"
        raise UsageError(f"{location} is neither an mlflow-sync export (no manifest.json) nor a snapshot store "
                         f"(no snapshots/*.json){empty}")
    return Side(kind, location)


@contextmanager
def open_side(profile, role: str, location: str | None, options: ValidateOptions = ValidateOptions(), *,
              max_rps: float | None = None):
    """Yield one side ready to read: a checked server, or a reader over an export or a snapshot."""
    from mlflow_sync.connection import connect_side
    from mlflow_sync.validate.export_reader import ExportReader

    location = location or getattr(profile, role).uri
    side = recognise(location) if location else Side(SideKind.SERVER, "")
    if side.kind is SideKind.SERVER:
        with connect_side(profile, role, side.location or None, max_rps=max_rps) as server:
            server.check()
            yield server
    elif side.kind is SideKind.EXPORT and not side.on_s3:
        yield ExportReader(side.location)
    else:
        with tempfile.TemporaryDirectory(prefix=f"mlflow-sync-validate-{role}-") as scratch:
            if side.kind is SideKind.EXPORT:
                fetch_export_metadata(side.location, Path(scratch), workers=options.workers)
                try:
                    reader = ExportReader(scratch, display=f"export {side.location}", artifacts_at=side.location)
                except UsageError as exc:  # name the export, not the scratch copy
                    raise UsageError(str(exc).replace(scratch, side.location.rstrip("/"))) from None
                yield reader
            else:
                snapshot_id = materialize_snapshot(side, Path(scratch), options)
                yield ExportReader(scratch, display=f"snapshot {side.location}{SNAPSHOT_MARK}{snapshot_id}")


def fetch_export_metadata(uri: str, local: Path, *, workers: int) -> int:
    """Copy every file of an S3 export except artifacts (read in place) into ``local``; returns the count.

    The export is copied as it is, like a local directory is read as it is: a missing or changed
    file shows up as a difference, not as a refusal.
    """
    from mlflow_sync.validate.export_reader import is_artifact_file

    root = s3.parse_s3_uri(uri.rstrip("/"))
    prefix = root.key.rstrip("/") + "/" if root.key else ""
    relatives = [key[len(prefix):] for key in (item["Key"] for item in s3.list_objects(
        s3.S3Location(root.bucket, prefix).uri))]
    wanted = [r for r in relatives if r and not r.endswith("/") and not is_artifact_file(r)
              and not is_temporary(Path(r))]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda relative: s3.download_file(root.child(relative).uri, local / relative), wanted))
    return len(wanted)


def materialize_snapshot(side: Side, local: Path, options: ValidateOptions) -> str:
    """Rebuild the snapshot's export in ``local`` (checked file by file); returns the snapshot id."""
    from mlflow_sync.sync import rebuild_export
    from mlflow_sync.validate.export_reader import is_artifact_file

    def wanted(relative: str) -> bool:
        return options.wants("artifacts") or not is_artifact_file(relative)

    return rebuild_export(side.location, side.snapshot_id, local, keep=wanted, workers=options.workers)
