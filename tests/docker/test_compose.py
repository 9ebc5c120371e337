"""docker/docker-compose.yaml and its overrides: valid against the Compose Specification schema once interpolated
as Compose does, every variable documented in .env.example, the deployment's shape (executor, health checks,
depends_on, NPU devices and driver mounts), and — the point of it all — agreement with the DAG: the queues its
tasks use are served by a worker, its pool is the one airflow-init creates with the configured size, its metrics
connection id is the one airflow-init stores, and its work folder is mounted at that path in every container."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jsonschema
import pytest

from tests.ascend_doubles import ascend_doubles  # noqa: F401  (the fixture)
from tests.docker import compose_model as cm
from tests.docker.helpers import (
    AIRFLOW_INIT, ENTRYPOINT, fake_devices, install_recorders, prepend_path, read_records, run_script,
)

REPO = cm.DOCKER_DIR.parent
DAG_FILE = REPO / "dags" / "convmixer_validation.py"
SCHEMA = json.loads((REPO / "tests" / "docker" / "compose-spec" / "compose-spec.json").read_text())
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-npu-worker")
LONG_RUNNING = tuple(name for name in AIRFLOW_SERVICES if name != "airflow-init") + ("postgres", "redis")
NPU_HOST_ENV = {"NPU_HOST_NAME": "npu-host-1.example.org"}
FILE_SETS = {
    "base": (cm.BASE_FILE,),
    "npu-host": (cm.BASE_FILE, cm.NPU_HOST_FILE),
    "edge": (cm.BASE_FILE, cm.EDGE_FILE),
    "edge-npu-host": (cm.BASE_FILE, cm.NPU_HOST_FILE, cm.EDGE_FILE),
}
# An operator's non-default choices for every [convmixer] setting the compose file passes on.
CUSTOM_SETTINGS = {
    "AIRFLOW__CONVMIXER__NPU_QUEUE": "ascend-310p",
    "AIRFLOW__CONVMIXER__NPU_POOL": "npu_devices",
    "AIRFLOW__CONVMIXER__NPU_POOL_SLOTS": "2",
    "AIRFLOW__CONVMIXER__NPU_DEVICE_ID": "1",
    "AIRFLOW__CONVMIXER__WORK_DIR": "/srv/convmixer",
    "AIRFLOW__CONVMIXER__METRICS_CONN_ID": "metrics_pg",
    "AIRFLOW__CONVMIXER__CANN_SET_ENV": "/usr/local/Ascend/cann/set_env.sh",
    "AIRFLOW__CONVMIXER__SCHEDULE": "",
    "AIRFLOW__CONVMIXER__DEFAULT_BACKEND": "ascend",
    "AIRFLOW__CONVMIXER__DATASET_DIR": "/srv/convmixer/data/imagenet/val",
    "AIRFLOW__CONVMIXER__LABEL_FILE": "/srv/convmixer/data/imagenet/val_label.txt",
    "AIRFLOW__CONVMIXER__CHECKPOINT": "/srv/convmixer/data/convmixer_1536_20_ks9_p7.pth.tar",
    "AIRFLOW__CONVMIXER__MODEL_VARIANT": "convmixer_1536_20",
    "AIRFLOW__CONVMIXER__BATCH_SIZES": "4,16",
    "AIRFLOW__CONVMIXER__SHARDS": "3",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "cpu",
}

# Prints, as a container of the deployment sees them: the parsed DAG (schedule, Param defaults, per task its queue,
# pool and mapped shard list) and the [convmixer] settings as the library reads them from Airflow's conf (scheduling
# ones as the DAG file does when parsed, worker ones as a task does where it runs).
DAG_PROBE = """
import dataclasses, json, sys
from airflow.configuration import conf
from airflow.dag_processing.dagbag import DagBag
from convmixer_tasks.settings import airflow_conf_reader, load_scheduling_settings, load_worker_settings
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["convmixer_validation"]
read = airflow_conf_reader(conf)
print(json.dumps({
    "scheduling": dataclasses.asdict(load_scheduling_settings(read)),
    "worker": dataclasses.asdict(load_worker_settings(read)),
    "schedule": None if dag.schedule is None else str(dag.schedule), "params": dag.params.dump(),
    "tasks": [{"id": t.task_id, "queue": t.queue, "pool": t.pool,
               "shards": t.op_kwargs_expand_input.value.get("shard") if t.is_mapped else None} for t in dag.tasks],
}, default=str))
"""


def validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


# --- the Compose Specification ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", FILE_SETS)
def test_compose_files_follow_the_compose_specification(name):
    env = cm.example_env(**NPU_HOST_ENV)
    documents = [cm.load(path, env) for path in FILE_SETS[name]] + [cm.project(env, *FILE_SETS[name])]
    for document in documents:
        errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
                  for error in validator().iter_errors(document)]
        assert errors == []


def test_schema_validation_catches_a_misspelt_key():
    project = cm.project(cm.example_env())
    project["services"]["airflow-worker"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert any("helthcheck" in error.message for error in validator().iter_errors(project))


def _documented(path) -> set[str]:
    return set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", path.read_text(), re.M))


def test_every_variable_is_documented_in_env_example_and_every_documented_one_is_used():
    used = set().union(*(cm.variables_used(path) for path in cm.COMPOSE_FILES))
    documented = _documented(cm.ENV_EXAMPLE)
    assert used - documented == set(), "undocumented in .env.example"
    passed_through = {key for service in cm.load_raw(cm.BASE_FILE)["services"].values()
                      for key, value in (service.get("environment") or {}).items() if value is None}
    assert documented - used - passed_through == set(), "documented in .env.example but used nowhere"


@pytest.mark.parametrize("secret", sorted(cm.TEST_SECRETS))
def test_missing_secret_stops_compose_with_its_name(secret):
    with pytest.raises(cm.InterpolationError, match=f"{secret} is missing a value: set {secret} in docker/.env"):
        cm.project(cm.example_env(**{secret: ""}))


def test_env_example_leaves_every_secret_to_the_operator():
    example = cm.parse_dotenv(cm.ENV_EXAMPLE)
    assert {name: example.get(name) for name in cm.TEST_SECRETS} == {name: "" for name in cm.TEST_SECRETS}


# --- the deployment's shape ----------------------------------------------------------------------------------------

def test_airflow_services_share_executor_database_broker_and_secrets():
    env = cm.example_env()
    services = cm.project(env)["services"]
    shared = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
              "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
              "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    values = {name: {key: cm.container_env(services[name], env).get(key) for key in shared}
              for name in AIRFLOW_SERVICES}
    first = values["airflow-scheduler"]
    assert first["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert first["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis-secret@redis:6379/0"
    assert first["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    for name, value in values.items():
        assert value == first, name


def test_health_checks_and_start_order():
    services = cm.project(cm.example_env())["services"]
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"], name
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
        if name != "airflow-init":
            assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
    for worker in ("airflow-worker", "airflow-npu-worker"):
        assert services[worker]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    assert services["airflow-npu-worker"]["profiles"] == ["npu"]
    assert "profiles" not in services["airflow-worker"]


def test_npu_worker_gets_the_device_files_and_driver_mounts():
    env = cm.example_env(NPU_DEVICE="3")
    worker = cm.project(env)["services"]["airflow-npu-worker"]
    assert sorted(worker["devices"]) == sorted(f"/dev/{name}:/dev/{name}" for name in
                                               ("davinci3", "davinci_manager", "devmm_svm", "hisi_hdc"))
    mounts = {cm.mount_target(volume): volume for volume in worker["volumes"]}
    for path in ("/usr/local/dcmi", "/usr/local/bin/npu-smi", "/usr/local/Ascend/driver/lib64/",
                 "/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info"):
        assert mounts[path] == f"{path}:{path}:ro"
    container = cm.container_env(worker, env)
    assert container["CONVMIXER_NPU_DEVICES"] == "3"  # the entrypoint checks the device that is mapped
    assert container["CONVMIXER_WORKER_CONCURRENCY"] == "1"
    # The toolkit is mounted where set_env.sh is looked for.
    set_env_dir = os.path.dirname(container["AIRFLOW__CONVMIXER__CANN_SET_ENV"])
    assert mounts[set_env_dir] == f"{set_env_dir}:{set_env_dir}:ro"
    assert container["ASCEND_PROCESS_LOG_PATH"].startswith("/opt/airflow/logs/")  # plog on the logs volume


def test_npu_host_override_runs_only_the_worker_against_the_remote_services():
    env = cm.example_env(POSTGRES_HOST="airflow.example.org", REDIS_HOST="airflow.example.org",
                         AIRFLOW_API_SERVER_URL="http://airflow.example.org:8080", **NPU_HOST_ENV)
    services = cm.project(env, *FILE_SETS["npu-host"])["services"]
    assert set(cm.load(cm.NPU_HOST_FILE, env)["services"]) == {"airflow-npu-worker"}
    worker = services["airflow-npu-worker"]
    container = cm.container_env(worker, env)
    assert worker["hostname"] == "npu-host-1.example.org"
    assert "8793:8793" in worker["ports"]  # the api-server fetches Celery task logs from here
    assert container["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis-secret@airflow.example.org:6379/0"
    assert "@airflow.example.org:5432/" in container["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert container["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow.example.org:8080/execution/"
    with pytest.raises(cm.InterpolationError, match="NPU_HOST_NAME"):
        cm.project(cm.example_env(), *FILE_SETS["npu-host"])


def test_edge_override_switches_every_component_and_worker_to_the_edge_executor():
    env = cm.example_env(AIRFLOW_API_SERVER_URL="https://airflow.example.org", **NPU_HOST_ENV)
    services = cm.project(env, *FILE_SETS["edge-npu-host"])["services"]
    for name in AIRFLOW_SERVICES:
        container = cm.container_env(services[name], env)
        assert container["AIRFLOW__CORE__EXECUTOR"] == "airflow.providers.edge3.executors.EdgeExecutor", name
        assert container["AIRFLOW__EDGE__API_URL"] == "https://airflow.example.org/edge_worker/v1/rpcapi", name
    assert services["airflow-worker"]["command"][:4] == ["edge", "worker", "--queues", "default"]
    assert services["airflow-npu-worker"]["command"] == ["edge"]
    assert cm.container_env(services["airflow-npu-worker"], env)["CONVMIXER_WORKER_MODE"] == "edge"


def test_airflow_starts_with_the_compose_database_settings(tmp_path):
    """Every Airflow process imports airflow.settings, which opens the metadata DB's sync AND async engines:
    a PostgreSQL URL needs psycopg2 and asyncpg installed (Airflow derives postgresql+asyncpg from it)."""
    env = cm.example_env()
    container = cm.container_env(cm.project(env)["services"]["airflow-scheduler"], env)
    probe = "import airflow.settings as s; print(s.SQL_ALCHEMY_CONN_ASYNC.split(':')[0], type(s.engine).__name__)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                            env={**container, "AIRFLOW_HOME": str(tmp_path), "PATH": os.environ["PATH"],
                                 "HOME": str(tmp_path)})
    assert result.returncode == 0, (
        "Airflow cannot start with the compose file's PostgreSQL settings; if the error is "
        "\"No module named 'asyncpg'\", requirements.txt needs asyncpg pinned:\n" + result.stderr[-1500:])
    assert result.stdout.split() == ["postgresql+asyncpg", "Engine"]


# --- agreement with the DAG ----------------------------------------------------------------------------------------

def probe_dag(container: dict[str, str], tmp_path) -> dict:
    # The metadata DB is not what this compares (and no PostgreSQL named "postgres" is reachable here).
    env = {**container, "AIRFLOW_HOME": str(tmp_path / "airflow-home"), "PATH": os.environ["PATH"],
           "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db"}
    result = subprocess.run([sys.executable, "-c", DAG_PROBE, str(DAG_FILE)], env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def init_calls(container: dict[str, str], tmp_path) -> list[list[str]]:
    """airflow-init.sh under the compose environment (paths moved to tmp_path); the airflow calls it made."""
    record = tmp_path / "init-calls.jsonl"
    doubles = install_recorders(tmp_path / "init-bin", record, ["airflow", "convmixer-tasks"],
                                exit_codes={"connections delete": 1})
    env = prepend_path({**container, "PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": sys.executable,
                        "AIRFLOW_HOME": str(tmp_path / "init-home"), "AIRFLOW_UID": str(os.getuid()),
                        "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "init-work"),
                        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth.json"),
                        "CONVMIXER_METRICS_DB_URL": f"sqlite:///{tmp_path}/metrics.db"}, doubles)
    result = run_script(AIRFLOW_INIT, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return [call["argv"] for call in read_records(record) if call["tool"] == "airflow"]


def npu_worker_queue(container: dict[str, str], doubles, tmp_path) -> str:
    """The queue ascend-entrypoint.sh starts the Celery worker on, under the compose environment."""
    record = tmp_path / "worker.jsonl"
    recorders = install_recorders(tmp_path / "worker-bin", record, ["airflow"])
    (tmp_path / "work").mkdir(exist_ok=True)
    env = prepend_path({**container, "PATH": os.environ["PATH"], "HOME": str(tmp_path),
                        "ASCEND_PROCESS_LOG_PATH": str(doubles.log_dir),
                        "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(doubles.set_env),
                        "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "work"),
                        "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev", [int(container["CONVMIXER_NPU_DEVICES"])]))},
                       recorders, doubles.host_bin)
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    argv = call["argv"]
    return argv[argv.index("--queues") + 1]


@pytest.mark.parametrize("scenario", ["env-example", "custom"])
def test_compose_and_dag_agree(scenario, tmp_path, ascend_doubles):  # noqa: F811
    env = cm.example_env(**(CUSTOM_SETTINGS if scenario == "custom" else {}))
    services = cm.project(env)["services"]
    containers = {name: cm.container_env(services[name], env) for name in AIRFLOW_SERVICES}
    dag = probe_dag(containers["airflow-dag-processor"], tmp_path)
    params, tasks = dag["params"], dag["tasks"]
    npu_tasks = [task for task in tasks if task["id"] in ("compile_model", "infer", "benchmark")]
    dag_npu_queues = {task["queue"] for task in npu_tasks}
    dag_npu_pools = {task["pool"] for task in npu_tasks}
    other_queues = {task["queue"] for task in tasks if task not in npu_tasks}
    shards = {task["id"]: task["shards"] for task in tasks if task["shards"] is not None}
    # where the tasks run: the worker settings as each worker container reads them
    worker = probe_dag(containers["airflow-worker"], tmp_path)["worker"]
    npu_worker = probe_dag(containers["airflow-npu-worker"], tmp_path)["worker"]

    # The settings reached the DAG as configured (custom) or fell back to its defaults (.env.example).
    if scenario == "custom":
        assert dag_npu_queues == {"ascend-310p"} and dag_npu_pools == {"npu_devices"}
        assert other_queues == {"cpu"}
        assert dag["schedule"] is None and params["backend"] == "ascend"
        assert params["dataset_dir"] == CUSTOM_SETTINGS["AIRFLOW__CONVMIXER__DATASET_DIR"]
        assert params["model_variant"] == "convmixer_1536_20" and params["batch_sizes"] == [4, 16]
        assert shards == {"preprocess": [0, 1, 2], "infer": [0, 1, 2]}
        assert npu_worker["npu_device_id"] == 1 and npu_worker["metrics_conn_id"] == "metrics_pg"
    else:
        assert (dag_npu_queues, dag_npu_pools) == ({"npu"}, {"npu"}) and other_queues == {"default"}
        assert "0 3 * * 1" in dag["schedule"]
        assert params["dataset_dir"].startswith(worker["work_dir"])  # the demo set, in the work folder
    (npu_pool,) = dag_npu_pools
    assert dag["scheduling"]["npu_pool"] == npu_pool

    # Every task's queue is served by a worker of the deployment, and the NPU tasks sit in the NPU pool.
    default_queues = services["airflow-worker"]["command"][services["airflow-worker"]["command"].index("--queues") + 1]
    npu_queue = npu_worker_queue(containers["airflow-npu-worker"], ascend_doubles, tmp_path)
    assert dag_npu_queues == {npu_queue}
    assert other_queues <= set(default_queues.split(","))
    served = set(default_queues.split(",")) | {npu_queue}
    assert {task["queue"] for task in tasks} <= served

    # airflow-init creates that pool with the configured size and the connection the tasks look up.
    calls = init_calls(containers["airflow-init"], tmp_path)
    pools = [call for call in calls if call[:2] == ["pools", "set"]]
    assert [call[2:4] for call in pools] == [[npu_pool, str(dag["scheduling"]["npu_pool_slots"])]]
    assert {task["pool"] for task in tasks} <= {npu_pool, "default_pool"}
    added = [call for call in calls if call[:2] == ["connections", "add"]]
    assert [call[2] for call in added] == [worker["metrics_conn_id"]] == [npu_worker["metrics_conn_id"]]

    # The work folder is mounted at the tasks' work_dir in every container, and every container reads the same value.
    work_dir = worker["work_dir"]
    assert npu_worker["work_dir"] == dag["worker"]["work_dir"] == work_dir
    for name in AIRFLOW_SERVICES:
        targets = [cm.mount_target(volume) for volume in services[name]["volumes"]]
        assert work_dir in targets, name
        assert containers[name]["AIRFLOW__CONVMIXER__WORK_DIR"] == work_dir, name
    assert containers["airflow-npu-worker"]["AIRFLOW__CONVMIXER__CANN_SET_ENV"] == npu_worker["cann_set_env"]
