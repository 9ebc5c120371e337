"""Where the metrics page reads from: the Airflow Connection, else the env var, else the store's SQLite default.

The order matches what the DAG writes to, so the page shows the runs the DAG recorded: Connection
``[convmixer] metrics_conn_id`` (default ``convmixer_metrics``), else ``CONVMIXER_METRICS_DB_URL``, else
``resolve_metrics_url``'s default under ``$AIRFLOW_HOME``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from convmixer_tasks.metrics import AIRFLOW_CONNECTION_ID, resolve_metrics_url


def metrics_conn_id() -> str:
    from airflow.configuration import conf

    return conf.get("convmixer", "metrics_conn_id", fallback=AIRFLOW_CONNECTION_ID) or AIRFLOW_CONNECTION_ID


def connection_to_url(conn: Any) -> str:
    """SQLAlchemy URL of an Airflow Connection.

    An explicit ``{"url": ...}`` (or ``sqlalchemy_url``) in the extras wins, because Airflow's own URI rendering
    mangles SQLite paths and names PostgreSQL ``postgres``; otherwise the URL is built from the fields.
    """
    extra = conn.extra_dejson or {}
    for key in ("sqlalchemy_url", "url"):
        if extra.get(key):
            return str(extra[key])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        return f"sqlite:///{conn.host or conn.schema or ''}"
    drivername = {"postgres": "postgresql"}.get(conn_type, conn_type)
    return URL.create(
        drivername,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    ).render_as_string(hide_password=False)


def _connection_url(conn_id: str) -> str | None:
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    return connection_to_url(conn)


def metrics_db_url() -> str:
    """The metrics database URL the page queries (looked up per request so a new Connection applies at once)."""
    from airflow.configuration import AIRFLOW_HOME

    return resolve_metrics_url(explicit=_connection_url(metrics_conn_id()), airflow_home=AIRFLOW_HOME)
