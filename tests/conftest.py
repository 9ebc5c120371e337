"""Shared fixtures. Heavy imports stay inside fixtures so collecting the DAG tests stays cheap."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOUBLES_DIR = REPO_ROOT / "tests" / "doubles"
# The Ascend tool doubles' fixture (``ascend_doubles``), for every test that takes it.
pytest_plugins = ("tests.ascend_doubles",)
PG_ADMIN_URL = os.environ.get("CONVMIXER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


# --- metrics databases (tests/test_metrics.py, tests/test_gate.py) ----------------------------------------------


@contextlib.contextmanager
def _fresh_pg_database():
    """A new, empty PostgreSQL database for the duration of the block; its URL is yielded."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from convmixer_tasks import metrics

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        connection = admin.connect()
    except sa.exc.OperationalError as exc:
        admin.dispose()
        problem: str | None = " ".join(str(exc.orig).split())
    else:
        problem = None
    if problem is not None:  # fail (not skip): CI starts PostgreSQL, so a missing server is a broken setup
        pytest.fail(
            f"PostgreSQL is unreachable at {metrics.mask_url(PG_ADMIN_URL)} ({problem}); the metrics "
            "tests need it: start it (CI does) or point $CONVMIXER_TEST_PG_URL at a server",
            pytrace=False,
        )
    name = f"convmixer_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))  # our own generated name, not input
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        metrics.dispose_engines()  # close pooled connections, or DROP DATABASE waits on them
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.close()
        admin.dispose()


@pytest.fixture(scope="session")
def fresh_pg_database():
    """``with fresh_pg_database() as url:`` gives a new, empty PostgreSQL database, dropped after the block."""
    return _fresh_pg_database


@pytest.fixture(scope="session")
def pg_metrics_url():
    """One migrated PostgreSQL metrics database for the whole session (here, so every module shares it)."""
    from convmixer_tasks import metrics

    with _fresh_pg_database() as url:
        metrics.upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path, fresh_pg_database):
    """A database that has never been migrated."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}"  # the folder does not exist yet either
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def metrics_url(request, tmp_path):
    """A migrated, empty metrics database on each dialect."""
    import sqlalchemy as sa

    from convmixer_tasks import metrics
    from convmixer_tasks.metrics.engine import get_engine

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'metrics.db'}"
        metrics.upgrade(url)
        return url
    url = request.getfixturevalue("pg_metrics_url")
    with get_engine(url).begin() as connection:
        connection.execute(sa.delete(metrics.ValidationRun))
    return url


# --- the demo set ------------------------------------------------------------------------------------------------


@pytest.fixture
def small_demo(monkeypatch):
    """The auto-generated demo set at 12 images instead of 250 (generation itself is tests/test_demo.py's)."""
    from convmixer_tasks.run import demo

    monkeypatch.setattr(demo, "make_demo_dataset", functools.partial(demo.make_demo_dataset, count=12))


@pytest.fixture(autouse=True)
def root_log_handlers_restored():
    """A handler added to the root logger during a test (``cli.main``'s, or Airflow's logging set up on import) is
    bound to that test's captured stderr; left behind, it would make a later test's log call write into a closed
    stream. Every test ends with the root handlers it started with."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
