"""Persistent step changes in one series' throughput, found by a kept library (``ruptures``' PELT), not by us.

Why this shape (measured in bench/bench_gate.py: a -5 % step at CV 2 % is found within 5 runs):

* Noise is multiplicative, so the series is searched on log throughput.
* The detector "adapts to the level of noise" the way E-Divisive users expect: the series is divided by a robust
  estimate of its run-to-run noise (the normal-consistent MAD of successive differences, which a step barely moves),
  so one penalty serves a quiet NPU and a shared CPU alike.
* A run slowed 2-3x by a neighbour is one wild point, not a step: standardized values are clipped at ``CLIP`` and a
  segment must hold at least ``MIN_SIZE`` runs, so a single outlier cannot open one.
* Each change point is then tested on its own (Welch's t-test on the runs before vs after, scipy), so its p-value and
  magnitude are stored with it.

Pure: numbers in, change points out. ``metrics.changes`` reads the series and stores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from convmixer_tasks.errors import ConfigError

DETECTOR = "ruptures.Pelt(model='l2')"
MIN_SIZE = 3  # runs on each side of a step: fewer is an episode, not a persistent change
CLIP = 3.0  # standardized values beyond ±CLIP noise units are clipped (a 2-3x slowed run is one such point)
PENALTY_PER_LOG_N = 2.0  # PELT penalty = this × ln(n) on the standardized series (BIC-like; bench/bench_gate.py)
WINDOW = 100  # newest runs of a series the detector looks at


@dataclass(frozen=True)
class Step:
    index: int  # position of the first run after the change, in the values given
    before: float  # median of the segment before (the metric's own units)
    after: float  # median of the segment after
    magnitude_pct: float  # (after - before) / before × 100
    p_value: float  # Welch's t-test, log values, before vs after segment (two-sided)
    noise: float  # the robust run-to-run noise on the log scale the series was divided by


def detect(values: Sequence[float]) -> list[Step]:
    """Change points of a positive series (oldest first), each with its magnitude; [] when the series is too short
    (fewer than 2 × MIN_SIZE runs) or shows no noise to scale by."""
    import numpy as np
    import ruptures  # type: ignore[import-untyped]
    from scipy import stats  # type: ignore[import-untyped]

    series = np.asarray(values, dtype=np.float64)
    if series.size and (not np.all(np.isfinite(series)) or np.any(series <= 0)):
        raise ConfigError(f"change points need positive finite values, got min {series.min()!r}")
    if series.size < 2 * MIN_SIZE:
        return []
    logs = np.log(series)
    noise = float(stats.median_abs_deviation(np.diff(logs), scale="normal")) / math.sqrt(2)
    if not math.isfinite(noise) or noise <= 0:
        return []
    standardized = np.clip((logs - np.median(logs)) / noise, -CLIP, CLIP)
    algo = ruptures.Pelt(model="l2", min_size=MIN_SIZE, jump=1).fit(standardized.reshape(-1, 1))
    ends = algo.predict(pen=PENALTY_PER_LOG_N * math.log(series.size))
    bounds = [0, *ends]
    found = []
    for left, index, right in zip(bounds, bounds[1:], bounds[2:], strict=False):
        before, after = series[left:index], series[index:right]
        p_value = float(stats.ttest_ind(np.log(before), np.log(after), equal_var=False).pvalue)
        low, high = float(np.median(before)), float(np.median(after))
        found.append(Step(index, low, high, (high / low - 1) * 100, p_value, noise))
    return found


def persistent_drop(steps: Sequence[Step], statuses: Sequence[str], tolerance_pct: float, alpha: float) -> Step | None:
    """The newest step when it is a drop beyond the tolerance, statistically clear (p × positions < alpha), and no
    run since its start was already reported ``regressed``: a persistent step no single run crossed the floor for.
    ``statuses`` are the series' statuses aligned with the values ``steps`` came from (the run being gated as
    'pending')."""
    if not steps:
        return None
    newest = steps[-1]
    # The detector chose the step's position to make the two sides differ most, so its p-value is optimistic:
    # Bonferroni over the positions it could have chosen (bench/bench_gate.py: without it, 2 % false alarms at CV 15 %).
    if newest.magnitude_pct > -tolerance_pct or newest.p_value * len(statuses) >= alpha:
        return None
    if "regressed" in statuses[newest.index :]:
        return None
    return newest
