"""Is this directory a Hugging Face checkpoint MLflow can log *and load*? Checked in milliseconds.

``mlflow.transformers.log_model`` from a directory succeeds on a wrong task, corrupt or missing
weights and missing tokenizer files; they only fail at load time (field notes). Everything here
reads file headers and small JSON files: weights are never loaded, ``training_args.bin`` (a
pickle) is never opened.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow_sync.convert.errors import InvalidCheckpoint, TaskMismatch

# Architecture class-name suffix -> the pipeline tasks it can serve (first = inferred default).
_SEQ2SEQ_TASKS = ("text2text-generation", "summarization", "translation")
_SUFFIX_TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ForSequenceClassification", ("text-classification",)),
    ("ForTokenClassification", ("token-classification",)),
    ("ForQuestionAnswering", ("question-answering",)),
    ("ForMaskedLM", ("fill-mask",)),
    ("ForCausalLM", ("text-generation",)),
    ("LMHeadModel", ("text-generation",)),  # GPT2LMHeadModel, OpenAIGPTLMHeadModel, CTRLLMHeadModel...
    ("ForSeq2SeqLM", _SEQ2SEQ_TASKS),
)
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
SUPPORTED_TASKS = tuple(dict.fromkeys(task for _, tasks in _SUFFIX_TASKS for task in tasks))

TOKENIZER_VOCABULARIES = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("tokenizer.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
)

# safetensors dtype -> bytes per element
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    architecture: str
    model_type: str | None
    task: str
    weight_format: str  # "safetensors" or "pytorch"
    weight_files: tuple[str, ...]
    weight_bytes: int
    tensors: int
    tokenizer_files: tuple[str, ...]
    uses_sentencepiece: bool = False
    extra_files: tuple[str, ...] = field(default=())


def find_checkpoint_root(directory: Path) -> Path:
    """The directory holding config.json: the root, or a single top-level folder in the tarball."""
    if (directory / "config.json").is_file():
        return directory
    children = [child for child in directory.iterdir() if not child.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir() and (children[0] / "config.json").is_file():
        return children[0]
    raise InvalidCheckpoint(f"no config.json in the checkpoint (found: {_listing(directory)})")


def inspect_checkpoint(directory: str | Path, task: str | None = None) -> Checkpoint:
    """Check layout, weights' headers and tokenizer; infer ``task`` or check that it fits."""
    root = find_checkpoint_root(Path(directory))
    config = _read_json(root / "config.json", "config.json")
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise InvalidCheckpoint(
            "config.json has no 'architectures' list (MLflow cannot tell which model class to load)"
        )
    architecture = architectures[0]
    resolved_task = resolve_task(architecture, task, is_encoder_decoder=bool(config.get("is_encoder_decoder")))
    weight_format, weight_files, weight_bytes, tensors = check_weights(root)
    tokenizer_files = check_tokenizer(root)
    extras = tuple(sorted(p.name for p in root.iterdir() if p.name in ("training_args.bin", "processor_config.json")))
    return Checkpoint(
        path=root,
        architecture=architecture,
        model_type=config.get("model_type"),
        task=resolved_task,
        weight_format=weight_format,
        weight_files=weight_files,
        weight_bytes=weight_bytes,
        tensors=tensors,
        tokenizer_files=tokenizer_files,
        uses_sentencepiece=any(name.endswith(".model") for name in tokenizer_files),
        extra_files=extras,
    )


# -- task ----------------------------------------------------------------------------------------


def tasks_for_architecture(architecture: str, *, is_encoder_decoder: bool = False) -> tuple[str, ...]:
    for suffix, tasks in _SUFFIX_TASKS:
        if architecture.endswith(suffix):
            return tasks
    if architecture.endswith("ForConditionalGeneration") and is_encoder_decoder:
        return _SEQ2SEQ_TASKS  # T5, BART, Pegasus, Marian...
    return ()


def resolve_task(architecture: str, task: str | None, *, is_encoder_decoder: bool = False) -> str:
    """The task to log with: ``task`` if the architecture can serve it, else inferred."""
    fitting = tasks_for_architecture(architecture, is_encoder_decoder=is_encoder_decoder)
    if task is None:
        if not fitting:
            raise TaskMismatch(
                f"cannot infer a task for architecture {architecture}: pass --task (supported text tasks: "
                f"{', '.join(SUPPORTED_TASKS)})"
            )
        return fitting[0]
    canonical = TASK_ALIASES.get(task, task)
    base = "translation" if canonical.startswith("translation_") else canonical
    if base not in SUPPORTED_TASKS:
        raise TaskMismatch(f"unsupported task {task!r} (supported: {', '.join(SUPPORTED_TASKS)})")
    if base not in fitting:
        allowed = ", ".join(fitting) if fitting else "none of the supported text tasks"
        raise TaskMismatch(f"task {task!r} does not fit architecture {architecture} (it serves: {allowed})")
    return canonical


# -- weights -------------------------------------------------------------------------------------


def check_weights(root: Path) -> tuple[str, tuple[str, ...], int, int]:
    """(format, files, total bytes, tensors), after checking every weight file's header."""
    for index_name, fmt in (("model.safetensors.index.json", "safetensors"), ("pytorch_model.bin.index.json", "pytorch")):
        if (root / index_name).is_file():
            index = _read_json(root / index_name, index_name)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise InvalidCheckpoint(f"{index_name} has no weight_map")
            shards = tuple(sorted(set(weight_map.values())))
            for shard in shards:
                if "/" in shard or "\\" in shard or not (root / shard).is_file():
                    raise InvalidCheckpoint(f"{index_name} names shard {shard!r}, which is not in the checkpoint")
            return fmt, shards, *_check_files(root, shards, fmt)
    if (root / "model.safetensors").is_file():
        return "safetensors", ("model.safetensors",), *_check_files(root, ("model.safetensors",), "safetensors")
    if (root / "pytorch_model.bin").is_file():
        return "pytorch", ("pytorch_model.bin",), *_check_files(root, ("pytorch_model.bin",), "pytorch")
    raise InvalidCheckpoint(
        "no weights in the checkpoint: expected model.safetensors, pytorch_model.bin or a sharded index "
        f"(found: {_listing(root)})"
    )


def _check_files(root: Path, names: tuple[str, ...], fmt: str) -> tuple[int, int]:
    total_bytes = tensors = 0
    for name in names:
        path = root / name
        total_bytes += path.stat().st_size
        tensors += check_safetensors_header(path) if fmt == "safetensors" else check_pytorch_archive(path)
    return total_bytes, tensors


def check_safetensors_header(path: Path) -> int:
    """Validate a .safetensors file's header against its size; return the number of tensors.

    Reads the 8-byte length and the JSON header only: dtypes known, each tensor's byte range
    matches its shape and lies inside the file, and the ranges cover the data exactly (so a
    truncated or padded file is caught).
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidCheckpoint(f"{path.name} is corrupt: {size} bytes, too short for a safetensors header")
        (header_length,) = struct.unpack("<Q", prefix)
        if header_length > _MAX_HEADER_BYTES or 8 + header_length > size:
            raise InvalidCheckpoint(f"{path.name} is corrupt: header length {header_length} does not fit the file")
        raw_header = handle.read(header_length)
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidCheckpoint(f"{path.name} is corrupt: its header is not JSON") from None
    if not isinstance(header, dict):
        raise InvalidCheckpoint(f"{path.name} is corrupt: its header is not a JSON object")
    data_bytes = size - 8 - header_length
    covered = 0
    count = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            elements = math.prod(int(dim) for dim in shape)
        except (KeyError, TypeError, ValueError):
            raise InvalidCheckpoint(f"{path.name} is corrupt: tensor {name!r} has a malformed header entry") from None
        if dtype not in _DTYPE_BYTES:
            raise InvalidCheckpoint(f"{path.name}: tensor {name!r} has unknown dtype {dtype!r}")
        if not (0 <= begin <= end <= data_bytes) or end - begin != elements * _DTYPE_BYTES[dtype]:
            raise InvalidCheckpoint(
                f"{path.name} is corrupt or truncated: tensor {name!r} does not fit the file's data "
                f"({data_bytes} bytes)"
            )
        covered = max(covered, end)
        count += 1
    if count == 0:
        raise InvalidCheckpoint(f"{path.name} holds no tensors")
    if covered != data_bytes:
        raise InvalidCheckpoint(f"{path.name} is corrupt: {data_bytes - covered} bytes beyond the last tensor")
    return count


def check_pytorch_archive(path: Path) -> int:
    """A torch.save zip archive with a pickle and tensor records (read from the zip directory only)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        raise InvalidCheckpoint(f"{path.name} is not a torch.save archive (corrupt or legacy format)") from None
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise InvalidCheckpoint(f"{path.name} is not a torch.save archive (no data.pkl)")
    return sum(1 for name in names if "/data/" in name)


# -- tokenizer -----------------------------------------------------------------------------------


def check_tokenizer(root: Path) -> tuple[str, ...]:
    """The tokenizer files present; a checkpoint without a vocabulary is refused."""
    for group in TOKENIZER_VOCABULARIES:
        if all((root / name).is_file() and (root / name).stat().st_size > 0 for name in group):
            if group == ("tokenizer.json",):
                _check_tokenizer_json(root / "tokenizer.json")
            present = [name for name in ("tokenizer_config.json", "special_tokens_map.json") if (root / name).is_file()]
            return (*group, *present)
    raise InvalidCheckpoint(
        "no tokenizer in the checkpoint: expected tokenizer.json, vocab.txt, vocab.json + merges.txt or a "
        f"SentencePiece model (found: {_listing(root)})"
    )


def _check_tokenizer_json(path: Path) -> None:
    document = _read_json(path, "tokenizer.json")
    vocabulary = (document.get("model") or {}).get("vocab")
    if not vocabulary:
        raise InvalidCheckpoint("tokenizer.json has an empty vocabulary")


# -- helpers -------------------------------------------------------------------------------------


def _read_json(path: Path, label: str) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidCheckpoint(f"{label} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidCheckpoint(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidCheckpoint(f"{label} is not a JSON object")
    return document


def _listing(directory: Path, limit: int = 8) -> str:
    names = sorted(p.name for p in directory.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
