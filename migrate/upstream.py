"""Upstream defects met on the way, and where mlflow-sync routes around each: the one list.

Measured with mlflow-export-import 1.2.1, MLflow 3.17.2 and sagemaker-mlflow 0.5.0 (facts in the
project's field notes). mlflow-sync does not call mlflow-export-import's export or import code:
its lean exporter/importer replace those paths, because that is where the defects and the
request storms live. It keeps the library's ``mlflow_exim.*`` tag names, so targets already
filled by export-import are recognised and tools that read those tags keep working.

Each entry names the code that handles the defect (``module:attribute``) and the test that
reproduces the situation; tests/migrate/test_upstream_defects.py checks both exist.
"""

from __future__ import annotations

from dataclasses import dataclass

HTTP_TESTS = "tests/migrate/test_migrate_http.py"
INV = "tests/migrate/test_inventory.py"
RICH_TEST = f"{HTTP_TESTS}::test_migrate_rich_source_then_rerun_imports_nothing_twice"


@dataclass(frozen=True)
class Defect:
    key: str
    upstream: str  # what goes wrong, and where
    route: str  # what mlflow-sync does instead
    handled_by: str  # module:attribute of the code that does it
    test: str  # path::test that reproduces the situation


DEFECTS: tuple[Defect, ...] = (
    Defect(
        "db-overload-as-400",
        "MLflow's SQL store answers a database it cannot use for the moment (connection pool exhausted, "
        "SQLite locked, deadlock) with HTTP 400 BAD_REQUEST, which clients treat as final: an import "
        "under load loses the object.",
        "The shared budget layer retries those answers like a 503, with backoff inside the request "
        "budget (create guards keep the retried creates single).",
        "mlflow_sync.budget:is_transient",
        "tests/foundation/test_connection.py::test_a_busy_database_answer_is_retried_but_a_bad_request_is_not",
    ),
    Defect(
        "log-batch-pool-deadlock",
        "MLflow's SQL store runs log_batch in a session around nested sessions, holding two pooled "
        "connections: as many concurrent log-batches as the pool has connections (15 by default) take "
        "them all for outer sessions and wait for the inner ones until the pool's 30 s timeout; some then "
        "fail with 400 QueuePool limit. 8 import workers hit it on SQLite, 12 on PostgreSQL.",
        "The transport keeps at most CONCURRENT_LOG_BATCHES (4) log-batches in flight per server; other "
        "requests keep the full worker count. The server's log-batch throughput is CPU-bound, so four "
        "lose nothing.",
        "mlflow_sync.budget:CONCURRENT_LOG_BATCHES",
        "tests/foundation/test_connection.py::"
        "test_concurrent_log_batches_deadlock_the_servers_pool_but_ours_stay_below_it",
    ),
    Defect(
        "model-inputs-keyerror",
        "mlflow-export-import #250: a run whose inputs hold logged models raises KeyError 'step' on "
        "import; every older run of that experiment is dropped, exit code 0.",
        "Model inputs and outputs are exported as model ids (outputs with their step) and logged "
        "with log_inputs/log_outputs, mapped to the imported logged models. MLflow's runs/search "
        "leaves model inputs out: when the source holds logged models, each run is read with "
        "runs/get as well (Exporter._model_inputs_possible).",
        "mlflow_sync.migrate.importer:Importer._log_inputs_outputs",
        "tests/migrate/test_upstream_defects.py::test_model_inputs_and_spanless_traces_arrive",
    ),
    Defect(
        "traces-without-spans",
        "A trace whose spans are not in the store: MLflow's search_traces(include_spans=True) leaves it "
        "out silently; export-import writes it without a span file and its import crashes "
        "(FileNotFoundError, then AttributeError request_id), dropping the rest of the experiment.",
        "Trace infos come from a search without spans, spans from a second search; a trace without "
        "spans is exported (warning) and imported from its info alone.",
        "mlflow_sync.migrate.exporter:Exporter.export_traces",
        "tests/migrate/test_upstream_defects.py::test_model_inputs_and_spanless_traces_arrive",
    ),
    Defect(
        "versions-into-proxied-target",
        "Model versions into a target that proxies artifacts: export-import checks the "
        "mlflow-artifacts:/ source on the local disk and raises inside a thread pool whose future is "
        "never read; no version is created, nothing is logged.",
        "Version sources are rewritten to the target's own run / logged model URIs (nothing is read "
        "from disk); every object runs through Outcome.attempt, whose failures are reported.",
        "mlflow_sync.migrate.importer:Importer._map_source",
        RICH_TEST,
    ),
    Defect(
        "rerun-duplicates",
        "mlflow-export-import #178: running import-all again duplicates every run, logged model and "
        "prompt version.",
        "A journal line per step, and before creating anything unjournaled a search for objects "
        "carrying its source-id tag (covers a kill between create and journal).",
        "mlflow_sync.migrate.importer:Importer._existing_runs",
        RICH_TEST,
    ),
    Defect(
        "killed-import-duplicates",
        "A killed import-all leaves half-imported experiments; its re-run duplicates them.",
        "As above; metric points of a half-filled run are not logged twice (the run is completed "
        "from its journal state).",
        "mlflow_sync.journal:Journal",
        f"{HTTP_TESTS}::test_resume_after_sigkill_mid_import_ends_with_every_run_once",
    ),
    Defect(
        "times-and-user-lost",
        "Run start/end times become the import time and mlflow.user the importing user, although "
        "the API can set them.",
        "runs/create carries the source start_time and the mlflow.user tag; runs/update carries the "
        "source status and end_time.",
        "mlflow_sync.migrate.importer:Importer._create_run",
        RICH_TEST,
    ),
    Defect(
        "version-number-gaps",
        "Model version numbers shift when the source has gaps (deleted versions): aliases and "
        "references to 'version 3' then point at the wrong model.",
        "A deleted source version is created as a placeholder and deleted again, so later versions "
        "keep their numbers.",
        "mlflow_sync.migrate.importer:Importer._fill_gap",
        RICH_TEST,
    ),
    Defect(
        "prompt-aliases-dropped",
        "Prompt aliases are not imported.",
        "Aliases are set after the prompt's versions, mapped through the journal.",
        "mlflow_sync.migrate.importer:Importer._import_prompt",
        RICH_TEST,
    ),
    Defect(
        "deleted-runs-skipped",
        "Deleted runs are skipped by default, with nothing in the report.",
        "Deleted runs are carried by default (migrate, export, sync, snapshots): imported, then deleted on "
        "the target; --skip-kind deleted-runs leaves them out on purpose and the validation then ignores them.",
        "mlflow_sync.migrate.importer:Importer._fill_run",
        RICH_TEST,
    ),
    Defect(
        "client-version-feature-detection",
        "export-import decides which features exist from the client's MLflow version: a 3.x client "
        "against a 2.x server stops after the first run of each experiment, exit code 0.",
        "Capabilities come from the server (GET /version and probes of the logged-model and trace "
        "endpoints); the export says which kinds the source lacks.",
        "mlflow_sync.connection:Capabilities.lacking",
        "tests/migrate/test_migrate_old_source.py::"
        "test_export_from_a_2x_style_server_gets_every_run_and_names_what_the_source_lacks",
    ),
    Defect(
        "silent-loss-exit-zero",
        "Objects that fail are dropped with exit code 0 and '\"exceptions\": 0' in the report.",
        "Every object is retried within the request budget, then reported by kind, name and reason; "
        "the exit code is non-zero and a re-run completes only what failed.",
        "mlflow_sync.migrate.outcome:Outcome.attempt",
        f"{HTTP_TESTS}::test_failing_object_is_reported_by_name_and_exit_code_is_non_zero",
    ),
    Defect(
        "request-storms",
        "20 requests per imported run (7 runs/get, a rejected experiments/create per run) and 19.1 "
        "per exported run (one metrics/get-history per metric key).",
        "Runs are read 1,000 per search page, histories 100 runs per get-history-bulk request, "
        "experiments created once, run data in log-batch.",
        "mlflow_sync.migrate.exporter:Exporter.histories",
        f"{HTTP_TESTS}::test_requests_per_run_stay_within_budget",
    ),
    Defect(
        "sagemaker-by-host-name",
        "export-import recognises SageMaker by 'experiments.sagemaker' in the host: an MLflow App falls "
        "back to unsigned HTTP (403 per model, exit code 0); sagemaker-mlflow signs with the global "
        "tracking URI, so two ARNs in one process are signed as one.",
        "Each side has its own transport, signed for its own ARN (mlflow_sync.transport); no raw "
        "unsigned client is used.",
        "mlflow_sync.connection:connect",
        "tests/migrate/test_migrate_pairs.py::test_arn_tracking_server_to_arn_mlflow_app",
    ),
    Defect(
        "registry-hidden-from-3x-client",
        "The MLflow 3.x client's search_registered_models() adds a prompt-exclusion filter that a 2.x "
        "server answers with an empty page: through it, a 2.x server's whole registry (models, versions, "
        "stages, aliases) is invisible, to an exporter and a validator alike; and a 3.x server leaves "
        "prompts out of every unfiltered registry listing.",
        "Registry reads go through the registry store with no filter of the client's (prompts with the one "
        "filter that asks for them); every job also counts the registry with plain REST, models behind "
        "the version listing included, and names any shortfall.",
        "mlflow_sync.registry:registered_models",
        f"{INV}::test_an_emptied_registry_listing_fails_the_migration_naming_registered_models",
    ),
    Defect(
        "artifact-traces-new-id",
        "Logging an MLflow 2.x trace's spans (or an MLflow 3 trace whose spans are a file in the artifact "
        "store) to an MLflow 3 server files them under a new trace id (tr-<OpenTelemetry id>), apart from "
        "the trace's info, which keeps the source id with 0 spans.",
        "Such a trace is created from its info with its own id, then its span file is written to the "
        "artifact location the target gives it; spans of traces kept in the tracking store are logged as "
        "spans, as before.",
        "mlflow_sync.migrate.traces:import_trace",
        "tests/test_version_matrix.py::test_every_source_version_migrates_completely",
    ),
    Defect(
        "trace-span-file-missing",
        "A trace whose span file never reached the artifact store (an old client with a current "
        "OpenTelemetry) is answered with HTTP 500 every time; clients retry it for minutes per trace.",
        "A 500 to a span-file download is final (one attempt); the trace is exported as the server "
        "has it and the report's notes name it.",
        "mlflow_sync.budget:is_trace_span_download",
        "tests/migrate/test_upstream_defects.py::test_model_inputs_and_spanless_traces_arrive",
    ),
    Defect(
        "model-versions-tag-rewritten",
        "Creating a model version makes the server rewrite the logged model's mlflow.modelVersions tag "
        "with its own single entry, where the source may hold one entry per registration path.",
        "After the registry is imported, the source's value is set again, exactly.",
        "mlflow_sync.migrate.importer:Importer._restore_model_versions_tag",
        f"{INV}::test_a_second_migrate_with_a_new_work_dir_creates_nothing_and_carries_deleted_runs_by_default",
    ),
)
