"""Full metric histories of many runs per request, shared by export, sync and validation.

MLflow's public API has one ``metrics/get-history`` call per run and metric key: 10,000 requests for
1,000 runs with 10 metrics. The server's ``get-history-bulk`` endpoint (the UI's) answers one key for
up to 100 runs at once; servers without it (or database URIs) fall back to the per-run call.
"""

from __future__ import annotations

import logging

from mlflow_sync.connection import Server

log = logging.getLogger(__name__)

BULK_HISTORY = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
MAX_RUNS_PER_REQUEST = 100  # the server refuses more
MAX_POINTS = 25000  # the server truncates the *whole answer* to this many points


class HistoryReader:
    """Reads histories from one server; remembers when the server has no bulk endpoint."""

    def __init__(self, server: Server):
        self.server = server
        self.bulk = server.transport is not None

    def fetch(self, run_ids: list[str], key: str) -> list[dict]:
        """Every point of ``key`` in these runs as ``{"run_id", "step", "timestamp", "value"}``."""
        points: list[dict] = []
        for start in range(0, len(run_ids), MAX_RUNS_PER_REQUEST):
            points.extend(self._fetch_chunk(run_ids[start:start + MAX_RUNS_PER_REQUEST], key))
        return points

    def _fetch_chunk(self, run_ids: list[str], key: str) -> list[dict]:
        if self.bulk:
            response = self.server.transport.request(
                "GET", BULK_HISTORY, params={"run_id": run_ids, "metric_key": key, "max_results": MAX_POINTS}
            )
            if response.status_code in (404, 405, 501):
                log.info("%s has no bulk metric history endpoint: one request per run and metric key",
                         self.server.display)
                self.bulk = False
            else:
                if response.status_code != 200:
                    from mlflow.exceptions import MlflowException

                    raise MlflowException(f"{BULK_HISTORY} answered HTTP {response.status_code}: "
                                          f"{response.text[:200]}")
                metrics = response.json().get("metrics", [])
                if len(metrics) < MAX_POINTS:
                    return metrics
                if len(run_ids) > 1:  # truncated: split until every answer is complete
                    middle = len(run_ids) // 2
                    return self._fetch_chunk(run_ids[:middle], key) + self._fetch_chunk(run_ids[middle:], key)
        return [
            {"run_id": run_id, "step": m.step, "timestamp": m.timestamp, "value": m.value}
            for run_id in run_ids for m in self.server.client.get_metric_history(run_id, key)
        ]
