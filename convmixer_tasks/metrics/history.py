"""The throughput gate's history, read from the metrics table: the same series (model, backend, device, precision
mode, batch size) split by environment fingerprint.

``throughput_history`` returns what ``throughput.judge`` needs: the figures of the newest ok runs with the row's
fingerprint, the newest earlier gated row of that fingerprint (the two-run rule), and the newest earlier row of the
series whatever its fingerprint (to name a change). Pending, failed, regressed and inconclusive rows never count.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.schema import STATUS_INCONCLUSIVE, STATUS_OK, STATUS_REGRESSED, ValidationRun
from convmixer_tasks.metrics.values import parse_datetime

# How far back the gate looks for the fingerprint's runs (older ones are not a baseline any more).
SCAN_LIMIT = 500


FIGURE_COLUMNS = ("throughput_robust", "samples_ms", "batch_size", "throughput")


def figure(row: Any) -> float | None:
    """The throughput figure the verdict judges for a run (an ORM row or a ``get_run`` dict): the robust one
    (1000 * batch size / median per-loop time, see ``throughput``); for a row recorded before it was stored, the same
    from its kept samples; without samples, the tool's mean-based figure."""
    values: Any = row if isinstance(row, dict) else {name: getattr(row, name, None) for name in FIGURE_COLUMNS}
    if values.get("throughput_robust") is not None:
        return float(values["throughput_robust"])
    if values.get("samples_ms") and values.get("batch_size"):
        from convmixer_tasks.measure.loopstats import unpack_samples

        return 1000.0 * values["batch_size"] / statistics.median(unpack_samples(values["samples_ms"]))
    return values.get("throughput")


@dataclass(frozen=True)
class History:
    figures: list[float]  # same-fingerprint ok runs, newest first
    previous: dict[str, Any] | None  # newest earlier same-fingerprint gated row: run_id, figure, check, status
    last_of_series: dict[str, Any] | None  # newest earlier row of the series (any fingerprint): run_id, fingerprint
    other_fingerprints: int  # ok runs of the series left out because their fingerprint differs
    last_fingerprint_figures: list[float]  # ok runs of the last row's fingerprint, when it differs from this one
    last_fingerprint_top1: list[float]


def throughput_history(url: str, row: dict[str, Any], n: int) -> History:
    """History for ``row`` (a ``get_run`` dict), ordered by logical date like the gate's median always was."""
    series = [
        ValidationRun.model_variant == row["model_variant"],
        ValidationRun.backend == row["backend"],
        ValidationRun.device == row["device"],
        ValidationRun.batch_size == row["batch_size"],
        ValidationRun.run_id != row["run_id"],
        ValidationRun.logical_date.is_not(None),  # replaced below by the row's own date
        ValidationRun.status.in_((STATUS_OK, STATUS_REGRESSED, STATUS_INCONCLUSIVE)),
        ValidationRun.precision_mode == row["precision_mode"],  # a run mapped over modes: each mode its own series
    ]
    key = row.get("fingerprint_key")
    series[5] = ValidationRun.logical_date <= parse_datetime(row["logical_date"], "logical_date")[0]
    with _db_errors(url, "read throughput history"), Session(get_engine(url)) as session:
        runs = session.scalars(
            select(ValidationRun)
            .where(*series)
            .order_by(ValidationRun.logical_date.desc(), ValidationRun.id.desc())
            .limit(SCAN_LIMIT)
        ).all()
        same = [run for run in runs if run.fingerprint_key == key]
        # An operator's rebaseline starts the fingerprint's history afresh at that run (newest first: cut after it).
        start = next((index for index, run in enumerate(same) if run.rebaselined_at is not None), None)
        if start is not None:
            same = same[: start + 1]
        # An accepted run is its baseline's first figure even when an accuracy rule keeps it regressed (rebaseline).
        figures = [
            value
            for run in same
            if (run.status == STATUS_OK or run.rebaselined_at is not None) and (value := figure(run)) is not None
        ][:n]
        other = sum(1 for run in runs if run.fingerprint_key != key and run.status == STATUS_OK)
        previous = next((run for run in same if run.status != STATUS_INCONCLUSIVE), None)
        last = runs[0] if runs else None
        changed = (
            []
            if last is None or last.fingerprint_key == key
            else [run for run in runs if run.fingerprint_key == last.fingerprint_key and run.status == STATUS_OK][:n]
        )
        return History(
            figures=figures,
            previous=None
            if previous is None
            else {
                "run_id": previous.run_id,
                "figure": figure(previous),
                "check": previous.throughput_check,
                "status": previous.status,
                "fingerprint": previous.fingerprint,
            },
            last_of_series=None
            if last is None
            else {"run_id": last.run_id, "fingerprint": last.fingerprint, "fingerprint_key": last.fingerprint_key},
            other_fingerprints=other,
            last_fingerprint_figures=[value for run in changed if (value := figure(run)) is not None],
            last_fingerprint_top1=[run.top1 for run in changed if run.top1 is not None],
        )
