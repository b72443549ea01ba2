"""Where a rate-limited ``mlflow-sync migrate`` spends its time, phase by phase, and who is busy.

    .venv/bin/python benchmarks/migrate/rate_phases.py --runs 200 --max-rps 25
    .venv/bin/python benchmarks/migrate/rate_phases.py --runs 200 --max-rps 10
    .venv/bin/python benchmarks/migrate/rate_phases.py --runs 200 --max-rps 25 --backend postgresql --server-workers 2

Builds bench_migrate's dataset on a fresh source, throttles both servers' proxies like
bench_migrate's rate leg, runs ``mlflow-sync migrate --max-rps R`` and splits the proxies'
request logs into export, import and validation (the tool's own request counters say how many
of each side's requests were export/import). For each phase: seconds against requests / R,
requests per 2 s window, and the CPU cores used by the source server, the target server, the
tool and the harness (proxies), sampled every second. A phase at its budget shows full windows;
a server near one core is what sets the pace instead.

Appends one section per configuration to ``rate-phases/results.md`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_migrate as bench  # noqa: E402

from tests.harness import MlflowServer, MotoServer  # noqa: E402

WINDOW = 2.0  # seconds per timeline bucket


class CpuSampler:
    """CPU seconds of named processes, sampled once a second; children count with their parent
    except for ``own_only`` names (the harness process is every server's parent)."""

    def __init__(self, processes: dict[str, psutil.Process], own_only: tuple[str, ...] = ("harness",)):
        self.processes = processes
        self.own_only = own_only
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _seconds(self, process: psutil.Process, children: bool) -> float:
        total = 0.0
        for p in [process, *(process.children(recursive=True) if children else [])]:
            try:
                times = p.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            row = {"t": time.monotonic()}
            row.update({name: self._seconds(p, name not in self.own_only) for name, p in self.processes.items()})
            self.samples.append(row)
            time.sleep(1.0)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores(self, start: float, end: float) -> dict[str, float]:
        rows = [r for r in self.samples if start <= r["t"] <= end]
        if len(rows) < 2:
            return {}
        span = rows[-1]["t"] - rows[0]["t"]
        return {name: round((rows[-1][name] - rows[0][name]) / span, 2) for name in self.processes}


def timeline(arrivals: list[float], start: float, end: float) -> list[int]:
    buckets = [0] * max(1, int((end - start) / WINDOW) + 1)
    for at in arrivals:
        if start <= at <= end:
            buckets[int((at - start) / WINDOW)] += 1
    return buckets


def measure(args) -> dict:
    work = args.work_dir / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    work.mkdir(parents=True)
    server = {"backend": args.backend, "workers": args.server_workers}
    with MotoServer(work / "moto") as moto:
        moto.make_bucket()
        with MlflowServer(moto, workdir=bench._mkdir(work / "source"), **server).start() as source, \
                MlflowServer(moto, workdir=bench._mkdir(work / "target"), **server).start() as target:
            logging.disable(logging.WARNING)  # the builder's MLflow client is chatty
            bench.build_dataset(source.direct_url, args.runs, experiments=5, models=2, versions=2, workers=4)
            logging.disable(logging.NOTSET)
            for s in (source, target):
                s.proxy.faults = bench.TokenBucket(args.max_rps, 2 * args.max_rps)
                s.counter.reset()
            command = [str(bench.BIN / "mlflow-sync"), "migrate", "--source", source.url, "--target", target.url,
                       "--work-dir", str(work / "migrate"), "--max-rps", str(args.max_rps), *args.tool_args]
            processes = {"source": psutil.Process(source._process.pid), "target": psutil.Process(target._process.pid),
                         "harness": psutil.Process()}
            started = time.monotonic()
            with open(work / "migrate.log", "wb") as log_file:
                child = subprocess.Popen(command, env=bench.tool_env(moto), cwd=work, stdout=log_file,
                                         stderr=subprocess.STDOUT)
                tool = psutil.Process(child.pid)
                with CpuSampler({**processes, "tool": tool}) as sampler:
                    exit_code = child.wait()
            wall = time.monotonic() - started
            report = json.loads((work / "migrate" / "report.json").read_text())
            source_log = sorted(r.arrival for r in source.counter.snapshot())
            target_log = sorted(r.arrival for r in target.counter.snapshot())
    n_export, n_import = (sum(report["requests"][side].values()) for side in ("source", "target"))
    export_end, import_start, import_end = source_log[n_export - 1], target_log[0], target_log[n_import - 1]
    validation = (source_log[n_export:], target_log[n_import:])
    validation_start = min(side[0] for side in validation)
    validation_end = max(side[-1] for side in validation)
    validation_requests = max(len(side) for side in validation)
    phases = {
        "export": {"seconds": export_end - source_log[0], "requests": n_export,
                   "timeline": timeline(source_log, source_log[0], export_end),
                   "cores": sampler.cores(source_log[0], export_end)},
        "import": {"seconds": import_end - import_start, "requests": n_import,
                   "timeline": timeline(target_log, import_start, import_end),
                   "cores": sampler.cores(import_start, import_end)},
        "validation": {"seconds": validation_end - validation_start, "requests": validation_requests,
                       "timeline": [a + b for a, b in zip(*(timeline(side, validation_start, validation_end)
                                                          for side in validation))],
                       "cores": sampler.cores(validation_start, validation_end)},
    }
    for phase in phases.values():
        phase["ideal"] = phase["requests"] / args.max_rps
        phase["seconds"] = round(phase["seconds"], 1)
    needed = n_export + n_import + validation_requests
    return {
        "command": " ".join([".venv/bin/python", "benchmarks/migrate/rate_phases.py", *sys.argv[1:]]),
        "date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "runs": args.runs, "max_rps": args.max_rps, "servers": server, "exit_code": exit_code,
        "wall_seconds": round(wall, 1), "ideal_seconds": round(needed / args.max_rps, 1),
        "before_first_request": round(source_log[0] - started, 1),
        "after_last_request": round(started + wall - validation_end, 1), "phases": phases,
    }


def markdown(result: dict) -> str:
    servers = result["servers"]
    lines = [
        f"## {result['runs']} runs at --max-rps {result['max_rps']}: {servers['backend']}, "
        f"{servers['workers']} server worker(s)", "",
        f"`{result['command']}` ({result['date']}, load average at the end {result['load_average']}; "
        f"exit code {result['exit_code']})", "",
        f"Wall {result['wall_seconds']} s against an ideal of {result['ideal_seconds']} s "
        f"({result['wall_seconds'] / result['ideal_seconds']:.3f}x); {result['before_first_request']} s before "
        f"the first request (start-up), {result['after_last_request']} s after the last (reports).", "",
        "| phase | seconds | requests / max-rps | ratio | cores: source / target / tool / harness |",
        "|---|---|---|---|---|",
    ]
    for name, phase in result["phases"].items():
        cores = phase["cores"]
        lines.append(f"| {name} | {phase['seconds']} | {phase['ideal']:.1f} | {phase['seconds'] / phase['ideal']:.2f} "
                     f"| {' / '.join(str(cores.get(k, '-')) for k in ('source', 'target', 'tool', 'harness'))} |")
    lines.append("")
    for name, phase in result["phases"].items():
        sides = 2 if name == "validation" else 1
        lines.append(f"- {name}, requests per {WINDOW:.0f} s (budget {sides * WINDOW * result['max_rps']:.0f}"
                     f"{', both sides' if sides == 2 else ''}): {' '.join(map(str, phase['timeline']))}")
    return "\n".join(lines) + "\n\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--max-rps", type=float, default=25)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "work" / "rate-phases")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "rate-phases" / "results.md")
    parser.add_argument("tool_args", nargs="*", help="more mlflow-sync migrate options, after --")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = measure(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not args.output.exists():
        args.output.write_text("# Rate-limited migrate, phase by phase\n\nWritten by `rate_phases.py` (see its "
                               "docstring); one section per run, newest last.\n\n")
    with open(args.output, "a") as out:
        out.write(markdown(result))
    with open(args.output.with_suffix(".jsonl"), "a") as out:
        out.write(json.dumps(result) + "\n")
    print(markdown(result))
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
