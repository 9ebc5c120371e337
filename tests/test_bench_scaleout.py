"""bench/bench_scaleout.py's arithmetic over task instances: the infer window, its ratio, the overhead per task.

The cluster part of the bench is run by hand (bench/RESULTS.md); these pin what it computes from the REST API's task
instances, on made-up timestamps.
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta

import pytest

from tests.bench_scripts import load_bench

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


bench = load_bench("bench_scaleout")


def rest_ti(task_id: str, start: float, end: float, host: str, queued_before: float | None = 0.5, index: int = 0):
    """A task instance as the REST API returns it, its times in seconds after T0."""

    def stamp(seconds: float) -> str:
        return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    return {
        "task_id": task_id,
        "map_index": index,
        "hostname": host,
        "state": "success",
        "queued_when": None if queued_before is None else stamp(start - queued_before),
        "start_date": stamp(start),
        "end_date": stamp(end),
    }


def spans(*tis):
    return [bench.TaskSpan.from_rest(ti) for ti in tis]


def test_the_window_runs_from_the_first_infer_start_to_the_last_infer_end_and_ignores_other_tasks():
    figures = bench.run_figures(
        2,
        spans(
            rest_ti("compile_model", 0, 5, "npu1@h"),
            rest_ti("infer", 6, 16, "npu1@h", index=0),
            rest_ti("infer", 7, 17, "npu2@h", index=1, queued_before=1.5),
            rest_ti("infer", 16.5, 26.5, "npu1@h", index=2),
            rest_ti("infer", 18, 28, "npu2@h", index=3, queued_before=2.5),
            rest_ti("evaluate", 29, 40, "default@h"),
        ),
    )
    assert figures.wall_s == pytest.approx(28 - 6)
    assert (figures.infer_tasks, figures.infer_hosts) == (4, 2)
    assert figures.infer_task_s == pytest.approx(10)
    assert figures.queued_to_start_s == pytest.approx((0.5 + 1.5) / 2)  # median of 0.5, 0.5, 1.5, 2.5
    # two slots over 22 s hold 40 s of infer: 4 s idle over 4 tasks
    assert figures.idle_per_task_s == pytest.approx((2 * 22 - 40) / 4)
    assert figures.benchmark_in_window_s == 0
    assert figures.npu_wall_s == figures.wall_s  # no benchmark: the NPU work after compile is the infer


def test_a_benchmark_inside_the_window_counts_only_its_overlap_and_is_not_idle_time():
    figures = bench.run_figures(
        1,
        spans(
            rest_ti("infer", 0, 10, "npu1@h", index=0),
            rest_ti("benchmark", 10.5, 16.5, "npu1@h"),
            rest_ti("infer", 17, 27, "npu1@h", index=1),
            rest_ti("benchmark", 27, 40, "npu1@h"),  # after the window: not counted
        ),
    )
    assert figures.wall_s == pytest.approx(27)
    assert figures.benchmark_in_window_s == pytest.approx(6)
    assert figures.idle_per_task_s == pytest.approx((27 - 20 - 6) / 2)
    assert figures.npu_wall_s == pytest.approx(40)  # the later benchmark ends the NPU work


def test_chip_grouped_task_ids_are_infer_tasks_too_and_a_missing_queued_time_is_left_out():
    figures = bench.run_figures(
        1,
        spans(
            rest_ti("chip_910B3.infer", 0, 4, "npu1@h", queued_before=None), rest_ti("chip_910B3.benchmark", 5, 6, "n")
        ),
    )
    assert figures.infer_tasks == 1 and figures.wall_s == pytest.approx(4)
    assert math.isnan(figures.queued_to_start_s)


def test_ratios_are_over_the_one_worker_wall_time():
    assert bench.ratios([120.0, 60.0, 42.0]) == pytest.approx([1.0, 0.5, 0.35])
    with pytest.raises(ValueError, match="first wall time must be positive"):
        bench.ratios([0.0, 1.0])


def test_a_run_without_infer_or_an_unfinished_task_is_refused_with_one_line():
    with pytest.raises(ValueError, match="no finished infer task"):
        bench.run_figures(1, spans(rest_ti("compile_model", 0, 5, "npu1@h")))
    running = {**rest_ti("infer", 0, 5, "npu1@h"), "end_date": None, "state": "running"}
    with pytest.raises(ValueError, match=r"infer\[0\] has no start/end date \(state running\)"):
        bench.TaskSpan.from_rest(running)


@pytest.mark.parametrize("text", ["2,3", "1,1", "1,3,2", "one"])
def test_worker_counts_must_rise_from_one(text):
    with pytest.raises(argparse.ArgumentTypeError, match="rising counts starting at 1"):
        bench.worker_counts(text)
    assert bench.worker_counts("1,2,4") == [1, 2, 4]
