"""Old vs new throughput verdict, side by side, replayed on noise models (ours or one given with ``--noise``).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_gate.py [--runs 1000] [--trials 200] [--cp-trials 200] [--seed 0]
    PYTHONPATH=$PWD .venv/bin/python bench/bench_gate.py --noise FILE.py:FUNC [--step -0.2] [--runs N] [--trials M]
        [--seed S] [-o json]

The replay contract (``--noise``): ``FUNC(rng, ms_per_loop) -> per-loop times (ms)`` of one measurement, given a
numpy Generator and the true time per loop; called once per measurement in run order (first measurement,
re-measurements, confirmations, next run), so it may keep state. ``bench/noise_models.py`` holds ours; without
``--noise`` every one of its ``MODELS`` is replayed and tabled.

Harness (stated, because the rates depend on it): batches of 4 at a true 1000 img/s (4 ms a loop). A run is
measured as the benchmark step measures (``loopstats.measure_until_quiet``: re-measured while the robust per-loop CV
is above 10 %, the least noisy kept; then ``suspect_line`` / ``confirm_if_suspect`` against the same history) and
judged by ``throughput.judge`` at the DAG's defaults; ``ok`` runs join the history (newest 20). The old gate is the
one this package first shipped: ais_bench's mean-based figure of the run's first measurement vs the median of its
last 5 ok runs minus 10 %. Noise-only: ``--runs`` counted runs after 40 warm-up runs; false alarm = a run marked
``regressed``. Step trials: every ``runs/trials``-th run of that series (after the warm-up) is branched, and on the
branch the true level changes by ``--step`` for two runs; detected_within_2 = the share of branches flagged at the
first or second run (branches share the history they start from, so neighbouring trials are not independent).
Change points (``changepoints.detect`` + the gate's ``persistent_drop``) on the verdict's figures: ``--cp-runs``
noise-only runs after a full window, and ``--cp-trials`` trials of a -5 % step at CV 2 %.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from convmixer_tasks import defaults
from convmixer_tasks.measure import changepoints as cp
from convmixer_tasks.measure import fingerprint, loopstats
from convmixer_tasks.verdict import throughput as tp

BATCH, BASE = 4, 1000.0
TOLERANCE_PCT, OLD_HISTORY, NEW_HISTORY = 10.0, 5, 20
WARMUP_RUNS = 40  # runs before the first counted verdict: both histories full (the noise stretch grows to 100)
WARMUP_LOOPS = 5  # as ais_bench's warm-up: recorded on the measurement, not in its samples
MODELS_FILE = Path(__file__).with_name("noise_models.py")
EXTRA_STEPS = (("heavy_tails_cv10", -0.20),)  # step trials beyond the table's --step, ours only


def load_model(spec: str):
    """``FILE.py:FUNC`` -> the callable (a clear one-line error for anything else)."""
    path, _, name = spec.rpartition(":")
    if not path or not name or not path.endswith(".py"):
        raise SystemExit(f"--noise {spec!r}: expected FILE.py:FUNC, e.g. bench/noise_models.py:drift_slow")
    if not Path(path).is_file():
        raise SystemExit(f"--noise {spec!r}: {path} is not a file; give the path of a Python file")
    module_spec = importlib.util.spec_from_file_location(f"noise_{Path(path).stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    model = getattr(module, name, None)
    if not callable(model):
        raise SystemExit(f"--noise {spec!r}: {path} has no callable {name}; define FUNC(rng, ms_per_loop)")
    return model


class Bench:
    """Measurements drawn from one noise model, in call order."""

    def __init__(self, model, rng: np.random.Generator, name: str):
        self.model, self.rng, self.name = model, rng, name

    def measure(self, level: float) -> SimpleNamespace:
        times = np.asarray(self.model(self.rng, 1000.0 * BATCH / level), dtype=np.float64)
        if times.ndim != 1 or times.size < 2 or not np.all(np.isfinite(times)) or np.any(times <= 0):
            raise SystemExit(
                f"noise model {self.name} must return at least 2 positive finite per-loop times (ms) as a 1-D list; "
                f"got shape {times.shape}"
            )
        return SimpleNamespace(
            samples=times.tolist(), warmup=WARMUP_LOOPS, batch_size=BATCH, throughput=1000.0 * BATCH / times.mean()
        )


@dataclass
class Series:
    """Both gates' histories over one series, fed run by run."""

    old_ok: list[float] = field(default_factory=list)
    new_ok: list[float] = field(default_factory=list)
    previous: tp.Previous | None = None
    count: int = 0

    def branch(self) -> Series:
        return Series(list(self.old_ok[-OLD_HISTORY:]), list(self.new_ok[-tp.NOISE_RUNS :]), self.previous)

    def run(self, bench: Bench, level: float) -> tuple[bool, tp.Judgement, tp.Measured]:
        """Measure one run at true throughput ``level`` as the benchmark step does, then judge it with both gates."""

        def quietly() -> loopstats.Tries:
            return loopstats.measure_until_quiet(
                lambda: bench.measure(level), BATCH, defaults.DEFAULT_REMEASURE, tp.DEFAULT_MAX_CV_PCT
            )

        tries = quietly()
        previous_check = self.previous.check if self.previous else None
        line = loopstats.suspect_line(self.new_ok[-NEW_HISTORY:], TOLERANCE_PCT, previous_check=previous_check)
        confirmed = loopstats.confirm_if_suspect(quietly, tries.figure, line, defaults.DEFAULT_CONFIRM)
        stats = tries.stats
        measured = tp.Measured(
            tries.figure,
            tuple(tries.chosen.samples) if stats else None,
            BATCH,
            stats.robust_cv if stats else None,
            len(tries.all) + sum(len(one.all) for one in confirmed),
            tuple(one.figure for one in confirmed),
        )
        old_figure = tries.all[0].throughput  # the old gate measured once, mean-based
        window = self.old_ok[-OLD_HISTORY:]
        old_regressed = bool(window) and old_figure < statistics.median(window) * (1 - TOLERANCE_PCT / 100)
        if not old_regressed:
            self.old_ok.append(old_figure)
        # as gate.judge_throughput: the pair is compared with as many runs as the history, from the one before the
        # previous run on (the gate reads one figure more for it)
        newest_first = self.new_ok[-tp.NOISE_RUNS :][::-1]
        in_history = self.previous is not None and self.previous.in_history
        judgement = tp.judge(
            measured,
            newest_first[:NEW_HISTORY],
            self.previous,
            tolerance_pct=TOLERANCE_PCT,
            pair_history=newest_first[1 : NEW_HISTORY + 1] if in_history else None,
            noise_history=newest_first,
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
        return old_regressed, judgement, measured


def replay(bench: Bench, runs: int, trials: int, step: float) -> dict:
    """Noise-only rates over ``runs`` counted runs, and ``trials`` step branches off the same series."""
    series = Series()
    spacing = max(1, runs // trials) if runs and trials else 10
    base_runs = max(runs, trials * spacing)
    counts = dict.fromkeys(("old", "new", "inconclusive", "measurements", "drifting"), 0)
    hits = dict(old=0, new=0)
    done = 0
    for index in range(WARMUP_RUNS + base_runs):
        old_flag, judgement, measured = series.run(bench, BASE)
        counted = index - WARMUP_RUNS
        if 0 <= counted < runs:
            counts["old"] += old_flag
            counts["new"] += judgement.status == "regressed"
            counts["inconclusive"] += judgement.status == "inconclusive"
            counts["measurements"] += measured.measurements
            counts["drifting"] += "history drifts" in judgement.reason
        if counted >= 0 and done < trials and counted % spacing == spacing - 1:
            branch, flags = series.branch(), []
            for _ in range(2):
                old_flag, judgement, _ = branch.run(bench, BASE * (1 + step))
                flags.append((old_flag, judgement.status == "regressed"))
            hits["old"] += any(old for old, _ in flags)
            hits["new"] += any(new for _, new in flags)
            done += 1
    result: dict = {"runs": runs, "trials": done, "step": step}
    if runs:
        result.update(
            false_alarm_rate=counts["new"] / runs,
            inconclusive_rate=counts["inconclusive"] / runs,
            measurements_per_run=counts["measurements"] / runs,
            drift_noted_rate=counts["drifting"] / runs,
            old_false_alarm_rate=counts["old"] / runs,
        )
    if done:
        result.update(detected_within_2=hits["new"] / done, old_detected_within_2=hits["old"] / done)
    return result


def measure_quietly(bench: Bench, level: float) -> loopstats.Tries:
    """One measurement as the benchmark step takes it: re-measured while the robust per-loop CV is too high."""
    return loopstats.measure_until_quiet(
        lambda: bench.measure(level), BATCH, defaults.DEFAULT_REMEASURE, tp.DEFAULT_MAX_CV_PCT
    )


def figures(bench: Bench, level: float, count: int) -> list[float]:
    """The verdict's figures of ``count`` runs at ``level``, each measured as the benchmark step measures."""
    return [measure_quietly(bench, level).figure for _ in range(count)]


def change_point_alarms(bench: Bench, runs: int) -> float:
    """Share of runs the gate's change-point rule (cp.persistent_drop) flags on a noise-only series, after a full
    window of history: PELT over the newest cp.WINDOW figures at every run."""
    series = figures(bench, BASE, cp.WINDOW)
    statuses = ["ok"] * len(series)
    flagged = 0
    for _ in range(runs):
        series.extend(figures(bench, BASE, 1))
        statuses.append("pending")
        drop = cp.persistent_drop(
            cp.detect(series[-cp.WINDOW :]), statuses[-cp.WINDOW :], TOLERANCE_PCT, tp.DEFAULT_ALPHA
        )
        statuses[-1] = "regressed" if drop else "ok"
        flagged += drop is not None
    return flagged / runs


def change_point_detection(bench: Bench, trials: int, drop: float = 0.05, before: int = 40, within: int = 5) -> float:
    """Share of trials whose step (at run ``before``) the detector places within ±2 runs of it by the ``within``-th
    run after it."""
    hits = 0
    for _ in range(trials):
        series = figures(bench, BASE, before)
        for _ in range(within):
            series.extend(figures(bench, BASE * (1 - drop), 1))
            if any(abs(one.index - before) <= 2 and one.magnitude_pct < 0 for one in cp.detect(series[-cp.WINDOW :])):
                hits += 1
                break
    return hits / trials


def host() -> str:
    return f"CPU: {fingerprint.cpu_model()} ({os.cpu_count()} logical cores); load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", help="FILE.py:FUNC, a noise model under the replay contract (default: all of ours)")
    parser.add_argument("--step", type=float, default=-0.15, help="persistent change of the true level, e.g. -0.2")
    parser.add_argument("--runs", type=int, default=1000, help="noise-only runs per model (0 skips)")
    parser.add_argument("--trials", type=int, default=200, help="step trials per model (0 skips)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cp-runs", type=int, default=0, help="noise-only runs for the change-point rule per model")
    parser.add_argument("--cp-trials", type=int, default=0, help="trials of a -5 %% step at CV 2 %% (ours only)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args()
    for name in ("runs", "trials", "cp_runs", "cp_trials"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not -1 < args.step < 10:
        parser.error(f"--step must be a fraction above -1 (e.g. -0.2 for a 20 % drop), got {args.step}")
    started = time.perf_counter()
    if args.noise:
        models = [(args.noise, args.noise)]
    else:
        sys.path.insert(0, str(MODELS_FILE.parent))
        models = [(f"{MODELS_FILE}:{name}", what) for name, what in __import__("noise_models").MODELS]
    results: dict = {}
    if args.output == "table":
        print(host() + f"; seed {args.seed}; {args.runs} runs, {args.trials} step trials ({args.step:+.0%}) per model")
        print(
            f"{'noise model':60s} {'old FA':>7s} {'new FA':>7s} {'inconcl':>7s} {'meas/run':>8s} "
            f"{'old det':>7s} {'new det':>7s} {'cp FA':>6s}"
        )
    for index, (spec, what) in enumerate(models):
        rng = np.random.default_rng([args.seed, index])
        bench = Bench(load_model(spec), rng, spec)
        result = replay(bench, args.runs, args.trials, args.step)
        if args.cp_runs:
            result["change_point_false_alarm_rate"] = change_point_alarms(bench, args.cp_runs)
        results[spec.rpartition(":")[2]] = result
        if args.output == "table":

            def pct(key: str, result: dict = result) -> str:
                return f"{result[key]:.2%}" if key in result else "-"

            print(
                f"{what[:60]:60s} {pct('old_false_alarm_rate'):>7s} {pct('false_alarm_rate'):>7s} "
                f"{pct('inconclusive_rate'):>7s} {result.get('measurements_per_run', 0):8.2f} "
                f"{pct('old_detected_within_2'):>7s} {pct('detected_within_2'):>7s} "
                f"{pct('change_point_false_alarm_rate'):>6s}",
                flush=True,
            )
    if args.trials and not args.noise:  # the second step target: -20 % at CV 10 %, heavy-tailed
        for name, step in EXTRA_STEPS:
            rng = np.random.default_rng([args.seed, len(models) + 1])
            bench = Bench(load_model(f"{MODELS_FILE}:{name}"), rng, name)
            result = replay(bench, 0, args.trials, step)
            results[f"{name} step {step:+.0%}"] = result
            if args.output == "table":
                print(
                    f"{name}, {step:+.0%} step, {args.trials} trials: detected within 2 runs "
                    f"{result['detected_within_2']:.1%} (old gate {result['old_detected_within_2']:.1%})"
                )
    if args.cp_trials and not args.noise:
        rng = np.random.default_rng([args.seed, len(models)])
        bench = Bench(load_model(f"{MODELS_FILE}:lognormal_cv2"), rng, "lognormal_cv2")
        found = change_point_detection(bench, args.cp_trials)
        results["change_point_detection"] = {"trials": args.cp_trials, "step": -0.05, "found_within_5": found}
        if args.output == "table":
            print(f"change points: -5% step at CV 2% found within 5 runs, {args.cp_trials} trials: {found:.1%}")
    elapsed = time.perf_counter() - started
    if args.output == "json":
        single = results[next(iter(results))] if args.noise else {"models": results}
        print(json.dumps({**single, "host": host(), "seed": args.seed, "seconds": round(elapsed, 1)}, indent=2))
    else:
        print(f"{elapsed:.1f} s")


if __name__ == "__main__":
    main()
