"""The noise-aware throughput verdict: per-loop samples kept (compressed), their dispersion, and a decision that calls a
run ``regressed`` only when its drop is both beyond the tolerance and statistically clear against the history of
runs with the same environment fingerprint.

Pure: numbers in, a judgement out (``gate`` reads the rows and stores the result). numpy/scipy are imported inside the
functions, so the gate and the DAG file stay light to import.

Why these rules (see bench/bench_gate.py for the measured false-alarm and detection rates):

* Two figures are kept on the row: ais_bench's (1000 * batch size / mean per-loop time: ``throughput``, what the
  tool prints and the seed's numbers are) and the robust one (1000 * batch size / *median* per-loop time:
  ``throughput_robust``). **The verdict judges the robust figure.** A few loops several times slower (GC, an
  interrupt, a page fault; normal in ais_bench per-loop lists) move the mean by their count × size, which differs
  from run to run though the artifact did not change; they do not move the median. A slower artifact slows every
  loop, so the median moves with it. The history (``metrics.history.figure``) and the change points read the same
  figure; a row without per-loop samples (multi-thread ais_bench keeps none) is judged on the tool's figure and
  says so.
* The spread is judged robustly too: 1.4826 × MAD / median of the per-loop times (``latency_robust_cv``; the
  standard deviation's value for normal loops), not the mean-based CV (``latency_cv``, kept), which a handful of
  spikes pushes past any limit. A measurement whose robust CV is above ``max_cv_pct`` (after the benchmark step
  re-measured it) is ``inconclusive``: no verdict either way, and it never enters the history.
* Below ``baseline × (1 - tolerance)`` is necessary but not sufficient: the run must also lie outside what the
  history's run-to-run noise explains (Student's t prediction test on log throughput, scipy), and its own figure's
  bootstrap interval must lie wholly below the floor.
* Runs are not assumed independent: a neighbour or thermal state that lasts hours makes consecutive runs drift
  together, and a window of them then looks quieter than the noise really is. The t test takes its scale (scipy's
  MAD, so heavy tails' rare far runs do not set the bar) and its effective sample sizes (``effective_size``:
  statsmodels' autocorrelation) from the fingerprint's last ``NOISE_RUNS`` ok runs, and a regression must also be
  clearly below (the same t test, ``EACH_RUN_ALPHA``) the newest ``RECENT_RUNS`` ok runs, which a slow drift has
  already brought down and a step has not. So a run that landed where a drift took it is not called a regression;
  the drift itself is a change point (``changepoints``, ruptures), and the reason line says so.
* A run whose own measurements disagree by more than ``MIXED_SPREAD`` run-to-run sigmas (a neighbour came or went
  during it) was not measured at one level and cannot carry a two-run regression.
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

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from convmixer_tasks.defaults import DEFAULT_MAX_CV_PCT, DEFAULT_RUNS
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.measure.loopstats import DEFAULT_MIN_HISTORY, figure_interval, suspect_line
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
NOISE_RUNS = 100  # same-fingerprint ok runs the run-to-run variance and autocorrelation are estimated over
# In a two-run regression each run must also show the drop on its own at this level, so one whole run slowed 2-3x
# cannot carry a merely low neighbour over the line (an intersection test; bench/bench_gate.py, steady series).
EACH_RUN_ALPHA = 0.01
# A run whose own measurements (first and confirmations) spread more than this many run-to-run sigmas was not
# measured at one level; it cannot carry a two-run regression (bench/bench_gate.py: neighbour_cv5, a 2-3x slowdown
# that comes or goes mid-run, spreads 7-10 sigmas; heavy_tails_cv10's far draws rarely reach 6, 3 cost it detection).
MIXED_SPREAD = 6.0
# A regression must also be clearly below the newest few ok runs (the first gate compared with as many): a slow drift
# had already brought those down, a step has not (bench/bench_gate.py, drift_slow).
RECENT_RUNS = 5
RECENT_SHARE = 0.75  # ... by this share of the tolerance below their median (1: 4 % of -15 % steps missed at CV 5 %)
# What an inconclusive (too noisy) row tells its reader to do, in one line.
NOISY_ADVICE = "quiet the host, raise max_cv_pct, or take more loops (benchmark_loop)"


# --- the verdict -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What the row says about its throughput."""

    value: float | None  # the judged figure (images/s, robust when samples were kept): the kept measurement's
    samples_ms: tuple[float, ...] | None  # None: the tool kept no per-loop list
    batch_size: int
    cv: float | None  # the robust per-loop CV (1.4826 × MAD / median); None without samples
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


def effective_size(series: Sequence[float], count: int | None = None) -> float:
    """How many independent runs ``count`` consecutive runs of this series are worth (default: all of it):
    count / (1 + 2 Σ (1 - k/count) ρ_k) over the series' leading autocorrelations that stand out of white noise
    (statsmodels' acf on log throughput, summed while ρ_k > 1.96/√N, lags up to a quarter of the series), kept within
    [2, count]. Runs that drift together (a neighbour or a thermal state lasting hours) are worth fewer than their
    count; independent runs their count (a chance positive ρ_1 inside the white-noise band does not cost power)."""
    from statsmodels.tsa.stattools import acf  # type: ignore[import-untyped]

    logs = [math.log(value) for value in series]
    size = len(logs)
    count = size if count is None else count
    if size < 4 or count < 2 or len(set(logs)) < 2:
        return float(count)
    total = 0.0
    band = 1.96 / math.sqrt(size)
    for lag, rho in enumerate(acf(logs, nlags=max(1, min(count - 1, size // 4)), fft=False)[1:], start=1):
        if rho <= band:
            break
        total += (1 - lag / count) * float(rho)
    return min(float(count), max(2.0, count / (1 + 2 * total)))


def _t_less(values: Sequence[float], history: Sequence[float], noise: Sequence[float] | None = None) -> float:
    """One-sided p that ``values`` come from below the history, on log throughput (noise is multiplicative): Student's
    pooled-variance t test, with three changes that keep it honest on real benchmark noise (bench/bench_gate.py):

    * the run-to-run scale comes from ``noise`` (a longer stretch of the same series, newest first; default the
      history): a drift slower than the history's window shows in the longer stretch, not in the window;
    * that scale is scipy's normal-consistent MAD, so heavy-tailed noise's rare far runs do not set the bar for
      every run, corrected for the autocorrelation that shrinks it (E s² = σ² (1 - (N/N_eff - 1)/(N - 1)));
    * effective sizes replace counts: the history is worth ``effective_size(noise, len(history))`` runs, and the
      new values, as close in time as the history's neighbours, the same share of their count; the degrees of
      freedom follow. With independent runs this is the classic test with a robust scale; with a drifting series it
      asks less of runs that landed where the drift took them."""
    import numpy as np
    from scipy import stats  # type: ignore[import-untyped]

    noise = list(noise) if noise else list(history)
    logs_new = np.log(np.asarray(values, dtype=np.float64))
    logs_old = np.log(np.asarray(history, dtype=np.float64))
    logs_noise = np.log(np.asarray(noise, dtype=np.float64))
    if len(set(logs_noise.tolist())) < 2:  # no spread in the series: any value below the floor is clear
        return 0.0
    size, count, new = logs_noise.size, logs_old.size, logs_new.size
    noise_eff = effective_size(noise)
    window_eff = effective_size(noise, count)
    new_eff = max(1.0, new * window_eff / count)
    # The scale of typical runs (scipy's normal-consistent MAD): heavy-tailed noise's rare far runs would otherwise
    # set the bar for every run (bench/bench_gate.py, heavy_tails_cv10).
    scale = float(stats.median_abs_deviation(logs_noise, scale="normal")) or float(np.std(logs_noise, ddof=1))
    old_variance = scale**2 / (1 - (size / noise_eff - 1) / (size - 1))
    new_variance = float(np.var(logs_new, ddof=1)) if new > 1 else 0.0
    df = new_eff + noise_eff - 2
    pooled = ((new_eff - 1) * new_variance + (noise_eff - 1) * old_variance) / df
    spread = math.sqrt(pooled * (1 / new_eff + 1 / window_eff))
    return float(stats.t.cdf((logs_new.mean() - logs_old.mean()) / spread, df=df))


def _drift_note(history: Sequence[float], noise: Sequence[float] | None) -> str:
    """A clause naming a drifting history (worth under half its count), else ''."""
    n_eff = effective_size(noise or history, len(history))
    if n_eff >= len(history) / 2:
        return ""
    return (
        f"; the series drifts (its last {len(history)} runs are worth {n_eff:.1f}, statsmodels acf): a slow drift "
        "is reported by the change points, not as this run's regression"
    )


def _mixed_runs(runs: dict[str, list[float]], series: Sequence[float]) -> str:
    """A clause naming the runs whose own measurements (first and confirmations) disagree beyond ``MIXED_SPREAD`` ×
    the series' run-to-run scale (scipy's MAD of log figures), else ''. Such a run was not measured at one level:
    the host changed state during it (a neighbour came or went), so it cannot carry a two-run regression;
    measurements of a slower artifact agree with each other at the new level."""
    import numpy as np
    from scipy import stats

    logs = np.log(np.asarray(series, dtype=np.float64))
    scale = float(stats.median_abs_deviation(logs, scale="normal")) if logs.size >= 2 else 0.0
    if scale <= 0:
        return ""
    named = [
        name
        for name, values in runs.items()
        if len(values) > 1 and np.std(np.log(values), ddof=1) > MIXED_SPREAD * scale
    ]
    if not named:
        return ""
    return (
        f"; {' and '.join(named)} measured levels that disagree beyond {MIXED_SPREAD:g}x the run-to-run noise (the "
        "host changed during it), so the pair is not judged a regression"
    )


def _drifted_to(
    values: Sequence[float], history: Sequence[float], noise: Sequence[float] | None, tolerance_pct: float
) -> str:
    """A clause when ``values`` are not clearly below the newest ``RECENT_RUNS`` ok runs (history newest first):
    ``RECENT_SHARE`` of the tolerance below their median and the same t test at ``EACH_RUN_ALPHA``; else ''. Not
    clearly below: the series had already come down most of the way before this run, so the drop is a drift (the
    change points report it), not a step at this run. A step leaves the recent runs at the old level."""
    recent = list(history[:RECENT_RUNS])
    if len(recent) < RECENT_RUNS:
        return ""
    level, line = (
        statistics.geometric_mean(values),
        statistics.median(recent) * (1 - tolerance_pct * RECENT_SHARE / 100),
    )
    if level < line and _t_less(values, recent, noise) < EACH_RUN_ALPHA:
        return ""
    return (
        f"; the newest {RECENT_RUNS} ok runs had already come down to {statistics.median(recent):.2f} (a drift, which "
        "the change points report), so it is not judged a step at this run"
    )


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
    noise_history: Sequence[float] | None = None,
) -> Judgement:
    """The throughput verdict for one row. ``history``: run figures of the same fingerprint's ok runs (newest first,
    this run excluded); ``previous``: the newest earlier row of that fingerprint, if any; ``pair_history``: what
    the two-run rule compares the pair with (default: ``history`` without the previous run when it is in it; the
    gate passes as many figures as ``history`` has, from the one after the previous run on); ``noise_history``: a
    longer stretch of the same ok runs (newest first, up to ``NOISE_RUNS``) the run-to-run variance and
    autocorrelation are estimated over (default: ``history``)."""
    check_options(max_cv_pct, alpha, min_history, runs)
    value = measured.value
    if value is None or value <= 0:
        return Judgement(STATUS_OK, CHECK_UNJUDGED, "throughput not gated: this run measured none", None, None)
    tries = f"{measured.measurements} measurement{'s' if measured.measurements != 1 else ''}"
    if measured.cv is not None and measured.cv * 100 > max_cv_pct:
        return Judgement(
            STATUS_INCONCLUSIVE,
            CHECK_NOISY,
            f"throughput inconclusive: robust per-loop CV {measured.cv * 100:.1f}% > {max_cv_pct:g}% after {tries} "
            f"({value:.2f} img/s not judged; {NOISY_ADVICE})",
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
    noise = [float(one) for one in noise_history or () if one and one > 0] or None
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

    mixed = ""
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
            # the previous run is judged, so it leaves the noise stretch as it leaves the history
            others = noise[1:] if noise and previous.in_history else noise
            # every measurement of each run, the first too: measurements of one artifact at one level agree
            taken = {
                "the previous run": [previous.value, *previous.confirmations],
                "this run": [value, *measured.confirmations],
            }
            mixed = _mixed_runs(taken, others or rest) or _drifted_to(before + evidence, rest, others, tolerance_pct)
            p_pair = _t_less(before + evidence, rest, others) if enough else 1.0
            p_each = max(_t_less(before, rest, others), _t_less(evidence, rest, others)) if enough else 1.0
            if p_pair < alpha and p_each < EACH_RUN_ALPHA and not mixed:
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

    p_alone = _t_less(evidence, history, noise)
    inside = ""
    if not measured.confirmations and measured.samples_ms and len(measured.samples_ms) >= 2:
        low, high = figure_interval(measured.samples_ms, measured.batch_size)
        if high >= floor:  # the run's own noise reaches the floor: not clear whatever the history says
            p_alone = 1.0
            inside = f", its figure's 95% interval [{low:.2f}, {high:.2f}] reaches the floor"
    mixed = mixed or _drifted_to(evidence, history, noise, tolerance_pct)
    if runs == 1 and p_alone < alpha and not mixed:
        return Judgement(
            STATUS_REGRESSED,
            CHECK_REGRESSED,
            f"throughput regressed: {shown} < {against} ({change}; t-test vs history p={p_alone:.2g} < {alpha:g})",
            baseline,
            p_alone,
        )
    why = (
        f"not statistically clear: p={p_alone:.2g} >= {alpha:g}{inside}{_drift_note(history, noise)}{mixed}"
        if p_alone >= alpha
        else f"clear alone (p={p_alone:.2g}), but one run is not enough{mixed}"
    )
    return Judgement(
        STATUS_OK,
        CHECK_BELOW,
        f"throughput ok but below the floor: {shown} < {against} ({change}; {why}); a second such run in a row is "
        "judged together with this one",
        baseline,
        p_alone,
    )
