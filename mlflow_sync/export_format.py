"""The mlflow-sync export format, in one place: where each object lives, how values are written,
and the manifest that makes an export self-describing and verifiable (see docs/export-format.md).

Objects are stored under their *source* ids (names can hold any character; ids are safe path
parts). Every JSON file is written to a temporary name and renamed, so a file that exists is
complete; ``run.json`` is written after its run's artifacts, so its presence means "this run is
fully exported". ``manifest.json`` is written last: an export directory without it is incomplete
(an export still running, or one that was killed and can be resumed).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow_sync.errors import SyncError, UsageError
from mlflow_sync.files import is_temporary, write_json

__all__ = ["is_temporary", "write_json"]  # re-exported: every writer of the format imports them from here

FORMAT_NAME = "mlflow-sync-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_part(value: str) -> str:
    """A path component for an id or name that cannot escape or collide (hash suffix when changed)."""
    cleaned = _UNSAFE.sub("_", value)[:80]
    if cleaned == value and cleaned not in ("", ".", ".."):
        return cleaned
    return f"{cleaned}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def encode_float(value: float) -> float | str:
    """JSON has no NaN/inf: they are written as the strings "NaN", "Infinity", "-Infinity"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_float(value: float | str) -> float:
    return float(value) if isinstance(value, str) else value


def write_record(path: Path, data: Any) -> None:
    """Write one exported object as canonical JSON (keys sorted): servers return tags and metadata in
    no fixed order, and the same object must be the same bytes in every export (snapshots store
    files by content, so a reordered copy would be stored again and never deduplicated)."""
    write_json(path, data, sort_keys=True)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class ExportLayout:
    """Paths inside one export directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def experiment_dir(self, experiment_id: str) -> Path:
        return self.root / "experiments" / safe_part(experiment_id)

    def experiment_file(self, experiment_id: str) -> Path:
        return self.experiment_dir(experiment_id) / "experiment.json"

    def run_dir(self, experiment_id: str, run_id: str) -> Path:
        return self.experiment_dir(experiment_id) / "runs" / safe_part(run_id)

    def run_file(self, experiment_id: str, run_id: str) -> Path:
        return self.run_dir(experiment_id, run_id) / "run.json"

    def logged_model_dir(self, model_id: str) -> Path:
        return self.root / "logged_models" / safe_part(model_id)

    def trace_file(self, experiment_id: str, trace_id: str) -> Path:
        return self.experiment_dir(experiment_id) / "traces" / f"{safe_part(trace_id)}.json"

    def registered_model_file(self, name: str) -> Path:
        return self.root / "registered_models" / f"{safe_part(name)}.json"

    def prompt_file(self, name: str) -> Path:
        return self.root / "prompts" / f"{safe_part(name)}.json"

    def evaluation_dataset_file(self, dataset_id: str) -> Path:
        return self.root / "evaluation_datasets" / f"{safe_part(dataset_id)}.json"

    def experiment_files(self) -> list[Path]:
        return sorted((self.root / "experiments").glob("*/experiment.json"))

    def run_files(self, experiment_id: str) -> list[Path]:
        return sorted((self.experiment_dir(experiment_id) / "runs").glob("*/run.json"))

    def logged_model_files(self) -> list[Path]:
        return sorted((self.root / "logged_models").glob("*/logged_model.json"))

    def trace_files(self, experiment_id: str) -> list[Path]:
        return sorted((self.experiment_dir(experiment_id) / "traces").glob("*.json"))

    def registered_model_files(self) -> list[Path]:
        return sorted((self.root / "registered_models").glob("*.json"))

    def prompt_files(self) -> list[Path]:
        return sorted((self.root / "prompts").glob("*.json"))

    def evaluation_dataset_files(self) -> list[Path]:
        return sorted((self.root / "evaluation_datasets").glob("*.json"))

    def data_files(self) -> list[Path]:
        """Every file of the export except the manifest and temporary files, sorted."""
        return sorted(
            p for p in self.root.rglob("*")
            if p.is_file() and p.name != MANIFEST and not is_temporary(p)
        )


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
