"""The words a metrics row's verdict is written in: its ``status`` and its throughput rule's ``throughput_check``.

A vocabulary only (no SQLAlchemy): the metrics table's constraints, the gate, the rows and the UI read the same
names from here.
"""

from __future__ import annotations

STATUS_OK = "ok"
STATUS_REGRESSED = "regressed"
STATUS_FAILED = "failed"
# Recorded with accuracy but not gated yet: the record step writes it, the gate turns it into ok/regressed. A gate
# that never finished leaves it, and the gate's history (ok only) ignores it. Migration 0002 allows it.
STATUS_PENDING = "pending"
# Gated, but the throughput could not be judged (the run's own samples too noisy even after re-measuring): no
# verdict either way, never part of the gate's history, does not fail the run. Migration 0004 allows it.
STATUS_INCONCLUSIVE = "inconclusive"
STATUSES = (STATUS_OK, STATUS_REGRESSED, STATUS_FAILED, STATUS_PENDING, STATUS_INCONCLUSIVE)
# What the gate has decided; a row in one of these is never overwritten by a later 'failed' record.
GATED_STATUSES = (STATUS_OK, STATUS_REGRESSED, STATUS_INCONCLUSIVE)

# What the throughput rule concluded (column ``throughput_check``; see convmixer_tasks.verdict.throughput).
CHECK_OK = "ok"  # at or above the floor
CHECK_BELOW = "below"  # below the floor but not statistically clear
CHECK_REGRESSED = "regressed"  # below the floor and clear, alone or together with the run before
CHECK_NOISY = "noisy"  # the run's own per-loop CV too high to judge, after re-measuring
CHECK_UNJUDGED = "unjudged"  # nothing measured, or too little same-fingerprint history
THROUGHPUT_CHECKS = (CHECK_OK, CHECK_BELOW, CHECK_REGRESSED, CHECK_NOISY, CHECK_UNJUDGED)
