"""
### ConvMixer re-validation

Re-validates a ConvMixer image classifier (ConvMixer-1536/20 by default on real hardware; the committed demo model
out of the box) on **Huawei Ascend NPUs** (ATC + ais_bench) or **ONNX Runtime**, and stores accuracy and throughput
per batch size in the metrics database, where a regression gate compares them with earlier runs.

```
check_inputs ─► preprocess[bs × shard] ─────────────────┐
export_onnx (+ parity) ─► compile_model[bs] ─► infer[bs × shard] ─► evaluate ─► record_metrics ─► regression_gate
                                            └► benchmark[bs] ─────────────────┘
(any step before record_metrics fails) ─► record_failure
```

* **compile_model / infer / benchmark** run on the Celery queue `[convmixer] npu_queue` (default `npu`) and in
  the pool `[convmixer] npu_pool` (one slot per device, so two NPU tasks never share a device); every other step
  runs on the default queue. The embedded LocalExecutor ignores queues: the same DAG runs on one machine.
* **Caches** under `[convmixer] work_dir` (`cache/`): prep batches keyed by dataset fingerprint + transform +
  batch size + dtype + limit; the ONNX by checkpoint hash + variant + opset; compiled artifacts by ONNX hash +
  options + toolkit/device. A rerun with nothing changed spends its time on inference and benchmarking only.
  Per-run outputs live in `runs/<run>/`.
* **Params**: `batch_sizes` (or a single `batch_size`, which wins), `backend`, `dataset_dir`, `label_file`,
  `checkpoint`, `model_variant`, `soc_version`, `input_dtype`, `image_limit` (quick runs), the gate's
  `top1_tolerance` / `throughput_tolerance_pct` / `throughput_history`, and `benchmark_loop`.
  A conf that breaks the schema is refused before the run starts; one with a key that is not a param fails
  `check_inputs` (a misspelt key would otherwise be ignored).
* **Schedule**: `[convmixer] schedule` (cron, default Mondays 03:00; empty = manual runs only).
* **Settings** (`[convmixer]` in airflow.cfg, or `AIRFLOW__CONVMIXER__<KEY>`, read when the file is parsed):
  `npu_queue`, `npu_pool`, `npu_pool_slots`, `npu_device_id`, `work_dir`, `metrics_conn_id`, `metrics_db_url`,
  `cann_set_env`, `schedule`, `default_backend`, `dataset_dir`, `label_file`, `checkpoint`, `model_variant`,
  `batch_sizes`, `shards`, `prep_workers`, `retries`, `retry_delay_seconds`, `npu_task_timeout_hours`.
* **Metrics DB**: Airflow connection `[convmixer] metrics_conn_id` (default `convmixer_metrics`), else
  `$CONVMIXER_METRICS_DB_URL` / `[convmixer] metrics_db_url`, else SQLite `$AIRFLOW_HOME/convmixer_metrics.db`.

**Failure policy.** `record_metrics` stores each batch size as `pending`; `regression_gate` turns it into `ok`
or `regressed`, and only `ok` rows form the gate's throughput history, so a gate that never finished (metrics DB
unreachable after its retries) leaves `pending` rows that no later run compares against.
A run that fails before evaluation records *no* accuracy: `record_failure` stores one `failed` row per batch size
(no top-1, no throughput), which the gate's history ignores, and the run is failed; a row that already has a
verdict (a cleared task rerun that failed) keeps it.
`regression_gate` stores `regressed` on the row first and then fails the task, so Airflow's own failure handling
fires. Runs with `image_limit` are gated on throughput only (a partial set cannot match the full-set top-1).
Every task calls `notify_failure` when it fails for good (a log line); to page someone, add a notifier to
`default_args["on_failure_callback"]` below, e.g. `SmtpNotifier(to=..., subject=...)` from
`airflow.providers.smtp.notifications.smtp` (installed), or any `BaseNotifier`.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import Param, TriggerRule, conf, dag, task

from convmixer_tasks import flow
from convmixer_tasks.errors import ConfigError, RegressionError
from convmixer_tasks.gate import DEFAULT_HISTORY, DEFAULT_THROUGHPUT_DROP_PCT, DEFAULT_TOP1_TOLERANCE

log = logging.getLogger(__name__)

# --- settings: the [convmixer] section of airflow.cfg (or AIRFLOW__CONVMIXER__<KEY> env vars), read at parse time ---
AIRFLOW_HOME = os.path.expanduser(os.environ.get("AIRFLOW_HOME") or "~/airflow")


def _setting(key: str, default: str) -> str:
    return conf.get("convmixer", key, fallback=default)


DEFAULT_QUEUE = conf.get("operators", "default_queue", fallback="default")
NPU_QUEUE = _setting("npu_queue", "npu")
NPU_POOL = _setting("npu_pool", "npu")
NPU_POOL_SLOTS = int(_setting("npu_pool_slots", "1"))  # the pool's size (= devices); scripts create the pool
NPU_DEVICE_ID = int(_setting("npu_device_id", "0"))
WORK_DIR = _setting("work_dir", os.path.join(AIRFLOW_HOME, "convmixer-work"))
METRICS_CONN_ID = _setting("metrics_conn_id", "convmixer_metrics")
METRICS_DB_URL = _setting("metrics_db_url", "")
CANN_SET_ENV = _setting("cann_set_env", "/usr/local/Ascend/ascend-toolkit/set_env.sh")
SCHEDULE = _setting("schedule", "0 3 * * 1") or None  # empty = manual runs only
DEFAULT_BACKEND = _setting("default_backend", "onnxruntime")
_LAYOUT = flow.WorkLayout(Path(WORK_DIR))
DATASET_DIR = _setting("dataset_dir", str(_LAYOUT.demo_image_dir))
LABEL_FILE = _setting("label_file", str(_LAYOUT.demo_label_file))
CHECKPOINT = _setting("checkpoint", str(flow.DEMO_CHECKPOINT))
MODEL_VARIANT = _setting("model_variant", flow.DEMO_VARIANT)
DEFAULT_BATCH_SIZES = [int(size) for size in _setting("batch_sizes", "1,4").split(",") if size.strip()]
SHARDS = int(_setting("shards", "2"))  # preprocess and infer are mapped over this many shards per batch size
# Processes per preprocess shard. 1: the parallelism comes from the mapped shards (one task each), and a forked
# pool inside a task process can deadlock on locks held by Airflow's threads (seen under `dag.test`).
PREP_WORKERS = int(_setting("prep_workers", "1"))
RETRIES = int(_setting("retries", "2"))
RETRY_DELAY = timedelta(seconds=float(_setting("retry_delay_seconds", "60")))
# A hung ATC/ais_bench must not hold the device's pool slot forever (the full val set at batch 1 takes minutes).
NPU_TASK_TIMEOUT = timedelta(hours=float(_setting("npu_task_timeout_hours", "8")))

for _name, _value, _choices in (("default_backend", DEFAULT_BACKEND, flow.BACKEND_NAMES),
                                ("model_variant", MODEL_VARIANT, flow.VARIANT_NAMES)):
    if _value not in _choices:
        raise ConfigError(f"[convmixer] {_name} = {_value!r} is not one of {list(_choices)}; fix airflow.cfg "
                          f"or AIRFLOW__CONVMIXER__{_name.upper()}")
if SHARDS < 1 or not set(DEFAULT_BATCH_SIZES) <= set(flow.BATCH_SIZE_CHOICES) or not DEFAULT_BATCH_SIZES:
    raise ConfigError(f"[convmixer] shards must be >= 1 and batch_sizes a comma list of "
                      f"{list(flow.BATCH_SIZE_CHOICES)}; got shards={SHARDS}, batch_sizes={DEFAULT_BATCH_SIZES}")

SHARD_INDEXES = list(range(SHARDS))
BACKEND_SETTINGS = {name: flow.backend_settings(name, NPU_DEVICE_ID, CANN_SET_ENV) for name in flow.BACKEND_NAMES}
# Steps where trying again can help: device/tool hiccups (compile, infer, benchmark) and a busy metrics DB.
RETRYING = {"retries": RETRIES, "retry_delay": RETRY_DELAY, "retry_exponential_backoff": True,
            "max_retry_delay": timedelta(minutes=10)}
ON_NPU = {"queue": NPU_QUEUE, "pool": NPU_POOL, "pool_slots": 1, "execution_timeout": NPU_TASK_TIMEOUT, **RETRYING}


def notify_failure(context) -> None:
    """Task failure hook: one log line naming the run, task and error (add notifiers in default_args)."""
    ti = context.get("ti")
    log.error("convmixer_validation run %s: task %s failed: %s", context.get("run_id"),
              getattr(ti, "task_id", "?"), context.get("exception"))


def metrics_url() -> str:
    """The metrics DB URL: the Airflow connection if it exists, else the env/setting/SQLite fallbacks."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(METRICS_CONN_ID)
    except AirflowNotFoundException:
        return flow.metrics_url(None, METRICS_DB_URL, AIRFLOW_HOME)
    url = flow.connection_url(conn.conn_type, conn.get_uri(), conn.host, conn.schema)
    return flow.metrics_url(url, METRICS_DB_URL, AIRFLOW_HOME)


def run_facts(dag_run) -> dict:
    """The run's id and dates for the metrics rows (manual runs in Airflow 3 may have no logical date)."""
    return flow.run_info(dag_run.run_id, dag_run.dag_id, dag_run.logical_date or dag_run.run_after,
                         dag_run.start_date)


PARAMS = {
    "batch_sizes": Param(DEFAULT_BATCH_SIZES, type="array", minItems=1, uniqueItems=True,
                         items={"type": "integer", "enum": list(flow.BATCH_SIZE_CHOICES)},
                         description="Batch sizes to compile, infer and benchmark (one metrics row each)."),
    "batch_size": Param(None, type=["null", "integer"], enum=[None, *flow.BATCH_SIZE_CHOICES],
                        description="One batch size; when set it replaces batch_sizes "
                                    "(e.g. conf {\"batch_size\": 4})."),
    "backend": Param(DEFAULT_BACKEND, type="string", enum=list(flow.BACKEND_NAMES),
                     description="ascend: ATC + ais_bench on an NPU worker; onnxruntime: runs anywhere."),
    "dataset_dir": Param(DATASET_DIR, type="string", minLength=1,
                         description="ImageNet val JPEGs (flat or synset folders); default: the generated demo set."),
    "label_file": Param(LABEL_FILE, type="string", minLength=1, description="val_label.txt for the images."),
    "checkpoint": Param(CHECKPOINT, type="string", minLength=1, description="The .pth.tar to validate."),
    "model_variant": Param(MODEL_VARIANT, type="string", enum=list(flow.VARIANT_NAMES),
                           description="Architecture of the checkpoint."),
    "soc_version": Param("auto", type="string", pattern=flow.SOC_VERSION_PATTERN,
                         description="Ascend SoC for ATC, e.g. Ascend310P3; auto = read from npu-smi."),
    "input_dtype": Param("float32", type="string", enum=list(flow.INPUT_DTYPES),
                         description="float32 NCHW (reference) or uint8 NHWC (normalised inside the model / AIPP)."),
    "image_limit": Param(None, type=["null", "integer"], minimum=1,
                         description="Only the first N images (quick runs; their accuracy is not gated against "
                                     "the full-set baseline); null = all."),
    "top1_tolerance": Param(DEFAULT_TOP1_TOLERANCE, type="number", minimum=0, maximum=100,
                            description="Gate: allowed top-1 drop (percentage points) below the variant's "
                                        "published baseline (the demo model: its committed expected_top1)."),
    "throughput_tolerance_pct": Param(DEFAULT_THROUGHPUT_DROP_PCT, type="number", minimum=0, exclusiveMaximum=100,
                                      description="Gate: allowed throughput drop, in percent of the median of "
                                                  "the recent ok runs (same model, backend, device, batch size)."),
    "throughput_history": Param(DEFAULT_HISTORY, type="integer", minimum=1, maximum=100,
                                description="Gate: how many recent ok runs form the throughput median."),
    "benchmark_loop": Param(100, type="integer", minimum=1, maximum=100000,
                            description="Pure-inference iterations per batch size (after 5 warm-up runs)."),
}


@dag(
    dag_id="convmixer_validation",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["convmixer", "validation", "ascend", "onnxruntime"],
    doc_md=__doc__,
    params=PARAMS,
    default_args={"owner": "convmixer", "retries": 0, "queue": DEFAULT_QUEUE, "on_failure_callback": [notify_failure]},
)
def convmixer_validation():
    @task
    def check_inputs(params=None, run_id=None) -> list[dict]:
        return flow.check_inputs(params, run_id, WORK_DIR, known_params=PARAMS)

    @task(map_index_template="bs{{ task.op_kwargs['plan']['batch_size'] }} shard {{ task.op_kwargs['shard'] }}")
    def preprocess(plan: dict, shard: int) -> dict:
        return flow.prepare_shard(plan, shard, SHARDS, workers=PREP_WORKERS)

    @task
    def export_onnx(params=None) -> dict:
        return flow.export_cached(params["checkpoint"], params["model_variant"], WORK_DIR)

    @task(**ON_NPU, map_index_template="bs{{ task.op_kwargs['plan']['batch_size'] }}")
    def compile_model(plan: dict, exported: dict, params=None) -> dict:
        settings = BACKEND_SETTINGS[plan["backend"]]
        return flow.compile_artifact(plan, exported, WORK_DIR, params["soc_version"], settings)

    @task(**ON_NPU, map_index_template="bs{{ task.op_kwargs['compiled']['batch_size'] }} shard "
                                       "{{ task.op_kwargs['shard'] }}")
    def infer(compiled: dict, shard: int, prepared: list) -> dict:
        return flow.infer_shard(compiled, shard, prepared[:], WORK_DIR, BACKEND_SETTINGS[compiled["backend"]])

    @task(**ON_NPU, map_index_template="bs{{ task.op_kwargs['compiled']['batch_size'] }}")
    def benchmark(compiled: dict, params=None) -> dict:
        settings = BACKEND_SETTINGS[compiled["backend"]]
        return flow.benchmark_artifact(compiled, params["benchmark_loop"], WORK_DIR, settings)

    @task
    def evaluate(plans: list, inferred: list) -> list[dict]:
        return flow.evaluate_run(plans, inferred[:], WORK_DIR)

    @task(**RETRYING)
    def record_metrics(plans: list, exported: dict, compiled: list, benchmarks: list, evaluated: list,
                       dag_run=None) -> list[dict]:
        rows = flow.build_rows(run_facts(dag_run), plans, exported, compiled[:], benchmarks[:], evaluated)
        return flow.record_rows(metrics_url(), rows)

    @task(**RETRYING)
    def regression_gate(recorded: list, params=None) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            return flow.gate_rows(metrics_url(), recorded, params)
        except RegressionError as exc:
            # A verdict fails at once (a retry would reach the same one); a DB hiccup is retried, so rows are not
            # left 'pending' without a verdict because the metrics DB blinked.
            raise AirflowFailException(str(exc)) from exc

    @task(trigger_rule=TriggerRule.ONE_FAILED, **RETRYING)
    def record_failure(params=None, dag_run=None) -> list[dict]:
        reason = f"the run failed before its metrics were recorded; see the task logs of DAG run {dag_run.run_id}"
        return flow.record_rows(metrics_url(), flow.failed_rows(run_facts(dag_run), params, reason),
                                keep_gated=True)

    # A mapped task's results arrive as a lazy sequence; the tasks read it whole with `[:]` (one request, where
    # iterating asks item by item until a "not found").
    plans = check_inputs()
    prepared = preprocess.expand(plan=plans, shard=SHARD_INDEXES)
    exported = export_onnx()
    compiled = compile_model.partial(exported=exported).expand(plan=plans)
    inferred = infer.partial(prepared=prepared).expand(compiled=compiled, shard=SHARD_INDEXES)
    benchmarks = benchmark.expand(compiled=compiled)
    evaluated = evaluate(plans, inferred)
    recorded = record_metrics(plans, exported, compiled, benchmarks, evaluated)
    regression_gate(recorded)
    # Not downstream of the gate: a regressed run keeps its 'regressed' rows, and the gate stays a leaf so a
    # failure anywhere still fails the run even though record_failure itself succeeds.
    [plans, prepared, exported, compiled, inferred, benchmarks, evaluated] >> record_failure()


convmixer_validation_dag = convmixer_validation()
