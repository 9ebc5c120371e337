"""The metrics rows a run writes, built from the steps' records: one per batch size × precision mode once it is
evaluated (``pending`` until the gate judges it), or ``failed`` ones for a run that broke before. The only place
that builds a ``MetricsRow``; the steps record what it returns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from convmixer_tasks.backends.precision import effective_precision, precision_modes_from_params
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.metrics.schema import MetricsRow
from convmixer_tasks.run.export_step import RANDOM_WEIGHTS
from convmixer_tasks.run.params import RunParams
from convmixer_tasks.run.records import (
    BenchSummary,
    CompiledModel,
    ExportedModel,
    PrepShard,
    RunFacts,
    RunPlan,
    Scores,
    ShardOutputs,
    TaskFailure,
    join_key,
)
from convmixer_tasks.status import STATUS_FAILED, STATUS_PENDING


def build_row(
    run: RunFacts,
    plan: RunPlan,
    exported: ExportedModel,
    compiled: CompiledModel,
    bench: BenchSummary,
    scores: Scores,
    stages: dict[str, float] | None = None,
) -> MetricsRow:
    """One model × batch size × precision's metrics row, status ``pending``: evaluated but not gated, so it stays
    out of the gate's history (``ok`` rows only) until ``gate_rows`` stores ok/regressed on it. ``stages``: its
    preprocess/infer/evaluate wall seconds (``stage_seconds``), which give its end-to-end rate."""
    parts = {name: join_key(part) for name, part in (("compiled", compiled), ("benchmark", bench), ("scores", scores))}
    if set(parts.values()) != {join_key(plan)} or exported.variant != plan.model_variant:
        raise ConfigError(
            f"results of different models, batch sizes or precision modes were joined for the "
            f"{plan.model_variant} bs{plan.batch_size} {plan.precision} row ({parts}, ONNX of {exported.variant}); "
            "clear the run's tasks and run it again"
        )
    return MetricsRow(
        **run.values(),
        finished_at=datetime.now(UTC).isoformat(),
        model_variant=plan.model_variant,
        # seeded random weights have no checkpoint to hash: the column holds SHA-256s only
        checkpoint_sha256=None if exported.checkpoint_sha256 == RANDOM_WEIGHTS else exported.checkpoint_sha256,
        checkpoint_path=plan.checkpoint,  # the triggering asset event's path when an event started the run
        onnx_sha256=exported.onnx_sha256,
        artifact_sha256=compiled.artifact.sha256,
        backend=plan.backend,
        device=compiled.device,
        toolkit_version=compiled.toolkit_version,
        batch_size=plan.batch_size,
        input_dtype=plan.input_dtype,
        image_count=scores.image_count,
        top1=scores.top1,
        top5=scores.top5,
        throughput=bench.throughput,
        latency_mean_ms=bench.latency_mean_ms,
        latency_p50_ms=bench.latency_p50_ms,
        latency_p99_ms=bench.latency_p99_ms,
        parity_max_abs_diff=exported.parity_max_abs_diff,
        status=STATUS_PENDING,
        precision_mode=plan.precision,
        **evidence_fields(scores),
        **_throughput_evidence(bench),
        stage_seconds=stages,
        e2e_throughput=scores.image_count / sum(stages.values()) if stages and sum(stages.values()) > 0 else None,
    )


def _throughput_evidence(bench: BenchSummary) -> dict[str, Any]:
    from convmixer_tasks.measure import fingerprint

    return {
        "samples_ms": bench.samples_ms,
        "sample_count": bench.sample_count,
        "warmup_count": bench.warmup,
        "latency_cv": bench.latency_cv,
        "latency_iqr_ms": bench.latency_iqr_ms,
        "throughput_robust": bench.throughput_robust,
        "latency_robust_cv": bench.latency_robust_cv,
        "measurements": bench.measurements,
        "fingerprint": bench.fingerprint,
        "fingerprint_key": fingerprint.key(bench.fingerprint),
        "energy_j_per_image": bench.energy_j_per_image,
        "throughput_per_watt": bench.throughput_per_watt,
        "energy": bench.energy,
    }


def evidence_fields(scores: Scores) -> dict[str, Any]:
    """The row's fidelity columns and first evidence (the gate adds the pairings)."""
    from convmixer_tasks.run.evidence_steps import row_evidence

    return row_evidence(scores)


def failed_rows(
    run: RunFacts,
    params: Mapping[str, Any],
    failures: Sequence[TaskFailure] = (),
    *,
    asked: Mapping[str, Any] | None = None,
    chips: Sequence[str] = (),
) -> list[MetricsRow]:
    """``failed`` rows (no accuracy, no throughput) for a run that broke before its metrics were recorded: one per
    model × batch size × precision mode (× chip, given the run's ``chips``), each leading with why
    (``failure_reason``): the failed task and its error for the rows it worked for, "not run: …" for the others.

    ``failures``: the failed tasks' records (``runfacts.log_task_failure`` keeps them). ``asked``: the run's own
    conf. A conf that ``RunParams`` refuses (``{"batch_szie": 4}``, ``{"batch_size": 4.0}``) is exactly the run that
    must still show up as failed, so nothing here may raise on it: such a conf is read leniently, its rows are the
    batch sizes it asked for (one row under a stated guess when it asked for none: ``params`` holds the DAG's
    defaults too, which the run never reached), and the refusal joins the reasons unless a task already said it.

    Record them with ``record_rows(..., keep_gated=True)``: a rerun of a cleared task that fails must not replace a
    verdict an earlier attempt stored (a ``pending`` row from that attempt does become ``failed``)."""
    try:
        parsed = RunParams.from_mapping(params)
    except ConfigError as exc:
        refusal = str(exc)
        said = any(" ".join(refusal.split()).startswith(failure.error.rstrip("…")) for failure in failures)
        notes = [] if said else [f"the run's params were refused: {refusal}"]
        return _rows_of_a_refused_conf(run, params, asked, failures, notes, chips)
    finished_at, named = datetime.now(UTC).isoformat(), dict(parsed.checkpoints)
    return [
        MetricsRow(
            **run.values(),
            finished_at=finished_at,
            model_variant=model,
            checkpoint_path=named.get(model, parsed.checkpoint if model == parsed.model_variant else None),
            backend=parsed.backend,
            batch_size=batch_size,
            precision_mode=precision,
            input_dtype=parsed.input_dtype,
            status=STATUS_FAILED,
            gate_reasons=[failure_reason(failures, run.run_id, model, batch_size, precision, chip)],
            chip=chip,
        )
        for model in parsed.models
        for batch_size in parsed.batch_sizes
        for precision in (effective_precision(parsed.backend, mode) for mode in parsed.precision_modes)
        for chip in chips or ("",)
    ]


def failure_reason(
    failures: Sequence[TaskFailure], run_id: str, model: str, batch_size: int, precision: str, chip: str
) -> str:
    """A failed row's deciding line: the first failed task that worked for the row ("<task> [<label>] failed:
    <error>"), else "not run: " and the run's first failure; how many other tasks failed, if any."""
    if not failures:
        return (
            f"the run failed before its metrics were recorded and no task kept its error (killed, or timed out); "
            f"see the task logs of DAG run {run_id}"
        )
    own = [failure for failure in failures if failure.concerns(model, batch_size, precision, chip)]
    line = own[0].cause() if own else f"not run: {failures[0].cause()}"
    others = len(failures) - 1
    return line + (f" (and {others} more failed task{'s' if others > 1 else ''})" if others else "")


def _rows_of_a_refused_conf(
    run: RunFacts,
    params: Mapping[str, Any],
    asked: Mapping[str, Any] | None,
    failures: Sequence[TaskFailure],
    notes: list[str],
    chips: Sequence[str],
) -> list[MetricsRow]:
    """What can be read of a refused conf, each guess stated in the reasons."""
    sizes, unreadable = _readable_batch_sizes(params, asked)
    notes += [f"recorded under batch size {sizes[0]}: {unreadable}"] if unreadable else []
    backend = _readable_text(params.get("backend"), 32)
    try:
        precisions = [effective_precision(backend, mode) for mode in precision_modes_from_params(params)]
    except ConfigError as exc:
        precisions = [effective_precision(backend, None)]
        notes.append(f"recorded under precision {precisions[0]}: {exc}")
    dtype = params.get("input_dtype")
    models = params.get("model_variants")
    models = models if isinstance(models, (list, tuple)) and models else [params.get("model_variant")]
    finished_at = datetime.now(UTC).isoformat()
    return [
        MetricsRow(
            **run.values(),
            finished_at=finished_at,
            model_variant=model,
            checkpoint_path=_readable_text(params.get("checkpoint"), 4096) or None,
            backend=backend,
            batch_size=batch_size,
            precision_mode=precision,
            input_dtype=dtype if isinstance(dtype, str) and len(dtype) <= 16 else None,
            status=STATUS_FAILED,
            gate_reasons=[failure_reason(failures, run.run_id, model, batch_size, precision, chip), *notes],
            chip=chip,
        )
        for model in dict.fromkeys(_readable_text(model, 100) for model in models)
        for batch_size in sizes
        for precision in precisions
        for chip in chips or ("",)
    ]


def _readable_text(value: Any, limit: int) -> str:
    """A conf string as the row can hold it; anything else as its repr (a failed row must name what was asked)."""
    text = value if isinstance(value, str) and value else repr(value)
    return text[:limit]


def _asked_batch_sizes(source: Mapping[str, Any]) -> Any:
    """What ``source`` names as its batch sizes (the single ``batch_size`` wins, as in ``RunParams``); None: none."""
    single = source.get("batch_size")
    return [single] if single is not None else source.get("batch_sizes")


def _readable_batch_sizes(params: Mapping[str, Any], asked: Mapping[str, Any] | None) -> tuple[list[int], str | None]:
    """The batch sizes a refused conf asked for, read leniently (``4.0`` → 4): (sizes, None) when they are readable,
    else ([one size], the guess) so the failed run still gets its row. ``asked`` is the run's own conf: the sizes
    in ``params`` it did not name are the DAG's defaults, which a refused run never reached."""
    wanted = _asked_batch_sizes(params if asked is None else asked)
    if wanted is None:  # the conf named no batch size: one row, under the DAG's first default
        defaults = _readable_sizes(_asked_batch_sizes(params)) or [BATCH_SIZE_CHOICES[0]]
        return [defaults[0]], "the refused conf named no batch size (the DAG's first default)"
    sizes = _readable_sizes(wanted)
    if sizes:
        return sizes, None
    return [BATCH_SIZE_CHOICES[0]], f"the conf's batch size {wanted!r} is unreadable"


def _readable_sizes(asked: Any) -> list[int]:
    sizes = []
    for size in asked if isinstance(asked, (list, tuple)) else [asked]:
        if isinstance(size, (int, float)) and not isinstance(size, bool) and float(size).is_integer() and size >= 1:
            sizes.append(int(size))
    return list(dict.fromkeys(sizes))


def rows_for_run(
    run: RunFacts,
    plans: Sequence[RunPlan],
    exported: Iterable[ExportedModel],
    compiled: Iterable[CompiledModel],
    benchmarks: Iterable[BenchSummary],
    scores: Iterable[Scores],
    prepared: Iterable[PrepShard] = (),
    inferred: Iterable[ShardOutputs] = (),
) -> list[MetricsRow]:
    """One row per plan, each joined with its own model × batch size × precision's results (and its model's ONNX);
    given the run's ``prepared`` and ``inferred`` shards, with its stage seconds and end-to-end rate."""
    prepared, inferred = list(prepared), list(inferred)
    onnx_of = {model.variant: model for model in exported}
    compiled_by = {join_key(entry): entry for entry in compiled}
    bench_by = {join_key(entry): entry for entry in benchmarks}
    scores_by = {join_key(entry): entry for entry in scores}
    rows = []
    for plan in plans:
        key = join_key(plan)
        missing = [
            name
            for name, found in (
                ("export", {join_key(plan): None} if plan.model_variant in onnx_of else {}),
                ("compile", compiled_by),
                ("benchmark", bench_by),
                ("evaluate", scores_by),
            )
            if key not in found
        ]
        if missing:
            raise ConfigError(
                f"no {' / '.join(missing)} result for {plan.model_variant} bs{plan.batch_size} {plan.precision}; "
                "clear the run's tasks and run it again"
            )
        stages = stage_seconds(plan, prepared, inferred, scores_by[key])
        rows.append(
            build_row(run, plan, onnx_of[plan.model_variant], compiled_by[key], bench_by[key], scores_by[key], stages)
        )
    return rows


def stage_seconds(
    plan: RunPlan, prepared: Sequence[PrepShard], inferred: Sequence[ShardOutputs], scores: Scores
) -> dict[str, float] | None:
    """The plan's preprocess, infer and evaluate wall seconds, each summed over its shards (the work, not the
    elapsed time of shards run side by side); None when a stage's seconds are unknown. A prep folder shared by
    precision modes counts in each of their rows; a cached one counts its check only."""
    preps = [shard.seconds for shard in prepared if shard.prep_dir == plan.prep_dir]
    infers = [shard.seconds for shard in inferred if join_key(shard) == join_key(plan)]
    if not preps or not infers or scores.seconds is None or None in preps or None in infers:
        return None
    return {
        "preprocess": round(sum(preps), 3),  # type: ignore[arg-type]  # None excluded above
        "infer": round(sum(infers), 3),  # type: ignore[arg-type]
        "evaluate": round(scores.seconds, 3),
    }
