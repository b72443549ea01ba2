"""The export directory: where each object lives and how values are written (see docs/export-format.md).

Objects are stored under their *source* ids (names can hold any character; ids are safe path
parts). Every JSON file is written to a temporary name and renamed, so a file that exists is
complete; ``run.json`` is written after its run's artifacts, so its presence means "this run is
fully exported".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

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


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    """Atomically write strict JSON (no NaN tokens) with a trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False, sort_keys=sort_keys) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def write_record(path: Path, data: Any) -> None:
    """Write one exported object as canonical JSON (keys sorted): servers return tags and metadata in
    no fixed order, and the same object must be the same bytes in every export (snapshots store
    files by content, so a reordered copy would be stored again and never deduplicated)."""
    write_json(path, data, sort_keys=True)


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp-" in path.name


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
