"""`mlflow-sync convert ...`: option parsing and output only; the work is in converter/batch/pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlflow_sync import output
from mlflow_sync.options import ConfigOpt, JsonOpt, MaxRpsOpt, QuietOpt, TargetOpt, VerboseOpt, parse_assignments

convert_app = typer.Typer(
    name="convert",
    help="Turn SageMaker Hugging Face model.tar.gz checkpoints into registered MLflow Transformers models.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

GB = 1024**3


def register(app: typer.Typer) -> None:
    """Mount `convert` (hf-tarball, pipeline) on the root app."""
    app.add_typer(convert_app, name="convert")


@convert_app.command("hf-tarball")
def hf_tarball_command(
    source: Annotated[
        str | None,
        typer.Argument(help="s3://.../model.tar.gz, a local tarball or checkpoint directory, or a model package ARN.",
                       show_default=False),
    ] = None,
    registered_model_name: Annotated[
        str | None, typer.Option("--registered-model-name", "-n", help="MLflow registered model to add a version to.",
                                    show_default=False)
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Pipeline task; inferred from config.json's architectures if omitted.",
                                    show_default=False)
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="Experiment for the conversion runs.")] = "hf-tarball-imports",
    model_package_arn: Annotated[
        str | None, typer.Option("--model-package-arn", help="Convert this SageMaker Model Package's ModelDataUrl.",
                                    show_default=False)
    ] = None,
    repack_to: Annotated[
        str | None, typer.Option("--repack-to", help="Also upload the MLflow model as s3://.../mlflow-model.tar.gz.",
                                    show_default=False)
    ] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Load the logged model and compare its predictions with "
                                         "transformers.pipeline on the checkpoint; register only if they match.")] = False,
    from_list: Annotated[
        Path | None, typer.Option("--from-list", help="Batch: a file with 'SOURCE [NAME [TASK]]' per line.",
                                     show_default=False)
    ] = None,
    model_package_group: Annotated[
        str | None, typer.Option("--model-package-group", help="Batch: every approved version of this Model "
                                    "Package Group, as versions of --registered-model-name.", show_default=False)
    ] = None,
    state_file: Annotated[
        Path | None, typer.Option("--state-file", help="Batch progress file (resume by re-running the command). "
                                     "Default: convert-state.json in the current directory.", show_default=False)
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Generation length fixed in the model "
                                                "config (generation tasks).")] = 64,
    max_extracted_gb: Annotated[float, typer.Option("--max-extracted-gb", min=0.000001, help="Refuse tarballs that "
                                                    "expand to more than this (decompression bombs).")] = 200.0,
    workdir: Annotated[
        Path | None, typer.Option("--work-dir", "-w", help="Where to download and extract (needs ~2x the checkpoint size).",
                                     show_default=False)
    ] = None,
    target: TargetOpt = None,
    max_rps: MaxRpsOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a Hugging Face checkpoint tarball into a registered MLflow Transformers model version.

    The tarball is extracted safely, its layout, weights' headers, tokenizer and task are checked
    before anything is written to the target; the model is logged from the checkpoint directory
    (weights are not loaded), tagged with its source (S3 URI, model package ARN, tarball SHA-256)
    and registered.

    Examples:

    ```
    mlflow-sync convert hf-tarball s3://bucket/job/output/model.tar.gz \\
        --target http://127.0.0.1:5000 -n my-model

    mlflow-sync convert hf-tarball --model-package-arn \\
        arn:aws:sagemaker:us-east-1:123456789012:model-package/grp/3 \\
        --target arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC \\
        -n my-model --verify \\
        --repack-to s3://bucket/mlflow/my-model/mlflow-model.tar.gz

    mlflow-sync convert hf-tarball --from-list models.txt \\
        --target sqlite:///mlflow.db --state-file convert-state.json

    mlflow-sync convert hf-tarball --model-package-group grp \\
        --target http://127.0.0.1:5000 -n my-model
    ```
    """
    from mlflow_sync.config import load_profile
    from mlflow_sync.connection import connect_side
    from mlflow_sync.convert.converter import ConvertOptions, convert
    from mlflow_sync.errors import SyncError, UsageError

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    profile = load_profile(config)
    # Empty values mean "not given": the SageMaker Pipeline passes every parameter, set or not.
    source, task, model_package_arn, repack_to = (value or None for value in (source, task, model_package_arn, repack_to))
    batch_sources = [flag for flag, value in (("--from-list", from_list), ("--model-package-group", model_package_group))
                     if value]
    if batch_sources and (source or model_package_arn):
        raise UsageError(f"{batch_sources[0]} converts many models: do not also give SOURCE or --model-package-arn")
    if len(batch_sources) > 1:
        raise UsageError("give --from-list or --model-package-group, not both")
    if not registered_model_name and not from_list:
        raise UsageError("--registered-model-name is required")
    options = ConvertOptions(
        registered_model_name=registered_model_name or "",
        task=task,
        experiment=experiment,
        repack_to=repack_to,
        verify=verify,
        max_new_tokens=max_new_tokens,
        max_extracted_bytes=int(max_extracted_gb * GB),
        workdir=workdir,
    )
    with connect_side(profile, "target", target, max_rps=max_rps) as server:
        if not batch_sources:
            result = convert(server, source, options, model_package_arn=model_package_arn).as_dict()
            output.emit(result, lambda console: _print_result(console, result))
            return
        from mlflow_sync.convert.batch import StateFile, model_package_group_items, read_list_file, run_batch

        if from_list:
            items = read_list_file(from_list, registered_model_name, task)
        else:
            items = model_package_group_items(model_package_group, registered_model_name, task)
        if repack_to and len(items) > 1:
            raise UsageError("--repack-to names one object; it cannot be used for a batch of several models")
        report = run_batch(server, items, options, StateFile(state_file or Path("convert-state.json")))
    output.emit(report, lambda console: _print_batch(console, report))
    if report["counts"]["failed"]:
        raise SyncError(f"{report['counts']['failed']} of {len(report['models'])} models failed "
                        f"(see above; re-run to retry them, state in {report['state_file']})")


def _print_result(console, result: dict) -> None:
    console.print(f"registered {result['registered_model_name']} version {result['version']}")
    console.print(f"model URI: {result['model_uri']}")
    console.print(f"task: {result['task']} ({result['architecture']}), run {result['run_id']}")
    if result["verification"]:
        console.print(f"verified: predictions match transformers.pipeline on {result['verification']['samples']} samples")
    if result["repacked_to"]:
        console.print(f"MLflow model tarball: {result['repacked_to']}")


def _print_batch(console, report: dict) -> None:
    from rich.table import Table

    table = Table("source", "status", "model", "version / error")
    for entry in report["models"]:
        detail = entry.get("version") if entry["status"] != "failed" else entry["error"]
        table.add_row(entry["source"], entry["status"], entry.get("registered_model_name", ""), str(detail))
    console.print(table)
    counts = report["counts"]
    console.print(f"{counts['registered']} registered, {counts['skipped']} done earlier, {counts['failed']} failed")


@convert_app.command("pipeline")
def pipeline_command(
    image_uri: Annotated[str, typer.Option("--image-uri", help="Processing image built from convert/image/ "
                                           "(entrypoint: mlflow-sync).", show_default=False)],
    role: Annotated[str, typer.Option("--role", help="IAM role ARN of the pipeline and its processing job.",
                                      show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Pipeline name.")] = "HFToMLflowRegistrationPipeline",
    defaults: Annotated[
        list[str] | None, typer.Option("--default", help="NAME=VALUE default of a pipeline parameter "
                                          "(S3ModelArtifact, MLflowTrackingArn, MLflowExperimentName, "
                                          "MLflowRegisteredModelName, HFTask, MlflowModelTarS3Uri, "
                                          "SourceModelPackageArn); repeatable.", show_default=False)
    ] = None,
    instance_type: Annotated[str, typer.Option("--instance-type", help="Processing instance type.")] = "ml.m5.xlarge",
    volume_size_gb: Annotated[int, typer.Option("--volume-size-gb", min=1, help="Processing volume; needs ~3x the "
                                                "checkpoint size.")] = 100,
    max_runtime_hours: Annotated[int, typer.Option("--max-runtime-hours", min=1, max=120,
                                                   help="Stop the processing job after this long.")] = 24,
    verify: Annotated[bool, typer.Option("--verify", help="Run the converter with --verify.")] = False,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: AWS_REGION / profile).",
                                                  show_default=False)] = None,
    output_file: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the definition JSON to this file.",
                                     show_default=False)
    ] = None,
    upsert: Annotated[bool, typer.Option("--upsert", help="Create the pipeline in SageMaker, or update it.")] = False,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Emit the SageMaker Pipeline definition that runs `convert hf-tarball` in a ProcessingStep.

    Prints the definition JSON (or writes it to --output); --upsert also creates or updates the
    pipeline. Needs the SageMaker Python SDK: `pip install 'mlflow-sync[pipeline]'`.

    Examples:

    ```
    ECR=123456789012.dkr.ecr.us-east-1.amazonaws.com
    APP=arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC

    mlflow-sync convert pipeline \\
        --image-uri $ECR/mlflow-sync-convert:0.1.0 \\
        --role arn:aws:iam::123456789012:role/pipeline --region us-east-1 \\
        > pipeline.json

    mlflow-sync convert pipeline \\
        --image-uri $ECR/mlflow-sync-convert:0.1.0 \\
        --role arn:aws:iam::123456789012:role/pipeline --verify --upsert \\
        --default MLflowTrackingArn=$APP
    ```
    """
    from mlflow_sync.convert.pipeline import PipelineSpec, pipeline_definition, upsert_pipeline
    from mlflow_sync.files import write_json

    output.setup(json_output=json_output, verbose=verbose, quiet=quiet)
    spec = PipelineSpec(image_uri=image_uri, role_arn=role, name=name, region=region, instance_type=instance_type,
                        volume_size_gb=volume_size_gb, max_runtime_hours=max_runtime_hours, verify=verify,
                        defaults=parse_assignments(defaults, "--default", "NAME=VALUE, e.g. HFTask=text-classification",
                                                          empty_value=True))
    if upsert:
        result = upsert_pipeline(spec)
        definition = result.pop("definition")
    else:
        result, definition = None, pipeline_definition(spec)
    if output_file:
        write_json(output_file, definition, indent=2)
    if result is not None:
        output.emit(result | {"output": str(output_file) if output_file else None},
                    lambda console: console.print(f"{result['action']} pipeline {result['pipeline_arn']}"))
    elif not output_file:
        output.emit(definition, lambda console: console.print_json(data=definition))
    else:
        output.emit({"output": str(output_file)}, lambda console: console.print(f"wrote {output_file}"))
