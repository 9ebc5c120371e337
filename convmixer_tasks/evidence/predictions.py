"""Per-image evidence behind an accuracy number: each image's top-5 and top-1 margin (``Predictions``), stored
compressed beside the metrics row; per-class top-1 and the worst classes; and the images that flipped between two
runs with the exact McNemar test on their paired 2×2 table.

Images are identified by their 8-digit ImageNet-val index, in label order (ascending index), so predictions of two
runs line up only when they cover the same images with the same labels; anything else is refused (it would be a
paired test of unpaired data).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convmixer_tasks.errors import EvalError
from convmixer_tasks.fileio import atomic_write_bytes

TOP_K = 5
FORMAT = "convmixer-predictions/1"  # stored inside the blob: a reader refuses blobs of another layout
_NAME_LIMIT = 10  # how many image names a flip list keeps
_CHUNK_ROWS = 4096  # rows copied at once by the top-5 pass (~16 MB at 1000 classes)


@dataclass(frozen=True)
class Predictions:
    """One run × batch size: per labelled image (ascending val index) its label, top-5 classes and top-1 margin."""

    indices: np.ndarray  # int32 (N,), ImageNet-val index of each image
    labels: np.ndarray  # int16 (N,)
    top5: np.ndarray  # int16 (N, 5), best first; column 0 is argmax (lower class index wins a tie)
    margin: np.ndarray  # float16 (N,), top-1 logit minus the runner-up's
    num_classes: int

    @property
    def correct(self) -> np.ndarray:
        return self.top5[:, 0] == self.labels

    def image_names(self, positions: np.ndarray) -> list[str]:
        return [f"ILSVRC2012_val_{int(index):08d}.JPEG" for index in self.indices[positions]]


def predictions_from_logits(
    logits: np.ndarray, row_labels: np.ndarray, row_indices: np.ndarray, num_classes: int
) -> Predictions:
    """The rows with a label (padded slots carry -1) turned into ``Predictions``, sorted by image index.

    Top-5 by five ``argmax`` passes over a chunk copy, masking each winner: O(5·N·C) with no sort, about 10× faster
    than ``argpartition`` here, and ``argmax`` picks the lower class index on a tie — ``evaluate``'s rank rule, so
    column 0 is exactly what its top-1 counts.
    """
    keep = np.flatnonzero(np.asarray(row_labels) >= 0)
    if logits.shape[1] != num_classes:
        raise EvalError(
            f"outputs have {logits.shape[1]} values per image, the model has {num_classes} classes; "
            "evaluate outputs of the model this label file belongs to"
        )
    k = min(TOP_K, num_classes)
    top = np.empty((keep.size, k), dtype=np.int16)
    best = np.empty((keep.size, 2), dtype=np.float32)
    for start in range(0, keep.size, _CHUNK_ROWS):
        block = logits[keep[start : start + _CHUNK_ROWS]]  # fancy indexing copies: masking leaves logits intact
        rows = np.arange(block.shape[0])
        for rank in range(k):
            winner = np.argmax(block, axis=1)
            top[start : start + block.shape[0], rank] = winner
            if rank < 2:
                best[start : start + block.shape[0], rank] = block[rows, winner]
            block[rows, winner] = -np.inf
    margin = best[:, 0] - best[:, 1] if k > 1 else np.zeros(keep.size, np.float32)
    indices = np.asarray(row_indices)[keep].astype(np.int32)
    sort = np.argsort(indices, kind="stable")
    if np.any(np.diff(indices[sort]) == 0):
        raise EvalError("the outputs score the same image twice; clear the output folder and re-run inference")
    return Predictions(
        indices=indices[sort],
        labels=np.asarray(row_labels)[keep][sort].astype(np.int16),
        top5=top[sort],
        margin=margin[sort].astype(np.float16),
        num_classes=num_classes,
    )


# --- storage: one compressed blob (the metrics DB) or file (the CLI) -----------------------------------------------


def encode(predictions: Predictions) -> bytes:
    """The predictions as one deflate-compressed NPZ (~5 bytes per image; see bench/RESULTS.md)."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        format=np.array(FORMAT),
        num_classes=np.array(predictions.num_classes, np.int32),
        # index deltas compress to almost nothing on the usual contiguous val ranges
        index_deltas=np.diff(predictions.indices, prepend=0).astype(np.int32),
        labels=predictions.labels,
        top5=predictions.top5,
        margin=predictions.margin,
    )
    return buffer.getvalue()


def decode(blob: bytes, what: str = "predictions") -> Predictions:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise EvalError(f"{what} are in format {data['format']}, not {FORMAT}; re-run the evaluation")
            return Predictions(
                indices=np.cumsum(data["index_deltas"]).astype(np.int32),
                labels=data["labels"],
                top5=data["top5"],
                margin=data["margin"],
                num_classes=int(data["num_classes"]),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise EvalError(f"{what} are unreadable ({exc}); re-run the evaluation that wrote them") from exc


def write_predictions(path: str | os.PathLike, predictions: Predictions) -> Path:
    return atomic_write_bytes(path, encode(predictions))


def read_predictions(path: str | os.PathLike) -> Predictions:
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise EvalError(f"no predictions at {path}; pass a result folder written by `convmixer-tasks eval`")
    return decode(path.read_bytes(), f"predictions {path}")


PREDICTIONS_FILE = "predictions.npz"


# --- per class ---------------------------------------------------------------------------------------------------


def per_class_top1(predictions: Predictions) -> np.ndarray:
    """Top-1 (percent) of each class; NaN for a class with no image in the set."""
    counts = np.bincount(predictions.labels, minlength=predictions.num_classes).astype(np.float64)
    hits = np.bincount(predictions.labels[predictions.correct], minlength=predictions.num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, 100.0 * hits / counts, np.nan)


def worst_classes(predictions: Predictions, count: int = 10) -> list[dict[str, float | int]]:
    """The ``count`` classes with the lowest top-1 (ties: fewer images first is arbitrary; lower class first)."""
    per_class = per_class_top1(predictions)
    images = np.bincount(predictions.labels, minlength=predictions.num_classes)
    present = np.flatnonzero(images > 0)
    order = present[np.lexsort((present, per_class[present]))][:count]
    return [{"class": int(c), "top1": float(per_class[c]), "images": int(images[c])} for c in order]


# --- paired comparison -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flips:
    """How two runs on the same images differ: the paired 2×2 table, the flipped images and McNemar's exact p."""

    images: int
    both_right: int
    right_to_wrong: int  # right in ``before``, wrong in ``after``
    wrong_to_right: int
    both_wrong: int
    p_value: float  # exact McNemar (binomial on the discordant pairs); 1.0 when nothing flipped
    top1_delta: float  # after - before, percentage points
    right_to_wrong_names: tuple[str, ...]
    wrong_to_right_names: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"{self.right_to_wrong} right→wrong, {self.wrong_to_right} wrong→right of {self.images} images "
            f"(top-1 {self.top1_delta:+.3f} pt, McNemar exact p={self.p_value:.3g})"
        )


def mcnemar_exact(table: np.ndarray) -> float:
    """Exact McNemar p-value of a paired 2×2 table [[both right, right→wrong], [wrong→right, both wrong]]."""
    from statsmodels.stats.contingency_tables import mcnemar  # type: ignore[import-untyped]

    return float(mcnemar(np.asarray(table, dtype=np.int64), exact=True).pvalue)


def check_same_images(before: Predictions, after: Predictions, before_name: str, after_name: str) -> None:
    """Refuse to pair predictions of different image sets or labels (one line naming both sides)."""
    if before.indices.shape != after.indices.shape or not np.array_equal(before.indices, after.indices):
        raise EvalError(
            f"{after_name} covers other images than {before_name} ({after.indices.size} vs {before.indices.size} "
            "images, or different ones); compare runs on the same image set and image_limit"
        )
    if not np.array_equal(before.labels, after.labels):
        changed = int(np.count_nonzero(before.labels != after.labels))
        raise EvalError(
            f"{after_name} and {before_name} label {changed} images differently; use the same val_label.txt for both"
        )


def flips(before: Predictions, after: Predictions, before_name: str = "before", after_name: str = "after") -> Flips:
    check_same_images(before, after, before_name, after_name)
    right_before, right_after = before.correct, after.correct
    to_wrong = np.flatnonzero(right_before & ~right_after)
    to_right = np.flatnonzero(~right_before & right_after)
    both_right = int(np.count_nonzero(right_before & right_after))
    both_wrong = int(np.count_nonzero(~right_before & ~right_after))
    table = np.array([[both_right, to_wrong.size], [to_right.size, both_wrong]])
    images = int(before.indices.size)
    return Flips(
        images=images,
        both_right=both_right,
        right_to_wrong=int(to_wrong.size),
        wrong_to_right=int(to_right.size),
        both_wrong=both_wrong,
        p_value=mcnemar_exact(table),
        top1_delta=100.0 * (int(right_after.sum()) - int(right_before.sum())) / images if images else 0.0,
        right_to_wrong_names=tuple(after.image_names(to_wrong[:_NAME_LIMIT])),
        wrong_to_right_names=tuple(after.image_names(to_right[:_NAME_LIMIT])),
    )


def class_deltas(before: Predictions, after: Predictions, count: int = 10) -> list[dict[str, float | int]]:
    """The classes whose top-1 changed most (after - before), largest drop first."""
    delta = per_class_top1(after) - per_class_top1(before)
    present = np.flatnonzero(~np.isnan(delta) & (delta != 0))
    order = present[np.lexsort((present, delta[present]))][:count]
    return [{"class": int(c), "delta_pt": float(delta[c])} for c in order]
