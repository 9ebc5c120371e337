"""The evidence parts of the run's steps (kept out of ``steps.py``): the artifact's fidelity to its ONNX on the
fixed subset, the row's evidence fields, and storing the per-image predictions beside the recorded rows.
Heavy imports stay inside the functions (``steps`` imports this module lazily)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from convmixer_tasks.cache import ContentCache
from convmixer_tasks.errors import ConfigError, EvalError
from convmixer_tasks.fileio import atomic_write_json, read_json
from convmixer_tasks.run.records import ExportedModel, RecordedRow, RunPlan, Scores, join_key
from convmixer_tasks.run.workdir import WorkLayout

WORST_CLASSES = 10
FIDELITY_FILE = "fidelity.json"


def fidelity_cache(layout: WorkLayout) -> ContentCache:
    return ContentCache(layout.root / "cache" / "fidelity")


def measure_fidelity(
    plan: RunPlan, exported: ExportedModel, scored: Any, layout: WorkLayout, thresholds: Mapping[str, float]
) -> Path:
    """Compare the artifact's logits (``scored``: ``evaluate.Evidence``) with the source ONNX in fp32 on the
    plan's fixed subset; write the summary and per-image values to ``fidelity.json``; return its path."""
    from convmixer_tasks.evidence.fidelity import (
        DEFAULT_THRESHOLDS,
        SUBSET_SEED,
        check_thresholds,
        fidelity_metrics,
        reference_logits,
        subset_positions,
        summarise,
    )
    from convmixer_tasks.stages.dataset import load_dataset

    limits = check_thresholds({name: thresholds[name] for name in DEFAULT_THRESHOLDS if name in thresholds})
    predictions = scored.predictions
    positions = subset_positions(int(predictions.indices.size), plan.fidelity_subset)
    indices = [int(i) for i in predictions.indices[positions]]
    paths = {image.index: image.path for image in load_dataset(plan.dataset_dir, plan.label_file).images}
    missing = [i for i in indices if i not in paths]
    if missing:
        raise EvalError(
            f"{len(missing)} evaluated images (e.g. ILSVRC2012_val_{missing[0]:08d}.JPEG) are not in "
            f"{plan.dataset_dir}; the outputs are predictions of another image set — re-run preprocess and inference"
        )
    reference, cached = reference_logits(
        exported.onnx_path,
        exported.onnx_sha256,
        [paths[i] for i in indices],
        indices,
        fidelity_cache(layout),
        model=plan.model_variant,
    )
    metrics = fidelity_metrics(reference, scored.logits[positions])
    summary = {
        **summarise(metrics, limits),
        "subset_seed": SUBSET_SEED,
        "reference": "source ONNX, fp32, ONNX Runtime CPU",
        "reference_cached": cached,
    }
    per_image = {
        "images": indices,
        "cosine": metrics.cosine.tolist(),
        "max_abs": metrics.max_abs.tolist(),
        "rel_euclidean": metrics.rel_euclidean.tolist(),
        "kl": metrics.kl.tolist(),
        "top1_agree": metrics.top1_agree.tolist(),
    }
    return atomic_write_json(
        layout.batch_dir(plan.run_id, plan.batch_size, precision=plan.precision, model=plan.model_variant)
        / FIDELITY_FILE,
        {"summary": summary, "per_image": per_image},
    )


def row_evidence(scores: Scores) -> dict[str, Any]:
    """The metrics row's evidence fields from the evaluate step's files (fidelity summary, worst classes)."""
    from convmixer_tasks.evidence.predictions import read_predictions, worst_classes

    evidence: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if scores.predictions is not None:
        predictions = read_predictions(scores.predictions)
        evidence["worst_classes"] = worst_classes(predictions, WORST_CLASSES)
        evidence["predictions_bytes"] = Path(scores.predictions).stat().st_size
    if scores.fidelity_json is not None:
        summary = read_json(scores.fidelity_json)["summary"]
        evidence["fidelity"] = summary
        fields = {"fidelity_min_cosine": summary["min_cosine"], "fidelity_top1_agreement": summary["top1_agreement"]}
    return {**fields, "evidence": evidence or None}


def record_predictions(url: str, recorded: Iterable[RecordedRow], scores: Iterable[Scores]) -> dict[str, int]:
    """Store each recorded row's predictions blob; returns {"bs<N> <precision>": stored bytes}. Rows stay
    ``pending`` (not a result) until the gate, which needs these, has run."""
    from convmixer_tasks.metrics.predictions import store_predictions

    by_key = {join_key(entry): entry for entry in scores}
    sizes = {}
    for row in recorded:
        entry = by_key.get(join_key(row))
        if entry is None or entry.predictions is None:
            continue
        blob = Path(entry.predictions).read_bytes()
        sizes[f"{row.model_variant} bs{row.batch_size} {row.precision}"] = store_predictions(
            url,
            row.run_id,
            row.batch_size,
            row.backend,
            blob,
            image_count=entry.image_count,
            precision_mode=row.precision,
            model_variant=row.model_variant,
            chip=row.chip,
        )
    return sizes


def fidelity_by_hand(
    onnx: str | Path,
    artifact: str | Path,
    image_dir: str | Path,
    label_file: str | Path,
    subset: int | None,
    work_dir: str | Path,
    backend: Any,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """``convmixer-tasks fidelity``: the fixed seeded subset of the labelled images in ``image_dir`` through the
    compiled ``artifact`` (a prep folder of just those images, then ``backend.infer``) and through ``onnx`` in fp32
    on ONNX Runtime; returns the fidelity summary (per-image values in ``work_dir/fidelity.json``)."""
    import shutil

    from convmixer_tasks.backends.base import Artifact
    from convmixer_tasks.evidence.fidelity import (
        check_thresholds,
        fidelity_metrics,
        reference_logits,
        subset_positions,
        summarise,
    )
    from convmixer_tasks.fileio import sha256_file
    from convmixer_tasks.stages.dataset import load_dataset
    from convmixer_tasks.stages.evaluate import evaluate_with_evidence
    from convmixer_tasks.stages.preprocess import preprocess

    limits = check_thresholds(thresholds or {})
    compiled = Artifact.load(artifact)
    onnx_sha256 = sha256_file(onnx)
    if compiled.onnx_sha256 != onnx_sha256:  # any other ONNX "diverges": a verdict on a pair that never belonged
        raise ConfigError(
            f"artifact {artifact} was compiled from another ONNX than {onnx} (its sidecar records onnx_sha256 "
            f"{compiled.onnx_sha256[:12]}…, {Path(onnx).name} is {onnx_sha256[:12]}…); pass the ONNX it was compiled "
            "from as --onnx, or compile this ONNX first"
        )
    dataset = load_dataset(image_dir, label_file)
    chosen = [dataset.images[int(p)] for p in subset_positions(len(dataset.images), subset)]
    work = Path(work_dir)
    picked = work / "subset"
    shutil.rmtree(picked, ignore_errors=True)
    picked.mkdir(parents=True)
    for image in chosen:  # a folder of just the subset: preprocess and infer take folders
        (picked / image.name).symlink_to(Path(image.path).resolve())
    labels = work / "subset_label.txt"
    labels.write_text("".join(f"{image.name} {image.label}\n" for image in chosen))
    model = compiled.options.get("model")  # the card the artifact was compiled for (None: the default model)
    prep = preprocess(
        picked, work / "prep", compiled.batch_size, dtype=compiled.input_dtype, label_file=labels, model=model
    )
    outputs = backend.infer(compiled, prep.out_dir, work / "outputs" / "out")
    scored = evaluate_with_evidence(outputs.output_dir, labels, prep_dir=prep.out_dir)
    indices = [int(i) for i in scored.predictions.indices]
    by_index = {image.index: image.path for image in chosen}
    reference, cached = reference_logits(
        onnx, onnx_sha256, [by_index[i] for i in indices], indices, ContentCache(work / "reference"), model
    )
    metrics = fidelity_metrics(reference, scored.logits)
    summary = {**summarise(metrics, limits), "reference_cached": cached, "artifact": str(artifact)}
    atomic_write_json(
        work / FIDELITY_FILE, {"summary": summary, "per_image": {"images": indices, "cosine": metrics.cosine.tolist()}}
    )
    return summary
