"""Alembic environment for the metrics database, driven from code (there is no alembic.ini in the package).

``convmixer_tasks.metrics.engine.upgrade(url)`` builds the Alembic Config, opens the connection (taking a lock so
concurrent upgrades queue instead of racing) and hands it over in ``config.attributes["connection"]``; this file
only runs the migrations on it. To write a new revision against a scratch database:

    from alembic import command
    from convmixer_tasks.metrics.engine import alembic_config
    command.revision(alembic_config("sqlite:////tmp/scratch.db"), message="add column x", autogenerate=True)

(upgrade the scratch database first so autogenerate sees the current schema), then review the generated file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from convmixer_tasks.metrics.schema import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """``--sql`` mode: print the DDL for a DBA instead of running it."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Fallback for tools that only set sqlalchemy.url (e.g. a hand-written alembic.ini during development).
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: set sqlalchemy.url, or run through convmixer_tasks.metrics.upgrade(url)")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
