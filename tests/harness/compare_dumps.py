"""Compare two dumps made by version_scripts/dump.py (e.g. a migration's source and target).

`compare(source, target)` lists human-readable differences (empty: equal) for the kinds both
dumps cover; `count_kinds(dump)` counts a dump the way version_scripts/fill.py counts what it
made, so a fill summary can be checked against a dump of the filled server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

KINDS = (
    "experiments",
    "runs",
    "registered_models",
    "logged_models",
    "traces",
    "prompts",
    "evaluation_datasets",
)


def compare(
    source: dict, target: dict, kinds: Iterable[str] | None = None, limit: int = 200
) -> list[str]:
    """Differences between `source` and `target` for `kinds` (default: every kind both dumps
    cover), at most `limit` of them (then one line says how many more)."""
    both = [k for k in KINDS if k in source.get("kinds", ()) and k in target.get("kinds", ())]
    chosen = both if kinds is None else [k for k in kinds if k in both]
    differences: list[str] = []
    for kind in chosen:
        _diff(source.get(kind), target.get(kind), kind, differences)
    if len(differences) > limit:
        differences = differences[:limit] + [f"... and {len(differences) - limit} more"]
    return differences


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}[{key!r}]"
            if key not in b:
                out.append(f"{where}: missing in target (source: {_short(a[key])})")
            elif key not in a:
                out.append(f"{where}: only in target ({_short(b[key])})")
            else:
                _diff(a[key], b[key], where, out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{index}]", out)
        return
    if a != b:
        out.append(f"{path}: source {_short(a)} != target {_short(b)}")


def _short(value: Any, width: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def count_kinds(dump: dict) -> dict[str, int]:
    """Counts per kind, named and counted as fill.py's summary counts them (zeros left out)."""
    runs = dump.get("runs", {}).values()
    models = dump.get("registered_models", {}).values()
    versions = [v for m in models for v in m["versions"].values()]
    traces = dump.get("traces", {}).values()
    logged = dump.get("logged_models", {}).values()
    prompts = dump.get("prompts", {}).values()
    datasets = dump.get("evaluation_datasets", {}).values()
    counts = {
        "experiments": sum(1 for name in dump.get("experiments", {}) if name != "Default"),
        "runs": len(runs),
        "deleted_runs": sum(1 for r in runs if r["lifecycle_stage"] == "deleted"),
        "metric_points": sum(len(h) for r in runs for h in r["metrics"].values()),
        "artifacts": sum(len(r["artifacts"]) for r in runs),
        "run_dataset_inputs": sum(len(r.get("dataset_inputs", [])) for r in runs),
        "run_model_inputs": sum(len(r.get("model_inputs", [])) for r in runs),
        "registered_models": len(models),
        "model_versions": len(versions),
        "staged_versions": sum(1 for v in versions if v["stage"] not in (None, "None")),
        "aliases": sum(len(m["aliases"]) for m in models),
        "traces": len(traces),
        "spans": sum(len(t["spans"] or []) for t in traces),
        "assessments": sum(len(t["assessments"]) for t in traces),
        "logged_models": len(logged),
        "logged_model_metrics": sum(len(m["metrics"]) for m in logged),
        "prompts": len(prompts),
        "prompt_versions": sum(len(p["versions"]) for p in prompts),
        "prompt_aliases": sum(len(p["aliases"]) for p in prompts),
        "evaluation_datasets": len(datasets),
        "dataset_records": sum(len(d["records"]) for d in datasets),
    }
    return {kind: n for kind, n in counts.items() if n}
