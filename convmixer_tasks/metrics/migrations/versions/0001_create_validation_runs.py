"""Create the validation runs table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Types are spelled out here rather than imported from ``schema.py``: a migration must keep creating the schema of
*its* revision even after the model moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=True),
        sa.Column("logical_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model_variant", sa.String(100), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("onnx_sha256", sa.String(64), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("device", sa.String(200), nullable=True),
        sa.Column("toolkit_version", sa.String(200), nullable=True),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("input_dtype", sa.String(16), nullable=True),
        sa.Column("image_count", sa.Integer(), nullable=True),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top5", sa.Float(), nullable=True),
        sa.Column("throughput", sa.Float(), nullable=True),
        sa.Column("latency_mean_ms", sa.Float(), nullable=True),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("parity_max_abs_diff", sa.Float(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("baseline_top1", sa.Float(), nullable=True),
        sa.Column("baseline_throughput", sa.Float(), nullable=True),
        sa.Column("gate_reasons", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_convmixer_validation_runs")),
        sa.UniqueConstraint("run_id", "batch_size", "backend", name=op.f("uq_convmixer_validation_runs_key")),
        sa.CheckConstraint(
            "status IN ('ok', 'regressed', 'failed')", name=op.f("ck_convmixer_validation_runs_status_known")
        ),
        sa.CheckConstraint("(top1 IS NULL) = (top5 IS NULL)", name=op.f("ck_convmixer_validation_runs_accuracy_pair")),
        sa.CheckConstraint(
            "status = 'failed' OR top1 IS NOT NULL", name=op.f("ck_convmixer_validation_runs_evaluated_unless_failed")
        ),
        sa.CheckConstraint("batch_size >= 1", name=op.f("ck_convmixer_validation_runs_batch_size_positive")),
    )
    op.create_index(op.f("ix_convmixer_validation_runs_logical_date"), TABLE, ["logical_date"])
    op.create_index(
        op.f("ix_convmixer_validation_runs_series"),
        TABLE,
        ["model_variant", "backend", "device", "batch_size", "logical_date"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_convmixer_validation_runs_series"), table_name=TABLE)
    op.drop_index(op.f("ix_convmixer_validation_runs_logical_date"), table_name=TABLE)
    op.drop_table(TABLE)
