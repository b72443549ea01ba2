"""`mlflow-sync demo`: a realistic source on SQLite, migrated to a second SQLite store and validated.

Runs on a fresh machine with no network and no server: both stores are embedded (database
URIs), artifacts live in the work directory.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from mlflow_sync import output
from mlflow_sync.connection import connect
from mlflow_sync.errors import MismatchError
from mlflow_sync.migrate import service
from mlflow_sync.migrate.demo_data import build_rich_source
from mlflow_sync.migrate.exporter import ExportFilters
from mlflow_sync.migrate.importer import ImportOptions

DEMO_PARTS = ("source", "target", "export", "journal.jsonl", "id-map.json", "id-map.csv", "report.json",
              "validation.json", "validation.html", "staged-export")


@contextmanager
def _inside(directory: Path):
    """Embedded stores put artifacts under ./mlruns: give each store its own directory."""
    directory.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def run_demo(work_dir: Path) -> dict:
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    for part in DEMO_PARTS:  # a demo starts from scratch; nothing else in the directory is touched
        path = work_dir / part
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    source_uri = f"sqlite:///{work_dir / 'source' / 'mlflow.db'}"
    target_uri = f"sqlite:///{work_dir / 'target' / 'mlflow.db'}"
    with _inside(work_dir / "source"), connect(source_uri, role="target") as new_store:
        output.info(f"building a demo source in {work_dir / 'source'}")
        # role "target": only a target may be created from nothing
        built = build_rich_source(new_store, with_evaluation_datasets=True)
    with connect(source_uri, role="source") as source, connect(target_uri, role="target") as target:
        with _inside(work_dir / "source"):
            output.info("exporting")
            manifest = service.export(source, str(work_dir / "export"), filters=ExportFilters(), workers=4)
        with _inside(work_dir / "target"):
            output.info("importing into a second store")
            result = service.import_export(target, str(work_dir / "export"), work_dir,
                                           options=ImportOptions(workers=4))
            output.info("validating")
            validation = service.validate_target(source, target, work_dir, workers=4)
    result.validation = validation
    summary = {
        "source": source_uri,
        "target": target_uri,
        "built": {k: len(v) if isinstance(v, list) else v for k, v in built.items()},
        "exported": manifest["counts"],
        "imported": result.counts["imported"],
        "validation": "clean" if validation.get("ok") else validation.get("summary"),
        "report": validation.get("html"),
        "id_map": result.id_map,
    }
    if not validation.get("ok"):
        output.emit(summary, lambda console: console.print(summary))
        raise MismatchError(f"the demo target differs from its source: {validation.get('summary')} "
                            f"(report: {validation.get('html')})")
    return summary
