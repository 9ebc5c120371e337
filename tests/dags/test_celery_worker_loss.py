"""A worker lost during infer, for real: the run succeeds, its outputs are whole, its top-1 is an undisturbed run's.

A throwaway distributed Airflow as in test_celery_routing (PostgreSQL, Redis, api-server, scheduler, dag-processor)
with `[convmixer] chips = 310P3`, three shards, and two NPU workers (`npuA`, `npuB`) serving the one chip queue — both
on the Ascend tool doubles, whose ais_bench holds each batch for AIS_BENCH_DOUBLE_SLEEP_MS (a stand-in chip's time),
so an inference is caught mid-way. Two runs of the same conf: the reference, undisturbed; then the same again, in
which, as soon as worker A's ais_bench has saved part of its shard's outputs, worker A's whole process tree (Celery
main process, its pool child, the task process and the tool, which runs in a session of its own) is SIGKILLed: a
host loss. The scheduler's task-instance heartbeat timeout (lowered here) fails that try; the NPU steps' retries
queue the next one, which only worker B can take.

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); .ci/run starts both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs installed
import pytest

from convmixer_tasks.stages.aisbench_format import STAGING_MARK
from tests.ascend_doubles import AscendDoubles
from tests.dags.cluster import rest_time, start_worker, throwaway_airflow, wait_for

pytestmark = pytest.mark.slow  # ~6-10 minutes on 2 busy cores: two runs and a heartbeat timeout

DAG_ID = "convmixer_validation"
CHIP = "310P3"
QUEUE = f"npu.{CHIP}"
LOST, SURVIVOR = "npuA", "npuB"
SHARDS = 3  # 24 images at batch 4: 6 batch files, 2 per shard, so a shard has a "half-way"
SLEEP_MS = 3000  # per batch: the window between a shard's first saved outputs and its end
HEARTBEAT_TIMEOUT_S = 60  # Airflow's default is 300; above a loaded box's worst heartbeat gap (they come every 5 s)
IMAGES = 24
BATCHES = IMAGES // 4  # the prep folder holds one file per batch; ais_bench writes one output file per input file
CONF = {
    "backend": "ascend",
    "chips": [CHIP],
    "batch_sizes": [4],
    "image_limit": IMAGES,
    "benchmark_loop": 3,  # each loop sleeps too: keep the benchmark short
    "benchmark_remeasure": 0,
    "benchmark_confirm": 0,
    "throughput_tolerance_pct": 99,
    "throughput_max_cv_pct": 1000,
}
SERIES = ("model_variant", "batch_size", "precision_mode", "chip")


def _lost_worker_mid_infer(worker: subprocess.Popen) -> Path | None:
    """The staging folder of an inference the worker is running, once it holds some but not all of its outputs."""
    for proc in psutil.Process(worker.pid).children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:  # exited meanwhile
            continue
        if "ais_bench" not in argv or "--input" not in argv or "--output_dirname" not in argv:
            continue  # the import probe or a benchmark (no inputs)
        staging = Path(argv[argv.index("--output") + 1]) / argv[argv.index("--output_dirname") + 1]
        if "infer" in staging.parts and any(staging.glob("*.bin")):
            return staging
    return None


def _kill_host(worker: subprocess.Popen) -> list[int]:
    """SIGKILL the worker's process group and every process under it (the tools run in sessions of their own)."""
    tree = [worker.pid, *(child.pid for child in psutil.Process(worker.pid).children(recursive=True))]
    os.killpg(worker.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.wait(timeout=30)
    return tree


def _running(pid: int) -> bool:
    """Not yet ended (a SIGKILL takes effect when the kernel next schedules the process; a zombie has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _outputs(run_dir: Path) -> dict[str, bytes]:
    """The run's merged infer outputs (what evaluate scored), by file name."""
    (merged,) = run_dir.glob("*/bs4-*/outputs")
    return {path.name: path.read_bytes() for path in merged.iterdir()}


@pytest.fixture(scope="module")
def worker_loss(tmp_path_factory):
    from convmixer_tasks.metrics import dispose_engines, query_runs
    from convmixer_tasks.run.fleet import chip_work_dir
    from convmixer_tasks.run.workdir import WorkLayout

    root = tmp_path_factory.mktemp("celery-worker-loss")
    doubles = AscendDoubles(root / "ascend", monkeypatch=None).build()  # type: ignore[arg-type]
    settings = {
        "AIRFLOW__CONVMIXER__CHIPS": CHIP,
        "AIRFLOW__CONVMIXER__SHARDS": str(SHARDS),
        "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(doubles.set_env),
        "AIRFLOW__CONVMIXER__NPU_TASK_TIMEOUT_HOURS": "0.25",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
        "ASCEND_PROCESS_LOG_PATH": str(doubles.log_dir),
    }
    with throwaway_airflow(root, settings, path_first=[doubles.host_bin]) as airflow:  # npu-smi, as on an NPU host
        cluster, session, api = airflow.cluster, airflow.session, airflow.api
        start_worker(cluster, "default", "default", 2)
        for role in (LOST, SURVIVOR):  # two hosts of one chip type, one NPU each
            start_worker(
                cluster, role, QUEUE, 1, {"NPU_SMI_DOUBLE_CHIP": CHIP, "AIS_BENCH_DOUBLE_SLEEP_MS": str(SLEEP_MS)}
            )
        airflow.set_pool(QUEUE, 2)  # two devices
        airflow.wait_for_dag()
        airflow.wait_for_workers(("default", LOST, SURVIVOR))

        def run_to_end(name: str, during=None) -> dict:
            run_id = airflow.trigger(CONF)
            run_url = f"{api}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
            seen = during() if during else {}
            state, tis = airflow.wait_for_run(run_id, 900)
            tries = {
                (ti["task_id"], ti["map_index"]): session.get(
                    f"{run_url}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries", timeout=10
                ).json()["task_instances"]
                for ti in tis
                if ti["try_number"] > 1
            }
            return {"run_id": run_id, "state": state, "tis": tis, "tries": tries, **seen}

        def kill_worker_a_mid_infer() -> dict:
            worker = cluster.processes[f"worker-{LOST}"]
            staging = wait_for(
                f"worker {LOST} to be half-way through an infer shard",
                lambda: _lost_worker_mid_infer(worker),
                600,
                cluster,
                every=0.5,
            )
            files_then = sorted(path.name for path in staging.glob("*.bin"))
            killed = _kill_host(worker)
            del cluster.processes[f"worker-{LOST}"]  # gone on purpose: the others must stay alive
            wait_for("the killed worker's processes to end", lambda: not any(map(_running, killed)), 30, cluster, 0.5)
            return {
                "staging": staging,
                "files_then": files_then,
                "killed_at": time.monotonic(),
                "killed_utc": datetime.now(UTC),
            }

        started = time.monotonic()
        reference = run_to_end("reference")
        disturbed = run_to_end("disturbed", during=kill_worker_a_mid_infer)
        disturbed["recovered_s"] = time.monotonic() - disturbed.pop("killed_at")
        rows, _ = query_runs(airflow.metrics_url, limit=50)
        dispose_engines()
        layout = WorkLayout(chip_work_dir(cluster.env["AIRFLOW__CONVMIXER__WORK_DIR"], CHIP))
        yield {
            "reference": reference,
            "disturbed": disturbed,
            "rows": rows,
            "run_dirs": {
                name: layout.run_dir(run["run_id"])
                for name, run in (("reference", reference), ("disturbed", disturbed))
            },
            "logs": cluster.logs(lines=60),
            "seconds": time.monotonic() - started,
        }


def _not_ok(run: dict) -> list:
    return [
        (ti["task_id"], ti["map_index"], ti["state"]) for ti in run["tis"] if ti["state"] not in ("success", "skipped")
    ]


def test_both_runs_succeed_although_a_worker_died_during_the_second(worker_loss):
    for name in ("reference", "disturbed"):
        run = worker_loss[name]
        assert run["state"] == "success", f"{name}: tasks not ok: {_not_ok(run)}\n{worker_loss['logs']}"
    staging = worker_loss["disturbed"]["staging"]
    assert str(worker_loss["run_dirs"]["disturbed"]) in str(staging)  # the kill hit the disturbed run's infer
    assert 0 < len(worker_loss["disturbed"]["files_then"]) < BATCHES // SHARDS  # ...half-way through its shard


def test_the_killed_infer_was_retried_on_the_other_worker(worker_loss):
    run = worker_loss["disturbed"]
    infer = f"chip_{CHIP}.infer"
    retried = {key: tries for key, tries in run["tries"].items() if key[0] == infer}
    killed = [tries for tries in retried.values() if tries[0]["hostname"].startswith(f"{LOST}@")]
    assert len(killed) == 1, (run["tries"], worker_loss["logs"])
    (tries,) = killed
    first, last = tries[0], tries[-1]
    assert first["try_number"] == 1 and first["state"] != "success"  # the heartbeat timeout failed the lost try
    assert last["try_number"] > 1 and last["state"] == "success" and last["hostname"].startswith(f"{SURVIVOR}@"), tries
    # every NPU task that started after the loss ran on the survivor: nobody else serves the chip
    later = [ti for ti in run["tis"] if ti["queue"] == QUEUE and rest_time(ti["start_date"]) > run["killed_utc"]]
    assert later and all(ti["hostname"].startswith(f"{SURVIVOR}@") for ti in later), later


def test_the_outputs_are_whole_and_the_killed_attempts_partial_files_are_gone(worker_loss):
    reference, disturbed = (_outputs(worker_loss["run_dirs"][name]) for name in ("reference", "disturbed"))
    assert len(disturbed) == BATCHES  # one output per batch file: none lost, none doubled
    assert sorted(disturbed) == sorted(reference)
    assert [name for name in disturbed if disturbed[name] != reference[name]] == []  # none truncated or mixed
    assert not worker_loss["disturbed"]["staging"].exists()  # the retry cleared the killed attempt's half
    leftovers = [path for path in worker_loss["run_dirs"]["disturbed"].rglob("*") if STAGING_MARK in path.name]
    assert leftovers == []


def test_one_row_per_series_with_the_undisturbed_runs_top1(worker_loss):
    by_run = {
        name: [row for row in worker_loss["rows"] if row["run_id"] == worker_loss[name]["run_id"]]
        for name in ("reference", "disturbed")
    }
    for name, rows in by_run.items():
        keys = [tuple(row[key] for key in SERIES) for row in rows]
        assert len(keys) == len(set(keys)) == 1, (name, keys)
    (reference,), (disturbed,) = by_run["reference"], by_run["disturbed"]
    assert disturbed["image_count"] == reference["image_count"] == IMAGES
    assert disturbed["top1"] is not None and disturbed["top1"] == reference["top1"]
    assert disturbed["chip"] == CHIP
    seconds, recovered = worker_loss["seconds"], worker_loss["disturbed"]["recovered_s"]
    print(f"worker-loss test: {seconds:.0f} s for both runs, {recovered:.0f} s from the kill to the run's end")
