"""The metrics store: one row per DAG run × batch size × backend in its own database (never Airflow's).

``resolve_metrics_url`` (``url.py``) decides which database; call ``upgrade(url)`` once before use (idempotent),
``record_run`` / ``record_runs`` after evaluation (a retry updates the same rows), and the query functions from
the UI. Evaluated rows are recorded ``pending``; ``convmixer_tasks.verdict.gate`` turns them into ok/regressed.
"""

from convmixer_tasks.metrics.engine import dispose_engines, upgrade
from convmixer_tasks.metrics.queries import (
    MAX_LIMIT,
    SERIES_KEY,
    count_runs,
    distinct_values,
    get_row,
    get_run,
    history_rows,
    query_runs,
    series,
    series_neighbours,
    time_range,
)
from convmixer_tasks.metrics.schema import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PENDING,
    STATUS_REGRESSED,
    STATUSES,
    MetricsRow,
    ValidationRun,
)
from convmixer_tasks.metrics.url import (
    AIRFLOW_CONNECTION_ID,
    ENV_VAR,
    connection_url,
    mask_url,
    normalize_url,
    resolve_metrics_url,
)
from convmixer_tasks.metrics.writes import record_run, record_runs, update_status

__all__ = [
    "AIRFLOW_CONNECTION_ID",
    "ENV_VAR",
    "MAX_LIMIT",
    "SERIES_KEY",
    "STATUSES",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_PENDING",
    "STATUS_REGRESSED",
    "MetricsRow",
    "ValidationRun",
    "connection_url",
    "count_runs",
    "dispose_engines",
    "distinct_values",
    "get_row",
    "get_run",
    "history_rows",
    "mask_url",
    "normalize_url",
    "query_runs",
    "record_run",
    "record_runs",
    "resolve_metrics_url",
    "series",
    "series_neighbours",
    "time_range",
    "update_status",
    "upgrade",
]
