"""The whole chain in one process (``convmixer-tasks run``): the DAG's steps, called in order, without Airflow.

It calls the same ``steps`` functions the DAG's tasks call, with one shard per batch size, so a result here is the
result the DAG would produce on the same inputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmixer_tasks import benchmark_step, rows, runfacts, steps
from convmixer_tasks.errors import RegressionError
from convmixer_tasks.fileio import atomic_write_json, to_jsonable
from convmixer_tasks.precision import DEFAULT_GELU_IMPLMODE
from convmixer_tasks.throughput import DEFAULT_CONFIRM, DEFAULT_MAX_CV_PCT, DEFAULT_REMEASURE
from convmixer_tasks.variants import DEMO_CHECKPOINT, DEMO_VARIANT
from convmixer_tasks.workdir import WorkLayout

if TYPE_CHECKING:
    from convmixer_tasks.metrics.schema import MetricsRow

log = logging.getLogger(__name__)


def run_chain(
    work_dir: str | os.PathLike = "work",
    image_dir: str | os.PathLike | None = None,
    label_file: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    variant: str | None = None,
    batch_sizes: Sequence[int] = (4,),
    backend: str = "onnxruntime",
    input_dtype: str = "float32",
    limit: int | None = None,
    loop: int = 20,
    backend_settings: dict[str, Any] | None = None,
    metrics_url: str | None = None,
    remeasure: int = DEFAULT_REMEASURE,
    max_cv_pct: float = DEFAULT_MAX_CV_PCT,
    precision_modes: Sequence[str] | None = None,
    gelu_implmode: str | None = DEFAULT_GELU_IMPLMODE,
    confirm: int = DEFAULT_CONFIRM,
) -> dict[str, Any]:
    """Preprocess → export + parity → compile → infer → benchmark → eval, per batch size × precision mode
    (``precision_modes``: ATC modes, Ascend only; None = ATC's default); returns the metrics rows.

    Without ``metrics_url`` the rows are what the DAG's record step builds, status ``pending``: nothing is recorded
    and no row claims a verdict. With it, the rows are recorded and gated exactly as the DAG's record and gate tasks
    do (same steps, the DAG's default gate params); the summary carries the verdicts, and a regression is raised
    (``RegressionError``) after the summary is written and every verdict stored.

    With no dataset and no checkpoint it runs the demo: the generated demo set (made in ``work_dir`` on first use)
    and the committed demo model. Caches under ``work_dir/cache`` make a second run spend its time on inference.
    """
    layout = WorkLayout(Path(work_dir))
    params: dict[str, Any] = {
        "dataset_dir": str(image_dir or layout.demo_image_dir),
        "label_file": str(label_file or layout.demo_label_file),
        "checkpoint": str(checkpoint or DEMO_CHECKPOINT),
        "model_variant": variant or DEMO_VARIANT,
        "backend": backend,
        "input_dtype": input_dtype,
        "batch_sizes": list(batch_sizes),
        "image_limit": limit,
        "precision_modes": list(precision_modes) if precision_modes else None,
        "gelu_implmode": gelu_implmode,
    }
    started_at = datetime.now(UTC)
    run_id = f"cli__{started_at.strftime('%Y%m%dT%H%M%S.%fZ')}"
    settings = backend_settings or {}

    plans = steps.check_inputs(params, run_id, work_dir)
    if metrics_url is not None:  # before minutes of work: a bad URL fails now, and the benchmark can read history
        from convmixer_tasks.metrics import upgrade

        upgrade(metrics_url)
    prepared = [steps.prepare_shard(plan, 0, 1) for plan in steps.plans_to_prepare(plans)]
    log.info("preprocess: %s", ", ".join(f"bs{p.batch_size} {'cached' if p.cached else 'written'}" for p in prepared))
    exported = steps.export_cached(params["checkpoint"], params["model_variant"], work_dir)
    log.info(
        "export: %s (parity max |diff| %.2e)%s",
        exported.onnx_path,
        exported.parity_max_abs_diff,
        " cached" if exported.cached else "",
    )
    compiled = [steps.compile_artifact(plan, exported, work_dir, settings=settings) for plan in plans]
    inferred = [steps.infer_shard(entry, 0, prepared, work_dir, settings=settings) for entry in compiled]
    gate_params = {**gate_defaults(), "image_limit": limit, "throughput_max_cv_pct": max_cv_pct}
    benchmarks = [
        benchmark_step.benchmark_artifact(
            entry,
            loop,
            work_dir,
            settings=settings,
            remeasure=remeasure,
            max_cv_pct=max_cv_pct,
            # like the DAG: a figure suspect against the recorded history is confirmed before the verdict
            suspect=benchmark_step.suspect_check(metrics_url, params["model_variant"], entry, gate_params)
            if metrics_url
            else None,
            confirm=confirm,
        )
        for entry in compiled
    ]
    scores = [steps.evaluate_batch(plan, inferred, work_dir, exported) for plan in plans]
    facts = runfacts.run_facts(run_id, None, started_at, started_at, "cli")
    built = rows.rows_for_run(facts, plans, exported, compiled, benchmarks, scores, prepared, inferred)
    for row in built:
        log.info(
            "bs%d %s %s on %s: top-1 %.2f%%, top-5 %.2f%%, %.1f img/s pure inference (ais_bench-style), %s end to end",
            row.batch_size,
            row.backend,
            row.precision_mode,
            row.device,
            row.top1,
            row.top5,
            row.throughput,
            f"{row.e2e_throughput:.1f} img/s" if row.e2e_throughput else "unknown",
        )
    summary = {
        "run_id": run_id,
        "work_dir": str(layout.root),
        "rows": [to_jsonable(row) for row in built],
        "cached": {
            "preprocess": all(p.cached for p in prepared),
            "export": exported.cached,
            "compile": all(c.cached for c in compiled),
        },
    }
    regression: RegressionError | None = None
    if metrics_url is not None:
        recorded = steps.record_rows(metrics_url, built)
        try:
            summary["verdicts"] = [verdict.values() for verdict in steps.gate_rows(metrics_url, recorded, gate_params)]
        except RegressionError as exc:
            regression = exc
            summary["verdicts"] = [to_jsonable(decision) for decision in exc.decisions]
        summary["rows"] = _as_stored(metrics_url, built)  # with the gate's verdict, as metrics-show will show them
    atomic_write_json(layout.run_dir(run_id) / "summary.json", summary)
    if regression is not None:
        raise regression
    return summary


def _as_stored(url: str, built: list[MetricsRow]) -> list[dict[str, Any]]:
    from convmixer_tasks.metrics import get_run
    from convmixer_tasks.metrics.schema import KEY_COLUMNS

    return [get_run(url, *(getattr(row, key) for key in KEY_COLUMNS)) or to_jsonable(row) for row in built]


def gate_defaults() -> dict[str, Any]:
    """The gate params at the DAG's defaults (params.py takes them from the same gate constants)."""
    from convmixer_tasks.gate import DEFAULT_HISTORY, DEFAULT_THROUGHPUT_DROP_PCT, DEFAULT_TOP1_TOLERANCE

    return {
        "top1_tolerance": DEFAULT_TOP1_TOLERANCE,
        "throughput_tolerance_pct": DEFAULT_THROUGHPUT_DROP_PCT,
        "throughput_history": DEFAULT_HISTORY,
    }
