"""Where the metrics page reads from: the same database the DAG writes to, resolved by the same rules.

Airflow Connection ``[convmixer] metrics_conn_id`` (default ``convmixer_metrics``), else ``$CONVMIXER_METRICS_DB_URL``,
else ``[convmixer] metrics_db_url``, else SQLite ``$AIRFLOW_HOME/convmixer_metrics.db``. The rules themselves live in
``convmixer_tasks.metrics.url`` (shared with the DAG, the CLI and the scripts); this module only reads the Airflow side
(config and Connection) as the API server sees it.
"""

from __future__ import annotations

from convmixer_tasks.metrics import AIRFLOW_CONNECTION_ID, connection_url, resolve_metrics_url


def _connection_url(conn_id: str) -> str | None:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)  # env AIRFLOW_CONN_*, secrets backends, then the DB
    except AirflowNotFoundException:
        return None
    return connection_url(conn.conn_type, conn.get_uri(), conn.host, conn.schema)


def metrics_db_url() -> str:
    """The metrics database URL; looked up on every request so a new or edited Connection applies at once."""
    from airflow.configuration import AIRFLOW_HOME, conf

    conn_id = conf.get("convmixer", "metrics_conn_id", fallback=AIRFLOW_CONNECTION_ID) or AIRFLOW_CONNECTION_ID
    setting = conf.get("convmixer", "metrics_db_url", fallback="")
    return resolve_metrics_url(_connection_url(conn_id), setting or None, AIRFLOW_HOME)
