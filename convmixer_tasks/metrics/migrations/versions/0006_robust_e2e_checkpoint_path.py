"""The robust throughput figure beside ais_bench's mean-based one, the run's end-to-end rate, and where the
checkpoint came from.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

- ``throughput_robust``: images/s from the median per-loop time (a few slow loops move the mean, not the median);
  ``latency_robust_cv``: the per-loop spread as a robust coefficient of variation (scaled MAD / median).
- ``e2e_throughput``: images/s over the run's preprocess + infer + evaluate wall time; ``stage_seconds`` holds each
  stage's seconds (JSON), so a row says which share the NPU-only figure leaves out.
- ``checkpoint_path``: the checkpoint the row was validated from (an asset event names a path; the sha256 alone
  cannot be traced back to a file).

All nullable: rows recorded before this revision have none of them. Downgrade drops the columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
COLUMNS = (
    ("throughput_robust", sa.Float()),
    ("latency_robust_cv", sa.Float()),
    ("e2e_throughput", sa.Float()),
    ("stage_seconds", sa.JSON()),
    ("checkpoint_path", sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, column_type in COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
