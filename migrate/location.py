"""Where an export lives: a local directory, or an ``s3://bucket/prefix`` staged through a local copy.

An S3 export is written to a local staging directory first, then every file is uploaded with
boto3's transfer manager (multipart, SHA-256 checksums) and the manifest last, so a reader never
sees a manifest whose files are not there yet. Reading downloads the manifest, then the files
not already staged with the right sha256; the importer checks every file before it starts.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from mlflow_sync import s3
from mlflow_sync.errors import UsageError
from mlflow_sync.export_format import MANIFEST, ExportLayout, read_json, sha256_of

log = logging.getLogger(__name__)


class ExportLocation:
    def __init__(self, uri: str | Path, staging: Path | None = None):
        self.uri = str(uri)
        self.remote = s3.parse_s3_uri(self.uri) if s3.is_s3_uri(self.uri) else None
        if self.remote is None:
            self.local = Path(self.uri).expanduser()
            if self.local.exists() and not self.local.is_dir():
                raise UsageError(f"{self.local} exists and is not a directory")
        else:
            self.local = Path(staging) if staging else Path(tempfile.mkdtemp(prefix="mlflow-sync-export-"))
        self._temporary = self.remote is not None and staging is None
        self.layout = ExportLayout(self.local)

    def close(self) -> None:
        """Remove the staging copy this location made for itself (a given staging dir is kept for resume)."""
        if self._temporary:
            shutil.rmtree(self.local, ignore_errors=True)

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def publish(self) -> None:
        """Upload a staged export (files first, manifest last); nothing to do for a directory."""
        if self.remote is None:
            return
        for path in self.layout.data_files():
            s3.upload_file(path, self.remote.child(path.relative_to(self.local).as_posix()).uri)
        s3.upload_file(self.layout.manifest, self.remote.child(MANIFEST).uri)

    def fetch(self) -> ExportLayout:
        """Make the export readable locally (downloads an S3 export, skipping files already staged)."""
        if self.remote is None:
            return self.layout
        s3.download_file(self.remote.child(MANIFEST).uri, self.layout.manifest)
        manifest = read_json(self.layout.manifest)
        for relative, expected in manifest.get("files", {}).items():
            path = self.local / relative
            if path.is_file() and path.stat().st_size == expected["size"] and sha256_of(path) == expected["sha256"]:
                continue
            s3.download_file(self.remote.child(relative).uri, path)
        return self.layout
