"""The reads behind the alerts and the digest: a run's rows, each row's series context (its baseline row, its
inconclusive streak) and the period a digest covers. Plain dicts out (``ValidationRun.to_dict()`` shape)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.queries import SERIES_KEY, history_rows, series_neighbours
from convmixer_tasks.metrics.schema import ValidationRun
from convmixer_tasks.status import STATUS_INCONCLUSIVE, STATUS_OK

# What a digest reads of each row in its period (a light query: no samples, no evidence).
DIGEST_COLUMNS = (
    "id",
    "run_id",
    "dag_id",
    *SERIES_KEY,
    "status",
    "top1",
    "throughput",
    "gate_reasons",
    "rebaselined_at",
    "rebaselined_by",
    "rebaseline_reason",
    "logical_date",
    "ran_at",
)
# Earlier rows of a series read to find its baseline and its inconclusive streak.
SERIES_LOOKBACK = 50


def run_rows(url: str, run_id: str) -> list[dict[str, Any]]:
    """Every row a run wrote, by batch size and precision mode."""
    with _db_errors(url, f"read the rows of run {run_id}"), Session(get_engine(url)) as session:
        rows = session.scalars(
            select(ValidationRun)
            .where(ValidationRun.run_id == run_id)
            .order_by(ValidationRun.batch_size, ValidationRun.precision_mode)
        )
        return [row.to_dict() for row in rows]


def series_context(url: str, row: dict[str, Any]) -> tuple[dict[str, Any] | None, int]:
    """(the series' latest ``ok`` row before this one — its baseline — or None; how many runs in a row, this one
    included, are ``inconclusive``)."""
    earlier, _ = series_neighbours(url, row, ("id", "run_id", "status"), SERIES_LOOKBACK)
    baseline = next((one for one in earlier if one["status"] == STATUS_OK), None)
    streak = 0
    if row.get("status") == STATUS_INCONCLUSIVE:
        streak = 1
        for one in earlier:
            if one["status"] != STATUS_INCONCLUSIVE:
                break
            streak += 1
    return baseline, streak


def period_rows(url: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The rows of runs whose logical date falls in [since, until], latest run first."""
    return history_rows(url, DIGEST_COLUMNS, since=since, until=until)


def row_before(url: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The series' row that ran just before ``row`` (a ``get_row``-shaped dict with ``ran_at``), or None."""
    earlier, _ = series_neighbours(url, row, DIGEST_COLUMNS, 1)
    return earlier[0] if earlier else None
