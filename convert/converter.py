"""One checkpoint -> one registered MLflow Transformers model version.

Order matters for "nothing registered on bad input": every check (source, archive, layout,
weights' headers, tokenizer, task, target reachable) runs before anything is written to the
target; then log -> verify -> repack/upload -> register, inside one run that ends FAILED on
any error, so a version only exists once everything before it succeeded.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from mlflow_sync import output, s3
from mlflow_sync.connection import Server
from mlflow_sync.convert.checkpoint import Checkpoint, inspect_checkpoint
from mlflow_sync.convert.errors import TaskMismatch
from mlflow_sync.convert.extract import DEFAULT_MAX_EXTRACTED_BYTES
from mlflow_sync.convert.sources import Source, materialize, resolve_source
from mlflow_sync.convert.verify import GENERATION_TASKS, check_verifiable, verify_model
from mlflow_sync.errors import MismatchError, UsageError

log = logging.getLogger(__name__)

TAG_PREFIX = "mlflow_sync.convert."
DEFAULT_EXPERIMENT = "hf-tarball-imports"
MODEL_ARTIFACT_NAME = "model"


@dataclass(frozen=True)
class ConvertOptions:
    registered_model_name: str
    task: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    repack_to: str | None = None
    verify: bool = False
    max_new_tokens: int = 64
    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES
    workdir: Path | None = None


@dataclass
class ConvertResult:
    source: str
    registered_model_name: str
    version: str
    model_uri: str
    run_id: str
    task: str
    architecture: str
    tarball_sha256: str | None = None
    model_package_arn: str | None = None
    repacked_to: str | None = None
    verification: dict | None = None
    seconds: float = 0.0
    tags: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def pip_requirements(checkpoint: Checkpoint) -> list[str]:
    """Pinned to what logged the model (MLflow's inference would import torchvision: field notes)."""
    pinned = ["mlflow", "transformers", "torch", "tokenizers", "safetensors"]
    if checkpoint.uses_sentencepiece:
        pinned.append("sentencepiece")
    requirements = []
    for name in pinned:
        try:
            version = metadata.version(name).split("+")[0]  # torch "2.13.0+cpu" -> the portable pin
        except metadata.PackageNotFoundError:
            continue
        requirements.append(f"{name}=={version}")
    return requirements


def generation_config(task: str, max_new_tokens: int) -> dict | None:
    """Deterministic generation, fixed at log time (predict-time params are ignored: field notes)."""
    base = "translation" if task.startswith("translation") else task
    return {"max_new_tokens": max_new_tokens, "do_sample": False} if base in GENERATION_TASKS else None


def check_pipeline_task(task: str) -> None:
    """The installed transformers must have a pipeline for the task (v5 dropped the seq2seq ones)."""
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS

    base = "translation" if task.startswith("translation") else task
    if base not in SUPPORTED_TASKS:
        raise TaskMismatch(f"transformers {transformers.__version__} has no pipeline for task {task!r}")


def convert(
    server: Server, source: str | None, options: ConvertOptions, *, model_package_arn: str | None = None
) -> ConvertResult:
    """Convert one checkpoint; see the module docstring for the order of steps."""
    started = time.monotonic()
    if options.repack_to:
        location = s3.parse_s3_uri(options.repack_to)
        if not location.key or location.key.endswith("/"):
            raise UsageError(f"--repack-to {options.repack_to} must name an object, e.g. s3://bucket/path/mlflow-model.tar.gz")
    if options.workdir:
        Path(options.workdir).mkdir(parents=True, exist_ok=True)
    resolved = resolve_source(source, model_package_arn)
    _import_in_background("transformers.pipelines")  # needed by check_pipeline_task and log_model
    with materialize(resolved, workdir=options.workdir, max_extracted_bytes=options.max_extracted_bytes) as local:
        checkpoint = inspect_checkpoint(local.directory, options.task)
        check_pipeline_task(checkpoint.task)
        if options.verify:
            check_verifiable(checkpoint.task)
        server.check()
        output.info(
            f"checkpoint ok: {checkpoint.architecture}, task {checkpoint.task}, {checkpoint.tensors} tensors, "
            f"{checkpoint.weight_bytes / 1e6:.1f} MB of {checkpoint.weight_format} weights"
        )
        result = _log_and_register(server, resolved, checkpoint, local.sha256, options)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _import_in_background(module: str) -> None:
    """Start importing ``module`` while the checkpoint downloads and extracts.

    torch + transformers' pipelines take tens of seconds to import on a loaded machine (profiled:
    a quarter of a 0.3 GB conversion), and logging needs them anyway. Not a daemon thread: the
    interpreter waits for it instead of exiting mid-import. A failure is left to the real import.
    """

    def load() -> None:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - reported by the import that needs the module
            log.debug("background import of %s failed: %s", module, exc)

    threading.Thread(target=load, name=f"import {module}").start()


class _KeptTransformersFlavor:
    """``mlflow.transformers`` as a ``Model.log`` flavor whose model directory outlives the call.

    ``save_model`` writes into ``directory`` and leaves MLflow a symbolic link to it in MLflow's own
    temporary directory: MLflow finishes (MLmodel rewrites) and uploads that very directory, then
    removes only the link. --repack-to tars these bytes instead of downloading the model back.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.__name__ = "mlflow.transformers"  # what Model.log records as the flavor

    def save_model(self, path: str, **kwargs) -> None:
        import mlflow.transformers

        mlflow.transformers.save_model(path=str(self.directory), **kwargs)
        os.symlink(self.directory, path, target_is_directory=True)


def _provenance_tags(source: Source, checkpoint: Checkpoint, sha256: str | None) -> dict[str, str]:
    tags = {
        f"{TAG_PREFIX}source": source.uri,
        f"{TAG_PREFIX}architecture": checkpoint.architecture,
        f"{TAG_PREFIX}task": checkpoint.task,
        f"{TAG_PREFIX}weight_format": checkpoint.weight_format,
    }
    if sha256:
        tags[f"{TAG_PREFIX}tarball_sha256"] = sha256
    if source.model_package_arn:
        tags[f"{TAG_PREFIX}model_package_arn"] = source.model_package_arn
    return tags


def _experiment_id(server: Server, name: str) -> str:
    experiment = server.client.get_experiment_by_name(name)
    if experiment is None:
        return server.client.create_experiment(name)
    if experiment.lifecycle_stage != "active":
        raise UsageError(f"experiment {name!r} is deleted on the target; restore it or choose another name")
    return experiment.experiment_id


def _log_and_register(
    server: Server, source: Source, checkpoint: Checkpoint, sha256: str | None, options: ConvertOptions
) -> ConvertResult:
    import mlflow
    from mlflow.models import Model

    tags = _provenance_tags(source, checkpoint, sha256)
    generation = generation_config(checkpoint.task, options.max_new_tokens)
    experiment_id = _experiment_id(server, options.experiment)
    scratch = Path(tempfile.mkdtemp(prefix="mlflow-sync-model-", dir=options.workdir))
    try:
        with server.activate(), mlflow.start_run(
            experiment_id=experiment_id, run_name=f"convert-{options.registered_model_name}", tags=tags
        ) as run:
            mlflow.log_params({"task": checkpoint.task, "architecture": checkpoint.architecture})
            output.info(f"logging the checkpoint to {server.display} (run {run.info.run_id})")
            # What mlflow.transformers.log_model does, with the model directory kept for --repack-to.
            model_dir = scratch / "model"
            model_info = Model.log(
                artifact_path=None,
                name=MODEL_ARTIFACT_NAME,
                flavor=_KeptTransformersFlavor(model_dir),
                transformers_model=str(checkpoint.path),
                task=checkpoint.task,
                validate_serving_input=False,  # as log_model for a checkpoint path: no weights in memory
                pip_requirements=pip_requirements(checkpoint),
                model_config=generation,
                tags=tags,
            )
            verification = None
            if options.verify:
                output.info("verifying: pyfunc predictions vs transformers.pipeline on the checkpoint")
                # The proof loads what the server stored, not the local directory.
                stored = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_info.model_uri,
                                                                  dst_path=str(scratch / "download")))
                verification = verify_model(stored, checkpoint.path, checkpoint.task, generation)
                mlflow.set_tag(f"{TAG_PREFIX}verified", str(verification.passed).lower())
                if not verification.passed:
                    first = verification.mismatches[0]
                    raise MismatchError(
                        f"verification failed on {len(verification.mismatches)} of {verification.samples} samples "
                        f"(first: {first}); nothing was registered, run {run.info.run_id} is marked FAILED"
                    )
            if options.repack_to:
                repack(model_dir, scratch / "mlflow-model.tar.gz", options.repack_to)
                mlflow.set_tag(f"{TAG_PREFIX}repacked_to", options.repack_to)
                tags[f"{TAG_PREFIX}repacked_to"] = options.repack_to
            version = mlflow.register_model(model_info.model_uri, options.registered_model_name, tags=tags)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ConvertResult(
        source=source.uri,
        registered_model_name=options.registered_model_name,
        version=str(version.version),
        model_uri=f"models:/{options.registered_model_name}/{version.version}",
        run_id=run.info.run_id,
        task=checkpoint.task,
        architecture=checkpoint.architecture,
        tarball_sha256=sha256,
        model_package_arn=source.model_package_arn,
        repacked_to=options.repack_to,
        verification=verification.as_dict() if verification else None,
        tags=tags,
    )


def repack(model_dir: Path, tarball: Path, destination: str) -> None:
    """Tar the MLflow model directory (MLmodel at the archive root, as SageMaker expects) and upload it.

    Fast gzip: weights barely compress, and level 1 keeps repacking near disk speed.
    """
    output.info(f"repacking the MLflow model to {destination}")
    with tarfile.open(tarball, "w:gz", compresslevel=1) as archive:
        for path in sorted(model_dir.iterdir()):
            archive.add(path, arcname=path.name)
    s3.upload_file(tarball, destination)
    tarball.unlink()

