"""The `convmixer_validation` DAG: wiring only. What it does, its params, settings and failure policy are in
`convmixer_validation.md` beside this file (the DAG's docs in the UI); the steps are `convmixer_tasks.run.steps`."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, Param, TaskGroup, TriggerRule, conf, dag, get_current_context, task
from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable

from convmixer_tasks.errors import RegressionError

# Parse time loads only what builds the DAG: the settings and the Params (RunParams' specs). The records, the steps
# and numpy/torch/onnx/SQLAlchemy behind them load inside the tasks.
from convmixer_tasks.run import fleet
from convmixer_tasks.run.params import RunParams, param_specs, shared_schema
from convmixer_tasks.run.settings import (
    airflow_conf_reader,
    load_alert_settings,
    load_scheduling_settings,
    load_worker_settings,
)
from convmixer_tasks.run.triggers import CHECKPOINT_ASSET, recorded_checkpoint, with_triggered_checkpoint

SETTINGS = load_scheduling_settings(airflow_conf_reader(conf))
ALERTS = load_alert_settings(airflow_conf_reader(conf))
log = logging.getLogger(__name__)
CHECKPOINT = Asset(CHECKPOINT_ASSET)
# schema=: the read-only schema itself, which the per-task copies of the Params share (not a fresh dict of kwargs)
PARAMS = {
    name: Param(spec.default, description=spec.description, schema=spec.schema)
    for name, spec in param_specs(SETTINGS).items()
}
if SETTINGS.chips:  # chip types as a run dimension (convmixer_tasks.run.fleet); the DAG has tasks for these only
    PARAMS[fleet.CHIPS_PARAM] = Param(
        list(SETTINGS.chips),
        schema=shared_schema(
            {"type": "array", "minItems": 1, "uniqueItems": True}
            | {"items": {"type": "string", "enum": list(SETTINGS.chips)}}
        ),
        description="chip types (npu-smi Name) to validate on: one row per chip × model × batch size × mode; "
        "compile, infer and benchmark of chip X run on its queue and pool, compiled with --soc_version Ascend<X> "
        "(soc_version is not used then)",
    )


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

    def label(text: str, record: Any = None, **rows: Any) -> None:
        """Names a mapped task instance in the UI, and the rows it works for (a plan's: ``record``) for its
        failure callback, so a failure fails those rows and the others say "not run"."""
        from convmixer_tasks.run import runfacts

        context = get_current_context()
        context["map_index_template"] = text
        if record is not None:
            rows.update(model_variant=record.model_variant, batch_size=record.batch_size, precision=record.precision)
        runfacts.note_scope(context, **rows)

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
        from convmixer_tasks.run import steps

        if SETTINGS.chips:  # first: a chip nobody serves fails the run in seconds, not after a wait without end
            chips = fleet.requested_chips(params.get(fleet.CHIPS_PARAM), SETTINGS.chips)
            executor = conf.get("core", "executor", fallback="")
            queues = {chip: SETTINGS.queue_for(chip) for chip in chips}
            edge = edge_worker_queues() if fleet.remote_executor(executor) == "edge" else None
            log.info("%s", fleet.check_chip_workers(queues, executor, celery_active_queues, edge_queues=edge))
        run = RunParams.from_mapping(fleet.without_chips(with_triggered_checkpoint(params, triggering_asset_events)))
        return [plan.to_dict() for plan in steps.check_inputs(run, run_id, worker().work_dir)]

    @task
    def chip_plans(plans, chip: str, params=None) -> list[dict]:  # a chip the run leaves out: [], its tasks skip
        return plans if chip in fleet.requested_chips(params.get(fleet.CHIPS_PARAM), SETTINGS.chips) else []

    @task
    def prep_plans(plans) -> list[dict]:  # precision modes share their batch size's prep: written once
        from convmixer_tasks.run import records, steps

        return [plan.to_dict() for plan in steps.plans_to_prepare(records.RunPlan.from_dicts(plans))]

    @task
    def preprocess(plan: dict, shard: int) -> dict:
        from convmixer_tasks.run import records, steps

        run_plan = records.RunPlan.from_dict(plan)
        label(f"bs{run_plan.batch_size} shard {shard}", batch_size=run_plan.batch_size)
        return steps.prepare_shard(run_plan, shard, SETTINGS.shards, workers=worker().prep_workers).to_dict()

    @task
    def model_plans(plans) -> list[dict]:  # a zoo run exports each model once, for all its batch sizes and modes
        from convmixer_tasks.run import records, steps

        return [plan.to_dict() for plan in steps.plans_to_export(records.RunPlan.from_dicts(plans))]

    @task
    def export_onnx(plan: dict) -> dict:  # the plan's checkpoint: an asset event may have named another
        from convmixer_tasks.run import export_step, records

        run_plan = records.RunPlan.from_dict(plan)
        label(run_plan.model_variant, model_variant=run_plan.model_variant)
        return export_step.export_cached(run_plan.checkpoint, run_plan.model_variant, worker().work_dir).to_dict()

    # chip: None without [convmixer] chips; else the chip type whose queue/pool the task was given (.override)
    @task(**SETTINGS.on_npu())
    def compile_model(plan: dict, exported: list, chip: str | None = None, params=None) -> dict:
        from convmixer_tasks.run import records, steps

        run_plan, settings, run = (
            records.RunPlan.from_dict(plan),
            worker(),
            RunParams.from_mapping(fleet.without_chips(params)),
        )
        label(f"{run_plan.model_variant} bs{run_plan.batch_size} {run_plan.precision}", run_plan)
        model = steps.exported_for(run_plan, records.ExportedModel.from_dicts(exported[:]))
        backend = settings.backend_settings(run_plan.backend)
        soc, work_dir = (
            fleet.soc_version_of(chip) if chip else run.soc_version,
            fleet.chip_work_dir(settings.work_dir, chip),
        )
        return steps.compile_artifact(run_plan, model, work_dir, soc, backend).to_dict()

    @task(**SETTINGS.on_npu())
    def infer(compiled: dict, shard: int, prepared: list, chip: str | None = None) -> dict:
        from convmixer_tasks.run import records, steps

        model, settings = records.CompiledModel.from_dict(compiled), worker()
        label(f"{model.model_variant} bs{model.batch_size} {model.precision} shard {shard}", model)
        shards = records.PrepShard.from_dicts(prepared[:])
        work_dir = fleet.chip_work_dir(settings.work_dir, chip)
        return steps.infer_shard(model, shard, shards, work_dir, settings.backend_settings(model.backend)).to_dict()

    @task(**SETTINGS.on_npu())
    def benchmark(compiled: dict, chip: str | None = None, params=None) -> dict:
        from convmixer_tasks.run import benchmark_step, records

        model, settings, run = (
            records.CompiledModel.from_dict(compiled),
            worker(),
            RunParams.from_mapping(fleet.without_chips(params)),
        )
        label(f"{model.model_variant} bs{model.batch_size} {model.precision}", model)
        suspect = benchmark_step.suspect_check(metrics_url(), model.model_variant, model, run.gate)  # DB history
        backend = settings.backend_settings(model.backend)
        return benchmark_step.benchmark_artifact(
            model, run.benchmark, fleet.chip_work_dir(settings.work_dir, chip), backend, suspect=suspect
        ).to_dict()

    @task
    def evaluate(plan: dict, inferred: list, exported: list, chip: str | None = None, params=None) -> dict:
        from convmixer_tasks.run import records, steps

        run_plan = records.RunPlan.from_dict(plan)
        model = steps.exported_for(run_plan, records.ExportedModel.from_dicts(exported[:]))
        label(f"{run_plan.model_variant} bs{run_plan.batch_size} {run_plan.precision}", run_plan)
        outputs, evidence = (
            records.ShardOutputs.from_dicts(inferred[:]),
            RunParams.from_mapping(fleet.without_chips(params)).evidence,
        )
        work_dir = fleet.chip_work_dir(worker().work_dir, chip)
        return steps.evaluate_batch(run_plan, outputs, work_dir, model, evidence).to_dict()

    @task(**SETTINGS.retrying())
    def record_metrics(
        plans: list,
        exported: list,
        compiled: list,
        benches: list,
        scores: list,
        prepared: list,
        inferred: list,
        chip: str | None = None,
        dag_run=None,
    ):
        from convmixer_tasks.run import records, rows, runfacts, steps

        run_plans, model = records.RunPlan.from_dicts(plans), records.ExportedModel.from_dicts(exported[:])
        built, benched = records.CompiledModel.from_dicts(compiled[:]), records.BenchSummary.from_dicts(benches[:])
        scored = records.Scores.from_dicts(scores[:])
        stages = records.PrepShard.from_dicts(prepared[:]), records.ShardOutputs.from_dicts(inferred[:])
        facts = runfacts.run_facts_of(dag_run)
        built_rows = rows.rows_for_run(facts, run_plans, model, built, benched, scored, *stages)
        built_rows = [replace(row, chip=chip or "") for row in built_rows]  # the chip is part of the row key
        return [row.to_dict() for row in steps.record_rows(metrics_url(), built_rows, scores=scored)]

    @task(**SETTINGS.retrying())
    def regression_gate(recorded: list, params=None) -> list[dict]:
        from airflow.sdk.exceptions import AirflowFailException

        from convmixer_tasks.run import records, steps

        try:
            verdicts = steps.gate_rows(
                metrics_url(),
                records.RecordedRow.from_dicts(recorded),
                RunParams.from_mapping(fleet.without_chips(params)),
            )
        except RegressionError as exc:  # a verdict fails at once; a DB hiccup is retried, so no row stays pending
            raise AirflowFailException(str(exc)) from exc
        return [verdict.to_dict() for verdict in verdicts]

    @task(trigger_rule=TriggerRule.ONE_FAILED, **SETTINGS.retrying())
    def record_failure(params=None, dag_run=None, triggering_asset_events=None, ti=None) -> list[dict]:
        from functools import partial

        from convmixer_tasks.run import rows, runfacts, steps

        # Each failed task's callback kept its error as an XCom (runfacts.log_task_failure): read them in DAG order,
        # then name any failed task that kept none (killed before its callback ran).
        before = ti.task.get_flat_relative_ids(upstream=True)
        upstream = [task_id for task_id in ti.task.dag.task_ids if task_id in before]
        kept = ti.xcom_pull(task_ids=upstream, key=runfacts.FAILURE_XCOM_KEY) or []
        finished = partial(ti.get_task_breadcrumbs, dag_run.dag_id, dag_run.run_id)  # the run's ended tasks
        failures = runfacts.failures_of(kept, finished, among=upstream)
        run_params = recorded_checkpoint(fleet.without_chips(params), triggering_asset_events)  # the event's checkpoint
        chips = fleet.failed_run_chips(params.get(fleet.CHIPS_PARAM), SETTINGS.chips)
        facts = runfacts.run_facts_of(dag_run)
        failed_rows = rows.failed_rows(facts, run_params, failures, asked=dag_run.conf or {}, chips=chips)
        return [row.to_dict() for row in steps.record_rows(metrics_url(), failed_rows, keep_gated=True)]

    # Mapped results arrive as lazy sequences; tasks read them whole with `[:]` (one request, not one per item).
    shards = list(range(SETTINGS.shards))
    plans = check_inputs()
    preps = prep_plans(plans)
    prepared = preprocess.expand(plan=preps, shard=shards)
    models = model_plans(plans)
    exported = export_onnx.expand(plan=models)
    # One pipeline from compile to the gate per chip type (a TaskGroup each), or one untyped as before: a mapped
    # task's queue and pool are fixed when the DAG is parsed, so each chip needs its own tasks (see the .md).
    gates, before_record = [], [plans, preps, prepared, models, exported]
    for chip in SETTINGS.chips or (None,):
        with TaskGroup(fleet.chip_group(chip), tooltip=f"chip {chip}") if chip else nullcontext():
            on_chip = chip_plans(plans, chip) if chip else plans
            on_npu = SETTINGS.on_npu(chip)
            compiled = compile_model.override(**on_npu).partial(exported=exported, chip=chip).expand(plan=on_chip)
            inferred = (
                infer.override(**on_npu).partial(prepared=prepared, chip=chip).expand(compiled=compiled, shard=shards)
            )
            # After the chip's shards: ready with them, the benchmark would hold one of the chip's slots inside the
            # infer window (the scale-out bench measured it there); after them it delays no shard, though at N >= 2
            # workers the chip's NPU work ends a few seconds later (bench/RESULTS.md).
            benchmarks = benchmark.override(**on_npu).partial(chip=chip).expand(compiled=compiled)
            inferred >> benchmarks
            scores = evaluate.partial(inferred=inferred, exported=exported, chip=chip).expand(plan=on_chip)
            gates.append(
                regression_gate(
                    record_metrics(on_chip, exported, compiled, benchmarks, scores, prepared, inferred, chip)
                )
            )
        before_record += [compiled, inferred, benchmarks, scores, *([on_chip] if chip else [])]
    # Not downstream of the gate (regressed rows stay regressed).
    failure = before_record >> record_failure()
    alerts_and_review(gates, failure, metrics_url)


def celery_active_queues(timeout: float):
    """Celery's answer to which queues its live workers consume, through the Celery provider's app."""
    from airflow.providers.celery.executors.celery_executor_utils import app

    return app.control.inspect(timeout=timeout).active_queues()


def edge_worker_queues():
    """The Edge executor's worker registry, asked through the api-server as the user of Connection
    ``fleet.EDGE_API_CONN_ID`` (a task has no DB access); None when there is no such Connection."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    from convmixer_tasks.run import edge_registry

    try:
        api = BaseHook.get_connection(fleet.EDGE_API_CONN_ID)
    except AirflowNotFoundException:
        return None
    return edge_registry.registry_queues(api, conf.getint("edge", "heartbeat_interval", fallback=30))


def alerts_and_review(gates, failure, metrics_url) -> None:
    """After the gate: one alert per run, the optional review (HITL), and ``finish_run``, the leaf that ends the run
    by its rows — failed while any is regressed/failed/pending, so an accepted regression ends the run green."""

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def send_alert(dag_run=None) -> None:  # never fails: a broken notifier costs one log line
        from convmixer_tasks.errors import ConvMixerError
        from convmixer_tasks.run import alerts

        try:
            alert = alerts.collect(metrics_url(), dag_run.run_id, dag_run.dag_id, ALERTS, base_url())
        except ConvMixerError as exc:
            log.error("no alert for run %s: its rows could not be read: %s", dag_run.run_id, exc)
            return
        if alert.rows:
            notify(alerts.render(alert), get_current_context())

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def review_request(dag_run=None) -> str:
        from airflow.sdk.exceptions import AirflowSkipException

        from convmixer_tasks.run import alerts, review

        alert = alerts.collect(metrics_url(), dag_run.run_id, dag_run.dag_id, ALERTS, base_url())
        if not review.rows_to_review(alert):
            raise AirflowSkipException("nothing to review: no regression and no environment change")
        return alerts.review_body(alert)

    @task
    def apply_review(dag_run=None, ti=None) -> dict:
        from convmixer_tasks.run import alerts, review

        answer = ti.xcom_pull(task_ids="review")
        url = metrics_url()
        alert = alerts.collect(url, dag_run.run_id, dag_run.dag_id, ALERTS, base_url())
        who = (answer.get("responded_by_user") or {}).get("name")  # None: the timeout chose the default
        outcome = review.apply_answer(
            url, review.rows_to_review(alert), answer["chosen_options"], who, str(answer["responded_at"]),
            (answer.get("params_input") or {}).get("reason"),
        )  # fmt: skip
        log.warning("review of run %s: %s", dag_run.run_id, outcome.line)
        if outcome.accepted and ALERTS.baseline_accepted:
            told = alerts.collect(url, dag_run.run_id, dag_run.dag_id, ALERTS, base_url(), outcome.accepted)
            rows = tuple(row for row in told.rows if row.row_id in outcome.accepted)
            notify(alerts.render(replace(told, rows=rows, note=outcome.line)), get_current_context())
        return outcome.to_dict()

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finish_run(dag_run=None) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        from convmixer_tasks.metrics.reports import run_rows
        from convmixer_tasks.run import review

        failed = review.conclusion(run_rows(metrics_url(), dag_run.run_id))
        if failed:
            raise AirflowFailException(f"run {dag_run.run_id} ends failed: {failed}")

    alerted = [*gates, failure] >> send_alert()
    last = alerted
    if ALERTS.review:
        from airflow.providers.standard.operators.hitl import HITLOperator

        from convmixer_tasks.run.review import KEEP, OPTIONS

        request = review_request()
        asked = HITLOperator(
            task_id="review",
            subject="ConvMixer run {{ run_id }}: accept the new figures as the baseline?",
            body="{{ ti.xcom_pull(task_ids='review_request') }}",  # the request's verdicts and links
            options=list(OPTIONS),
            defaults=[KEEP],  # what a timeout chooses: the regression stays
            params={"reason": Param("", type="string", description="why (kept on the rows)")},
            response_timeout=ALERTS.review_timeout,  # the run ends then: the next run is not held behind it
        )
        last = alerted >> request >> asked >> apply_review()
    [*gates, failure, last] >> finish_run()


convmixer_validation()


# --- alerts: Airflow's notifiers, and the digest DAG ---------------------------------------------------------------


def base_url() -> str:  # where people open Airflow, for the links in messages ([convmixer] alert_base_url wins)
    return conf.get("api", "base_url", fallback="") or "http://localhost:8080"


def notify(message, context) -> None:
    """Send ``message`` (``alerts.Message``) through the notifier ``[convmixer] alerts`` names: an Apprise URL, or a
    Connection (smtp/email: SmtpNotifier, HTML body; apprise: AppriseNotifier, text body). Never raises: a broken
    notifier costs one error line, never the run or a row."""
    from urllib.parse import urlsplit

    target = ALERTS.target
    if not target:
        log.info("alert %r not sent: [convmixer] alerts is not set", message.subject)
        return
    shown = (
        f"Apprise URL {urlsplit(target).scheme}://{urlsplit(target).hostname}"
        if "://" in target
        else (f"connection {target!r}")
    )
    try:
        import apprise
        from airflow.providers.apprise.notifications.apprise import AppriseNotifier

        if "://" in target:
            # Apprise.add takes a URL as well as an AppriseConfig
            notifier: Any = AppriseNotifier(body=message.text, title=message.subject, config=target)  # type: ignore[arg-type]
        else:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier
            from airflow.sdk import BaseHook

            connection = BaseHook.get_connection(target)
            extra = connection.extra_dejson
            if connection.conn_type == "apprise":
                notifier = AppriseNotifier(body=message.text, title=message.subject, apprise_conn_id=target)
            else:
                to = ALERTS.email_to or [one.strip() for one in str(extra.get("to") or "").split(",") if one.strip()]
                if not to:
                    raise ValueError("no recipients: set [convmixer] alert_email_to or the connection's extra 'to'")
                notifier = SmtpNotifier(to=list(to), subject=message.subject, html_content=message.html,
                                        smtp_conn_id=target, from_email=extra.get("from_email"))  # fmt: skip
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            notifier.notify(context)  # notify, not __call__: the message is data, never a Jinja template
        if captured.getvalue().strip():  # Apprise reports a failed delivery in its log, not by raising
            raise RuntimeError(captured.getvalue().strip().splitlines()[-1])
        log.info("alert %r sent through %s", message.subject, shown)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        log.error("alert %r NOT sent through %s: %s: %s", message.subject, shown, type(exc).__name__, detail)


@dag(
    dag_id="convmixer_digest",
    schedule=ALERTS.digest_schedule and CronTriggerTimetable(ALERTS.digest_schedule, timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["convmixer", "digest"],
    doc_md="The zoo's digest (`[convmixer] digest_schedule`, `digest_days`) through the alerts' notifier.",
    default_args=SETTINGS.default_args(conf.get("operators", "default_queue", fallback="default")),
)
def convmixer_digest():
    @task
    def send_digest(data_interval_end=None) -> dict:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        from convmixer_tasks.run import digest

        settings = load_worker_settings(airflow_conf_reader(conf))
        try:  # the metrics DB by the validation DAG's rule: its Connection, else the settings
            url = settings.metrics_url(BaseHook.get_connection(settings.metrics_conn_id))
        except AirflowNotFoundException:
            url = settings.metrics_url(None)
        summary = digest.build(url, data_interval_end or datetime.now(UTC), ALERTS.digest_days)
        notify(digest.render(summary, ALERTS.base_url or base_url()), get_current_context())
        return summary.to_dict()

    send_digest()


convmixer_digest()
