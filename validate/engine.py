"""The comparison engine: read both sides, match objects, emit one result per object.

Matching rules (documented in docs/validation-report.md):
- experiments by name;
- runs, inside a matched experiment, by the source-id tag the importer writes
  (``mlflow_exim.run_info.run_id``), else by the fingerprint (run name, start time, params);
- logged models by ``mlflow_exim.logged_model.model_id``, else by (name, mapped source run);
- registered models and prompts by name, their versions by number;
- traces by ``mlflow_exim.trace_info.trace_id``, else by (request time, trace name);
- evaluation datasets by ``mlflow_exim.evaluation_dataset.dataset_id`` (a copy names its source), else by name;
- an object whose id is the same on both sides (an export directory or snapshot keeps the
  source's ids) matches that object before any fingerprint is tried.
Ids that differ by design (run ids, model ids, trace ids) are compared through these maps.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase

from mlflow_sync import output
from mlflow_sync.connection import first_line
from mlflow_sync.errors import ConnectionFailure, sync_error_in
from mlflow_sync.identity import DATASET_ID_TAG, LOGGED_MODEL_ID_TAG, RUN_ID_TAG, TRACE_ID_TAG, run_key, trace_key
from mlflow_sync.identity import pair as identity_pair
from mlflow_sync.validate.options import ValidateOptions
from mlflow_sync.validate.reader import SideReader
from mlflow_sync.validate.records import (
    ExperimentRecord,
    LoggedModelRecord,
    MetricPoint,
    RunRecord,
    TraceRecord,
)
from mlflow_sync.validate.results import ObjectResult, Report, Status

log = logging.getLogger(__name__)

SERIES_LIMIT = 5000  # points per side kept for a chart
BULK_READS_IN_FLIGHT = 4  # both sides together


def floats_match(a, b, tolerance: float) -> bool:
    """NaN equals NaN, an infinity equals the same infinity; finite values within the tolerance."""
    if a is None or b is None:
        return a is b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def _short(value, limit: int = 200):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unique_labels(names: dict[str, str]) -> dict[str, str]:
    """object id -> label: its name when unique among its siblings, else its id."""
    counts = Counter(names.values())
    return {oid: name if name and counts[name] == 1 else oid for oid, name in names.items()}


@dataclass
class _ExperimentPair:
    path: str
    name: str
    source: ExperimentRecord
    target: ExperimentRecord
    source_runs: list[RunRecord] = field(default_factory=list)
    target_runs: list[RunRecord] = field(default_factory=list)
    matches: list[tuple[RunRecord, RunRecord]] = field(default_factory=list)
    missing_runs: list[RunRecord] = field(default_factory=list)
    extra_runs: list[RunRecord] = field(default_factory=list)
    source_labels: dict[str, str] = field(default_factory=dict)  # run id -> path segment
    target_labels: dict[str, str] = field(default_factory=dict)


class Comparison:
    """One validation run; :func:`validate` is the entry point."""

    def __init__(self, source: SideReader, target: SideReader, options: ValidateOptions):
        self.source = source
        self.target = target
        self.options = options
        self.results: list[ObjectResult] = []
        self.ignored = 0
        self.run_map: dict[str, str] = {}  # source run id -> target run id
        self.model_map: dict[str, str] = {}  # source logged model id -> target logged model id
        self.source_model_of: dict[str, str] = {}  # the inverse of model_map
        self.any_logged_models = False  # then model inputs are read per run (searches leave them out)
        self.experiment_names: dict[str, dict[str, str]] = {"source": {}, "target": {}}  # side -> id -> name
        # A kind the source cannot hold is not applicable; one the target cannot hold is not compared
        # (an import refuses, by name, to carry a kind into a target that cannot hold it).
        self.not_applicable = sorted(source.unsupported_checks & set(options.checks))
        skipped = (source.unsupported_checks | target.unsupported_checks | options.skipped_checks) & set(options.checks)
        if skipped:
            log.info("not compared (not applicable, skipped, or the target cannot hold them): %s",
                     ", ".join(sorted(skipped)))
        self.checks = tuple(check for check in options.checks if check not in skipped)
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="validate")
        # Bulk history reads are slow answers (up to 25,000 points each): a pool of their own keeps
        # them from holding up the quick artifact listings that make up most of the requests.
        self.bulk_pool = ThreadPoolExecutor(max_workers=BULK_READS_IN_FLIGHT, thread_name_prefix="validate-bulk")

    def wants(self, check: str) -> bool:
        return check in self.checks

    # -- recording ---------------------------------------------------------------------------

    def add(self, status: Status, kind: str, path: str, experiment: str | None = None, **fields) -> None:
        if any(fnmatchcase(path, pattern) for pattern in self.options.ignore_paths):
            self.ignored += 1
            return
        self.results.append(ObjectResult(status, kind, path, experiment, **fields))

    def error(self, kind: str, path: str, exc: BaseException, experiment: str | None = None) -> None:
        """An object that could not be read is a ``!`` result; a side that stayed unavailable for the
        whole retry budget stops the validation instead (exit 3, as for migrate): what was not read
        is not a difference."""
        stop = sync_error_in(exc)
        if isinstance(stop, ConnectionFailure):
            raise stop
        log.warning("could not read %s: %s", path, first_line(exc))
        self.add(Status.ERROR, kind, path, experiment, detail=first_line(exc))

    def tag_ignored(self, key: str) -> bool:
        return any(fnmatchcase(key, pattern) for pattern in self.options.ignored_tags)

    def compare_value(self, kind, path, source, target, experiment=None, *, equal=None, detail="") -> None:
        same = equal(source, target) if equal else source == target
        if same:
            self.add(Status.SAME, kind, path, experiment)
        else:
            self.add(Status.DIFFERS, kind, path, experiment, source=source, target=target,
                     detail=detail or f"{_short(source)} != {_short(target)}")

    def compare_mapping(self, kind, base, source: dict, target: dict, experiment=None, *, tags=False, equal=None):
        """One result per key: ``=``/``*`` for shared keys, ``+``/``-`` for one-sided ones."""
        keys = [k for k in dict.fromkeys([*source, *target]) if not (tags and self.tag_ignored(k))]
        for key in sorted(keys):
            path = f"{base}/{key}"
            if key not in target:
                self.add(Status.MISSING, kind, path, experiment, source=source[key])
            elif key not in source:
                self.add(Status.EXTRA, kind, path, experiment, target=target[key])
            else:
                self.compare_value(kind, path, source[key], target[key], experiment, equal=equal)

    def one_sided(self, kind: str, path: str, in_source: bool, experiment: str | None = None, detail=""):
        self.add(Status.MISSING if in_source else Status.EXTRA, kind, path, experiment, detail=detail)

    # -- reading both sides --------------------------------------------------------------------

    def both(self, read, source_args=(), target_args=()) -> tuple[Future, Future]:
        """Read the same thing from both sides in parallel (each with its own arguments)."""
        return (self.pool.submit(getattr(self.source, read), *source_args),
                self.pool.submit(getattr(self.target, read), *target_args))

    def run(self) -> list[ObjectResult]:
        try:
            pairs = self.experiments()
            if pairs is None:
                return self.results
            wants = self.wants
            needs_runs = any(map(wants, ("runs", "artifacts", "logged_models", "registered_models", "traces")))
            if needs_runs:
                self.read_runs(pairs)
            models = self.logged_models(pairs) if wants("logged_models") or wants("runs") else None
            if wants("runs") or wants("artifacts"):
                self.compare_runs(pairs)
            if models is not None and wants("logged_models"):
                self.compare_logged_models(*models)
            if wants("registered_models"):
                self.registered_models()
            if wants("traces"):
                self.traces(pairs)
            if wants("prompts"):
                self.prompts()
            if wants("evaluation_datasets"):
                self.evaluation_datasets()
        finally:
            self.bulk_pool.shutdown(wait=True, cancel_futures=True)
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.results.sort(key=lambda result: result.path)
        return self.results

    # -- experiments -------------------------------------------------------------------------

    def experiments(self) -> list[_ExperimentPair] | None:
        source_future, target_future = self.both("experiments")
        try:
            source = {e.name: e for e in source_future.result()}
            target = {e.name: e for e in target_future.result()}
        except Exception as exc:  # nothing else can be compared without the experiment list
            self.error("experiment", "experiments", exc)
            return None
        for side, experiments in (("source", source), ("target", target)):
            self.experiment_names[side] = {e.experiment_id: e.name for e in experiments.values()}
        report = "experiments" in self.checks
        pairs = []
        for name in sorted(set(source) | set(target)):
            path = f"experiments/{name}"
            if name not in target or name not in source:
                self.one_sided("experiment", path, name in source, name)
                continue
            pairs.append(_ExperimentPair(path, name, source[name], target[name]))
            if report:
                self.add(Status.SAME, "experiment", path, name)
                self.compare_value("experiment_attribute", f"{path}/attributes/lifecycle_stage",
                                   source[name].lifecycle_stage, target[name].lifecycle_stage, name)
                self.compare_mapping("experiment_tag", f"{path}/tags", source[name].tags, target[name].tags,
                                     name, tags=True)
        return pairs

    # -- runs --------------------------------------------------------------------------------

    def read_runs(self, pairs: list[_ExperimentPair]) -> None:
        futures = {id(pair): self.both("runs", (pair.source.experiment_id,), (pair.target.experiment_id,))
                   for pair in pairs}
        failed = []
        with output.progress() as bars:
            task = bars.add_task("reading runs (experiments)", total=len(pairs))
            for pair in pairs:
                source_future, target_future = futures[id(pair)]
                try:
                    pair.source_runs = [run for run in source_future.result() if self.options.compares_run(run)]
                    pair.target_runs = target_future.result()
                except Exception as exc:
                    self.error("run", f"{pair.path}/runs", exc, pair.name)
                    failed.append(pair)
                bars.update(task, advance=1)
        for pair in failed:
            pairs.remove(pair)
        for pair in pairs:
            self.match_runs(pair)

    def match_runs(self, pair: _ExperimentPair) -> None:
        pairs, pair.extra_runs = identity_pair(pair.source_runs, pair.target_runs, own_id=lambda run: run.run_id,
                                               carried_id=lambda run: run.tags.get(RUN_ID_TAG),
                                               source_key=run_key, target_key=run_key)
        for run in pair.source_runs:
            target = pairs.get(run.run_id)
            if target is None:
                pair.missing_runs.append(run)
            else:
                self.run_map[run.run_id] = target.run_id
                pair.matches.append((run, target))
        pair.source_labels = unique_labels({run.run_id: run.name for run in pair.source_runs})
        pair.target_labels = unique_labels({run.run_id: run.name for run in pair.target_runs})

    def prefetch_histories(self, pairs: list[_ExperimentPair]) -> list[Future]:
        """Start reading matched runs' histories in bulk on sides that can (see ``await_prefetches``),
        alternating between the sides so that both servers answer at once."""
        per_side = []
        for reader, side in ((self.source, 0), (self.target, 1)):
            prefetches = getattr(reader, "history_prefetches", None)
            if prefetches:
                per_side.append(prefetches([match[side] for pair in pairs for match in pair.matches]))
        return [self.bulk_pool.submit(job) for jobs in itertools.zip_longest(*per_side) for job in jobs if job]

    @staticmethod
    def await_prefetches(jobs: list[Future]) -> None:
        """A failed bulk history read only means those runs are read one by one later, where a
        failure is reported against the run."""
        for job in jobs:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - falls back to per-run reads, which report errors
                log.debug("bulk history read failed, reading run by run: %s", exc)

    def compare_runs(self, pairs: list[_ExperimentPair]) -> None:
        """Requests first, CPU after: the bulk history reads and every artifact listing are under
        way before the runs are compared on this thread, so the servers stay busy meanwhile."""
        detail_jobs: list[tuple[str, str, str, Future]] = []
        prefetches = self.prefetch_histories(pairs) if self.wants("runs") and self.options.metric_history else []
        matched = [(pair, f"{pair.path}/runs/{pair.source_labels[source.run_id]}", source, target)
                   for pair in pairs for source, target in pair.matches]
        if self.wants("artifacts"):
            detail_jobs += [("artifact", path, pair.name, self.pool.submit(
                self.artifact_results, pair.name, f"{path}/artifacts", source.artifact_uri, target.artifact_uri))
                for pair, path, source, target in matched]
        for pair in pairs:
            runs_path = f"{pair.path}/runs"
            for run in pair.missing_runs:
                self.add(Status.MISSING, "run", f"{runs_path}/{pair.source_labels[run.run_id]}", pair.name,
                         detail=f"source run {run.run_id}")
            for run in pair.extra_runs:
                self.add(Status.EXTRA, "run", f"{runs_path}/{pair.target_labels[run.run_id]}", pair.name,
                         detail=f"target run {run.run_id}")
        if self.wants("runs"):
            for pair, path, source, target in matched:
                self.compare_run(pair.name, path, source, target)
                if self.any_logged_models:
                    detail_jobs.append(("model_input", path, pair.name,
                                        self.pool.submit(self.model_input_results, path, source, target)))
            self.await_prefetches(prefetches)  # the history comparisons read what the prefetches hold
            if self.options.metric_history:
                detail_jobs += [("metric_history", path, pair.name, self.pool.submit(
                    self.histories, path, source, target, sorted(set(source.metrics) | set(target.metrics))))
                    for pair, path, source, target in matched]
        if not detail_jobs:
            return
        with output.progress() as bars:
            task = bars.add_task("comparing histories and artifacts (runs)", total=len(detail_jobs))
            for kind, path, experiment, future in detail_jobs:
                try:
                    for result in future.result():
                        self.add(result.status, result.kind, result.path, experiment, detail=result.detail,
                                 source=result.source, target=result.target, series=result.series)
                except Exception as exc:
                    suffix = {"metric_history": "metrics", "model_input": "inputs/models"}.get(kind, "artifacts")
                    self.error(kind, f"{path}/{suffix}", exc, experiment)
                bars.update(task, advance=1)

    def compare_run(self, experiment: str, path: str, source: RunRecord, target: RunRecord) -> None:
        self.add(Status.SAME, "run", path, experiment)
        attributes = f"{path}/attributes"
        for name in ("name", "status", "lifecycle_stage", "start_time", "end_time"):
            self.compare_value("run_attribute", f"{attributes}/{name}", getattr(source, name),
                               getattr(target, name), experiment)
        if source.parent_run_id or target.parent_run_id:
            expected = self.run_map.get(source.parent_run_id, f"(unmapped source run {source.parent_run_id})") \
                if source.parent_run_id else None
            self.compare_value("run_attribute", f"{attributes}/parent_run", expected, target.parent_run_id,
                               experiment, detail=f"parent should be target run {expected}, is {target.parent_run_id}")
        self.compare_mapping("param", f"{path}/params", source.params, target.params, experiment)
        self.compare_mapping("tag", f"{path}/tags", source.tags, target.tags, experiment, tags=True)
        tolerance = self.options.float_tolerance
        self.compare_mapping(
            "metric", f"{path}/metrics",
            {k: (m.value, m.step) for k, m in source.metrics.items()},
            {k: (m.value, m.step) for k, m in target.metrics.items()},
            experiment,
            equal=lambda a, b: a[1] == b[1] and floats_match(a[0], b[0], tolerance),
        )
        self.compare_mapping(
            "dataset_input", f"{path}/inputs/datasets",
            {f"{d.name}@{d.digest}": (d.source_type, d.source, d.context) for d in source.dataset_inputs},
            {f"{d.name}@{d.digest}": (d.source_type, d.source, d.context) for d in target.dataset_inputs},
            experiment,
        )
        self.compare_mapping(
            "model_output", f"{path}/outputs/models",
            {m: step for m, step in source.model_outputs},
            {self.source_model(m): step for m, step in target.model_outputs},
            experiment,
        )

    def source_model(self, target_model_id: str) -> str:
        """Name a target logged model by the source model it copies, so run inputs and outputs
        compare by mapped id (the target assigns new logged-model ids)."""
        return self.source_model_of.get(target_model_id, f"(target model {target_model_id})")

    def model_input_results(self, path: str, source: RunRecord, target: RunRecord) -> list[ObjectResult]:
        """Model inputs, keyed by source model id (one runs/get per run and side: searches omit them)."""
        left = set(self.source.model_inputs(source))
        right = {self.source_model(m) for m in self.target.model_inputs(target)}
        return [ObjectResult(Status.SAME if m in left and m in right else Status.MISSING if m in left else Status.EXTRA,
                             "model_input", f"{path}/inputs/models/{m}") for m in sorted(left | right)]

    def histories(self, path: str, source: RunRecord, target: RunRecord, keys: list[str]) -> list[ObjectResult]:
        results = []
        tolerance = self.options.float_tolerance
        for key in keys:
            if key not in target.metrics or key not in source.metrics:
                continue  # already reported as a missing/extra metric
            source_points = _ordered(self.source.metric_history(source, key))
            target_points = _ordered(self.target.metric_history(target, key))
            problem = _history_difference(source_points, target_points, tolerance)
            status = Status.DIFFERS if problem else Status.SAME
            result = ObjectResult(status, "metric_history", f"{path}/metrics/{key}/history",
                                  detail=problem or "")
            if problem:
                result.series = {
                    "key": key,
                    "source": [[p.step, _chart_value(p.value)] for p in source_points[:SERIES_LIMIT]],
                    "target": [[p.step, _chart_value(p.value)] for p in target_points[:SERIES_LIMIT]],
                }
            results.append(result)
        return results

    def artifact_results(self, experiment: str, base: str, source_uri: str, target_uri: str) -> list[ObjectResult]:
        source = self.source.artifacts(source_uri)
        target = self.target.artifacts(target_uri)
        results = []
        for relative in sorted(set(source) | set(target)):
            path = f"{base}/{relative}"
            if relative not in target:
                results.append(ObjectResult(Status.MISSING, "artifact", path, source=source[relative].size))
                continue
            if relative not in source:
                results.append(ObjectResult(Status.EXTRA, "artifact", path, target=target[relative].size))
                continue
            left, right = source[relative], target[relative]
            if left.size != right.size:
                results.append(ObjectResult(Status.DIFFERS, "artifact", path, detail=f"size {left.size} != {right.size}",
                                            source=left.size, target=right.size))
                continue
            if self.options.checksum:
                problem = self._content_difference(source_uri, target_uri, relative, left, right)
                if problem:
                    results.append(ObjectResult(Status.DIFFERS, "artifact", path, detail=problem))
                    continue
            results.append(ObjectResult(Status.SAME, "artifact", path))
        return results

    def _content_difference(self, source_uri, target_uri, relative, left, right) -> str:
        if left.etag and right.etag:
            if left.etag == right.etag:
                return ""  # same MD5 (single part) or same MD5 of the same parts (multipart)
            if "-" not in left.etag and "-" not in right.etag:
                # Both S3 listings carry single-part ETags (the MD5 of the bytes): no download needed.
                return f"content differs (ETag {left.etag} != {right.etag})"
            # Multipart ETags depend on the part size: try the objects' SHA-256 checksums before downloading.
            source_sum = self.source.artifact_checksum(source_uri, relative)
            target_sum = self.target.artifact_checksum(target_uri, relative)
            if source_sum and target_sum and source_sum == target_sum:
                return ""
            if source_sum and target_sum and "-" not in source_sum and "-" not in target_sum:
                return f"content differs (SHA-256 checksum {source_sum} != {target_sum})"
        source_hash = self.source.artifact_sha256(source_uri, relative)
        target_hash = self.target.artifact_sha256(target_uri, relative)
        return "" if source_hash == target_hash else f"content differs (SHA-256 {source_hash[:12]}... != {target_hash[:12]}...)"

    # -- logged models -----------------------------------------------------------------------

    def logged_models(self, pairs: list[_ExperimentPair]):
        source_future = self.pool.submit(self.source.logged_models, [p.source.experiment_id for p in pairs])
        target_future = self.pool.submit(self.target.logged_models, [p.target.experiment_id for p in pairs])
        try:
            source, target = source_future.result(), target_future.result()
        except Exception as exc:
            if self.wants("logged_models"):
                self.error("logged_model", "logged_models", exc)
            return None
        # A run may take a model of any compared experiment as input: with any logged model on
        # either side, every matched run's inputs are read (like the exporter does).
        self.any_logged_models = bool(source or target)
        paired, _ = identity_pair(source, target, own_id=lambda model: model.model_id,
                                 carried_id=lambda model: model.tags.get(LOGGED_MODEL_ID_TAG),
                                 source_key=lambda model: (model.name, self.run_map.get(model.source_run_id)),
                                 target_key=lambda model: (model.name, model.source_run_id))
        self.model_map.update({source_id: model.model_id for source_id, model in paired.items()})
        self.source_model_of = {target_id: source_id for source_id, target_id in self.model_map.items()}
        return source, target, pairs

    def compare_logged_models(self, source: list[LoggedModelRecord], target: list[LoggedModelRecord], pairs) -> None:
        experiment_of = {p.source.experiment_id: p for p in pairs}
        target_experiment_of = {p.target.experiment_id: p for p in pairs}
        target_by_id = {model.model_id: model for model in target}
        matched_targets = set(self.model_map.values())
        labels = unique_labels({m.model_id: m.name for m in source})
        target_labels = unique_labels({m.model_id: m.name for m in target})
        jobs = []
        for model in source:
            pair = experiment_of[model.experiment_id]
            path = f"{pair.path}/models/{labels[model.model_id]}"
            other = target_by_id.get(self.model_map.get(model.model_id))
            if other is None:
                self.add(Status.MISSING, "logged_model", path, pair.name, detail=f"source model {model.model_id}")
                continue
            self.add(Status.SAME, "logged_model", path, pair.name)
            for name in ("name", "status", "model_type"):
                self.compare_value("logged_model_attribute", f"{path}/attributes/{name}", getattr(model, name),
                                   getattr(other, name), pair.name)
            expected_run = self.run_map.get(model.source_run_id) if model.source_run_id else None
            self.compare_value("logged_model_attribute", f"{path}/attributes/source_run", expected_run,
                               other.source_run_id, pair.name)
            self.compare_mapping("logged_model_param", f"{path}/params", model.params, other.params, pair.name)
            self.compare_mapping("logged_model_tag", f"{path}/tags", model.tags, other.tags, pair.name, tags=True)
            tolerance = self.options.float_tolerance
            self.compare_mapping("logged_model_metric", f"{path}/metrics", model.metrics, other.metrics, pair.name,
                                 equal=lambda a, b, t=tolerance: floats_match(a, b, t))
            if self.wants("artifacts"):
                jobs.append((pair.name, path, self.pool.submit(
                    self.artifact_results, pair.name, f"{path}/artifacts", model.artifact_location,
                    other.artifact_location)))
        for model in target:
            if model.model_id not in matched_targets:
                pair = target_experiment_of[model.experiment_id]
                self.add(Status.EXTRA, "logged_model", f"{pair.path}/models/{target_labels[model.model_id]}",
                         pair.name, detail=f"target model {model.model_id}")
        for experiment, path, future in jobs:
            try:
                for result in future.result():
                    self.add(result.status, "logged_model_artifact", result.path, experiment, detail=result.detail,
                             source=result.source, target=result.target)
            except Exception as exc:
                self.error("logged_model_artifact", f"{path}/artifacts", exc, experiment)

    # -- model registry ----------------------------------------------------------------------

    def pairs_by_name(self, listing: str, kind: str):
        """Both sides' ``listing`` (a reader method, also the report's path root) matched by name:
        one-sided objects are reported, and each pair is reported present on both and yielded as
        ``(path, source, target)``."""
        source_future, target_future = self.both(listing)
        try:
            source = {item.name: item for item in source_future.result()}
            target = {item.name: item for item in target_future.result()}
        except Exception as exc:
            self.error(kind, listing, exc)
            return
        for name in sorted(set(source) | set(target)):
            path = f"{listing}/{name}"
            if name not in source or name not in target:
                self.one_sided(kind, path, name in source)
                continue
            self.add(Status.SAME, kind, path)
            yield path, source[name], target[name]

    def version_pairs(self, kind: str, path: str, source: dict, target: dict):
        """Versions matched by number; one-sided ones are reported, pairs yielded."""
        for number in sorted(set(source) | set(target)):
            version_path = f"{path}/versions/{number}"
            if number not in source or number not in target:
                self.one_sided(kind, version_path, number in source)
                continue
            yield version_path, source[number], target[number]

    def registered_models(self) -> None:
        for path, left, right in self.pairs_by_name("registered_models", "registered_model"):
            self.compare_value("registered_model_attribute", f"{path}/attributes/description", left.description,
                               right.description)
            self.compare_mapping("registered_model_tag", f"{path}/tags", left.tags, right.tags, tags=True)
            self.compare_mapping("alias", f"{path}/aliases", left.aliases, right.aliases,
                                 equal=lambda a, b: a == b)
            for version_path, a, b in self.version_pairs("model_version", path, left.versions, right.versions):
                self.compare_version(version_path, a, b)

    def compare_version(self, path: str, source, target) -> None:
        problems = []
        for name in ("status", "stage", "description"):
            if getattr(source, name) != getattr(target, name):
                problems.append(f"{name}: {_short(getattr(source, name))!s} != {_short(getattr(target, name))!s}")
        expected_run = self.run_map.get(source.run_id, f"(unmapped source run {source.run_id})") \
            if source.run_id else None
        if expected_run != target.run_id:
            problems.append(f"run: expected {expected_run}, found {target.run_id}")
        expected_model = self.model_map.get(source.model_id, f"(unmapped source model {source.model_id})") \
            if source.model_id else None
        if expected_model != target.model_id:
            problems.append(f"logged model: expected {expected_model}, found {target.model_id}")
        expected_source = self._mapped_source(source.source)
        if expected_source is not None and expected_source != target.source:
            problems.append(f"source: expected {expected_source}, found {target.source}")
        if problems:
            self.add(Status.DIFFERS, "model_version", path, detail="; ".join(problems))
        else:
            self.add(Status.SAME, "model_version", path)
        self.compare_mapping("model_version_tag", f"{path}/tags", source.tags, target.tags, tags=True)

    def _mapped_source(self, source: str) -> str | None:
        """The target source a faithful copy has, for sources naming a run or a logged model."""
        if source.startswith("runs:/"):
            run_id, _, rest = source[len("runs:/"):].partition("/")
            return f"runs:/{self.run_map.get(run_id, run_id)}/{rest}" if run_id in self.run_map else None
        if source.startswith("models:/m-"):
            model_id, _, rest = source[len("models:/"):].partition("/")
            if model_id in self.model_map:
                return f"models:/{self.model_map[model_id]}" + (f"/{rest}" if rest else "")
        return None  # artifact-store locations differ between servers by design

    # -- traces ------------------------------------------------------------------------------

    def traces(self, pairs: list[_ExperimentPair]) -> None:
        futures = [(pair, self.both("traces", (pair.source.experiment_id,), (pair.target.experiment_id,)))
                   for pair in pairs]
        for pair, (source_future, target_future) in futures:
            try:
                source, target = source_future.result(), target_future.result()
            except Exception as exc:
                self.error("trace", f"{pair.path}/traces", exc, pair.name)
                continue
            self.compare_traces(pair, source, target)

    def compare_traces(self, pair: _ExperimentPair, source: list[TraceRecord], target: list[TraceRecord]) -> None:
        matched, extra = identity_pair(
            source, target, own_id=lambda trace: trace.trace_id,
            carried_id=lambda trace: trace.tags.get(TRACE_ID_TAG) or trace.metadata.get(TRACE_ID_TAG),
            source_key=trace_key, target_key=trace_key)
        for trace in source:
            path = f"{pair.path}/traces/{trace.trace_id}"
            other = matched.get(trace.trace_id)
            if other is None:
                self.add(Status.MISSING, "trace", path, pair.name)
                continue
            problems = self.trace_differences(trace, other)
            if problems:
                self.add(Status.DIFFERS, "trace", path, pair.name, detail="; ".join(problems))
            else:
                self.add(Status.SAME, "trace", path, pair.name)
        for trace in extra:
            self.add(Status.EXTRA, "trace", f"{pair.path}/traces/{trace.trace_id}", pair.name,
                     detail="only in target")

    def trace_differences(self, source: TraceRecord, target: TraceRecord) -> list[str]:
        problems = []
        for name in ("state", "name", "request_time", "execution_duration"):
            if getattr(source, name) != getattr(target, name):
                problems.append(f"{name}: {getattr(source, name)} != {getattr(target, name)}")
        expected_run = self.run_map.get(source.run_id, source.run_id) if source.run_id else None
        if expected_run != target.run_id:
            problems.append(f"linked run: expected {expected_run}, found {target.run_id}")
        for label, left, right in (("tag", source.tags, target.tags), ("metadata", source.metadata, target.metadata)):
            for key in sorted(set(left) | set(right)):
                if not self.tag_ignored(key) and left.get(key) != right.get(key):
                    problems.append(f"{label} {key}: {_short(left.get(key), 60)} != {_short(right.get(key), 60)}")
        if len(source.spans) != len(target.spans):
            problems.append(f"spans: {len(source.spans)} != {len(target.spans)}")
        else:
            for index, (left, right) in enumerate(zip(source.spans, target.spans)):
                fields = [name for name in ("name", "parent_name", "span_type", "start_time_ns", "end_time_ns",
                                            "status", "inputs", "outputs")
                          if getattr(left, name) != getattr(right, name)]
                keys = sorted(k for k in set(left.attributes) | set(right.attributes) if not self.tag_ignored(k))
                fields.extend(f"attribute {k}" for k in keys if left.attributes.get(k) != right.attributes.get(k))
                if fields:
                    problems.append(f"span {index} ({left.name}): {', '.join(fields)} differ")
        left = sorted((a.name, repr(a.value), a.source or "") for a in source.assessments)
        right = sorted((a.name, repr(a.value), a.source or "") for a in target.assessments)
        if left != right:
            problems.append(f"assessments: {len(left)} in source, {len(right)} in target, or values differ")
        return problems

    # -- prompts -----------------------------------------------------------------------------

    def prompts(self) -> None:
        for path, left, right in self.pairs_by_name("prompts", "prompt"):
            self.compare_value("prompt_attribute", f"{path}/attributes/description", left.description or "",
                               right.description or "")
            self.compare_mapping("prompt_tag", f"{path}/tags", left.tags, right.tags, tags=True)
            self.compare_mapping("prompt_alias", f"{path}/aliases", left.aliases, right.aliases)
            for version_path, a, b in self.version_pairs("prompt_version", path, left.versions, right.versions):
                problems = [f"{field_name}: {_short(getattr(a, field_name))} != {_short(getattr(b, field_name))}"
                            for field_name in ("template", "commit_message", "response_format")
                            if getattr(a, field_name) != getattr(b, field_name)]
                tags_a = {k: v for k, v in a.tags.items() if not self.tag_ignored(k)}
                tags_b = {k: v for k, v in b.tags.items() if not self.tag_ignored(k)}
                if tags_a != tags_b:
                    problems.append(f"tags: {_short(tags_a)} != {_short(tags_b)}")
                if problems:
                    self.add(Status.DIFFERS, "prompt_version", version_path, detail="; ".join(problems),
                             source=_short(a.template, 2000), target=_short(b.template, 2000))
                else:
                    self.add(Status.SAME, "prompt_version", version_path)

    # -- evaluation datasets -------------------------------------------------------------------

    def evaluation_datasets(self) -> None:
        source_future, target_future = self.both("evaluation_datasets")
        try:
            source, target = source_future.result(), target_future.result()
        except Exception as exc:
            self.error("evaluation_dataset", "evaluation_datasets", exc)
            return
        source_labels = unique_labels({d.dataset_id: d.name for d in source})
        target_labels = unique_labels({d.dataset_id: d.name for d in target})
        for copy in target:  # names need not be unique: a copy pairs with the source dataset it names
            copied_from = copy.tags.get(DATASET_ID_TAG)
            if copied_from in source_labels:
                target_labels[copy.dataset_id] = source_labels[copied_from]
        by_label = {target_labels[d.dataset_id]: d for d in target}
        matched = set()
        for dataset in source:
            label = source_labels[dataset.dataset_id]
            path = f"evaluation_datasets/{label}"
            other = by_label.get(label)
            if other is None:
                self.add(Status.MISSING, "evaluation_dataset", path, detail=f"source dataset {dataset.dataset_id}")
                continue
            matched.add(label)
            self.add(Status.SAME, "evaluation_dataset", path)
            self.compare_mapping("evaluation_dataset_tag", f"{path}/tags", dataset.tags, other.tags, tags=True)
            self.compare_value("evaluation_dataset_attribute", f"{path}/attributes/experiments",
                               self._experiment_names("source", dataset.experiment_ids),
                               self._experiment_names("target", other.experiment_ids))
            problem = _records_difference(dataset.records, other.records)
            if problem:
                self.add(Status.DIFFERS, "evaluation_dataset_records", f"{path}/records", detail=problem,
                         source=len(dataset.records), target=len(other.records))
            else:
                self.add(Status.SAME, "evaluation_dataset_records", f"{path}/records")
        for label, dataset in by_label.items():
            if label not in matched:
                self.add(Status.EXTRA, "evaluation_dataset", f"evaluation_datasets/{label}",
                         detail=f"target dataset {dataset.dataset_id}")

    def _experiment_names(self, side: str, experiment_ids: list[str]) -> list[str]:
        names = self.experiment_names[side]
        return sorted(names.get(experiment_id, f"(experiment {experiment_id})") for experiment_id in experiment_ids)


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _records_difference(source: list[dict], target: list[dict]) -> str:
    """Evaluation-dataset records as multisets keyed by their inputs; '' when they match."""
    left = Counter(_canonical(record) for record in source)
    right = Counter(_canonical(record) for record in target)
    if left == right:
        return ""
    only_source, only_target = left - right, right - left
    inputs_source = {_canonical(json.loads(text).get("inputs")) for text in only_source}
    inputs_target = {_canonical(json.loads(text).get("inputs")) for text in only_target}
    changed = len(inputs_source & inputs_target)
    return (f"{len(source)} records in source, {len(target)} in target: "
            f"{sum(only_source.values()) - changed} only in source, {sum(only_target.values()) - changed} only in "
            f"target, {changed} with the same inputs but other expectations/outputs/tags")




def _ordered(points: list[MetricPoint]) -> list[MetricPoint]:
    return sorted(points, key=lambda p: (p.step, p.timestamp, repr(p.value)))


def _chart_value(value: float):
    return value if math.isfinite(value) else repr(value)


def _history_difference(source: list[MetricPoint], target: list[MetricPoint], tolerance: float) -> str:
    if len(source) != len(target):
        return f"{len(source)} points in source, {len(target)} in target"
    for left, right in zip(source, target):
        if left.step != right.step or left.timestamp != right.timestamp or not floats_match(
                left.value, right.value, tolerance):
            return (f"step {left.step}: (step {left.step}, timestamp {left.timestamp}, value {left.value!r}) != "
                    f"(step {right.step}, timestamp {right.timestamp}, value {right.value!r})")
    return ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def validate(source: SideReader, target: SideReader, options: ValidateOptions | None = None) -> Report:
    """Compare ``source`` with ``target`` object by object; never raises for differences.

    Callers decide what a failing report means (the CLI raises MismatchError). Accepts readers
    or :class:`mlflow_sync.connection.Server` objects.
    """
    from mlflow_sync.connection import Server
    from mlflow_sync.validate.reader import ServerReader

    options = options or ValidateOptions()
    source_reader = ServerReader(source) if isinstance(source, Server) else source
    target_reader = ServerReader(target) if isinstance(target, Server) else target
    before = {"source": _requests(source_reader), "target": _requests(target_reader)}
    started, clock = _now(), time.monotonic()
    comparison = Comparison(source_reader, target_reader, options)
    results = comparison.run()
    return Report(
        source=source_reader.display,
        target=target_reader.display,
        options=options.to_dict(),
        results=results,
        started=started,
        finished=_now(),
        seconds=time.monotonic() - clock,
        requests={side: _spent(before[side], _requests(reader))
                  for side, reader in (("source", source_reader), ("target", target_reader))},
        ignored=comparison.ignored,
        not_applicable=comparison.not_applicable,
    )


def _requests(reader) -> dict[str, int]:
    counter = getattr(reader, "requests_by_endpoint", None)
    return dict(counter()) if counter else {}


def _spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests this validation sent (a Server's counters also hold earlier work)."""
    spent = {endpoint: count - before.get(endpoint, 0) for endpoint, count in after.items()}
    return {endpoint: count for endpoint, count in sorted(spent.items()) if count}
