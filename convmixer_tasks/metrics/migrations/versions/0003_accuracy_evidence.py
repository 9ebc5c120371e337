"""Accuracy evidence: precision mode, fidelity and paired-test columns and the run's trigger on the runs, and a
predictions table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

New nullable columns only (old rows keep NULL: no evidence was taken), so no data moves. The per-image predictions
live in their own table keyed by the run row's id (deleted with it): the UI's row queries never drag the blobs along.
Types are spelt out here, not imported from ``schema.py``, so this revision keeps meaning what it meant.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
PREDICTIONS = "convmixer_validation_predictions"
COLUMNS = (
    ("precision_mode", sa.String(64)),
    ("fidelity_min_cosine", sa.Float()),
    ("fidelity_top1_agreement", sa.Float()),
    ("flips_p_value", sa.Float()),
    ("reference_p_value", sa.Float()),
    ("evidence", sa.JSON()),
    ("trigger", sa.String(32)),  # what started the run (Airflow's run type), e.g. asset_triggered
)


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    op.create_table(
        PREDICTIONS,
        sa.Column("run_row_id", sa.Integer(), nullable=False),
        sa.Column("image_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_row_id"], [f"{TABLE}.id"], name=op.f(f"fk_{PREDICTIONS}_run_row_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_row_id", name=op.f(f"pk_{PREDICTIONS}")),
    )


def downgrade() -> None:
    op.drop_table(PREDICTIONS)
    with op.batch_alter_table(TABLE) as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
