"""sync, snapshot create and snapshot restore at 5% seeded faults: every object exactly once."""

from __future__ import annotations

import pytest

from mlflow_sync.cli import main
from mlflow_sync.connection import connect
from mlflow_sync.migrate.demo_data import build_rich_source
from tests.faults.inventory import assert_exactly_once, record_summary
from tests.faults.test_fault_rates import RICH_SOURCE, _faults
from tests.migrate.conftest import build_plain_runs


@pytest.mark.slow
def test_sync_and_snapshot_restore_at_five_percent_faults(mlflow_server, tmp_path, quick_profile):
    source_server, mirror_server, restored_server = mlflow_server(), mlflow_server(), mlflow_server()
    source = connect(source_server.url, role="source")
    build_rich_source(source, runs_per_experiment=1)
    hooks = {name: _faults(seed) for name, seed in (("source", 17), ("mirror", 19), ("restored", 23))}
    for server, name in ((source_server, "source"), (mirror_server, "mirror"), (restored_server, "restored")):
        server.proxy.faults = hooks[name]
    sync = ["sync", "--source", source_server.url, "--target", mirror_server.url, "--work-dir",
            str(tmp_path / "sync"), "--config", quick_profile, "--quiet"]

    assert main(sync) == 0
    build_plain_runs(source.client, 1, experiment="added later")
    assert main(sync) == 0  # the increment, under faults too
    assert main(["snapshot", "create", "--source", source_server.url, "--to", str(tmp_path / "snapshots"),
                 "--config", quick_profile, "--quiet"]) == 0
    assert main(["snapshot", "restore", "--from", str(tmp_path / "snapshots"), "--target", restored_server.url,
                 "--work-dir", str(tmp_path / "restore"), "--validate-against", source_server.url,
                 "--config", quick_profile, "--quiet"]) == 0
    for server in (source_server, mirror_server, restored_server):
        server.proxy.faults = None

    expected = {**RICH_SOURCE, "experiment": RICH_SOURCE["experiment"] + 1, "run": RICH_SOURCE["run"] + 1}
    # sync, like snapshots, carries the source's deleted run (as deleted)
    mirrored = assert_exactly_once(connect(mirror_server.url, role="target").client, expected)
    restored = assert_exactly_once(connect(restored_server.url, role="target").client, expected)
    injected = sum((hook.injected for hook in hooks.values()), start=hooks["source"].injected.__class__())
    assert injected.total() >= 5, injected
    record_summary("sync_snapshot_5pct", faults=dict(injected), mirrored=mirrored, restored=restored, lost=0,
                   requests=source_server.counter.total + mirror_server.counter.total
                   + restored_server.counter.total)
