"""What a server holds, per object kind, counted so that no client library can hide anything.

An http or ARN server is counted with plain REST calls that add no filters of their own (the
MLflow 3.x client, for one, hides a 2.x server's whole registry, see :mod:`.registry`); a
database URI is counted with SQL on its tables. Jobs count the source before an export and the
target before and after an import, and compare those counts with what they wrote: a kind that
the source holds and the job did not carry is named and fails the job, unless the user skipped
that kind (``--skip-kind``).

A kind the server cannot hold (its route answers "not found", or the table does not exist) is
left out of ``counts`` and listed in ``unsupported``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from mlflow_sync.errors import SyncError, UsageError
from mlflow_sync.paging import paged_json
from mlflow_sync.registry import PROMPT_TAG, PROMPTS_FILTER

log = logging.getLogger(__name__)

CARRIED_KINDS = (
    "experiments", "runs", "deleted_runs", "logged_models", "traces", "registered_models", "model_versions",
    "prompts", "prompt_versions", "evaluation_datasets",
)
"""Kinds export, import, migrate, sync and snapshots carry."""

UNCARRIED_KINDS = (
    "workspaces", "scorers", "gateway_secrets", "gateway_model_definitions", "gateway_endpoints",
    "gateway_budget_policies", "gateway_guardrails", "label_schemas", "review_queues", "issues", "webhooks",
    "mcp_servers",
)
"""Kinds an MLflow 3 server can hold that this version of mlflow-sync does not carry yet: holding
any of them fails a job unless skipped (``workspaces`` counts workspaces besides ``default``)."""

SKIPPABLE_KINDS = ("deleted_runs", *CARRIED_KINDS[3:], *UNCARRIED_KINDS)
"""What ``--skip-kind`` accepts (experiments and runs are what every job is for)."""

_EXPERIMENT_CHUNK = 50  # experiment ids per search request


def parse_skip_kinds(values) -> frozenset[str]:
    """``--skip-kind`` values (``gateway-secrets`` or ``gateway_secrets``) -> kind names, checked."""
    kinds = set()
    for value in values or ():
        kind = value.strip().lower().replace("-", "_")
        if kind not in SKIPPABLE_KINDS:
            raise UsageError(f"--skip-kind {value!r}: unknown kind; choose from "
                             f"{', '.join(k.replace('_', '-') for k in SKIPPABLE_KINDS)}")
        kinds.add(kind)
    return frozenset(kinds)


@dataclass
class Inventory:
    """Counts per kind on one server at one moment."""

    server: str
    mlflow_version: str | None
    counts: dict[str, int] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)

    def get(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def as_dict(self) -> dict:
        return asdict(self)


def take_inventory(server, *, uncarried_kinds: bool = True) -> Inventory:
    """Count everything ``server`` (a :class:`mlflow_sync.connection.Server`) holds.

    ``uncarried_kinds=False`` counts only what jobs carry: some of the other kinds cost one
    request per experiment, and a target's count of them is never compared.
    """
    version = server.capabilities().version
    if server.transport is None:
        return _sql_inventory(server, version, uncarried_kinds)
    return _RestCounter(server, version, uncarried_kinds).count()


# -- checks -------------------------------------------------------------------------------------


def uncarried(source: Inventory, skipped: frozenset[str]) -> list[str]:
    """Kinds the source holds that no job of this version carries, minus the skipped ones."""
    return [kind for kind in UNCARRIED_KINDS if source.get(kind) and kind not in skipped]


def take_source_inventory(source, skipped: frozenset[str]) -> Inventory:
    """Count the source of a job, refusing it (UsageError, nothing written yet) when it holds a kind
    that no job of this version carries and the user did not skip."""
    inventory = take_inventory(source)
    refused = uncarried(inventory, skipped)
    if refused:
        raise UsageError(f"the source {source.display} holds "
                         f"{refusal(refused, inventory.counts, ', which this version of mlflow-sync does not carry')}")
    return inventory


def refusal(kinds: list[str], counts: dict[str, int], why: str = "") -> str:
    """``"webhooks (1), traces (2)<why>: nothing was written; pass --skip-kind webhooks --skip-kind
    traces to carry the rest"``: the tail of every refusal of kinds a job cannot carry."""
    named = ", ".join(f"{kind} ({counts.get(kind, 0)})" for kind in kinds)
    options = " ".join(f"--skip-kind {kind.replace('_', '-')}" for kind in kinds)
    return f"{named}{why}: nothing was written; pass {options} to carry the rest"


def carried_counts(inventory: Inventory, skipped: frozenset[str]) -> dict[str, int]:
    """What a job carrying everything but ``skipped`` takes from this server, in an export's terms
    (``runs`` counts deleted runs too, unless they are skipped)."""
    counts = {kind: inventory.get(kind) for kind in CARRIED_KINDS
              if kind not in skipped and kind != "deleted_runs" and kind not in inventory.unsupported}
    if "deleted_runs" not in skipped:
        counts["runs"] = counts.get("runs", 0) + inventory.get("deleted_runs")
    return counts


def shortfalls(expected: dict[str, int], found: dict[str, int], *, expected_what: str, found_what: str) -> list[str]:
    """One line per kind of which fewer were ``found`` than ``expected`` (a one-way copy may hold more)."""
    return [f"{kind}: {found.get(kind, 0)} {found_what}, {count} {expected_what}"
            for kind, count in expected.items() if kind in CARRIED_KINDS and found.get(kind, 0) < count]


def count_target(target, expected: dict[str, int], *, expected_what: str) -> tuple[Inventory, list[str]]:
    """Count the target after a job; returns its inventory and a line per kind it holds fewer of
    than ``expected`` (see :func:`shortfalls`)."""
    after = take_inventory(target, uncarried_kinds=False)
    return after, shortfalls(expected, carried_counts(after, frozenset()), expected_what=expected_what,
                             found_what="on the target")


class InventoryMismatch(SyncError):
    """The counts say something the source holds was not carried."""

    exit_code = 4


# -- REST --------------------------------------------------------------------------------------


class _NotHeld(Exception):
    """The server has no such route: it cannot hold this kind."""


class _BadRequest(SyncError):
    """The server has the route but not the parameters this request used."""


class _RestCounter:
    def __init__(self, server, version: str | None, uncarried_kinds: bool):
        self.server = server
        self.inventory = Inventory(server.display, version)
        self.uncarried_kinds = uncarried_kinds

    def count(self) -> Inventory:
        experiment_ids = self._experiments()
        steps = [
            ("runs", lambda: self._runs(experiment_ids)),
            ("logged_models", lambda: self._logged_models(experiment_ids)),
            ("traces", lambda: self._traces(experiment_ids)),
            ("registered_models", self._registry),
            ("evaluation_datasets", lambda: self._paged_count(
                "POST", "/api/3.0/mlflow/datasets/search", "datasets", {"max_results": 1000})),
            ("workspaces", self._workspaces),
            ("scorers", lambda: self._scorers(experiment_ids)),
            ("gateway_secrets", lambda: self._list_count("/api/3.0/mlflow/gateway/secrets/list", "secrets")),
            ("gateway_model_definitions", lambda: self._list_count(
                "/api/3.0/mlflow/gateway/model-definitions/list", "model_definitions")),
            ("gateway_endpoints", lambda: self._list_count("/api/3.0/mlflow/gateway/endpoints/list", "endpoints")),
            ("gateway_budget_policies", lambda: self._list_count(
                "/api/3.0/mlflow/gateway/budgets/list", "budget_policies")),
            ("gateway_guardrails", lambda: self._paged_count(
                "GET", "/api/3.0/mlflow/gateway/guardrails/list", "guardrails", {"max_results": 1000})),
            ("label_schemas", lambda: self._per_experiment(  # every experiment gets default schemas
                experiment_ids, "/api/3.0/mlflow/label-schemas/list", "label_schemas",
                keep=lambda schema: not schema.get("is_default"))),
            ("review_queues", lambda: self._per_experiment(
                experiment_ids, "/api/3.0/mlflow/review-queues/list", "review_queues")),
            ("issues", lambda: self._per_experiment(
                experiment_ids, "/api/3.0/mlflow/issues/search", "issues", method="POST")),
            ("webhooks", lambda: self._paged_count(
                "GET", "/api/2.0/mlflow/webhooks", "webhooks", {"max_results": 1000})),
            ("mcp_servers", lambda: self._paged_count(
                "GET", "/api/3.0/mlflow/mcp-servers", "mcp_servers", {"max_results": 1000})),
        ]
        for kind, step in steps:
            if kind in UNCARRIED_KINDS and not self.uncarried_kinds:
                continue
            try:
                counted = step()
            except _NotHeld:
                self.inventory.unsupported.append(kind)
                continue
            self.inventory.counts.update(counted if isinstance(counted, dict) else {kind: counted})
        return self.inventory

    # -- requests ----------------------------------------------------------------------------

    def _call(self, method: str, endpoint: str, body: dict) -> dict:
        transport = self.server.transport
        if method == "GET":
            response = transport.request("GET", endpoint, params=body)
        else:
            response = transport.request(method, endpoint, json=body)
        if response.status_code in (404, 405, 501):
            raise _NotHeld(endpoint)
        if response.status_code != 200:
            code = _error_code(response)
            if code in ("FEATURE_DISABLED", "ENDPOINT_NOT_FOUND"):
                raise _NotHeld(endpoint)
            failure = _BadRequest if code == "INVALID_PARAMETER_VALUE" else SyncError
            raise failure(f"cannot count {endpoint} on {self.server.display}: HTTP {response.status_code} "
                          f"{code or response.text[:120]}")
        try:
            return response.json()
        except ValueError:  # an HTML page: a server (or front door) without this route
            raise _NotHeld(endpoint) from None

    def _pages(self, method: str, endpoint: str, key: str, body: dict):
        return paged_json(lambda page_body: self._call(method, endpoint, page_body), key, body)

    def _paged_count(self, method: str, endpoint: str, key: str, body: dict, keep=None) -> int:
        return sum(1 for item in self._pages(method, endpoint, key, body) if keep is None or keep(item))

    def _list_count(self, endpoint: str, key: str) -> int:
        return len(self._call("GET", endpoint, {}).get(key) or [])

    # -- kinds -------------------------------------------------------------------------------

    def _experiments(self) -> list[str]:
        experiments = list(self._pages("GET", "/api/2.0/mlflow/experiments/search", "experiments",
                                       {"max_results": 1000, "view_type": "ALL"}))
        self.inventory.counts["experiments"] = len(experiments)
        return [e["experiment_id"] for e in experiments]

    def _runs(self, experiment_ids: list[str]) -> dict:
        counts = {"runs": 0, "deleted_runs": 0}
        for chunk in _chunks(experiment_ids):
            for run in self._pages("POST", "/api/2.0/mlflow/runs/search", "runs", {
                    "experiment_ids": chunk, "run_view_type": "ALL", "max_results": 1000}):
                deleted = run["info"].get("lifecycle_stage") == "deleted"
                counts["deleted_runs" if deleted else "runs"] += 1
        return counts

    def _logged_models(self, experiment_ids: list[str]) -> int:
        if not experiment_ids:
            self._call("POST", "/api/2.0/mlflow/logged-models/search", {"max_results": 1})
        return sum(self._paged_count("POST", "/api/2.0/mlflow/logged-models/search", "models", {
            "experiment_ids": chunk, "max_results": 100}) for chunk in _chunks(experiment_ids))

    def _traces(self, experiment_ids: list[str]) -> int:
        """Through the v2 route, which every server with traces has (2.14 and later)."""
        if not experiment_ids:
            self._call("GET", "/api/2.0/mlflow/traces", {"max_results": 1})
        return sum(self._paged_count("GET", "/api/2.0/mlflow/traces", "traces", {
            "experiment_ids": chunk, "max_results": 100}) for chunk in _chunks(experiment_ids))

    def _registry(self) -> dict:
        """Registered models and prompts by their tag. A 3.x server leaves prompts out of unfiltered
        listings, so they are also listed with the filter that asks for them (a 2.x server answers it
        with nothing). A model is also counted when only its versions are listed, so one emptied
        listing cannot hide the registry."""
        models, versions = {}, {}
        for condition in ({}, {"filter": PROMPTS_FILTER}):
            for model in self._pages("GET", "/api/2.0/mlflow/registered-models/search", "registered_models",
                                     {"max_results": 1000, **condition}):
                models[model["name"]] = _tags(model).get(PROMPT_TAG) == "true"
            for version in self._pages("GET", "/api/2.0/mlflow/model-versions/search", "model_versions",
                                       {"max_results": 10000, **condition}):
                versions[(version["name"], version["version"])] = version
        versions = list(versions.values())
        for version in versions:
            models.setdefault(version["name"], _tags(version).get(PROMPT_TAG) == "true"
                              or "mlflow.prompt.text" in _tags(version))
        prompts = {name for name, prompt in models.items() if prompt}
        return {
            "registered_models": len(models) - len(prompts),
            "model_versions": sum(1 for v in versions if v["name"] not in prompts),
            "prompts": len(prompts),
            "prompt_versions": sum(1 for v in versions if v["name"] in prompts),
        }

    def _workspaces(self) -> int:
        # A server started without --enable-workspaces answers the workspace routes with a 503
        # (retried as an outage); server-info says first whether they are on.
        if not self._call("GET", "/api/3.0/mlflow/server-info", {}).get("workspaces_enabled"):
            return 0
        names = [w.get("name") for w in self._call("GET", "/api/3.0/mlflow/workspaces", {}).get("workspaces") or []]
        return sum(1 for name in names if name != "default")

    def _scorers(self, experiment_ids: list[str]) -> int:
        try:
            return sum(len(self._call("GET", "/api/3.0/mlflow/scorers/list", {"experiment_ids": chunk})
                           .get("scorers") or []) for chunk in _chunks(experiment_ids) or [[]])
        except _BadRequest:  # before 3.5 or so: one experiment per request
            return sum(len(self._call("GET", "/api/3.0/mlflow/scorers/list", {"experiment_id": experiment_id})
                           .get("scorers") or []) for experiment_id in experiment_ids)

    def _per_experiment(self, experiment_ids: list[str], endpoint: str, key: str, method: str = "GET",
                        keep=None) -> int:
        return sum(self._paged_count(method, endpoint, key, {"experiment_id": experiment_id, "max_results": 1000},
                                     keep) for experiment_id in experiment_ids)


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start:start + _EXPERIMENT_CHUNK] for start in range(0, len(ids), _EXPERIMENT_CHUNK)]


def _tags(entity: dict) -> dict[str, str]:
    return {t.get("key"): t.get("value") for t in entity.get("tags") or []}


def _error_code(response) -> str | None:
    try:
        return response.json().get("error_code")
    except ValueError:
        return None


# -- SQL ---------------------------------------------------------------------------------------

_SQL_COUNTS = {
    "experiments": "SELECT COUNT(*) FROM experiments",
    "runs": "SELECT COUNT(*) FROM runs WHERE lifecycle_stage <> 'deleted'",
    "deleted_runs": "SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'deleted'",
    "logged_models": "SELECT COUNT(*) FROM logged_models",
    "traces": "SELECT COUNT(*) FROM trace_info",
    "evaluation_datasets": "SELECT COUNT(*) FROM evaluation_datasets",
    "workspaces": "SELECT COUNT(*) FROM workspaces WHERE name <> 'default'",
    "scorers": "SELECT COUNT(*) FROM scorers",
    "gateway_secrets": "SELECT COUNT(*) FROM secrets",
    "gateway_model_definitions": "SELECT COUNT(*) FROM model_definitions",
    "gateway_endpoints": "SELECT COUNT(*) FROM endpoints",
    "gateway_budget_policies": "SELECT COUNT(*) FROM budget_policies",
    "gateway_guardrails": "SELECT COUNT(*) FROM guardrails",
    "label_schemas": "SELECT COUNT(*) FROM label_schemas WHERE NOT is_default",
    "review_queues": "SELECT COUNT(*) FROM review_queues",
    "issues": "SELECT COUNT(*) FROM issues",
    "webhooks": "SELECT COUNT(*) FROM webhooks",
    "mcp_servers": "SELECT COUNT(*) FROM mcp_servers",
}
_DELETED_VERSION = "Deleted_Internal"
_PROMPT_NAMES = (f"SELECT name FROM registered_model_tags WHERE key = '{PROMPT_TAG}' AND value = 'true'")
_SQL_REGISTRY = {
    "registered_models": f"SELECT COUNT(*) FROM registered_models WHERE name NOT IN ({_PROMPT_NAMES})",
    # a deleted version stays in the table, in a stage of its own, and no route lists it
    "model_versions": f"SELECT COUNT(*) FROM model_versions WHERE current_stage <> '{_DELETED_VERSION}' "
                      f"AND name NOT IN ({_PROMPT_NAMES})",
    "prompts": f"SELECT COUNT(*) FROM registered_models WHERE name IN ({_PROMPT_NAMES})",
    "prompt_versions": f"SELECT COUNT(*) FROM model_versions WHERE current_stage <> '{_DELETED_VERSION}' "
                       f"AND name IN ({_PROMPT_NAMES})",
}
_TABLE_OF = {kind: sql.split(" FROM ", 1)[1].split()[0] for kind, sql in {**_SQL_COUNTS, **_SQL_REGISTRY}.items()}


def _sql_inventory(server, version: str | None, uncarried_kinds: bool) -> Inventory:
    import sqlalchemy

    inventory = Inventory(server.display, version)
    engine = sqlalchemy.create_engine(server.spec.uri)
    try:
        with engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
            for kind, sql in {**_SQL_COUNTS, **_SQL_REGISTRY}.items():
                if kind in UNCARRIED_KINDS and not uncarried_kinds:
                    continue
                if _TABLE_OF[kind] not in tables:
                    inventory.unsupported.append(kind)
                    continue
                inventory.counts[kind] = connection.execute(sqlalchemy.text(sql)).scalar_one()
    finally:
        engine.dispose()
    return inventory
