"""The manifest that makes an export self-describing and verifiable.

Written last: an export directory without ``manifest.json`` is incomplete (an export still
running, or one that was killed and can be resumed).
"""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from mlflow_sync.errors import SyncError, UsageError
from mlflow_sync.migrate.layout import FORMAT_NAME, FORMAT_VERSION, ExportLayout, read_json, write_json


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def client_versions() -> dict:
    from mlflow_sync import __version__

    return {
        "mlflow_sync": __version__,
        "mlflow": _version("mlflow") or _version("mlflow-skinny"),
        "mlflow_export_import": _version("databricks-mlflow-export-import"),
        "python": platform.python_version(),
    }


def build_manifest(layout: ExportLayout, *, source: dict, counts: dict, options: dict,
                   inventory: dict | None = None, notes: list[str] | None = None) -> dict:
    """Hash every file of the export and write ``manifest.json``; returns it."""
    files = {}
    total = 0
    for path in layout.data_files():
        size = path.stat().st_size
        total += size
        files[path.relative_to(layout.root).as_posix()] = {"sha256": sha256_of(path), "size": size}
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "client": client_versions(),
        "source": source,
        "options": options,
        "counts": counts,
        **({"inventory": inventory} if inventory is not None else {}),
        **({"notes": notes} if notes else {}),
        "total_bytes": total,
        "files": files,
    }
    write_json(layout.manifest, manifest)
    return manifest


def load_manifest(layout: ExportLayout) -> dict:
    """Read and check the manifest's format; a missing one means the export never finished."""
    if not layout.manifest.exists():
        raise UsageError(
            f"{layout.root} has no manifest.json: not an mlflow-sync export, or an export that did not "
            "finish (run the export again to complete it)"
        )
    try:
        manifest = read_json(layout.manifest)
    except (ValueError, UnicodeDecodeError):  # a damaged manifest is bad input, not a crash (issue 7)
        raise UsageError(f"{layout.manifest} is not valid JSON: the export is damaged (export again)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise UsageError(f"{layout.manifest} is not an mlflow-sync export manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise UsageError(
            f"{layout.root} uses export format {manifest['format_version']}; this mlflow-sync reads up to "
            f"{FORMAT_VERSION} (upgrade mlflow-sync)"
        )
    return manifest


def verify_files(layout: ExportLayout, manifest: dict) -> None:
    """Every file the manifest lists is present with its size and sha256, or one clear error."""
    bad = []
    for relative, expected in manifest["files"].items():
        path = layout.root / relative
        if not path.is_file():
            bad.append(f"{relative} (missing)")
        elif path.stat().st_size != expected["size"] or sha256_of(path) != expected["sha256"]:
            bad.append(f"{relative} (changed: sha256 differs)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise SyncError(f"export {layout.root} is damaged: {', '.join(bad[:3])}{more}")
