"""Energy per image: a power (or energy-counter) source sampled at a fixed rate in a background thread while the
benchmark runs, integrated over the timed window.

Two kinds of source:

* ``power`` — instantaneous watts (the NPU through ``npu-smi info -t power -i <npu>``): the samples are integrated
  with the trapezoid rule (scipy) over the window, the edges interpolated. ais_bench's own ``--energy_consumption``
  averages one reading at the start and one at the end; a trace sampled through the run is what a measurement needs.
* ``counter`` — cumulative microjoules that wrap at a maximum (RAPL, ``/sys/class/powercap/intel-rapl:N``): the energy
  is the sum of the deltas between consecutive reads, a negative delta meaning one wrap (reads are frequent enough
  that a counter cannot wrap twice between two of them).

The figures: mean power = energy over the window / its length; energy per image = mean power × compute time per
image (1 / throughput), and images/s/W = throughput / mean power. The window is the whole benchmark call (model load
and warm-up included), because ais_bench reports no timestamps for its loops: the mean power is that of the call.

A source that cannot be read leaves the energy empty with the reason why; a read that fails during the window
discards the trace (a partial trace would understate the energy).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PERIOD_S = 0.5  # one npu-smi call is a process start: a few per second is what it sustains
POWERCAP_ROOT = Path("/sys/class/powercap")
# Top-level RAPL zones (one per CPU package); "intel-rapl:0:1"-style sub-zones are parts of a package, not added.
RAPL_PACKAGE_RE = re.compile(r"^intel-rapl:\d+$")

KIND_POWER = "power"
KIND_COUNTER = "counter"


class PowerUnavailable(Exception):
    """The source cannot give a reading; the message says why (it is stored as the energy's reason)."""


@dataclass(frozen=True)
class PowerSource:
    name: str  # what is read, e.g. "npu-smi info -t power -i 0" or "RAPL intel-rapl:0 (package-0)"
    kind: str  # KIND_POWER (watts) or KIND_COUNTER (microjoules per zone, wrapping)
    read: Callable[[], Any]  # -> float watts, or a tuple of microjoule counters; raises PowerUnavailable
    wraps_at: tuple[int, ...] = ()  # KIND_COUNTER: each zone's max_energy_range_uj
    note: str | None = None  # what the figure covers (e.g. the whole CPU package, other processes included)


@dataclass(frozen=True)
class EnergyFigures:
    """What a row stores: ``energy_j_per_image``, ``throughput_per_watt`` and the ``energy`` JSON."""

    j_per_image: float | None
    per_watt: float | None
    record: dict[str, Any]


def none(reason: str, source: str | None = None) -> EnergyFigures:
    """No energy for this row, and why."""
    return EnergyFigures(None, None, {"source": source, "reason": reason})


# --- integration ---------------------------------------------------------------------------------------------------


def integrate_power(times_s: Sequence[float], watts: Sequence[float], start: float, end: float) -> float:
    """Joules over [start, end] from power samples (trapezoid rule, scipy), the power at each edge interpolated
    linearly between its neighbouring samples (held flat beyond the first/last sample)."""
    import numpy as np
    from scipy.integrate import trapezoid  # type: ignore[import-untyped]

    if end <= start:
        raise ValueError(f"energy window must have a positive length, got {start} → {end}")
    times = np.asarray(times_s, dtype=np.float64)
    power = np.asarray(watts, dtype=np.float64)
    if times.size < 2 or times.size != power.size or np.any(np.diff(times) < 0):
        raise ValueError("power samples need at least two increasing timestamps, one wattage each")
    inside = (times > start) & (times < end)
    grid = np.concatenate(([start], times[inside], [end]))
    values = np.concatenate(([np.interp(start, times, power)], power[inside], [np.interp(end, times, power)]))
    return float(trapezoid(values, grid))


def counter_joules(readings: Sequence[Sequence[int]], wraps_at: Sequence[int]) -> float:
    """Joules from consecutive reads of wrapping microjoule counters (one column per zone, summed)."""
    total_uj = 0
    for before, after in itertools.pairwise(readings):
        for zone, (a, b) in enumerate(zip(before, after, strict=True)):
            delta = b - a
            total_uj += delta if delta >= 0 else delta + wraps_at[zone]
    return total_uj / 1e6


# --- sampling ------------------------------------------------------------------------------------------------------


@dataclass
class PowerSampler:
    """Reads ``source`` once at ``start``, every ``period_s`` in a daemon thread, and once at ``stop``.

    ``clock`` is injectable so a test can drive ``sample_once`` with exact timestamps.
    """

    source: PowerSource
    period_s: float = DEFAULT_PERIOD_S
    clock: Callable[[], float] = time.monotonic
    samples: list[tuple[float, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample_once(self) -> None:
        if self.error is not None:
            return
        try:
            value = self.source.read()
        except PowerUnavailable as exc:
            self.error = str(exc)
            return
        self.samples.append((self.clock(), value))

    def start(self) -> None:
        if not (isinstance(self.period_s, (int, float)) and 0 < self.period_s <= 60):
            raise ValueError(f"power sampling period must be 0 < s <= 60, got {self.period_s!r}")
        self.sample_once()
        self.started_at = self.clock()
        if self.error is None:
            self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample_once()

    def stop(self) -> None:
        self.stopped_at = self.clock()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample_once()

    def figures(self, throughput: float | None) -> EnergyFigures:
        """The row's energy figures for a benchmark of ``throughput`` images/s timed in this window."""
        source = self.source
        if self.error is not None:
            return none(f"{source.name}: {self.error}", source.name)
        if self.started_at is None or self.stopped_at is None or len(self.samples) < 2:
            return none(f"{source.name}: fewer than two readings in the window", source.name)
        window_s = self.stopped_at - self.started_at
        times = [at for at, _ in self.samples]
        if source.kind == KIND_POWER:
            joules = integrate_power(
                times, [float(value) for _, value in self.samples], self.started_at, self.stopped_at
            )
        else:
            joules = counter_joules([value for _, value in self.samples], source.wraps_at)
            window_s = times[-1] - times[0]  # a counter's energy is between its first and last read
        record: dict[str, Any] = {
            "source": source.name,
            "kind": source.kind,
            "samples": len(self.samples),
            "period_s": self.period_s,
            "window_s": round(window_s, 6),
            "energy_j": round(joules, 6),
            "basis": "mean power over the benchmark call × compute time per image (1 / throughput)",
        }
        if source.note:
            record["note"] = source.note
        if window_s <= 0 or joules <= 0 or not math.isfinite(joules):
            return EnergyFigures(None, None, {**record, "reason": "no energy measured over the window"})
        mean_w = joules / window_s
        record["mean_w"] = round(mean_w, 6)
        if not throughput or throughput <= 0:
            return EnergyFigures(None, None, {**record, "reason": "no throughput to divide the power by"})
        return EnergyFigures(mean_w / throughput, throughput / mean_w, record)


# --- RAPL (CPU hosts) ----------------------------------------------------------------------------------------------


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def rapl_source(root: Path = POWERCAP_ROOT) -> PowerSource:
    """The CPU packages' RAPL energy counters as one source; PowerUnavailable naming why when there are none or they
    cannot be read (since Linux 5.10 ``energy_uj`` is root-only: CVE-2020-8694)."""
    zones = sorted(path for path in root.glob("intel-rapl:*") if RAPL_PACKAGE_RE.match(path.name))
    if not zones:
        raise PowerUnavailable(f"no RAPL package zone under {root} (not an Intel/AMD host, or no powercap driver)")
    try:
        wraps = tuple(_read_int(zone / "max_energy_range_uj") for zone in zones)
        for zone in zones:
            _read_int(zone / "energy_uj")
    except PermissionError as exc:
        raise PowerUnavailable(
            f"RAPL counters under {root} are not readable by this user ({exc.filename}; root-only since Linux 5.10, "
            "CVE-2020-8694): grant read access to energy_uj to measure CPU energy"
        ) from exc
    except (OSError, ValueError) as exc:
        raise PowerUnavailable(f"RAPL counters under {root} cannot be read: {exc}") from exc
    names = []
    for zone in zones:
        try:
            names.append(f"{zone.name} ({(zone / 'name').read_text().strip()})")
        except OSError:
            names.append(zone.name)

    def read() -> tuple[int, ...]:
        try:
            return tuple(_read_int(zone / "energy_uj") for zone in zones)
        except (OSError, ValueError) as exc:
            raise PowerUnavailable(f"RAPL read failed: {exc}") from exc

    return PowerSource(
        name=f"RAPL {', '.join(names)}",
        kind=KIND_COUNTER,
        read=read,
        wraps_at=wraps,
        note="whole CPU package(s): other processes on the host are included",
    )
