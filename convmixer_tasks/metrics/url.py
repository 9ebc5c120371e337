"""Which database the metrics live in — the one rule the DAG, the UI plugin, the CLI and the scripts all follow:

1. the Airflow Connection ``[convmixer] metrics_conn_id`` (default ``convmixer_metrics``), when it exists;
2. else ``$CONVMIXER_METRICS_DB_URL``;
3. else ``[convmixer] metrics_db_url``;
4. else SQLite beside Airflow's own files: ``$AIRFLOW_HOME/convmixer_metrics.db`` (never Airflow's database).

The caller reads the Airflow side (the Connection, the setting) in its own process; this module only decides.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from convmixer_tasks.errors import ConfigError

ENV_VAR = "CONVMIXER_METRICS_DB_URL"
DEFAULT_DB_FILENAME = "convmixer_metrics.db"
AIRFLOW_CONNECTION_ID = "convmixer_metrics"
# The PostgreSQL driver this project pins (psycopg2-binary). SQLAlchemy 2.1 maps a bare ``postgresql://`` to
# psycopg 3, which is not installed, and Airflow Connections render PostgreSQL as ``postgres://``.
POSTGRES_SCHEME = "postgresql+psycopg2://"


def resolve_metrics_url(
    connection: str | None = None,
    setting: str | None = None,
    airflow_home: str | os.PathLike | None = None,
    env: Mapping[str, str] = os.environ,
) -> str:
    """The metrics DB URL by the rule above. ``connection`` is the Connection's URL (or a CLI ``--url``)."""
    explicit = connection or env.get(ENV_VAR) or setting
    if explicit:
        return normalize_url(explicit)
    home = Path(airflow_home or env.get("AIRFLOW_HOME") or "~/airflow").expanduser().absolute()
    return f"sqlite:///{home / DEFAULT_DB_FILENAME}"


def connection_url(conn_type: str | None, uri: str, host: str | None = None, schema: str | None = None) -> str:
    """A SQLAlchemy URL from an Airflow Connection's fields.

    Airflow writes PostgreSQL as ``postgres://`` and renders a SQLite connection as ``sqlite:///%2Fpath`` (not a
    path SQLAlchemy can open), so both are rebuilt here.
    """
    if conn_type == "sqlite":
        path = host or schema
        if not path:
            raise ConfigError("the metrics SQLite connection names no file; set its host to the database path")
        return f"sqlite:///{path}"
    return normalize_url(uri)


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` name the pinned driver; every other URL is returned unchanged."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return POSTGRES_SCHEME + url[len(scheme) :]
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL that does not exist yet, else None. Readers check it first: opening a missing SQLite
    file creates an empty database, which would hide a mistyped path behind "no runs"."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return None  # the store names the bad URL
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return None if Path(database).exists() else Path(database)


def require_existing_database(url: str, env: Mapping[str, str] = os.environ) -> None:
    """Refuse a SQLite URL whose file does not exist: every command but ``metrics-upgrade`` and a recording run reads
    or updates an existing database, and opening a missing file would create an empty one at a mistyped path."""
    missing = missing_sqlite_file(url)
    if missing is None:
        return
    home = env.get("AIRFLOW_HOME")
    default = f"$AIRFLOW_HOME/{DEFAULT_DB_FILENAME}, " + (
        f"AIRFLOW_HOME={home}" if home else "AIRFLOW_HOME unset, so ~/airflow"
    )
    raise ConfigError(
        f"no metrics database at {missing}: the file does not exist (no run was recorded there, or the path is "
        f"mistyped); check the path (--url, else ${ENV_VAR}, else {default}: `source .venv/bin/activate` sets the "
        "demo's) or record a run first"
    )
