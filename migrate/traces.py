"""Traces: trace info, spans and assessments, keeping the source trace id.

A trace keeps its id on the target (trace ids are globally unique), so a re-run finds it with
one ``get-trace-info``; an assessment is logged only if the target trace does not already hold
the same one (name, source, value).

Where the spans go depends on where the source keeps them. A trace whose spans live in the
tracking store (MLflow 3 with the spans table) gets them logged as spans: the server files them
under the id it derives from the spans, which is that trace's id. A trace whose spans are a
file in the artifact store (every MLflow 2.x trace, whose id is a bare hex request id, and
MLflow 3 traces written before the spans table) would land under a *new* id that way, apart from
its info: it is created from its info first, then its span file is written to the artifact
location the target gives it, as the clients of those versions did.
"""

from __future__ import annotations

import copy
import logging

from mlflow_sync.identity import TRACE_ID_TAG
from mlflow_sync.paging import paged

log = logging.getLogger(__name__)

DROPPED_TRACE_TAGS = ("mlflow.artifactLocation",)  # the target assigns its own
SPANS_LOCATION_TAG = "mlflow.trace.spansLocation"
SPANS_IN_TRACKING_STORE = "TRACKING_STORE"
SOURCE_RUN_KEY = "mlflow.sourceRun"


def _assessment_key(assessment: dict) -> tuple:
    source = assessment.get("source") or {}
    value = assessment.get("feedback") or assessment.get("expectation")
    return assessment.get("assessment_name"), source.get("source_id"), repr(value)


def import_trace(importer, record: dict) -> str:
    """Create one trace on the importer's target; returns its id there."""
    from mlflow.entities import Assessment, Span, TraceInfo
    from mlflow.tracing.client import TracingClient

    tracing = TracingClient(importer.target.tracking_uri)
    info_dict = copy.deepcopy(record["info"])
    assessments = info_dict.pop("assessments", []) or []
    source_experiment = info_dict["trace_location"]["mlflow_experiment"]["experiment_id"]
    experiment_id = importer.journal.target("experiment", source_experiment)
    if experiment_id is None:
        raise RuntimeError(f"its experiment {source_experiment} was not imported")
    info_dict["trace_location"]["mlflow_experiment"]["experiment_id"] = experiment_id
    info_dict["tags"] = {k: v for k, v in (info_dict.get("tags") or {}).items() if k not in DROPPED_TRACE_TAGS}
    if importer.options.source_tags:
        info_dict["tags"][TRACE_ID_TAG] = info_dict["trace_id"]
    metadata = info_dict.get("trace_metadata") or {}
    if metadata.get(SOURCE_RUN_KEY):
        metadata[SOURCE_RUN_KEY] = importer.journal.target("run", metadata[SOURCE_RUN_KEY]) or metadata[SOURCE_RUN_KEY]
    trace_id = info_dict["trace_id"]
    spans = [Span.from_dict(span) for span in (record.get("data") or {}).get("spans", [])]
    in_store = (info_dict["tags"].get(SPANS_LOCATION_TAG) == SPANS_IN_TRACKING_STORE
                and importer.target.capabilities().ingests_spans)
    if not in_store:
        info_dict["tags"].pop(SPANS_LOCATION_TAG, None)  # the target decides where the file lives
    existing = _existing_trace(importer, tracing, experiment_id, trace_id)
    if existing is None:
        info_dict["assessments"] = assessments  # created with their source ids by start_trace
        if in_store:
            # Spans first: the store derives a trace's time and duration from spans it ingests
            # unless start_trace() has finalised them, which it does when it comes second.
            if spans:
                tracing.log_spans(experiment_id, spans)
            tracing.start_trace(TraceInfo.from_dict(info_dict))
        else:
            _write_span_file(importer, tracing, tracing.start_trace(TraceInfo.from_dict(info_dict)), spans)
        return trace_id
    if not in_store and spans:
        _write_span_file(importer, tracing, existing, spans)  # killed before the file was written
    if TRACE_ID_TAG not in (existing.tags or {}) and importer.options.source_tags:
        # killed between logging the spans and start_trace(): it merges into the existing row
        info_dict["assessments"] = [a for a in assessments if _assessment_key(a) not in
                                    {_assessment_key(x.to_dictionary()) for x in (existing.assessments or [])}]
        tracing.start_trace(TraceInfo.from_dict(info_dict))
        return trace_id
    present = {_assessment_key(a.to_dictionary()) for a in (existing.assessments or [])}
    for assessment in assessments:
        if _assessment_key(assessment) not in present:
            tracing.log_assessment(trace_id, Assessment.from_dictionary(assessment))
    return trace_id


def _existing_trace(importer, tracing, experiment_id: str, trace_id: str):
    """The target's copy of a trace (it keeps the source id), or None.

    MLflow 3.0 routes ``GET /api/2.0/mlflow/traces/<id>`` to a handler that fails with HTTP 500 for
    every id (measured on 3.0.1; 3.4 answers it), so on targets older than 3.4 the copy is looked up
    in a listing of its experiment, read once per experiment, by the source id it carries (a 3.0
    server gives a trace an id of its own)."""
    from mlflow.exceptions import MlflowException

    if importer.target.capabilities().at_least(3, 4):
        try:
            return tracing.get_trace_info(trace_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None
    if experiment_id not in importer.target_traces:
        importer.target_traces[experiment_id] = {
            (trace.info.tags or {}).get(TRACE_ID_TAG) or trace.info.trace_id: trace.info for trace in paged(
                lambda token: tracing.search_traces(locations=[experiment_id], max_results=100, page_token=token,
                                                    include_spans=False))}
    return importer.target_traces[experiment_id].get(trace_id)


def _write_span_file(importer, tracing, target_info, spans: list) -> None:
    """The trace's span file, at the artifact location the target gave the trace. A proxied
    ``mlflow-artifacts:`` location resolves through MLflow's *global* tracking URI, hence activate()."""
    from mlflow.entities import TraceData

    if not spans:
        return
    if "mlflow.artifactLocation" not in (target_info.tags or {}):
        target_info = tracing.get_trace_info(target_info.trace_id)
    with importer.target.activate():
        tracing._upload_trace_data(target_info, TraceData(spans=spans))
