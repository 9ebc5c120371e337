"""The review of a regressed (or re-fingerprinted) run: which rows it asks about, and what an answer does.

"Accept as the new baseline" goes through ``metrics.rebaseline`` — the same path as the metrics page's button —
with the responder, the time and the reason on each row. "Keep as regression", or no answer before the timeout,
leaves the verdicts as they are. The run then ends by its rows (``conclusion``): failed while any stays
``regressed``, ``failed`` or ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.run.alerts import ENVIRONMENT_CHANGED, RunAlert
from convmixer_tasks.run.records import Record
from convmixer_tasks.status import STATUS_FAILED, STATUS_PENDING, STATUS_REGRESSED

ACCEPT = "Accept as the new baseline"
KEEP = "Keep as regression"
OPTIONS = (ACCEPT, KEEP)
DEFAULT_REASON = "accepted in the Airflow review"


@dataclass(frozen=True)
class ReviewOutcome(Record):
    accepted: tuple[int, ...]  # row ids now their series' baseline
    refused: tuple[str, ...]  # one line per row the rebaseline path refused
    line: str  # what happened, for the log, the alert and the run's end


def rows_to_review(alert: RunAlert) -> list[int]:
    """The rows a person is asked about: the regressed ones, and the ones whose environment changed."""
    return [
        row.row_id for row in alert.rows if row.status == STATUS_REGRESSED or row.reason.startswith(ENVIRONMENT_CHANGED)
    ]


def apply_answer(
    url: str, row_ids: Sequence[int], chosen: Sequence[str], by: str | None, at: str, why: str | None
) -> ReviewOutcome:
    """Carry out the review's answer. ``by`` None: nobody answered before the timeout (the default applies)."""
    from convmixer_tasks.metrics.rebaseline import rebaseline

    if by is None:
        line = f"review timed out at {at} with no answer: the verdicts are kept (rows {list(row_ids)})"
        return ReviewOutcome(accepted=(), refused=(), line=line)
    if ACCEPT not in chosen:
        return ReviewOutcome(accepted=(), refused=(), line=f"{by} chose to keep the verdicts at {at}")
    reason = (why or "").strip() or DEFAULT_REASON
    accepted, refused = [], []
    for row_id in row_ids:
        try:
            rebaseline(url, row_id, reason, by)
            accepted.append(row_id)
        except MetricsError as exc:  # the rebaseline path's own rule (e.g. a row without a throughput)
            refused.append(f"row {row_id}: {exc}")
    line = f"{by} accepted rows {accepted} as the new baseline at {at}: {reason}"
    if refused:
        line += f"; not accepted: {'; '.join(refused)}"
    return ReviewOutcome(accepted=tuple(accepted), refused=tuple(refused), line=line)


def conclusion(rows: Sequence[dict[str, Any]]) -> str | None:
    """Why the run must end failed (its rows after the gate and any review), or None when it succeeded."""
    if not rows:
        return "the run recorded no metrics row; see its task logs"
    bad = [row for row in rows if row.get("status") in (STATUS_REGRESSED, STATUS_FAILED, STATUS_PENDING)]
    if not bad:
        return None
    return "; ".join(
        f"bs{row['batch_size']} {row.get('precision_mode') or 'default precision'} (row {row['id']}) is {row['status']}"
        for row in bad
    )
