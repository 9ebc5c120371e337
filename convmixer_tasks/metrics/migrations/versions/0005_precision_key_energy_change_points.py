"""Precision joins the row key (a run maps over precision modes as over batch sizes), energy per image, and the
change points found over each series.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- ``precision_mode`` becomes NOT NULL and part of the unique key (run_id, batch_size, backend, precision_mode). Rows
  recorded before 0003 have none: they get the mode their backend computed in (ATC's default ``force_fp16`` on
  ascend, ``fp32`` elsewhere — ``convmixer_tasks.backends.precision``; spelt out here so this revision keeps its
  meaning).
- Energy: J per image and images/s per watt as numbers (charts, history), the measurement itself (source, sample
  count, window, mean power, or why there is none) as JSON. All nullable: most hosts cannot read power.
- ``convmixer_change_points``: one row per step change found in a series (model × backend × device × precision ×
  batch size) and metric, pointing at the run where it starts; deleted with that run.

Downgrade: the old key cannot hold two precision modes of one run × batch size × backend, so it refuses (naming how
many rows collide) rather than deleting results; otherwise the columns and table go and precision stays filled.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
CHANGE_POINTS = "convmixer_change_points"
KEY = "uq_convmixer_validation_runs_key"
OLD_KEY = ("run_id", "batch_size", "backend")
NEW_KEY = (*OLD_KEY, "precision_mode")
COMPILED_DEFAULT = {"ascend": "force_fp16"}  # ATC's default for inference; every other backend ran fp32
OTHER_DEFAULT = "fp32"
ENERGY_COLUMNS = (("energy_j_per_image", sa.Float()), ("throughput_per_watt", sa.Float()), ("energy", sa.JSON()))


def upgrade() -> None:
    runs = sa.table(TABLE, sa.column("backend", sa.String(32)), sa.column("precision_mode", sa.String(64)))
    for backend, mode in COMPILED_DEFAULT.items():
        op.execute(
            runs.update().where(runs.c.precision_mode.is_(None), runs.c.backend == backend).values(precision_mode=mode)
        )
    op.execute(runs.update().where(runs.c.precision_mode.is_(None)).values(precision_mode=OTHER_DEFAULT))
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("precision_mode", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint(op.f(KEY), type_="unique")
        batch.create_unique_constraint(op.f(KEY), list(NEW_KEY))
        for name, column_type in ENERGY_COLUMNS:
            batch.add_column(sa.Column(name, column_type, nullable=True))
    op.create_table(
        CHANGE_POINTS,
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("series_key", sa.String(64), nullable=False),
        sa.Column("series", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("start_row_id", sa.Integer(), nullable=False),
        sa.Column("detected_row_id", sa.Integer(), nullable=True),
        sa.Column("before_value", sa.Float(), nullable=True),
        sa.Column("after_value", sa.Float(), nullable=True),
        sa.Column("magnitude_pct", sa.Float(), nullable=True),
        sa.Column("fingerprint_changes", sa.JSON(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["start_row_id"], [f"{TABLE}.id"], name=op.f(f"fk_{CHANGE_POINTS}_start_row_id"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["detected_row_id"], [f"{TABLE}.id"], name=op.f(f"fk_{CHANGE_POINTS}_detected_row_id"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{CHANGE_POINTS}")),
        sa.UniqueConstraint("series_key", "metric", "start_row_id", name=op.f(f"uq_{CHANGE_POINTS}_series_key")),
    )


def downgrade() -> None:
    bind = op.get_bind()
    runs = sa.table(TABLE, *(sa.column(name) for name in NEW_KEY))
    groups = (
        sa.select(*(runs.c[name] for name in OLD_KEY))
        .group_by(*(runs.c[name] for name in OLD_KEY))
        .having(sa.func.count() > 1)
        .subquery()
    )
    colliding = bind.execute(sa.select(sa.func.count()).select_from(groups)).scalar_one()
    if colliding:
        raise RuntimeError(
            f"cannot downgrade the metrics schema below 0005: {colliding} run × batch size × backend(s) hold more "
            "than one precision mode, which the old key cannot store; export them (`convmixer-tasks metrics-show "
            "--output csv`) and delete the extra rows first"
        )
    op.drop_table(CHANGE_POINTS)
    with op.batch_alter_table(TABLE) as batch:
        for name, _ in reversed(ENERGY_COLUMNS):
            batch.drop_column(name)
        batch.drop_constraint(op.f(KEY), type_="unique")
        batch.create_unique_constraint(op.f(KEY), list(OLD_KEY))
        batch.alter_column("precision_mode", existing_type=sa.String(64), nullable=True)
