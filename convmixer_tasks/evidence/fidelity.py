"""Does the compiled artifact still compute what its ONNX computes? Per-image fidelity of the artifact's logits
against the source ONNX run in fp32 on ONNX Runtime, on a fixed seeded subset of the images.

The metrics and default thresholds are those Huawei's msit/ait ``compare`` judges an OM by: cosine similarity
(abnormal below 0.99), relative Euclidean distance (above 0.05) and KL divergence of the softmax (above 0.005), plus
max |Δ| and top-1 agreement for reading. The reference logits are cached by ONNX hash + subset, so a re-validation
of the same ONNX pays for them once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmixer_tasks.cache import ContentCache
from convmixer_tasks.defaults import DEFAULT_SUBSET, DEFAULT_THRESHOLDS
from convmixer_tasks.errors import ConfigError, EvalError
from convmixer_tasks.fileio import atomic_write_bytes, atomic_write_json, read_json

if TYPE_CHECKING:  # numpy is imported where used: params reads this module's defaults at DAG parse time
    import numpy as np

SUBSET_SEED = 0  # fixed: the same images every run, so runs compare like with like
_REFERENCE_BATCH = 16


@dataclass(frozen=True)
class FidelityMetrics:
    """Per image (arrays of length n): the artifact's logits against the reference's."""

    cosine: np.ndarray
    max_abs: np.ndarray
    rel_euclidean: np.ndarray
    kl: np.ndarray
    top1_agree: np.ndarray  # bool


def fidelity_metrics(reference: np.ndarray, actual: np.ndarray) -> FidelityMetrics:
    """Row-wise comparison of two (n, classes) logit arrays.

    cosine = a·b / (|a||b|) (1.0 when both rows are all zero); relative Euclidean = |b - a| / |a|; KL = KL(softmax(a)
    ‖ softmax(b)) in nats; a = reference, b = actual.
    """
    import numpy as np
    from scipy.special import log_softmax, rel_entr, softmax  # type: ignore[import-untyped]

    if reference.shape != actual.shape:
        raise EvalError(
            f"artifact outputs are {actual.shape[1:] if actual.ndim == 2 else actual.shape} per image, the ONNX "
            f"gives {reference.shape[1:]}; compile the artifact from this ONNX"
        )
    a = reference.astype(np.float64)
    b = actual.astype(np.float64)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where((norm_a == 0) & (norm_b == 0), 1.0, dot / (norm_a * norm_b))
        rel = np.where(norm_a == 0, np.where(norm_b == 0, 0.0, np.inf), np.linalg.norm(b - a, axis=1) / norm_a)
    p = softmax(a, axis=1)
    # rel_entr(p, q) with q from log_softmax avoids underflow to 0 in q where p is tiny but nonzero
    kl = np.sum(rel_entr(p, np.exp(log_softmax(b, axis=1))), axis=1)
    return FidelityMetrics(
        cosine=np.nan_to_num(cosine, nan=0.0),
        max_abs=np.max(np.abs(b - a), axis=1),
        rel_euclidean=rel,
        kl=kl,
        top1_agree=np.argmax(a, axis=1) == np.argmax(b, axis=1),
    )


def check_thresholds(thresholds: Mapping[str, Any]) -> dict[str, float]:
    import numpy as np

    unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
    if unknown:
        raise ConfigError(
            f"unknown fidelity threshold(s) {', '.join(unknown)}; use {', '.join(DEFAULT_THRESHOLDS)} (param evidence)"
        )
    merged = {**DEFAULT_THRESHOLDS, **thresholds}
    for name, value in merged.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ConfigError(f"fidelity threshold {name} must be a finite number >= 0, got {value!r}")
    return {name: float(value) for name, value in merged.items()}


def summarise(metrics: FidelityMetrics, thresholds: Mapping[str, float]) -> dict[str, Any]:
    """min/mean of each metric and the breaches of the thresholds (one reason line each), JSON-able."""
    import numpy as np

    count = int(metrics.cosine.size)
    summary: dict[str, Any] = {
        "images": count,
        "min_cosine": float(metrics.cosine.min()),
        "mean_cosine": float(metrics.cosine.mean()),
        "max_abs_diff": float(metrics.max_abs.max()),
        "mean_abs_diff_max": float(metrics.max_abs.mean()),
        "max_rel_euclidean": float(metrics.rel_euclidean.max()),
        "mean_rel_euclidean": float(metrics.rel_euclidean.mean()),
        "max_kl": float(metrics.kl.max()),
        "mean_kl": float(metrics.kl.mean()),
        "top1_agreement": float(metrics.top1_agree.mean()),
        "thresholds": dict(thresholds),
    }
    breaches = []
    low_cosine = int(np.count_nonzero(metrics.cosine < thresholds["min_cosine"]))
    if low_cosine:
        breaches.append(
            f"OM diverges from ONNX: min cosine {summary['min_cosine']:.4f} < {thresholds['min_cosine']:g} "
            f"on {low_cosine} of {count} images"
        )
    far = int(np.count_nonzero(metrics.rel_euclidean > thresholds["max_rel_euclidean"]))
    if far:
        breaches.append(
            f"OM diverges from ONNX: max relative Euclidean distance {summary['max_rel_euclidean']:.4f} > "
            f"{thresholds['max_rel_euclidean']:g} on {far} of {count} images"
        )
    high_kl = int(np.count_nonzero(metrics.kl > thresholds["max_kl"]))
    if high_kl:
        breaches.append(
            f"OM diverges from ONNX: max KL divergence {summary['max_kl']:.5f} > {thresholds['max_kl']:g} "
            f"on {high_kl} of {count} images"
        )
    summary["breaches"] = breaches
    return summary


def subset_positions(image_count: int, size: int | None) -> np.ndarray:
    """Sorted positions of the fixed seeded subset; None = ``DEFAULT_SUBSET`` or the whole set when smaller."""
    import numpy as np

    if size is None:
        size = min(DEFAULT_SUBSET, image_count)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(
            f"fidelity subset must be a positive number of images, got {size!r} (evidence.fidelity_subset)"
        )
    if size > image_count:
        raise ConfigError(
            f"fidelity subset of {size} images is larger than the {image_count} evaluated images; "
            f"set evidence.fidelity_subset (CLI: --subset) to at most {image_count}"
        )
    return np.sort(np.random.default_rng(SUBSET_SEED).choice(image_count, size=size, replace=False))


def reference_logits(
    onnx_path: str | os.PathLike,
    onnx_sha256: str,
    image_paths: Sequence[Path],
    image_indices: Sequence[int],
    cache: ContentCache,
    model: str | None = None,
) -> tuple[np.ndarray, bool]:
    """The source ONNX's fp32 logits on ``image_paths`` (the model card's float transform, the default model's when
    ``model`` is None; ONNX Runtime CPU); (logits, cached).

    Cached by ONNX hash + image indices + the transform; the entry's JSON is written last and names the array's
    sha256, so a half-written entry is a miss.
    """
    import numpy as np

    from convmixer_tasks.fileio import sha256_file
    from convmixer_tasks.models.registry import default_card, get_card
    from convmixer_tasks.stages.prepfolder import host_preprocess
    from convmixer_tasks.stages.transforms import transform_float32, transform_params

    prep = host_preprocess(get_card(model) if model else default_card(), "float32")

    key = cache.key(
        {
            "onnx_sha256": onnx_sha256,
            "images": [int(i) for i in image_indices],
            "transform": transform_params("float32", prep),
            "runtime": "onnxruntime-cpu-fp32",
        }
    )
    entry = cache.entry(key)
    array_path, done_path = entry / "reference_logits.npy", entry / "reference.json"

    def complete() -> np.ndarray | None:
        done = read_json(done_path)
        return np.load(array_path) if done["sha256"] == sha256_file(array_path) else None

    cached = cache.lookup(complete)
    if cached is not None:
        return cached, True
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    chunks = []
    for start in range(0, len(image_paths), _REFERENCE_BATCH):
        batch = np.stack([transform_float32(path, prep) for path in image_paths[start : start + _REFERENCE_BATCH]])
        chunks.append(session.run(None, {input_name: batch})[0].astype(np.float32))
    logits = np.concatenate(chunks)
    entry.mkdir(parents=True, exist_ok=True)
    import io

    buffer = io.BytesIO()
    np.save(buffer, logits)
    atomic_write_bytes(array_path, buffer.getvalue())
    atomic_write_json(done_path, {"sha256": sha256_file(array_path), "onnx_sha256": onnx_sha256})
    return logits, False
