"""The validation run's steps, one function per Airflow task: check inputs and plan, preprocess a shard, compile,
infer a shard, evaluate, record, gate (the export is ``export_step``, the benchmark ``benchmark_step``, the rows
``rows``, the run's facts ``runfacts``, the options ``params``).

Each takes and returns the typed records of ``records`` (the DAG turns them into JSON at the task edge), reads and
writes files under the work folder (``workdir``), and imports numpy/torch/onnx only inside the function that needs
them. No Airflow here: the DAG passes in what it reads from Airflow. ``local_run`` calls the same functions in one
process.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmixer_tasks.backends.base import CompileOptions, get_backend
from convmixer_tasks.backends.precision import effective_precision, gelu_compile_options
from convmixer_tasks.cache import ContentCache
from convmixer_tasks.errors import ConfigError, RegressionError
from convmixer_tasks.models.registry import get_card
from convmixer_tasks.run.params import RANDOM_CHECKPOINT, RunParams
from convmixer_tasks.run.records import (
    CompiledModel,
    ExportedModel,
    PrepShard,
    RecordedRow,
    RunPlan,
    Scores,
    ShardOutputs,
    Verdict,
    join_key,
)
from convmixer_tasks.run.run_options import EvidenceOptions
from convmixer_tasks.run.workdir import WorkLayout
from convmixer_tasks.stages.prepfolder import host_preprocess

if TYPE_CHECKING:
    from convmixer_tasks.metrics.schema import MetricsRow

log = logging.getLogger(__name__)


# --- check inputs -----------------------------------------------------------------------------------------------


def ensure_demo_dataset(layout: WorkLayout) -> bool:
    """Generate the demo set into the work folder unless a complete one is there; True when it was generated.

    An existing set of any size is left untouched: regenerating rewrites every JPEG, which would change the
    dataset fingerprint and throw away the prep cache.
    """
    from convmixer_tasks.run.demo import MARKER_NAME, make_demo_dataset

    if (layout.demo_root / MARKER_NAME).is_file() and layout.demo_label_file.is_file():
        return False
    make_demo_dataset(layout.demo_root)
    return True


def check_inputs(run: RunParams, run_id: str, work_dir: str | os.PathLike) -> list[RunPlan]:
    """Check the run's inputs once, at the edge, and plan it: one ``RunPlan`` per model × batch size × precision
    mode (models outer, then batch sizes; ``plans_to_prepare`` picks one per prep folder, ``plans_to_export`` one
    per model).

    Fails fast (before any expensive step) on a missing checkpoint or one that does not fit its model, a malformed
    dataset or label file, a fidelity subset larger than the set. When the dataset params point at the default
    demo location and nothing is there yet, the demo set is generated.
    """
    from convmixer_tasks.evidence.fidelity import subset_positions
    from convmixer_tasks.models.builders.convmixer import check_checkpoint
    from convmixer_tasks.stages.dataset import load_dataset
    from convmixer_tasks.stages.preprocess import report_image_set

    layout = WorkLayout(Path(work_dir))
    checkpoints = {variant: run.checkpoint_of(variant) for variant in run.models}
    for variant, checkpoint in checkpoints.items():
        card = get_card(variant)
        if checkpoint == RANDOM_CHECKPOINT:
            log.warning("model %s: no checkpoint, seeded random weights: top-1 at chance (0.1 %%) expected", card.name)
            continue
        if not Path(checkpoint).is_file():
            raise ConfigError(
                f"checkpoint {checkpoint} of model {variant} does not exist; set param checkpoint (a zoo run: "
                f"checkpoints) to the .pth.tar file (or [convmixer] checkpoint in airflow.cfg; CLI: --source)"
            )
        # Format and key layout against the model now, not after minutes of preprocessing when export reads it.
        check_checkpoint(checkpoint, variant)
    image_dir, label_file = Path(run.dataset_dir), Path(run.label_file)
    if image_dir == layout.demo_image_dir and label_file == layout.demo_label_file:
        ensure_demo_dataset(layout)
    dataset = load_dataset(image_dir, label_file, limit=run.image_limit)
    report_image_set(dataset)  # once per run: the set's fact; each prep folder's manifest lists it too
    subset_positions(len(dataset.images), run.evidence.fidelity_subset)  # a subset larger than the set fails now
    fingerprint = dataset.fingerprint()
    return [
        _plan(run, run_id, layout, variant, checkpoints[variant], batch_size, mode, fingerprint, len(dataset.images))
        for variant in run.models
        for batch_size in run.batch_sizes
        for mode in run.precision_modes
    ]


def _plan(
    run: RunParams,
    run_id: str,
    layout: WorkLayout,
    variant: str,
    checkpoint: str,
    batch_size: int,
    precision_mode: str | None,
    fingerprint: str,
    image_count: int,
) -> RunPlan:
    """One model × batch size × mode. The prep folder is keyed by what produces the pixels (the model card's
    host preprocessing), not by the model: two models with the same input transform share their batches."""
    from convmixer_tasks.stages.transforms import transform_params

    dtype = run.input_dtype
    prep_key = layout.prep_cache.key(
        {
            "dataset": fingerprint,
            "transform": transform_params(dtype, host_preprocess(get_card(variant), dtype)),
            "batch_size": batch_size,
            "dtype": dtype,
            "limit": run.image_limit,
        }
    )
    return RunPlan(
        run_id=run_id,
        batch_size=batch_size,
        backend=run.backend,
        input_dtype=dtype,
        model_variant=variant,
        checkpoint="" if checkpoint == RANDOM_CHECKPOINT else checkpoint,  # "": seeded random weights
        dataset_dir=run.dataset_dir,
        label_file=run.label_file,
        image_limit=run.image_limit,
        image_count=image_count,
        dataset_fingerprint=fingerprint,
        prep_dir=str(layout.prep_cache.entry(prep_key)),
        prep_key=prep_key,
        run_dir=str(layout.run_dir(run_id)),
        precision_mode=precision_mode,
        fidelity_subset=run.evidence.fidelity_subset,
        gelu_implmode=run.gelu_implmode,
    )


def plans_to_prepare(plans: Iterable[RunPlan]) -> list[RunPlan]:
    """One plan per prep folder: the precision modes of a batch size share its preprocessed batches, which must be
    written once, not by one task per mode at the same time."""
    first_of: dict[str, RunPlan] = {}
    for plan in plans:
        first_of.setdefault(plan.prep_key, plan)
    return list(first_of.values())


def plans_to_export(plans: Iterable[RunPlan]) -> list[RunPlan]:
    """One plan per model: its batch sizes and precision modes compile the same ONNX."""
    first_of: dict[str, RunPlan] = {}
    for plan in plans:
        first_of.setdefault(plan.model_variant, plan)
    return list(first_of.values())


def exported_for(plan: RunPlan, exported: Iterable[ExportedModel]) -> ExportedModel:
    """The ONNX of the plan's model among a zoo run's exports."""
    for model in exported:
        if model.variant == plan.model_variant:
            return model
    raise ConfigError(f"no exported ONNX for model {plan.model_variant}; clear the run's export task and rerun it")


# --- preprocess (one shard of one batch size) -------------------------------------------------------------------


def prepare_shard(plan: RunPlan, shard: int, shards: int, workers: int | None = None) -> PrepShard:
    """Preprocess shard ``shard`` of ``shards`` into the batch size's content-keyed prep folder.

    A finished prep folder is reused untouched (``cached=True``): its name is its content key, so no pixel is read
    and no file is rewritten. An unfinished one is completed by ``preprocess``, which skips the files already
    written with the same inputs.
    """
    from convmixer_tasks.stages.prepfolder import read_manifest, shard_range

    started = time.perf_counter()

    def finished() -> Any:
        manifest = read_manifest(plan.prep_dir)  # checks every listed file's size and layout marker
        return manifest if manifest.dataset_fingerprint == plan.dataset_fingerprint else None

    manifest = ContentCache.lookup(finished)
    written = 0
    if manifest is None:
        from convmixer_tasks.stages.preprocess import preprocess

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
            set_reported=True,  # check_inputs said the set's suspicious images once for the run
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
        seconds=time.perf_counter() - started,
    )


# --- the NPU steps: compile, infer, benchmark -------------------------------------------------------------------


def compile_artifact(
    plan: RunPlan,
    exported: ExportedModel,
    work_dir: str | os.PathLike,
    soc_version: str = "auto",
    settings: Mapping[str, Any] | None = None,
) -> CompiledModel:
    """Compile the ONNX for one model × batch size × precision mode (cached by ONNX hash + options — precision and GELU
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
        model_variant=plan.model_variant,
        run_id=plan.run_id,
        batch_size=plan.batch_size,
        backend=plan.backend,
        precision=plan.precision,
        artifact=artifact,
        device=info.device,
        toolkit_version=info.toolkit_version,
        cached=bool(artifact.cached),
        prep_dir=plan.prep_dir,
    )


def _prep_shard_of(prepared: Iterable[PrepShard], prep_dir: str, shard: int) -> PrepShard:
    for entry in prepared:
        if entry.prep_dir == prep_dir and entry.shard == shard:
            return entry
    raise ConfigError(f"no preprocess result for {prep_dir} shard {shard}; re-run the preprocess step")


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
    started = time.perf_counter()
    batch_size = compiled.batch_size
    prep = _prep_shard_of(prepared, compiled.prep_dir, shard)
    output_dir = WorkLayout(Path(work_dir)).shard_output_dir(
        compiled.run_id, batch_size, shard, precision=compiled.precision, model=compiled.model_variant
    )
    shutil.rmtree(output_dir.parent, ignore_errors=True)
    file_count, summary_path = 0, None  # more shards than files: nothing to run
    if prep.files:
        backend = get_backend(compiled.backend, **(settings or {}))
        inferred = backend.infer(compiled.fresh_artifact(), prep.prep_dir, output_dir, files=list(prep.files))
        output_dir, file_count, summary_path = inferred.output_dir, inferred.file_count, str(inferred.summary_path)
    return ShardOutputs(
        model_variant=compiled.model_variant,
        batch_size=batch_size,
        precision=compiled.precision,
        shard=shard,
        prep_dir=prep.prep_dir,
        files=prep.files,
        output_dir=str(output_dir),
        file_count=file_count,
        summary_path=summary_path,
        seconds=time.perf_counter() - started,
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
    evidence: EvidenceOptions | None = None,
) -> Scores:
    """Top-1/top-5 of one model × batch size × precision from its merged shard outputs, scored through the prep
    manifest, with the per-image predictions written beside ``result.json``; given ``exported``, also the
    artifact's fidelity to that ONNX on the plan's fixed subset (``evidence_steps.measure_fidelity``)."""
    from convmixer_tasks.evidence.predictions import PREDICTIONS_FILE
    from convmixer_tasks.stages.evaluate import evaluate_with_evidence

    started = time.perf_counter()
    layout = WorkLayout(Path(work_dir))
    shard_dirs = [entry.output_dir for entry in inferred if join_key(entry) == join_key(plan) and entry.file_count]
    where = {"precision": plan.precision, "model": plan.model_variant}
    merged = merge_shard_outputs(shard_dirs, layout.merged_output_dir(plan.run_id, plan.batch_size, **where))
    batch_dir = layout.batch_dir(plan.run_id, plan.batch_size, **where)
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
        from convmixer_tasks.run.evidence_steps import measure_fidelity

        thresholds = (evidence or EvidenceOptions()).thresholds()
        fidelity_json = str(measure_fidelity(plan, exported, scored, layout, thresholds))
    result = scored.result
    return Scores(
        model_variant=plan.model_variant,
        batch_size=plan.batch_size,
        precision=plan.precision,
        top1=result.top1,
        top5=result.top5,
        image_count=result.image_count,
        result_json=str(result.result_json),
        predictions=str(batch_dir / PREDICTIONS_FILE),
        fidelity_json=fidelity_json,
        seconds=time.perf_counter() - started,
    )


# --- metrics + gate ---------------------------------------------------------------------------------------------


def record_rows(
    url: str, rows: Iterable[MetricsRow], *, keep_gated: bool = False, scores: Iterable[Scores] = ()
) -> list[RecordedRow]:
    """Write the rows in one transaction (upsert by run_id + batch size + backend + precision mode, so a retried
    task leaves one row each; a row the store refuses leaves none of them behind). ``keep_gated`` leaves a row that
    already has the gate's verdict (ok/regressed) as it is: the failure path passes it with ``rows.failed_rows``.
    ``scores``: their per-image predictions are stored beside the rows (still ``pending``: the gate pairs them)."""
    from convmixer_tasks.metrics import record_runs, upgrade

    rows = list(rows)
    upgrade(url)
    ids = record_runs(url, rows, keep_gated=keep_gated)
    recorded = [
        RecordedRow(
            id=row_id,
            run_id=row.run_id,
            batch_size=row.batch_size,
            backend=row.backend,
            precision=row.precision_mode or effective_precision(row.backend, None),
            model_variant=row.model_variant,
            chip=row.chip,
        )
        for row_id, row in zip(ids, rows, strict=False)
    ]
    scores = list(scores)
    if scores:
        from convmixer_tasks.run.evidence_steps import record_predictions

        sizes = record_predictions(url, recorded, scores)
        log.info("stored per-image predictions (compressed bytes per batch size × precision): %s", sizes)
    return recorded


def gate_rows(url: str, recorded: Iterable[RecordedRow], run: RunParams) -> list[Verdict]:
    """Apply the regression gate to every recorded row (``pending``, or already gated on a retry), then fail once
    if any regressed.

    ``apply_gate`` stores ``regressed`` on the row before raising, so every row gets its verdict stored even when
    an earlier one regressed; the combined error names them all (each message names its model and batch size)
    and carries their ``GateDecision``s as ``.decisions``.
    """
    from convmixer_tasks.verdict.gate import apply_gate

    options = run.gate_arguments()
    verdicts, regressions = [], []
    for row in recorded:
        try:
            decision = apply_gate(
                url,
                row.run_id,
                row.batch_size,
                row.backend,
                precision_mode=row.precision,
                model_variant=row.model_variant,
                chip=row.chip,
                **options,
            )
            verdicts.append(
                Verdict(
                    model_variant=row.model_variant,
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
