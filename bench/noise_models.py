"""Noise models for ``bench/bench_gate.py --noise bench/noise_models.py:NAME``.

The replay contract: ``NAME(rng, ms_per_loop) -> per-loop times (ms)`` of one measurement, given a numpy Generator
and the true time per loop. The harness calls it once per measurement, in run order (a run's first measurement,
its re-measurements and confirmations, then the next run's), so a model may keep state across calls: the stateful
ones here are instances of small classes, whose state persists for the life of the process.

Each model names what it stands for. Parameters are stated in ``MODELS`` (the table's order). Run-to-run noise is
multiplicative (lognormal, or Student-t on the log scale), so a model's "CV" is the coefficient of variation of its
run factor.
"""

from __future__ import annotations

import math

import numpy as np

LOOPS = 100  # loops a measurement keeps (ais_bench --loop 100 after its warm-up)
JITTER_CV = 0.03  # per-loop jitter, lognormal, every model


def _sigma(cv: float) -> float:
    """The log-scale sigma of a lognormal with coefficient of variation ``cv``."""
    return math.sqrt(math.log1p(cv * cv))


def _lognormal(rng, cv: float, size=None):
    """Mean-1 lognormal factors with coefficient of variation ``cv``."""
    sigma = _sigma(cv)
    return np.exp(rng.normal(-(sigma**2) / 2, sigma, size))


def _loops(rng, ms_per_loop: float, run_factor: float) -> np.ndarray:
    """One measurement's loops: the run's level times per-loop jitter."""
    return ms_per_loop * run_factor * _lognormal(rng, JITTER_CV, LOOPS)


# --- today's models (bench_gate.py's original cases, now behind the contract) -------------------------------------


class Lognormal:
    """Independent lognormal run-to-run noise: each measurement (a fresh ais_bench process / ORT session) draws its
    own level."""

    def __init__(self, cv: float):
        self.cv = cv

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        return _loops(rng, ms_per_loop, _lognormal(rng, self.cv))


class Intermittent(Lognormal):
    """A CPU hog contending on a random 30-90 % of the loops of ``share`` of the measurements, those loops 2-3x
    slower (a high per-loop spread: the benchmark re-measures)."""

    def __init__(self, cv: float, share: float = 0.05):
        super().__init__(cv)
        self.share = share

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        times = super().__call__(rng, ms_per_loop)
        if rng.random() < self.share:
            slowed = rng.random(LOOPS) < rng.uniform(0.3, 0.9)
            times = np.where(slowed, times * rng.uniform(2, 3, LOOPS), times)
        return times


class Neighbour(Lognormal):
    """A neighbour that slows every loop 2-3x for an episode of consecutive measurements (geometric, mean
    ``length``), starting so that ``share`` of the measurements fall in one: invisible to per-loop timing."""

    def __init__(self, cv: float, share: float = 0.05, length: float = 3.0):
        super().__init__(cv)
        self.start, self.stay = share / length, 1 - 1 / length
        self.factor = 0.0  # 0: no neighbour now

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        if self.factor and rng.random() >= self.stay:
            self.factor = 0.0
        elif not self.factor and rng.random() < self.start:
            self.factor = float(rng.uniform(2, 3))
        return super().__call__(rng, ms_per_loop) * (self.factor or 1.0)


# --- noise the first gate was not tuned on (issue 20) -------------------------------------------------------------


class Drift(Lognormal):
    """A level that wanders and persists over many runs (a neighbour or thermal state lasting hours): an AR(1) on the
    log level per measurement, correlation ``phi`` from one measurement to the next, marginal CV ``drift_cv``; plus
    independent lognormal noise ``cv`` per measurement."""

    def __init__(self, drift_cv: float, phi: float, cv: float = 0.02):
        super().__init__(cv)
        self.phi, self.sigma = phi, _sigma(drift_cv)
        self.level = None

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        if self.level is None:
            self.level = rng.normal(0, self.sigma)  # start in the stationary distribution
        else:
            self.level = self.phi * self.level + rng.normal(0, self.sigma * math.sqrt(1 - self.phi**2))
        return super().__call__(rng, ms_per_loop) * math.exp(self.level)  # type: ignore[arg-type]  # set just above


class Spikes(Lognormal):
    """Rare per-loop spikes: each loop, with probability ``rate``, 3-10x slower (GC, an interrupt, a page fault;
    normal in ais_bench per-loop lists)."""

    def __init__(self, cv: float, rate: float = 0.03):
        super().__init__(cv)
        self.rate = rate

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        times = super().__call__(rng, ms_per_loop)
        spiked = rng.random(LOOPS) < self.rate
        return np.where(spiked, times * rng.uniform(3, 10, LOOPS), times)


class HeavyTails:
    """Heavy-tailed run-to-run noise: the log level is Student-t with ``df`` degrees of freedom, scaled so its
    standard deviation is the log-sigma of CV ``cv`` (rare runs far off, most close)."""

    def __init__(self, cv: float, df: float = 3.0):
        self.df, self.scale = df, _sigma(cv) / math.sqrt(df / (df - 2))

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        return _loops(rng, ms_per_loop, math.exp(self.scale * rng.standard_t(self.df)))


class Bimodal(Lognormal):
    """Two host states (a frequency governor, a NUMA placement): in the slow one every loop is ``gap`` slower; the
    host stays in its state from one measurement to the next with probability ``stay``."""

    def __init__(self, cv: float, gap: float = 0.07, stay: float = 0.9):
        super().__init__(cv)
        self.gap, self.stay = gap, stay
        self.slow = False

    def __call__(self, rng, ms_per_loop: float) -> np.ndarray:
        if rng.random() >= self.stay:
            self.slow = not self.slow
        return super().__call__(rng, ms_per_loop) * (1 + self.gap if self.slow else 1.0)


lognormal_cv2 = Lognormal(0.02)
lognormal_cv5 = Lognormal(0.05)
lognormal_cv15 = Lognormal(0.15)
lognormal_cv30 = Lognormal(0.30)
intermittent_cv5 = Intermittent(0.05)
intermittent_cv15 = Intermittent(0.15)
neighbour_cv5 = Neighbour(0.05)
drift_slow = Drift(0.05, phi=0.99)
drift_fast = Drift(0.05, phi=0.9)
spikes_cv5 = Spikes(0.05)
spikes_cv2 = Spikes(0.02, rate=0.05)
heavy_tails_cv10 = HeavyTails(0.10)
bimodal_cv3 = Bimodal(0.03)

# name, what it stands for (the table's rows, in order)
MODELS = (
    ("lognormal_cv5", "lognormal CV 5 %"),
    ("lognormal_cv15", "lognormal CV 15 %"),
    ("lognormal_cv30", "lognormal CV 30 %"),
    ("intermittent_cv5", "CV 5 % + 5 % of measurements hogged on 30-90 % of loops"),
    ("intermittent_cv15", "CV 15 % + 5 % of measurements hogged on 30-90 % of loops"),
    ("neighbour_cv5", "CV 5 % + episodes (5 %, ~3 measurements) 2-3x slower"),
    ("drift_slow", "drift: AR(1) phi 0.99/measurement, CV 5 %, + CV 2 %"),
    ("drift_fast", "drift: AR(1) phi 0.9/measurement, CV 5 %, + CV 2 %"),
    ("spikes_cv5", "CV 5 % + 3 % of loops 3-10x slower"),
    ("spikes_cv2", "CV 2 % + 5 % of loops 3-10x slower"),
    ("heavy_tails_cv10", "Student-t (3 df) run noise, CV 10 %"),
    ("bimodal_cv3", "two host states 7 % apart (stay 0.9), CV 3 %"),
)
