"""Benchmark: what the per-image evidence adds to an evaluation of 50,000 outputs, and what it stores per row.

Synthesises (N, 1000) float32 logits with an ImageNet-like accuracy profile (~80 % top-1, near misses in the top 5),
then times, best of ``--repeat``: predictions (top-5 + margin), encoding the stored blob, per-class top-1 + worst
classes, and flips + exact McNemar against a second run with ~1 % of the images perturbed. The one-time import of
statsmodels (the McNemar implementation) is timed apart: a worker pays it once per process.

Run: .venv/bin/python bench/bench_evidence.py [--images 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convmixer_tasks.evidence import predictions as evidence

NUM_CLASSES = 1000
TARGET_SECONDS = 1.0


def synthesize(images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=images)
    logits = rng.standard_normal((images, NUM_CLASSES), dtype=np.float32)
    hit = rng.random(images) < 0.80
    logits[np.flatnonzero(hit), labels[hit]] += 6.0  # clearly top-1
    near = np.flatnonzero(~hit)
    logits[near, labels[near]] += 2.5  # usually in the top 5, rarely first
    return logits, labels


T = TypeVar("T")


def best_of(repeat: int, function: Callable[[], T]) -> tuple[float, T]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    logits, labels = synthesize(args.images, seed=0)
    indices = np.arange(1, args.images + 1)
    other = logits.copy()
    rng = np.random.default_rng(1)
    changed = rng.choice(args.images, size=args.images // 100, replace=False)
    other[changed] += rng.standard_normal((changed.size, NUM_CLASSES)).astype(np.float32) * 3

    start = time.perf_counter()
    import statsmodels.stats.contingency_tables  # type: ignore[import-untyped]  # noqa: F401  (no stubs; timed import)

    import_seconds = time.perf_counter() - start
    t_pred, preds = best_of(args.repeat, lambda: evidence.predictions_from_logits(logits, labels, indices, 1000))
    t_enc, blob = best_of(args.repeat, lambda: evidence.encode(preds))
    t_class, _ = best_of(args.repeat, lambda: (evidence.per_class_top1(preds), evidence.worst_classes(preds)))
    after = evidence.predictions_from_logits(other, labels, indices, 1000)
    t_flips, flips = best_of(args.repeat, lambda: evidence.flips(preds, after))
    total = t_pred + t_enc + t_class + t_flips
    print(f"images {args.images}, top-1 {100 * preds.correct.mean():.2f} %")
    print(f"predictions (top-5 + margin)   {t_pred:.3f} s")
    print(f"encode (stored blob)           {t_enc:.3f} s  -> {len(blob)} bytes ({len(blob) / args.images:.2f} B/image)")
    print(f"per-class top-1 + worst 10     {t_class:.3f} s")
    print(f"flips + McNemar exact          {t_flips:.3f} s  ({flips.summary()})")
    verdict = "met" if total < TARGET_SECONDS else "MISSED"
    print(f"total                          {total:.3f} s  (target < {TARGET_SECONDS} s: {verdict})")
    print(f"statsmodels import, once per process: {import_seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
