"""The chip check through the real Edge executor: a run for a chip no Edge worker serves fails in check_inputs.

A throwaway Airflow as in test_celery_routing (its Cluster harness; PostgreSQL for the metadata and the metrics), but
with `[core] executor = EdgeExecutor` and the edge3 provider's API on the api-server: two `airflow edge worker`
processes that reach only the api-server — `default`, and one serving chip 310P3's queue. `[convmixer] chips =
310P3,910B3`; the Connection `convmixer_airflow_api` names the api-server and its admin. Two runs: one asking for
910B3 (nobody serves it: check_inputs must fail within seconds, naming the chip, its queue and how to add an Edge
worker), then one asking for 310P3 (check_inputs passes the chip check; the rest of that run is not waited for).

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) and, for the shared harness's check, Redis; no Celery
broker is used. Every process started here is stopped, and the databases dropped, even when the test fails.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime

import pytest

from tests.dags.test_celery_routing import (
    Cluster,
    _free_port,
    _pg_admin,
    _require_services,
    api_session,
    cluster_env,
    wait_for,
)

pytestmark = pytest.mark.slow  # ~2-3 minutes on 2 cores

DAG_ID = "convmixer_validation"
SERVED, UNSERVED = "310P3", "910B3"
CONF = {"batch_sizes": [4], "image_limit": 24, "benchmark_loop": 5}
CHECK_SECONDS = 30  # "within seconds": one login and one list request; the rest is a task start on a busy machine
EDGE_WORKERS = {"default": "default", f"npu{SERVED}": f"npu.{SERVED}"}


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def start_edge_worker(cluster: Cluster, role: str, queues: str) -> None:
    """An Edge worker (HTTP to the api-server only) named ``role.edge``: edge3 5.1 refuses a worker name that URL
    quoting changes, such as ``role@host`` (the worker signs the quoted path, the api-server checks the plain one)."""
    cluster.start(
        f"worker-{role}",
        "edge",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        "2",
        "--edge-hostname",
        f"{role}.edge",
        "--pid",  # each worker its own: two on one AIRFLOW_HOME would share the default PID file
        str(cluster.root / f"edge-{role}.pid"),
        extra_env={"CONVMIXER_TEST_WORKER_ROLE": role, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port())},
    )


@pytest.fixture(scope="module")
def edge_runs(tmp_path_factory):
    _require_services()
    root = tmp_path_factory.mktemp("edge-chips")
    token = secrets.token_hex(4)
    metadata_db, metrics_db = f"cvtest_af_{token}", f"cvtest_metrics_{token}"
    api_port = _free_port()
    api = f"http://127.0.0.1:{api_port}"
    password = secrets.token_urlsafe(12)
    env = cluster_env(root, metadata_db, metrics_db, 0, api, password)  # Redis db 0: named, never used (no Celery)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "airflow.providers.edge3.executors.EdgeExecutor",
            "AIRFLOW__EDGE__API_ENABLED": "True",
            "AIRFLOW__EDGE__API_URL": f"{api}/edge_worker/v1/rpcapi",
            "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": "5",
            "AIRFLOW__EDGE__JOB_POLL_INTERVAL": "1",
            "AIRFLOW__CONVMIXER__CHIPS": f"{SERVED},{UNSERVED}",
            "AIRFLOW_CONN_CONVMIXER_AIRFLOW_API": json.dumps(
                {"conn_type": "http", "host": api, "login": "admin", "password": password}
            ),
        }
    )
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
        for role, queues in EDGE_WORKERS.items():
            start_edge_worker(cluster, role, queues)
        for chip in (SERVED, UNSERVED):
            made = session.post(f"{api}/api/v2/pools", json={"name": f"npu.{chip}", "slots": 1}, timeout=10)
            assert made.status_code in (200, 201), made.text
        wait_for(
            "the DAG to be parsed", lambda: session.get(f"{api}/api/v2/dags/{DAG_ID}", timeout=10).ok, 180, cluster
        )

        def registry() -> dict[str, dict]:
            reply = session.get(f"{api}/edge_worker/ui/worker", timeout=10)
            reply.raise_for_status()
            return {worker["worker_name"]: worker for worker in reply.json()["workers"]}

        def all_idle():
            workers = registry()
            return (
                workers
                if all(workers.get(f"{role}.edge", {}).get("state") == "idle" for role in EDGE_WORKERS)
                else None
            )

        workers = wait_for("both Edge workers idle in the registry", all_idle, 120, cluster)

        runs = {}
        for name, chips in (("unserved", [UNSERVED]), ("served", [SERVED])):  # max_active_runs=1: in this order
            triggered = session.post(
                f"{api}/api/v2/dags/{DAG_ID}/dagRuns",
                json={"logical_date": None, "conf": {**CONF, "chips": chips}},
                timeout=30,
            )
            assert triggered.status_code in (200, 201), triggered.text
            runs[name] = triggered.json()["dag_run_id"]

        def check_inputs_of(run_id: str) -> dict:
            url = f"{api}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/check_inputs"
            return session.get(url, timeout=10).json()

        def check_log(run_id: str) -> str:  # the worker's own log file: same machine, same AIRFLOW_HOME
            folder = root / "airflow-home" / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=check_inputs"
            return "\n".join(path.read_text(errors="replace") for path in sorted(folder.glob("*.log")))

        def run_state(run_id: str):
            state = session.get(f"{api}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", timeout=10).json()["state"]
            return state if state in ("success", "failed") else None

        unserved_state = wait_for("the unserved run to finish", lambda: run_state(runs["unserved"]), 300, cluster)
        unserved_check = check_inputs_of(runs["unserved"])
        served_check = wait_for(
            "check_inputs of the served run",
            lambda: (ti := check_inputs_of(runs["served"]))["state"] in ("success", "failed") and ti,
            300,
            cluster,
        )
        yield {
            "workers": workers,
            "unserved": {"state": unserved_state, "check": unserved_check, "log": check_log(runs["unserved"])},
            "served": {"check": served_check, "log": check_log(runs["served"])},
            "logs": cluster.logs(lines=60),
        }
    finally:
        cluster.stop()
        for database in created:
            _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_the_registry_lists_each_edge_worker_with_its_queue(edge_runs):
    workers = edge_runs["workers"]
    assert {name: workers[name]["queues"] for name in workers} == {
        f"{role}.edge": [queue] for role, queue in EDGE_WORKERS.items()
    }


def test_a_chip_no_edge_worker_serves_fails_check_inputs_within_seconds_naming_it(edge_runs):
    run = edge_runs["unserved"]
    assert run["state"] == "failed", edge_runs["logs"]
    check = run["check"]
    assert check["state"] == "failed" and check["try_number"] == 1, check  # a config error is not retried
    assert (_when(check["end_date"]) - _when(check["start_date"])).total_seconds() < CHECK_SECONDS
    assert f"no live Edge worker serves chip {UNSERVED} (queue 'npu.{UNSERVED}')" in run["log"], run["log"][-3000:]
    assert f"airflow edge worker --queues npu.{UNSERVED}" in run["log"]
    assert "ascend-entrypoint.sh edge" in run["log"]


def test_a_chip_an_edge_worker_serves_passes_the_check(edge_runs):
    served = edge_runs["served"]
    assert served["check"]["state"] == "success", served["log"][-3000:]
    assert "live Edge workers serve every requested chip" in served["log"], served["log"][-3000:]
