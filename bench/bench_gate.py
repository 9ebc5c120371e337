"""Old vs new throughput verdict, side by side on the same synthetic histories.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_gate.py [--runs 1000] [--trials 1000] [--cp-runs 200] [--seed 0]

Synthetic model (stated, because the rates depend on it): a run is ``loops`` per-loop times of a batch of 4 at
1000 img/s. Run-to-run noise is lognormal with the series' CV (one factor per measurement: a re-measurement draws a
new one); each loop adds 3 % lognormal jitter. "Hit by a 2-3x slowdown" comes in two forms, reported apart:
intermittent (a CPU hog contending on a random 30-90 % of the loops: high per-loop CV, so the benchmark re-measures)
and steady (every loop and every re-measurement of the run 2-3x slower: indistinguishable from a real regression by
timing alone). The old gate is the one this package shipped: ais_bench's mean-based figure vs the median of the last 5
ok runs minus 10 %. The new one is ``convmixer_tasks.throughput.judge`` with the DAG's defaults, fed the same runs,
each measured as the benchmark step measures: re-measured while its per-loop CV is too high, then confirmed by
fresh measurements when the figure is suspect against the same history (``suspect_line``, ``confirm_if_suspect``).
Change points: ``changepoints.detect`` and the gate's ``persistent_drop`` rule over the gated figures.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numpy as np

from convmixer_tasks import changepoints as cp
from convmixer_tasks import defaults, fingerprint
from convmixer_tasks import throughput as tp

BATCH, BASE, LOOPS, JITTER_CV = 4, 1000.0, 50, 0.03
TOLERANCE_PCT, OLD_HISTORY, NEW_HISTORY = 10.0, 5, 20
CONFIRM, RUNS = defaults.DEFAULT_CONFIRM, tp.DEFAULT_RUNS  # --confirm / --runs-needed change them for the trade-off
WARMUP_RUNS = 25  # runs before the first counted verdict (both gates have full history by then)


def stats_of(samples: list[float]) -> tp.SampleStats:
    """``tp.sample_stats`` of a synthetic run, which always has its ``LOOPS`` loops."""
    stats = tp.sample_stats(samples, BATCH, 5)
    assert stats is not None, "a synthetic run has more than one loop"
    return stats


def _sigma(cv: float) -> float:
    return math.sqrt(math.log1p(cv * cv))


def measure(rng, level: float, cv: float, hit: str | None) -> list[float]:
    """One measurement's per-loop times (ms) at true throughput ``level``."""
    run = level * math.exp(rng.normal(-(_sigma(cv) ** 2) / 2, _sigma(cv)))
    per_loop = run * np.exp(rng.normal(-(JITTER_CV**2) / 2, JITTER_CV, LOOPS))
    if hit == "steady":
        per_loop = per_loop / rng.uniform(2, 3)
    elif hit == "intermittent":
        slowed = rng.random(LOOPS) < rng.uniform(0.3, 0.9)
        per_loop = np.where(slowed, per_loop / rng.uniform(2, 3, LOOPS), per_loop)
    return list(1000.0 * BATCH / per_loop)


def one_run(rng, level, cv, outliers, kind, history, previous_check=None):
    """(old figure, new Measured) of one run: the benchmark step's re-measurement on a high CV, then its
    confirmations when the kept figure is suspect against ``history`` (the same functions the step calls)."""
    hit = kind if rng.random() < outliers else None

    def again():
        nonlocal hit
        if kind != "steady":
            hit = kind if rng.random() < outliers else None  # the hog episode may or may not be over
        return measure(rng, level, cv, hit)

    def quiet(first=None):
        """The benchmark step's measurement: re-measured while the per-loop CV is too high, least noisy kept."""
        tries = [first or again()]
        while (
            len(tries) <= defaults.DEFAULT_REMEASURE and stats_of(tries[-1]).cv * 100 > tp.DEFAULT_MAX_CV_PCT
        ):
            tries.append(again())
        return min(tries, key=lambda one: stats_of(one).cv), len(tries)

    samples = measure(rng, level, cv, hit)
    best, taken = quiet(samples)
    stats = stats_of(best)
    line = tp.suspect_line(history[-NEW_HISTORY:], TOLERANCE_PCT, previous_check=previous_check)
    confirmed = tp.confirm_if_suspect(quiet, stats.throughput, line, CONFIRM)
    figures = tuple(1000.0 * BATCH / statistics.fmean(one) for one, _ in confirmed)
    old_figure = 1000.0 * BATCH / statistics.fmean(samples)  # the old gate measured once, mean-based
    measured = tp.Measured(
        stats.throughput, tuple(best), BATCH, stats.cv, taken + sum(count for _, count in confirmed), figures
    )
    return old_figure, measured


class Series:
    """Both gates' histories over one series, fed run by run."""

    def __init__(self):
        self.old_ok: list[float] = []
        self.new_ok: list[float] = []
        self.previous: tp.Previous | None = None
        self.count = 0

    def previous_check(self) -> str | None:
        return self.previous.check if self.previous else None

    def feed(self, old_figure: float, measured: tp.Measured) -> tuple[bool, tp.Judgement]:
        window = self.old_ok[-OLD_HISTORY:]
        old_regressed = bool(window) and old_figure < statistics.median(window) * (1 - TOLERANCE_PCT / 100)
        if not old_regressed:
            self.old_ok.append(old_figure)
        # as gate.judge_throughput: the pair is compared with as many runs as the history, from the one before the
        # previous run on (the gate reads one figure more for it)
        newest_first = self.new_ok[-(NEW_HISTORY + 1) :][::-1]
        in_history = self.previous is not None and self.previous.in_history
        judgement = tp.judge(
            measured,
            newest_first[:NEW_HISTORY],
            self.previous,
            tolerance_pct=TOLERANCE_PCT,
            runs=RUNS,
            pair_history=newest_first[1:] if in_history else None,
        )
        value = measured.value
        assert value is not None, "a synthetic run always has a figure"
        if judgement.status == "ok":
            self.new_ok.append(value)
        if judgement.status != "inconclusive":
            self.previous = tp.Previous(
                f"r{self.count}", value, judgement.check, judgement.status == "ok", measured.confirmations
            )
        self.count += 1
        return old_regressed, judgement


def noise_only(rng, runs, cv, outliers, kind):
    series = Series()
    old = new = inconclusive = remeasured = confirmed = measurements = 0
    for index in range(runs + WARMUP_RUNS):
        old_figure, measured = one_run(rng, BASE, cv, outliers, kind, series.new_ok, series.previous_check())
        old_flag, judgement = series.feed(old_figure, measured)
        if index >= WARMUP_RUNS:
            old += old_flag
            new += judgement.status == "regressed"
            inconclusive += judgement.status == "inconclusive"
            remeasured += measured.measurements > 1 + len(measured.confirmations)
            confirmed += bool(measured.confirmations)
            measurements += measured.measurements
    return old / runs, new / runs, inconclusive / runs, remeasured / runs, confirmed / runs, measurements / runs


def step_detection(rng, trials, cv, drop):
    """Share of trials whose step is flagged at the 1st or 2nd run after it (old and new)."""
    old_hits = new_hits = 0
    for _ in range(trials):
        series = Series()
        for _ in range(WARMUP_RUNS + 5):
            series.feed(*one_run(rng, BASE, cv, 0.0, None, series.new_ok, series.previous_check()))
        old_flags, new_flags = [], []
        for _ in range(2):
            old_flag, judgement = series.feed(
                *one_run(rng, BASE * (1 - drop), cv, 0.0, None, series.new_ok, series.previous_check())
            )
            old_flags.append(old_flag)
            new_flags.append(judgement.status == "regressed")
        old_hits += any(old_flags)
        new_hits += any(new_flags)
    return old_hits / trials, new_hits / trials


def change_point_detection(rng, trials, cv=0.02, drop=0.05, before=40, within=5):
    """Share of trials whose step (at run ``before``) the detector places within ±2 runs of it by the ``within``-th
    run after it, with the series as the gate reads it (every gated figure; PELT sees the newest cp.WINDOW)."""
    hits = 0
    for _ in range(trials):
        figures = [one_run(rng, BASE, cv, 0.0, None, [])[1].value for _ in range(before)]
        for _ in range(within):
            figures.append(one_run(rng, BASE * (1 - drop), cv, 0.0, None, [])[1].value)
            steps = cp.detect(figures[-cp.WINDOW :])
            if any(abs(step.index - before) <= 2 and step.magnitude_pct < 0 for step in steps):
                hits += 1
                break
    return hits / trials


def change_point_alarms(rng, runs, cv, outliers, kind):
    """Share of runs the gate's change-point rule (cp.persistent_drop) would flag on a noise-only series, after a
    full window of history: PELT over the newest cp.WINDOW gated figures at every run."""
    figures = [one_run(rng, BASE, cv, outliers, kind, [])[1].value for _ in range(cp.WINDOW)]
    statuses = ["ok"] * len(figures)
    flagged = 0
    for _ in range(runs):
        figures.append(one_run(rng, BASE, cv, outliers, kind, [])[1].value)
        statuses.append("pending")
        drop = cp.persistent_drop(
            cp.detect(figures[-cp.WINDOW :]), statuses[-cp.WINDOW :], TOLERANCE_PCT, tp.DEFAULT_ALPHA
        )
        statuses[-1] = "regressed" if drop else "ok"
        flagged += drop is not None
    return flagged / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cp-runs", type=int, default=100, help="runs per noise series for the change-point rule")
    parser.add_argument("--cp-trials", type=int, default=200)
    parser.add_argument("--confirm", type=int, default=defaults.DEFAULT_CONFIRM, help="confirmations of a suspect run")
    parser.add_argument("--runs-needed", type=int, default=tp.DEFAULT_RUNS, help="consecutive runs a regression needs")
    args = parser.parse_args()
    global CONFIRM, RUNS
    CONFIRM, RUNS = args.confirm, args.runs_needed
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    print(
        f"CPU: {fingerprint.cpu_model()} ({os.cpu_count()} logical cores); "
        f"load {os.getloadavg()[0]:.2f}; seed {args.seed}"
    )
    print(f"new gate: confirm {CONFIRM}, runs needed {RUNS}, alpha {tp.DEFAULT_ALPHA}, tolerance {TOLERANCE_PCT:g}%")
    print(f"\nnoise only, {args.runs} runs each (false alarms = share of runs marked regressed)")
    print(
        f"{'series':44s} {'old gate':>9s} {'new gate':>9s} {'inconcl.':>9s} {'re-meas.':>9s} {'confirmed':>9s} "
        f"{'meas/run':>9s}"
    )
    cases = [
        ("lognormal CV 5%", 0.05, 0.0, None),
        ("lognormal CV 15%", 0.15, 0.0, None),
        ("lognormal CV 30%", 0.30, 0.0, None),
        ("CV 5% + 5% runs 2-3x slower (intermittent)", 0.05, 0.05, "intermittent"),
        ("CV 15% + 5% runs 2-3x slower (intermittent)", 0.15, 0.05, "intermittent"),
        ("CV 5% + 5% runs 2-3x slower (steady)", 0.05, 0.05, "steady"),
    ]
    for name, cv, outliers, kind in cases:
        old, new, inconclusive, remeasured, confirmed, per_run = noise_only(rng, args.runs, cv, outliers, kind)
        print(f"{name:44s} {old:9.2%} {new:9.2%} {inconclusive:9.2%} {remeasured:9.2%} {confirmed:9.2%} {per_run:9.2f}")
    print(f"\nstep detection, {args.trials} trials (flagged at the 1st or 2nd run after the step)")
    old, new = step_detection(rng, args.trials, 0.05, 0.15)
    print(f"{'-15% step at CV 5%':44s} {old:9.2%} {new:9.2%}")
    found = change_point_detection(rng, args.cp_trials)
    print(
        f"\nchange points ({cp.DETECTOR}): -5% step at CV 2% found within 5 runs, {args.cp_trials} trials: {found:.1%}"
    )
    print(f"change-point rule (persistent drop beyond the tolerance) on noise only, {args.cp_runs} runs each:")
    for name, cv, outliers, kind in cases:
        print(f"{name:44s} {change_point_alarms(rng, args.cp_runs, cv, outliers, kind):9.2%}")
    print(f"\n{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
