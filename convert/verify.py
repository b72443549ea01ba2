"""Prove a logged model works: its pyfunc predictions equal ``transformers.pipeline`` on the checkpoint."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from mlflow_sync.errors import UsageError

log = logging.getLogger(__name__)

SAMPLE_TEXTS = ["i love this movie", "this film was not good", "hello world"]
GENERATION_TASKS = ("text-generation", "text2text-generation", "summarization", "translation")
VERIFIABLE_TASKS = ("text-classification", *GENERATION_TASKS)
SCORE_TOLERANCE = 1e-4  # batched (padded) and single inputs differ in the last float bits


@dataclass(frozen=True)
class Verification:
    passed: bool
    samples: int
    mismatches: list[dict]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "samples": self.samples, "mismatches": self.mismatches}


def check_verifiable(task: str) -> None:
    """Fail before any work when --verify cannot compare this task's outputs."""
    base = "translation" if task.startswith("translation") else task
    if base not in VERIFIABLE_TASKS:
        raise UsageError(f"--verify supports {', '.join(VERIFIABLE_TASKS)}; not {task!r}")


def verify_model(mlflow_model_dir: Path, checkpoint_dir: Path, task: str, generation: dict | None) -> Verification:
    """Load the MLflow model (pyfunc) and the original checkpoint (pipeline); compare on samples."""
    import mlflow.pyfunc
    import transformers

    check_verifiable(task)
    logged = mlflow.pyfunc.load_model(str(mlflow_model_dir))
    reference = transformers.pipeline(task, model=str(checkpoint_dir))
    got = logged.predict(SAMPLE_TEXTS)
    expected = reference(SAMPLE_TEXTS, **(generation or {}))
    if task == "text-classification":
        mismatches = _compare_classification(got, expected)
    else:
        mismatches = _compare_generation(got, expected)
    return Verification(not mismatches, len(SAMPLE_TEXTS), mismatches)


def _compare_classification(got, expected: list[dict]) -> list[dict]:
    rows = got.to_dict("records") if hasattr(got, "to_dict") else list(got)
    if len(rows) != len(expected):
        return [{"problem": f"{len(rows)} predictions for {len(expected)} inputs"}]
    mismatches = []
    for text, row, reference in zip(SAMPLE_TEXTS, rows, expected):
        same_label = row.get("label") == reference["label"]
        close = math.isclose(float(row.get("score", math.nan)), reference["score"], abs_tol=SCORE_TOLERANCE)
        if not (same_label and close):
            mismatches.append({"input": text, "mlflow": row, "transformers": reference})
    return mismatches


def _compare_generation(got, expected: list) -> list[dict]:
    texts = list(got)
    references = [item[0]["generated_text"] if isinstance(item, list) else item["generated_text"] for item in expected]
    if len(texts) != len(references):
        return [{"problem": f"{len(texts)} predictions for {len(references)} inputs"}]
    return [
        {"input": text, "mlflow": produced, "transformers": reference}
        for text, produced, reference in zip(SAMPLE_TEXTS, texts, references)
        if produced != reference
    ]
