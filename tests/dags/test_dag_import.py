"""The DAG file: parses with no errors, cheaply and without heavy libraries; its settings, wiring and Param schema.

Each probe runs in a fresh interpreter with AIRFLOW_HOME in a temp dir: Airflow reads its configuration once, at
first import, and ``sys.modules`` must show what parsing the DAG file alone imports. What the DAG does with its
settings is read off the parsed DAG (tasks' queue/pool, Param defaults, mapped shard lists), never off the DAG
module's globals; what a task reads when it runs comes from ``convmixer_tasks.run.settings`` over the same Airflow conf.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from convmixer_tasks.backends.catalog import BACKEND_NAMES
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.dtypes import INPUT_DTYPES
from convmixer_tasks.models.variants import DEMO_CHECKPOINT, DEMO_VARIANT, VARIANT_NAMES
from convmixer_tasks.run.params import RunParams
from convmixer_tasks.run.settings import env_reader, load_scheduling_settings
from convmixer_tasks.run.workdir import WorkLayout

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
DAG_ID = "convmixer_validation"
DAG_IDS = sorted([DAG_ID, "convmixer_digest"])  # the digest DAG lives in the same file
HEAVY_MODULES = ("torch", "numpy", "onnx", "onnxruntime", "onnxscript", "PIL", "scipy", "ruptures")
# The library modules the DAG file must leave to its tasks: the steps and the verdict, and everything that loads the
# metrics table's ORM schema (Airflow has SQLAlchemy loaded already; our schema module is what parsing must not pay).
TASK_TIME_MODULES = (
    "convmixer_tasks.run.steps",
    "convmixer_tasks.run.benchmark_step",
    "convmixer_tasks.run.rows",
    "convmixer_tasks.verdict.gate",
    "convmixer_tasks.verdict.throughput",
    "convmixer_tasks.metrics",
    "convmixer_tasks.metrics.schema",
    "convmixer_tasks.run.records",
    "convmixer_tasks.evidence.fidelity",
    "convmixer_tasks.measure.quiet",
    "convmixer_tasks.run.evidence_steps",
    "convmixer_tasks.run.local_run",
    # the backend interface and the prep folder's contract behind it (the Params read the backend
    # and dtype vocabularies from their leaf modules), and the content cache
    "convmixer_tasks.backends.base",
    "convmixer_tasks.stages.prepfolder",
    "convmixer_tasks.stages.dataset",
    "convmixer_tasks.cache",
    # the model cards: the Params' model names are read off the card modules' source (models.names), and the
    # settings' default model is the demo's (models.paths); building the cards' dataclasses costs ~15 ms a parse
    "convmixer_tasks.models.card",
    "convmixer_tasks.models.registry",
    "convmixer_tasks.models.variants",
    "convmixer_tasks.models.cards.convmixer",
    "convmixer_tasks.models.cards.common",
)
# The first parse in a process also imports convmixer_tasks (~0.25 s of CPU on the 2-core CI machine; a top-level
# `import torch` alone costs ~1.4 s). A re-parse with imports warm (what issue 9 holds to <= 50 ms) is the
# DAG file's own cost: ~37 ms of CPU on the same machine, against ~5 ms for a one-task DAG.
FIRST_PARSE_BUDGET_S = 0.7
PARSE_BUDGET_S = 0.050
WARM_PARSES = 7
NPU_TASKS = {"compile_model", "infer", "benchmark"}

PROBE = r"""
import dataclasses, json, os, sys, time
import airflow.sdk  # Airflow itself is not what we measure
from airflow.dag_processing.dagbag import DagBag

folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
before = set(sys.modules)
started, started_cpu = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=folder)
parse_s, parse_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids),
       "parse_s": parse_s, "parse_cpu_s": parse_cpu_s,
       "file_stats": [s.duration.total_seconds() for s in bag.dagbag_stats],
       "new_modules": sorted({m.split(".")[0] for m in set(sys.modules) - before}),
       "new_package_modules": sorted(m for m in set(sys.modules) - before if m.startswith("convmixer_tasks"))}
dag = bag.dags.get("convmixer_validation")
if dag is not None and os.environ.get("PROBE_WARM"):
    # Re-parse with every import warm: DagBag executes the file again (a fresh module each time), so this is the
    # file's own cost. The second parse still warms Airflow's lazy imports, so it is not counted; the minimum of
    # the rest is what parsing costs without the noise of a shared machine; CPU time is reported beside it.
    DagBag(dag_folder=folder)
    warm = []
    for _ in range(int(os.environ["PROBE_WARM"])):
        wall, cpu = time.perf_counter(), time.process_time()
        again = DagBag(dag_folder=folder)
        warm.append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                     "dag_ids": sorted(again.dag_ids)})
    out["warm"] = warm
if dag is not None:
    from airflow.configuration import conf
    from convmixer_tasks.run.settings import airflow_conf_reader, load_worker_settings
    # what a task loads when it runs (here with the probe's Airflow conf, as a worker would)
    out["worker"] = dataclasses.asdict(load_worker_settings(airflow_conf_reader(conf)))
    out["dag"] = {"schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
                  "tags": sorted(dag.tags), "doc_md": dag.doc_md or "", "params": dag.params.dump(),
                  "schemas": {name: dag.params.get_param(name).schema for name in dag.params},
                  # the tasks' copies of the Params share the DAG's read-only schemas (no per-task deep copy)
                  "schemas_shared": all(task.params.get_param(name).schema is dag.params.get_param(name).schema
                                        for task in dag.tasks for name in task.params if name in dag.params)}
    mapped = lambda t: t.op_kwargs_expand_input.value  # what .expand() maps over: XComArgs and literal lists
    out["tasks"] = {t.task_id: {"queue": t.queue, "pool": t.pool, "pool_slots": t.pool_slots, "retries": t.retries,
                                "backoff": t.retry_exponential_backoff,
                                "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                                "upstream": sorted(t.upstream_task_ids), "downstream": sorted(t.downstream_task_ids),
                                "callbacks": len(t.on_failure_callback or []),
                                "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                                "response_timeout_s": t.response_timeout.total_seconds()
                                                      if getattr(t, "response_timeout", None) else None,
                                "hitl_options": getattr(t, "options", None),
                                "mapped_over": sorted(mapped(t)) if t.is_mapped else None,
                                "mapped_lists": {k: v for k, v in mapped(t).items() if isinstance(v, list)}
                                                if t.is_mapped else None}
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


def probe(tmp_path: Path, confs: list[dict] | None = None, warm: int = 0, **settings: str) -> dict:
    """Parse the dags folder in a fresh interpreter; ``settings`` become AIRFLOW__CONVMIXER__<KEY> env vars."""
    home = tmp_path / "airflow-home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "PROBE_CONFS": json.dumps(confs or []),
            "PROBE_WARM": str(warm or ""),
        }
    )
    env.update({f"AIRFLOW__CONVMIXER__{key.upper()}": value for key, value in settings.items()})
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))
    return {**json.loads(line[len("PROBE ") :]), "home": str(home)}


BAD_CONFS: list[tuple[dict[str, Any], str, str]] = [
    ({"batch_size": 3}, "batch_size", "3 is not one of"),
    ({"batch_sizes": []}, "batch_sizes", "should be non-empty"),
    ({"batch_sizes": [4, 4]}, "batch_sizes", "non-unique"),
    ({"batch_sizes": [3]}, "batch_sizes", "3 is not one of"),
    ({"backend": "tpu"}, "backend", "'tpu' is not one of"),
    ({"model_variant": "resnet5"}, "model_variant", "'resnet5' is not one of"),
    ({"soc_version": "310P3"}, "soc_version", "does not match"),
    ({"input_dtype": "int8"}, "input_dtype", "'int8' is not one of"),
    ({"image_limit": 0}, "image_limit", "less than the minimum"),
    ({"throughput_tolerance_pct": 100}, "throughput_tolerance_pct", "greater than or equal to the maximum"),
    ({"top1_tolerance": -1}, "top1_tolerance", "less than the minimum"),
    ({"benchmark_loop": "many"}, "benchmark_loop", "is not of type 'integer'"),
    ({"dataset_dir": ""}, "dataset_dir", "should be non-empty"),
    ({"precision_modes": []}, "precision_modes", "should be non-empty"),
    ({"precision_modes": ["fp8"]}, "precision_modes", "'fp8' is not one of"),
    ({"gelu_implmode": "fastest"}, "gelu_implmode", "'fastest' is not one of"),
    # values that cannot be true are refused when the run is triggered, not minutes later
    ({"evidence": {"min_cosine": 1.5}}, "evidence", "1.5 is greater than the maximum of 1"),
    ({"evidence": {"max_kl": -0.1}}, "evidence", "-0.1 is less than the minimum of 0"),
    ({"evidence": {"top1_significance": 0}}, "evidence", "less than or equal to the minimum of 0"),
    ({"evidence": {"fidelity_subset": 0}}, "evidence", "0 is less than the minimum of 1"),
    ({"evidence": {"min_cosin": 0.9}}, "evidence", "'min_cosin' was unexpected"),
    ({"benchmark_confirm": -1}, "benchmark_confirm", "less than the minimum"),
    ({"throughput_max_cv_pct": 0}, "throughput_max_cv_pct", "less than or equal to the minimum"),
    ({"model_variants": ["resnet"]}, "model_variants", "'resnet' is not one of"),
    ({"checkpoints": {"resnet": "/m.pth"}}, "checkpoints", "'resnet' is not one of"),
]
GOOD_CONFS: list[dict[str, Any]] = [
    {},
    {"batch_size": 4},
    {"batch_sizes": [1, 64]},
    {"soc_version": "Ascend310P3", "backend": "ascend"},
    {"image_limit": 16, "input_dtype": "uint8"},
    {"backend": "ascend", "precision_modes": ["force_fp16", "must_keep_origin_dtype"], "gelu_implmode": None},
    {"model_variants": ["convmixer_demo", "convmixer_768_32"], "checkpoints": {"convmixer_768_32": "random"}},
    {"evidence": {"min_cosine": 0.95, "fidelity_subset": 16}},
]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return probe(
        tmp_path_factory.mktemp("dagbag"), confs=[conf for conf, _, _ in BAD_CONFS] + GOOD_CONFS, warm=WARM_PARSES
    )


def test_dagbag_imports_the_dag_without_errors(parsed):
    assert parsed["errors"] == {}
    assert parsed["dag_ids"] == DAG_IDS


def test_parsing_leaves_the_steps_the_verdict_and_the_orm_schema_to_the_tasks(parsed):
    loaded = set(parsed["new_package_modules"])
    assert loaded, "the probe saw no convmixer_tasks module load: it measures nothing"
    assert "convmixer_tasks.run.params" in loaded and "convmixer_tasks.run.settings" in loaded  # what builds the DAG
    assert not loaded & set(TASK_TIME_MODULES), sorted(loaded & set(TASK_TIME_MODULES))


def test_parsing_imports_no_heavy_library_and_is_fast(parsed):
    assert not set(HEAVY_MODULES) & set(parsed["new_modules"]), parsed["new_modules"]
    # CPU time: on 2 shared cores the wall clock also counts waiting for a core (reported beside it)
    assert parsed["parse_cpu_s"] < FIRST_PARSE_BUDGET_S, (
        f"the first parse took {parsed['parse_cpu_s']:.2f}s of CPU ({parsed['parse_s']:.2f}s wall)"
    )
    assert parsed["file_stats"] and parsed["dag_ids"] == DAG_IDS


def test_a_reparse_with_warm_imports_takes_at_most_50_ms(parsed):
    """What the DAG file itself costs each time the dag processor parses it. Measured as the best of several
    re-parses in one process: CPU time is the work done (on 2 shared cores, wall time also counts waiting for a
    core); wall time is reported beside it."""
    warm = parsed["warm"]
    assert len(warm) == WARM_PARSES and all(entry["dag_ids"] == DAG_IDS for entry in warm)
    best_cpu = min(entry["cpu_s"] for entry in warm)
    walls = sorted(round(entry["wall_s"] * 1000, 1) for entry in warm)
    assert best_cpu <= PARSE_BUDGET_S, (
        f"a warm parse took {best_cpu * 1000:.1f} ms of CPU (wall, ms: {walls}); the budget is 50 ms"
    )


def test_dag_settings(parsed):
    dag = parsed["dag"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert "0 3 * * 1" in dag["schedule"]
    # cron OR a new checkpoint: the asset a training pipeline updates
    assert "AssetOrTimeSchedule" in dag["schedule"] and "convmixer_checkpoint" in dag["schedule"]
    assert "convmixer" in dag["tags"]
    # doc_md is what the UI shows: it must name the steps, the NPU queue and the failure path
    for words in ("compile_model", "npu_queue", "regression_gate", "record_failure"):
        assert words in dag["doc_md"]


def test_default_settings_are_the_documented_defaults(parsed):
    """Scheduling defaults as the parsed DAG shows them; worker defaults as a task loads them."""
    home = Path(parsed["home"])
    worker = parsed["worker"]
    assert worker["work_dir"] == str(home / "convmixer-work")
    assert worker["metrics_conn_id"] == "convmixer_metrics" and worker["metrics_db_url"] == ""
    assert worker["cann_set_env"] == "/usr/local/Ascend/ascend-toolkit/set_env.sh"
    assert worker["npu_device_id"] == 0 and worker["prep_workers"] == 1
    assert worker["airflow_home"] == str(home)
    params = parsed["dag"]["params"]
    layout = WorkLayout(Path(worker["work_dir"]))
    assert params["backend"] == "onnxruntime"
    assert params["dataset_dir"] == str(layout.demo_image_dir)
    assert params["label_file"] == str(layout.demo_label_file)
    assert params["checkpoint"] == str(DEMO_CHECKPOINT)
    assert params["model_variant"] == DEMO_VARIANT == "convmixer_demo"
    assert params["batch_sizes"] == [1, 4] and params["batch_size"] is None
    tasks = parsed["tasks"]
    for task_id in NPU_TASKS:
        assert (tasks[task_id]["queue"], tasks[task_id]["pool"], tasks[task_id]["pool_slots"]) == ("npu", "npu", 1)
    assert tasks["check_inputs"]["queue"] == "default"
    # two shards per batch size by default
    assert tasks["preprocess"]["mapped_lists"] == {"shard": [0, 1]}
    assert tasks["infer"]["mapped_lists"] == {"shard": [0, 1]}


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
    # the precision modes of a batch size share one prep: preprocess maps over one plan per prep folder
    assert set(tasks["prep_plans"]["upstream"]) == {"check_inputs"}
    assert set(tasks["preprocess"]["upstream"]) == {"prep_plans"}
    assert set(tasks["compile_model"]["upstream"]) == {"check_inputs", "export_onnx"}
    assert set(tasks["infer"]["upstream"]) == {"compile_model", "preprocess"}
    # the benchmark waits for the shards: ready beside them it held an NPU slot inside the infer window
    assert set(tasks["benchmark"]["upstream"]) == {"compile_model", "infer"}
    # export follows the plan (an asset event may name the checkpoint); evaluate compares with the ONNX (fidelity)
    assert set(tasks["model_plans"]["upstream"]) == {"check_inputs"}  # a zoo run exports each model once
    assert set(tasks["export_onnx"]["upstream"]) == {"model_plans"}
    assert set(tasks["evaluate"]["upstream"]) == {"check_inputs", "infer", "export_onnx"}
    assert set(tasks["record_metrics"]["upstream"]) >= {"evaluate", "benchmark", "export_onnx", "compile_model"}
    assert tasks["regression_gate"]["upstream"] == ["record_metrics"]
    # after the gate: the run's alert, then finish_run, the only leaf: it ends the run by its rows (failed while any
    # is regressed/failed/pending), so a failure anywhere still fails the run, and an accepted regression does not
    assert tasks["regression_gate"]["downstream"] == ["finish_run", "send_alert"]
    assert set(tasks["send_alert"]["upstream"]) == {"regression_gate", "record_failure"}
    assert set(tasks["finish_run"]["upstream"]) == {"regression_gate", "record_failure", "send_alert"}
    assert tasks["send_alert"]["trigger_rule"] == tasks["finish_run"]["trigger_rule"] == "all_done"
    assert [task_id for task_id, task in tasks.items() if not task["downstream"]] == ["finish_run"]
    assert "review" not in tasks  # the review is off by default
    failure = tasks["record_failure"]
    assert failure["trigger_rule"] == "one_failed"
    assert "regression_gate" not in failure["upstream"] and "record_metrics" not in failure["upstream"]
    after = {"record_failure", "record_metrics", "regression_gate", "send_alert", "finish_run"}
    assert set(failure["upstream"]) == set(tasks) - after


def test_the_review_setting_adds_a_hitl_review_that_times_out(tmp_path):
    tasks = probe(tmp_path, review="true", review_timeout_hours="2")["tasks"]
    assert tasks["review_request"]["upstream"] == ["send_alert"]
    assert tasks["review_request"]["trigger_rule"] == "all_done"
    assert tasks["review"]["upstream"] == ["review_request"]
    assert tasks["review"]["hitl_options"] == ["Accept as the new baseline", "Keep as regression"]
    assert tasks["review"]["response_timeout_s"] == 2 * 3600  # unanswered: the run ends, the next is not held
    assert tasks["apply_review"]["upstream"] == ["review"]
    assert set(tasks["finish_run"]["upstream"]) == {"regression_gate", "record_failure", "apply_review"}
    assert [task_id for task_id, task in tasks.items() if not task["downstream"]] == ["finish_run"]


def test_per_batch_size_steps_are_mapped_over_the_plans(parsed):
    """One plan per model × batch size × precision mode: compile and evaluate map over the plans, so nothing
    re-joins lists."""
    mapped = {task_id: task["mapped_over"] for task_id, task in parsed["tasks"].items()}
    assert mapped["preprocess"] == ["plan", "shard"]
    assert mapped["compile_model"] == ["plan"]
    assert mapped["infer"] == ["compiled", "shard"]
    assert mapped["benchmark"] == ["compiled"]
    assert mapped["evaluate"] == ["plan"]
    assert mapped["export_onnx"] == ["plan"]  # one plan per model
    for task_id in ("check_inputs", "prep_plans", "model_plans", "record_metrics", "regression_gate", "record_failure"):
        assert mapped[task_id] is None, task_id


@pytest.mark.parametrize("index", range(len(BAD_CONFS)), ids=[param for _, param, _ in BAD_CONFS])
def test_a_bad_conf_is_refused_with_the_schema_message(parsed, index):
    conf, param, message = BAD_CONFS[index]
    verdict = parsed["confs"][index]
    assert not verdict["ok"], f"{conf} was accepted"
    assert verdict["type"] == "ParamValidationError"
    assert f"Invalid input for param {param}" in verdict["message"] and message in verdict["message"]


def test_good_confs_are_accepted_and_batch_size_overrides(parsed):
    verdicts = parsed["confs"][len(BAD_CONFS) :]
    assert all(v["ok"] for v in verdicts), verdicts
    single = verdicts[GOOD_CONFS.index({"batch_size": 4})]
    conf = {name: single[name] for name in ("batch_size", "batch_sizes")}
    assert RunParams.from_mapping(conf, load_scheduling_settings(env_reader({}))).batch_sizes == (4,)


def test_settings_come_from_airflow_configuration(tmp_path):
    parsed = probe(
        tmp_path,
        npu_queue="ascend-q",
        npu_pool="ascend-pool",
        work_dir=str(tmp_path / "w"),
        metrics_conn_id="metrics_pg",
        schedule="0 5 * * *",
        default_backend="ascend",
        batch_sizes="8,16",
        checkpoint="/models/convmixer_1536_20.pth.tar",
        model_variant="convmixer_1536_20",
        shards="3",
        npu_device_id="2",
        cann_set_env="/opt/cann/set_env.sh",
    )
    assert parsed["errors"] == {}
    worker = parsed["worker"]
    assert worker["work_dir"] == str(tmp_path / "w")
    assert worker["metrics_conn_id"] == "metrics_pg"
    assert worker["npu_device_id"] == 2 and worker["cann_set_env"] == "/opt/cann/set_env.sh"
    assert "0 5 * * *" in parsed["dag"]["schedule"]
    params = parsed["dag"]["params"]
    assert params["dataset_dir"] == str(tmp_path / "w" / "demo" / "images")
    assert params["backend"] == "ascend" and params["batch_sizes"] == [8, 16]
    assert params["model_variant"] == "convmixer_1536_20"
    assert params["checkpoint"] == "/models/convmixer_1536_20.pth.tar"
    for task_id in NPU_TASKS:
        assert (parsed["tasks"][task_id]["queue"], parsed["tasks"][task_id]["pool"]) == ("ascend-q", "ascend-pool")
    assert parsed["tasks"]["preprocess"]["mapped_lists"] == {"shard": [0, 1, 2]}


def test_an_empty_schedule_setting_means_manual_runs_only(tmp_path):
    parsed = probe(tmp_path, schedule="")
    assert parsed["errors"] == {}
    assert parsed["dag"]["schedule"] == "None"


def test_a_bad_setting_is_an_import_error_naming_it(tmp_path):
    parsed = probe(tmp_path, default_backend="tpu")
    assert parsed["dag_ids"] == []
    (message,) = parsed["errors"].values()
    assert "[convmixer] default_backend" in message and "'tpu'" in message


def test_param_choices_come_from_the_registries(parsed):
    """The DAG offers the registries' choices (importable without torch/numpy), so they cannot drift."""
    from convmixer_tasks.backends import catalog
    from convmixer_tasks.models import card_names
    from convmixer_tasks.models.builders import convmixer as model
    from convmixer_tasks.models.variants import VARIANTS

    schemas = parsed["dag"]["schemas"]
    assert schemas["backend"]["enum"] == list(BACKEND_NAMES) == list(catalog.BACKENDS)
    assert schemas["model_variant"]["enum"] == list(card_names())  # every model card, ConvMixer's among them
    assert set(VARIANT_NAMES) <= set(card_names()) and schemas["model_variants"]["items"]["enum"] == list(card_names())
    assert schemas["input_dtype"]["enum"] == list(INPUT_DTYPES)
    assert schemas["batch_sizes"]["items"]["enum"] == list(BATCH_SIZE_CHOICES)
    assert schemas["batch_size"]["enum"] == [None, *BATCH_SIZE_CHOICES]
    assert model.VARIANTS is VARIANTS  # the model is built from the same registry
    assert DEMO_VARIANT in VARIANTS
    assert DEMO_CHECKPOINT.is_file(), "the committed demo checkpoint is missing"


def test_every_task_shares_the_dags_param_schemas(parsed):
    assert parsed["dag"]["schemas_shared"] is True


def test_each_chip_type_gets_its_own_npu_tasks_on_its_queue_and_pool(tmp_path):
    parsed = probe(
        tmp_path,
        confs=[{"chips": ["910B3"]}, {"chips": ["910B4"]}, {"chips": []}],
        chips="310P3,910B3",
        npu_queue="ascend",
    )
    tasks, schema = parsed["tasks"], parsed["dag"]["schemas"]["chips"]
    assert parsed["dag"]["params"]["chips"] == ["310P3", "910B3"]  # default: every configured chip
    assert schema["items"]["enum"] == ["310P3", "910B3"]
    assert parsed["dag"]["schemas_shared"] is True  # the chips Param's schema too
    for chip in ("310P3", "910B3"):
        for step in NPU_TASKS:
            task = tasks[f"chip_{chip}.{step}"]
            assert (task["queue"], task["pool"]) == (f"ascend.{chip}", f"npu.{chip}"), (chip, step)
            assert task["retries"] >= 1 and task["timeout_s"]
        assert tasks[f"chip_{chip}.evaluate"]["queue"] == "default"
        assert tasks[f"chip_{chip}.compile_model"]["upstream"] == [f"chip_{chip}.chip_plans", "export_onnx"]
        assert tasks[f"chip_{chip}.chip_plans"]["upstream"] == ["check_inputs"]
        assert tasks[f"chip_{chip}.regression_gate"]["downstream"] == ["finish_run", "send_alert"]
    assert not NPU_TASKS & set(tasks)  # no untyped NPU task: nothing waits on a plain `npu` queue
    assert [task_id for task_id, task in tasks.items() if not task["downstream"]] == ["finish_run"]
    ok, unknown, empty = parsed["confs"]
    assert ok["ok"] and not unknown["ok"] and "'910B4' is not one of" in unknown["message"]
    assert not empty["ok"] and "chips" in empty["message"]


def test_no_chips_setting_keeps_one_untyped_pipeline(parsed):
    assert set(parsed["tasks"]) >= NPU_TASKS and "chips" not in parsed["dag"]["params"]
    assert not [task_id for task_id in parsed["tasks"] if task_id.startswith("chip_")]
