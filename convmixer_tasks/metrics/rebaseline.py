"""Accept as baseline: an operator marks a recorded run as the start of its fingerprint's throughput baseline (an
intended change: a new CANN, a new precision mode), with who, when and why on the row. One rule for the CLI
(``metrics-rebaseline``), the page's button and its API: ``acceptance`` says whether a row can be accepted and what
accepting does; ``rebaseline`` applies it.

What can be accepted: a ``regressed`` row, or an ``ok`` row whose environment fingerprint differs from its series'
previous run (a new environment starts its own history). Not an ``inconclusive`` row (the gate could not judge its
throughput: a figure too noisy to judge is no baseline), nor a ``failed`` or ``pending`` one, nor one accepted
already.

What accepting means, per rule that fired (``rules.fired_rules``):

- ``throughput`` compares the run with its fingerprint's history. Accepting starts that history at this run (see
  ``history.throughput_history``), so the rule, read again, holds: the run is its own baseline.
- ``top1`` (against the published figure, and the paired flips) and ``fidelity`` (the artifact against its own
  ONNX) compare with something a rebaseline does not move: the next run is judged against the same floor, pairs,
  and ONNX. Accepting records the operator's decision and still moves the throughput baseline, but the row stays
  ``regressed``: a green ``ok`` beside "OM diverges from ONNX" would say the artifact is faithful when the
  evidence on the same page says it is not. The page shows the red badge with the acceptance under it.

So the row becomes ``ok`` when every rule that fired is one a rebaseline answers, and stays ``regressed``
otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.measure import fingerprint as fp
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.queries import get_row, series_neighbours
from convmixer_tasks.metrics.rules import RULE_THROUGHPUT, fired_rules
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

# The rules whose reference a rebaseline moves; any other rule that fired keeps the row regressed.
MOVED_BY_REBASELINE = (RULE_THROUGHPUT,)
# Why a row in each of these statuses cannot be a baseline, and what to do instead.
REFUSED = {
    STATUS_INCONCLUSIVE: "the gate could not judge its throughput (too noisy, see its reasons), and a figure "
    "that could not be judged cannot be a baseline; rerun it on a quiet host (or with a larger max_cv_pct) and "
    "accept that run",
    STATUS_FAILED: "it failed before its metrics were recorded, so there is no figure to be a baseline; fix the "
    "failure and rerun",
    STATUS_PENDING: "it is not gated yet; wait for its regression_gate task, then accept it if it regresses",
}


class NotAcceptable(MetricsError):
    """The rule refuses this row (the message says why and what to do); not a database problem."""


@dataclass(frozen=True)
class Acceptance:
    """Whether a row can be accepted as baseline, and what accepting it does."""

    offered: bool  # the page offers the button: a regressed row, or one whose fingerprint changed
    why_not: str | None  # None: it can be accepted; else why not and what to do, one line
    status_after: str | None  # the row's status once accepted (None when it cannot be)
    moved: tuple[str, ...]  # fired rules whose baseline accepting moves
    kept: tuple[str, ...]  # fired rules accepting does not answer: the row stays regressed
    effect: str  # what accepting does, in words for the page


def acceptance(row: Mapping[str, Any], changed_since_previous: Sequence[str]) -> Acceptance:
    """The rule for one row (a ``get_row`` dict); ``changed_since_previous`` is ``fingerprint.differences``
    between the series' previous run and this one."""
    status = row.get("status")
    fired = fired_rules(row)
    moved = tuple(rule for rule in fired if rule in MOVED_BY_REBASELINE)
    kept = tuple(rule for rule in fired if rule not in MOVED_BY_REBASELINE)
    if status == STATUS_REGRESSED and not fired:
        kept = ("an unrecorded rule",)  # a row gated before rules were recorded: nothing says which rule fired
    offered = status == STATUS_REGRESSED or bool(changed_since_previous)
    why_not = None
    if row.get("rebaselined_at"):
        why_not = f"already accepted as the baseline by {row.get('rebaselined_by') or '?'}"
    elif status in REFUSED:
        why_not = f"it is {status}: {REFUSED[status]}"
    elif status not in (STATUS_OK, STATUS_REGRESSED):
        why_not = f"its status {status!r} is not one the gate writes; only ok or regressed rows can be accepted"
    elif row.get("throughput") is None:
        why_not = "it has no throughput figure to be a baseline"
    elif status == STATUS_OK and not changed_since_previous:
        why_not = (
            "it is ok and its environment matches the series' previous run, so it already counts in its "
            "baseline; there is nothing to accept"
        )
    status_after = None if why_not else (STATUS_REGRESSED if kept else STATUS_OK)
    effect = (
        "Accepting makes this run the start of its fingerprint's throughput baseline: later runs are compared with it"
    )
    if kept:
        effect += (
            f". It stays regressed: {', '.join(kept)} "
            f"{'compares' if len(kept) == 1 else 'compare'} with something a rebaseline does not move (the published "
            "top-1, the paired runs, the artifact's own ONNX), so accepting records your decision but does not "
            "turn it ok"
        )
    elif status == STATUS_REGRESSED:
        effect += ", and its verdict becomes ok"
    return Acceptance(offered, why_not, status_after, moved, kept, effect + ".")


def fingerprint_changes(url: str, row: Mapping[str, Any]) -> list[str]:
    """What differs in ``row``'s fingerprint from the previous run of its series (as the run page shows it)."""
    earlier, _following = series_neighbours(url, row, ("fingerprint",), 1)
    return fp.differences(earlier[0].get("fingerprint"), row.get("fingerprint")) if earlier else []


def rebaseline(url: str, row_id: int, reason: str, by: str) -> dict[str, Any]:
    """Accept row ``row_id`` as its fingerprint's new throughput baseline by ``acceptance``'s rule; returns the
    updated row. A row the rule refuses raises ``MetricsError`` naming why and what to do."""
    row_id = _check_int(row_id, "row", minimum=1)
    if not isinstance(reason, str) or not reason.strip():
        raise MetricsError("a rebaseline needs a reason (--reason 'CANN 8.1.RC1 rolled out'); it is kept on the row")
    if not isinstance(by, str) or not by.strip():
        raise MetricsError("a rebaseline needs who did it (--by NAME)")
    row = get_row(url, row_id)
    if row is None:
        raise MetricsError(f"no metrics row with id {row_id} in {mask_url(url)}; see `convmixer-tasks metrics-show`")
    rule = acceptance(row, fingerprint_changes(url, row))
    if rule.why_not or rule.status_after is None:
        raise NotAcceptable(f"row {row_id} (run {row['run_id']}) cannot be accepted as baseline: {rule.why_not}")
    now = utcnow()
    with _db_errors(url, f"rebaseline row {row_id}"), Session(get_engine(url)) as session, session.begin():
        run = session.scalars(select(ValidationRun).where(ValidationRun.id == row_id)).one()
        if (run.status, run.rebaselined_at) != (row["status"], None):  # a gate or another accept came first
            raise NotAcceptable(
                f"row {row_id} changed while it was being accepted (now {run.status!r}); reload it and decide again"
            )
        kept = f"; still {STATUS_REGRESSED} on {', '.join(rule.kept)}" if rule.kept else ""
        line = (
            f"rebaselined by {by.strip()} at {now.isoformat()}: {reason.strip()} "
            f"(was {run.status!r}; the throughput baseline starts here{kept})"
        )
        session.execute(
            update(ValidationRun)
            .where(ValidationRun.id == row_id)
            .values(
                status=rule.status_after,
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
