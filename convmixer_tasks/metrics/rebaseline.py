"""Rebaseline on purpose: an operator marks a recorded run as the start of its fingerprint's throughput baseline
(an intended change: a new CANN, a new precision mode), with who, when and why on the row.

From then on the gate's history for that fingerprint starts at this run (see ``history.throughput_history``); a run
the gate had called ``regressed`` or ``inconclusive`` becomes ``ok`` (the change was intended), with a reason line
saying who changed the verdict and why. The UI button is another issue; the CLI is ``metrics-rebaseline``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.schema import (
    STATUS_FAILED,
    STATUS_INCONCLUSIVE,
    STATUS_OK,
    STATUS_PENDING,
    STATUS_REGRESSED,
    ValidationRun,
    utcnow,
)
from convmixer_tasks.metrics.url import mask_url
from convmixer_tasks.metrics.values import _check_int


def rebaseline(url: str, row_id: int, reason: str, by: str) -> dict[str, Any]:
    """Mark row ``row_id`` as its fingerprint's new throughput baseline; returns the updated row."""
    row_id = _check_int(row_id, "row", minimum=1)
    if not isinstance(reason, str) or not reason.strip():
        raise MetricsError("a rebaseline needs a reason (--reason 'CANN 8.1.RC1 rolled out'); it is kept on the row")
    if not isinstance(by, str) or not by.strip():
        raise MetricsError("a rebaseline needs who did it (--by NAME)")
    now = utcnow()
    with _db_errors(url, f"rebaseline row {row_id}"), Session(get_engine(url)) as session, session.begin():
        run = session.scalars(select(ValidationRun).where(ValidationRun.id == row_id)).one_or_none()
        if run is None:
            raise MetricsError(
                f"no metrics row with id {row_id} in {mask_url(url)}; see `convmixer-tasks metrics-show`"
            )
        if run.status in (STATUS_FAILED, STATUS_PENDING) or run.throughput is None:
            raise MetricsError(
                f"row {row_id} (run {run.run_id}) is {run.status!r} with throughput {run.throughput}: only a gated "
                f"run with a throughput can be a baseline; pick one that is {STATUS_OK}, {STATUS_REGRESSED} or "
                f"{STATUS_INCONCLUSIVE}"
            )
        line = f"rebaselined by {by.strip()} at {now.isoformat()}: {reason.strip()} (was {run.status!r})"
        session.execute(
            update(ValidationRun)
            .where(ValidationRun.id == row_id)
            .values(
                status=STATUS_OK,
                gate_reasons=[*(run.gate_reasons or []), line],
                rebaselined_at=now,
                rebaselined_by=by.strip()[:200],
                rebaseline_reason=reason.strip(),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    with Session(get_engine(url)) as session:
        refreshed = session.scalars(select(ValidationRun).where(ValidationRun.id == row_id)).one()
        return refreshed.to_dict()
