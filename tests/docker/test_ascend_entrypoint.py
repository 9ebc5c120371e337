"""docker/ascend-entrypoint.sh against the Ascend tool doubles: the CANN environment it sources reaches the worker
it execs, the worker command line, and the clear refusals when a device file, set_env.sh or a tool is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

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

RECORDED_ENV = ("ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH", "PATH", "PYTHONPATH")


@pytest.fixture
def npu_host(ascend_doubles, tmp_path):
    """The doubles' fake CANN host + fake /dev + recording `airflow` and `celery`; returns (env, doubles, record)."""
    record = tmp_path / "exec.jsonl"
    recorders = install_recorders(tmp_path / "recorders", record, ["airflow", "celery"], env_keys=RECORDED_ENV)
    env = prepend_path(os.environ, recorders)
    env.update(
        {
            "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(ascend_doubles.set_env),
            "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev", [0])),
            "ASCEND_DRIVER_HOME": str(fake_driver(tmp_path / "driver")),
            "HOSTNAME": "npu-box",
        }
    )
    env.pop("LD_LIBRARY_PATH", None)
    for name in (
        "AIRFLOW__CONVMIXER__NPU_QUEUE",
        "AIRFLOW__CONVMIXER__NPU_DEVICE_ID",
        "AIRFLOW__CONVMIXER__WORK_DIR",
        "CONVMIXER_NPU_DEVICES",
        "CONVMIXER_WORKER_CONCURRENCY",
        "CONVMIXER_WORKER_NAME",
        "CONVMIXER_WORKER_MODE",
        "CONVMIXER_WORKER_CHIP",
        "CONVMIXER_WORKER_QUEUES",
        "AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE",
        "NPU_SMI_DOUBLE_CHIP",
    ):
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
    assert call["argv"] == [
        "celery",
        "worker",
        "--queues",
        "ascend-310p,ascend-310p.310P3",
        "--concurrency",
        "1",
        "--celery-hostname",
        "npu@%h",
    ]
    # What set_env.sh exported is in the worker's environment, so every task it forks inherits it.
    assert call["env"]["ASCEND_TOOLKIT_HOME"] == str(doubles.toolkit_home)
    assert call["env"]["ASCEND_OPP_PATH"] == f"{doubles.toolkit_home}/opp"
    assert f"{doubles.toolkit_home}/bin" in call["env"]["PATH"].split(os.pathsep)
    assert "CANN environment configured" in result.stdout  # set_env.sh really ran (its own echo)


def test_edge_worker_mode_from_the_environment(npu_host):
    env, _, record = npu_host
    env.update({"CONVMIXER_WORKER_MODE": "edge", "CONVMIXER_WORKER_NAME": "npu1", "CONVMIXER_WORKER_CONCURRENCY": "2"})

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["argv"] == [
        "edge",
        "worker",
        "--queues",
        "npu,npu.310P3",
        "--concurrency",
        "2",
        "--edge-hostname",
        "npu1.npu-box",
    ]
    name = call["argv"][-1]  # edge3 signs the URL-quoted /worker/<name> and checks the plain one: 403 if they differ
    assert quote(name) == name


def test_the_worker_serves_the_queue_of_the_chip_npu_smi_reports(npu_host):
    env, _, record = npu_host
    env.update({"NPU_SMI_DOUBLE_CHIP": "910B3", "AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE": "{chip}-{queue}"})

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["argv"][call["argv"].index("--queues") + 1] == "npu,910B3-npu"  # untyped DAGs still reach it
    assert "chip 910B3: serving queues npu,910B3-npu" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "queues"),
    [({"CONVMIXER_WORKER_CHIP": "310B1"}, "npu,npu.310B1"), ({"CONVMIXER_WORKER_QUEUES": "npu.910B3"}, "npu.910B3")],
)
def test_the_chip_or_the_queues_can_be_given(npu_host, overrides, queues):
    env, _, record = npu_host
    env.update({"NPU_SMI_DOUBLE_CHIP": "910B3", **overrides})

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    assert call["argv"][call["argv"].index("--queues") + 1] == queues


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"CONVMIXER_WORKER_CHIP": "Ascend910B3"}, ["chip type 'Ascend910B3'", "CONVMIXER_WORKER_CHIP"]),
        ({"AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE": "npu-910"}, ["NPU_QUEUE_TEMPLATE='npu-910' must contain {chip}"]),
    ],
)
def test_a_bad_chip_or_template_is_refused_before_the_worker_starts(npu_host, overrides, words):
    env, _, record = npu_host
    env.update(overrides)

    result = run_script(ENTRYPOINT, env)

    assert result.returncode == 1
    assert all(word in result.stderr for word in words), result.stderr
    assert read_records(record) == []


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
    env, _doubles, record = npu_host
    env["NPU_SMI_DOUBLE_MODE"] = "driver_error"
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert "'npu-smi info' failed" in result.stderr
    assert "dcmi model initialized failed" in result.stderr  # the tool's own words, not just "it failed"
    assert read_records(record) == []


@pytest.mark.parametrize(
    "tool, messages",
    [
        ("npu-smi", ["npu-smi is not on PATH", "/usr/local/bin/npu-smi"]),  # names the driver mount to add
        ("atc", ["atc is not on PATH"]),
        ("ais_bench", ["'python3 -m ais_bench --help' failed", "No module named ais_bench"]),
    ],
)
def test_missing_tool_is_reported_and_no_worker_starts(npu_host, tool, messages):
    env, doubles, record = npu_host
    doubles.remove(tool)
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    for message in messages:
        assert message in result.stderr
    assert read_records(record) == []


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("CONVMIXER_WORKER_CONCURRENCY", "0", "CONVMIXER_WORKER_CONCURRENCY='0' must be a positive integer"),
        ("CONVMIXER_NPU_DEVICES", "davinci0", "must list device numbers"),
    ],
)
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
    assert call["argv"] == [
        "--app",
        "airflow.providers.celery.executors.celery_executor.app",
        "inspect",
        "ping",
        "-d",
        "npu3@npu-box",
    ]


def test_health_in_edge_mode_asks_the_edge_worker(npu_host):
    env, _, record = npu_host
    env["CONVMIXER_WORKER_MODE"] = "edge"
    result = run_script(ENTRYPOINT, env, "health")
    assert result.returncode == 0, result.stderr
    assert [call["argv"] for call in read_records(record)] == [["edge", "status"]]


# --- the preflight: user, device access, driver libraries, ATC compile and a device run ---------------------------


@pytest.fixture
def npu_host_with_driver(npu_host):
    return npu_host


def argv_of(line):
    call = json.loads(line)
    return call["argv"] if isinstance(call, dict) else call


def test_check_compiles_with_atc_and_runs_the_model_on_the_device(npu_host_with_driver, tmp_path):
    env, _, record = npu_host_with_driver
    atc_log, bench_log = tmp_path / "atc.jsonl", tmp_path / "bench.jsonl"
    env.update(
        {
            "ATC_DOUBLE_ARGV_LOG": str(atc_log),
            "AIS_BENCH_DOUBLE_ARGV_LOG": str(bench_log),
            "AIRFLOW__CONVMIXER__NPU_DEVICE_ID": "1",
            "CONVMIXER_NPU_DEVICES": "1",
            "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev1", [1])),
        }
    )

    result = run_script(ENTRYPOINT, env, "check")

    assert result.returncode == 0, result.stderr
    (atc_argv,) = [argv_of(line) for line in atc_log.read_text().splitlines()]
    assert "--input_shape=image:1,3,224,224" in atc_argv and "--soc_version=Ascend310P3" in atc_argv
    runs = [argv_of(line) for line in bench_log.read_text().splitlines()]
    assert runs[0] == ["--help"]  # the shell check, then the run that opens the device
    (bench_argv,) = runs[1:]
    assert bench_argv[bench_argv.index("--loop") + 1] == "1"
    assert bench_argv[bench_argv.index("--device") + 1] == "1"  # the worker's device is the one opened
    assert "ascend-preflight: ok:" in result.stderr and "soc_version=Ascend310P3" in result.stderr
    assert f"driver_library={env['ASCEND_DRIVER_HOME']}/lib64/driver/libascend_hal.so" in result.stderr
    assert read_records(record) == []


def test_driver_folders_reach_the_worker_environment(npu_host_with_driver):
    env, _, record = npu_host_with_driver
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 0, result.stderr
    (call,) = read_records(record)
    del call  # the recorder does not capture LD_LIBRARY_PATH; ask the environment the worker would get instead
    result = run_script(ENTRYPOINT, env, "printenv", "LD_LIBRARY_PATH")
    folders = result.stdout.strip().splitlines()[-1].split(":")
    driver = env["ASCEND_DRIVER_HOME"]
    assert f"{driver}/lib64/driver" in folders and f"{driver}/lib64/common" in folders
    assert folders.count(f"{driver}/lib64/driver") == 1  # added once, even though it is checked twice


def test_missing_driver_library_fails_the_preflight_with_the_mount(npu_host_with_driver, tmp_path):
    env, _, record = npu_host_with_driver
    env["ASCEND_DRIVER_HOME"] = str(fake_driver(tmp_path / "empty-driver", with_hal=False))
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert "FAILED at 'driver'" in result.stderr and "libascend_hal.so" in result.stderr
    assert "/usr/local/Ascend/driver/lib64/" in result.stderr  # the mount that fixes it
    assert read_records(record) == []


# A tool failing during the preflight: the double's mode, and what the message must say (step, cause, verdict).
TOOL_FAILURES = {
    "atc fails with its error code": (
        {"ATC_DOUBLE_MODE": "fail"},
        ["FAILED at 'compile'", "EZ3003", "this worker takes no task"],
    ),
    "the device run crashes": ({"AIS_BENCH_DOUBLE_MODE": "crash"}, ["FAILED at 'device'", "device 0"]),
}


@pytest.mark.parametrize("double_mode, expected", TOOL_FAILURES.values(), ids=list(TOOL_FAILURES))
def test_a_tool_failure_fails_the_preflight_and_names_the_step(npu_host_with_driver, double_mode, expected):
    env, _, record = npu_host_with_driver
    env.update(double_mode)
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert all(text in result.stderr for text in expected), result.stderr
    assert read_records(record) == []  # no worker was started


def test_device_the_double_does_not_have_fails_the_preflight(npu_host_with_driver, tmp_path):
    """ais_bench --device 5 on a host with 2 NPUs: the run that opens the device is what notices."""
    env, _, record = npu_host_with_driver
    env.update(
        {
            "AIRFLOW__CONVMIXER__NPU_DEVICE_ID": "5",
            "CONVMIXER_NPU_DEVICES": "5",
            "ASCEND_DEV_ROOT": str(fake_devices(tmp_path / "dev5", [5])),
        }
    )
    result = run_script(ENTRYPOINT, env)
    assert result.returncode == 1
    assert "FAILED at 'device'" in result.stderr
    assert read_records(record) == []


# Run as another uid in a private mount namespace: a test file stands in for /etc/passwd, and the interpreter
# behind the venv (which may live under a 0700 home folder, e.g. pyenv's) is made reachable for that uid.
AS_UID_SCRIPT = r"""
set -e
mount --bind "$1" /etc/passwd
python=$(readlink -f "$2")
prefix=${python%/bin/*}
case "$prefix" in
  /root/*)
    keep=$(mktemp -d)
    mount --bind /root "$keep"
    mount -t tmpfs -o mode=0711 tmpfs /root
    mkdir -p "$prefix"
    mount --bind "$keep${prefix#/root}" "$prefix"
    ;;
esac
shift 2
exec setpriv --reuid "$UID_UNDER_TEST" --regid 0 --clear-groups -- "$@"
"""


def run_as_uid(uid, passwd, env, *args):
    assert os.geteuid() == 0, "these tests switch uid with setpriv: run the docker/ tests as root (CI does)"
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "bash",
        "-c",
        AS_UID_SCRIPT,
        "as-uid",
        str(passwd),
        sys.executable,
        "bash",
        str(ENTRYPOINT),
        *args,
    ]
    return subprocess.run(
        argv, env={**env, "UID_UNDER_TEST": str(uid)}, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def unknown_uid_host(npu_host_with_driver, tmp_path):
    """The npu_host, readable by uid 4242 (gid 0) that /etc/passwd does not know."""
    env, doubles, record = npu_host_with_driver
    for parent in tmp_path.parents[:2]:  # pytest's own folders are 0700 (it resets them in the next session)
        parent.chmod(parent.stat().st_mode | 0o011)  # gid 0 is the group of these folders
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o055 if path.is_dir() else path.stat().st_mode | 0o044)
    home = tmp_path / "home-airflow"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    env.update({"AIRFLOW_USER_HOME_DIR": str(home), "ASCEND_PROCESS_LOG_PATH": str(tmp_path / "plog")})
    (tmp_path / "plog").mkdir(mode=0o777)
    (tmp_path / "plog").chmod(0o777)
    record.touch()
    record.chmod(0o666)
    for node in Path(env["ASCEND_DEV_ROOT"]).iterdir():
        node.chmod(0o660)  # root:root, rw for the group: the worker (gid 0) is in the device's group
    env.pop("HOME", None)
    passwd = tmp_path / "passwd"
    passwd.write_text(Path("/etc/passwd").read_text())
    return env, doubles, record, passwd


def test_unknown_uid_gets_a_passwd_entry_and_home_before_the_worker_starts(unknown_uid_host):
    """AIRFLOW_UID=$(id -u) on the host: the image has no such user; the Task SDK's getuser() must still work."""
    env, _, record, passwd = unknown_uid_host
    passwd.chmod(0o664)  # group-writable for gid 0, as in the official image

    result = run_as_uid(4242, passwd, env)

    assert result.returncode == 0, result.stderr
    assert "default:x:4242:0:default user:" in passwd.read_text()
    assert "uid 4242 had no user name: added 'default'" in result.stderr
    assert "user=default" in result.stderr  # what the preflight's getpass.getuser() returned
    (call,) = read_records(record)
    assert call["argv"][:2] == ["celery", "worker"]


def test_unknown_uid_without_a_writable_passwd_still_resolves_through_user(unknown_uid_host):
    env, _, record, passwd = unknown_uid_host
    passwd.chmod(0o644)
    before = passwd.read_text()

    result = run_as_uid(4242, passwd, env)

    assert result.returncode == 0, result.stderr
    assert passwd.read_text() == before
    assert "USER=default for this worker" in result.stderr and "user=default" in result.stderr
    assert "not in /etc/passwd" in result.stderr  # the preflight says where the name came from
    (call,) = read_records(record)
    assert call["argv"][:2] == ["celery", "worker"]


def test_device_files_this_uid_cannot_open_are_refused_with_their_group(unknown_uid_host, tmp_path):
    env, _, record, passwd = unknown_uid_host
    passwd.chmod(0o664)
    dev = fake_devices(tmp_path / "dev-perm", [0])
    for node in dev.iterdir():
        os.chown(node, 0, 1234)
        node.chmod(0o660)  # the driver's HwHiAiUser group, which the worker is not in
    dev.chmod(0o755)
    env["ASCEND_DEV_ROOT"] = str(dev)

    result = run_as_uid(4242, passwd, env)

    assert result.returncode == 1
    assert f"{dev}/davinci0: owner 0:1234" in result.stderr and "mode 660" in result.stderr
    assert "this worker is uid 4242, groups 0" in result.stderr
    assert "ASCEND_DEVICE_GID" in result.stderr
    assert read_records(record) == []
