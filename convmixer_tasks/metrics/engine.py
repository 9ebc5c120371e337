"""The metrics database's engines and migrations: one cached engine per URL (forgotten in a forked child), the Alembic
upgrade under a lock, and driver errors turned into ``MetricsError`` naming the (masked) URL and the fix.

Every function of the metrics package takes the database URL (the DAG builds it from the Airflow Connection
``convmixer_metrics``; Airflow itself is never imported here). SQLite and PostgreSQL are supported.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.schema import TABLE_NAME, VERSION_TABLE
from convmixer_tasks.metrics.url import AIRFLOW_CONNECTION_ID, ENV_VAR, mask_url, normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
# pg_advisory_xact_lock key ("CVMX" as an int) so two processes upgrading at once queue instead of racing.
_UPGRADE_LOCK_KEY = 0x43564D58

_FIX_URL = (
    f"check that the database server is running and reachable, and the URL (Airflow connection "
    f"'{AIRFLOW_CONNECTION_ID}', ${ENV_VAR} or --url)"
)


# --- URLs and engines ---------------------------------------------------------------------------------------------

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def get_engine(url: str) -> Engine:
    """The engine for ``url``, created once per process (each has a connection pool; one per call would leak)."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = _create_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every cached engine's connections (tests, forked workers, before dropping a database)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _forget_engines_in_child() -> None:
    """After a fork (Celery prefork, LocalExecutor) the child must not reuse the parent's pooled connections."""
    global _ENGINES_LOCK
    _ENGINES_LOCK = threading.Lock()  # the parent may have held it while forking
    for engine in _ENGINES.values():
        engine.dispose(close=False)  # drop the pool without closing the parent's sockets
    _ENGINES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_engines_in_child)


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(normalize_url(url))
    except sa_exc.ArgumentError:
        raise MetricsError(
            f"metrics DB URL {mask_url(url)!r} is not a SQLAlchemy URL; use e.g. "
            f"postgresql+psycopg2://user:pass@host:5432/db or sqlite:////abs/path.db"
        ) from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise MetricsError(
            f"metrics DB URL {mask_url(url)} uses {dialect!r}; supported: "
            f"{', '.join(SUPPORTED_DIALECTS)} (the upsert relies on INSERT … ON CONFLICT)"
        )
    try:
        if dialect == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": 30})
            _use_real_sqlite_transactions(engine)
            return engine
        connect_args = {}
        if parsed.get_driver_name() == "psycopg2" and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = 10  # a firewalled host fails in seconds instead of hanging a task
        # pre_ping: the UI process lives for days and the server may restart under it.
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise MetricsError(
            f"no driver for metrics DB URL {mask_url(url)} ({exc}); install it "
            f"(psycopg2-binary for postgresql+psycopg2) or fix the URL's driver part"
        ) from exc


def _use_real_sqlite_transactions(engine: Engine) -> None:
    """Make pysqlite emit BEGIN itself: by default it runs DDL and SELECTs outside any transaction, which breaks
    'one transaction per write' (SQLAlchemy's documented recipe). ``sqlite_begin="BEGIN IMMEDIATE"`` takes the write
    lock up front (used by ``upgrade`` so concurrent upgrades queue)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))


@contextlib.contextmanager
def _db_errors(url: str, action: str) -> Iterator[None]:
    """Turn driver errors into MetricsError naming the (masked) URL and the fix."""
    try:
        yield
    except sa_exc.IntegrityError as exc:
        raise MetricsError(
            f"metrics database {mask_url(url)} refused to {action}: {_detail(exc, url)}; fix the row's values"
        ) from exc
    except sa_exc.DBAPIError as exc:
        if getattr(exc.orig, "pgcode", None) == "42P01" or "no such table" in str(exc.orig):
            raise MetricsError(
                f"metrics table {TABLE_NAME} is missing in {mask_url(url)}; create it with "
                f"`convmixer-tasks metrics-upgrade --url <url>` (or metrics.upgrade(url))"
            ) from exc
        raise MetricsError(
            f"cannot {action}: metrics database {mask_url(url)} is unreachable or unusable "
            f"({_detail(exc, url)}); {_FIX_URL}"
        ) from exc


def _detail(exc: sa_exc.DBAPIError, url: str) -> str:
    """The driver's own message on one line, without the password (drivers rarely echo it, but be sure)."""
    text = " ".join(line.strip() for line in str(exc.orig).splitlines() if line.strip())
    password = make_url(url).password
    return text.replace(str(password), "***") if password else text


# --- migrations ---------------------------------------------------------------------------------------------------


def alembic_config(url: str):
    """An Alembic Config built in code, so migrations run from an installed package with no alembic.ini."""
    from alembic.config import Config  # imported here: query-only callers (the UI) never pay for Alembic

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser interpolation
    return config


def upgrade(url: str, revision: str = "head") -> str | None:
    """Create or migrate the metrics table to ``revision``; idempotent. Returns the revision the DB is now at.

    Runs in one transaction under a lock (PostgreSQL advisory lock, SQLite ``BEGIN IMMEDIATE``), so two tasks
    upgrading the same database at once wait for each other instead of both creating the table.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    engine = get_engine(url)
    _make_sqlite_folder(engine)
    with _db_errors(url, "upgrade the schema"), engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(select(func.pg_advisory_xact_lock(_UPGRADE_LOCK_KEY)))
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _make_sqlite_folder(engine: Engine) -> None:
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
