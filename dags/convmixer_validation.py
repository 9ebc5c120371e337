"""The `convmixer_validation` DAG: wiring only. What it does, its params, settings and failure policy are in
`convmixer_validation.md` beside this file (the DAG's docs in the UI); the steps are `convmixer_tasks.steps`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import Asset, Param, TriggerRule, conf, dag, get_current_context, task
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

from convmixer_tasks import benchmark_step, rows, runfacts, steps
from convmixer_tasks import records as rec
from convmixer_tasks.errors import RegressionError
from convmixer_tasks.params import benchmark_options, evidence_options, param_specs
from convmixer_tasks.settings import airflow_conf_reader, load_scheduling_settings, load_worker_settings
from convmixer_tasks.triggers import CHECKPOINT_ASSET, with_triggered_checkpoint

SETTINGS = load_scheduling_settings(airflow_conf_reader(conf))
CHECKPOINT = Asset(CHECKPOINT_ASSET)
PARAMS = {
    name: Param(spec.default, description=spec.description, **spec.schema)
    for name, spec in param_specs(SETTINGS).items()
}


@dag(
    dag_id="convmixer_validation",
    # the cron OR a new checkpoint (asset event); an empty schedule setting keeps manual runs only
    schedule=SETTINGS.schedule
    and AssetOrTimeSchedule(timetable=CronTriggerTimetable(SETTINGS.schedule, timezone="UTC"), assets=CHECKPOINT),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["convmixer", "validation", "ascend", "onnxruntime"],
    doc_md=str(Path(__file__).with_name("convmixer_validation.md")),
    params=PARAMS,
    default_args=SETTINGS.default_args(conf.get("operators", "default_queue", fallback="default")),
)
def convmixer_validation():
    def worker():  # read where the task runs: the worker's own device, CANN path and work folder win
        return load_worker_settings(airflow_conf_reader(conf))

    def label(text: str) -> None:  # names a mapped task instance in the UI
        get_current_context()["map_index_template"] = text

    def metrics_url() -> str:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        settings = worker()
        try:
            return settings.metrics_url(BaseHook.get_connection(settings.metrics_conn_id))
        except AirflowNotFoundException:
            return settings.metrics_url(None)

    @task
    def check_inputs(params=None, run_id=None, triggering_asset_events=None) -> list[dict]:
        run_params = with_triggered_checkpoint(params, triggering_asset_events)
        return [plan.to_dict() for plan in steps.check_inputs(run_params, run_id, worker().work_dir, PARAMS)]

    @task
    def prep_plans(plans) -> list[dict]:  # precision modes share their batch size's prep: written once
        return [plan.to_dict() for plan in steps.plans_to_prepare(rec.RunPlan.from_dicts(plans))]

    @task
    def preprocess(plan: dict, shard: int) -> dict:
        run_plan = rec.RunPlan.from_dict(plan)
        label(f"bs{run_plan.batch_size} shard {shard}")
        return steps.prepare_shard(run_plan, shard, SETTINGS.shards, workers=worker().prep_workers).to_dict()

    @task
    def export_onnx(plans) -> dict:  # the plan's checkpoint: an asset event may have named another
        plan = rec.RunPlan.from_dict(plans[0])
        return steps.export_cached(plan.checkpoint, plan.model_variant, worker().work_dir).to_dict()

    @task(**SETTINGS.on_npu())
    def compile_model(plan: dict, exported: dict, params=None) -> dict:
        run_plan, settings = rec.RunPlan.from_dict(plan), worker()
        label(f"bs{run_plan.batch_size} {run_plan.precision}")
        model, backend = rec.ExportedModel.from_dict(exported), settings.backend_settings(run_plan.backend)
        return steps.compile_artifact(run_plan, model, settings.work_dir, params["soc_version"], backend).to_dict()

    @task(**SETTINGS.on_npu())
    def infer(compiled: dict, shard: int, prepared: list) -> dict:
        model, settings = rec.CompiledModel.from_dict(compiled), worker()
        label(f"bs{model.batch_size} {model.precision} shard {shard}")
        shards = rec.PrepShard.from_dicts(prepared[:])
        return steps.infer_shard(
            model, shard, shards, settings.work_dir, settings.backend_settings(model.backend)
        ).to_dict()

    @task(**SETTINGS.on_npu())
    def benchmark(compiled: dict, params=None) -> dict:
        model, settings = rec.CompiledModel.from_dict(compiled), worker()
        label(f"bs{model.batch_size} {model.precision}")
        backend, options = settings.backend_settings(model.backend), benchmark_options(params)
        # the suspect line comes from the metrics DB's history
        options["suspect"] = benchmark_step.suspect_check(metrics_url(), params["model_variant"], model, params)
        summary = benchmark_step.benchmark_artifact(model, work_dir=settings.work_dir, settings=backend, **options)
        return summary.to_dict()

    @task
    def evaluate(plan: dict, inferred: list, exported: dict, params=None) -> dict:
        run_plan, model = rec.RunPlan.from_dict(plan), rec.ExportedModel.from_dict(exported)
        label(f"bs{run_plan.batch_size} {run_plan.precision}")
        outputs = rec.ShardOutputs.from_dicts(inferred[:])
        limits = evidence_options(params)  # the fidelity thresholds (other keys are ignored there)
        return steps.evaluate_batch(run_plan, outputs, worker().work_dir, model, limits).to_dict()

    @task(**SETTINGS.retrying())
    def record_metrics(
        plans: list,
        exported: dict,
        compiled: list,
        benches: list,
        scores: list,
        prepared: list,
        inferred: list,
        dag_run=None,
    ):
        run_plans, model = rec.RunPlan.from_dicts(plans), rec.ExportedModel.from_dict(exported)
        built, benched = rec.CompiledModel.from_dicts(compiled[:]), rec.BenchSummary.from_dicts(benches[:])
        scored = rec.Scores.from_dicts(scores[:])
        stages = rec.PrepShard.from_dicts(prepared[:]), rec.ShardOutputs.from_dicts(inferred[:])  # stage_seconds
        facts = runfacts.run_facts_of(dag_run)
        built_rows = rows.rows_for_run(facts, run_plans, model, built, benched, scored, *stages)
        return [row.to_dict() for row in steps.record_rows(metrics_url(), built_rows, scores=scored)]

    @task(**SETTINGS.retrying())
    def regression_gate(recorded: list, params=None) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        try:
            verdicts = steps.gate_rows(metrics_url(), rec.RecordedRow.from_dicts(recorded), params)
        except RegressionError as exc:  # a verdict fails at once; a DB hiccup is retried, so no row stays pending
            raise AirflowFailException(str(exc)) from exc
        return [verdict.to_dict() for verdict in verdicts]

    @task(trigger_rule=TriggerRule.ONE_FAILED, **SETTINGS.retrying())
    def record_failure(params=None, dag_run=None) -> list[dict]:
        reason = f"the run failed before its metrics were recorded; see the task logs of DAG run {dag_run.run_id}"
        failed = rows.failed_rows(runfacts.run_facts_of(dag_run), params, reason)
        return [row.to_dict() for row in steps.record_rows(metrics_url(), failed, keep_gated=True)]

    # Mapped results arrive as lazy sequences; tasks read them whole with `[:]` (one request, not one per item).
    shards = list(range(SETTINGS.shards))
    plans = check_inputs()
    preps = prep_plans(plans)
    prepared = preprocess.expand(plan=preps, shard=shards)
    exported = export_onnx(plans)
    compiled = compile_model.partial(exported=exported).expand(plan=plans)
    inferred = infer.partial(prepared=prepared).expand(compiled=compiled, shard=shards)
    benchmarks = benchmark.expand(compiled=compiled)
    scores = evaluate.partial(inferred=inferred, exported=exported).expand(plan=plans)
    regression_gate(record_metrics(plans, exported, compiled, benchmarks, scores, prepared, inferred))
    # Not downstream of the gate (regressed rows stay regressed); the gate stays a leaf so any failure fails the run.
    [plans, preps, prepared, exported, compiled, inferred, benchmarks, scores] >> record_failure()


convmixer_validation()
