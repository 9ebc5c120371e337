"""Writing the metrics table: ``record_run(s)`` (an upsert by run × batch size × backend × precision mode, every row
validated before the database is touched) and ``update_status`` (the gate's verdict). Each write is one transaction,
so a failed call leaves the rows as they were."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from convmixer_tasks.backends.precision import effective_precision
from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.queries import _key, _one_row_id, describe_key
from convmixer_tasks.metrics.schema import GATED_STATUSES, KEY_COLUMNS, STATUS_FAILED, MetricsRow, ValidationRun, utcnow
from convmixer_tasks.metrics.url import mask_url
from convmixer_tasks.metrics.values import _FIELDS, _REQUIRED, _check_reasons, _check_status, _check_value


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
    values["chip"] = values["chip"] or ""  # no chip types: "" (a key column; NULL would never conflict)

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
    model_variant: str | None = None,
    chip: str | None = None,
) -> None:
    """Set a recorded row's status and gate reasons (and, when given, the baselines the gate compared against and
    the throughput rule's outcome). Without ``precision_mode`` (and ``model_variant``) the run × batch size must
    have a single row."""
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
    key = _key(run_id, batch_size, backend, precision_mode, model_variant, chip)
    what = f"{describe_key(run_id, batch_size, backend, precision_mode, model_variant)} in {mask_url(url)}"
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
            _one_row_id(session, run_id, batch_size, backend, precision_mode, model_variant, chip)
        if session.scalar(select(ValidationRun.id).where(*key)) is None:
            raise MetricsError(f"no metrics row for {what}; record_run it before setting its status")
        raise MetricsError(
            f"{what} has no accuracy, so it cannot be {status!r}; only {STATUS_FAILED!r} fits "
            "a run that did not reach evaluation"
        )
