"""Benchmark: validate N runs (params + latest metrics, no histories) between two local servers.

    python benchmarks/validate/bench_validate.py --runs 10000

Starts moto and two harness MLflow servers (sqlite), fills the source's database directly
(inserting 10,000 runs through the API would take longer than the validation being measured),
makes the target a faithful copy (same rows plus the importer's source-id tag), then runs
``validate --checks experiments,runs`` and records requests per side and wall time, with the
command and the machine, in benchmarks/validate/results.md. Targets: ~runs/1000 search pages
plus a constant per side; < 60 s on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mlflow_sync.connection import connect  # noqa: E402
from mlflow_sync.identity import RUN_ID_TAG  # noqa: E402
from mlflow_sync.validate import ValidateOptions, validate  # noqa: E402
from tests.harness import MlflowServer, MotoServer, aws_env  # noqa: E402

PARAMS, METRICS = 5, 3
T0 = 1_700_000_000_000


def fill(server: MlflowServer, experiment_id: str, runs: list[str], *, source_tag: bool) -> None:
    """Insert runs with params, latest metrics (and their one history point) and tags via SQL."""
    database = server.database
    mark = database.placeholder
    connection = database.connect()
    try:
        cursor = connection.cursor()
        cursor.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES "
            f"({', '.join([mark] * 13)})",
            [(run_id, f"run-{i}", "LOCAL", "", "", "bench", "FINISHED", T0 + i, T0 + i + 1000, "", "active",
              f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts", int(experiment_id))
             for i, run_id in enumerate(runs)])
        cursor.executemany(f"INSERT INTO params (key, value, run_uuid) VALUES ({mark}, {mark}, {mark})",
                           [(f"p{k}", f"{i}.{k}", run_id) for i, run_id in enumerate(runs) for k in range(PARAMS)])
        metric_rows = [(f"m{k}", i * 0.001 + k, T0 + i, 0, False, run_id)
                       for i, run_id in enumerate(runs) for k in range(METRICS)]
        for table in ("latest_metrics", "metrics"):
            cursor.executemany(f"INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid) VALUES "
                               f"({', '.join([mark] * 6)})", metric_rows)
        tags = [("mlflow.runName", f"run-{i}", run_id) for i, run_id in enumerate(runs)]
        if source_tag:
            tags += [(RUN_ID_TAG, run_id, run_id) for run_id in runs]
        cursor.executemany(f"INSERT INTO tags (key, value, run_uuid) VALUES ({mark}, {mark}, {mark})", tags)
        connection.commit()
    finally:
        connection.close()


def machine() -> str:
    import mlflow

    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        memory = f", {total_kb / 1024 / 1024:.1f} GiB RAM"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.machine()}, {os.cpu_count()} CPUs (shared){memory}, 1-minute load average {load:.1f} after the run; "
            f"Python {platform.python_version()}, MLflow {mlflow.__version__}; both servers SQLite, "
            "1 uvicorn worker each, on 127.0.0.1 behind the harness's counting proxy")


def render(result: dict) -> str:
    command = "python benchmarks/validate/bench_validate.py " + shlex.join(sys.argv[1:])
    per_side = "\n".join(f"| {side} | {result[f'requests_{side}']} | " + ", ".join(
        f"{endpoint} x{count}" for endpoint, count in result["requests_by_endpoint"][side].items()) + " |"
        for side in ("source", "target"))
    return f"""# validate benchmark: {result['runs']:,} runs between two local servers

Command (from the repository root, venv active): `{command.strip()}`

Machine: {result['machine']}. Timings on this shared machine are noisy.

Data: {result['runs']:,} runs in one experiment on each side, {result['params_per_run']} params and
{result['metrics_per_run']} metrics per run; the target is a faithful copy (same rows plus the importer's
source-id tag). Validation: `--checks {','.join(result['checks'])}` (params, tags, attributes and latest
metrics; no histories, no artifacts), {result['workers']} workers.

| result | value |
|--------|-------|
| wall time | {result['wall_seconds']} s (target < 60 s) |
| verdict | {'OK (every run matched)' if result['ok'] else 'MISMATCH'} |
| objects compared | {result['objects_compared']:,} |
| requests at the source | {result['requests_source']} |
| requests at the target | {result['requests_target']} (target: ~{result['runs'] // 1000} search pages + a constant) |

| side | requests | by endpoint |
|------|----------|-------------|
{per_side}

Raw result:

```json
{json.dumps(result, indent=2)}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as work, MotoServer(Path(work)) as moto:
        os.environ.update(aws_env(moto))
        moto.make_bucket()
        with MlflowServer(moto).start() as source_server, MlflowServer(moto).start() as target_server:
            runs = [uuid.uuid4().hex for _ in range(args.runs)]
            with connect(source_server.url, role="source") as source, \
                    connect(target_server.url, role="target") as target:
                for side, server, tagged in ((source, source_server, False), (target, target_server, True)):
                    experiment_id = side.client.create_experiment("bench")
                    fill(server, experiment_id, runs, source_tag=tagged)
                source_server.counter.reset()
                target_server.counter.reset()
                started = time.monotonic()
                report = validate(source, target, ValidateOptions(checks=("experiments", "runs"),
                                                                  workers=args.workers))
                seconds = time.monotonic() - started
            result = {
                "runs": args.runs,
                "params_per_run": PARAMS,
                "metrics_per_run": METRICS,
                "checks": ["experiments", "runs"],
                "workers": args.workers,
                "machine": machine(),
                "wall_seconds": round(seconds, 2),
                "ok": report.ok,
                "objects_compared": len(report.results),
                "requests_source": source_server.counter.total,
                "requests_target": target_server.counter.total,
                "requests_by_endpoint": report.requests,
                "target_requests_goal": f"~{args.runs // 1000} search pages + a constant",
            }
    args.output.write_text(render(result))
    print(json.dumps(result, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
