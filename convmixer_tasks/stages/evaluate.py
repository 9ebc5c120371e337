"""Top-1…top-5 accuracy from model outputs in ais_bench layout, scored against ``val_label.txt``.

Which output row is which image is ``output_rows``' part (from the prep manifest, or from the output names); all
outputs are stacked into one (N, C) float32 array and scored here in one vectorised pass.

Labels are 0-based ImageNet classes; a model with 1001 outputs (a background class first) is scored against
label + 1, as the guides' scripts do.

Rank rule: a row's label rank is the number of classes whose logit is strictly greater than the label's, plus the
classes with an *equal* logit and a *lower* class index — the order ``np.argsort(-x, kind="stable")`` and
``np.argmax`` give. Top-k is ``rank < k``, so top-1 is exactly ``argmax == label``; on rows without ties every
descending sort agrees with it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import numpy as np

from convmixer_tasks.checks import check_batch_size
from convmixer_tasks.errors import EvalError
from convmixer_tasks.evidence.predictions import Predictions, predictions_from_logits, write_predictions
from convmixer_tasks.fileio import atomic_write_json
from convmixer_tasks.stages.dataset import read_labels
from convmixer_tasks.stages.output_rows import (
    CHUNK_ROWS,
    OutputSet,
    check_finite,
    image_files,
    image_named,
    load_logits,
    plan_from_image_names,
    plan_from_manifest,
    plan_from_names,
    reference_files,
    resolve_output_dir,
    scan_outputs,
)

log = logging.getLogger(__name__)

TOP_K = 5
TIE_RULE = "equal logits rank the lower class index first (stable descending sort; top-1 == argmax)"
BACKGROUND_CLASSES = 1001  # 1000 ImageNet classes + background first: labels shift by one


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent
    image_count: int
    num_classes: int
    result_json: Path | None


class EvalOptions(TypedDict, total=False):
    """``evaluate``'s keyword options (``evaluate_with_evidence`` documents each)."""

    prep_dir: str | os.PathLike | None
    batch_size: int | None
    result_json: str | os.PathLike | None
    num_classes: int
    predictions_file: str | os.PathLike | None
    label_offset: int | None


def evaluate(
    output_dir: str | os.PathLike, label_file: str | os.PathLike, **options: Unpack[EvalOptions]
) -> EvalResult:
    """Score the outputs in ``output_dir``: ``evaluate_with_evidence`` without the per-image arrays."""
    return evaluate_with_evidence(output_dir, label_file, **options).result


@dataclass(frozen=True)
class Evidence:
    """``evaluate``'s result plus what the evidence steps need: each labelled image's logits and predictions."""

    result: EvalResult
    logits: np.ndarray  # (N, classes) float32, rows in ``predictions`` order (ascending image index)
    predictions: Predictions


def evaluate_with_evidence(
    output_dir: str | os.PathLike,
    label_file: str | os.PathLike,
    prep_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    result_json: str | os.PathLike | None = None,
    num_classes: int = 1000,
    predictions_file: str | os.PathLike | None = None,
    label_offset: int | None = None,
) -> Evidence:
    """Score the outputs in ``output_dir``; write ``result_json`` (reference format + ``metrics``) and
    ``predictions_file`` (``evidence.Predictions``, compressed) only on success. Returns the result with each
    labelled image's logits and predictions.

    With ``prep_dir`` the manifest decides which row is which image; without it the output names do: one file per
    image names its image, else the reference's name arithmetic with ``batch_size`` (default: the rows per output
    file), restricted to the images in ``label_file``. ``label_offset`` (a card's ``Labels``) is added to every
    label; None: +1 when the model has 1001 outputs, else 0.
    """
    if result_json is not None:
        # A result from an earlier run at this path must not outlive a failed (or killed) one: a reader would
        # take it for this run's.
        if Path(result_json).is_dir():
            raise EvalError(
                f"result JSON path {result_json} is a folder; name a file inside it (--json-file-name, not empty)"
            )
        Path(result_json).unlink(missing_ok=True)
    if predictions_file is not None:
        Path(predictions_file).unlink(missing_ok=True)  # the same for the predictions written beside it
    if batch_size is not None:
        check_batch_size(batch_size)
    outputs = scan_outputs(resolve_output_dir(output_dir))
    if label_offset is None:
        label_offset = 1 if num_classes == BACKGROUND_CLASSES else 0
    labels = {
        index: label + label_offset
        for index, label in read_labels(label_file, num_classes=num_classes - label_offset).items()
    }
    if not labels:
        raise EvalError(f"label file {label_file} lists no images; pass the val_label.txt of the evaluated images")
    if prep_dir is not None:
        paths, rows_per_file, row_labels, row_indices = plan_from_manifest(
            prep_dir, outputs, labels, batch_size, num_classes
        )
        logits = load_logits(paths, num_classes, rows_per_file)
    elif image_named(outputs):
        paths, row_indices = image_files(outputs)
        rows_per_file = 1
        logits = load_logits(paths, num_classes, rows_per_file)
        row_labels = plan_from_image_names(paths, row_indices, labels)
    else:
        paths, batch_numbers = reference_files(outputs)
        logits = load_logits(paths, num_classes, batch_size)
        rows_per_file = logits.shape[0] // len(paths)
        if batch_size is None:
            log.info("batch size %d taken from the rows per output file", rows_per_file)
        row_labels, row_indices = plan_from_names(paths, batch_numbers, rows_per_file, labels)
    check_finite(logits, paths, rows_per_file)

    ranks = label_ranks(logits, row_labels)
    scored = ranks[row_labels >= 0]
    image_count = int(scored.size)
    if image_count == 0:
        raise EvalError(
            f"no labelled images among the outputs in {outputs.folder}; check the prep folder and label file"
        )
    hits = [int(np.count_nonzero(scored < k)) for k in range(1, TOP_K + 1)]
    accuracies = [100.0 * hit / image_count for hit in hits]
    log.info(
        "%d images from %d %s files in %s: top-1 %.2f%%, top-5 %.2f%%",
        image_count,
        len(paths),
        outputs.outfmt.upper(),
        outputs.folder,
        accuracies[0],
        accuracies[-1],
    )
    predictions = predictions_from_logits(logits, row_labels, row_indices, num_classes)
    written = None
    if predictions_file is not None:
        write_predictions(predictions_file, predictions)
    if result_json is not None:
        report = _result_document(
            accuracies,
            hits,
            image_count,
            num_classes,
            outputs,
            len(paths),
            "manifest" if prep_dir is not None else "reference_name_arithmetic",
        )
        written = atomic_write_json(result_json, report)
    result = EvalResult(
        top1=accuracies[0], top5=accuracies[-1], image_count=image_count, num_classes=num_classes, result_json=written
    )
    keep = np.flatnonzero(row_labels >= 0)
    in_order = keep[np.argsort(row_indices[keep], kind="stable")]
    return Evidence(result=result, logits=logits[in_order], predictions=predictions)


def label_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row's label rank (0 = top-1) under the module's tie rule; rows whose label is negative get -1.

    Counting beaten-by classes is O(N·C) with no sort; it is done in chunks so temporaries stay small.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ranks = np.full(labels.shape[0], -1, dtype=np.int64)
    for start in range(0, labels.shape[0], CHUNK_ROWS):
        block = logits[start : start + CHUNK_ROWS]
        block_labels = labels[start : start + CHUNK_ROWS]
        valid = block_labels >= 0
        safe_labels = np.where(valid, block_labels, 0)
        target = block[np.arange(block.shape[0]), safe_labels][:, None]
        block_ranks = np.count_nonzero(block > target, axis=1)
        # Ties with other classes are rare on real logits: resolve only the rows that have them.
        tied = np.flatnonzero(valid & (np.count_nonzero(block == target, axis=1) > 1))
        if tied.size:
            lower_class = np.arange(block.shape[1])[None, :] < safe_labels[tied, None]
            block_ranks[tied] += np.count_nonzero((block[tied] == target[tied]) & lower_class, axis=1)
        ranks[start : start + CHUNK_ROWS] = np.where(valid, block_ranks, -1)
    return ranks


def _result_document(
    accuracies: list[float],
    hits: list[int],
    image_count: int,
    num_classes: int,
    outputs: OutputSet,
    file_count: int,
    mapping: str,
) -> dict:
    """The reference's ImageNet result JSON (same keys and value strings) plus a machine-readable block."""
    values = [
        {"key": "Number of images", "value": str(image_count)},
        {"key": "Number of classes", "value": str(num_classes)},
    ]
    values += [
        {"key": f"Top{k} accuracy", "value": f"{round(accuracy, 2)}%"} for k, accuracy in enumerate(accuracies, start=1)
    ]
    return {
        "title": "Overall statistical evaluation",
        "value": values,
        "metrics": {
            "top1": accuracies[0],
            "top5": accuracies[-1],
            "image_count": image_count,
            "num_classes": num_classes,
            "topk": {str(k): accuracy for k, accuracy in enumerate(accuracies, start=1)},
            "topk_correct": {str(k): hit for k, hit in enumerate(hits, start=1)},
        },
        "source": {
            "output_dir": str(outputs.folder),
            "outfmt": outputs.outfmt,
            "file_count": file_count,
            "row_mapping": mapping,
            "tie_rule": TIE_RULE,
        },
    }
