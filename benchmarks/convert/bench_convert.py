"""Benchmark: `convert hf-tarball` on >= 1 GB random-weight checkpoints vs plain download + extract + upload.

    python benchmarks/convert/bench_convert.py            # sizes 0.55 and 1.1 GB (GPT-2 shapes, float32)

For each size: builds a GPT-2 checkpoint from a config (weights streamed into model.safetensors
in chunks, never held in memory), tars it the SageMaker way, puts it in moto's S3, starts a harness
MLflow server whose clients write artifacts straight to that S3, then runs, each in its own process
(peak RSS from wait4):

- baseline: boto3 download + extract + upload of the extracted files (= the artifact bytes),
  then tar.gz + upload of them (= what the reference script's repack does);
- `mlflow-sync convert hf-tarball` without and with --repack-to.

Targets: converter peak RSS flat in model size and < 1 GB; wall time <= 1.5x the baseline doing the
same transfers. Results: benchmarks/convert/results.md. Big files live in benchmarks/work/ and are
deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.harness import DEFAULT_BUCKET, MlflowServer, MotoServer, aws_env  # noqa: E402

MB = 1024**2
GB = 1024**3
CHUNK_FLOATS = 8 * MB  # 32 MB of float32 per write
N_EMBD, N_HEAD = 1024, 16


# -- the checkpoint ------------------------------------------------------------------------------


def gpt2_config(vocab_size: int, n_layer: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=N_EMBD, n_layer=n_layer, n_head=N_HEAD,
                      bos_token_id=0, eos_token_id=0, architectures=["GPT2LMHeadModel"])


def layers_for(size_bytes: int, vocab_size: int) -> int:
    per_layer = sum(_numel(shape) for name, shape in _tensor_shapes(gpt2_config(vocab_size, 1)) if ".h.0." in name) * 4
    return max(1, round(size_bytes / per_layer))


def _numel(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def _tensor_shapes(config) -> list[tuple[str, tuple[int, ...]]]:
    """What save_pretrained would write (tied lm_head left out), from a model on the meta device."""
    import torch
    from transformers import GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    shapes = [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]
    return [(name, shape) for name, shape in shapes if not (config.tie_word_embeddings and name == "lm_head.weight")]


def write_random_safetensors(path: Path, shapes: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """Stream N(0, 0.02) float32 weights to a safetensors file, chunk by chunk."""
    import numpy as np

    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes:
        size = _numel(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        for _, shape in shapes:
            remaining = _numel(shape)
            while remaining:
                count = min(remaining, CHUNK_FLOATS)
                handle.write((rng.standard_normal(count, dtype=np.float32) * 0.02).tobytes())
                remaining -= count
    return path.stat().st_size


def build_checkpoint(directory: Path, size_bytes: int) -> dict:
    """A GPT-2 checkpoint of about ``size_bytes`` with the files of a SageMaker training job."""
    from tests.convert.fixtures import build_causal_lm

    build_causal_lm(directory)  # tokenizer files and SageMaker extras; its tiny weights are replaced
    vocab_size = json.loads((directory / "config.json").read_text())["vocab_size"]
    config = gpt2_config(vocab_size, layers_for(size_bytes, vocab_size))
    config.to_json_file(directory / "config.json")
    weights = write_random_safetensors(directory / "model.safetensors", _tensor_shapes(config))
    return {"n_layer": config.n_layer, "n_embd": N_EMBD, "weights_bytes": weights}


# -- the measured processes ----------------------------------------------------------------------


def run_measured(argv: list[str], env: dict, logs: Path) -> dict:
    """Run a process to its end; its wall time, peak RSS (wait4 on exactly that process) and stdout."""
    out, err = logs / "stdout", logs / "stderr"
    started = time.monotonic()
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    seconds = time.monotonic() - started
    if process.returncode:
        raise RuntimeError(f"{shlex.join(argv)} exited {process.returncode}:\n{err.read_text()[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024), "stdout": out.read_text()}


def baseline(source: str, upload_prefix: str, tarball_uri: str, workdir: str) -> None:
    """Plain transfers, in this process: download, extract, upload the files, then tar.gz + upload."""
    from mlflow_sync import s3

    work = Path(workdir)
    phases, started = {}, time.monotonic()
    tarball = work / "model.tar.gz"
    s3.download_file(source, tarball)
    phases["download"] = time.monotonic() - started
    extracted = work / "extracted"
    with tarfile.open(tarball) as archive:
        archive.extractall(extracted, filter="data")
    tarball.unlink()
    phases["extract"] = time.monotonic() - started - sum(phases.values())
    for path in sorted(extracted.iterdir()):
        s3.upload_file(path, f"{upload_prefix}/{path.name}")
    phases["upload"] = time.monotonic() - started - sum(phases.values())
    repacked = work / "mlflow-model.tar.gz"
    with tarfile.open(repacked, "w:gz", compresslevel=1) as archive:  # as the converter's repack
        for path in sorted(extracted.iterdir()):
            archive.add(path, arcname=path.name)
    s3.upload_file(repacked, tarball_uri)
    phases["repack"] = time.monotonic() - started - sum(phases.values())
    print(json.dumps({name: round(value, 1) for name, value in phases.items()}))


def measure_size(size_gb: float, work: Path, moto: MotoServer, server: MlflowServer, env: dict) -> dict:
    from tests.convert.fixtures import sagemaker_tarball

    s3 = moto.boto3_client("s3")
    label = f"{size_gb:g}gb"
    checkpoint = work / f"checkpoint-{label}"
    built = build_checkpoint(checkpoint, int(size_gb * GB))
    tarball = sagemaker_tarball(checkpoint, work / f"model-{label}.tar.gz", compresslevel=1)
    shutil.rmtree(checkpoint)
    key = f"bench/{label}/output/model.tar.gz"
    s3.upload_file(str(tarball), DEFAULT_BUCKET, key)
    tarball_bytes = tarball.stat().st_size
    tarball.unlink()
    source = f"s3://{DEFAULT_BUCKET}/{key}"
    cli = str(Path(sys.executable).with_name("mlflow-sync"))
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    result = {"size_gb": size_gb, **built, "tarball_bytes": tarball_bytes}

    plain = run_measured([sys.executable, __file__, "--baseline", source, f"s3://{DEFAULT_BUCKET}/bench/{label}/plain",
                          f"s3://{DEFAULT_BUCKET}/bench/{label}/plain.tar.gz", str(scratch)], env, work)
    phases = json.loads(plain.pop("stdout"))
    result["baseline"] = {**plain, "phases": phases,
                          "without_repack_seconds": round(phases["download"] + phases["extract"] + phases["upload"], 1)}
    shutil.rmtree(scratch)
    scratch.mkdir()
    for variant, extra in (("convert", []), ("convert_repack", ["--repack-to",
                                                                f"s3://{DEFAULT_BUCKET}/bench/{label}/mlflow-model.tar.gz"])):
        measured = run_measured([cli, "convert", "hf-tarball", source, "--target", server.url, "-n", f"bench-{label}",
                                 "--work-dir", str(scratch), "--json", *extra], env, work)
        report = json.loads(measured.pop("stdout"))
        result[variant] = {**measured, "version": report["version"], "task": report["task"]}
    _empty_bucket(s3)  # moto keeps objects in memory
    return result


def _empty_bucket(s3) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=DEFAULT_BUCKET):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=DEFAULT_BUCKET, Key=item["Key"])


# -- report --------------------------------------------------------------------------------------


def machine() -> str:
    import mlflow
    import transformers

    total_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return (f"{platform.machine()}, {os.cpu_count()} CPUs shared with other engineers' jobs, "
            f"{total_kb / 1024 / 1024:.1f} GiB RAM, 1-minute load average {os.getloadavg()[0]:.1f} after the run; "
            f"Python {platform.python_version()}, MLflow {mlflow.__version__}, transformers {transformers.__version__}; "
            "moto S3 and one harness MLflow server (SQLite, clients write artifacts to S3) on 127.0.0.1")


def render(results: list[dict], command: str) -> str:
    rows = []
    for r in results:
        b = r["baseline"]
        rows.append(
            f"| {r['weights_bytes'] / GB:.2f} GB ({r['n_layer']} layers) "
            f"| {b['without_repack_seconds']} s / {b['seconds']} s "
            f"| {r['convert']['seconds']} s ({r['convert']['seconds'] / b['without_repack_seconds']:.2f}x) "
            f"| {r['convert_repack']['seconds']} s ({r['convert_repack']['seconds'] / b['seconds']:.2f}x) "
            f"| {b['peak_rss_mb']} MB | {r['convert']['peak_rss_mb']} MB | {r['convert_repack']['peak_rss_mb']} MB |")
    return f"""# convert benchmark: random-weight GPT-2 checkpoints from S3 into MLflow

Command (from the repository root, venv active): `{command}`

Machine: {machine()}. Timings on this shared, loaded machine are noisy; compare the ratios.

Each checkpoint: GPT-2 shapes (n_embd {N_EMBD}), float32 random weights written straight to
model.safetensors, plus the tokenizer files and SageMaker extras, tarred at the archive root
(gzip level 1) and put in moto S3. Baseline (one process): boto3 download + extract + upload of the
extracted files (the same bytes the converter logs), then + tar.gz of them + upload (the same bytes
as --repack-to). Convert: `mlflow-sync convert hf-tarball s3://... --target http://... -n NAME
--work-dir DIR --json [--repack-to s3://.../mlflow-model.tar.gz]`, a new process each.
Peak RSS: ru_maxrss of that process (wait4).

| weights | baseline: no repack / with repack | convert (vs baseline) | convert --repack-to (vs baseline) | baseline RSS | convert RSS | convert --repack-to RSS |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Targets: converter peak RSS flat in model size and < 1 GB; wall time <= 1.5x the baseline.

Raw results:

```json
{json.dumps(results, indent=2)}
```
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.55, 1.1])
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "work" / "convert")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results.md"))
    parser.add_argument("--baseline", nargs=4, metavar=("SOURCE", "PREFIX", "TARBALL_URI", "WORKDIR"),
                        help=argparse.SUPPRESS)  # the baseline's own process
    args = parser.parse_args()
    if args.baseline:
        baseline(*args.baseline)
        return 0
    command = "python benchmarks/convert/bench_convert.py " + shlex.join(sys.argv[1:])
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        with MotoServer(args.workdir / "moto") as moto:
            env = {**os.environ, **aws_env(moto), "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                   "DO_NOT_TRACK": "true"}
            os.environ.update(aws_env(moto))
            moto.make_bucket()
            with MlflowServer(moto, artifacts="direct").start() as server:
                for size in args.sizes_gb:
                    results.append(measure_size(size, args.workdir, moto, server, env))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(args.workdir, ignore_errors=True)
    args.output.write_text(render(results, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
