"""Reading the metrics table: one row by key or id, pages of rows under the UI's filters, the history columns, a
row's series neighbours, chart series and the filter drop-downs' values — all as JSON-ready dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack, cast

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement, Label

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.schema import STATUSES, ValidationRun
from convmixer_tasks.metrics.values import _COLUMNS, _check_int, _check_status, parse_datetime

MAX_LIMIT = 500


def _key(
    run_id: str,
    batch_size: int,
    backend: str,
    precision_mode: str | None = None,
    model_variant: str | None = None,
    chip: str | None = None,
):
    """The row key's clauses; without ``precision_mode`` (``model_variant``) it matches every precision (model) of
    that run × batch size."""
    clauses: tuple[ColumnElement[bool], ...] = (
        ValidationRun.run_id == run_id,
        ValidationRun.batch_size == batch_size,
        ValidationRun.backend == backend,
    )
    if precision_mode is not None:
        clauses = (*clauses, ValidationRun.precision_mode == precision_mode)
    if model_variant is not None:
        clauses = (*clauses, ValidationRun.model_variant == model_variant)
    if chip is not None:  # the chip type of a run over chips ("" without)
        clauses = (*clauses, ValidationRun.chip == chip)
    return clauses


def describe_key(
    run_id: str, batch_size: int, backend: str, precision_mode: str | None = None, model_variant: str | None = None
) -> str:
    """The row key in messages: ``run R (model M, batch size 4, backend ascend, precision force_fp16)``."""
    model = "" if model_variant is None else f"model {model_variant}, "
    precision = "" if precision_mode is None else f", precision {precision_mode}"
    return f"run {run_id} ({model}batch size {batch_size}, backend {backend}{precision})"


def _one_row_id(
    session: Session,
    run_id: str,
    batch_size: int,
    backend: str,
    precision_mode: str | None = None,
    model_variant: str | None = None,
    chip: str | None = None,
) -> int | None:
    """The id of the row with this key, None when there is none. Without ``precision_mode`` / ``model_variant``
    the run × batch size must have one precision / model only: a run mapped over several is refused rather than
    one of them picked."""
    found = session.execute(
        select(ValidationRun.id, ValidationRun.precision_mode, ValidationRun.model_variant).where(
            *_key(run_id, batch_size, backend, precision_mode, model_variant, chip)
        )
    ).all()
    if len(found) > 1:
        models = sorted({str(model) for _, _, model in found})
        what, names, flag = (
            ("models", models, "model_variant")
            if len(models) > 1
            else ("precision modes", sorted(str(mode) for _, mode, _ in found), "precision_mode")
        )
        raise MetricsError(
            f"{describe_key(run_id, batch_size, backend)} has rows of several {what} ({', '.join(names)}); "
            f"pass the {flag} of the one you mean"
        )
    return found[0][0] if found else None


def get_run(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    precision_mode: str | None = None,
    model_variant: str | None = None,
    chip: str | None = None,
) -> dict[str, Any] | None:
    """One row as a JSON-ready dict, or None when it was never recorded. Without ``precision_mode`` (and
    ``model_variant``) the run × batch size must have a single row (``MetricsError`` naming them otherwise)."""
    with _db_errors(url, f"read run {run_id}"), Session(get_engine(url)) as session:
        row_id = _one_row_id(session, run_id, batch_size, backend, precision_mode, model_variant, chip)
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
