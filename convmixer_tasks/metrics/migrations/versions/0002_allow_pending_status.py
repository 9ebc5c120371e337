"""Allow status 'pending': recorded with accuracy, not gated yet.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The record step used to write 'ok' before the gate had decided, so a gate that never finished left 'ok' rows
without a verdict in the gate's throughput history. Rows now start 'pending' and the gate sets ok/regressed.

Only the named CHECK constraint ``ck_convmixer_validation_runs_status_known`` changes (PostgreSQL: drop + add;
SQLite: batch mode recreates the table, keeping the other named constraints and the indexes). The status lists are
spelt out here, not imported from ``schema.py``, so this revision keeps meaning what it meant.

Downgrade: 0001 has no 'pending', and a pending row never got a verdict, so it must not become 'ok' (that would put
it in the throughput history). It becomes 'failed' (its accuracy and throughput stay on the row; 0001 allows that)
with a gate reason saying why, then the constraint is narrowed again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
CONSTRAINT = "ck_convmixer_validation_runs_status_known"
STATUSES_0001 = "status IN ('ok', 'regressed', 'failed')"
STATUSES_0002 = "status IN ('ok', 'regressed', 'failed', 'pending')"
DOWNGRADE_REASON = (
    "not gated: recorded as 'pending' (no gate verdict) and set to 'failed' by the metrics "
    "schema downgrade from 0002 to 0001, which has no 'pending'"
)


def _replace_status_check(sqltext: str) -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch.create_check_constraint(op.f(CONSTRAINT), sqltext)


def upgrade() -> None:
    _replace_status_check(STATUSES_0002)


def downgrade() -> None:
    runs = sa.table(TABLE, sa.column("status", sa.String(16)), sa.column("gate_reasons", sa.JSON()))
    op.execute(runs.update().where(runs.c.status == "pending").values(status="failed", gate_reasons=[DOWNGRADE_REASON]))
    _replace_status_check(STATUSES_0001)
