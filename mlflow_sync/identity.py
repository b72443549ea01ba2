"""Object identity across servers: the tags that carry a source object's id, and how an object on
one side is paired with the same object on the other.

Every imported run, logged model, trace and evaluation dataset carries its source id in a tag
(mlflow-export-import's names, so that exports of either tool are recognised). An object that kept
its own id (an export directory or snapshot read as a side, a trace created with its id) is its own
source id. Where neither holds, a fingerprint of what the object *is* pairs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

RUN_ID_TAG = "mlflow_exim.run_info.run_id"
"""Source run id on every imported run."""
EXPERIMENT_ID_TAG = "mlflow_exim.experiment_info.experiment_id"
LOGGED_MODEL_ID_TAG = "mlflow_exim.logged_model.model_id"
TRACE_ID_TAG = "mlflow_exim.trace_info.trace_id"
MODEL_VERSION_TAG = "mlflow_exim.model_version_info.version"
PROMPT_VERSION_TAG = "mlflow_exim.prompt_version_info.version"
DATASET_ID_TAG = "mlflow_exim.evaluation_dataset.dataset_id"
"""Source dataset id on every imported evaluation dataset: names need not be unique, so a re-run
finds its earlier copy by this tag."""

REQUEST_ID_TAG = "mlflow_sync.request_id"
"""Idempotency key of a safe create (see transport.py); the source's own keys are not carried."""
PLACEHOLDER_TAG = "mlflow_sync.placeholder"
DROPPED_TAGS = (REQUEST_ID_TAG,)

T = TypeVar("T")


def run_key(run) -> tuple:
    """What pairs a run that carries no id (copied by another tool without tags): name, start, params."""
    return run.name, run.start_time, tuple(sorted(run.params.items()))


def trace_key(trace) -> tuple:
    """What pairs a trace that carries no id: its request time and name."""
    return trace.request_time, trace.name


def pair(source: Iterable[T], target: Iterable[T], *, own_id: Callable[[T], str],
         carried_id: Callable[[T], str | None], source_key: Callable[[T], Hashable],
         target_key: Callable[[T], Hashable]) -> tuple[dict[str, T], list[T]]:
    """Pair source objects with target objects: first by the source id a target object carries
    (``carried_id``, falling back to its ``own_id``), then the rest by fingerprint (``source_key`` of
    a source object equals ``target_key`` of its copy), first come first paired.

    Returns ``({source id: target object}, target objects left unpaired)``."""
    source = list(source)
    wanted = {own_id(obj) for obj in source}
    pairs: dict[str, T] = {}
    by_key: dict[Hashable, list[T]] = defaultdict(list)
    for obj in target:
        copied_from = carried_id(obj) or own_id(obj)
        if copied_from in wanted and copied_from not in pairs:
            pairs[copied_from] = obj
        else:
            by_key[target_key(obj)].append(obj)
    for obj in source:
        if own_id(obj) not in pairs and by_key.get(source_key(obj)):
            pairs[own_id(obj)] = by_key[source_key(obj)].pop(0)
    return pairs, [obj for objs in by_key.values() for obj in objs]
