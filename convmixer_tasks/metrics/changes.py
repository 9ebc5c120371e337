"""Change points over each series (model × backend × device × precision × batch size), after every gated run.

``update_change_points`` reads the series' gated rows (ok and regressed; inconclusive, failed and pending runs are
not measurements of the artifact) plus the row being gated, runs ``changepoints.detect`` on their throughput and
makes the ``convmixer_change_points`` table say what the detector sees now: new steps are added (detected at this
row), steps it still sees keep their first detection, steps it no longer sees (more runs showed an episode, not a
step) are removed. Each stored step names the fingerprint differences between the runs either side of it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from convmixer_tasks.measure import changepoints as cp
from convmixer_tasks.measure import fingerprint as fp
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.history import figure
from convmixer_tasks.metrics.schema import STATUS_OK, STATUS_REGRESSED, ChangePoint, ValidationRun

METRIC = "throughput"


def series_of(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in ("model_variant", "backend", "device", "precision_mode", "batch_size")}


def series_key(series: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(series, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Found:
    """One change point as the gate and the CLI see it (the stored row's values, plus the runs either side)."""

    start_row_id: int
    start_run_id: str
    detected_row_id: int | None
    before_value: float
    after_value: float
    magnitude_pct: float
    fingerprint_changes: list[str]
    p_value: float


@dataclass(frozen=True)
class Detected:
    found: list[Found]  # oldest first
    steps: list[cp.Step]  # the detector's output, indexes into the series as read
    statuses: list[str]  # the series' statuses, oldest first, the row being gated as 'pending'


def update_change_points(url: str, row: dict[str, Any]) -> Detected:
    """Detect and store the series' change points as of ``row`` (a ``get_run`` dict, being gated); oldest first."""
    series = series_of(row)
    key = series_key(series)
    where = [getattr(ValidationRun, name) == value for name, value in series.items()]
    with _db_errors(url, "update the change points"), Session(get_engine(url)) as session, session.begin():
        runs = session.scalars(
            select(ValidationRun)
            .where(*where, ValidationRun.throughput.is_not(None))
            .where((ValidationRun.status.in_((STATUS_OK, STATUS_REGRESSED))) | (ValidationRun.id == row["id"]))
            .where(
                ValidationRun.logical_date
                <= select(ValidationRun.logical_date).where(ValidationRun.id == row["id"]).scalar_subquery()
            )
            .order_by(ValidationRun.logical_date.desc(), ValidationRun.id.desc())
            .limit(cp.WINDOW)
        ).all()[::-1]
        steps = cp.detect([value for run in runs if (value := figure(run)) is not None])  # the verdict's figure; all
        stored = {
            point.start_row_id: point
            for point in session.scalars(
                select(ChangePoint).where(ChangePoint.series_key == key, ChangePoint.metric == METRIC)
            )
        }
        window_ids = {run.id for run in runs}
        found, seen = [], set()
        for step in steps:
            start, before = runs[step.index], runs[step.index - 1]
            seen.add(start.id)
            changes = fp.differences(before.fingerprint, start.fingerprint)
            detail = {
                "detector": cp.DETECTOR,
                "penalty_per_log_n": cp.PENALTY_PER_LOG_N,
                "min_size": cp.MIN_SIZE,
                "clip": cp.CLIP,
                "noise_log": step.noise,
                "p_value": step.p_value,
                "runs": len(runs),
            }
            point = stored.get(start.id)
            if point is None:
                point = ChangePoint(
                    series_key=key, series=series, metric=METRIC, start_row_id=start.id, detected_row_id=row["id"]
                )
                session.add(point)
            point.before_value, point.after_value = step.before, step.after
            point.magnitude_pct, point.fingerprint_changes, point.detail = step.magnitude_pct, changes, detail
            found.append(
                Found(
                    start.id,
                    start.run_id,
                    point.detected_row_id,
                    step.before,
                    step.after,
                    step.magnitude_pct,
                    changes,
                    step.p_value,
                )
            )
        gone = [start for start in stored if start in window_ids and start not in seen]
        if gone:
            session.execute(delete(ChangePoint).where(ChangePoint.id.in_([stored[start].id for start in gone])))
        statuses = ["pending" if run.id == row["id"] else run.status for run in runs]
        return Detected(found, steps, statuses)


def change_points(url: str, series: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Stored change points (all, or one series'), newest start first, as JSON-ready dicts with their start run."""
    with _db_errors(url, "read the change points"), Session(get_engine(url)) as session:
        query = select(ChangePoint, ValidationRun.run_id).join(
            ValidationRun, ValidationRun.id == ChangePoint.start_row_id
        )
        if series is not None:
            query = query.where(ChangePoint.series_key == series_key(series))
        rows = session.execute(query.order_by(ChangePoint.start_row_id.desc())).all()
        return [
            {
                **{column.key: _plain(getattr(point, column.key)) for column in ChangePoint.__table__.columns},
                "start_run_id": run_id,
            }
            for point, run_id in rows
        ]


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value
