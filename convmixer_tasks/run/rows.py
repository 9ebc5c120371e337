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


def failed_rows(run: RunFacts, params: Mapping[str, Any], reason: str) -> list[MetricsRow]:
    """``failed`` rows (no accuracy, no throughput) for a run that broke before evaluation, one per model × batch
    size × precision mode.

    A conf that ``RunParams`` refuses (``{"batch_size": 4.0}``, an unknown key) is exactly the run that must still
    show up as failed, so nothing here may raise on it: such a conf is read leniently, and the refusal joins the
    reasons.

    Record them with ``record_rows(..., keep_gated=True)``: a rerun of a cleared task that fails must not replace a
    verdict an earlier attempt stored (a ``pending`` row from that attempt does become ``failed``)."""
    try:
        parsed = RunParams.from_mapping(params)
    except ConfigError as exc:
        return _rows_of_a_refused_conf(run, params, [reason, f"the run's params were refused: {exc}"])
    finished_at, named = datetime.now(UTC).isoformat(), dict(parsed.checkpoints)
    return [
        MetricsRow(
            **run.values(),
            finished_at=finished_at,
            model_variant=model,
            checkpoint_path=named.get(model, parsed.checkpoint if model == parsed.model_variant else None),
            backend=parsed.backend,
            batch_size=batch_size,
            precision_mode=effective_precision(parsed.backend, mode),
            input_dtype=parsed.input_dtype,
            status=STATUS_FAILED,
            gate_reasons=[reason],
        )
        for model in parsed.models
        for batch_size in parsed.batch_sizes
        for mode in parsed.precision_modes
    ]


def _rows_of_a_refused_conf(run: RunFacts, params: Mapping[str, Any], reasons: list[str]) -> list[MetricsRow]:
    """What can be read of a refused conf, each guess stated in the reasons."""
    sizes, unreadable = _readable_batch_sizes(params)
    reasons += [f"recorded under batch size {sizes[0]}: {unreadable}"] if unreadable else []
    backend = _readable_text(params.get("backend"), 32)
    try:
        precisions = [effective_precision(backend, mode) for mode in precision_modes_from_params(params)]
    except ConfigError as exc:
        precisions = [effective_precision(backend, None)]
        reasons.append(f"recorded under precision {precisions[0]}: {exc}")
    dtype = params.get("input_dtype")
    models = params.get("model_variants")
    models = models if isinstance(models, (list, tuple)) and models else [params.get("model_variant")]
    finished_at = datetime.now(UTC).isoformat()
    return [
        MetricsRow(
            **run.values(),
            finished_at=finished_at,
            model_variant=_readable_text(model, 100),
            checkpoint_path=_readable_text(params.get("checkpoint"), 4096) or None,
            backend=backend,
            batch_size=batch_size,
            precision_mode=precision,
            input_dtype=dtype if isinstance(dtype, str) and len(dtype) <= 16 else None,
            status=STATUS_FAILED,
            gate_reasons=reasons,
        )
        for model in dict.fromkeys(_readable_text(model, 100) for model in models)
        for batch_size in sizes
        for precision in precisions
    ]


def _readable_text(value: Any, limit: int) -> str:
    """A conf string as the row can hold it; anything else as its repr (a failed row must name what was asked)."""
    text = value if isinstance(value, str) and value else repr(value)
    return text[:limit]


def _readable_batch_sizes(params: Mapping[str, Any]) -> tuple[list[int], str | None]:
    """The batch sizes a conf asked for, read leniently (``4.0`` → 4); (sizes, None) when they are readable,
    else ([the first supported size], what could not be read) so the failed run still gets its row."""
    single = params.get("batch_size")
    asked = [single] if single is not None else params.get("batch_sizes")
    sizes = []
    for size in asked if isinstance(asked, (list, tuple)) else [asked]:
        if isinstance(size, (int, float)) and not isinstance(size, bool) and float(size).is_integer() and size >= 1:
            sizes.append(int(size))
    if sizes:
        return list(dict.fromkeys(sizes)), None
    return [BATCH_SIZE_CHOICES[0]], f"the conf's batch size {asked!r} is unreadable"


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
