"""The chip type joins the row key: a run maps over chip types (``[convmixer] chips``) as over batch sizes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

- ``chip``: the chip type the row's tasks were routed to (npu-smi's Name, e.g. ``910B3``), ``""`` for a run without
  chip types (every row before this revision). NOT NULL with ``""`` rather than NULL: a NULL in a unique key never
  conflicts, so a rerun would add a row instead of replacing it.
- The unique key becomes (run_id, batch_size, backend, precision_mode, model_variant, chip).

Downgrade refuses while a run × batch size × backend × precision × model has rows of several chips (naming how
many), rather than deleting results; otherwise the column goes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
KEY = "uq_convmixer_validation_runs_key"
OLD_KEY = ("run_id", "batch_size", "backend", "precision_mode", "model_variant")
NEW_KEY = (*OLD_KEY, "chip")


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column("chip", sa.String(32), nullable=False, server_default=""))
        batch.drop_constraint(op.f(KEY), type_="unique")
        batch.create_unique_constraint(op.f(KEY), list(NEW_KEY))


def downgrade() -> None:
    runs = sa.table(TABLE, *(sa.column(name) for name in NEW_KEY))
    groups = (
        sa.select(*(runs.c[name] for name in OLD_KEY))
        .group_by(*(runs.c[name] for name in OLD_KEY))
        .having(sa.func.count() > 1)
        .subquery()
    )
    colliding = op.get_bind().execute(sa.select(sa.func.count()).select_from(groups)).scalar_one()
    if colliding:
        raise RuntimeError(
            f"cannot downgrade the metrics schema below 0008: {colliding} run × batch size × backend × precision × "
            "model(s) hold rows of more than one chip, which the old key cannot store; export them (`convmixer-tasks "
            "metrics-show --output csv`) and delete the extra rows first"
        )
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(KEY), type_="unique")
        batch.create_unique_constraint(op.f(KEY), list(OLD_KEY))
        batch.drop_column("chip")
