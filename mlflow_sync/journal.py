"""The import journal: one JSON line per step done, so a killed import resumes where it stopped.

Each line is ``{"kind", "source", "target", "state", ...}``. A line is written (and flushed to
the OS, which keeps it across a SIGKILL of this process) right after the server confirmed the
step. A torn last line from a kill is cut off on the next open. The journal alone cannot know about an object
the server created just before the kill: the importer also looks for objects carrying their
source-id tag before creating anything it has no line for.
"""

from __future__ import annotations

import csv
import json
import logging
import threading
from pathlib import Path

from mlflow_sync.export_format import write_json

log = logging.getLogger(__name__)

CREATED = "created"
DONE = "done"


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1  # a line is written whole with its newline: what follows is torn
        for line in data[:complete].decode("utf-8").splitlines():
            entry = json.loads(line)
            key = (entry["kind"], entry["source"])
            self._entries[key] = {**self._entries.get(key, {}), **entry}
        if complete < len(data):
            log.info("journal %s: dropping a torn last line (the previous job was killed)", self.path)
            with self.path.open("r+b") as handle:
                handle.truncate(complete)

    def get(self, kind: str, source: str) -> dict | None:
        with self._lock:
            return self._entries.get((kind, source))

    def target(self, kind: str, source: str) -> str | None:
        entry = self.get(kind, source)
        return entry["target"] if entry else None

    def is_done(self, kind: str, source: str) -> bool:
        entry = self.get(kind, source)
        return bool(entry) and entry.get("state") == DONE

    def record(self, kind: str, source: str, target: str, state: str, **extra) -> None:
        entry = {"kind": kind, "source": source, "target": target, "state": state, **extra}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            key = (kind, source)
            self._entries[key] = {**self._entries.get(key, {}), **entry}

    def entries(self, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [e for (k, _), e in self._entries.items() if kind is None or k == kind]

    def close(self) -> None:
        self._file.close()

    def write_id_map(self, directory: Path) -> tuple[Path, Path]:
        """``id-map.json`` ({kind: {source id: target id}}) and ``id-map.csv`` (kind,source,target,state)."""
        entries = sorted(self.entries(), key=lambda e: (e["kind"], e["source"]))
        by_kind: dict[str, dict[str, str]] = {}
        for entry in entries:
            by_kind.setdefault(entry["kind"], {})[entry["source"]] = entry["target"]
        json_path = Path(directory) / "id-map.json"
        csv_path = Path(directory) / "id-map.csv"
        write_json(json_path, by_kind)
        tmp = csv_path.with_name(".id-map.csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["kind", "source_id", "target_id", "state"])
            for entry in entries:
                writer.writerow([entry["kind"], entry["source"], entry["target"], entry["state"]])
        tmp.replace(csv_path)
        return json_path, csv_path
