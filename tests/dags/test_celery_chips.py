"""Chip types through real Celery: one run over two chips, each chip's NPU steps on its own worker.

A throwaway distributed Airflow as in test_celery_routing (PostgreSQL, Redis, api-server, scheduler, dag-processor)
with `[convmixer] chips = 310P3,910B3,310B1` and three Celery workers: `default`, and one NPU worker per served chip
— each on the Ascend tool doubles with its own `NPU_SMI_DOUBLE_CHIP` (what npu-smi reports there) and its own ATC
argv log. Nobody serves 310B1. Two runs: one asking for 310B1 (it must fail in check_inputs within seconds, naming the
chip), then one over 310P3 and 910B3 on the ascend backend (one row per chip, each NPU task on its chip's worker,
each ATC argv with its chip's --soc_version).

The cluster is tests/dags/cluster.py's (`throwaway_airflow`; Redis and PostgreSQL as there).
"""

from __future__ import annotations

import json

import pytest

from tests.ascend_doubles import AscendDoubles
from tests.dags.cluster import DAG_ID, rest_time, start_worker, throwaway_airflow

pytestmark = pytest.mark.slow  # ~4-6 minutes on 2 cores

SERVED = ("310P3", "910B3")
UNSERVED = "310B1"
NPU_STEPS = {"compile_model", "infer", "benchmark"}
CONF = {
    "backend": "ascend",
    "chips": list(SERVED),
    "batch_sizes": [4],
    "image_limit": 24,
    "benchmark_loop": 5,
    "throughput_tolerance_pct": 99,
}
UNSERVED_CONF = {**CONF, "chips": [UNSERVED]}
CHECK_SECONDS = 30  # "within seconds": the inspect timeout is 3 s; the rest is a task start on a busy machine


@pytest.fixture(scope="module")
def chip_runs(tmp_path_factory):
    from convmixer_tasks.metrics import dispose_engines, query_runs

    root = tmp_path_factory.mktemp("celery-chips")
    doubles = AscendDoubles(root / "ascend", monkeypatch=None).build()  # type: ignore[arg-type]
    settings = {
        "AIRFLOW__CONVMIXER__CHIPS": ",".join((*SERVED, UNSERVED)),
        "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(doubles.set_env),
        "AIRFLOW__CONVMIXER__NPU_TASK_TIMEOUT_HOURS": "0.25",
        "ASCEND_PROCESS_LOG_PATH": str(doubles.log_dir),
    }
    with throwaway_airflow(root, settings, path_first=[doubles.host_bin]) as airflow:  # npu-smi, as on an NPU host
        start_worker(airflow.cluster, "default", "default", 2)
        for chip in SERVED:
            start_worker(
                airflow.cluster,
                f"npu{chip}",
                f"npu.{chip}",
                2,
                {"NPU_SMI_DOUBLE_CHIP": chip, "ATC_DOUBLE_ARGV_LOG": str(root / f"atc-{chip}.jsonl")},
            )
        for chip in (*SERVED, UNSERVED):
            airflow.set_pool(f"npu.{chip}", 1)
        airflow.wait_for_dag()
        airflow.wait_for_workers(["default", *(f"npu{chip}" for chip in SERVED)])

        # max_active_runs=1: one after the other
        runs = {name: airflow.trigger(conf) for name, conf in (("unserved", UNSERVED_CONF), ("both", CONF))}
        results = {}
        for name, run_id in runs.items():
            state, tis = airflow.wait_for_run(run_id, 600)
            results[name] = {"run_id": run_id, "state": state, "tis": tis}
        rows, _ = query_runs(airflow.metrics_url, limit=50)
        dispose_engines()
        atc = {
            chip: [json.loads(line) for line in (root / f"atc-{chip}.jsonl").read_text().splitlines()]
            if (root / f"atc-{chip}.jsonl").exists()
            else []
            for chip in SERVED
        }
        unserved_logs = root / "airflow-home" / "logs" / f"dag_id={DAG_ID}" / f"run_id={runs['unserved']}"
        logs = {
            str(path): path.read_text(errors="replace") for path in unserved_logs.glob("task_id=check_inputs/*.log")
        }
        yield {
            "runs": results,
            "rows": rows,
            "atc": atc,
            "check_logs": logs,
            "logs": airflow.cluster.logs(lines=60),
            "home": root / "airflow-home",
        }


def _argv(call) -> list[str]:
    return call["argv"] if isinstance(call, dict) else call


def test_one_run_over_two_chips_records_one_row_per_chip(chip_runs):
    run = chip_runs["runs"]["both"]
    not_ok = [
        (ti["task_id"], ti["map_index"], ti["state"]) for ti in run["tis"] if ti["state"] not in ("success", "skipped")
    ]
    assert run["state"] == "success", f"tasks not ok: {not_ok}\n{chip_runs['logs']}"
    rows = [row for row in chip_runs["rows"] if row["run_id"] == run["run_id"]]
    assert sorted(row["device"] for row in rows) == [f"Ascend{chip}" for chip in SERVED]
    # gated (a busy machine may make the throughput verdict inconclusive: not asserted as ok)
    assert all(row["status"] in ("ok", "inconclusive") for row in rows), [row["status"] for row in rows]
    assert all(row["batch_size"] == 4 and row["top1"] is not None and row["chip"] in SERVED for row in rows)


def test_each_npu_task_ran_on_its_chips_worker_queue_and_pool(chip_runs):
    tis = chip_runs["runs"]["both"]["tis"]
    for chip in SERVED:
        npu = [
            ti
            for ti in tis
            if ti["task_id"].startswith(f"chip_{chip}.") and ti["task_id"].split(".", 1)[1] in NPU_STEPS
        ]
        assert {ti["task_id"].split(".", 1)[1] for ti in npu} == NPU_STEPS
        assert len(npu) == 4  # compile, infer x 2 shards, benchmark
        for ti in npu:
            assert (ti["queue"], ti["pool"]) == (f"npu.{chip}", f"npu.{chip}"), ti
            assert ti["hostname"].startswith(f"npu{chip}@"), f"{ti['task_id']} ran on {ti['hostname']}"
    unserved = [ti for ti in tis if ti["task_id"].startswith(f"chip_{UNSERVED}.")]
    assert {ti["state"] for ti in unserved if ti["task_id"] != f"chip_{UNSERVED}.chip_plans"} == {"skipped"}
    others = [ti for ti in tis if ti["state"] == "success" and ti["task_id"].split(".")[-1] not in NPU_STEPS]
    assert others and all(ti["hostname"].startswith("default@") for ti in others)


def test_each_atc_call_carries_its_chips_soc_version(chip_runs):
    for chip in SERVED:
        calls = [_argv(call) for call in chip_runs["atc"][chip]]
        assert calls, f"no ATC call on the {chip} worker"
        assert all(f"--soc_version=Ascend{chip}" in argv for argv in calls), calls


def test_a_chip_nobody_serves_fails_check_inputs_within_seconds_naming_it(chip_runs):
    run = chip_runs["runs"]["unserved"]
    assert run["state"] == "failed"
    (check,) = [ti for ti in run["tis"] if ti["task_id"] == "check_inputs"]
    assert check["state"] == "failed"
    assert (rest_time(check["end_date"]) - rest_time(check["start_date"])).total_seconds() < CHECK_SECONDS
    assert not [ti for ti in run["tis"] if ti["task_id"].split(".")[-1] in NPU_STEPS and ti["state"] == "success"]
    text = "\n".join(chip_runs["check_logs"].values())
    assert f"no live worker serves chip {UNSERVED} (queue 'npu.{UNSERVED}')" in text, text[-3000:]
    assert f"airflow celery worker --queues npu.{UNSERVED}" in text
    # Its failed row is the chip's, and leads with the error check_inputs' callback kept on its Celery worker (an
    # XCom: record_failure ran in another worker process and read it through the API server).
    (row,) = [row for row in chip_runs["rows"] if row["run_id"] == run["run_id"]]
    assert (row["status"], row["chip"], row["batch_size"]) == ("failed", UNSERVED, 4)
    assert row["gate_reasons"][0].startswith(f"check_inputs failed: no live worker serves chip {UNSERVED} "), row
