"""The validation run's steps, one function per Airflow task: check inputs and plan, preprocess a shard, export,
compile, infer a shard, benchmark, evaluate, record, gate.

Each takes and returns the typed records of ``records`` (the DAG turns them into JSON at the task edge), reads and
writes files under the work folder (``workdir``), and imports numpy/torch/onnx only inside the function that needs
them, so importing this module stays cheap. No Airflow here: the DAG passes in what it reads from Airflow.
``local_run`` calls the same functions in one process.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.base import Artifact, CompileOptions, get_backend
from convmixer_tasks.cache import ContentCache
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.energy import DEFAULT_PERIOD_S as DEFAULT_POWER_PERIOD_S
from convmixer_tasks.errors import ConfigError, MetricsError, RegressionError
from convmixer_tasks.fileio import atomic_write_json, read_json, sha256_file, to_jsonable
from convmixer_tasks.models.registry import get_card
from convmixer_tasks.precision import (
    DEFAULT_GELU_IMPLMODE,
    effective_precision,
    gelu_compile_options,
    precision_modes_from_params,
)
from convmixer_tasks.prepfolder import host_preprocess
from convmixer_tasks.quiet import DEFAULT_IDLE_WAIT_S
from convmixer_tasks.records import (
    BenchSummary,
    CompiledModel,
    ExportedModel,
    PrepShard,
    RecordedRow,
    RunFacts,
    RunPlan,
    Scores,
    ShardOutputs,
    Verdict,
)
from convmixer_tasks.workdir import WorkLayout

# The ONNX step's fixed options (part of its cache key). Opset 17: the exporter default that ATC parses.
ONNX_OPSET = 17
ONNX_DYNAMO = False
PARITY_TOLERANCE = 1e-4
BENCH_WARMUP = 5

log = logging.getLogger(__name__)
RANDOM_WEIGHTS = "random-weights-seed-0"  # what a run without a checkpoint records as the checkpoint's hash


# --- params -----------------------------------------------------------------------------------------------------


def batch_sizes_from_params(params: Mapping[str, Any]) -> list[int]:
    """``batch_size`` (a manual trigger's single size) overrides ``batch_sizes``; order kept, duplicates dropped."""
    single = params.get("batch_size")
    sizes = [single] if single is not None else list(params.get("batch_sizes") or [])
    if not sizes:
        raise ConfigError("no batch size given; set param batch_sizes (e.g. [1, 16]) or batch_size (CLI: --batch-size)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size not in BATCH_SIZE_CHOICES:
            raise ConfigError(
                f"batch size {size!r} is not one of {list(BATCH_SIZE_CHOICES)}; fix param batch_sizes "
                "(CLI: --batch-size)"
            )
    return list(dict.fromkeys(sizes))


def check_param_names(params: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse conf keys the DAG does not declare: Airflow merges them into the params unchecked, so a misspelt key
    (``batch_szie``) would otherwise run silently with the default it meant to change."""
    known = set(known)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"unknown param(s) {', '.join(unknown)} in the run's conf; use only "
            f"{', '.join(sorted(known))} (check the spelling) and trigger again"
        )


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()


def run_facts(
    run_id: str,
    dag_id: str | None,
    logical_date: datetime | str | None,
    started_at: datetime | str | None,
    trigger: str | None = None,
) -> RunFacts:
    """What the metrics rows say about the Airflow run (dates as ISO strings: they travel through XCom)."""
    return RunFacts(
        run_id=run_id, dag_id=dag_id, logical_date=_iso(logical_date), started_at=_iso(started_at), trigger=trigger
    )


def log_task_failure(context: Mapping[str, Any]) -> None:
    """Task failure hook: one log line naming the run, task and error (add notifiers beside it in the DAG)."""
    ti = context.get("ti")
    log.error(
        "convmixer_validation run %s: task %s failed: %s",
        context.get("run_id"),
        getattr(ti, "task_id", "?"),
        context.get("exception"),
    )


def run_facts_of(dag_run: Any) -> RunFacts:
    """``run_facts`` of an Airflow DagRun (manual runs in Airflow 3 may have no logical date: use run_after)."""
    run_type = getattr(dag_run, "run_type", None)  # an enum in Airflow; its value is what the row records
    return run_facts(
        dag_run.run_id,
        dag_run.dag_id,
        dag_run.logical_date or dag_run.run_after,
        dag_run.start_date,
        getattr(run_type, "value", run_type),
    )


# --- check inputs -----------------------------------------------------------------------------------------------


def ensure_demo_dataset(layout: WorkLayout) -> bool:
    """Generate the demo set into the work folder unless a complete one is there; True when it was generated.

    An existing set of any size is left untouched: regenerating rewrites every JPEG, which would change the
    dataset fingerprint and throw away the prep cache.
    """
    from convmixer_tasks.demo import MARKER_NAME, make_demo_dataset

    if (layout.demo_root / MARKER_NAME).is_file() and layout.demo_label_file.is_file():
        return False
    make_demo_dataset(layout.demo_root)
    return True


def check_inputs(
    params: Mapping[str, Any], run_id: str, work_dir: str | os.PathLike, known_params: Iterable[str] | None = None
) -> list[RunPlan]:
    """Validate the run's inputs once, at the edge, and plan it: one ``RunPlan`` per batch size × precision mode
    (batch sizes outer; ``plans_to_prepare`` picks one per prep folder).

    Fails fast (before any expensive step) on a param outside ``known_params`` (when given), a missing checkpoint,
    a malformed dataset or label file. When the dataset params point at the default demo location and nothing is
    there yet, the demo set is generated.
    """
    from convmixer_tasks.dataset import load_dataset
    from convmixer_tasks.fidelity import subset_positions
    from convmixer_tasks.params import evidence_options
    from convmixer_tasks.preprocess import transform_params

    if known_params is not None:
        check_param_names(params, known_params)
    # variant / backend / dtype choices are the Param schema's job (and the library's, which names the fix)
    variant, backend, dtype = params["model_variant"], params["backend"], params["input_dtype"]
    precision_modes = precision_modes_from_params(params)  # cheap checks first: before any file is read or made
    gelu_implmode = params.get("gelu_implmode", DEFAULT_GELU_IMPLMODE)
    gelu_compile_options(backend, gelu_implmode)  # an unknown value, or one set for ONNX Runtime, fails here
    layout = WorkLayout(Path(work_dir))
    card = get_card(variant)
    checkpoint = Path(params["checkpoint"]) if params.get("checkpoint") else None  # None: random weights
    if checkpoint is None:
        log.warning("model %s: no checkpoint, seeded random weights: top-1 at chance (0.1 %%) expected", card.name)
    elif not checkpoint.is_file():
        raise ConfigError(
            f"checkpoint {checkpoint} does not exist; set param checkpoint to the .pth.tar file "
            "(or [convmixer] checkpoint in airflow.cfg; CLI: --source)"
        )
    else:
        from convmixer_tasks.model import check_checkpoint

        # Format and key layout against the variant now, not after minutes of preprocessing when export reads it.
        check_checkpoint(checkpoint, params["model_variant"])
    image_dir, label_file = Path(params["dataset_dir"]), Path(params["label_file"])
    if image_dir == layout.demo_image_dir and label_file == layout.demo_label_file:
        ensure_demo_dataset(layout)
    fidelity_subset = evidence_options(params)["fidelity_subset"]
    limit = params.get("image_limit")
    dataset = load_dataset(image_dir, label_file, limit=limit)
    subset_positions(len(dataset.images), fidelity_subset)  # a subset larger than the set fails here, not later
    fingerprint = dataset.fingerprint()
    transform = transform_params(dtype, host_preprocess(card, dtype))
    plans: list[RunPlan] = []
    for batch_size in batch_sizes_from_params(params):
        prep_key = layout.prep_cache.key(
            {"dataset": fingerprint, "transform": transform, "batch_size": batch_size, "dtype": dtype, "limit": limit}
        )
        plans.extend(
            RunPlan(
                run_id=run_id,
                batch_size=batch_size,
                backend=backend,
                input_dtype=dtype,
                model_variant=variant,
                checkpoint=str(checkpoint or ""),
                dataset_dir=str(image_dir),
                label_file=str(label_file),
                image_limit=limit,
                image_count=len(dataset.images),
                dataset_fingerprint=fingerprint,
                prep_dir=str(layout.prep_cache.entry(prep_key)),
                prep_key=prep_key,
                run_dir=str(layout.run_dir(run_id)),
                precision_mode=precision_mode,
                fidelity_subset=fidelity_subset,
                gelu_implmode=gelu_implmode,
            )
            for precision_mode in precision_modes
        )
    return plans


def plans_to_prepare(plans: Iterable[RunPlan]) -> list[RunPlan]:
    """One plan per prep folder: the precision modes of a batch size share its preprocessed batches, which must be
    written once, not by one task per mode at the same time."""
    first_of: dict[str, RunPlan] = {}
    for plan in plans:
        first_of.setdefault(plan.prep_key, plan)
    return list(first_of.values())


# --- preprocess (one shard of one batch size) -------------------------------------------------------------------


def prepare_shard(plan: RunPlan, shard: int, shards: int, workers: int | None = None) -> PrepShard:
    """Preprocess shard ``shard`` of ``shards`` into the batch size's content-keyed prep folder.

    A finished prep folder is reused untouched (``cached=True``): its name is its content key, so no pixel is read
    and no file is rewritten. An unfinished one is completed by ``preprocess``, which skips the files already
    written with the same inputs.
    """
    from convmixer_tasks.prepfolder import read_manifest, shard_range

    def finished() -> Any:
        manifest = read_manifest(plan.prep_dir)  # checks every listed file's size and layout marker
        return manifest if manifest.dataset_fingerprint == plan.dataset_fingerprint else None

    manifest = ContentCache.lookup(finished)
    written = 0
    if manifest is None:
        from convmixer_tasks.preprocess import preprocess

        result = preprocess(
            plan.dataset_dir,
            plan.prep_dir,
            plan.batch_size,
            dtype=plan.input_dtype,
            workers=workers,
            shard=(shard, shards),
            label_file=plan.label_file,
            limit=plan.image_limit,
            model=plan.model_variant,
        )
        written = result.files_written
        # Other shards may still be writing: read the plan, not the files (infer checks them all later).
        manifest = read_manifest(plan.prep_dir, check_files=False)
    files = tuple(manifest.files[position].name for position in shard_range(len(manifest.files), (shard, shards)))
    return PrepShard(
        batch_size=plan.batch_size,
        shard=shard,
        shards=shards,
        prep_dir=plan.prep_dir,
        files=files,
        files_written=written,
        cached=written == 0,
    )


# --- export + parity (content-keyed ONNX cache) -----------------------------------------------------------------


def export_cached(checkpoint: str | os.PathLike | None, variant: str, work_dir: str | os.PathLike) -> ExportedModel:
    """The validated ONNX for (checkpoint content, variant, opset, exporter), exported only on a cache miss; no
    checkpoint (None or "") exports the card's model with seeded random weights.

    An entry is complete when its ONNX (which ``export_and_validate`` moves in last, after its parity report) has
    the hash that report records: a report alone (a killed export), a truncated or a replaced file is rebuilt.
    """
    checkpoint_sha256 = sha256_file(checkpoint) if checkpoint else RANDOM_WEIGHTS
    cache = WorkLayout(Path(work_dir)).onnx_cache
    key = cache.key(
        {
            "checkpoint_sha256": checkpoint_sha256,
            "variant": variant,
            "opset": ONNX_OPSET,
            "dynamo": ONNX_DYNAMO,
            "tolerance": PARITY_TOLERANCE,
        }
    )
    onnx_path = cache.entry(key) / "model.onnx"
    report_path = onnx_path.with_name(f"{onnx_path.stem}.parity.json")

    def validated() -> dict[str, Any] | None:
        report = read_json(report_path)
        passed = report["parity"]["passed"] and report["onnx_sha256"] == sha256_file(onnx_path)
        return report if passed else None

    report = cache.lookup(validated)
    cached = report is not None
    if report is None:
        from convmixer_tasks.export import export_and_validate

        report = to_jsonable(
            export_and_validate(
                checkpoint or None,
                onnx_path,
                variant=variant,
                opset=ONNX_OPSET,
                dynamo=ONNX_DYNAMO,
                tolerance=PARITY_TOLERANCE,
            )
        )
    return ExportedModel(
        onnx_path=str(onnx_path),
        onnx_sha256=report["onnx_sha256"],
        checkpoint_sha256=checkpoint_sha256,
        variant=variant,
        opset=ONNX_OPSET,
        parity_max_abs_diff=report["parity"]["max_abs_diff"],
        cache_key=key,
        cached=cached,
    )


# --- the NPU steps: compile, infer, benchmark -------------------------------------------------------------------


def compile_artifact(
    plan: RunPlan,
    exported: ExportedModel,
    work_dir: str | os.PathLike,
    soc_version: str = "auto",
    settings: Mapping[str, Any] | None = None,
) -> CompiledModel:
    """Compile the ONNX for one batch size × precision mode (cached by ONNX hash + options — precision and GELU
    implmode included — + runtime) and describe the device."""
    backend = get_backend(plan.backend, **(settings or {}))
    info = backend.describe()
    options = CompileOptions(
        model=plan.model_variant,
        input_dtype=plan.input_dtype,
        soc_version=soc_version,
        precision_mode=plan.precision_mode,
        **gelu_compile_options(plan.backend, plan.gelu_implmode),
    )
    artifact = backend.compile(
        exported.onnx_path, plan.batch_size, WorkLayout(Path(work_dir)).artifact_cache(plan.backend).root, options
    )
    return CompiledModel(
        run_id=plan.run_id,
        batch_size=plan.batch_size,
        backend=plan.backend,
        precision=plan.precision,
        artifact=artifact,
        device=info.device,
        toolkit_version=info.toolkit_version,
        cached=bool(artifact.cached),
    )


def _prep_shard_of(prepared: Iterable[PrepShard], batch_size: int, shard: int) -> PrepShard:
    for entry in prepared:
        if entry.batch_size == batch_size and entry.shard == shard:
            return entry
    raise ConfigError(f"no preprocess result for batch size {batch_size} shard {shard}; re-run the preprocess step")


def infer_shard(
    compiled: CompiledModel,
    shard: int,
    prepared: Iterable[PrepShard],
    work_dir: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
) -> ShardOutputs:
    """Run one shard of the prep files through the artifact into this run's shard output folder.

    The folder is emptied first, so a retried attempt never mixes its outputs with a failed attempt's.
    """
    batch_size = compiled.batch_size
    prep = _prep_shard_of(prepared, batch_size, shard)
    output_dir = WorkLayout(Path(work_dir)).shard_output_dir(
        compiled.run_id, batch_size, shard, precision=compiled.precision
    )
    shutil.rmtree(output_dir.parent, ignore_errors=True)
    file_count, summary_path = 0, None  # more shards than files: nothing to run
    if prep.files:
        backend = get_backend(compiled.backend, **(settings or {}))
        inferred = backend.infer(_artifact(compiled), prep.prep_dir, output_dir, files=list(prep.files))
        output_dir, file_count, summary_path = inferred.output_dir, inferred.file_count, str(inferred.summary_path)
    return ShardOutputs(
        batch_size=batch_size,
        precision=compiled.precision,
        shard=shard,
        prep_dir=prep.prep_dir,
        files=prep.files,
        output_dir=str(output_dir),
        file_count=file_count,
        summary_path=summary_path,
    )


def _artifact(compiled: CompiledModel) -> Artifact:
    """The record's artifact, as a fresh object (backends may set fields on it)."""
    return Artifact.from_dict(to_jsonable(compiled.artifact))


def benchmark_artifact(
    compiled: CompiledModel,
    loop: int,
    work_dir: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    *,
    remeasure: int = 0,
    max_cv_pct: float | None = None,
    idle_wait_s: float = DEFAULT_IDLE_WAIT_S,
    power_period_s: float = DEFAULT_POWER_PERIOD_S,
    suspect: Callable[[dict[str, Any]], float | None] | None = None,
    confirm: int = 0,
) -> BenchSummary:
    """Pure-inference throughput of one artifact, re-measured up to ``remeasure`` times while the per-loop CV is
    above ``max_cv_pct``; the least noisy measurement is kept. Every measurement's samples go to a file, the kept
    one's (packed) travel with the record. Each measurement runs in a ``quiet.BenchmarkWindow`` (busy device waited
    for up to ``idle_wait_s``, host load and steal, power sampled every ``power_period_s``); the kept one's window
    goes on the row. When ``suspect`` (``suspect_check``) puts the kept figure below its same-fingerprint history's
    suspect line, ``confirm`` more such measurements are taken and their figures kept in the fingerprint's
    measurement record for the verdict."""
    from convmixer_tasks import fingerprint, quiet, throughput

    backend = get_backend(compiled.backend, **(settings or {}))
    artifact = _artifact(compiled)
    env = fingerprint.build(
        compiled.backend,
        compiled.device,
        compiled.toolkit_version,
        compiled.artifact.options,
        compiled.artifact.meta,
        backend.environment(),
    )
    windows: dict[int, quiet.BenchmarkWindow] = {}

    def measure() -> Any:
        with quiet.BenchmarkWindow(backend, idle_wait_s, power_period_s) as window:
            result = backend.benchmark(artifact, loop=loop, warmup=BENCH_WARMUP)
        windows[id(result)] = window
        return result

    def measure_quietly() -> throughput.Tries:
        return throughput.measure_until_quiet(measure, compiled.batch_size, remeasure, max_cv_pct)

    tries = measure_quietly()
    confirmed = throughput.confirm_if_suspect(
        measure_quietly, tries.chosen.throughput, suspect(env) if suspect else None, confirm
    )
    if confirmed:
        env[fingerprint.CONFIRMATIONS] = [one.chosen.throughput for one in confirmed]
    bench, stats = tries.chosen, tries.stats
    window = windows[id(bench)]
    env.update(window.facts())
    power = window.energy(bench.throughput)
    batch_dir = WorkLayout(Path(work_dir)).batch_dir(compiled.run_id, compiled.batch_size, precision=compiled.precision)
    bench_json = batch_dir / "benchmark.json"
    taken = [*tries.all, *(one for confirmation in confirmed for one in confirmation.all)]
    atomic_write_json(bench_json, {**to_jsonable(bench), "measurements": [to_jsonable(one) for one in taken]})
    return BenchSummary(
        batch_size=bench.batch_size,
        backend=bench.backend,
        precision=compiled.precision,
        loop=bench.loop,
        warmup=bench.warmup,
        throughput=bench.throughput,
        latency_mean_ms=bench.latency_mean_ms,
        latency_p50_ms=bench.latency_p50_ms,
        latency_p99_ms=bench.latency_p99_ms,
        formula=bench.formula,
        bench_json=str(bench_json),
        samples_ms=throughput.pack_samples(bench.samples) if stats else None,
        sample_count=stats.count if stats else None,
        latency_cv=stats.cv if stats else None,
        latency_iqr_ms=stats.iqr_ms if stats else None,
        measurements=len(taken),
        fingerprint=env,
        energy_j_per_image=power.j_per_image,
        throughput_per_watt=power.per_watt,
        energy=power.record,
    )


# --- evaluate ---------------------------------------------------------------------------------------------------


def merge_shard_outputs(shard_dirs: Iterable[str], target: Path) -> Path:
    """Hard-link every shard's output files into one folder (what ``evaluate`` reads); copies across filesystems."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for shard_dir in shard_dirs:
        for entry in os.scandir(shard_dir):
            if entry.is_file():
                try:
                    os.link(entry.path, target / entry.name)
                except OSError:
                    shutil.copy2(entry.path, target / entry.name)
    return target


def evaluate_batch(
    plan: RunPlan,
    inferred: Iterable[ShardOutputs],
    work_dir: str | os.PathLike,
    exported: ExportedModel | None = None,
    fidelity_thresholds: Mapping[str, float] | None = None,
) -> Scores:
    """Top-1/top-5 of one batch size × precision from its merged shard outputs, scored through the prep manifest,
    with the per-image predictions written beside ``result.json``; given ``exported``, also the artifact's fidelity
    to that ONNX on the plan's fixed subset (``evidence_steps.measure_fidelity``)."""
    from convmixer_tasks.evaluate import evaluate_with_evidence
    from convmixer_tasks.evidence import PREDICTIONS_FILE

    layout = WorkLayout(Path(work_dir))
    shard_dirs = [
        entry.output_dir
        for entry in inferred
        if (entry.batch_size, entry.precision) == (plan.batch_size, plan.precision) and entry.file_count
    ]
    merged = merge_shard_outputs(
        shard_dirs, layout.merged_output_dir(plan.run_id, plan.batch_size, precision=plan.precision)
    )
    batch_dir = layout.batch_dir(plan.run_id, plan.batch_size, precision=plan.precision)
    scored = evaluate_with_evidence(
        merged,
        plan.label_file,
        prep_dir=plan.prep_dir,
        result_json=batch_dir / "result.json",
        predictions_file=batch_dir / PREDICTIONS_FILE,
        num_classes=get_card(plan.model_variant).io.num_classes,
    )
    fidelity_json = None
    if exported is not None:
        from convmixer_tasks.evidence_steps import measure_fidelity

        fidelity_json = str(measure_fidelity(plan, exported, scored, layout, fidelity_thresholds or {}))
    result = scored.result
    return Scores(
        batch_size=plan.batch_size,
        precision=plan.precision,
        top1=result.top1,
        top5=result.top5,
        image_count=result.image_count,
        result_json=str(result.result_json),
        predictions=str(batch_dir / PREDICTIONS_FILE),
        fidelity_json=fidelity_json,
    )


# --- metrics + gate ---------------------------------------------------------------------------------------------


def build_row(
    run: RunFacts, plan: RunPlan, exported: ExportedModel, compiled: CompiledModel, bench: BenchSummary, scores: Scores
) -> dict[str, Any]:
    """One batch size × precision's metrics row, status ``pending``: evaluated but not gated, so it stays out of the
    gate's history (``ok`` rows only) until ``gate_rows`` stores ok/regressed on it."""
    parts = {
        name: (part.batch_size, part.precision)
        for name, part in (("compiled", compiled), ("benchmark", bench), ("scores", scores))
    }
    if set(parts.values()) != {(plan.batch_size, plan.precision)}:
        raise ConfigError(
            f"results of different batch sizes or precision modes were joined for the bs{plan.batch_size} "
            f"{plan.precision} row ({parts}); clear the run's tasks and run it again"
        )
    return {
        **run.values(),
        "finished_at": datetime.now(UTC).isoformat(),
        "model_variant": plan.model_variant,
        "checkpoint_sha256": exported.checkpoint_sha256,
        "onnx_sha256": exported.onnx_sha256,
        "artifact_sha256": compiled.artifact.sha256,
        "backend": plan.backend,
        "device": compiled.device,
        "toolkit_version": compiled.toolkit_version,
        "batch_size": plan.batch_size,
        "input_dtype": plan.input_dtype,
        "image_count": scores.image_count,
        "top1": scores.top1,
        "top5": scores.top5,
        "throughput": bench.throughput,
        "latency_mean_ms": bench.latency_mean_ms,
        "latency_p50_ms": bench.latency_p50_ms,
        "latency_p99_ms": bench.latency_p99_ms,
        "parity_max_abs_diff": exported.parity_max_abs_diff,
        "status": "pending",
        "precision_mode": plan.precision,
        **evidence_fields(scores),
        **_throughput_evidence(bench),
    }


def _throughput_evidence(bench: BenchSummary) -> dict[str, Any]:
    from convmixer_tasks import fingerprint

    return {
        "samples_ms": bench.samples_ms,
        "sample_count": bench.sample_count,
        "warmup_count": bench.warmup,
        "latency_cv": bench.latency_cv,
        "latency_iqr_ms": bench.latency_iqr_ms,
        "measurements": bench.measurements,
        "fingerprint": bench.fingerprint,
        "fingerprint_key": fingerprint.key(bench.fingerprint),
        "energy_j_per_image": bench.energy_j_per_image,
        "throughput_per_watt": bench.throughput_per_watt,
        "energy": bench.energy,
    }


def evidence_fields(scores: Scores) -> dict[str, Any]:
    """The row's fidelity columns and first evidence (the gate adds the pairings)."""
    from convmixer_tasks.evidence_steps import row_evidence

    return row_evidence(scores)


def record_rows(
    url: str, rows: Iterable[Mapping[str, Any]], *, keep_gated: bool = False, scores: Iterable[Scores] = ()
) -> list[RecordedRow]:
    """Write the rows in one transaction (upsert by run_id + batch size + backend + precision mode, so a retried
    task leaves one row each; a row the store refuses leaves none of them behind). ``keep_gated`` leaves a row that
    already has the gate's verdict (ok/regressed) as it is: the failure path passes it with ``failed_rows``.
    ``scores``: their per-image predictions are stored beside the rows (still ``pending``: the gate pairs them)."""
    from convmixer_tasks.metrics import record_runs, upgrade

    rows = list(rows)
    upgrade(url)
    ids = record_runs(url, rows, keep_gated=keep_gated)
    recorded = [
        RecordedRow(
            id=row_id,
            run_id=row["run_id"],
            batch_size=row["batch_size"],
            backend=row["backend"],
            precision=row.get("precision_mode") or effective_precision(row["backend"], None),
        )
        for row_id, row in zip(ids, rows, strict=False)
    ]
    scores = list(scores)
    if scores:
        from convmixer_tasks.evidence_steps import record_predictions

        sizes = record_predictions(url, recorded, scores)
        log.info("stored per-image predictions (compressed bytes per batch size × precision): %s", sizes)
    return recorded


def failed_rows(run: RunFacts, params: Mapping[str, Any], reason: str) -> list[dict[str, Any]]:
    """``failed`` rows (no accuracy, no throughput) for a run that broke before evaluation, one per batch size ×
    precision mode.

    Built from whatever can be read of ``params``: a conf that ``check_inputs`` refused (``{"batch_size": 4.0}``,
    an unknown variant) is exactly the run that must still show up as failed, so nothing here may raise on it.

    Record them with ``record_rows(..., keep_gated=True)``: a rerun of a cleared task that fails must not replace a
    verdict an earlier attempt stored (a ``pending`` row from that attempt does become ``failed``)."""
    finished_at = datetime.now(UTC).isoformat()
    sizes, unreadable = _readable_batch_sizes(params)
    reasons = [reason] + ([f"recorded under batch size {sizes[0]}: {unreadable}"] if unreadable else [])
    backend = _readable_text(params.get("backend"), 32)
    try:
        precisions = [effective_precision(backend, mode) for mode in precision_modes_from_params(params)]
    except ConfigError as exc:
        precisions = [effective_precision(backend, None)]
        reasons.append(f"recorded under precision {precisions[0]}: {exc}")
    dtype = params.get("input_dtype")
    return [
        {
            **run.values(),
            "finished_at": finished_at,
            "model_variant": _readable_text(params.get("model_variant"), 100),
            "backend": backend,
            "batch_size": batch_size,
            "precision_mode": precision,
            "input_dtype": dtype if isinstance(dtype, str) and len(dtype) <= 16 else None,
            "status": "failed",
            "gate_reasons": reasons,
        }
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
    try:
        return batch_sizes_from_params(params), None
    except ConfigError:
        pass
    single = params.get("batch_size")
    asked = [single] if single is not None else params.get("batch_sizes")
    sizes = []
    for size in asked if isinstance(asked, (list, tuple)) else [asked]:
        if isinstance(size, (int, float)) and not isinstance(size, bool) and float(size).is_integer() and size >= 1:
            sizes.append(int(size))
    if sizes:
        return list(dict.fromkeys(sizes)), None
    return [BATCH_SIZE_CHOICES[0]], f"the conf's batch size {asked!r} is unreadable"


def gate_rows(url: str, recorded: Iterable[RecordedRow], params: Mapping[str, Any]) -> list[Verdict]:
    """Apply the regression gate to every recorded row (``pending``, or already gated on a retry), then fail once
    if any regressed.

    ``apply_gate`` stores ``regressed`` on the row before raising, so every batch size gets its verdict stored
    even when an earlier one regressed; the combined error names them all (each message names its batch size)
    and carries their ``GateDecision``s as ``.decisions``.
    """
    from convmixer_tasks.gate import apply_gate

    options = gate_options(params)
    verdicts, regressions = [], []
    for row in recorded:
        try:
            decision = apply_gate(url, row.run_id, row.batch_size, row.backend, precision_mode=row.precision, **options)
            verdicts.append(
                Verdict(
                    batch_size=row.batch_size,
                    precision=row.precision,
                    status=decision.status,
                    reasons=tuple(decision.reasons),
                    baseline_top1=decision.baseline_top1,
                    baseline_throughput=decision.baseline_throughput,
                )
            )
        except RegressionError as exc:
            regressions.append(exc)
    if regressions:
        raise RegressionError(
            "; ".join(str(exc) for exc in regressions), decisions=[exc.decision for exc in regressions]
        )
    return verdicts


def benchmark_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG params that tune ``benchmark_artifact``: loops, re-measurements and the CV that triggers them, and
    the confirmations a suspect figure takes."""
    from convmixer_tasks.throughput import DEFAULT_CONFIRM

    return {
        "loop": params["benchmark_loop"],
        "remeasure": params["benchmark_remeasure"],
        "max_cv_pct": params["throughput_max_cv_pct"],
        "idle_wait_s": params.get("benchmark_idle_wait_s", DEFAULT_IDLE_WAIT_S),
        "confirm": params.get("benchmark_confirm", DEFAULT_CONFIRM),
    }


def suspect_check(
    url: str, model_variant: str, compiled: CompiledModel, params: Mapping[str, Any]
) -> Callable[[dict[str, Any]], float | None]:
    """For ``benchmark_artifact``: the suspect line of the benchmark's same-fingerprint history in the metrics DB
    (read once the fingerprint is known). A DB that cannot be read only costs the confirmation: logged, no line."""
    from convmixer_tasks import fingerprint, throughput
    from convmixer_tasks.gate import THROUGHPUT_TOLERANCE_PARAM
    from convmixer_tasks.metrics.history import throughput_history

    def line(env: dict[str, Any]) -> float | None:
        row = {
            "model_variant": model_variant,
            "backend": compiled.backend,
            "device": compiled.device,
            "batch_size": compiled.batch_size,
            "precision_mode": compiled.precision,
            "run_id": compiled.run_id,
            "logical_date": datetime.now(UTC).isoformat(),
            "fingerprint_key": fingerprint.key(env),
        }
        try:
            found = throughput_history(url, row, params["throughput_history"])
        except MetricsError as exc:
            log.warning("no throughput history for the suspect check (%s); a low figure is not confirmed", exc)
            return None
        previous_check = found.previous["check"] if found.previous else None
        return throughput.suspect_line(found.figures, params[THROUGHPUT_TOLERANCE_PARAM], previous_check=previous_check)

    return line


def gate_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG params that tune ``gate.apply_gate``.

    A quick run on the first ``image_limit`` images cannot be held to a baseline measured on the whole set, so its
    accuracy is not gated (tolerance 100 points; the stored reasons say so); its throughput still is.
    """
    from convmixer_tasks.gate import THROUGHPUT_TOLERANCE_PARAM, TOP1_TOLERANCE_PARAM
    from convmixer_tasks.params import evidence_options

    top1_tolerance = params[TOP1_TOLERANCE_PARAM] if params.get("image_limit") is None else 100.0
    return {
        "top1_tolerance": top1_tolerance,
        "throughput_drop_pct": params[THROUGHPUT_TOLERANCE_PARAM],
        "history": params["throughput_history"],
        "significance": evidence_options(params)["top1_significance"],
        **({"max_cv_pct": params["throughput_max_cv_pct"]} if "throughput_max_cv_pct" in params else {}),
        **({"runs": params["throughput_runs"]} if "throughput_runs" in params else {}),
    }


def rows_for_run(
    run: RunFacts,
    plans: Sequence[RunPlan],
    exported: ExportedModel,
    compiled: Iterable[CompiledModel],
    benchmarks: Iterable[BenchSummary],
    scores: Iterable[Scores],
) -> list[dict[str, Any]]:
    """One row per plan, each joined with its own batch size × precision's results."""
    compiled_by = {(entry.batch_size, entry.precision): entry for entry in compiled}
    bench_by = {(entry.batch_size, entry.precision): entry for entry in benchmarks}
    scores_by = {(entry.batch_size, entry.precision): entry for entry in scores}
    rows = []
    for plan in plans:
        key = (plan.batch_size, plan.precision)
        missing = [
            name
            for name, found in (("compile", compiled_by), ("benchmark", bench_by), ("evaluate", scores_by))
            if key not in found
        ]
        if missing:
            raise ConfigError(
                f"no {' / '.join(missing)} result for bs{plan.batch_size} {plan.precision}; clear the run's tasks "
                "and run it again"
            )
        rows.append(build_row(run, plan, exported, compiled_by[key], bench_by[key], scores_by[key]))
    return rows
