"""Throughput evidence: kept per-loop samples, their dispersion, re-measurements, the throughput rule's outcome, the
environment fingerprint, who rebaselined it on purpose; and status 'inconclusive'.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01

New columns are all nullable (rows recorded before have no samples and no fingerprint; the gate says so). The named
status CHECK constraint is replaced as in 0002 (PostgreSQL: drop + add; SQLite: batch mode recreates the table). The
status lists are spelt out here so this revision keeps meaning what it meant.

Downgrade: 0002 has no 'inconclusive'. Such a row got no verdict, so it must not become 'ok' (that would put it in
the throughput history); it becomes 'pending' (gated never) with a reason saying why, and the new columns go.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
CONSTRAINT = "ck_convmixer_validation_runs_status_known"
STATUSES_0002 = "status IN ('ok', 'regressed', 'failed', 'pending')"
STATUSES_0004 = "status IN ('ok', 'regressed', 'failed', 'pending', 'inconclusive')"
DOWNGRADE_REASON = (
    "not gated: the gate found the throughput 'inconclusive' (too noisy to judge); set to 'pending' by the metrics "
    "schema downgrade from 0004, which has no 'inconclusive'"
)
COLUMNS = (
    ("samples_ms", sa.Text()),
    ("sample_count", sa.Integer()),
    ("warmup_count", sa.Integer()),
    ("latency_cv", sa.Float()),
    ("latency_iqr_ms", sa.Float()),
    ("measurements", sa.Integer()),
    ("throughput_check", sa.String(16)),
    ("throughput_p_value", sa.Float()),
    ("fingerprint", sa.JSON()),
    ("fingerprint_key", sa.String(64)),
    ("rebaselined_at", sa.DateTime(timezone=True)),
    ("rebaselined_by", sa.String(200)),
    ("rebaseline_reason", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, column_type in COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=True))
        batch.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch.create_check_constraint(op.f(CONSTRAINT), STATUSES_0004)


def downgrade() -> None:
    runs = sa.table(TABLE, sa.column("status", sa.String(16)), sa.column("gate_reasons", sa.JSON()))
    op.execute(
        runs.update().where(runs.c.status == "inconclusive").values(status="pending", gate_reasons=[DOWNGRADE_REASON])
    )
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(CONSTRAINT), type_="check")
        batch.create_check_constraint(op.f(CONSTRAINT), STATUSES_0002)
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
