"""A benchmark's per-loop samples: kept compressed on the row, their figures and spread (mean-based and robust), the
measurement loop that re-measures a too noisy run, and the suspect line and confirmations of a low first figure.

Pure numbers (numpy/scipy inside the functions); ``throughput`` judges what these give, ``benchmark_step`` runs the
loop. See ``throughput``'s docstring for why the verdict reads the robust figure.
"""

from __future__ import annotations

import base64
import math
import statistics
import sys
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.status import CHECK_BELOW

DEFAULT_MIN_HISTORY = 5  # same-fingerprint ok runs needed before any verdict (Conbench's "no history, no verdict")
SUSPECT_SHARE = 0.5  # a first measurement more than half the tolerance below the baseline is suspect
BOOTSTRAP_RESAMPLES = 999
BOOTSTRAP_CONFIDENCE = 0.95


def pack_samples(samples_ms: Sequence[float]) -> str:
    """Per-loop times (ms) as compact text for a row: float32 little-endian, zlib, base64 (about 4 bytes a loop)."""
    values = array("f", (float(value) for value in samples_ms))
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(zlib.compress(values.tobytes(), 9)).decode("ascii")


def unpack_samples(packed: str) -> list[float]:
    try:
        raw = zlib.decompress(base64.b64decode(packed.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as exc:
        raise ConfigError(
            f"stored per-loop samples are not packed samples ({exc}); re-record the row from its benchmark.json"
        ) from exc
    values = array("f")
    values.frombytes(raw)
    if sys.byteorder != "little":
        values.byteswap()
    return [float(value) for value in values]


@dataclass(frozen=True)
class SampleStats:
    """Summary of one measurement's per-loop times (warm-up loops already excluded, and counted in ``warmup``)."""

    count: int
    warmup: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    cv: float  # sample standard deviation / mean of the per-loop times (0.12 = 12 %): ais_bench-style, kept on the row
    iqr_ms: float
    throughput: float  # 1000 * batch size / mean per-loop time: ais_bench's figure, kept on the row
    robust_cv: float  # 1.4826 × MAD / median of the per-loop times: the spread the verdict judges
    throughput_robust: float  # 1000 * batch size / median per-loop time: the figure the verdict judges


def sample_stats(samples_ms: Sequence[float], batch_size: int, warmup: int) -> SampleStats | None:
    """Stats of the per-loop times, or None when there are fewer than two (no dispersion to speak of)."""
    import numpy as np
    from scipy import stats  # type: ignore[import-untyped]

    times = np.asarray(samples_ms, dtype=np.float64)
    if times.size < 2:
        return None
    if not np.all(np.isfinite(times)) or np.any(times <= 0):
        raise ConfigError(
            f"per-loop times must be positive finite milliseconds, got min {times.min()!r}; check the benchmark tool"
        )
    return SampleStats(
        count=int(times.size),
        warmup=int(warmup),
        mean_ms=float(times.mean()),
        p50_ms=float(np.median(times)),
        p99_ms=float(np.percentile(times, 99)),
        cv=float(times.std(ddof=1) / times.mean()),
        iqr_ms=float(np.subtract(*np.percentile(times, [75, 25]))),
        throughput=float(1000.0 * batch_size / times.mean()),
        robust_cv=float(stats.median_abs_deviation(times, scale="normal") / np.median(times)),
        throughput_robust=float(1000.0 * batch_size / np.median(times)),
    )


def figure_interval(samples_ms: Sequence[float], batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (percentile method, scipy) of the run's judged figure, 1000 * batch size / median time."""
    import numpy as np
    from scipy import stats

    def figure(times, axis=-1):
        return 1000.0 * batch_size / np.median(times, axis=axis)

    result = stats.bootstrap(
        (np.asarray(samples_ms, dtype=np.float64),),
        figure,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=BOOTSTRAP_CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Tries:
    all: list  # every measurement taken (BenchResult-like: .samples, .batch_size, .warmup, .throughput)
    chosen: Any  # the least noisy one
    stats: SampleStats | None  # its stats; None when it kept no per-loop samples

    @property
    def figure(self) -> float:
        """The figure the verdict judges: the robust one from the per-loop samples, else the tool's own."""
        return self.stats.throughput_robust if self.stats is not None else float(self.chosen.throughput)


def measure_until_quiet(measure: Callable[[], Any], batch_size: int, remeasure: int, max_cv_pct: float | None) -> Tries:
    """Measure once, then again (up to ``remeasure`` more times) while the robust per-loop CV is above
    ``max_cv_pct``. A measurement without per-loop samples cannot show its CV, so it is never repeated."""
    if isinstance(remeasure, bool) or not isinstance(remeasure, int) or remeasure < 0:
        raise ConfigError(f"remeasure must be an integer >= 0, got {remeasure!r} (param benchmark_remeasure)")
    taken: list[tuple[Any, SampleStats | None]] = []
    while True:
        result = measure()
        stats = sample_stats(result.samples, batch_size, result.warmup)
        taken.append((result, stats))
        noisy = stats is not None and max_cv_pct is not None and stats.robust_cv * 100 > max_cv_pct
        if not noisy or len(taken) > remeasure:
            break
    chosen, stats = min(taken, key=lambda one: one[1].robust_cv if one[1] is not None else math.inf)
    return Tries([one for one, _ in taken], chosen, stats)


def suspect_line(
    history: Sequence[float],
    tolerance_pct: float,
    min_history: int = DEFAULT_MIN_HISTORY,
    previous_check: str | None = None,
) -> float | None:
    """The figure below which a first measurement is suspect: ``median(history) × (1 - tolerance × SUSPECT_SHARE)``;
    None while there is too little same-fingerprint history for any verdict. After a run judged ``below`` every
    figure is suspect (infinity): the two-run rule then has this run's confirmations to judge the pair on."""
    figures = [float(one) for one in history if one and one > 0]
    if len(figures) < min_history:
        return None
    if previous_check == CHECK_BELOW:
        return math.inf
    return statistics.median(figures) * (1 - tolerance_pct * SUSPECT_SHARE / 100)


def confirm_if_suspect(measure: Callable[[], Any], figure: float, line: float | None, confirm: int) -> list[Any]:
    """``confirm`` more measurements when ``figure`` lies below the suspect ``line`` (none otherwise, or without a
    line). Each is a new measurement: a fresh draw of the run-to-run noise, not of the artifact's speed."""
    if isinstance(confirm, bool) or not isinstance(confirm, int) or confirm < 0:
        raise ConfigError(f"confirm must be an integer >= 0, got {confirm!r} (param benchmark_confirm)")
    if line is None or figure >= line:
        return []
    return [measure() for _ in range(confirm)]
