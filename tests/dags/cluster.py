"""A throwaway distributed Airflow on this machine, for the real-Celery tests and bench/bench_scaleout.py.

Fresh PostgreSQL databases for the metadata and the metrics, a Redis database of its own as broker, an api-server, a
scheduler, a dag-processor, and Celery workers started by the caller (`start_worker`, each reporting its role as the
task instances' hostname through tests.dags.celery_identity). `throwaway_airflow` starts the shared part and tears
everything down — every process stopped, the databases dropped, the Redis database flushed — even when the caller
fails; the pieces (`Cluster`, `cluster_env`, `start_worker`, `api_session`, `wait_for`, …) stay public for callers
that need their own order.

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); .ci/run starts both.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "convmixer_validation"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS = ("127.0.0.1", 6379)


class ClusterError(RuntimeError):
    """The throwaway cluster could not be started or did not reach a state in time (the message holds its logs)."""


# --- services the cluster needs ----------------------------------------------------------------------------------


def _require_services() -> None:
    import psycopg2  # type: ignore[import-untyped]  # no stubs installed
    import redis

    problems = []
    try:
        redis.Redis(*REDIS, socket_timeout=3).ping()
    except Exception as exc:
        problems.append(f"Redis on {REDIS[0]}:{REDIS[1]} ({exc})")
    try:
        psycopg2.connect(dbname="postgres", connect_timeout=3, **PG).close()
    except Exception as exc:
        problems.append(f"PostgreSQL on {PG['host']}:{PG['port']} as user postgres ({exc})")
    if problems:
        raise ClusterError(
            "the throwaway Celery cluster needs " + " and ".join(problems) + " — start them "
            "(e.g. `.ci/run` does: pg_ctlcluster <version> main start; redis-server --daemonize yes)"
        )


def _pg_admin(sql: str) -> None:
    import psycopg2

    connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
    finally:
        connection.close()


REDIS_CLAIM_KEY = "convmixer-test-cluster"  # written first into a database a cluster takes; its flushdb removes it


def _free_redis_db():
    """A Redis database index nobody uses, so our queues cannot meet another run's workers. Taken by writing a claim
    key only if absent: two test sessions starting clusters at once (CI beside a developer's run) never share one."""
    import redis

    for index in secrets.SystemRandom().sample(range(1, 16), 15):
        client = redis.Redis(*REDIS, db=index, socket_timeout=3)
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, secrets.token_hex(8), nx=True):
            return index, client
    raise ClusterError("no empty Redis database (1-15) for the cluster's Celery broker; flush one or restart Redis")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rest_time(value: str) -> datetime:
    """A timestamp of the REST API (ISO 8601, ``Z`` for UTC) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the cluster -----------------------------------------------------------------------------------------------------


class Cluster:
    """Airflow components as child processes (each in its own session), with their logs in ``root``."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        self.processes: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str, timeout: float) -> None:
        log = self.root / f"airflow-{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        with open(log, "w") as handle:
            proc = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                cwd=self.root,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{log.read_text()[-3000:]}"

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        with open(self.root / f"{name}.log", "w") as handle:  # the child keeps its own copy of the descriptor
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                env={**self.env, **(extra_env or {})},
                cwd=self.root,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        dead = {name: proc.returncode for name, proc in self.processes.items() if proc.poll() is not None}
        assert not dead, f"Airflow components exited early: {dead}\n{self.logs(dead)}"

    def logs(self, names=None, lines: int = 25) -> str:
        out = []
        for name in names or self.processes:
            text = (self.root / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name} (last {lines} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every process group we started, then SIGKILL what is left after 30 s."""
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.processes.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group may still hold children of an exited leader
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def wait_for(what: str, check: Callable[[], object], timeout: float, cluster: Cluster, every: float = 2.0):
    """Poll ``check`` until it returns something truthy; fail with the components' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(every)
    raise ClusterError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})\n{cluster.logs()}"
    )


def cluster_env(root: Path, metadata_db: str, metrics_db: str, redis_db: int, api: str, password: str) -> dict:
    """The environment every Airflow component of the test cluster shares (CeleryExecutor, PostgreSQL, Redis)."""
    (root / "passwords.json").write_text(f'{{"admin": "{password}"}}')
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(REPO),  # for the hostname callable below
            "AIRFLOW_HOME": str(root / "airflow-home"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata_db}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata_db}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.dags.celery_identity.role_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),  # the same in every component
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CONVMIXER__WORK_DIR": str(root / "work"),
            "AIRFLOW__CONVMIXER__SCHEDULE": "",  # manual runs only: no scheduled run may join ours
            "AIRFLOW__CONVMIXER__RETRY_DELAY_SECONDS": "2",
            # Airflow writes PostgreSQL connections as postgres://; the DAG must turn that into postgresql://
            "AIRFLOW_CONN_CONVMIXER_METRICS": f"postgres://postgres@127.0.0.1:5432/{metrics_db}",
        }
    )
    return env


def start_worker(cluster: Cluster, role: str, queues: str, concurrency: int, extra_env: dict | None = None) -> None:
    """A Celery worker that reports ``role@host`` as its task instances' hostname (celery_identity)."""
    cluster.start(
        f"worker-{role}",
        "celery",
        "worker",
        "--queues",
        queues,
        "--celery-hostname",
        f"{role}@%h",
        "--concurrency",
        str(concurrency),
        extra_env={
            "CONVMIXER_TEST_WORKER_ROLE": role,
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            **(extra_env or {}),
        },
    )


def api_session(api: str, password: str, cluster: Cluster):
    """A REST session as admin, once the api-server answers."""
    import requests

    wait_for("the api-server", lambda: requests.get(f"{api}/api/v2/monitor/health", timeout=5).ok, 180, cluster)
    reply = requests.post(f"{api}/auth/token", json={"username": "admin", "password": password}, timeout=10)
    assert reply.status_code in (200, 201), reply.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
    return session


# --- one throwaway Airflow, start to teardown ----------------------------------------------------------------------


@dataclass
class Airflow:
    """A started throwaway Airflow: its components, its REST API (``session`` is logged in) and its metrics DB."""

    cluster: Cluster
    api: str
    password: str
    metrics_url: str
    session: Any  # requests.Session with the admin's bearer token

    @property
    def root(self) -> Path:
        return self.cluster.root

    def set_pool(self, name: str, slots: int) -> None:
        """Create pool ``name`` with ``slots`` slots, or resize it."""
        url = f"{self.api}/api/v2/pools"
        found = self.session.get(f"{url}/{name}", timeout=10)
        if found.status_code == 404:
            made = self.session.post(url, json={"name": name, "slots": slots}, timeout=10)
        else:  # the patch body must restate include_deferred (Airflow 3.3 validates it as required)
            body = {"pool": name, "slots": slots, "include_deferred": found.json()["include_deferred"]}
            made = self.session.patch(f"{url}/{name}", json=body, params={"update_mask": ["slots"]}, timeout=10)
        assert made.status_code in (200, 201), made.text

    def wait_for_dag(self, timeout: float = 180) -> None:
        dag_url = f"{self.api}/api/v2/dags/{DAG_ID}"
        wait_for("the DAG to be parsed", lambda: self.session.get(dag_url, timeout=10).ok, timeout, self.cluster)

    def wait_for_workers(self, roles: Iterable[str], timeout: float = 120) -> None:
        """Every named worker (``start_worker``'s role) has logged that it is ready."""
        roles = list(roles)
        wait_for(
            "the Celery workers " + ", ".join(roles),
            lambda: all("ready" in (self.root / f"worker-{role}.log").read_text() for role in roles),
            timeout,
            self.cluster,
        )

    def trigger(self, conf: dict[str, Any]) -> str:
        """A manual run of the DAG with ``conf``; its run id."""
        triggered = self.session.post(
            f"{self.api}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30
        )
        assert triggered.status_code in (200, 201), triggered.text
        return triggered.json()["dag_run_id"]

    def wait_for_run(self, run_id: str, timeout: float) -> tuple[str, list[dict[str, Any]]]:
        """The run's final state (success/failed) and its task instances as the REST API reports them."""
        run_url = f"{self.api}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"

        def finished():
            state = self.session.get(run_url, timeout=10).json()["state"]
            return state if state in ("success", "failed") else None

        state = wait_for(f"run {run_id} to finish", finished, timeout, self.cluster, every=3)
        tis = self.session.get(f"{run_url}/taskInstances", params={"limit": 100}, timeout=10).json()
        return state, tis["task_instances"]


@contextmanager
def throwaway_airflow(
    root: Path,
    extra_env: dict[str, str] | None = None,
    path_first: Sequence[Path] = (),
    env_for: Callable[[str, str], Mapping[str, str]] | None = None,
) -> Iterator[Airflow]:
    """Databases, broker, api-server, scheduler and dag-processor; the workers are the caller's (start_worker).
    ``extra_env`` is added to every component's environment, ``path_first`` put before its PATH (e.g. npu-smi);
    ``env_for(api, password)`` adds settings that name this api-server or its admin's password (an executor's API
    URL, a Connection)."""
    from convmixer_tasks.metrics import dispose_engines

    _require_services()
    token = secrets.token_hex(4)
    metadata_db, metrics_db = f"cvtest_af_{token}", f"cvtest_metrics_{token}"
    redis_db, redis_client = _free_redis_db()
    api_port = _free_port()
    api = f"http://127.0.0.1:{api_port}"
    password = secrets.token_urlsafe(12)
    env = cluster_env(root, metadata_db, metrics_db, redis_db, api, password)
    env.update(extra_env or {})
    env.update(env_for(api, password) if env_for else {})
    env["PATH"] = os.pathsep.join([*map(str, path_first), env["PATH"]])
    cluster = Cluster(root, env)
    created = []
    try:
        for database in (metadata_db, metrics_db):
            _pg_admin(f'CREATE DATABASE "{database}"')
            created.append(database)
        cluster.airflow("db", "migrate", timeout=240)
        cluster.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port))
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        session = api_session(api, password, cluster)
        yield Airflow(cluster, api, password, f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metrics_db}", session)
    finally:
        cluster.stop()
        dispose_engines()
        for database in created:
            _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis_client.flushdb()  # it was empty when we took it
