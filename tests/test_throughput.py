"""The throughput evidence and verdict: packed samples, their stats (checked against numpy/scipy directly), the
re-measure loop, and the pure verdict's branches; the migration's new status and columns on both dialects."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from convmixer_tasks import metrics
from convmixer_tasks.backends import base
from convmixer_tasks.errors import ConfigError, MetricsError
from convmixer_tasks.measure import fingerprint, loopstats
from convmixer_tasks.measure.energy import PowerUnavailable
from convmixer_tasks.metrics.engine import get_engine
from convmixer_tasks.run.run_options import BenchmarkOptions, GateOptions
from convmixer_tasks.verdict import throughput as tp
from tests.stored import stored_run
from tests.test_metrics import downgrade, insert_raw, make_row, read_old, version_rows


def test_samples_round_trip_at_float32_precision_and_compress():
    rng = np.random.default_rng(1)
    samples = list(rng.lognormal(math.log(12.0), 0.05, 1000))
    packed = loopstats.pack_samples(samples)
    assert len(packed) < 4 * len(samples) * 4 / 3 + 8  # at most float32 + base64
    np.testing.assert_array_equal(loopstats.unpack_samples(packed), np.asarray(samples, dtype=np.float32))
    with pytest.raises(ConfigError, match="not packed samples"):
        loopstats.unpack_samples("not base64 at all!")


def test_sample_stats_match_numpy_and_scipy():
    times = [10.0, 11.0, 9.0, 10.5, 30.0, 10.2]
    got = loopstats.sample_stats(times, batch_size=4, warmup=5)
    assert got is not None
    array = np.asarray(times)
    assert got.count == 6 and got.warmup == 5
    assert got.mean_ms == pytest.approx(array.mean()) and got.p50_ms == pytest.approx(np.median(array))
    assert got.p99_ms == pytest.approx(np.percentile(array, 99))
    assert got.cv == pytest.approx(array.std(ddof=1) / array.mean())
    assert got.iqr_ms == pytest.approx(stats.iqr(array))
    assert got.throughput == pytest.approx(4000.0 / array.mean())
    assert loopstats.sample_stats([10.0], 4, 5) is None  # one loop: no dispersion to speak of
    with pytest.raises(ConfigError, match="positive finite"):
        loopstats.sample_stats([10.0, -1.0], 4, 5)


def fake_bench(samples):
    return SimpleNamespace(samples=samples, warmup=5, batch_size=4)


def test_remeasure_until_quiet_keeps_the_least_noisy_and_stops_at_the_limit():
    noisy, quiet = [10.0, 30.0, 10.0, 30.0], [10.0, 10.1, 9.9, 10.0]
    queue = iter([noisy, quiet, noisy])
    tries = loopstats.measure_until_quiet(lambda: fake_bench(next(queue)), 4, remeasure=2, max_cv_pct=10)
    assert len(tries.all) == 2 and tries.chosen.samples == quiet  # stopped once quiet

    tries = loopstats.measure_until_quiet(lambda: fake_bench(noisy), 4, remeasure=2, max_cv_pct=10)
    assert tries.stats is not None
    assert len(tries.all) == 3 and tries.stats.cv > 0.1  # still noisy after R re-measurements
    no_list = loopstats.measure_until_quiet(lambda: fake_bench([]), 4, remeasure=2, max_cv_pct=10)
    assert len(no_list.all) == 1 and no_list.stats is None  # no per-loop list: no CV, nothing to repeat
    with pytest.raises(ConfigError, match="benchmark_remeasure"):
        loopstats.measure_until_quiet(lambda: fake_bench(noisy), 4, remeasure=-1, max_cv_pct=10)


HISTORY = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]


def robust_t_p(values, history):
    """Student's pooled t test on log figures with the history's scale taken as its normal-consistent MAD: what the
    verdict computes for independent runs (HISTORY has no positive autocorrelation: worth its count)."""
    new, old = np.log(values), np.log(history)
    df = len(new) + len(old) - 2
    new_squares = np.var(new, ddof=1) * (len(new) - 1) if len(new) > 1 else 0.0
    pooled = (new_squares + (len(old) - 1) * stats.median_abs_deviation(old, scale="normal") ** 2) / df
    spread = math.sqrt(pooled * (1 / len(new) + 1 / len(old)))
    return stats.t.cdf((new.mean() - old.mean()) / spread, df)


def judged(value, history=HISTORY, previous=None, cv=0.02, samples=None, **options):
    measured = tp.Measured(value, samples, 4, cv, 1)
    return tp.judge(measured, history, previous, tolerance_pct=10.0, **options)


def test_verdict_branches():
    assert judged(None).check == "unjudged"
    assert judged(50.0, cv=0.2).status == "inconclusive"  # too noisy, whatever the value
    assert judged(50.0, history=HISTORY[:3]).check == "unjudged"  # too little history: no verdict
    assert judged(95.0).status == "ok" and judged(95.0).check == "ok"
    alone = judged(50.0)  # clear on its own, but one run is never enough by default
    assert (alone.status, alone.check) == ("ok", "below") and "one run is not enough" in alone.reason
    clear = judged(50.0, runs=1)
    assert clear.status == "regressed" and clear.p_value < tp.DEFAULT_ALPHA
    assert clear.p_value == pytest.approx(robust_t_p([50.0], HISTORY))
    wide = [60.0, 160.0, 90.0, 130.0, 75.0, 140.0]
    assert judged(80.0, history=wide).check == "below"  # below the floor but inside the history's noise


def test_the_runs_own_noise_can_veto_a_regression():
    times = (20.0, 74.0) * 4  # figure 4000 / 47 = 85 img/s, below the floor of 90, but the loops disagree wildly
    alone = judged(4000.0 / 47.0, runs=1)  # the same figure without samples: the history alone calls it clear
    assert alone.status == "regressed"
    low, high = loopstats.figure_interval(times, 4)
    assert low < 4000.0 / 47.0 < high and high >= 90.0
    vetoed = judged(4000.0 / 47.0, samples=times, cv=0.05, runs=1)
    assert (vetoed.status, vetoed.check) == ("ok", "below") and "interval" in vetoed.reason


def test_a_suspect_figure_is_confirmed_and_judged_on_its_confirmations():
    line = loopstats.suspect_line(HISTORY, 10.0)
    assert line == pytest.approx(np.median(HISTORY) * 0.95) and loopstats.suspect_line(HISTORY[:3], 10.0) is None
    assert loopstats.suspect_line(HISTORY, 10.0, previous_check="below") == math.inf  # after a low run: always confirm
    calls = iter([101.0, 99.0, 100.0])
    assert loopstats.confirm_if_suspect(lambda: next(calls), 96.0, line, 3) == []  # not suspect: nothing taken
    assert loopstats.confirm_if_suspect(lambda: next(calls), 80.0, line, 3) == [101.0, 99.0, 100.0]
    assert loopstats.confirm_if_suspect(lambda: 1 / 0, 80.0, None, 3) == []  # no history line: no confirmation
    with pytest.raises(ConfigError, match="benchmark_confirm"):
        loopstats.confirm_if_suspect(lambda: 1.0, 80.0, line, -1)
    cleared = tp.judge(tp.Measured(80.0, None, 4, 0.02, 4, (101.0, 99.0, 100.0)), HISTORY, tolerance_pct=10.0)
    assert cleared.check == "ok" and "the first, 80.00, was below" in cleared.reason  # an unlucky first figure
    kept = tp.judge(tp.Measured(80.0, None, 4, 0.02, 4, (81.0, 79.0, 80.0)), HISTORY, tolerance_pct=10.0, runs=1)
    assert tp.effective_size(HISTORY) == len(HISTORY)  # no positive autocorrelation: worth its count
    assert kept.status == "regressed" and kept.p_value == pytest.approx(robust_t_p([81.0, 79.0, 80.0], HISTORY))


def test_two_runs_below_are_judged_together_and_each_must_show_the_drop():
    previous = tp.Previous("r1", 82.0, "below", True, (80.0, 81.0, 79.0))
    history = [82.0, *HISTORY]  # the previous run is history[0]
    both = tp.judge(tp.Measured(83.0, None, 4, 0.02, 4, (80.5, 79.5, 80.0)), history, previous, tolerance_pct=10.0)
    assert both.status == "regressed" and "since run r1" in both.reason
    expected = robust_t_p([80.0, 81.0, 79.0, 80.5, 79.5, 80.0], HISTORY)
    assert both.p_value == pytest.approx(expected)
    measured = tp.Measured(83.0, None, 4, 0.02, 4, (80.5, 79.5, 80.0))
    given = tp.judge(measured, history, previous, tolerance_pct=10.0, pair_history=HISTORY)  # what the gate passes
    assert given.p_value == pytest.approx(expected)
    short = tp.judge(measured, history, previous, tolerance_pct=10.0, pair_history=HISTORY[:4])
    assert short.status == "ok"  # too little history to judge the pair against
    # One whole run slowed 2.5x next to a merely low one: the pair's mean is far below the floor, but the low run
    # does not show the drop on its own, so it is not a regression.
    slowed = tp.Previous("r1", 40.0, "below", True, (40.0, 41.0, 39.0))
    low = tp.judge(
        tp.Measured(93.0, None, 4, 0.02, 4, (94.5, 95.0, 94.0)), [40.0, *HISTORY], slowed, tolerance_pct=10.0
    )
    assert low.status == "ok"


def test_bad_verdict_options_are_refused():
    for options, match in (
        (dict(max_cv_pct=0), "max_cv_pct"),
        (dict(alpha=1.5), "alpha"),
        (dict(min_history=1), "min_history"),
        (dict(runs=3), "runs must be 1 or 2"),
    ):
        with pytest.raises(ConfigError, match=match):
            judged(95.0, **options)


def test_fingerprint_key_ignores_load_and_differences_name_the_change():
    one = {"backend": "onnxruntime", "toolkit_version": "onnxruntime 1.22.0", "load_before": 0.1}
    two = {**one, "load_before": 5.0}
    assert fingerprint.key(one) == fingerprint.key(two) and fingerprint.key(None) is None
    three = {**one, "toolkit_version": "onnxruntime 1.23.0", "provider": "CPUExecutionProvider"}
    assert fingerprint.differences(one, three) == [
        "provider: None → CPUExecutionProvider",
        "toolkit_version: onnxruntime 1.22.0 → onnxruntime 1.23.0",
    ]
    built = fingerprint.build("onnxruntime", "cpu", "onnxruntime 1.x", {"input_dtype": "uint8"}, {"provider": "cpu"})
    assert built["input_dtype"] == "uint8" and built["provider"] == "cpu" and built["host_cores"] >= 1


def test_migration_0004_adds_inconclusive_and_the_evidence_columns_reversibly(empty_url):
    metrics.upgrade(empty_url, revision="0002")
    with pytest.raises(sa.exc.IntegrityError):
        insert_raw(empty_url, status="inconclusive", top1=1.0, top5=2.0)
    metrics.upgrade(empty_url)  # through 0004 (and 0005, whose downgrade is crossed below as well)
    row = make_row(
        run_id="noisy",
        status="inconclusive",
        samples_ms=loopstats.pack_samples([1.0, 2.0]),
        sample_count=2,
        latency_cv=0.4,
        measurements=3,
        throughput_check="noisy",
        fingerprint={"backend": "onnxruntime"},
        fingerprint_key="k",
    )
    metrics.record_run(empty_url, row)
    stored = stored_run(empty_url, "noisy", 4, "onnxruntime")
    assert stored["status"] == "inconclusive" and loopstats.unpack_samples(stored["samples_ms"]) == [1.0, 2.0]
    assert stored["fingerprint"] == {"backend": "onnxruntime"}
    with pytest.raises(MetricsError, match="throughput_check"):
        metrics.record_run(empty_url, make_row(run_id="bad", throughput_check="meh"))
    downgrade(empty_url, "0002")
    assert version_rows(empty_url) == ["0002"]
    back = read_old(empty_url, "noisy")
    assert back["status"] == "pending" and "inconclusive" in back["gate_reasons"][0]
    columns = {column["name"] for column in sa.inspect(get_engine(empty_url)).get_columns("convmixer_validation_runs")}
    assert "samples_ms" not in columns and "fingerprint" not in columns
    metrics.upgrade(empty_url)
    assert stored_run(empty_url, "noisy", 4, "onnxruntime")["samples_ms"] is None


class ScriptedBench:
    """Stands in for a backend's benchmark: returns the scripted per-loop times in turn (a test double)."""

    def __init__(self, scripts):
        self.scripts, self.calls = list(scripts), 0

    # What a measurement records beside its figures: the interface's defaults, and no power reading.
    environment = base.Backend.environment
    device_state = base.Backend.device_state
    host_cores_used = base.Backend.host_cores_used

    def power_source(self):
        raise PowerUnavailable("scripted benchmark: no power reader")

    def benchmark(self, artifact, loop, warmup):
        from convmixer_tasks.backends import base
        from convmixer_tasks.stages import aisbench_format

        samples = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        timing = aisbench_format.stats(samples)
        return base.BenchResult(
            backend="onnxruntime",
            batch_size=artifact.batch_size,
            loop=loop,
            warmup=warmup,
            throughput=aisbench_format.throughput(artifact.batch_size, timing["mean"]),
            latency_mean_ms=timing["mean"],
            latency_p50_ms=timing["median"],
            latency_p99_ms=timing[aisbench_format.PERCENTILE_KEY],
            samples=samples,
            formula=aisbench_format.THROUGHPUT_FORMULA,
        )


@pytest.mark.parametrize(
    "scripts, expected_measurements",
    [
        ([[10.0, 30.0, 10.0, 30.0], [10.0, 10.2, 9.8, 10.0]], 2),  # noisy, then quiet: the quiet one is kept
        ([[10.0, 10.2, 9.8, 10.0]], 1),  # quiet at once: measured once
    ],
)
def test_benchmark_step_remeasures_a_noisy_run_and_keeps_the_evidence(
    tmp_path, monkeypatch, scripts, expected_measurements
):
    from convmixer_tasks.fileio import read_json
    from convmixer_tasks.run import benchmark_step
    from convmixer_tasks.run.rows import build_row
    from tests.test_steps import _step_results

    compiled = _step_results(batch_sizes=(4,), throughput=100.0)[3][0]
    scripted = ScriptedBench(scripts)
    monkeypatch.setattr(benchmark_step, "get_backend", lambda name, **settings: scripted)
    summary = benchmark_step.benchmark_artifact(
        compiled, BenchmarkOptions(loop=4, remeasure=2, max_cv_pct=10.0), tmp_path
    )
    assert summary.measurements == scripted.calls == expected_measurements
    assert summary.samples_ms is not None and summary.fingerprint is not None
    assert loopstats.unpack_samples(summary.samples_ms) == pytest.approx([10.0, 10.2, 9.8, 10.0], rel=1e-6)
    assert summary.sample_count == 4
    assert summary.latency_cv == pytest.approx(np.std([10.0, 10.2, 9.8, 10.0], ddof=1) / 10.0)
    assert summary.throughput == pytest.approx(400.0)
    assert summary.fingerprint["backend"] == "onnxruntime" and "load_after" in summary.fingerprint
    assert len(read_json(summary.bench_json)["measurements"]) == expected_measurements
    row = build_row(*(_pick(_step_results(batch_sizes=(4,), throughput=100.0), summary)))
    assert row.warmup_count == 5 and row.fingerprint_key == fingerprint.key(summary.fingerprint)


def _pick(results, summary):
    run, plans, exported, compiled, _, scores = results
    return run, plans[0], exported[0], compiled[0], summary, scores[0]


def test_rebaseline_on_purpose_restarts_the_fingerprints_history(metrics_url, capsys):
    from convmixer_tasks import cli
    from convmixer_tasks.errors import RegressionError
    from convmixer_tasks.verdict import gate
    from tests.test_gate import BACKEND, BS, STEADY, record

    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value)
    record(metrics_url, "new-precision", 9, 50.0, status="pending")
    with pytest.raises(RegressionError):
        gate.apply_gate(metrics_url, "new-precision", BS, BACKEND, runs=1)
    row_id = stored_run(metrics_url, "new-precision", BS, BACKEND)["id"]

    argv = ["-o", "json", "metrics-rebaseline", "--url", metrics_url, "--row", str(row_id)]
    assert cli.main([*argv, "--reason", "precision_mode allow_fp32_to_fp16 on purpose", "--by", "alice"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["status"] == "ok" and stored["rebaselined_by"] == "alice" and stored["rebaselined_at"]
    assert stored["rebaseline_reason"] == "precision_mode allow_fp32_to_fp16 on purpose"
    line = stored["gate_reasons"][-1]
    assert line.startswith("rebaselined by alice at ")
    assert line.endswith("(was 'regressed'; the throughput baseline starts here)")
    assert cli.main([*argv, "--reason", "twice", "--by", "bob"]) == 1  # the page's rule: once is enough
    assert "cannot be accepted as baseline: already accepted as the baseline by alice" in capsys.readouterr().err

    record(metrics_url, "after", 10, 50.5, status="pending")  # the old 100 img/s runs no longer count
    decision = gate.apply_gate(metrics_url, "after", BS, BACKEND)
    assert (decision.status, decision.throughput_check) == ("ok", "unjudged") and "only 1 " in decision.reasons[1]

    assert cli.main([*argv[:-1], "999", "--reason", "x"]) == 1
    assert "no metrics row with id 999" in capsys.readouterr().err
    assert cli.main([*argv, "--reason", "  "]) == 1
    assert "needs a reason" in capsys.readouterr().err


def test_benchmark_step_confirms_a_suspect_figure_with_fresh_measurements(tmp_path, monkeypatch, metrics_url):
    from convmixer_tasks.fileio import read_json
    from convmixer_tasks.run import benchmark_step
    from tests.test_steps import _step_results

    compiled = _step_results(batch_sizes=(4,), throughput=100.0)[3][0]
    slow, fast = [20.0, 20.2, 19.8, 20.0], [10.0, 10.2, 9.8, 10.0]  # 200 img/s, then 400 img/s
    scripted = ScriptedBench([slow, fast, fast])
    monkeypatch.setattr(benchmark_step, "get_backend", lambda name, **settings: scripted)
    seen = []

    def suspect(env):
        seen.append(fingerprint.key(env))
        return 380.0  # the history's suspect line

    summary = benchmark_step.benchmark_artifact(
        compiled, BenchmarkOptions(loop=4, confirm=2), tmp_path, suspect=suspect
    )
    assert summary.fingerprint is not None
    assert summary.throughput == pytest.approx(200.0)  # the row keeps its first figure: the history stays unbiased
    assert summary.fingerprint[fingerprint.CONFIRMATIONS] == pytest.approx([400.0, 400.0])
    assert summary.measurements == scripted.calls == 3 and len(read_json(summary.bench_json)["measurements"]) == 3
    assert seen == [fingerprint.key(summary.fingerprint)]  # the confirmations are not part of the key
    not_suspect = benchmark_step.benchmark_artifact(
        compiled, BenchmarkOptions(loop=4, confirm=2), tmp_path, suspect=lambda env: 150.0
    )
    assert not_suspect.fingerprint is not None
    assert not_suspect.measurements == 1 and fingerprint.CONFIRMATIONS not in not_suspect.fingerprint

    # The DAG's suspect check reads the same-fingerprint history; without a readable metrics DB it gives no line.
    params = GateOptions(history=20, throughput_drop_pct=10.0)
    from convmixer_tasks import metrics
    from tests.test_metrics import make_row

    env = summary.fingerprint
    for day in range(6):
        metrics.record_run(
            metrics_url,
            make_row(
                run_id=f"h{day}",
                logical_date=f"2026-11-0{day + 1}T00:00:00+00:00",
                model_variant="convmixer_demo",
                backend=compiled.backend,
                device=compiled.device,
                batch_size=4,
                throughput=400.0 + day,
                fingerprint=env,
                fingerprint_key=fingerprint.key(env),
            ),
        )
    line = benchmark_step.suspect_check(metrics_url, "convmixer_demo", compiled, params)(env)
    assert line == pytest.approx(402.5 * 0.95)
    broken = benchmark_step.suspect_check("sqlite:////nonexistent/dir/x.db", "convmixer_demo", compiled, params)
    assert broken(env) is None


def test_a_drifting_history_is_worth_fewer_runs_and_a_run_that_drifted_low_is_not_a_regression():
    rng = np.random.default_rng(3)
    independent = list(100 * np.exp(rng.normal(0, 0.02, 20)))
    drifting = [104 - 0.6 * index + (0.3 if index % 2 else -0.3) for index in range(20)][::-1]  # newest first: 93
    assert tp.effective_size(independent) == 20  # no positive lag-1 autocorrelation in this draw
    assert tp.effective_size(drifting) < 5  # statsmodels' acf: the runs move together
    previous = tp.Previous("r1", 88.0, "below", False, (88.5, 87.5, 88.0))
    measured = tp.Measured(87.0, None, 4, 0.02, 4, (87.5, 87.0, 88.0))
    # Against independent runs the same pair is clear; against the drift it is where the drift was heading.
    assert tp.judge(measured, independent, previous, tolerance_pct=10.0).status == "regressed"
    drifted = tp.judge(measured, drifting, previous, tolerance_pct=10.0)
    assert (drifted.status, drifted.check) == (
        "ok",
        "below",
    ) and "the series drifts (its last 20 runs are worth " in drifted.reason
    iid_p = stats.ttest_ind(np.log([88.5, 87.5, 88.0, 87.5, 87.0, 88.0]), np.log(drifting), alternative="less").pvalue
    assert drifted.p_value is not None
    assert iid_p < tp.DEFAULT_ALPHA < drifted.p_value  # what assuming independent runs would have called clear


def test_spikes_move_the_mean_based_figure_and_cv_but_not_the_robust_ones():
    times = [10.0, 10.2, 9.8, 10.1, 9.9] * 20
    times[7] = times[50] = times[93] = 80.0  # three loops 8x slower
    got = loopstats.sample_stats(times, batch_size=4, warmup=5)
    assert got is not None
    assert got.cv > 0.5 and got.robust_cv == pytest.approx(stats.median_abs_deviation(times, scale="normal") / 10.0)
    assert got.robust_cv < 0.05 and got.throughput_robust == pytest.approx(400.0)
    assert got.throughput < 0.85 * got.throughput_robust
    tries = loopstats.measure_until_quiet(lambda: fake_bench(times), 4, remeasure=2, max_cv_pct=10)
    assert len(tries.all) == 1 and tries.figure == pytest.approx(400.0)  # quiet by the robust CV: not re-measured


def test_a_run_whose_measurements_disagree_cannot_carry_a_two_run_regression():
    history = list(100 * np.exp(np.random.default_rng(5).normal(0, 0.02, 20)))
    slowed = tp.Previous("r1", 40.0, "below", True, (41.0, 39.0, 40.5))  # a neighbour slowed all of it
    came_back = tp.Measured(88.0, None, 4, 0.02, 4, (40.0, 41.0, 99.0))  # it left during this run's measurements
    judged_pair = tp.judge(came_back, [40.0, *history], slowed, tolerance_pct=10.0, pair_history=history)
    assert (judged_pair.status, judged_pair.check) == ("ok", "below")
    assert "this run measured levels that disagree beyond 6x the run-to-run noise" in judged_pair.reason
    steady = tp.Measured(41.0, None, 4, 0.02, 4, (40.0, 41.0, 40.5))  # a slower artifact: all at the new level
    assert tp.judge(steady, [40.0, *history], slowed, tolerance_pct=10.0, pair_history=history).status == "regressed"


def test_a_drop_the_newest_runs_had_already_made_is_a_drift_not_a_step():
    rng = np.random.default_rng(7)
    history = list(np.array([100.0] * 15 + [95.0, 93.0, 92.0, 91.0, 90.0])[::-1] * np.exp(rng.normal(0, 0.01, 20)))
    previous = tp.Previous("r1", 88.0, "below", True, (88.5, 87.5, 88.0))
    measured = tp.Measured(87.0, None, 4, 0.02, 4, (87.5, 87.0, 88.0))
    drifted = tp.judge(measured, [88.0, *history], previous, tolerance_pct=10.0, pair_history=history)
    assert drifted.status == "ok" and "the newest 5 ok runs had already come down to" in drifted.reason
    stepped = [100.0 * factor for factor in np.exp(rng.normal(0, 0.01, 20))]  # level until the pair: a step
    assert (
        tp.judge(measured, [88.0, *stepped], previous, tolerance_pct=10.0, pair_history=stepped).status == "regressed"
    )
