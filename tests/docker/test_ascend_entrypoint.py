"""docker/ascend-entrypoint.sh against the Ascend tool doubles: the CANN environment it sources reaches the worker
it execs, the worker command line, and the clear refusals when a device file, set_env.sh or a tool is missing."""

from __future__ import annotations

import os
import subprocess
import pytest

from tests.ascend_doubles import ascend_doubles  # noqa: F401  (the fixture)
from tests.docker.helpers import (
    AIRFLOW_INIT, ENTRYPOINT, fake_devices, install_recorders, prepend_path, read_records, run_script,
)

RECORDED_ENV = ("ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH", "PATH", "PYTHONPATH")


@pytest.fixture
def npu_host(ascend_doubles, tmp_path):  # noqa: F811
    """The doubles' fake CANN host + fake /dev + recording `airflow` and `celery`; returns (env, doubles, record)."""
    record = tmp_path / "exec.jsonl"
    recorders = install_recorders(tmp_path / "recorders", record, ["airflow", "celery"], env_keys=RECORDED_ENV)
    env = prepend_path(os.environ, recorders)
    env.update({
        "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(ascend_doubles.set_env),
        "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev", [0])),
        "HOSTNAME": "npu-box",
    })
    for name in ("AIRFLOW__CONVMIXER__NPU_QUEUE", "AIRFLOW__CONVMIXER__NPU_DEVICE_ID", "AIRFLOW__CONVMIXER__WORK_DIR",
                 "CONVMIXER_NPU_DEVICES", "CONVMIXER_WORKER_CONCURRENCY", "CONVMIXER_WORKER_NAME",
                 "CONVMIXER_WORKER_MODE"):
        env.pop(name, None)
    return env, ascend_doubles, record


def test_scripts_parse_as_bash():
    for script in (ENTRYPOINT, AIRFLOW_INIT):
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_celery_worker_is_execed_inside_the_cann_environment(npu_host):
    env, doubles, record = npu_host
    env["AIRFLOW__CONVMIXER__NPU_QUEUE"] = "ascend-310p"

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["tool"] == "airflow"
    assert call["argv"] == ["celery", "worker", "--queues", "ascend-310p", "--concurrency", "1",
                            "--celery-hostname", "npu@%h"]
    # What set_env.sh exported is in the worker's environment, so every task it forks inherits it.
    assert call["env"]["ASCEND_TOOLKIT_HOME"] == str(doubles.toolkit_home)
    assert call["env"]["ASCEND_OPP_PATH"] == f"{doubles.toolkit_home}/opp"
    assert f"{doubles.toolkit_home}/bin" in call["env"]["PATH"].split(os.pathsep)
    assert "CANN environment configured" in result.stdout  # set_env.sh really ran (its own echo)


def test_edge_worker_mode_from_the_environment(npu_host):
    env, _, record = npu_host
    env.update({"CONVMIXER_WORKER_MODE": "edge", "CONVMIXER_WORKER_NAME": "npu1",
                "CONVMIXER_WORKER_CONCURRENCY": "2"})

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["argv"] == ["edge", "worker", "--queues", "npu", "--concurrency", "2",
                            "--edge-hostname", "npu1@npu-box"]


def test_check_mode_runs_the_checks_and_starts_nothing(npu_host):
    env, _, record = npu_host
    result = run_script(ENTRYPOINT, env, "check")
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stderr
    assert read_records(record) == []


def test_other_commands_run_in_the_cann_environment(npu_host):
    env, doubles, _ = npu_host
    result = run_script(ENTRYPOINT, env, "printenv", "ASCEND_TOOLKIT_HOME")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(doubles.toolkit_home)


def test_missing_device_files_are_all_named_with_their_fix(npu_host, tmp_path):
    env, _, record = npu_host
    env["ASCEND_DEV_ROOT"] = str(fake_devices(tmp_path / "dev2", [0, 1], missing=["davinci1", "hisi_hdc"]))
    env["CONVMIXER_NPU_DEVICES"] = "0,1"

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 1
    assert f"{env['ASCEND_DEV_ROOT']}/davinci1" in result.stderr
    assert "/dev/davinci1:/dev/davinci1" in result.stderr  # the compose line that fixes it
    assert f"{env['ASCEND_DEV_ROOT']}/hisi_hdc" in result.stderr
    assert "davinci0" not in result.stderr and "davinci_manager" not in result.stderr  # present ones not blamed
    assert read_records(record) == []


def test_missing_set_env_is_named_with_the_mount_fix(npu_host, tmp_path):
    env, _, record = npu_host
    missing = tmp_path / "no-cann" / "set_env.sh"
    env["AIRFLOW__CONVMIXER__CANN_SET_ENV"] = str(missing)

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 1
    assert str(missing) in result.stderr
    assert "AIRFLOW__CONVMIXER__CANN_SET_ENV" in result.stderr and "CANN_HOST_DIR" in result.stderr
    assert read_records(record) == []


def test_missing_work_folder_is_refused(npu_host, tmp_path):
    env, _, record = npu_host
    env["AIRFLOW__CONVMIXER__WORK_DIR"] = str(tmp_path / "not-mounted")
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert "not-mounted" in result.stderr and "same path in every worker" in result.stderr
    assert read_records(record) == []


def test_failing_set_env_is_reported(npu_host, tmp_path):
    env, _, record = npu_host
    broken = tmp_path / "broken_set_env.sh"
    broken.write_text("echo 'cannot find the toolkit' >&2\nreturn 3\n")
    env["AIRFLOW__CONVMIXER__CANN_SET_ENV"] = str(broken)
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert f"sourcing {broken} failed" in result.stderr
    assert read_records(record) == []


def test_npu_smi_failure_shows_the_driver_message(npu_host):
    env, doubles, record = npu_host
    env["NPU_SMI_DOUBLE_MODE"] = "driver_error"
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert "'npu-smi info' failed" in result.stderr
    assert "dcmi model initialized failed" in result.stderr  # the tool's own words, not just "it failed"
    assert read_records(record) == []


@pytest.mark.parametrize("tool, messages", [
    ("npu-smi", ["npu-smi is not on PATH", "/usr/local/bin/npu-smi"]),  # names the driver mount to add
    ("atc", ["atc is not on PATH"]),
    ("ais_bench", ["'python3 -m ais_bench --help' failed", "No module named ais_bench"]),
])
def test_missing_tool_is_reported_and_no_worker_starts(npu_host, tool, messages):
    env, doubles, record = npu_host
    doubles.remove(tool)
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    for message in messages:
        assert message in result.stderr
    assert read_records(record) == []


@pytest.mark.parametrize("variable, value, words", [
    ("CONVMIXER_WORKER_CONCURRENCY", "0", "CONVMIXER_WORKER_CONCURRENCY='0' must be a positive integer"),
    ("CONVMIXER_NPU_DEVICES", "davinci0", "must list device numbers"),
])
def test_bad_settings_are_refused(npu_host, variable, value, words):
    env, _, record = npu_host
    env[variable] = value
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert words in result.stderr
    assert read_records(record) == []


def test_health_pings_this_celery_worker(npu_host):
    env, _, record = npu_host
    env["CONVMIXER_WORKER_NAME"] = "npu3"
    result = run_script(ENTRYPOINT, env, "health")
    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["tool"] == "celery"
    assert call["argv"] == ["--app", "airflow.providers.celery.executors.celery_executor.app", "inspect", "ping",
                            "-d", "npu3@npu-box"]


def test_health_in_edge_mode_asks_the_edge_worker(npu_host):
    env, _, record = npu_host
    env["CONVMIXER_WORKER_MODE"] = "edge"
    result = run_script(ENTRYPOINT, env, "health")
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in read_records(record)] == [["edge", "status"]]
