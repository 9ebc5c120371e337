"""The DAG end to end with ``dag.test`` on the demo set and the committed demo model (ONNX Runtime backend).

One fresh process (tests/dags/dag_runner.py) runs five DAG runs in order against a temporary Airflow home, work
folder and SQLite metrics DB, and reports states, XComs, metrics rows and cache file stats:

1. ``first``     – everything built: the demo set is generated, prep/ONNX/artifacts written, rows recorded.
2. ``cached``    – same conf: prep, ONNX and artifacts are reused untouched, and the run is faster.
3. ``retried``   – the record step crashes after writing (attempt 1) and is retried: still one row per batch size.
4. ``regressed`` – a seeded history of 1000× faster ok runs, single-run verdicts (``throughput_runs`` 1): the gate
                   stores 'regressed', then fails the run.
5. ``broken``    – inference always fails: no accuracy is recorded, 'failed' rows are, and the gate never runs.
6. ``ascend``    – the Ascend backend against the tool doubles (tests/ascend_doubles.py: atc, npu-smi, ais_bench
                   behind a fake CANN set_env.sh): ATC compile, ais_bench inference, same top-1.
7. ``ascend_keep`` – the same with precision_mode must_keep_origin_dtype (fidelity ≈ 1).
8. ``ascend_both`` – precision_modes [force_fp16, must_keep_origin_dtype] in one run: two rows, each paired with
                     the earlier run of its own mode.
9. ``oversubset`` – a fidelity subset larger than the set: refused.
10. ``misspelt``  – a conf key misspelt (``batch_szie``): check_inputs refuses it; one failed row says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convmixer_tasks.fileio import read_json, sha256_file
from convmixer_tasks.models.variants import DEMO_CHECKPOINT, DEMO_EXPECTED
from convmixer_tasks.run.workdir import WorkLayout
from tests.ascend_doubles import AscendDoubles
from tests.test_cli_output import COMPACT_HEADER

pytestmark = pytest.mark.slow  # ~60 s on 2 cores (five DAG runs, one ONNX export)

REPO = Path(__file__).resolve().parents[2]
BATCH_SIZES = [4, 16]
# Benchmark numbers on a shared CPU swing by 2-3x between runs; runs that must pass get a wide tolerance.
STEADY = {
    "batch_sizes": BATCH_SIZES,
    "benchmark_loop": 10,
    "throughput_tolerance_pct": 99,
    "throughput_max_cv_pct": 1000,
}
CACHED_STEPS = ("preprocess", "export_onnx", "compile_model")


def expected_demo_top1() -> float:
    """The committed demo model's top-1 on the demo set, in percent (evaluate's unit)."""
    committed = read_json(DEMO_EXPECTED)
    return float(committed["expected_top1"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("dagrun")
    spec = {
        "runs": [
            {"name": "first", "conf": STEADY},
            {"name": "cached", "conf": STEADY},
            {"name": "retried", "conf": STEADY, "fail_once": "record_rows"},
            {
                "name": "regressed",
                "conf": {
                    "batch_sizes": [4],
                    "benchmark_loop": 10,
                    "throughput_history": 5,
                    "throughput_max_cv_pct": 1000,
                    "throughput_runs": 1,
                },
                # A history 10^6 times faster: at a 99 % tolerance no busy host's fair share (load / cores) can
                # explain the drop, so the verdict is regressed whatever the box's load (never inconclusive).
                "seed_from": {"run": "first", "batch_size": 4, "count": 5, "throughput_factor": 1_000_000},
            },
            {"name": "broken", "conf": {"batch_sizes": [4]}, "fail_always": "infer_shard"},
            {"name": "ascend", "conf": {"backend": "ascend", "batch_sizes": [4], "benchmark_loop": 5}},
            {
                "name": "ascend_keep",
                "conf": {
                    "backend": "ascend",
                    "batch_sizes": [4],
                    "benchmark_loop": 5,
                    "precision_mode": "must_keep_origin_dtype",
                },
            },
            # dag.test runs share one process, where a conf value stays in the DAG's Params for the next run (Airflow
            # merges the conf into the same Param objects): a run resets what earlier runs set and it does not want.
            {
                "name": "ascend_both",
                "conf": {
                    "backend": "ascend",
                    "batch_sizes": [4],
                    "benchmark_loop": 5,
                    "precision_mode": None,
                    "precision_modes": ["force_fp16", "must_keep_origin_dtype"],
                },
            },
            {
                "name": "oversubset",
                "conf": {
                    "backend": "onnxruntime",
                    "precision_modes": None,
                    "batch_sizes": [4],
                    "evidence": {"fidelity_subset": 300},
                },
            },
            # Last: a misspelt key is refused by check_inputs (and stays in the shared Params of later runs).
            {"name": "misspelt", "conf": {"batch_szie": 4}},
        ]
    }
    npu_host = AscendDoubles(root=root / "npu-host", monkeypatch=pytest.MonkeyPatch()).build()
    (root / "spec.json").write_text(json.dumps(spec))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(root / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CONVMIXER__WORK_DIR": str(root / "work"),
            "CONVMIXER_METRICS_DB_URL": f"sqlite:///{root / 'metrics.db'}",
            "AIRFLOW__CONVMIXER__RETRIES": "1",
            "AIRFLOW__CONVMIXER__RETRY_DELAY_SECONDS": "0",
            "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(npu_host.set_env),
            "PATH": f"{npu_host.host_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # npu-smi (a driver tool)
            "ASCEND_PROCESS_LOG_PATH": str(npu_host.log_dir),
            # The ais_bench double reports fixed per-loop times: the Ascend runs' verdicts never depend on the box's
            # load.
            "AIS_BENCH_DOUBLE_FIXED_MS": "4.0",
        }
    )
    log = root / "runner.log"
    with open(log, "w") as handle:
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "tests" / "dags" / "dag_runner.py"),
                str(root / "spec.json"),
                str(root / "out.json"),
            ],
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert proc.returncode == 0, log.read_text()[-6000:]
    report = json.loads((root / "out.json").read_text())
    return {run["name"]: {**run, "work": root / "work"} for run in report["runs"]}


def states(run: dict, task_id: str) -> list[str]:
    return [t["state"] for t in run["tasks"] if t["task_id"] == task_id]


def xcom(run: dict, task_id: str) -> list:
    return [value for _, value in sorted(run["xcom"].get(task_id, {}).items(), key=lambda item: int(item[0]))]


def test_first_run_reproduces_the_demo_models_top1_and_records_a_row_per_batch_size(runs):
    run = runs["first"]
    assert run["state"] == "success"
    assert states(run, "record_failure") == ["skipped"]
    rows = {row["batch_size"]: row for row in run["rows"]}
    assert sorted(rows) == BATCH_SIZES
    expected = expected_demo_top1()
    exported = xcom(run, "export_onnx")[0]
    compiled = {entry["batch_size"]: entry for entry in xcom(run, "compile_model")}
    for batch_size, row in rows.items():
        assert row["top1"] == pytest.approx(expected, abs=1e-9), f"batch {batch_size}"
        assert row["status"] == "ok" and row["image_count"] == 250
        assert row["dag_id"] == "convmixer_validation" and row["run_id"] == run["run_id"]
        assert row["backend"] == "onnxruntime" and row["model_variant"] == "convmixer_demo"
        assert row["checkpoint_sha256"] == sha256_file(DEMO_CHECKPOINT)
        assert row["onnx_sha256"] == exported["onnx_sha256"] == sha256_file(exported["onnx_path"])
        assert row["artifact_sha256"] == compiled[batch_size]["artifact"]["sha256"]
        assert row["device"] and row["toolkit_version"].startswith("onnxruntime")
        assert row["throughput"] > 0 and 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert row["throughput_robust"] > 0 and row["latency_robust_cv"] >= 0
        # the end-to-end rate: images over the stages' wall seconds, each summed over its shards
        stages = row["stage_seconds"]
        assert set(stages) == {"preprocess", "infer", "evaluate"} and all(value >= 0 for value in stages.values())
        assert row["e2e_throughput"] == pytest.approx(row["image_count"] / sum(stages.values()), rel=1e-6)
        assert row["parity_max_abs_diff"] <= 1e-4
        assert row["logical_date"] and row["started_at"] <= row["finished_at"]
    # XCom carries small JSON (paths, hashes, numbers), never arrays of pixels or logits
    assert max(len(json.dumps(value)) for task in run["xcom"].values() for value in task.values()) < 20_000
    # ...as versioned step records, one per batch size (and shard), readable in the UI
    records = {
        "check_inputs": "RunPlan",
        "prep_plans": "RunPlan",
        "preprocess": "PrepShard",
        "export_onnx": "ExportedModel",
        "compile_model": "CompiledModel",
        "infer": "ShardOutputs",
        "benchmark": "BenchSummary",
        "evaluate": "Scores",
        "record_metrics": "RecordedRow",
        "regression_gate": "Verdict",
    }
    for task_id, record in records.items():
        values = xcom(run, task_id)
        entries = [entry for value in values for entry in (value if isinstance(value, list) else [value])]
        assert entries and {(entry["record"], entry["version"]) for entry in entries} == {(record, 1)}, task_id


def test_first_run_builds_every_cache_and_maps_over_shards(runs):
    run = runs["first"]
    assert not any(entry["cached"] for step in CACHED_STEPS for entry in xcom(run, step))
    prepared = xcom(run, "preprocess")
    assert len(prepared) == len(BATCH_SIZES) * 2  # batch sizes x shards
    assert len(states(run, "infer")) == len(BATCH_SIZES) * 2
    # one evaluate per batch size × precision mode, named for them in the UI
    evaluated = sorted(t["rendered_map_index"] for t in run["tasks"] if t["task_id"] == "evaluate")
    assert evaluated == ["convmixer_demo bs16 fp32", "convmixer_demo bs4 fp32"]
    assert sorted(entry["batch_size"] for entry in xcom(run, "evaluate")) == BATCH_SIZES
    for batch_size in BATCH_SIZES:
        files = [name for entry in prepared if entry["batch_size"] == batch_size for name in entry["files"]]
        assert len(files) == len(set(files)) == -(-250 // batch_size)  # shards split the files, none twice
    demo = WorkLayout(run["work"]).demo_root
    assert (demo / "val_label.txt").is_file()


def test_second_run_reuses_prep_onnx_and_artifacts_untouched(runs):
    first, cached = runs["first"], runs["cached"]
    assert cached["state"] == "success"
    for step in CACHED_STEPS:
        assert all(entry["cached"] for entry in xcom(cached, step)), step
    assert xcom(cached, "export_onnx")[0]["onnx_path"] == xcom(first, "export_onnx")[0]["onnx_path"]
    # same inode, mtime and size for every cached file: nothing was rebuilt or rewritten
    assert cached["cache_files"] == first["cache_files"]
    assert any(path.startswith("prep/") for path in first["cache_files"])
    assert any(path.startswith("onnx/") for path in first["cache_files"])
    assert any(path.startswith("artifacts/") for path in first["cache_files"])
    # No wall-time comparison: on a busy host the second run may well be slower; the untouched files above are the
    # proof that nothing was rebuilt.
    assert {row["top1"] for row in cached["rows"]} == {row["top1"] for row in first["rows"]}


def test_a_retried_record_step_leaves_one_row_per_batch_size(runs):
    run = runs["retried"]
    assert run["state"] == "success"
    (record,) = [t for t in run["tasks"] if t["task_id"] == "record_metrics"]
    assert record["try_number"] == 2  # attempt 1 wrote the rows, then crashed
    assert sorted(row["batch_size"] for row in run["rows"]) == BATCH_SIZES
    assert len({row["id"] for row in run["rows"]}) == len(BATCH_SIZES)
    assert run["all_rows"] == runs["cached"]["all_rows"] + len(BATCH_SIZES)


def test_the_gate_stores_a_regressed_row_then_fails_the_run(runs):
    run = runs["regressed"]
    assert run["state"] == "failed"
    assert states(run, "regression_gate") == ["failed"]
    (gate,) = [t for t in run["tasks"] if t["task_id"] == "regression_gate"]
    assert gate["try_number"] == 1  # a verdict is not retried (the task retries only other failures)
    assert states(run, "record_metrics") == ["success"]
    assert states(run, "record_failure") == ["skipped"]  # the regressed row is not overwritten with 'failed'
    (row,) = run["rows"]
    assert row["status"] == "regressed"
    assert row["top1"] == pytest.approx(expected_demo_top1(), abs=1e-9)  # accuracy is kept on record
    assert any("throughput regressed" in reason for reason in row["gate_reasons"])
    assert row["baseline_throughput"] > 100 * row["throughput"]


def test_a_run_broken_before_eval_records_no_accuracy_and_is_not_gated(runs):
    run = runs["broken"]
    assert run["state"] == "failed"
    assert set(states(run, "infer")) == {"failed"}
    assert states(run, "evaluate") == ["upstream_failed"]
    assert states(run, "regression_gate") == ["upstream_failed"]
    assert states(run, "record_failure") == ["success"]
    (row,) = run["rows"]
    assert row["status"] == "failed" and row["batch_size"] == 4
    assert row["top1"] is None and row["top5"] is None and row["throughput"] is None
    # The row leads with the task that failed, its label and the error (kept by the task's failure callback).
    assert re.fullmatch(
        r"infer \[convmixer_demo bs4 fp32 shard \d\] failed: RuntimeError: injected failure in infer_shard"
        r"( \(and \d+ more failed tasks?\))?",
        row["gate_reasons"][0],
    ), row["gate_reasons"]


def test_onnxruntime_rows_carry_fidelity_predictions_and_flips_against_the_previous_run(runs):
    first, cached = runs["first"], runs["cached"]
    for row in first["rows"] + cached["rows"]:
        assert row["precision_mode"] == "fp32"  # ONNX Runtime says so
        assert row["trigger"] == "manual"  # dag.test's run type; asset_triggered for a new checkpoint
        assert row["fidelity_min_cosine"] == pytest.approx(1.0, abs=1e-6) and row["fidelity_top1_agreement"] == 1.0
        fidelity = row["evidence"]["fidelity"]
        assert fidelity["images"] == 250 and fidelity["breaches"] == [] and fidelity["max_kl"] < 1e-9
        assert 0 < row["evidence"]["predictions_bytes"] < 250 * 20  # compressed, stored beside the row
        assert len(row["evidence"]["worst_classes"]) == 10
    assert all(first["rows"][0]["flips_p_value"] is None for _ in (0,))  # the first run has no previous ok run
    assert any("no previous ok run" in reason for reason in first["rows"][0]["gate_reasons"])
    for row in cached["rows"]:  # the same artifact twice: nothing flips, explicitly
        previous = row["evidence"]["flips_previous"]
        assert previous["run_id"] == first["run_id"] and previous["table"][0][1] == previous["table"][1][0] == 0
        assert row["flips_p_value"] == 1.0
        assert any("top1 flips ok vs previous ok run" in reason for reason in row["gate_reasons"])
    # the ONNX reference logits (one CPU pass of the subset) are cached across runs of the same ONNX
    assert [row["evidence"]["fidelity"]["reference_cached"] for row in cached["rows"]] == [True, True]


def test_force_fp16_on_the_doubles_shows_fidelity_below_one_flips_and_p_value(runs):
    row = runs["ascend"]["rows"][0]
    assert row["precision_mode"] == "force_fp16"  # none given: ATC's default, spelt out
    fidelity = row["evidence"]["fidelity"]
    assert 0.99 < row["fidelity_min_cosine"] < 1.0 and fidelity["max_abs_diff"] > 0
    reference = row["evidence"]["flips_reference"]  # paired with the ONNX fp32 ONNX Runtime run
    assert reference["run_id"] == runs["retried"]["run_id"]
    assert reference["right_to_wrong"] >= 0 and reference["wrong_to_right"] >= 0  # counted, zero or not
    assert 0 < row["reference_p_value"] <= 1.0
    assert any("vs reference run" in reason and "McNemar exact p=" in reason for reason in row["gate_reasons"])
    print(
        "force_fp16:",
        fidelity["min_cosine"],
        fidelity["max_kl"],
        fidelity["top1_agreement"],
        reference["table"],
        row["reference_p_value"],
        row["top1"],
    )  # the figures, for the log (pytest -rP)
    keep = runs["ascend_keep"]["rows"][0]
    assert keep["precision_mode"] == "must_keep_origin_dtype" and keep["status"] == "ok"
    assert keep["fidelity_min_cosine"] == pytest.approx(1.0, abs=1e-6) and keep["fidelity_top1_agreement"] == 1.0
    assert keep["top1"] == pytest.approx(expected_demo_top1(), abs=1e-9)
    assert keep["evidence"]["flips_reference"]["right_to_wrong"] == 0 and keep["reference_p_value"] == 1.0
    assert "flips_previous" not in keep["evidence"]  # the force_fp16 run is another precision: not its previous


def test_a_run_over_two_precision_modes_records_a_row_each_compared_like_with_like(runs):
    run = runs["ascend_both"]
    assert run["state"] == "success"
    rows = {row["precision_mode"]: row for row in run["rows"]}
    assert sorted(rows) == ["force_fp16", "must_keep_origin_dtype"] and len(run["rows"]) == 2
    fp16, keep = rows["force_fp16"], rows["must_keep_origin_dtype"]
    assert fp16["status"] == keep["status"] == "ok"
    assert fp16["fidelity_min_cosine"] < 1.0 - 1e-6 < keep["fidelity_min_cosine"]  # two modes, two fidelities
    assert fp16["artifact_sha256"] != keep["artifact_sha256"]
    # each row pairs with the previous ok run of its own mode: the same numerics, so nothing flips
    assert fp16["evidence"]["flips_previous"]["run_id"] == runs["ascend"]["run_id"]
    assert keep["evidence"]["flips_previous"]["run_id"] == runs["ascend_keep"]["run_id"]
    for row in (fp16, keep):
        assert row["evidence"]["flips_previous"]["table"][0][1] == row["evidence"]["flips_previous"]["table"][1][0] == 0
        assert row["flips_p_value"] == 1.0
        assert row["fingerprint"]["op_select_implmode"] == "high_performance"  # the GELU implmode, on the row
        assert row["fingerprint"]["optypelist_for_implmode"] == "Gelu"
    # the two modes share one prep (written once per shard), and compile/infer/evaluate ran once per mode
    assert len(states(run, "preprocess")) == 2 and len(states(run, "compile_model")) == 2
    assert len(states(run, "infer")) == 4 and len(states(run, "evaluate")) == 2
    labels = sorted(t["rendered_map_index"] for t in run["tasks"] if t["task_id"] == "evaluate")
    assert labels == ["convmixer_demo bs4 force_fp16", "convmixer_demo bs4 must_keep_origin_dtype"]
    model_dir = WorkLayout(run["work"]).run_dir(run["run_id"]) / "convmixer_demo"
    assert sorted(folder.name for folder in model_dir.iterdir()) == ["bs4-force_fp16", "bs4-must_keep_origin_dtype"]
    print("force_fp16 vs must_keep_origin_dtype min cosine:", fp16["fidelity_min_cosine"], keep["fidelity_min_cosine"])


def test_a_fidelity_subset_larger_than_the_set_fails_with_one_clear_error_and_no_ok_row(runs):
    run = runs["oversubset"]
    assert run["state"] == "failed" and states(run, "check_inputs") == ["failed"]
    (row,) = run["rows"]
    assert row["status"] == "failed"
    assert row["gate_reasons"][0].startswith("check_inputs failed: fidelity subset of 300 images is larger"), row[
        "gate_reasons"
    ]


def test_a_misspelt_conf_key_fails_one_row_naming_check_inputs_and_the_key_with_its_guess_stated(runs):
    run = runs["misspelt"]
    assert run["state"] == "failed" and states(run, "check_inputs") == ["failed"]
    assert states(run, "record_failure") == ["success"]
    (row,) = run["rows"]  # the conf asked for no batch size: one row, not one per default batch size
    assert row["status"] == "failed"
    cause, *notes = row["gate_reasons"]
    assert cause.startswith(
        "check_inputs failed: unknown param(s) batch_szie in the run's conf (did you mean batch_szie → batch_size?)"
    ), cause
    assert notes == [
        f"recorded under batch size {row['batch_size']}: the refused conf named no batch size (the DAG's first default)"
    ]


def test_the_ascend_backend_compiles_with_atc_and_infers_with_ais_bench(runs):
    run = runs["ascend"]
    assert run["state"] == "success"
    (row,) = run["rows"]
    assert row["backend"] == "ascend" and row["status"] == "ok"
    assert row["top1"] == pytest.approx(expected_demo_top1(), abs=2.0)  # force_fp16: a few images may flip
    assert "310P3" in row["device"] and row["toolkit_version"]
    (compiled,) = xcom(run, "compile_model")
    assert compiled["artifact"]["path"].endswith(".om")
    assert compiled["artifact"]["options"]["soc_version"] == "Ascend310P3"  # "auto", resolved through npu-smi
    # the ONNX is shared with the ONNX Runtime runs: same checkpoint, same cache entry
    assert xcom(run, "export_onnx")[0]["cached"] and row["onnx_sha256"] == runs["first"]["rows"][0]["onnx_sha256"]
    # energy: the npu-smi double's steady 15.8 W, sampled through the benchmark and integrated over its window
    energy = row["energy"]
    assert energy["source"] == "npu-smi info -t power -i 0" and energy["samples"] >= 2 and energy["window_s"] > 0
    assert energy["mean_w"] == pytest.approx(15.8)
    assert row["energy_j_per_image"] == pytest.approx(15.8 / row["throughput"])
    assert row["throughput_per_watt"] == pytest.approx(row["throughput"] / 15.8)
    environment = row["fingerprint"]
    assert environment["npu_driver_version"] == "23.0.6" and environment["ais_bench"].startswith("unknown version ")
    assert environment["device_busy"] is None and environment["cores_used"] == 1


def test_the_demo_script_runs_the_dag_in_embedded_mode_and_prints_the_rows(tmp_path):
    """scripts/run_demo_dag.sh (README command one): SQLite + LocalExecutor, demo set, demo model, ONNX Runtime."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv, as if activated
    # 3 loops on a shared box are often too dispersed to judge (then "inconclusive"); this test is about the script
    conf = json.dumps({"batch_size": 4, "image_limit": 16, "benchmark_loop": 3, "throughput_max_cv_pct": 1000})
    proc = subprocess.run(
        [str(REPO / "scripts" / "run_demo_dag.sh"), conf],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Each task once, in the order they ended (issue 22: raw, interleaved log lines before), then the outcome.
    ended = [ln.split()[0] for ln in proc.stdout.splitlines() if ln.startswith("  ") and ln.split()[1:2] == ["done"]]
    assert ended[0] == "check_inputs" and ended[-1] == "finish_run" and len(ended) == len(set(ended))
    assert re.search(r"DAG run manual__\S+: succeeded", proc.stdout) and "[DAG TEST]" not in proc.stdout
    # The script ends with the compact metrics table (human; scripts that need figures ask for --output json).
    lines = proc.stdout.splitlines()
    assert COMPACT_HEADER in [ln.split() for ln in lines]
    (row,) = [ln.split() for ln in lines if ln.startswith("manual__")]
    assert row[1:4] == ["4", "onnxruntime", "fp32"] and row[10] == "ok" and float(row[6].replace(",", "")) > 0
    assert float(row[7].replace(",", "")) > 0 and float(row[8].replace(",", "")) > 0  # robust and end-to-end figures
    assert " ".join(row[11:]).startswith("ok; throughput not judged yet (0 of 5 runs of history)")
    assert "airflow standalone" in proc.stdout
    home = tmp_path / "airflow-home"
    assert (home / "convmixer_metrics.db").is_file()  # beside AIRFLOW_HOME's files, not in Airflow's own DB
    assert (home / "convmixer-work" / "demo" / "demo_dataset.json").is_file()


def test_the_demo_script_refuses_an_unknown_conf_key_and_shows_the_rows_the_dag_wrote(tmp_path):
    """A misspelt conf key fails check_inputs (not silently ignored), and the script reads the metrics DB the DAG
    wrote to: $CONVMIXER_METRICS_DB_URL wins over [convmixer] metrics_db_url, in the script as in the DAG."""
    from convmixer_tasks.metrics import record_run, upgrade

    written, setting = tmp_path / "env-metrics.db", tmp_path / "setting-metrics.db"
    upgrade(f"sqlite:///{written}")
    record_run(
        f"sqlite:///{written}",
        {
            "run_id": "seeded-before",
            "model_variant": "convmixer_demo",
            "backend": "onnxruntime",
            "batch_size": 4,
            "status": "failed",
        },
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
            "CONVMIXER_METRICS_DB_URL": f"sqlite:///{written}",
            "AIRFLOW__CONVMIXER__METRICS_DB_URL": f"sqlite:///{setting}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    proc = subprocess.run(
        [str(REPO / "scripts" / "run_demo_dag.sh"), json.dumps({"batch_szie": 4})],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0, proc.stdout[-3000:]
    log = (tmp_path / "airflow-home" / "logs" / "run_demo_dag.log").read_text()
    assert "unknown param(s) batch_szie" in log
    table = [line.split() for line in proc.stdout.splitlines()]
    # rows from the DB the DAG wrote (the verdict column says "failed")
    (seeded,) = [cells for cells in table if cells[:1] == ["seeded-before"]]
    assert seeded[1:4] == ["4", "onnxruntime", "fp32"] and "failed" in seeded
    # ...which now also holds this run's one 'failed' row (the conf named no batch size), its why the refusal
    (failed,) = [line for line in proc.stdout.splitlines() if line.startswith("manual__")]
    assert re.search(r" failed +check_inputs failed: unknown param\(s\) batch_szie in the run's conf \(did", failed), (
        failed
    )
    assert not setting.exists()
    assert not (tmp_path / "airflow-home" / "convmixer-work" / "demo").exists()  # refused before any work
