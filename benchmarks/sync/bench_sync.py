"""Benchmark: incremental sync cost, snapshot verify throughput, restore time.

    .venv/bin/python benchmarks/sync/bench_sync.py --runs 1000

Starts moto and three harness MLflow servers (sqlite, artifacts proxied to moto S3). The source
gets ``--runs`` finished runs (the migrate tests' run shape: 20 params, 10 metrics, 100-step
histories on every 3rd run, 2 artifacts) plus 1% more runs left RUNNING, and one run holding
``--big-mb`` of artifacts (so verify throughput is not only per-file overhead). As on a production
server, the history is old: the finished runs start and end between HISTORY_DAYS and about
HISTORY_DAYS - 8 days ago (``create_run(start_time=...)``, ``set_terminated(end_time=...)``), the
RUNNING runs started RUNNING_SINCE_HOURS ago. Then:

1. first ``sync`` (copies everything); 2. the RUNNING runs (1% of runs) get new metric points and
a tag, then end now; second ``sync``; 3. third ``sync`` with no change. Requests (through counting
proxies) and wall time per sync; targets: sync 2 <= 5% of sync 1 in requests and in time.
4. ``snapshot create``, ``snapshot verify`` throughput (MB/s) against ``sha256sum`` of the same
blob files; 5. ``snapshot restore`` into an empty server (the recovery time of this size).

Results: benchmarks/sync/results.json and results.md (with the command and the machine).
``--recent-history`` makes the finished runs now instead (all of them fall in sync 2's window: the
overlap's worst case, and the dataset of the first measurement); ``--skip-snapshot`` measures the
syncs only (steps 1-3).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mlflow_sync.connection import connect  # noqa: E402
from mlflow_sync.sync.incremental import sync  # noqa: E402
from mlflow_sync.sync.snapshot import create_snapshot, restore_snapshot, verify_snapshots  # noqa: E402
from tests.harness import MlflowServer, MotoServer  # noqa: E402
from tests.migrate.conftest import build_plain_runs  # noqa: E402

HERE = Path(__file__).resolve().parent
EXPERIMENTS = 4
HISTORY_DAYS = 30
RUNNING_SINCE_HOURS = 3
DAY_MS = 24 * 3600 * 1000


def machine_facts() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import mlflow

    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "mlflow": mlflow.__version__,
            "platform": platform.platform(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def build_source(url: str, runs: int, big_mb: int, *, recent: bool = False) -> dict:
    """Old finished runs in EXPERIMENTS experiments (built in parallel, experiment i's history starting
    HISTORY_DAYS - 2i days ago), 1% RUNNING runs started hours ago, one big-artifact run from last week.
    ``recent``: the finished and the big-artifact runs are made now instead (their times: now)."""
    from mlflow.entities import Metric

    client = connect(url, role="source").client
    share = runs // EXPERIMENTS
    now = int(time.time() * 1000)
    with ThreadPoolExecutor(EXPERIMENTS) as pool:
        list(pool.map(lambda i: build_plain_runs(connect(url, role="source").client, share, experiment=f"bench-{i}",
                                                 started_ms=None if recent else now - (HISTORY_DAYS - 2 * i) * DAY_MS),
                      range(EXPERIMENTS)))
    experiment_id = client.get_experiment_by_name("bench-0").experiment_id
    running = []
    for index in range(max(1, runs // 100)):
        run_id = client.create_run(experiment_id, run_name=f"training-{index}",
                                   start_time=now - RUNNING_SINCE_HOURS * 3600 * 1000 + index * 1000).info.run_id
        client.log_batch(run_id, metrics=[Metric("loss", 1.0, 1_700_000_000_000, 0)])
        running.append(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(4):
            Path(tmp, f"weights-{index}.bin").write_bytes(os.urandom(big_mb * 1024 * 1024 // 4))
        big_start = None if recent else now - 7 * DAY_MS
        big = client.create_run(experiment_id, run_name="weights", start_time=big_start).info.run_id
        client.log_artifacts(big, tmp)
        client.set_terminated(big, end_time=None if recent else big_start + 3600 * 1000)
    return {"finished_runs": share * EXPERIMENTS + 1, "running_runs": running}


def change_running(url: str, running: list[str]) -> None:
    from mlflow.entities import Metric, RunTag

    client = connect(url, role="source").client
    for run_id in running:
        client.log_batch(run_id, metrics=[Metric("loss", 1.0 / step, 1_700_000_000_000 + step, step)
                                          for step in range(1, 51)], tags=[RunTag("phase", "done")])
        client.set_terminated(run_id)


def measure_sync(source: MlflowServer, target: MlflowServer, work: Path) -> dict:
    source.counter.reset()
    target.counter.reset()
    with connect(source.url, role="source") as s, connect(target.url, role="target") as t:
        started = time.monotonic()
        report = sync(s, t, work, workers=4)
        seconds = time.monotonic() - started
    return {"seconds": round(seconds, 2), "requests_source": source.counter.total,
            "requests_target": target.counter.total, "requests": source.counter.total + target.counter.total,
            "changes": report["changes"], "window": report["window"], "imported": report["imported"]}


def sha256sum_seconds(files: list[Path]) -> float:
    started = time.monotonic()
    for start in range(0, len(files), 500):
        subprocess.run(["sha256sum", *map(str, files[start:start + 500])], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--big-mb", type=int, default=200, help="Size of the one big-artifact run (MB).")
    parser.add_argument("--output-dir", type=Path, default=HERE)
    parser.add_argument("--recent-history", action="store_true",
                        help="Make the finished runs now instead of days ago: every run falls in the second sync's "
                             "window, the worst case of the overlap (the dataset of the first measurement).")
    parser.add_argument("--skip-snapshot", action="store_true",
                        help="Measure the syncs only (no snapshot create, verify, restore).")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    work = ROOT / "benchmarks" / "work" / "sync"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result = {"command": " ".join([".venv/bin/python", "benchmarks/sync/bench_sync.py", *sys.argv[1:]]),
              "machine": machine_facts()}
    with MotoServer(work / "moto") as moto:
        moto.make_bucket()
        roles = ("source", "standby") if args.skip_snapshot else ("source", "standby", "restored")
        servers = {role: MlflowServer(moto, workdir=work / role) for role in roles}
        for role, server in servers.items():
            (work / role).mkdir(exist_ok=True)
            server.start()
        try:
            source, standby = servers["source"], servers["standby"]
            started = time.monotonic()
            dataset = build_source(source.direct_url, args.runs, args.big_mb, recent=args.recent_history)
            result["dataset"] = {"finished_runs": dataset["finished_runs"], "running_runs": len(dataset["running_runs"]),
                                 "big_artifact_mb": args.big_mb, "build_seconds": round(time.monotonic() - started, 1),
                                 "history": "recent" if args.recent_history else "old"}
            print("dataset built", result["dataset"], flush=True)
            result["sync_1_first"] = measure_sync(source, standby, work / "sync-work")
            print("sync 1", result["sync_1_first"], flush=True)
            change_running(source.direct_url, dataset["running_runs"])
            result["sync_2_after_1pct_change"] = measure_sync(source, standby, work / "sync-work")
            print("sync 2", result["sync_2_after_1pct_change"], flush=True)
            result["sync_3_no_change"] = measure_sync(source, standby, work / "sync-work")
            print("sync 3", result["sync_3_no_change"], flush=True)
            first, second = result["sync_1_first"], result["sync_2_after_1pct_change"]
            result["ratios"] = {"requests": round(second["requests"] / first["requests"], 4),
                                "seconds": round(second["seconds"] / first["seconds"], 4)}

            if not args.skip_snapshot:
                measure_snapshots(source, servers["restored"], work, result)
        finally:
            for server in servers.values():
                server.stop()
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.output_dir / "results.md").write_text(render(result))
    return 0


def measure_snapshots(source: MlflowServer, restored: MlflowServer, work: Path, result: dict) -> None:
    """Snapshot create, verify against sha256sum, restore into an empty server."""
    snapshots = work / "snapshots"
    with connect(source.url, role="source") as s:
        result["snapshot_create"] = create_snapshot(s, str(snapshots), workers=4)
    for workers in (1, 4):
        report = verify_snapshots(str(snapshots), workers=workers).as_dict()
        result[f"verify_workers_{workers}"] = {k: report[k] for k in ("checked_files", "checked_bytes",
                                                                       "seconds", "mb_per_second", "ok")}
    blobs = sorted(p for p in (snapshots / "blobs").rglob("*") if p.is_file())
    seconds = sha256sum_seconds(blobs)
    total = sum(p.stat().st_size for p in blobs)
    result["sha256sum"] = {"files": len(blobs), "bytes": total, "seconds": round(seconds, 3),
                           "mb_per_second": round(total / 1e6 / seconds, 1)}
    print("verify", result["verify_workers_4"], "sha256sum", result["sha256sum"], flush=True)
    with connect(restored.url, role="target") as t:
        started = time.monotonic()
        summary = restore_snapshot(str(snapshots), t, work / "restore-work", workers=4)
        result["restore"] = {"seconds": round(time.monotonic() - started, 1),
                             "requests_target": restored.counter.total,
                             "count_check": summary["count_check"]}
    print("restore", result["restore"], flush=True)


def render(r: dict) -> str:
    m, d = r["machine"], r["dataset"]
    s1, s2, s3 = r["sync_1_first"], r["sync_2_after_1pct_change"], r["sync_3_no_change"]
    ok = "yes" if r["ratios"]["requests"] <= 0.05 and r["ratios"]["seconds"] <= 0.05 else "NO"
    history = (f"The history is old: finished runs started and ended {HISTORY_DAYS} to ~{HISTORY_DAYS - 8} days ago, "
               f"the RUNNING runs started {RUNNING_SINCE_HOURS} hours ago"
               if d["history"] == "old" else "Recent history (--recent-history): the finished runs were made in the "
               "minutes before sync 1, so all fall in sync 2's window")
    lines = [
        "# sync and snapshot benchmark", "",
        f"Command: `{r['command']}`", "",
        f"- Machine: {m['date_utc']}; {m['cores']} cores ({m['cpu']}), Python {m['python']}, MLflow {m['mlflow']}, "
        f"{m['platform']}. Load average at start {m['load_average_at_start']}, at end {m['load_average_at_end']}: "
        "the 2 cores are shared with other engineers' tests and servers, so times are noisy.",
        f"- Dataset: {d['finished_runs']} finished runs (20 params, 10 metrics, 100-step histories on every 3rd "
        f"run, 2 artifacts) in 4 experiments, {d['running_runs']} RUNNING runs, one run with {d['big_artifact_mb']} "
        f"MB of artifacts. Servers: sqlite, artifacts proxied to moto S3, all on loopback. {history}; built in "
        f"{d['build_seconds']} s.", "",
        "## Incremental sync", "",
        "| sync | what changed | requests (source + target) | seconds |", "|---|---|---|---|",
        f"| 1 (first) | everything | {s1['requests']} ({s1['requests_source']} + {s1['requests_target']}) | {s1['seconds']} |",
        f"| 2 | {d['running_runs']} RUNNING runs (1%): 50 new metric points, a tag, ended | {s2['requests']} "
        f"({s2['requests_source']} + {s2['requests_target']}) | {s2['seconds']} |",
        f"| 3 | nothing | {s3['requests']} ({s3['requests_source']} + {s3['requests_target']}) | {s3['seconds']} |", "",
        f"Sync 2 / sync 1: {r['ratios']['requests']:.2%} of the requests, {r['ratios']['seconds']:.2%} of the time "
        f"(target <= 5% for both: {ok}).", "",
        f"Window (default overlap, {s2['window']['overlap_minutes']} minutes): sync 2 read "
        f"{s2['window']['runs_read']} runs and left out {s2['window']['settled_runs_left_out']} it already held "
        f"finished; sync 3 read {s3['window']['runs_read']} and left out {s3['window']['settled_runs_left_out']}.", "",
    ]
    if "snapshot_create" not in r:
        return "\n".join([*lines, "Snapshots: not measured in this run (--skip-snapshot).", ""])
    v1, v4, sha = r["verify_workers_1"], r["verify_workers_4"], r["sha256sum"]
    snap, restore = r["snapshot_create"], r["restore"]
    return "\n".join([
        *lines,
        "## Snapshot verify throughput", "",
        f"Snapshot: {snap['files']} files, {snap['total_bytes']:,} bytes, created in {snap['seconds']} s. "
        f"Verify recomputes the sha256 of every blob ({v4['checked_files']} distinct blobs, {v4['checked_bytes']:,} bytes).", "",
        "| tool | seconds | MB/s |", "|---|---|---|",
        f"| `snapshot verify --workers 1` | {v1['seconds']} | {v1['mb_per_second']} |",
        f"| `snapshot verify --workers 4` | {v4['seconds']} | {v4['mb_per_second']} |",
        f"| `sha256sum` (same {sha['files']} files) | {sha['seconds']} | {sha['mb_per_second']} |", "",
        "## Restore (recovery time for this size)", "",
        f"`snapshot restore` of that snapshot into an empty server: {restore['seconds']} s, "
        f"{restore['requests_target']} requests at the target; count check differences: "
        f"{restore['count_check']['differences'] or 'none'}.", "",
    ])


if __name__ == "__main__":
    sys.exit(main())
