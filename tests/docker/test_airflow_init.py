"""docker/airflow-init.sh (with recording doubles of `airflow` and `convmixer-tasks`) and its Python helper
docker/convmixer_init.py (metrics DB creation on the CI PostgreSQL, the Connection JSON, the passwords file)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import uuid

import pytest

from tests.docker import compose_model as cm
from tests.docker.helpers import AIRFLOW_INIT, install_recorders, prepend_path, read_records, run_script

PG_ADMIN_URL = os.environ.get("CONVMIXER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _load_init_module():
    spec = importlib.util.spec_from_file_location("convmixer_init", cm.DOCKER_DIR / "convmixer_init.py")
    assert spec is not None and spec.loader is not None, "convmixer_init.py is a loadable file"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


init = _load_init_module()


def init_env(tmp_path, exit_codes=None, **overrides):
    """airflow-init's container environment from the compose file, with its paths moved under tmp_path."""
    env = cm.example_env()
    service = cm.project(env)["services"]["airflow-init"]
    container = cm.container_env(service, env)
    record = tmp_path / "calls.jsonl"
    doubles = install_recorders(
        tmp_path / "bin",
        record,
        ["airflow", "convmixer-tasks"],
        exit_codes={"connections delete": 1, **(exit_codes or {})},
    )
    container.update(
        {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHON": sys.executable,
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW_UID": str(os.getuid()),
            "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "work"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json"),
            "CONVMIXER_METRICS_DB_URL": f"sqlite:///{tmp_path}/metrics/metrics.db",
        }
    )
    container.update(overrides)
    return prepend_path(container, doubles), record


def test_init_creates_db_schema_connection_pool_and_admin(tmp_path):
    env, record = init_env(
        tmp_path,
        AIRFLOW__CONVMIXER__NPU_POOL="ascend",
        AIRFLOW__CONVMIXER__NPU_POOL_SLOTS="3",
        AIRFLOW__CONVMIXER__METRICS_CONN_ID="metrics_db",
    )

    result = run_script(AIRFLOW_INIT, env)

    assert result.returncode == 0, result.stdout + result.stderr
    calls = [(call["tool"], call["argv"]) for call in read_records(record)]
    metrics_url = env["CONVMIXER_METRICS_DB_URL"]
    assert calls[0] == ("airflow", ["db", "migrate"])
    assert calls[1] == ("convmixer-tasks", ["metrics-upgrade", "--url", metrics_url])
    assert calls[2] == ("airflow", ["connections", "delete", "metrics_db"])
    _tool, argv = calls[3]
    assert argv[:3] == ["connections", "add", "metrics_db"] and argv[3] == "--conn-json"
    assert json.loads(argv[4]) == {"conn_type": "sqlite", "host": f"{tmp_path}/metrics/metrics.db"}
    assert calls[4][1][:4] == ["pools", "set", "ascend", "3"]
    assert len(calls) == 5
    # The metrics DB's folder (SQLite), the work folder and the admin's password exist for the other services.
    assert (tmp_path / "metrics").is_dir() and (tmp_path / "work").is_dir()
    passwords = tmp_path / "auth" / "passwords.json"
    assert json.loads(passwords.read_text()) == {"airflow": cm.TEST_SECRETS["_AIRFLOW_WWW_USER_PASSWORD"]}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


def test_init_under_the_edge_executor_adds_the_api_connection_the_chip_check_asks_with(tmp_path):
    edge = {
        "AIRFLOW__CORE__EXECUTOR": "airflow.providers.edge3.executors.EdgeExecutor",
        "AIRFLOW__EDGE__API_URL": "https://airflow.example.org/edge_worker/v1/rpcapi",
    }
    for name in ("new", "kept", "celery"):
        (tmp_path / name).mkdir()
    env, record = init_env(tmp_path / "new", exit_codes={"connections get": 1}, **edge)  # not there yet
    assert run_script(AIRFLOW_INIT, env).returncode == 0
    argv = read_records(record)[-1]["argv"]
    assert argv[:4] == ["connections", "add", "convmixer_airflow_api", "--conn-json"]
    assert json.loads(argv[4]) == {
        "conn_type": "http",
        "host": "https://airflow.example.org",
        "login": "airflow",
        "password": cm.TEST_SECRETS["_AIRFLOW_WWW_USER_PASSWORD"],
    }
    env, record = init_env(tmp_path / "kept", **edge)  # there already (maybe a read-only user's): kept
    assert run_script(AIRFLOW_INIT, env).returncode == 0
    assert read_records(record)[-1]["argv"] == ["connections", "get", "convmixer_airflow_api"]
    env, record = init_env(tmp_path / "celery")  # Celery: not asked for
    assert run_script(AIRFLOW_INIT, env).returncode == 0
    assert not [call for call in read_records(record) if "convmixer_airflow_api" in call["argv"]]


def test_init_creates_each_chip_types_pool_beside_the_untyped_one(tmp_path):
    env, record = init_env(
        tmp_path,
        AIRFLOW__CONVMIXER__NPU_POOL_SLOTS="2",
        AIRFLOW__CONVMIXER__CHIPS="310P3,910B3",
        AIRFLOW__CONVMIXER__NPU_POOL_TEMPLATE="",
    )  # empty (compose's unset) = {pool}.{chip}

    result = run_script(AIRFLOW_INIT, env)

    assert result.returncode == 0, result.stdout + result.stderr
    pools = [call["argv"][2:4] for call in read_records(record) if call["argv"][:2] == ["pools", "set"]]
    assert pools == [["npu", "2"], ["npu.310P3", "2"], ["npu.910B3", "2"]]


def test_init_refuses_a_bad_chip_before_creating_any_pool(tmp_path):
    env, record = init_env(tmp_path, AIRFLOW__CONVMIXER__CHIPS="Ascend910B3")
    result = run_script(AIRFLOW_INIT, env)
    assert result.returncode == 1
    assert "[convmixer] chips" in result.stderr and "drop the 'Ascend' prefix" in result.stderr
    assert not [call for call in read_records(record) if call["argv"][:2] == ["pools", "set"]]


def test_init_stops_at_the_first_failing_step(tmp_path):
    env, record = init_env(tmp_path, exit_codes={"db migrate": 1})
    result = run_script(AIRFLOW_INIT, env)
    assert result.returncode == 1
    assert [call["argv"] for call in read_records(record)] == [["db", "migrate"]]
    assert not (tmp_path / "auth" / "passwords.json").exists()


def test_init_refuses_a_bad_pool_size(tmp_path):
    env, record = init_env(tmp_path, AIRFLOW__CONVMIXER__NPU_POOL_SLOTS="two")
    result = run_script(AIRFLOW_INIT, env)
    assert result.returncode == 1
    assert "AIRFLOW__CONVMIXER__NPU_POOL_SLOTS='two' must be a positive integer" in result.stderr
    assert read_records(record) == []


def test_connection_json_round_trips_through_the_dags_url_reader():
    """The Connection airflow-init stores must give the DAG (metrics.connection_url) the URL it was made from."""
    from airflow.models.connection import Connection
    from sqlalchemy.engine import make_url

    from convmixer_tasks.metrics import connection_url

    url = "postgresql+psycopg2://metrics:p%40ss%2Fw%3Ard@db.example.org:6432/convmixer_metrics"
    conn = Connection.from_json(init.connection_json(url), conn_id="convmixer_metrics")
    back = make_url(connection_url(conn.conn_type, conn.get_uri(), conn.host, conn.schema))

    original = make_url(url)
    assert conn.conn_type == "postgres"
    assert (back.get_backend_name(), back.username, back.password, back.host, back.port, back.database) == (
        "postgresql",
        original.username,
        original.password,
        original.host,
        original.port,
        original.database,
    )
    assert original.password == "p@ss/w:rd"
    # ...and one whose driver is installed: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (3), while the
    # pinned working set has psycopg2 — record_metrics would fail on every PostgreSQL metrics DB otherwise.
    try:
        back.get_dialect().import_dbapi()
    except ModuleNotFoundError as exc:
        pytest.fail(
            f"the DAG turns the metrics Connection into {back.render_as_string(hide_password=True)}, "
            f"whose driver is not installed ({exc}); metrics.connection_url should name postgresql+psycopg2"
        )


def test_connection_json_of_sqlite_and_unsupported_backends(tmp_path):
    assert json.loads(init.connection_json(f"sqlite:///{tmp_path}/m.db")) == {
        "conn_type": "sqlite",
        "host": f"{tmp_path}/m.db",
    }
    with pytest.raises(SystemExit, match="'mysql' has no Airflow connection type"):
        init.connection_json("mysql://u:p@h/db")


def test_write_password_keeps_other_users_and_rejects_bad_input(tmp_path):
    target = tmp_path / "auth" / "passwords.json"
    target.parent.mkdir()
    target.write_text(json.dumps({"viewer": "v-pass", "airflow": "old"}))

    init.write_password(target, "airflow", "new-pass")

    assert json.loads(target.read_text()) == {"viewer": "v-pass", "airflow": "new-pass"}
    with pytest.raises(SystemExit, match="password is empty"):
        init.write_password(target, "airflow", "")
    with pytest.raises(SystemExit, match="has ':' or ','"):
        init.write_password(target, "ad:min", "x")
    target.write_text("{broken")
    with pytest.raises(SystemExit, match="is not JSON"):
        init.write_password(target, "airflow", "x")


def test_create_database_on_postgresql_is_idempotent():
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"convmixer_docker_test_{uuid.uuid4().hex[:8]}"
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        assert init.create_database(url) is True
        assert init.create_database(url) is False  # second airflow-init: nothing to do
        with admin.connect() as conn:
            assert conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def test_create_database_gives_up_with_the_server_named():
    with pytest.raises(
        SystemExit, match=r"cannot create database 'metrics' on postgresql\+psycopg2://u:\*\*\*@127.0.0.1:1"
    ):
        init.create_database("postgresql+psycopg2://u:secret@127.0.0.1:1/metrics", attempts=1)


@pytest.mark.slow
def test_init_with_the_real_airflow_cli_and_postgresql(tmp_path):
    """airflow-init.sh end to end against CI's PostgreSQL and the real `airflow` / `convmixer-tasks` (~30 s):
    twice, as every `docker compose up` does, then read back what the other services rely on."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    suffix = uuid.uuid4().hex[:8]
    airflow_db = make_url(PG_ADMIN_URL).set(database=f"cmx_af_{suffix}").render_as_string(hide_password=False)
    metrics_db = make_url(PG_ADMIN_URL).set(database=f"cmx_metrics_{suffix}").render_as_string(hide_password=False)
    venv_bin = os.path.dirname(sys.executable)
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "PYTHON": sys.executable,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_UID": str(os.getuid()),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__FERNET_KEY": cm.TEST_SECRETS["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "work"),
        "AIRFLOW__CONVMIXER__NPU_POOL": "npu",
        "AIRFLOW__CONVMIXER__NPU_POOL_SLOTS": "2",
        "AIRFLOW__CONVMIXER__METRICS_CONN_ID": "convmixer_metrics",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "airflow:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json"),
        "_AIRFLOW_WWW_USER_PASSWORD": "admin-pw",
        "CONVMIXER_METRICS_DB_URL": metrics_db,
    }
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        assert init.create_database(airflow_db)  # the compose file's postgres service creates this one
        for attempt in (1, 2):
            result = run_script(AIRFLOW_INIT, env, timeout=300)
            assert result.returncode == 0, f"run {attempt}: {result.stdout[-2000:]}{result.stderr[-2000:]}"

        check = """
import json
from airflow.models.pool import Pool
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.models.connection import Connection
from airflow.utils.session import create_session
from convmixer_tasks.metrics import connection_url
from convmixer_tasks.metrics import query_runs
with create_session() as session:
    pool = session.query(Pool).filter(Pool.pool == "npu").one()
conn = Connection.get_connection_from_secrets("convmixer_metrics")  # the metadata DB, as tasks get it via the API
url = connection_url(conn.conn_type, conn.get_uri(), conn.host, conn.schema)
print(json.dumps({"slots": pool.slots, "url": url, "rows": query_runs(url, limit=1)[1],
                  "passwords": SimpleAuthManager.get_passwords()}))
"""
        probe = subprocess.run(
            [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        facts = json.loads(probe.stdout.strip().splitlines()[-1])
        assert facts["slots"] == 2
        assert make_url(facts["url"]).database == make_url(metrics_db).database
        assert facts["rows"] == 0  # the metrics table exists (schema migrated) and is empty
        assert facts["passwords"] == {"airflow": "admin-pw"}
    finally:
        with admin.connect() as conn:
            for url in (airflow_db, metrics_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


def test_default_metrics_url_is_built_from_the_postgres_settings(tmp_path):
    """docker-compose 1.29 expands no nested ${...} defaults, so the compose file passes the PostgreSQL parts and
    airflow-init builds the default URL (database convmixer_metrics) itself."""
    env = cm.example_env()
    container = cm.container_env(cm.project(env)["services"]["airflow-init"], env)
    assert container["CONVMIXER_METRICS_DB_URL"] == ""
    record = tmp_path / "calls.jsonl"
    doubles = install_recorders(
        tmp_path / "bin", record, ["airflow", "convmixer-tasks", "python-double"], exit_codes={"connections delete": 1}
    )
    container.update(
        {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHON": str(doubles / "python-double"),
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW_UID": str(os.getuid()),
            "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "work"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "p.json"),
        }
    )
    result = run_script(AIRFLOW_INIT, prepend_path(container, doubles))
    assert result.returncode == 0, result.stdout + result.stderr
    expected = "postgresql+psycopg2://airflow:pg-secret@postgres:5432/convmixer_metrics"
    # The logs volume is left non-empty, so Docker does not re-copy the image's owner onto it at the next mount.
    assert (tmp_path / "airflow" / "logs" / "ascend").is_dir()
    calls = read_records(record)
    assert next(call["argv"][1:] for call in calls if call["tool"] == "python-double") == ["create-database", expected]
    ours = [call["argv"] for call in calls if call["tool"] == "convmixer-tasks"]
    assert ["metrics-upgrade", "--url", expected] in ours
