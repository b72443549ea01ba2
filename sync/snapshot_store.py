"""Where snapshots live: a local directory or an ``s3://bucket/prefix``, behind one small interface.

Layout (the same in both)::

    blobs/<first two hex digits>/<sha256>   content-addressed files, shared by every snapshot
    snapshots/<snapshot id>.json            one manifest per snapshot (written last)

Writes are atomic: a local file is written to a temporary name and renamed; an S3 object only
appears when its upload completes. A write that was killed leaves an *incomplete upload* (the
temporary file, or the parts of an S3 multipart upload, invisible in a listing but stored):
``incomplete_uploads`` names them so ``verify`` can report them and ``prune`` remove them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from mlflow_sync import s3
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import is_temporary, sha256_of, write_json

BLOBS = "blobs"
SNAPSHOTS = "snapshots"


def blob_key(sha256: str) -> str:
    return f"{BLOBS}/{sha256[:2]}/{sha256}"


def snapshot_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}.json"


class LocalStore:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} exists and is not a directory")
        self.uri = str(self.root)

    def display(self, key: str) -> str:
        return str(self.root / key)

    def listing(self) -> dict[str, int]:
        """Every file under the root: {key: size} (files still being written, or never finished, aside)."""
        return {p.relative_to(self.root).as_posix(): p.stat().st_size for p in self._files() if not is_temporary(p)}

    def incomplete_uploads(self) -> list[tuple[str, str]]:
        """(key, upload handle) of every write that never finished: here, a temporary file."""
        return [(key, key) for key in sorted(p.relative_to(self.root).as_posix() for p in self._files()
                                             if is_temporary(p))]

    def abort_upload(self, key: str, handle: str) -> None:
        (self.root / handle).unlink(missing_ok=True)

    def _files(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []

    def read_json(self, key: str):
        return json.loads((self.root / key).read_text(encoding="utf-8"))

    def write_json(self, key: str, data) -> None:
        write_json(self.root / key, data)

    def put_file(self, path: Path, key: str) -> None:
        destination = self.root / key
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, destination)

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.root / key, path)

    def sha256(self, key: str) -> str:
        return sha256_of(self.root / key)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Store:
    def __init__(self, uri: str):
        self.location = s3.parse_s3_uri(uri.rstrip("/"))
        self.uri = self.location.uri

    def display(self, key: str) -> str:
        return self.location.child(key).uri

    def _key(self, key: str) -> str:
        return self.location.child(key).key

    def listing(self) -> dict[str, int]:
        prefix = self.location.key.rstrip("/") + "/" if self.location.key else ""
        return {obj["Key"][len(prefix):]: obj["Size"] for obj in s3.list_objects(s3.S3Location(
            self.location.bucket, prefix).uri)}

    def incomplete_uploads(self) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload never completed nor aborted (S3 keeps its parts)."""
        prefix = self.location.key.rstrip("/") + "/" if self.location.key else ""
        return [(upload["Key"][len(prefix):], upload["UploadId"])
                for upload in s3.list_incomplete_uploads(s3.S3Location(self.location.bucket, prefix).uri)]

    def abort_upload(self, key: str, handle: str) -> None:
        s3.abort_upload(self.location.child(key).uri, handle)

    def read_json(self, key: str):
        with tempfile.TemporaryDirectory(prefix="mlflow-sync-snapshot-") as tmp:
            path = s3.download_file(self.location.child(key).uri, Path(tmp) / "object.json")
            return json.loads(path.read_text(encoding="utf-8"))

    def write_json(self, key: str, data) -> None:
        with tempfile.TemporaryDirectory(prefix="mlflow-sync-snapshot-") as tmp:
            path = Path(tmp) / "object.json"
            write_json(path, data)
            s3.upload_file(path, self.location.child(key).uri)

    def put_file(self, path: Path, key: str) -> None:
        s3.upload_file(path, self.location.child(key).uri)

    def get_file(self, key: str, path: Path) -> None:
        s3.download_file(self.location.child(key).uri, path)

    def sha256(self, key: str) -> str:
        with tempfile.TemporaryDirectory(prefix="mlflow-sync-snapshot-") as tmp:
            return sha256_of(s3.download_file(self.location.child(key).uri, Path(tmp) / "blob"))

    def delete(self, key: str) -> None:
        s3.client().delete_object(Bucket=self.location.bucket, Key=self._key(key))


def open_store(uri: str | Path) -> LocalStore | S3Store:
    return S3Store(str(uri)) if s3.is_s3_uri(str(uri)) else LocalStore(Path(uri))
