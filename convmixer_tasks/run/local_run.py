"""The whole chain in one process (``convmixer-tasks run``): the DAG's steps, called in order, without Airflow.

It calls the same ``steps`` functions the DAG's tasks call, with one shard per batch size, so a result here is the
result the DAG would produce on the same inputs.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmixer_tasks.errors import RegressionError
from convmixer_tasks.fileio import atomic_write_json, to_jsonable
from convmixer_tasks.models.variants import DEMO_CHECKPOINT
from convmixer_tasks.run import benchmark_step, export_step, rows, runfacts, steps
from convmixer_tasks.run.params import RANDOM_CHECKPOINT, RunParams
from convmixer_tasks.run.settings import SchedulingSettings, load_scheduling_settings
from convmixer_tasks.run.workdir import WorkLayout

if TYPE_CHECKING:
    from convmixer_tasks.metrics.schema import MetricsRow

log = logging.getLogger(__name__)
RANDOM_WEIGHTS_NOTE = "random weights: top-1 at chance (0.1 %) expected"


def settings_for(work_dir: str | os.PathLike) -> SchedulingSettings:
    """The DAG's default settings with the work folder the CLI names: where the Params' defaults (the demo set in
    the work folder, the committed demo model) come from for a run without Airflow."""
    return load_scheduling_settings(lambda key: os.fspath(work_dir) if key == "work_dir" else None)


def local_params(work_dir: str | os.PathLike = "work", **params: Any) -> RunParams:
    """``RunParams`` for a run in ``work_dir``: the given params (by Param name, as a DAG conf names them) over the
    DAG's defaults."""
    return RunParams.from_mapping(params, settings_for(work_dir))


def run_chain(
    run: RunParams,
    work_dir: str | os.PathLike = "work",
    backend_settings: dict[str, Any] | None = None,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """Preprocess → export + parity → compile → infer → benchmark → eval, per model × batch size × precision mode;
    returns the metrics rows.

    Without ``metrics_url`` the rows are what the DAG's record step builds, status ``pending``: nothing is recorded
    and no row claims a verdict. With it, the rows are recorded and gated exactly as the DAG's record and gate tasks
    do (same steps, same ``RunParams``); the summary carries the verdicts, and a regression is raised
    (``RegressionError``) after the summary is written and every verdict stored.

    ``local_params(work_dir)`` runs the demo: the generated demo set (made in ``work_dir`` on first use) and the
    committed demo model. A model whose checkpoint is ``RANDOM_CHECKPOINT`` runs with seeded random weights, and
    the summary says its top-1 is expected at chance. Caches under ``work_dir/cache`` make a second run spend its
    time on inference.
    """
    layout = WorkLayout(Path(work_dir))
    started_at = datetime.now(UTC)
    run_id = f"cli__{started_at.strftime('%Y%m%dT%H%M%S.%fZ')}"
    settings = backend_settings or {}

    plans = steps.check_inputs(run, run_id, work_dir)
    if metrics_url is not None:  # before minutes of work: a bad URL fails now, and the benchmark can read history
        from convmixer_tasks.metrics import upgrade

        upgrade(metrics_url)
    prepared = [steps.prepare_shard(plan, 0, 1) for plan in steps.plans_to_prepare(plans)]
    log.info("preprocess: %s", ", ".join(f"bs{p.batch_size} {'cached' if p.cached else 'written'}" for p in prepared))
    exported = [
        export_step.export_cached(plan.checkpoint, plan.model_variant, work_dir)
        for plan in steps.plans_to_export(plans)
    ]
    for model in exported:
        log.info(
            "export %s: %s (parity max |diff| %.2e)%s",
            model.variant,
            model.onnx_path,
            model.parity_max_abs_diff,
            " cached" if model.cached else "",
        )
    compiled = [
        steps.compile_artifact(plan, steps.exported_for(plan, exported), work_dir, run.soc_version, settings)
        for plan in plans
    ]
    inferred = [steps.infer_shard(entry, 0, prepared, work_dir, settings=settings) for entry in compiled]
    benchmarks = [
        benchmark_step.benchmark_artifact(
            entry,
            run.benchmark,
            work_dir,
            settings,
            # like the DAG: a figure suspect against the recorded history is confirmed before the verdict
            suspect=benchmark_step.suspect_check(metrics_url, entry.model_variant, entry, run.gate)
            if metrics_url
            else None,
        )
        for entry in compiled
    ]
    scores = [
        steps.evaluate_batch(plan, inferred, work_dir, steps.exported_for(plan, exported), run.evidence)
        for plan in plans
    ]
    facts = runfacts.run_facts(run_id, None, started_at, started_at, "cli")
    built = rows.rows_for_run(facts, plans, exported, compiled, benchmarks, scores, prepared, inferred)
    for row in built:
        log.info(
            "%s bs%d %s %s on %s: top-1 %.2f%%, top-5 %.2f%%, %.1f img/s pure inference (ais_bench-style), "
            "%s end to end",
            row.model_variant,
            row.batch_size,
            row.backend,
            row.precision_mode,
            row.device,
            row.top1,
            row.top5,
            row.throughput,
            f"{row.e2e_throughput:.1f} img/s" if row.e2e_throughput else "unknown",
        )
    random = [plan.model_variant for plan in steps.plans_to_export(plans) if not plan.checkpoint]
    summary = {
        "run_id": run_id,
        "work_dir": str(layout.root),
        **({"note": "; ".join(f"{model}: {RANDOM_WEIGHTS_NOTE}" for model in random)} if random else {}),
        "rows": [to_jsonable(row) for row in built],
        "cached": {
            "preprocess": all(p.cached for p in prepared),
            "export": all(model.cached for model in exported),
            "compile": all(c.cached for c in compiled),
        },
    }
    regression: RegressionError | None = None
    if metrics_url is not None:
        recorded = steps.record_rows(metrics_url, built)
        try:
            summary["verdicts"] = [verdict.values() for verdict in steps.gate_rows(metrics_url, recorded, run)]
        except RegressionError as exc:
            regression = exc
            summary["verdicts"] = [to_jsonable(decision) for decision in exc.decisions]
        summary["rows"] = _as_stored(metrics_url, built)  # with the gate's verdict, as metrics-show will show them
    atomic_write_json(layout.run_dir(run_id) / "summary.json", summary)
    if regression is not None:
        raise regression
    return summary


def default_checkpoint(variant: str) -> str:
    """The card's committed checkpoint (the demo model's), else ``RANDOM_CHECKPOINT``: seeded random weights."""
    from convmixer_tasks.models.registry import get_card

    architecture = get_card(variant).architecture
    if architecture is None or architecture.default_checkpoint is None:
        return RANDOM_CHECKPOINT
    return str(DEMO_CHECKPOINT.parents[1] / architecture.default_checkpoint)


def _as_stored(url: str, built: list[MetricsRow]) -> list[dict[str, Any]]:
    from convmixer_tasks.metrics import get_run
    from convmixer_tasks.metrics.schema import KEY_COLUMNS

    return [get_run(url, *(getattr(row, key) for key in KEY_COLUMNS)) or to_jsonable(row) for row in built]
