"""The chip check through the real Edge executor: a run for a chip no Edge worker serves fails in check_inputs.

A throwaway Airflow (tests/dags/cluster.py, as test_celery_routing; PostgreSQL for the metadata and the metrics), but
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

import pytest

from tests.dags.cluster import Cluster, _free_port, rest_time, throwaway_airflow, wait_for

pytestmark = pytest.mark.slow  # ~2-3 minutes on 2 cores

DAG_ID = "convmixer_validation"
SERVED, UNSERVED = "310P3", "910B3"
CONF = {"batch_sizes": [4], "image_limit": 24, "benchmark_loop": 5}
CHECK_SECONDS = 30  # "within seconds": one login and one list request; the rest is a task start on a busy machine
EDGE_WORKERS = {"default": "default", f"npu{SERVED}": f"npu.{SERVED}"}


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
    root = tmp_path_factory.mktemp("edge-chips")

    def edge_settings(api: str, password: str) -> dict[str, str]:  # the executor's API and the check's Connection
        return {
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

    with throwaway_airflow(root, env_for=edge_settings) as airflow:
        cluster, session, api = airflow.cluster, airflow.session, airflow.api
        for role, queues in EDGE_WORKERS.items():
            start_edge_worker(cluster, role, queues)
        for chip in (SERVED, UNSERVED):
            airflow.set_pool(f"npu.{chip}", 1)
        airflow.wait_for_dag()

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

        # max_active_runs=1: in this order
        runs = {
            name: airflow.trigger({**CONF, "chips": chips})
            for name, chips in (("unserved", [UNSERVED]), ("served", [SERVED]))
        }

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
    assert (rest_time(check["end_date"]) - rest_time(check["start_date"])).total_seconds() < CHECK_SECONDS
    assert f"no live Edge worker serves chip {UNSERVED} (queue 'npu.{UNSERVED}')" in run["log"], run["log"][-3000:]
    assert f"airflow edge worker --queues npu.{UNSERVED}" in run["log"]
    assert "ascend-entrypoint.sh edge" in run["log"]


def test_a_chip_an_edge_worker_serves_passes_the_check(edge_runs):
    served = edge_runs["served"]
    assert served["check"]["state"] == "success", served["log"][-3000:]
    assert "live Edge workers serve every requested chip" in served["log"], served["log"][-3000:]
