"""The DAG file: parses with no errors, cheaply and without heavy libraries; its settings, wiring and Param schema.

Each probe runs in a fresh interpreter with AIRFLOW_HOME in a temp dir: Airflow reads its configuration once, at
first import, and ``sys.modules`` must show what parsing the DAG file alone imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convmixer_tasks import flow

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "convmixer_validation"
HEAVY_MODULES = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "PIL")
# Parsing measured at ~0.1 s on the 2-core CI machine; a top-level `import torch` alone costs ~1.4 s.
PARSE_BUDGET_S = 0.7
NPU_TASKS = {"compile_model", "infer", "benchmark"}

PROBE = r"""
import json, os, sys, time
import airflow.sdk  # Airflow itself is not what we measure
from airflow.dag_processing.dagbag import DagBag

before = set(sys.modules)
started = time.perf_counter()
bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
parse_s = time.perf_counter() - started
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids),
       "parse_s": parse_s, "file_stats": [s.duration.total_seconds() for s in bag.dagbag_stats],
       "new_modules": sorted({m.split(".")[0] for m in set(sys.modules) - before})}
dag = bag.dags.get("convmixer_validation")
if dag is not None:
    module = next(m for name, m in sys.modules.items() if getattr(m, "convmixer_validation_dag", None) is dag)
    out["constants"] = {name: getattr(module, name) for name in (
        "NPU_QUEUE", "NPU_POOL", "NPU_POOL_SLOTS", "DEFAULT_QUEUE", "WORK_DIR", "METRICS_CONN_ID", "CANN_SET_ENV",
        "SCHEDULE", "DEFAULT_BACKEND", "DATASET_DIR", "LABEL_FILE", "CHECKPOINT", "MODEL_VARIANT",
        "DEFAULT_BATCH_SIZES", "SHARDS", "AIRFLOW_HOME")}
    out["dag"] = {"schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
                  "tags": sorted(dag.tags), "doc_md": dag.doc_md or "", "params": dag.params.dump()}
    out["tasks"] = {t.task_id: {"queue": t.queue, "pool": t.pool, "pool_slots": t.pool_slots, "retries": t.retries,
                                "backoff": t.retry_exponential_backoff,
                                "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                                "upstream": sorted(t.upstream_task_ids), "downstream": sorted(t.downstream_task_ids),
                                "callbacks": len(t.on_failure_callback or []),
                                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None}
                    for t in dag.tasks}
    from airflow.serialization.serialized_objects import DagSerialization
    served = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))  # what a REST trigger checks
    verdicts = []
    for conf in json.loads(os.environ["PROBE_CONFS"]):
        try:
            resolved = served.params.deep_merge(conf).validate()
            verdicts.append({"ok": True, "batch_size": resolved["batch_size"],
                             "batch_sizes": resolved["batch_sizes"]})
        except Exception as exc:
            verdicts.append({"ok": False, "type": type(exc).__name__, "message": str(exc)})
    out["confs"] = verdicts
print("PROBE " + json.dumps(out, default=str))
"""


def probe(tmp_path: Path, confs: list[dict] | None = None, **settings: str) -> dict:
    """Parse the dags folder in a fresh interpreter; ``settings`` become AIRFLOW__CONVMIXER__<KEY> env vars."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))}
    env.update({"AIRFLOW_HOME": str(tmp_path / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS), "PROBE_CONFS": json.dumps(confs or [])})
    env.update({f"AIRFLOW__CONVMIXER__{key.upper()}": value for key, value in settings.items()})
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


BAD_CONFS = [
    ({"batch_size": 3}, "batch_size", "3 is not one of"),
    ({"batch_sizes": []}, "batch_sizes", "should be non-empty"),
    ({"batch_sizes": [4, 4]}, "batch_sizes", "non-unique"),
    ({"batch_sizes": [3]}, "batch_sizes", "3 is not one of"),
    ({"backend": "tpu"}, "backend", "'tpu' is not one of"),
    ({"model_variant": "resnet50"}, "model_variant", "'resnet50' is not one of"),
    ({"soc_version": "310P3"}, "soc_version", "does not match"),
    ({"input_dtype": "int8"}, "input_dtype", "'int8' is not one of"),
    ({"image_limit": 0}, "image_limit", "less than the minimum"),
    ({"throughput_tolerance_pct": 100}, "throughput_tolerance_pct", "greater than or equal to the maximum"),
    ({"top1_tolerance": -1}, "top1_tolerance", "less than the minimum"),
    ({"benchmark_loop": "many"}, "benchmark_loop", "is not of type 'integer'"),
    ({"dataset_dir": ""}, "dataset_dir", "should be non-empty"),
]
GOOD_CONFS = [{}, {"batch_size": 4}, {"batch_sizes": [1, 64]}, {"soc_version": "Ascend310P3", "backend": "ascend"},
              {"image_limit": 16, "input_dtype": "uint8"}]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return probe(tmp_path_factory.mktemp("dagbag"), confs=[conf for conf, _, _ in BAD_CONFS] + GOOD_CONFS)


def test_dagbag_imports_the_dag_without_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dag_ids"] == [DAG_ID]


def test_parsing_imports_no_heavy_library_and_is_fast(parsed):
    assert not set(HEAVY_MODULES) & set(parsed["new_modules"]), parsed["new_modules"]
    assert parsed["parse_s"] < PARSE_BUDGET_S, f"parsing took {parsed['parse_s']:.2f}s"
    assert parsed["file_stats"] and max(parsed["file_stats"]) < PARSE_BUDGET_S


def test_dag_settings(parsed):
    dag = parsed["dag"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert "0 3 * * 1" in dag["schedule"]
    assert "convmixer" in dag["tags"]
    # doc_md is what the UI shows: it must explain the steps, the queues and the failure policy
    for words in ("compile_model", "npu", "record_failure", "on_failure_callback", "image_limit"):
        assert words in dag["doc_md"]


def test_default_constants_are_the_documented_defaults(parsed):
    constants = parsed["constants"]
    home = constants["AIRFLOW_HOME"]
    assert home.endswith("airflow-home")
    assert constants["NPU_QUEUE"] == "npu" and constants["NPU_POOL"] == "npu" and constants["NPU_POOL_SLOTS"] == 1
    assert constants["DEFAULT_QUEUE"] == "default"
    assert constants["WORK_DIR"] == os.path.join(home, "convmixer-work")
    assert constants["METRICS_CONN_ID"] == "convmixer_metrics"
    assert constants["CANN_SET_ENV"] == "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    assert constants["DEFAULT_BACKEND"] == "onnxruntime"
    layout = flow.WorkLayout(Path(constants["WORK_DIR"]))
    assert constants["DATASET_DIR"] == str(layout.demo_image_dir)
    assert constants["LABEL_FILE"] == str(layout.demo_label_file)
    assert constants["CHECKPOINT"] == str(flow.DEMO_CHECKPOINT)
    assert constants["MODEL_VARIANT"] == "convmixer_demo"
    params = parsed["dag"]["params"]
    assert params["backend"] == "onnxruntime" and params["checkpoint"] == constants["CHECKPOINT"]
    assert params["batch_sizes"] == constants["DEFAULT_BATCH_SIZES"] and params["batch_size"] is None


def test_npu_steps_are_routed_to_the_npu_queue_and_pool_with_retries(parsed):
    tasks = parsed["tasks"]
    for task_id, task in tasks.items():
        if task_id in NPU_TASKS:
            assert (task["queue"], task["pool"], task["pool_slots"]) == ("npu", "npu", 1), task_id
            assert task["retries"] >= 1 and task["backoff"], task_id
            assert task["timeout_s"], f"{task_id} could hold the device's pool slot forever"
        else:
            assert (task["queue"], task["pool"]) == ("default", "default_pool"), task_id
        assert task["callbacks"] >= 1, f"{task_id} has no on_failure_callback"
    assert tasks["record_metrics"]["retries"] >= 1
    assert tasks["regression_gate"]["retries"] >= 1  # DB hiccups retry; a verdict fails at once (AirflowFailException)
    assert tasks["export_onnx"]["retries"] == 0 and tasks["evaluate"]["retries"] == 0


def test_wiring_follows_the_pipeline(parsed):
    tasks = parsed["tasks"]
    assert tasks["check_inputs"]["upstream"] == []
    assert set(tasks["preprocess"]["upstream"]) == {"check_inputs"}
    assert set(tasks["compile_model"]["upstream"]) == {"check_inputs", "export_onnx"}
    assert set(tasks["infer"]["upstream"]) == {"compile_model", "preprocess"}
    assert set(tasks["benchmark"]["upstream"]) == {"compile_model"}
    assert set(tasks["evaluate"]["upstream"]) == {"check_inputs", "infer"}
    assert set(tasks["record_metrics"]["upstream"]) >= {"evaluate", "benchmark", "export_onnx", "compile_model"}
    assert tasks["regression_gate"]["upstream"] == ["record_metrics"]
    # the gate is a leaf, so a failure anywhere fails the run; record_failure never overwrites a gate verdict
    assert tasks["regression_gate"]["downstream"] == []
    failure = tasks["record_failure"]
    assert failure["trigger_rule"] == "one_failed"
    assert "regression_gate" not in failure["upstream"] and "record_metrics" not in failure["upstream"]
    assert set(failure["upstream"]) == set(tasks) - {"record_failure", "record_metrics", "regression_gate"}


@pytest.mark.parametrize("index", range(len(BAD_CONFS)), ids=[param for _, param, _ in BAD_CONFS])
def test_a_bad_conf_is_refused_with_the_schema_message(parsed, index):
    conf, param, message = BAD_CONFS[index]
    verdict = parsed["confs"][index]
    assert not verdict["ok"], f"{conf} was accepted"
    assert verdict["type"] == "ParamValidationError"
    assert f"Invalid input for param {param}" in verdict["message"] and message in verdict["message"]


def test_good_confs_are_accepted_and_batch_size_overrides(parsed):
    verdicts = parsed["confs"][len(BAD_CONFS):]
    assert all(v["ok"] for v in verdicts), verdicts
    single = verdicts[GOOD_CONFS.index({"batch_size": 4})]
    assert flow.batch_sizes_from_params(single) == [4]


def test_settings_come_from_airflow_configuration(tmp_path):
    parsed = probe(tmp_path, npu_queue="ascend-q", npu_pool="ascend-pool", work_dir=str(tmp_path / "w"),
                   metrics_conn_id="metrics_pg", schedule="0 5 * * *", default_backend="ascend",
                   batch_sizes="8,16", checkpoint="/models/convmixer_1536_20.pth.tar",
                   model_variant="convmixer_1536_20")
    assert parsed["errors"] == {}
    constants = parsed["constants"]
    assert (constants["NPU_QUEUE"], constants["NPU_POOL"]) == ("ascend-q", "ascend-pool")
    assert constants["WORK_DIR"] == str(tmp_path / "w")
    assert constants["DATASET_DIR"] == str(tmp_path / "w" / "demo" / "images")
    assert constants["METRICS_CONN_ID"] == "metrics_pg"
    assert "0 5 * * *" in parsed["dag"]["schedule"]
    params = parsed["dag"]["params"]
    assert params["backend"] == "ascend" and params["batch_sizes"] == [8, 16]
    assert params["model_variant"] == "convmixer_1536_20"
    for task_id in NPU_TASKS:
        assert (parsed["tasks"][task_id]["queue"], parsed["tasks"][task_id]["pool"]) == ("ascend-q", "ascend-pool")


def test_an_empty_schedule_setting_means_manual_runs_only(tmp_path):
    parsed = probe(tmp_path, schedule="")
    assert parsed["errors"] == {} and parsed["constants"]["SCHEDULE"] is None
    assert parsed["dag"]["schedule"] == "None"


def test_a_bad_setting_is_an_import_error_naming_it(tmp_path):
    parsed = probe(tmp_path, default_backend="tpu")
    assert parsed["dag_ids"] == []
    (message,) = parsed["errors"].values()
    assert "[convmixer] default_backend" in message and "'tpu'" in message


def test_flow_choices_match_the_library():
    """The DAG offers these choices without importing torch/numpy at parse time; they must not drift."""
    from convmixer_tasks import demo, model, preprocess
    from convmixer_tasks.backends import base

    assert flow.VARIANT_NAMES == tuple(model.VARIANTS)
    assert flow.BACKEND_NAMES == tuple(base.BACKENDS)
    assert flow.INPUT_DTYPES == tuple(base.INPUT_DTYPES) == tuple(preprocess.DTYPES)
    assert flow.DEMO_VARIANT == demo.DEMO_VARIANT and flow.DEMO_MARKER == demo.MARKER_NAME
    assert flow.DEMO_CHECKPOINT.parent == demo.ASSETS_DIR
    assert flow.DEMO_CHECKPOINT.is_file(), "the committed demo checkpoint is missing"
