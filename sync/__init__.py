"""Keep a standby in step (``sync``) and keep verifiable point-in-time snapshots (``snapshot``).

Both are built on migrate's public API (its exporter and importer) and the export format of the
base layer. The public API: :func:`sync`, and :func:`create_snapshot`, :func:`list_snapshots`,
:func:`verify_snapshots`, :func:`restore_snapshot`, :func:`prune_snapshots`, :func:`rebuild_export`
(validate reads a snapshot as a side through it).
"""

from mlflow_sync.sync.incremental import plan_sync, sync
from mlflow_sync.sync.snapshot import (
    create_snapshot,
    list_snapshots,
    plan_restore,
    plan_snapshot,
    prune_snapshots,
    rebuild_export,
    restore_snapshot,
    verify_snapshots,
)

__all__ = [
    "create_snapshot",
    "list_snapshots",
    "plan_restore",
    "plan_snapshot",
    "plan_sync",
    "prune_snapshots",
    "rebuild_export",
    "restore_snapshot",
    "sync",
    "verify_snapshots",
]
