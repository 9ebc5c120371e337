"""The noise-aware throughput verdict: per-loop samples kept (compressed), their dispersion, and a decision that calls a
run ``regressed`` only when its drop is both beyond the tolerance and statistically clear against the history of
runs with the same environment fingerprint.

Pure: numbers in, a judgement out (``gate`` reads the rows and stores the result). numpy/scipy are imported inside the
functions, so the gate and the DAG file stay light to import.

Why these rules (see bench/bench_gate.py for the measured false-alarm and detection rates):

* The run's figure is the stored one (ais_bench's 1000 * batch size / mean time; the UI shows the same); the kept
  per-loop samples give its dispersion and a bootstrap interval. Without them (multi-thread ais_bench keeps no
  per-loop list) the verdict says it judged the figure alone.
* A run whose own samples are too dispersed (CV above ``max_cv_pct``, after the benchmark step re-measured it) is
  ``inconclusive``: no verdict either way, and it never enters the history.
* Below ``baseline × (1 - tolerance)`` is necessary but not sufficient: the run must also lie outside what the
  history's run-to-run noise explains (Student's t prediction test on log throughput, one new value against the
  history, scipy), and its own figure's bootstrap interval must lie wholly below the floor.
* A first measurement below ``baseline × (1 - tolerance × SUSPECT_SHARE)`` is *suspect*: the benchmark step, which
  reads the same-fingerprint history, takes ``confirm`` more measurements (each a fresh process/session, so the
  run-to-run noise is drawn again) and the verdict judges the run on those confirmations alone. The first one is
  left out of that judgement because it was picked for being low (its figure stays the row's figure, so the history
  remains an unbiased sample of single measurements). After a run judged ``below``, the next run is always
  confirmed, so a pair is judged on confirmations.
* One run is never enough: a whole run can be slowed 2-3x by a neighbour that stays for all of its measurements and
  leaves no trace in timing alone. A regression needs two consecutive runs (same fingerprint, not inconclusive)
  whose levels are both below the suspect line, whose mean lies below the floor, whose pooled evidence is
  statistically clear against the rest of the history (``alpha``) and each of which shows the drop on its own
  (``EACH_RUN_ALPHA``); it is reported with its start run. (``runs=1`` restores
  single-run verdicts, for hosts where no such neighbour exists; bench/bench_gate.py shows what that costs.)
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

from convmixer_tasks.defaults import DEFAULT_MAX_CV_PCT, DEFAULT_RUNS
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.status import (
    CHECK_BELOW,
    CHECK_NOISY,
    CHECK_OK,
    CHECK_REGRESSED,
    CHECK_UNJUDGED,
    STATUS_INCONCLUSIVE,
    STATUS_OK,
    STATUS_REGRESSED,
)

DEFAULT_ALPHA = 0.003  # one-sided; small because a false alarm costs a person's afternoon (bench/bench_gate.py)
DEFAULT_MIN_HISTORY = 5  # same-fingerprint ok runs needed before any verdict (Conbench's "no history, no verdict")
SUSPECT_SHARE = 0.5  # a first measurement more than half the tolerance below the baseline is suspect
# In a two-run regression each run must also show the drop on its own at this level, so one whole run slowed 2-3x
# cannot carry a merely low neighbour over the line (an intersection test; bench/bench_gate.py, steady series).
EACH_RUN_ALPHA = 0.01
BOOTSTRAP_RESAMPLES = 999
BOOTSTRAP_CONFIDENCE = 0.95


# --- samples -------------------------------------------------------------------------------------------------------


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
    cv: float  # sample standard deviation / mean of the per-loop times (0.12 = 12 %)
    iqr_ms: float
    throughput: float  # 1000 * batch size / mean per-loop time: ais_bench's figure, the run's figure for the verdict


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
        cv=float(stats.variation(times, ddof=1)),
        iqr_ms=float(stats.iqr(times)),
        throughput=float(1000.0 * batch_size / times.mean()),
    )


def figure_interval(samples_ms: Sequence[float], batch_size: int, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (percentile method, scipy) of the run's figure, 1000 * batch size / mean time."""
    import numpy as np
    from scipy import stats

    def figure(times, axis=-1):
        return 1000.0 * batch_size / np.mean(times, axis=axis)

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
    all: list  # every measurement taken (BenchResult-like: .samples, .batch_size, .warmup)
    chosen: Any  # the least noisy one
    stats: SampleStats | None  # its stats; None when it kept no per-loop samples


def measure_until_quiet(measure: Callable[[], Any], batch_size: int, remeasure: int, max_cv_pct: float | None) -> Tries:
    """Measure once, then again (up to ``remeasure`` more times) while the per-loop CV is above ``max_cv_pct``.
    A measurement without per-loop samples cannot show its CV, so it is never repeated."""
    if isinstance(remeasure, bool) or not isinstance(remeasure, int) or remeasure < 0:
        raise ConfigError(f"remeasure must be an integer >= 0, got {remeasure!r} (param benchmark_remeasure)")
    taken: list[tuple[Any, SampleStats | None]] = []
    while True:
        result = measure()
        stats = sample_stats(result.samples, batch_size, result.warmup)
        taken.append((result, stats))
        noisy = stats is not None and max_cv_pct is not None and stats.cv * 100 > max_cv_pct
        if not noisy or len(taken) > remeasure:
            break
    chosen, stats = min(taken, key=lambda one: one[1].cv if one[1] is not None else math.inf)
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


# --- the verdict -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What the row says about its throughput."""

    value: float | None  # the row's throughput figure (images/s): its first (least noisy) measurement
    samples_ms: tuple[float, ...] | None  # None: the tool kept no per-loop list
    batch_size: int
    cv: float | None
    measurements: int = 1  # every measurement the benchmark step took (re-measurements and confirmations included)
    confirmations: tuple[float, ...] = ()  # figures of the measurements taken because the first was suspect


@dataclass(frozen=True)
class Previous:
    """The newest earlier row of the same series and fingerprint (for the two-run rule)."""

    run_id: str
    value: float
    check: str | None
    in_history: bool  # it is ``history[0]``: left out of the history when it is judged together with this run
    confirmations: tuple[float, ...] = ()


@dataclass(frozen=True)
class Judgement:
    status: str  # "ok", "regressed" or "inconclusive" (metrics.schema statuses)
    check: str  # one of THROUGHPUT_CHECKS
    reason: str  # one line for gate_reasons, starting "throughput <verdict>"
    baseline: float | None  # median of the same-fingerprint history
    p_value: float | None


def check_options(max_cv_pct: float, alpha: float, min_history: int, runs: int = DEFAULT_RUNS) -> None:
    if isinstance(max_cv_pct, bool) or not isinstance(max_cv_pct, (int, float)) or not 0 < max_cv_pct <= 1000:
        raise ConfigError(f"max_cv_pct must be a percentage above 0, got {max_cv_pct!r}; e.g. 10")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"throughput alpha must be between 0 and 1, got {alpha!r}; e.g. 0.005")
    if isinstance(min_history, bool) or not isinstance(min_history, int) or min_history < 2:
        raise ConfigError(f"min_history must be an integer >= 2, got {min_history!r}")
    if runs not in (1, 2) or isinstance(runs, bool):
        raise ConfigError(f"throughput runs must be 1 or 2 (consecutive runs a regression needs), got {runs!r}")


def _t_less(values: Sequence[float], history: Sequence[float]) -> float:
    """One-sided p that ``values`` come from below the history, on log throughput (noise is multiplicative).
    With one value this is the t prediction test; scipy's pooled-variance t-test is exactly that."""
    from scipy import stats

    logs_new = [math.log(value) for value in values]
    logs_old = [math.log(value) for value in history]
    if len(set(logs_old)) < 2:  # no spread in the history: any value below the floor is clear
        return 0.0
    return float(stats.ttest_ind(logs_new, logs_old, equal_var=True, alternative="less").pvalue)


def _evidence(value: float, confirmations: Sequence[float]) -> list[float]:
    """What a run is judged on: its confirmations when it took them (the suspect first figure is left out), else its
    figure."""
    return [float(one) for one in confirmations] or [value]


def judge(
    measured: Measured,
    history: Sequence[float],
    previous: Previous | None = None,
    *,
    tolerance_pct: float,
    max_cv_pct: float = DEFAULT_MAX_CV_PCT,
    alpha: float = DEFAULT_ALPHA,
    min_history: int = DEFAULT_MIN_HISTORY,
    runs: int = DEFAULT_RUNS,
    history_note: str = "same-fingerprint ok runs",
    pair_history: Sequence[float] | None = None,
) -> Judgement:
    """The throughput verdict for one row. ``history``: run figures of the same fingerprint's ok runs (newest first,
    this run excluded); ``previous``: the newest earlier row of that fingerprint, if any; ``pair_history``: what
    the two-run rule compares the pair with (default: ``history`` without the previous run when it is in it; the
    gate passes as many figures as ``history`` has, from the one after the previous run on)."""
    check_options(max_cv_pct, alpha, min_history, runs)
    value = measured.value
    if value is None or value <= 0:
        return Judgement(STATUS_OK, CHECK_UNJUDGED, "throughput not gated: this run measured none", None, None)
    tries = f"{measured.measurements} measurement{'s' if measured.measurements != 1 else ''}"
    if measured.cv is not None and measured.cv * 100 > max_cv_pct:
        return Judgement(
            STATUS_INCONCLUSIVE,
            CHECK_NOISY,
            f"throughput inconclusive: per-loop CV {measured.cv * 100:.1f}% > {max_cv_pct:g}% after {tries} "
            f"({value:.2f} img/s not judged; quiet the host or raise max_cv_pct)",
            None,
            None,
        )
    figure = "from per-loop samples" if measured.samples_ms else "no per-loop samples: dispersion unknown"
    history = [float(one) for one in history if one and one > 0]
    if len(history) < min_history:
        return Judgement(
            STATUS_OK,
            CHECK_UNJUDGED,
            f"throughput not judged: {value:.2f} img/s ({figure}), only {len(history)} {history_note} "
            f"(need {min_history})",
            statistics.median(history) if history else None,
            None,
        )
    baseline = statistics.median(history)
    floor = baseline * (1 - tolerance_pct / 100)
    line = suspect_line(history, tolerance_pct, min_history)  # the line itself, whatever the run before said
    assert line is not None  # enough history, checked above
    evidence = _evidence(value, measured.confirmations)
    level = statistics.geometric_mean(evidence)
    against = f"floor {floor:.2f} = median of {len(history)} {history_note} {baseline:.2f} - {tolerance_pct:g}%"
    change = f"{(level / baseline - 1) * 100:+.1f}%"
    shown = f"{level:.2f}"
    if measured.confirmations:
        count = len(measured.confirmations)
        shown = (
            f"{level:.2f} (geometric mean of {count} confirmation{'s' if count != 1 else ''}; "
            f"the first, {value:.2f}, was below {line:.2f})"
        )

    if previous is not None:
        # Two consecutive runs, judged together: a persistent step that neither run proved alone.
        before = _evidence(previous.value, previous.confirmations)
        before_level = statistics.geometric_mean(before)
        if pair_history is not None:
            rest = [float(one) for one in pair_history if one and one > 0]
        else:
            rest = history[1:] if previous.in_history else history
        if before_level < line and level < line and statistics.geometric_mean([before_level, level]) < floor:
            enough = len(rest) >= min_history
            p_pair = _t_less(before + evidence, rest) if enough else 1.0
            p_each = max(_t_less(before, rest), _t_less(evidence, rest)) if enough else 1.0
            if p_pair < alpha and p_each < EACH_RUN_ALPHA:
                return Judgement(
                    STATUS_REGRESSED,
                    CHECK_REGRESSED,
                    f"throughput regressed since run {previous.run_id}: {before_level:.2f} then {shown}, {against} "
                    f"({change}; two-run t-test vs history p={p_pair:.2g} < {alpha:g})",
                    baseline,
                    p_pair,
                )
    if level >= floor:
        return Judgement(STATUS_OK, CHECK_OK, f"throughput ok: {shown} >= {against} ({change})", baseline, None)

    p_alone = _t_less(evidence, history)
    inside = ""
    if not measured.confirmations and measured.samples_ms and len(measured.samples_ms) >= 2:
        low, high = figure_interval(measured.samples_ms, measured.batch_size)
        if high >= floor:  # the run's own noise reaches the floor: not clear whatever the history says
            p_alone = 1.0
            inside = f", its figure's 95% interval [{low:.2f}, {high:.2f}] reaches the floor"
    if runs == 1 and p_alone < alpha:
        return Judgement(
            STATUS_REGRESSED,
            CHECK_REGRESSED,
            f"throughput regressed: {shown} < {against} ({change}; t-test vs history p={p_alone:.2g} < {alpha:g})",
            baseline,
            p_alone,
        )
    why = (
        f"not statistically clear: p={p_alone:.2g} >= {alpha:g}{inside}"
        if p_alone >= alpha
        else f"clear alone (p={p_alone:.2g}), but one run is not enough"
    )
    return Judgement(
        STATUS_OK,
        CHECK_BELOW,
        f"throughput ok but below the floor: {shown} < {against} ({change}; {why}); a second such run in a row is "
        "judged together with this one",
        baseline,
        p_alone,
    )
