"""Many checkpoints in one job: a list file or every approved version of a Model Package Group.

Resumable: a JSON state file records each finished conversion (written atomically after every
model); a re-run skips what is registered already and retries what failed. One model's failure
is reported and the job goes on; the command exits non-zero if any model failed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from mlflow_sync import output
from mlflow_sync.connection import Server, first_line
from mlflow_sync.convert.converter import ConvertOptions, convert
from mlflow_sync.convert.sources import approved_model_packages
from mlflow_sync.errors import SyncError, UsageError
from mlflow_sync.files import write_json

log = logging.getLogger(__name__)

STATE_FORMAT = 1


@dataclass(frozen=True)
class BatchItem:
    source: str  # s3:// URI, local path or model package ARN
    registered_model_name: str
    task: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source} -> {self.registered_model_name}"


def read_list_file(path: Path, default_name: str | None, default_task: str | None) -> list[BatchItem]:
    """One model per line: ``SOURCE [REGISTERED_MODEL_NAME [TASK]]``; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read list file {str(path)!r}: {exc.strerror or exc}") from None
    items = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 3:
            raise UsageError(f"{path}:{number}: expected 'SOURCE [REGISTERED_MODEL_NAME [TASK]]', got {len(fields)} fields")
        name = fields[1] if len(fields) > 1 else default_name
        if not name:
            raise UsageError(f"{path}:{number}: no registered model name (add one or pass --registered-model-name)")
        items.append(BatchItem(fields[0], name, fields[2] if len(fields) > 2 else default_task))
    if not items:
        raise UsageError(f"list file {str(path)!r} names no models")
    return items


def model_package_group_items(group: str, name: str, task: str | None) -> list[BatchItem]:
    arns = approved_model_packages(group)
    if not arns:
        raise UsageError(f"model package group {group!r} has no approved model packages")
    return [BatchItem(arn, name, task) for arn in arns]


class StateFile:
    """``{"format": 1, "models": {key: {"status": ..., ...}}}``, rewritten atomically."""

    def __init__(self, path: Path):
        self.path = path
        self.models: dict[str, dict] = {}
        if path.exists():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
                self.models = dict(document["models"])
            except (OSError, ValueError, KeyError, TypeError):
                raise UsageError(f"state file {str(path)!r} is not a mlflow-sync convert state file") from None

    def done(self, item: BatchItem) -> dict | None:
        entry = self.models.get(item.key)
        return entry if entry and entry.get("status") == "registered" else None

    def record(self, item: BatchItem, entry: dict) -> None:
        self.models[item.key] = {**entry, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(self.path, {"format": STATE_FORMAT, "models": self.models}, indent=2)


def run_batch(server: Server, items: list[BatchItem], options: ConvertOptions, state: StateFile) -> dict:
    """Convert every item not done yet; return the report (one entry per item, in order)."""
    results = []
    for position, item in enumerate(items, start=1):
        previous = state.done(item)
        if previous:
            output.info(f"[{position}/{len(items)}] {item.source}: registered earlier as version {previous['version']}")
            results.append({"source": item.source, **previous, "status": "skipped"})
            continue
        output.info(f"[{position}/{len(items)}] converting {item.source}")
        item_options = replace(options, registered_model_name=item.registered_model_name, task=item.task)
        try:
            result = convert(server, item.source, item_options)
        except SyncError as exc:
            entry = {"status": "failed", "registered_model_name": item.registered_model_name, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one model's crash is reported; the others still run
            log.debug("conversion of %s crashed", item.source, exc_info=True)
            entry = {"status": "failed", "registered_model_name": item.registered_model_name,
                     "error": f"unexpected {type(exc).__name__}: {first_line(exc)}"}
        else:
            entry = {"status": "registered", "registered_model_name": result.registered_model_name,
                     "version": result.version, "model_uri": result.model_uri, "run_id": result.run_id,
                     "tarball_sha256": result.tarball_sha256}
        if entry["status"] == "failed":
            log.error("%s: %s", item.source, entry["error"])
        state.record(item, entry)
        results.append({"source": item.source, **entry})
    counts = {status: sum(1 for r in results if r["status"] == status) for status in ("registered", "skipped", "failed")}
    return {"models": results, "counts": counts, "state_file": str(state.path)}
