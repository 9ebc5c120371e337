"""The model joins the row key: a zoo run maps over models as over batch sizes and precision modes, so one DAG run
records a row per model × batch size × backend × precision.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

``model_variant`` is already NOT NULL on every row; only the unique key (run_id, batch_size, backend,
precision_mode) gains it. Downgrade: the old key cannot hold two models of one run × batch size × backend ×
precision, so it refuses (naming how many collide) rather than deleting results.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TABLE = "convmixer_validation_runs"
KEY = "uq_convmixer_validation_runs_key"
OLD_KEY = ("run_id", "batch_size", "backend", "precision_mode")
NEW_KEY = (*OLD_KEY, "model_variant")


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
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
            f"cannot downgrade the metrics schema below 0007: {colliding} run × batch size × backend × precision(s) "
            "hold more than one model, which the old key cannot store; export them (`convmixer-tasks metrics-show "
            "--output csv`) and delete the extra rows first"
        )
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(KEY), type_="unique")
        batch.create_unique_constraint(op.f(KEY), list(OLD_KEY))
