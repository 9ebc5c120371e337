"""Measure on a quiet device, and say so when it was not.

Before timing, a backend that can see its device's activity (Ascend: AI Core usage and the process table of
``npu-smi``) is asked whether the device is idle; a busy one is waited for (bounded by ``idle_wait_s``). If it is
still busy the benchmark runs anyway and the row says so — a busy device is never timed silently. On the host the
window counts, from ``/proc/stat`` deltas over the call itself, how many cores were busy and how many of those were
other work (busy cores minus this process's own CPU time per second, its tool subprocesses included), and the CPU
steal; it also keeps the 1-minute load average before and after (a slow average: a few-second benchmark beside a CPU
hog barely moves it). ``host_contention`` is the one rule that reads these: the row is flagged when other work and
the benchmark's cores together wanted more than the host has. The gate adds ``device_warning``'s and
``host_contention``'s lines to the verdict.

``BenchmarkWindow`` wraps the benchmark call: it does the device check, starts the host counters and the energy
sampler (``convmixer_tasks.measure.energy``), and afterwards gives the flat facts for the row's fingerprint (outside
its key:
they describe the measurement, not the environment) and the energy figures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from convmixer_tasks.defaults import DEFAULT_IDLE_WAIT_S
from convmixer_tasks.device_state import DeviceState
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.measure import energy

IDLE_POLL_S = 2.0
# Cores of other work tolerated beside a benchmark before the host counts as contended (the task runner, logging,
# system daemons keep a fraction of a core busy on any worker).
OTHER_WORK_MARGIN_CORES = 0.5
# /proc/stat and os.times() count in 10 ms ticks: over a shorter call the busy-core count is mostly rounding (a demo
# benchmark of a few ms showed 0-0.6 "other" cores on an idle host), so such a window is not counted.
MIN_COUNTED_WINDOW_S = 1.0
PROC_STAT = Path("/proc/stat")
# The fingerprint entries this window adds (all outside the fingerprint's key).
WINDOW_FACTS = (
    "load_before",
    "load_after",
    "load_max",
    "cpu_steal_pct",
    "host_busy_cores",
    "other_cores",
    "cores_used",
    "host_overloaded",
    "device_busy",
    "device_wait_s",
)


def wait_until_idle(
    state: DeviceState,
    check: Callable[[], DeviceState],
    max_wait_s: float,
    poll_s: float = IDLE_POLL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[DeviceState, float]:
    """From the first ``state``, poll ``check`` until the device is idle or ``max_wait_s`` has passed; the last
    state and the seconds waited."""
    if isinstance(max_wait_s, bool) or not isinstance(max_wait_s, (int, float)) or max_wait_s < 0:
        raise ConfigError(f"idle wait must be a number of seconds >= 0, got {max_wait_s!r} (benchmark_idle_wait_s)")
    began = clock()
    while state.busy:
        waited = clock() - began
        if waited >= max_wait_s:
            break
        sleep(min(poll_s, max_wait_s - waited))
        state = check()
    return state, round(clock() - began, 3)


class CpuCounters(NamedTuple):
    """Jiffies of the aggregate ``cpu`` line of /proc/stat."""

    steal: int
    idle: int  # idle + iowait
    total: int  # user+nice+system+idle+iowait+irq+softirq+steal (guest time is already inside user/nice)


def cpu_times(path: Path = PROC_STAT) -> CpuCounters | None:
    """The host's CPU counters now; None where there is no such file."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                fields = line.split()
                if fields and fields[0] == "cpu":
                    counters = [int(value) for value in fields[1:9]]
                    counters += [0] * (8 - len(counters))
                    return CpuCounters(steal=counters[7], idle=counters[3] + counters[4], total=sum(counters))
    except (OSError, ValueError):
        pass
    return None


def steal_pct(before: CpuCounters | None, after: CpuCounters | None) -> float | None:
    """Percent of the CPU time between two ``cpu_times`` reads that the hypervisor gave to other guests."""
    if before is None or after is None or after.total <= before.total:
        return None
    return round(100.0 * (after.steal - before.steal) / (after.total - before.total), 2)


def busy_cores(before: CpuCounters | None, after: CpuCounters | None, cores: int | None) -> float | None:
    """How many of the host's ``cores`` were busy on average between two reads (stolen time is not ours)."""
    if before is None or after is None or after.total <= before.total or not cores:
        return None
    total = after.total - before.total
    busy = total - (after.idle - before.idle) - (after.steal - before.steal)
    return round(cores * max(busy, 0) / total, 2)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ais_bench runs as one)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def host_contention(fingerprint: Mapping[str, Any] | None) -> tuple[str | None, float]:
    """(why the host was contended, how many times its cores were wanted) for a benchmark's measurement record,
    else (None, 1.0): the one rule behind the row's flag and the gate's fair share.

    Other work and the benchmark's own cores together wanting more than ``host_cores`` means the benchmark got
    about cores/wanted of the CPU it needs. A record without the window's CPU counts (no /proc/stat, or a call
    shorter than ``MIN_COUNTED_WINDOW_S``) falls back to the 1-minute load average around the call."""
    facts = fingerprint or {}
    cores = facts.get("host_cores")
    if not isinstance(cores, int) or cores < 1:
        return None, 1.0
    other = facts.get("other_cores")
    if isinstance(other, (int, float)):
        used = facts.get("cores_used")
        used = used if isinstance(used, int) and used >= 1 else 1
        wanted = other + min(used, cores)
        if other <= OTHER_WORK_MARGIN_CORES or wanted <= cores:
            return None, 1.0
        return f"other work kept {other:.2f} of {cores} cores busy beside the benchmark's {used}", wanted / cores
    loads = [facts.get(name) for name in ("load_before", "load_after")]
    peak = max((load for load in loads if isinstance(load, (int, float))), default=None)
    if peak is None or peak <= cores:
        return None, 1.0
    return f"load {peak:.2f} > {cores} cores", peak / cores


def load_average() -> float | None:
    """The 1-minute load average (runnable threads, the benchmark's own included)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


class MeasuredDevice(Protocol):
    """What the window asks of a backend (``backends.base.Backend`` answers all three)."""

    def device_state(self) -> DeviceState | None: ...

    def power_source(self) -> energy.PowerSource: ...

    def host_cores_used(self) -> int: ...


class BenchmarkWindow:
    """``with BenchmarkWindow(backend, ...) as window: <benchmark>``; then ``window.facts()`` and
    ``window.energy(throughput)``.

    It asks ``backend`` for ``device_state()``, ``power_source()`` and ``host_cores_used()`` (``Backend``'s
    defaults: no device to check, RAPL, one core).
    """

    def __init__(
        self,
        backend: MeasuredDevice,
        idle_wait_s: float = DEFAULT_IDLE_WAIT_S,
        power_period_s: float = energy.DEFAULT_PERIOD_S,
        proc_stat: Path = PROC_STAT,
        clock: Callable[[], float] = time.monotonic,
        own_cpu: Callable[[], float] = own_cpu_seconds,
        host_cores: int | None = None,
    ) -> None:
        self.backend = backend
        self.idle_wait_s = idle_wait_s
        self.power_period_s = power_period_s
        self.proc_stat = proc_stat
        self.device: DeviceState | None = None
        self.device_wait_s: float | None = None
        self.sampler: energy.PowerSampler | None = None
        self.no_power: str | None = None
        self.clock, self.own_cpu = clock, own_cpu
        self.host_cores = host_cores if host_cores is not None else os.cpu_count()
        self._cpu_before: CpuCounters | None = None
        self._cpu_after: CpuCounters | None = None
        self._own: tuple[float, float] = (0.0, 0.0)  # (wall, own CPU) seconds at the start, then their deltas
        self._load_before: float | None = None
        self._load_after: float | None = None

    def __enter__(self) -> BenchmarkWindow:
        first = self.backend.device_state()
        if first is not None:

            def again() -> DeviceState:
                return self.backend.device_state() or first

            self.device, self.device_wait_s = wait_until_idle(first, again, self.idle_wait_s)
        try:
            source = self.backend.power_source()
        except energy.PowerUnavailable as exc:
            self.no_power = str(exc)
        else:
            self.sampler = energy.PowerSampler(source, self.power_period_s)
        self._load_before = load_average()
        self._cpu_before = cpu_times(self.proc_stat)
        self._own = (self.clock(), self.own_cpu())
        if self.sampler is not None:
            self.sampler.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self._cpu_after = cpu_times(self.proc_stat)
        self._own = (self.clock() - self._own[0], self.own_cpu() - self._own[1])
        self._load_after = load_average()

    def facts(self) -> dict[str, Any]:
        """Flat entries for the row's fingerprint (see WINDOW_FACTS)."""
        loads = [load for load in (self._load_before, self._load_after) if load is not None]
        cores = self.backend.host_cores_used()
        wall, own = self._own
        busy_now = (
            busy_cores(self._cpu_before, self._cpu_after, self.host_cores) if wall >= MIN_COUNTED_WINDOW_S else None
        )
        other = None if busy_now is None else round(max(busy_now - own / wall, 0.0), 2)
        measured = {
            "load_before": self._load_before,
            "load_after": self._load_after,
            "load_max": max(loads) if loads else None,
            "cpu_steal_pct": steal_pct(self._cpu_before, self._cpu_after),
            "host_busy_cores": busy_now,
            "other_cores": other,
            "cores_used": cores,
        }
        overloaded, _ = host_contention({**measured, "host_cores": self.host_cores})
        busy = None
        if self.device is not None and not self.device.known:
            busy = f"not checked: {self.device.detail}"
        elif self.device is not None and self.device.busy:
            busy = f"{self.device.detail} (still busy after waiting {self.device_wait_s:g} s; timed anyway)"
        return {**measured, "host_overloaded": overloaded, "device_busy": busy, "device_wait_s": self.device_wait_s}

    def energy(self, throughput: float | None) -> energy.EnergyFigures:
        if self.sampler is None:
            return energy.none(self.no_power or "no power source", None)
        return self.sampler.figures(throughput)


def device_warning(fingerprint: dict[str, Any] | None) -> str | None:
    """The verdict's line for a row timed on a device that was busy (or could not be checked), else None."""
    busy = (fingerprint or {}).get("device_busy")
    return f"throughput measured on a busy device: {busy}" if busy else None
