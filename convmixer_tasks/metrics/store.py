"""Reading and writing the metrics database: cached engines, the Alembic upgrade, ``record_run``
(an upsert by run × batch size × backend × precision mode), ``update_status`` and the queries the UI and the gate use.

Every function takes the database URL (the DAG builds it from the Airflow Connection ``convmixer_metrics``; Airflow
itself is never imported here). SQLite and PostgreSQL are supported. Each write is one transaction, so a failed
call leaves the row as it was. User-caused problems (bad values, bad filters, unreachable or un-migrated database)
raise ``MetricsError`` naming the value or the URL (password masked) and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

from sqlalchemy import Engine, Float, Integer, String, and_, create_engine, event, func, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, Label

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.schema import (
    GATED_STATUSES,
    KEY_COLUMNS,
    STATUS_FAILED,
    STATUSES,
    TABLE_NAME,
    THROUGHPUT_CHECKS,
    VERSION_TABLE,
    MetricsRow,
    UTCDateTime,
    ValidationRun,
    as_utc,
    utcnow,
)
from convmixer_tasks.metrics.url import AIRFLOW_CONNECTION_ID, ENV_VAR, mask_url, normalize_url
from convmixer_tasks.precision import effective_precision

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SUPPORTED_DIALECTS = ("sqlite", "postgresql")
MAX_LIMIT = 500
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


# --- validation ---------------------------------------------------------------------------------------------------

_COLUMNS = {column.key: column for column in ValidationRun.__table__.columns}
_FIELDS = MetricsRow.field_names()
_REQUIRED = ("run_id", "model_variant", "backend", "batch_size", "status")
_PERCENT_FIELDS = ("top1", "top5", "baseline_top1")
_FRACTION_FIELDS = ("fidelity_top1_agreement", "flips_p_value", "reference_p_value")
_SIGNED_FIELDS = ("fidelity_min_cosine",)  # a cosine of -1..1
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_status(status: Any, name: str = "status") -> str:
    if status not in STATUSES:
        raise MetricsError(f"{name} {status!r} is not a known status; use one of {', '.join(STATUSES)}")
    return status


def _check_reasons(reasons: Any, name: str = "gate_reasons") -> list[str] | None:
    if reasons is None:
        return None
    if (
        isinstance(reasons, str)
        or not isinstance(reasons, (list, tuple))
        or not all(isinstance(reason, str) for reason in reasons)
    ):
        raise MetricsError(f"{name} must be a list of strings, got {reasons!r}")
    return list(reasons)


def _check_fingerprint(value: Any) -> dict[str, Any]:
    """A flat mapping of names to strings, numbers, None or lists of numbers (the measurement record's confirmation
    figures): what the environment was and how it was measured (see fingerprint.py)."""

    def plain(item: Any) -> bool:
        return item is None or isinstance(item, (str, int, float))

    def numbers_list(item: Any) -> bool:
        return isinstance(item, list) and all(
            isinstance(one, (int, float)) and not isinstance(one, bool) for one in item
        )

    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and (plain(item) or numbers_list(item)) for key, item in value.items()
    ):
        raise MetricsError(f"fingerprint must map names to strings/numbers/None/lists of numbers, got {value!r}")
    return dict(value)


def _check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MetricsError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise MetricsError(f"{name} must be {bound}, got {value}")
    return int(value)  # numpy ints → int: psycopg2 cannot adapt numpy scalars


def _check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise MetricsError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if name in _PERCENT_FIELDS and not 0.0 <= value <= 100.0:
        raise MetricsError(f"{name} is a percentage (0..100), got {value}; multiply a 0..1 fraction by 100")
    if name in _FRACTION_FIELDS and not 0.0 <= value <= 1.0:
        raise MetricsError(f"{name} is a fraction or probability (0..1), got {value}")
    if name not in _PERCENT_FIELDS and name not in _SIGNED_FIELDS and value < 0:
        raise MetricsError(f"{name} cannot be negative, got {value}")
    return value


def parse_datetime(value: Any, name: str) -> tuple[datetime, bool]:
    """``value`` (datetime, date or ISO-8601 string) as an aware UTC datetime, and whether it was a bare date."""
    is_date = isinstance(value, date) and not isinstance(value, datetime)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed: datetime | date = datetime.fromisoformat(text)
        except ValueError:
            raise MetricsError(f"{name} {value!r} is not a date; use e.g. 2026-11-25 or 2026-11-25T08:00:00Z") from None
        is_date = len(text) <= len("2026-11-25")
        value = parsed
    if is_date:
        return datetime(value.year, value.month, value.day, tzinfo=UTC), True
    if not isinstance(value, datetime):
        raise MetricsError(f"{name} must be a date/time or ISO-8601 string, got {value!r}")
    value = as_utc(value)  # pendulum (Airflow) datetimes become plain ones below
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, tzinfo=UTC
    ), False


def _check_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "status":
        return _check_status(value)
    if name == "gate_reasons":
        return _check_reasons(value)
    if name in ("evidence", "energy"):
        if not isinstance(value, Mapping):
            raise MetricsError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
        return dict(value)
    if name == "fingerprint":
        return _check_fingerprint(value)
    if name == "throughput_check" and value not in THROUGHPUT_CHECKS:
        raise MetricsError(f"throughput_check {value!r} is not known; use one of {', '.join(THROUGHPUT_CHECKS)}")
    column_type = _COLUMNS[name].type
    if isinstance(column_type, UTCDateTime):
        return parse_datetime(value, name)[0]
    if isinstance(column_type, Integer):
        return _check_int(value, name, minimum=1 if name == "batch_size" else 0)
    if isinstance(column_type, Float):
        return _check_float(value, name)
    if isinstance(column_type, String):
        if not isinstance(value, str) or (name in _REQUIRED and not value.strip()):
            raise MetricsError(f"{name} must be a non-empty string, got {value!r}")
        if column_type.length and len(value) > column_type.length:
            raise MetricsError(f"{name} is {len(value)} characters; the column holds {column_type.length}")
        if name.endswith("_sha256") and not _SHA256_RE.fullmatch(value):
            raise MetricsError(f"{name} must be a lowercase hex SHA-256 (64 characters), got {value!r}")
        return value
    raise AssertionError(f"no validation rule for column {name}")  # a new column needs one


def _normalise_row(row: MetricsRow | Mapping[str, Any]) -> dict[str, Any]:
    """Validate a row completely before touching the database, so a bad row writes nothing."""
    if isinstance(row, MetricsRow):
        given = dataclasses.asdict(row)
    elif isinstance(row, Mapping):
        given = dict(row)
    else:
        raise MetricsError(f"a metrics row must be a MetricsRow or a dict, got {type(row).__name__}")
    unknown = sorted(set(given) - set(_FIELDS))
    if unknown:
        raise MetricsError(f"unknown metrics field(s) {', '.join(unknown)}; known fields: {', '.join(_FIELDS)}")
    missing = [name for name in _REQUIRED if given.get(name) in (None, "")]
    if missing:
        raise MetricsError(f"metrics row lacks required field(s) {', '.join(missing)}")
    values = {name: _check_value(name, given.get(name)) for name in _FIELDS}

    top1, top5, status = values["top1"], values["top5"], values["status"]
    if (top1 is None) != (top5 is None):
        raise MetricsError(
            f"partial accuracy for run {values['run_id']}: top1={top1}, top5={top5}; "
            "record both (evaluation finished) or neither (it did not)"
        )
    if top1 is not None and top5 < top1:
        raise MetricsError(
            f"top5 ({top5}) is below top1 ({top1}) for run {values['run_id']}; the two are swapped or miscomputed"
        )
    if status != STATUS_FAILED and top1 is None:
        raise MetricsError(
            f"status {status!r} needs accuracy but run {values['run_id']} has no top1/top5; "
            f"record status {STATUS_FAILED!r} for a run that did not reach evaluation"
        )
    if values["precision_mode"] is None:  # part of the key: the mode the backend computes in when none was set
        values["precision_mode"] = effective_precision(values["backend"], None)
    if values["logical_date"] is None:  # Airflow 3 runs triggered by hand may have no logical date
        values["logical_date"] = values["started_at"] or utcnow()
    return values


# --- writes -------------------------------------------------------------------------------------------------------


def _key(run_id: str, batch_size: int, backend: str, precision_mode: str | None = None):
    """The row key's clauses; without ``precision_mode`` it matches every precision of that run × batch size."""
    clauses = (ValidationRun.run_id == run_id, ValidationRun.batch_size == batch_size, ValidationRun.backend == backend)
    return clauses if precision_mode is None else (*clauses, ValidationRun.precision_mode == precision_mode)


def describe_key(run_id: str, batch_size: int, backend: str, precision_mode: str | None = None) -> str:
    """The row key in messages: ``run R (batch size 4, backend ascend, precision force_fp16)``."""
    precision = "" if precision_mode is None else f", precision {precision_mode}"
    return f"run {run_id} (batch size {batch_size}, backend {backend}{precision})"


def _one_row_id(
    session: Session, run_id: str, batch_size: int, backend: str, precision_mode: str | None = None
) -> int | None:
    """The id of the row with this key, None when there is none. Without ``precision_mode`` the run × batch size
    must have one precision only: a run mapped over several modes is refused rather than one of them picked."""
    found = session.execute(
        select(ValidationRun.id, ValidationRun.precision_mode).where(*_key(run_id, batch_size, backend, precision_mode))
    ).all()
    if len(found) > 1:
        modes = ", ".join(sorted(str(mode) for _, mode in found))
        raise MetricsError(
            f"{describe_key(run_id, batch_size, backend)} has rows of several precision modes ({modes}); "
            "pass the precision_mode of the one you mean"
        )
    return found[0][0] if found else None


def _dialect_insert(engine: Engine) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_update``, which the generic one lacks)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def record_run(url: str, row: MetricsRow | Mapping[str, Any]) -> int:
    """Insert the row, or replace it when (run_id, batch_size, backend) exists (a retried task); returns the id.

    A replaced row takes every field from the new record (a field left out becomes NULL: the row describes the
    latest attempt), except ``created_at`` and a ``logical_date`` the new record leaves out. One transaction;
    ``INSERT … ON CONFLICT DO UPDATE`` makes two concurrent writers of the same key end with one row (the later
    write wins) on both SQLite and PostgreSQL, so there is no insert race to retry.
    """
    return record_runs(url, [row])[0]


def record_runs(url: str, rows: Iterable[MetricsRow | Mapping[str, Any]], *, keep_gated: bool = False) -> list[int]:
    """``record_run`` for several rows in one transaction: all are validated first, and a row the database
    refuses rolls the others back, so a run's batch sizes are recorded together or not at all.

    ``keep_gated``: an existing row the gate has already decided (``ok``/``regressed``) is left as it is instead of
    replaced (its id is still returned): the failure path records ``failed`` rows and must not erase a verdict."""
    rows = list(rows)
    values = [_normalise_row(row) for row in rows]
    engine = get_engine(url)
    now = utcnow()
    what = ", ".join(dict.fromkeys(str(one["run_id"]) for one in values))
    with _db_errors(url, f"record run {what}"), Session(engine) as session, session.begin():
        ids = []
        for row, one in zip(rows, values, strict=False):
            session.execute(
                _upsert(engine, one, now, keep_logical_date=_given(row, "logical_date") is None, keep_gated=keep_gated)
            )
            row_id = session.scalar(select(ValidationRun.id).where(*_key(*(one[name] for name in KEY_COLUMNS))))
            assert row_id is not None, "the upsert just wrote this row"
            ids.append(row_id)
        return ids


def _upsert(engine: Engine, values: dict[str, Any], now: datetime, keep_logical_date: bool, keep_gated: bool):
    insert = _dialect_insert(engine)(ValidationRun).values(**values, created_at=now, updated_at=now)
    unchanged = (*KEY_COLUMNS, "logical_date") if keep_logical_date else KEY_COLUMNS
    changed = {name: insert.excluded[name] for name in (*values, "updated_at") if name not in unchanged}
    # The condition is part of the statement, so a verdict the gate stores concurrently is not overwritten either.
    where = ValidationRun.status.not_in(GATED_STATUSES) if keep_gated else None
    return insert.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=changed, where=where)


def _given(row: MetricsRow | Mapping[str, Any], name: str) -> Any:
    return getattr(row, name) if isinstance(row, MetricsRow) else row.get(name)


_UNCHANGED: Any = object()


def update_status(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    status: str,
    reasons: list[str] | None,
    *,
    baseline_top1: float | None = _UNCHANGED,
    baseline_throughput: float | None = _UNCHANGED,
    throughput_check: str | None = _UNCHANGED,
    throughput_p_value: float | None = _UNCHANGED,
    precision_mode: str | None = None,
) -> None:
    """Set a recorded row's status and gate reasons (and, when given, the baselines the gate compared against and
    the throughput rule's outcome). Without ``precision_mode`` the run × batch size must have a single row."""
    values: dict[str, Any] = {"status": _check_status(status), "gate_reasons": _check_reasons(reasons, "reasons")}
    for name, value in (
        ("baseline_top1", baseline_top1),
        ("baseline_throughput", baseline_throughput),
        ("throughput_check", throughput_check),
        ("throughput_p_value", throughput_p_value),
    ):
        if value is not _UNCHANGED:
            values[name] = _check_value(name, value)
    values["updated_at"] = utcnow()
    key = _key(run_id, batch_size, backend, precision_mode)
    what = f"{describe_key(run_id, batch_size, backend, precision_mode)} in {mask_url(url)}"
    # Write first, then read: on SQLite a read-then-write transaction can deadlock against a concurrent writer.
    # The top1 condition keeps 'ok'/'regressed' off rows that never reached evaluation.
    conditions = [*key] if status == STATUS_FAILED else [*key, ValidationRun.top1.is_not(None)]
    with _db_errors(url, f"update {what}"), Session(get_engine(url)) as session, session.begin():
        result = session.execute(
            update(ValidationRun).where(*conditions).values(**values).execution_options(synchronize_session=False)
        )
        updated = getattr(result, "rowcount", 0)  # an UPDATE returns a CursorResult
        if updated == 1:
            return
        if updated > 1:  # several precisions, none named: _one_row_id raises and the transaction rolls back
            _one_row_id(session, run_id, batch_size, backend, precision_mode)
        if session.scalar(select(ValidationRun.id).where(*key)) is None:
            raise MetricsError(f"no metrics row for {what}; record_run it before setting its status")
        raise MetricsError(
            f"{what} has no accuracy, so it cannot be {status!r}; only {STATUS_FAILED!r} fits "
            "a run that did not reach evaluation"
        )


# --- queries ------------------------------------------------------------------------------------------------------


def get_run(
    url: str, run_id: str, batch_size: int, backend: str, precision_mode: str | None = None
) -> dict[str, Any] | None:
    """One row as a JSON-ready dict, or None when it was never recorded. Without ``precision_mode`` the run ×
    batch size must have a single row (``MetricsError`` naming the modes otherwise)."""
    with _db_errors(url, f"read run {run_id}"), Session(get_engine(url)) as session:
        row_id = _one_row_id(session, run_id, batch_size, backend, precision_mode)
        run = None if row_id is None else session.get(ValidationRun, row_id)
        return None if run is None else run.to_dict()


class RunFilter(TypedDict, total=False):
    """The filters the UI and ``metrics-show`` offer; each left out (or None, or "") means 'any'."""

    model: str | None
    backend: str | None
    device: str | None
    batch_size: int | None
    since: Any  # ISO date / date-time string, date or datetime
    until: Any  # the same; a bare date includes that whole day
    status: str | None


def _filters(
    model: str | None = None,
    backend: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    since: Any = None,
    until: Any = None,
    status: str | None = None,
) -> list:
    """WHERE clauses for the UI's filters; None or "" means 'any'. A bare-date ``until`` includes that whole day."""
    clauses = []
    for column, value in (
        (ValidationRun.model_variant, model),
        (ValidationRun.backend, backend),
        (ValidationRun.device, device),
    ):
        if value not in (None, ""):
            if not isinstance(value, str):
                raise MetricsError(f"{column.key} filter must be a string, got {value!r}")
            clauses.append(column == value)
    if batch_size not in (None, ""):
        clauses.append(ValidationRun.batch_size == _check_int(batch_size, "batch_size", minimum=1))
    if status not in (None, ""):
        clauses.append(ValidationRun.status == _check_status(status))
    start, end = time_range(since, until)
    if start is not None:
        clauses.append(ValidationRun.logical_date >= start)
    if end is not None:
        clauses.append(ValidationRun.logical_date <= end)
    return clauses


def time_range(
    since: Any, until: Any, labels: tuple[str, str] = ("since", "until")
) -> tuple[datetime | None, datetime | None]:
    """Inclusive UTC bounds for a since/until filter (None or "" = open). A bare-date ``until`` covers that whole
    day: what a date picker means. ``labels`` name the two in messages (the UI calls them From and To)."""
    named = [
        label if label == field else f"{label} ({field})"
        for label, field in zip(labels, ("since", "until"), strict=True)
    ]
    start = end = None
    if since not in (None, ""):
        start = parse_datetime(since, named[0])[0]
    if until not in (None, ""):
        end, whole_day = parse_datetime(until, named[1])
        if whole_day:
            end += timedelta(days=1, microseconds=-1)
    if start is not None and end is not None and start > end:
        raise MetricsError(f"{labels[0]} ({since}) is after {labels[1]} ({until}); swap them or widen the range")
    return start, end


_NEWEST_FIRST = (ValidationRun.logical_date.desc(), ValidationRun.id.desc())
_LATEST_RUN_FIRST = (ValidationRun.ran_at.desc(), ValidationRun.id.desc())


def query_runs(
    url: str, limit: int = 50, offset: int = 0, by_run_time: bool = False, **filters: Unpack[RunFilter]
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows and the total number matching the filters; newest first by logical date, or by when the
    run actually ran (``by_run_time``: ``ValidationRun.ran_at``, what the UI shows)."""
    clauses = _filters(**filters)
    limit = _check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
    offset = _check_int(offset, "offset", minimum=0)
    with _db_errors(url, "query runs"), Session(get_engine(url)) as session:
        total = session.scalar(select(func.count()).select_from(ValidationRun).where(*clauses)) or 0
        runs = session.scalars(
            select(ValidationRun)
            .where(*clauses)
            .order_by(*(_LATEST_RUN_FIRST if by_run_time else _NEWEST_FIRST))
            .limit(limit)
            .offset(offset)
        ).all()
        return [run.to_dict() for run in runs], total


# At class level the hybrid ``ran_at`` is its SQL expression; mypy sees only the accessor type.
_ran_at_sql = cast("ColumnElement[Any]", ValidationRun.ran_at)
# The columns a run's series shares: one model's figures at one batch size, on one backend, device and precision.
SERIES_KEY = ("model_variant", "backend", "device", "precision_mode", "batch_size")


def _selected(columns: Iterable[str]) -> tuple[list[str], list[Label[Any]]]:
    """The names asked for (``id`` and ``ran_at`` allowed) and their labelled columns; unknown names are refused."""
    names = list(dict.fromkeys(columns))
    known: dict[str, ColumnElement[Any]] = {**_COLUMNS, "ran_at": _ran_at_sql}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise MetricsError(f"unknown metrics column(s) {', '.join(unknown)}; use names from MetricsRow or ran_at")
    return names, [known[name].label(name) for name in names]


def _plain_rows(names: list[str], rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in zip(names, row, strict=True)
        }
        for row in rows
    ]


def history_rows(
    url: str, columns: Iterable[str], distinct: bool = False, limit: int | None = None, **filters: Unpack[RunFilter]
) -> list[dict[str, Any]]:
    """The named columns (``ran_at`` included) of every row the filters match, latest run first, as plain
    JSON-ready dicts: one light query for views that need the whole history but only a few fields of it.
    ``distinct`` keeps one of each combination (e.g. one row per run instead of one per batch size); ``limit``
    keeps only the latest rows."""
    names, selected = _selected(columns)
    query = select(*selected).where(*_filters(**filters))
    if distinct:  # PostgreSQL orders a DISTINCT by selected columns only: by them, in the order given
        query = query.distinct().order_by(*(column.desc() for column in selected))
    else:
        query = query.order_by(*_LATEST_RUN_FIRST)
    if limit is not None:
        query = query.limit(_check_int(limit, "limit", minimum=1))
    with _db_errors(url, "read history"), get_engine(url).connect() as connection:
        return _plain_rows(names, connection.execute(query))


def count_runs(url: str, **filters: Unpack[RunFilter]) -> int:
    """How many rows the filters match."""
    with _db_errors(url, "count runs"), get_engine(url).connect() as connection:
        return connection.scalar(select(func.count()).select_from(ValidationRun).where(*_filters(**filters))) or 0


def get_row(url: str, row_id: int) -> dict[str, Any] | None:
    """One row by its id (``MetricsRow`` fields, ``id``, ``ran_at``), or None when there is no such row."""
    row_id = _check_int(row_id, "row id", minimum=1)
    with _db_errors(url, f"read row {row_id}"), Session(get_engine(url)) as session:
        run = session.get(ValidationRun, row_id)
        return None if run is None else run.to_dict()


def series_neighbours(
    url: str, row: Mapping[str, Any], columns: Iterable[str], earlier: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Rows of ``row``'s series (``SERIES_KEY``) around it by when they ran: up to ``earlier`` rows before it
    (newest first) and the first row after it (or None). ``row`` is a ``get_row`` dict."""
    earlier = _check_int(earlier, "earlier", minimum=0, maximum=MAX_LIMIT)
    names, selected = _selected(columns)
    same = [_COLUMNS[name] == row[name] for name in SERIES_KEY]  # None → IS NULL (a row without a device)
    ran, row_id = parse_datetime(row["ran_at"], "ran_at")[0], row["id"]
    before = or_(_ran_at_sql < ran, and_(_ran_at_sql == ran, ValidationRun.id < row_id))
    after = or_(_ran_at_sql > ran, and_(_ran_at_sql == ran, ValidationRun.id > row_id))
    with _db_errors(url, f"read the series of row {row_id}"), get_engine(url).connect() as connection:
        previous = (
            _plain_rows(
                names,
                connection.execute(select(*selected).where(*same, before).order_by(*_LATEST_RUN_FIRST).limit(earlier)),
            )
            if earlier
            else []
        )
        following = _plain_rows(
            names,
            connection.execute(
                select(*selected).where(*same, after).order_by(_ran_at_sql.asc(), ValidationRun.id.asc()).limit(1)
            ),
        )
    return previous, (following[0] if following else None)


def series(url: str, **filters: Unpack[RunFilter]) -> list[dict[str, Any]]:
    """Rows for charts: one series per (model_variant, batch_size, backend, device), points oldest first.

    Each series is ``{"model_variant", "batch_size", "backend", "device", "points": [{"logical_date", "top1",
    "throughput", "status", "run_id", "dag_id", "baseline_top1", "baseline_throughput"}, ...]}``; series are sorted
    by those keys.
    """
    clauses = _filters(**filters)
    group_columns = (ValidationRun.model_variant, ValidationRun.batch_size, ValidationRun.backend, ValidationRun.device)
    point_columns = (
        ValidationRun.logical_date,
        ValidationRun.top1,
        ValidationRun.throughput,
        ValidationRun.status,
        ValidationRun.run_id,
        ValidationRun.dag_id,
        ValidationRun.baseline_top1,
        ValidationRun.baseline_throughput,
    )
    with _db_errors(url, "query series"), Session(get_engine(url)) as session:
        rows = session.execute(
            select(*group_columns, *point_columns)
            .where(*clauses)
            .order_by(ValidationRun.logical_date, ValidationRun.id)
        ).all()
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        group = tuple(row[: len(group_columns)])
        point = dict(zip((column.key for column in point_columns), row[len(group_columns) :], strict=False))
        logical_date = point["logical_date"]
        assert isinstance(logical_date, datetime), "logical_date is NOT NULL"
        point["logical_date"] = logical_date.isoformat()
        grouped.setdefault(group, []).append(point)
    names = [column.key for column in group_columns]
    return [
        {**dict(zip(names, group, strict=False)), "points": points}
        for group, points in sorted(
            grouped.items(), key=lambda item: tuple("" if part is None else part for part in item[0])
        )
    ]


def distinct_values(url: str) -> dict[str, list]:
    """What the UI's filter drop-downs offer: the models, backends, devices and batch sizes present, sorted."""
    columns = {
        "models": ValidationRun.model_variant,
        "backends": ValidationRun.backend,
        "devices": ValidationRun.device,
        "batch_sizes": ValidationRun.batch_size,
    }
    with _db_errors(url, "list filter values"), Session(get_engine(url)) as session:
        values = {
            name: list(session.scalars(select(column).distinct().where(column.is_not(None)).order_by(column)))
            for name, column in columns.items()
        }
    values["statuses"] = list(STATUSES)
    return values
