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

from tests.docker import compose_model as cm
from tests.docker.helpers import (
    AIRFLOW_INIT,
    ENTRYPOINT,
    fake_devices,
    fake_driver,
    install_recorders,
    prepend_path,
    read_records,
    run_script,
)

REPO = cm.DOCKER_DIR.parent
DAG_FILE = REPO / "dags" / "convmixer_validation.py"
SCHEMA = json.loads((REPO / "tests" / "docker" / "compose-spec" / "compose-spec.json").read_text())
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-npu-worker",
)
LONG_RUNNING = (*(name for name in AIRFLOW_SERVICES if name != "airflow-init"), "postgres", "redis")
NPU_HOST_ENV = {
    "NPU_HOST_NAME": "npu-host-1.example.org",
    "AIS_BENCH_SRC_DIR": "/opt/src/ais_bench",
    "AIS_BENCH_SOURCE_SHA256": "0" * 64,
}
FILE_SETS = {
    "base": (cm.BASE_FILE,),
    "ascend-build": (cm.BASE_FILE, cm.ASCEND_BUILD_FILE),
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
from convmixer_tasks.run.settings import airflow_conf_reader, load_scheduling_settings, load_worker_settings
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
        errors = [
            f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator().iter_errors(document)
        ]
        assert errors == []


V1_SCHEMA = json.loads((REPO / "tests" / "docker" / "compose-spec" / "docker-compose-1.29.2.json").read_text())
V1_FILES = (cm.BASE_FILE, cm.NPU_HOST_FILE, cm.EDGE_FILE)  # all but the v2-only docker-compose.ascend-build.yaml


def v1_errors(document) -> list[str]:
    """What docker-compose 1.29.2's schema says of one interpolated file (it validates each file with Draft 4;
    its own format checks of ports/expose are not repeated here)."""
    validator = jsonschema.Draft4Validator(V1_SCHEMA)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


@pytest.mark.parametrize("path", V1_FILES, ids=lambda path: path.name)
def test_compose_files_stay_within_docker_compose_1_29(path):
    """Debian 12 ships docker-compose 1.29 and no Compose v2: its schema refuses a top-level `name`,
    `additional_contexts` and `create_host_path`, which v2 accepts."""
    assert v1_errors(cm.load(path, cm.example_env(**NPU_HOST_ENV))) == []


@pytest.mark.parametrize("path", V1_FILES, ids=lambda path: path.name)
def test_no_nested_interpolation_which_docker_compose_1_29_leaves_unexpanded(path):
    """1.29 reads ${A:-${B}} as the default '${B' plus a stray '}' (seen: a metrics URL with user '${POSTGRES_USER')."""
    nested = [
        text
        for text in cm._strings(cm.load_raw(path))
        if re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?[-?+][^}]*\$\{", text.replace("$$", ""))
    ]
    assert nested == []


def test_the_1_29_schema_refuses_what_v2_alone_accepts():
    env = cm.example_env(**NPU_HOST_ENV)
    assert v1_errors(cm.load(cm.ASCEND_BUILD_FILE, env))  # documented as v2-only
    for change in (
        {"name": "convmixer"},
        {
            "services": {
                "x": {
                    "image": "i",
                    "volumes": [{"type": "bind", "source": "/a", "target": "/a", "bind": {"create_host_path": False}}],
                }
            }
        },
    ):
        assert v1_errors(change), change


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
    passed_through = {
        key
        for service in cm.load_raw(cm.BASE_FILE)["services"].values()
        for key, value in (service.get("environment") or {}).items()
        if value is None
    }
    read_by_compose = {"COMPOSE_PROJECT_NAME"}
    assert documented - used - passed_through - read_by_compose == set(), "documented in .env.example but used nowhere"


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
    shared = (
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    )
    values = {
        name: {key: cm.container_env(services[name], env).get(key) for key in shared} for name in AIRFLOW_SERVICES
    }
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


def test_health_check_timing_defaults_to_the_official_one_and_one_setting_raises_every_timeout():
    """The checks start Python (most import Airflow): on a host with busy cores they outlive 10 s, so one .env
    setting must lengthen every Airflow service's timeout, the NPU workers' included."""
    services = cm.project(cm.example_env())["services"]
    checked = [name for name, service in services.items() if name.startswith("airflow-") and "healthcheck" in service]
    assert set(AIRFLOW_SERVICES) - {"airflow-init"} <= set(checked)
    for name in checked:
        check = services[name]["healthcheck"]
        npu = name in NPU_WORKERS
        assert (check["interval"], check["retries"]) == ("30s", 5), name
        assert check["timeout"] == ("20s" if npu else "10s"), name
        assert check["start_period"] == ("180s" if npu else "30s"), name
    loaded = cm.project(
        cm.example_env(
            AIRFLOW_HEALTHCHECK_TIMEOUT="2m",
            AIRFLOW_HEALTHCHECK_START_PERIOD="5m",
            NPU_WORKER_HEALTHCHECK_START_PERIOD="15m",
        )
    )["services"]
    assert {loaded[name]["healthcheck"]["timeout"] for name in checked} == {"2m"}
    assert {loaded[name]["healthcheck"]["start_period"] for name in checked} == {"5m", "15m"}
    assert {loaded[name]["healthcheck"]["start_period"] for name in NPU_WORKERS} == {"15m"}


DRIVER_PATHS = (
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver/lib64",
    "/usr/local/Ascend/driver/version.info",
    "/etc/ascend_install.info",
)
NPU_WORKERS = ("airflow-npu-worker", *(f"airflow-npu-worker-{slot}" for slot in range(1, 8)))


def test_npu_worker_gets_the_device_files_and_driver_mounts():
    env = cm.example_env(NPU_DEVICE="3")
    worker = cm.project(env)["services"]["airflow-npu-worker"]
    assert sorted(worker["devices"]) == sorted(
        f"/dev/{name}:/dev/{name}" for name in ("davinci3", "davinci_manager", "devmm_svm", "hisi_hdc")
    )
    mounts = {cm.mount_target(volume): volume for volume in worker["volumes"]}
    for path in DRIVER_PATHS:
        assert mounts[path] == {"type": "bind", "source": path, "target": path, "read_only": True}
    container = cm.container_env(worker, env)
    assert container["CONVMIXER_NPU_DEVICES"] == "3"  # the entrypoint checks the device that is mapped
    assert container["CONVMIXER_WORKER_CONCURRENCY"] == "1"
    # The toolkit is mounted where set_env.sh is looked for.
    set_env_dir = os.path.dirname(container["AIRFLOW__CONVMIXER__CANN_SET_ENV"])
    assert mounts[set_env_dir] == {"type": "bind", "source": set_env_dir, "target": set_env_dir, "read_only": True}
    assert container["ASCEND_PROCESS_LOG_PATH"].startswith("/opt/airflow/logs/")  # plog on the logs volume


def test_driver_and_toolkit_mounts_never_create_a_missing_host_path():
    """Short-syntax binds create a missing source as an empty folder (the worker then finds no driver). The long
    syntax does not, in Compose v2 (create_host_path is implied only by the short syntax) and in docker-compose
    1.29 (it passes them as mounts, which Docker refuses for a missing source) — and 1.29 rejects the explicit
    `create_host_path` key, so it must not be written."""
    services = cm.project(cm.example_env())["services"]
    for name in NPU_WORKERS:
        binds = [volume for volume in services[name]["volumes"] if isinstance(volume, dict)]
        targets = {volume["target"] for volume in binds}
        assert set(DRIVER_PATHS) | {"/usr/local/Ascend/ascend-toolkit"} <= targets, name
        for volume in binds:
            assert volume["type"] == "bind" and volume["read_only"] is True, (name, volume)
        short = [volume for volume in services[name]["volumes"] if isinstance(volume, str)]
        assert not any(cm.mount_target(volume) in DRIVER_PATHS for volume in short), name
    for path in (cm.BASE_FILE, cm.NPU_HOST_FILE, cm.EDGE_FILE, cm.ASCEND_BUILD_FILE):
        assert "create_host_path" not in set(_keys(cm.load_raw(path))), path.name


def test_one_npu_worker_per_chip_from_one_definition():
    """Profiles npu, npu1 … npu7 start one worker each: its own chip (and no other), its own Celery name,
    concurrency 1, no published port; everything else is the first worker's definition."""
    env = cm.example_env(NPU_DEVICE_3="6")
    services = cm.project(env)["services"]
    first = services["airflow-npu-worker"]
    chips, names, profiles = [], [], []
    for name in NPU_WORKERS:
        worker = services[name]
        container = cm.container_env(worker, env)
        own = [device for device in worker["devices"] if re.search(r"/davinci\d+:", device)]
        assert len(own) == 1, (name, own)
        chip = re.search(r"/davinci(\d+):/dev/davinci(\d+)$", own[0])
        assert chip and chip.group(1) == chip.group(2) == container["CONVMIXER_NPU_DEVICES"], name
        chips.append(chip.group(1))
        names.append(container["CONVMIXER_WORKER_NAME"])
        profiles.append(tuple(worker["profiles"]))
        assert container["CONVMIXER_WORKER_CONCURRENCY"] == "1", name
        assert container["AIRFLOW__CONVMIXER__NPU_DEVICE_ID"] == "0", name  # its only chip, as ACL numbers it
        assert "ports" not in worker, name
        for key in (
            "image",
            "command",
            "user",
            "group_add",
            "volumes",
            "healthcheck",
            "depends_on",
            "stop_grace_period",
        ):
            assert worker[key] == first[key], (name, key)
        shared = sorted(set(worker["devices"]) - set(own))
        assert shared == sorted(set(first["devices"]) - {first["devices"][0]}), name
    assert chips == ["0", "1", "2", "6", "4", "5", "6", "7"]  # NPU_DEVICE_3=6 moved worker 3 (and says so)
    assert len(set(names)) == len(NPU_WORKERS) and names[:3] == ["npu", "npu1", "npu2"]
    assert profiles == [("npu",)] + [(f"npu{slot}",) for slot in range(1, 8)]


def _keys(node):
    """Every mapping key anywhere in a YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def _seconds(duration: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a Compose duration: {duration!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def test_stop_grace_period_lets_running_tasks_finish():
    """Compose's default is 10 s, then SIGKILL; an NPU task may run as long as the backend's tool timeouts."""
    import inspect

    from convmixer_tasks.backends.ascend import AscendBackend

    services = cm.project(cm.example_env())["services"]
    defaults = inspect.signature(AscendBackend).parameters
    longest_tool = max(defaults["atc_timeout_s"].default, defaults["ais_bench_timeout_s"].default)
    for name in NPU_WORKERS:
        assert _seconds(services[name]["stop_grace_period"]) >= longest_tool, name
    assert _seconds(services["airflow-worker"]["stop_grace_period"]) >= 3600
    custom = cm.project(cm.example_env(NPU_WORKER_STOP_GRACE_PERIOD="9h"))["services"]
    assert {custom[name]["stop_grace_period"] for name in NPU_WORKERS} == {"9h"}
    for name in ("airflow-worker", *NPU_WORKERS):  # and the signal reaches Celery, not its task processes
        assert cm.container_env(services[name], cm.example_env())["DUMB_INIT_SETSID"] == "0", name


def test_flower_is_a_profile_on_loopback():
    env = cm.example_env()
    flower = cm.project(env)["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["command"] == ["celery", "flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "5555/healthcheck" in " ".join(flower["healthcheck"]["test"])
    container = cm.container_env(flower, env)
    assert container["AIRFLOW__CELERY__BROKER_URL"] == "redis://:redis-secret@redis:6379/0"
    assert flower["image"] == cm.project(env)["services"]["airflow-worker"]["image"]


def test_data_folder_is_mounted_read_only_in_every_worker():
    env = cm.example_env(CONVMIXER_DATA_HOST_DIR="/srv/imagenet")
    services = cm.project(env)["services"]
    for name in ("airflow-worker", *NPU_WORKERS):
        assert "/srv/imagenet:/opt/airflow/convmixer-data:ro" in services[name]["volumes"], name
    example = cm.ENV_EXAMPLE.read_text()
    for key in ("DATASET_DIR", "LABEL_FILE", "CHECKPOINT"):
        line = re.search(rf"^# AIRFLOW__CONVMIXER__{key}=(\S+)$", example, re.M)
        assert line and line.group(1).startswith("/opt/airflow/convmixer-data/"), key


def test_images_are_tagged_with_the_git_revision_never_latest():
    env = cm.example_env(CONVMIXER_REVISION="a1b2c3d4e5f6", **NPU_HOST_ENV)
    services = cm.project(env, cm.BASE_FILE, cm.ASCEND_BUILD_FILE)["services"]
    airflow = [name for name, service in services.items() if name not in ("postgres", "redis")]
    for name in airflow:
        image = services[name]["image"]
        assert image.endswith(":a1b2c3d4e5f6") and "latest" not in image, (name, image)
    assert services["airflow-worker"]["build"]["args"]["CONVMIXER_REVISION"] == "a1b2c3d4e5f6"
    build = services["airflow-npu-worker"]["build"]
    assert build["args"]["CONVMIXER_IMAGE"] == services["airflow-worker"]["image"]  # built FROM the same revision
    assert build["args"]["CONVMIXER_REVISION"] == "a1b2c3d4e5f6"
    with pytest.raises(cm.InterpolationError, match="CONVMIXER_REVISION is missing a value"):
        cm.project(cm.example_env(CONVMIXER_REVISION=""))


def test_ascend_image_build_through_compose():
    env = cm.example_env(AIS_BENCH_SRC_DIR="/opt/src/ais_bench", AIS_BENCH_SOURCE_SHA256="ab" * 32)
    build = cm.project(env, cm.BASE_FILE, cm.ASCEND_BUILD_FILE)["services"]["airflow-npu-worker"]["build"]
    assert build["dockerfile"] == "docker/Dockerfile.ascend" and build["context"] == ".."
    assert build["additional_contexts"] == {
        "ais_bench_src": "/opt/src/ais_bench",
        "cann": "/usr/local/Ascend/ascend-toolkit",
    }
    assert build["args"]["CANN_CONTEXT_DIR"] == "/"  # a folder context: the toolkit is at its root
    assert build["args"]["AIS_BENCH_SOURCE_SHA256"] == "ab" * 32
    dockerfile = (cm.DOCKER_DIR / "Dockerfile.ascend").read_text()
    for arg in build["args"]:
        assert re.search(rf"^ARG {arg}(=|$)", dockerfile, re.M), f"Dockerfile.ascend has no ARG {arg}"
    for name in build["additional_contexts"]:
        assert re.search(rf"(AS|from=){name}\b", dockerfile), f"Dockerfile.ascend does not use context {name}"
    for missing in ("AIS_BENCH_SRC_DIR", "AIS_BENCH_SOURCE_SHA256"):
        with pytest.raises(cm.InterpolationError, match=missing):
            cm.project(cm.example_env(**{**env, missing: ""}), cm.BASE_FILE, cm.ASCEND_BUILD_FILE)
    # docker-compose 1.29 rejects additional_contexts: it lives in this override only.
    for path in (cm.BASE_FILE, cm.NPU_HOST_FILE, cm.EDGE_FILE):
        assert "additional_contexts" not in set(_keys(cm.load_raw(path))), path.name


def test_npu_host_override_runs_only_the_worker_against_the_remote_services():
    env = cm.example_env(
        POSTGRES_HOST="airflow.example.org",
        REDIS_HOST="airflow.example.org",
        AIRFLOW_API_SERVER_URL="http://airflow.example.org:8080",
        **NPU_HOST_ENV,
    )
    services = cm.project(env, *FILE_SETS["npu-host"])["services"]
    assert set(cm.load(cm.NPU_HOST_FILE, env)["services"]) == set(NPU_WORKERS)
    for name in NPU_WORKERS:  # task logs are fetched from this host's name; only one worker can publish :8793
        assert services[name]["hostname"] == "npu-host-1.example.org", name
        assert ("ports" in services[name]) == (name == "airflow-npu-worker"), name
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
    for name in NPU_WORKERS:
        assert services[name]["command"] == ["edge"], name
        container = cm.container_env(services[name], env)
        assert container["CONVMIXER_WORKER_MODE"] == "edge", name
        assert container["AIRFLOW__CORE__EXECUTOR"] == "airflow.providers.edge3.executors.EdgeExecutor", name


def test_airflow_starts_with_the_compose_database_settings(tmp_path):
    """Every Airflow process imports airflow.settings, which opens the metadata DB's sync AND async engines:
    a PostgreSQL URL needs psycopg2 and asyncpg installed (Airflow derives postgresql+asyncpg from it)."""
    env = cm.example_env()
    container = cm.container_env(cm.project(env)["services"]["airflow-scheduler"], env)
    probe = "import airflow.settings as s; print(s.SQL_ALCHEMY_CONN_ASYNC.split(':')[0], type(s.engine).__name__)"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**container, "AIRFLOW_HOME": str(tmp_path), "PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, (
        "Airflow cannot start with the compose file's PostgreSQL settings; if the error is "
        "\"No module named 'asyncpg'\", requirements.txt needs asyncpg pinned:\n" + result.stderr[-1500:]
    )
    assert result.stdout.split() == ["postgresql+asyncpg", "Engine"]


# --- agreement with the DAG ----------------------------------------------------------------------------------------


def probe_dag(container: dict[str, str], tmp_path) -> dict:
    # The metadata DB is not what this compares (and no PostgreSQL named "postgres" is reachable here).
    env = {
        **container,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
    }
    result = subprocess.run(
        [sys.executable, "-c", DAG_PROBE, str(DAG_FILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def init_calls(container: dict[str, str], tmp_path) -> list[list[str]]:
    """airflow-init.sh under the compose environment (paths moved to tmp_path); the airflow calls it made."""
    record = tmp_path / "init-calls.jsonl"
    doubles = install_recorders(
        tmp_path / "init-bin", record, ["airflow", "convmixer-tasks"], exit_codes={"connections delete": 1}
    )
    env = prepend_path(
        {
            **container,
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "PYTHON": sys.executable,
            "AIRFLOW_HOME": str(tmp_path / "init-home"),
            "AIRFLOW_UID": str(os.getuid()),
            "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "init-work"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth.json"),
            "CONVMIXER_METRICS_DB_URL": f"sqlite:///{tmp_path}/metrics.db",
        },
        doubles,
    )
    result = run_script(AIRFLOW_INIT, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return [call["argv"] for call in read_records(record) if call["tool"] == "airflow"]


def npu_worker_queues(container: dict[str, str], doubles, tmp_path) -> set[str]:
    """The queues ascend-entrypoint.sh starts the Celery worker on, under the compose environment."""
    record = tmp_path / "worker.jsonl"
    recorders = install_recorders(tmp_path / "worker-bin", record, ["airflow"])
    (tmp_path / "work").mkdir(exist_ok=True)
    env = prepend_path(
        {
            **container,
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "ASCEND_PROCESS_LOG_PATH": str(doubles.log_dir),
            "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(doubles.set_env),
            "AIRFLOW__CONVMIXER__WORK_DIR": str(tmp_path / "work"),
            "ASCEND_DRIVER_HOME": str(fake_driver(tmp_path / "driver")),
            "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev", [int(container["CONVMIXER_NPU_DEVICES"])])),
        },
        recorders,
        doubles.host_bin,
    )
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    argv = call["argv"]
    return set(argv[argv.index("--queues") + 1].split(","))


@pytest.mark.parametrize("scenario", ["env-example", "custom"])
def test_compose_and_dag_agree(scenario, tmp_path, ascend_doubles):
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
    npu_queues = npu_worker_queues(containers["airflow-npu-worker"], ascend_doubles, tmp_path)
    assert dag_npu_queues <= npu_queues and len(npu_queues) == 2  # the untyped queue and its chip's (npu.310P3)
    assert other_queues <= set(default_queues.split(","))
    served = set(default_queues.split(",")) | npu_queues
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
