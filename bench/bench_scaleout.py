"""Scale-out through real Celery: the same sharded inference on 1, 2 and 3 NPU workers (issue 23, item 4).

One throwaway distributed Airflow (tests/dags/cluster.py: PostgreSQL for the metadata and metrics, Redis as the
broker, api-server, scheduler, dag-processor, a `default` worker) and NPU workers added one at a time: for N = 1, 2,
3 the N-th worker is started, the `npu` pool resized to N slots (the deployment rule: one slot per NPU worker, each
worker concurrency 1, so a device is never shared — docker/README.md), and one run of the DAG on the ascend backend
is triggered. The NPU workers are stand-in chips on the Ascend tool doubles (tests/doubles), one chip type, whose
ais_bench spends a FIXED wall time per executed batch (`AIS_BENCH_DOUBLE_SLEEP_MS`) and reports a fixed compute
time (`AIS_BENCH_DOUBLE_FIXED_MS`), as a device does whatever the host's load. Each run's task instances are read
from the REST API.

Figures per run: the infer wall time (first infer task start → last infer task end) and its ratio to the one-worker
run (goal: ≤ 0.55 at two workers, ≤ 0.40 at three), the scheduler overhead per infer task — the median
queued→start latency (Celery delivery + the worker's task process start) and the worker-slot time left idle inside
the window per task ((N × wall − Σ infer durations − benchmark time inside the window) / infer tasks) — and the
mean infer task duration against its device time ((batches per shard + 1 warm-up) × the per-batch time). The
benchmark is NPU work too and takes a slot whenever it is ready: where it falls inside a run's infer window it is
reported, and the infer+benchmark wall (first start → last end of either) is the figure it cannot distort. An
unmeasured warm-up run first fills the caches (prep batches, ONNX, OM), so every measured run starts alike.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_scaleout.py [--workers 1,2,3] [--shards 6] [-o json]

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth). Takes ~10 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.dags.cluster import rest_time  # the repo root is on the path only from here on

NPU_POOL = "npu"  # the untyped NPU queue and pool (no [convmixer] chips): one chip type
GOALS = {2: 0.55, 3: 0.40}  # the ratio goals per worker count


# --- the arithmetic over task instances (pure; tests/test_bench_scaleout.py) ---------------------------------------


@dataclass(frozen=True)
class TaskSpan:
    """One task instance's times, as the REST API reports them."""

    task_id: str
    map_index: int
    hostname: str
    queued: datetime | None
    start: datetime
    end: datetime

    @classmethod
    def from_rest(cls, ti: dict[str, Any]) -> TaskSpan:
        if not ti.get("start_date") or not ti.get("end_date"):
            raise ValueError(
                f"task instance {ti['task_id']}[{ti.get('map_index')}] has no start/end date (state {ti.get('state')})"
                "; only a finished run can be measured"
            )
        queued = ti.get("queued_when")
        return cls(
            ti["task_id"],
            int(ti.get("map_index", -1)),
            ti.get("hostname") or "",
            rest_time(queued) if queued else None,
            rest_time(ti["start_date"]),
            rest_time(ti["end_date"]),
        )

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class RunFigures:
    """One run's scale-out figures (seconds)."""

    workers: int
    wall_s: float  # first infer start → last infer end
    infer_tasks: int
    infer_hosts: int  # distinct workers the infer shards ran on
    infer_task_s: float  # mean infer task duration
    queued_to_start_s: float  # median over the infer tasks
    benchmark_in_window_s: float  # NPU benchmark time inside the infer window (it holds a slot there)
    npu_wall_s: float  # first infer/benchmark start → last infer/benchmark end: the run's whole NPU work after compile
    idle_per_task_s: float  # worker-slot time left idle inside the window, per infer task


def overlap_s(span: TaskSpan, start: datetime, end: datetime) -> float:
    return max(0.0, (min(span.end, end) - max(span.start, start)).total_seconds())


def run_figures(workers: int, spans: Sequence[TaskSpan]) -> RunFigures:
    """The figures of one run on ``workers`` NPU workers from its task instances (infer and benchmark are read)."""
    infers = [span for span in spans if span.task_id.split(".")[-1] == "infer"]
    benches = [span for span in spans if span.task_id.split(".")[-1] == "benchmark"]
    if not infers:
        raise ValueError("the run has no finished infer task instance; nothing to measure")
    start, end = min(span.start for span in infers), max(span.end for span in infers)
    wall = (end - start).total_seconds()
    busy = sum(span.seconds for span in infers)
    bench = sum(overlap_s(span, start, end) for span in benches)
    npu = [*infers, *benches]
    latencies = [(span.start - span.queued).total_seconds() for span in infers if span.queued is not None]
    return RunFigures(
        workers=workers,
        wall_s=wall,
        infer_tasks=len(infers),
        infer_hosts=len({span.hostname for span in infers}),
        infer_task_s=busy / len(infers),
        queued_to_start_s=statistics.median(latencies) if latencies else float("nan"),
        benchmark_in_window_s=bench,
        npu_wall_s=(max(span.end for span in npu) - min(span.start for span in npu)).total_seconds(),
        idle_per_task_s=(workers * wall - busy - bench) / len(infers),
    )


def ratios(walls: Sequence[float]) -> list[float]:
    """Each wall time over the first (the one-worker run's)."""
    if not walls or walls[0] <= 0:
        raise ValueError(f"the first wall time must be positive to scale by it (got {list(walls)[:1]})")
    return [wall / walls[0] for wall in walls]


# --- the cluster run ------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def measure(args: argparse.Namespace, root: Path) -> list[tuple[RunFigures, tuple[float, float]]]:
    """One throwaway Airflow; per worker count, one run; its figures and the 1-min load average before/after."""
    from tests.ascend_doubles import AscendDoubles
    from tests.dags.cluster import start_worker, throwaway_airflow

    doubles = AscendDoubles(root / "ascend", monkeypatch=None).build()  # type: ignore[arg-type]
    settings = {
        "AIRFLOW__CONVMIXER__SHARDS": str(args.shards),
        "AIRFLOW__CONVMIXER__CANN_SET_ENV": str(doubles.set_env),
        "AIRFLOW__CONVMIXER__NPU_TASK_TIMEOUT_HOURS": "0.5",
        "ASCEND_PROCESS_LOG_PATH": str(doubles.log_dir),
    }
    device = {"AIS_BENCH_DOUBLE_SLEEP_MS": str(args.batch_ms), "AIS_BENCH_DOUBLE_FIXED_MS": str(args.batch_ms)}
    conf = {
        "backend": "ascend",
        "batch_sizes": [args.batch_size],
        "image_limit": args.shards * args.batches_per_shard * args.batch_size,
        "benchmark_loop": 1,  # the benchmark holds a slot too: (5 warm-ups + 1) batches
        "throughput_tolerance_pct": 99,
    }
    results = []
    with throwaway_airflow(root, settings, path_first=[doubles.host_bin]) as airflow:
        start_worker(airflow.cluster, "default", "default", 2)
        airflow.wait_for_dag()
        started = 0

        def run(workers: int) -> list[dict[str, Any]]:
            nonlocal started
            while started < workers:
                started += 1
                start_worker(airflow.cluster, f"npu{started}", NPU_POOL, 1, device)
            airflow.set_pool(NPU_POOL, workers)
            airflow.wait_for_workers(["default", *(f"npu{index}" for index in range(1, started + 1))])
            run_id = airflow.trigger(conf)
            state, tis = airflow.wait_for_run(run_id, args.run_timeout)
            if state != "success":
                failed = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis if ti["state"] != "success"]
                raise RuntimeError(f"the {workers}-worker run {run_id} ended {state}: {failed}; logs under {root}")
            return tis

        if args.warmup_run:  # fills the caches (prep batches, ONNX, OM): every measured run then finds them warm
            run(args.workers[0])
            print("  warm-up run done", file=sys.stderr)
        for workers in args.workers:
            load_before = os.getloadavg()[0]
            tis = run(workers)
            spans = [TaskSpan.from_rest(ti) for ti in tis if ti["state"] == "success"]
            figures = run_figures(workers, spans)
            results.append((figures, (load_before, os.getloadavg()[0])))
            print(f"  {workers} worker(s): infer wall {figures.wall_s:.1f} s", file=sys.stderr)
    return results


def report(args: argparse.Namespace, results: list[tuple[RunFigures, tuple[float, float]]]) -> dict[str, Any]:
    figures = [one for one, _ in results]
    scaled = ratios([one.wall_s for one in figures])
    return {
        "workers": [one.workers for one in figures],
        "wall_s": [round(one.wall_s, 2) for one in figures],
        "ratio": [round(value, 3) for value in scaled],
        "goal": [GOALS.get(one.workers) for one in figures],
        "npu_wall_s": [round(one.npu_wall_s, 2) for one in figures],
        "npu_ratio": [round(value, 3) for value in ratios([one.npu_wall_s for one in figures])],
        "queued_to_start_s": [round(one.queued_to_start_s, 2) for one in figures],
        "idle_per_task_s": [round(one.idle_per_task_s, 2) for one in figures],
        "infer_task_s": [round(one.infer_task_s, 2) for one in figures],
        "device_s_per_task": (args.batches_per_shard + 1) * args.batch_ms / 1000,
        "benchmark_in_window_s": [round(one.benchmark_in_window_s, 2) for one in figures],
        "infer_hosts": [one.infer_hosts for one in figures],
        "infer_tasks": [one.infer_tasks for one in figures],
        "load_1min": [[round(value, 2) for value in load] for _, load in results],
        "cpu": cpu_model(),
        "shards": args.shards,
        "batch_ms": args.batch_ms,
        "runs": [asdict(one) for one in figures],
    }


def table(out: dict[str, Any]) -> str:
    lines = [
        f"CPU: {out['cpu']}; {out['shards']} infer shards of {out['device_s_per_task']:.1f} s device time each "
        f"({out['batch_ms']:.0f} ms per batch)",
        "| NPU workers | infer wall s | ratio | goal | infer+benchmark wall s (ratio) | queued→start s (median) | "
        "idle slot s / task | infer task s (mean) | benchmark in window s | hosts | load 1-min before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for index, workers in enumerate(out["workers"]):
        goal = out["goal"][index]
        met = "—" if goal is None else f"≤ {goal} ({'met' if out['ratio'][index] <= goal else 'NOT met'})"
        lines.append(
            f"| {workers} | {out['wall_s'][index]:.1f} | {out['ratio'][index]:.3f} | {met} | "
            f"{out['npu_wall_s'][index]:.1f} ({out['npu_ratio'][index]:.3f}) | "
            f"{out['queued_to_start_s'][index]:.2f} | {out['idle_per_task_s'][index]:.2f} | "
            f"{out['infer_task_s'][index]:.2f} | {out['benchmark_in_window_s'][index]:.1f} | "
            f"{out['infer_hosts'][index]} | {out['load_1min'][index][0]} / {out['load_1min'][index][1]} |"
        )
    return "\n".join(lines)


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or counts[0] != 1 or any(b <= a for a, b in itertools.pairwise(counts)):
        raise argparse.ArgumentTypeError(f"--workers {text!r}: give rising counts starting at 1, e.g. 1,2,3")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=worker_counts, default=[1, 2, 3], help="rising, from 1 (default 1,2,3)")
    parser.add_argument("--shards", type=int, default=6, help="[convmixer] shards (default 6)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches-per-shard", type=int, default=4)
    parser.add_argument("--batch-ms", type=float, default=3000.0, help="device time per batch (default 3000)")
    parser.add_argument("--run-timeout", type=float, default=1200.0, help="seconds one run may take")
    parser.add_argument(
        "--no-warmup-run",
        dest="warmup_run",
        action="store_false",
        help="skip the unmeasured first run that fills the caches (the first measured run then compiles, preprocesses)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's folder (logs) after the bench")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args(argv)
    if args.shards < 1 or args.batches_per_shard < 1:
        parser.error("--shards and --batches-per-shard must be at least 1")
    from convmixer_tasks.run.demo import DEMO_VAL_COUNT

    if args.shards * args.batches_per_shard * args.batch_size > DEMO_VAL_COUNT:
        parser.error(
            f"--shards × --batches-per-shard × --batch-size = {args.shards * args.batches_per_shard * args.batch_size}"
            f" images, more than the demo set's {DEMO_VAL_COUNT}: lower one of them"
        )
    root = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    try:
        out = report(args, measure(args, root))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2) if args.output == "json" else table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
