"""The benchmark step: pure-inference throughput of one compiled artifact, timed in a quiet window, re-measured
while too noisy, and confirmed when it falls below its same-fingerprint history's suspect line (read from the
metrics DB by ``suspect_check``). numpy-free; the verdict modules load inside the functions."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.base import get_backend
from convmixer_tasks.errors import MetricsError, MetricsTableMissing
from convmixer_tasks.fileio import atomic_write_json, to_jsonable
from convmixer_tasks.measure.energy import DEFAULT_PERIOD_S as DEFAULT_POWER_PERIOD_S
from convmixer_tasks.run.records import BenchSummary, CompiledModel
from convmixer_tasks.run.run_options import BenchmarkOptions, GateOptions
from convmixer_tasks.run.workdir import WorkLayout

BENCH_WARMUP = 5

log = logging.getLogger(__name__)


def benchmark_artifact(
    compiled: CompiledModel,
    options: BenchmarkOptions,
    work_dir: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    *,
    power_period_s: float = DEFAULT_POWER_PERIOD_S,
    suspect: Callable[[dict[str, Any]], float | None] | None = None,
) -> BenchSummary:
    """Pure-inference throughput of one artifact (``options.loop`` iterations), re-measured up to
    ``options.remeasure`` times while the per-loop CV is above ``options.max_cv_pct``; the least noisy measurement
    is kept. Every measurement's samples go to a file, the kept one's (packed) travel with the record. Each
    measurement runs in a ``quiet.BenchmarkWindow`` (busy device waited for up to ``options.idle_wait_s``, host
    load and steal, power sampled every ``power_period_s``); the kept one's window goes on the row. When
    ``suspect`` (``suspect_check``) puts the kept figure below its same-fingerprint history's suspect line,
    ``options.confirm`` more such measurements are taken and their figures kept in the fingerprint's measurement
    record for the verdict."""
    from convmixer_tasks.measure import fingerprint, loopstats, quiet

    backend = get_backend(compiled.backend, **(settings or {}))
    artifact = compiled.fresh_artifact()
    env = fingerprint.build(
        compiled.backend,
        compiled.device,
        compiled.toolkit_version,
        compiled.artifact.options,
        compiled.artifact.meta,
        backend.environment(),
    )
    windows: dict[int, quiet.BenchmarkWindow] = {}

    def measure() -> Any:
        with quiet.BenchmarkWindow(backend, options.idle_wait_s, power_period_s) as window:
            result = backend.benchmark(artifact, loop=options.loop, warmup=BENCH_WARMUP)
        windows[id(result)] = window
        return result

    def measure_quietly() -> loopstats.Tries:
        return loopstats.measure_until_quiet(measure, compiled.batch_size, options.remeasure, options.max_cv_pct)

    tries = measure_quietly()
    confirmed = loopstats.confirm_if_suspect(
        measure_quietly, tries.figure, suspect(env) if suspect else None, options.confirm
    )
    if confirmed:
        env[fingerprint.CONFIRMATIONS] = [one.figure for one in confirmed]  # the verdict's (robust) figures
    bench, stats = tries.chosen, tries.stats
    window = windows[id(bench)]
    env.update(window.facts())
    power = window.energy(bench.throughput)
    bench_json = WorkLayout(Path(work_dir)).benchmark_json(
        compiled.run_id, compiled.batch_size, precision=compiled.precision, model=compiled.model_variant
    )
    taken = [*tries.all, *(one for confirmation in confirmed for one in confirmation.all)]
    atomic_write_json(bench_json, {**to_jsonable(bench), "measurements": [to_jsonable(one) for one in taken]})
    return BenchSummary(
        model_variant=compiled.model_variant,
        batch_size=bench.batch_size,
        backend=bench.backend,
        precision=compiled.precision,
        loop=bench.loop,
        warmup=bench.warmup,
        throughput=bench.throughput,
        latency_mean_ms=bench.latency_mean_ms,
        latency_p50_ms=bench.latency_p50_ms,
        latency_p99_ms=bench.latency_p99_ms,
        formula=bench.formula,
        bench_json=str(bench_json),
        samples_ms=loopstats.pack_samples(bench.samples) if stats else None,
        sample_count=stats.count if stats else None,
        latency_cv=stats.cv if stats else None,
        latency_iqr_ms=stats.iqr_ms if stats else None,
        throughput_robust=stats.throughput_robust if stats else None,
        latency_robust_cv=stats.robust_cv if stats else None,
        measurements=len(taken),
        fingerprint=env,
        energy_j_per_image=power.j_per_image,
        throughput_per_watt=power.per_watt,
        energy=power.record,
    )


def suspect_check(
    url: str, model_variant: str, compiled: CompiledModel, gate: GateOptions
) -> Callable[[dict[str, Any]], float | None]:
    """For ``benchmark_artifact``: the suspect line of the benchmark's same-fingerprint history in the metrics DB
    (read once the fingerprint is known). A DB that cannot be read only costs the confirmation: logged, no line."""
    from convmixer_tasks.measure import fingerprint, loopstats
    from convmixer_tasks.metrics.history import throughput_history

    def line(env: dict[str, Any]) -> float | None:
        row = {
            "model_variant": model_variant,
            "backend": compiled.backend,
            "device": compiled.device,
            "batch_size": compiled.batch_size,
            "precision_mode": compiled.precision,
            "run_id": compiled.run_id,
            "logical_date": datetime.now(UTC).isoformat(),
            "fingerprint_key": fingerprint.key(env),
        }
        try:
            found = throughput_history(url, row, gate.history)
        except MetricsTableMissing:  # the first run: its record step creates the table after this benchmark
            log.info("no throughput history yet (no run recorded in the metrics DB); a low figure is not confirmed")
            return None
        except MetricsError as exc:
            log.warning("no throughput history for the suspect check (%s); a low figure is not confirmed", exc)
            return None
        previous_check = found.previous["check"] if found.previous else None
        return loopstats.suspect_line(found.figures, gate.throughput_drop_pct, previous_check=previous_check)

    return line
