"""Regression gate: the pure rules, the baselines, and apply_gate's 'store regressed, then fail' on both dialects."""

from __future__ import annotations

import dataclasses
import json
import statistics
from datetime import timedelta

import pytest

from convmixer_tasks import metrics
from convmixer_tasks.errors import ConfigError, MetricsError, RegressionError
from convmixer_tasks.measure import fingerprint, loopstats
from convmixer_tasks.models import get_card, registry
from convmixer_tasks.verdict import gate
from tests.stored import stored_run
from tests.test_metrics import DAY0, make_row

BASELINE = 81.37  # convmixer_1536_20's card


# --- pure rules -----------------------------------------------------------------------------------------------


def test_accuracy_below_baseline_minus_tolerance_regresses():
    decision = gate.evaluate_gate(BASELINE - 0.6, None, BASELINE, [])
    assert decision.status == "regressed"
    assert decision.baseline_top1 == BASELINE
    assert any(reason.startswith("top1 regressed") for reason in decision.reasons)


@pytest.mark.parametrize("tolerance", [0.5, 0.25, 0.0])
def test_accuracy_at_the_edge_passes_and_just_below_fails(tolerance):
    edge = round(BASELINE - tolerance, 2)  # what a person would write down: 80.87, not 80.86999999999999
    assert gate.evaluate_gate(edge, None, BASELINE, [], top1_tolerance=tolerance).status == "ok"
    assert gate.evaluate_gate(edge - 0.001, None, BASELINE, [], top1_tolerance=tolerance).status == "regressed"


def test_unknown_baseline_skips_the_accuracy_rule_with_a_reason():
    decision = gate.evaluate_gate(1.0, None, None, [], variant="convmixer_768_32")
    assert decision.status == "ok" and decision.baseline_top1 is None
    assert any("no known top-1 baseline for convmixer_768_32" in reason for reason in decision.reasons)


def test_throughput_against_median_of_history():
    history = [100.0, 140.0, 90.0, 120.0, 110.0]
    median = statistics.median(history)
    floor = median * 0.9
    ok = gate.evaluate_gate(BASELINE, floor, BASELINE, history)  # exactly at the limit
    slow = gate.evaluate_gate(BASELINE, floor - 0.01, BASELINE, history)
    assert (ok.status, slow.status) == ("ok", "regressed")
    assert ok.baseline_throughput == slow.baseline_throughput == median
    assert any(reason.startswith("throughput regressed") for reason in slow.reasons)
    # A larger allowed drop lets the same run pass.
    assert gate.evaluate_gate(BASELINE, floor - 0.01, BASELINE, history, throughput_drop_pct=20).status == "ok"


def test_no_history_passes():
    decision = gate.evaluate_gate(BASELINE, 0.001, BASELINE, [])
    assert decision.status == "ok" and decision.baseline_throughput is None
    assert any("no history" in reason for reason in decision.reasons)


def test_both_rules_failing_gives_both_reasons():
    decision = gate.evaluate_gate(10.0, 1.0, BASELINE, [100.0])
    assert decision.status == "regressed"
    assert [reason.split(":")[0] for reason in decision.reasons] == ["top1 regressed", "throughput regressed"]


@pytest.mark.parametrize(
    "settings",
    [
        dict(top1_tolerance=-1),
        dict(top1_tolerance=float("nan")),
        dict(throughput_drop_pct=100),
        dict(throughput_drop_pct=-5),
    ],
)
def test_bad_settings_are_refused(settings):
    # the message names the DAG param that carries the setting, not the function's keyword
    param = {"top1_tolerance": gate.TOP1_TOLERANCE_PARAM, "throughput_drop_pct": gate.THROUGHPUT_TOLERANCE_PARAM}
    with pytest.raises(ConfigError, match=param[next(iter(settings))]):
        gate.evaluate_gate(BASELINE, 1.0, BASELINE, [1.0], **settings)


# --- baselines ------------------------------------------------------------------------------------------------


def test_known_baselines(tmp_path, monkeypatch):
    assert gate.known_baseline_top1("convmixer_1536_20") == 81.37
    assert gate.known_baseline_top1("convmixer_768_32") is None

    assert gate.known_baseline_top1("resnet50") == 76.14 and gate.known_baseline_top1("inception_v3") == 77.31
    assert gate.known_baseline_top1("vit_b_16") is None  # the guide measured other weights than the card loads
    assert gate.known_baseline_top1("not_a_card") is None

    demo_json = tmp_path / "demo_model.json"
    demo = get_card("convmixer_demo")
    reference = dataclasses.replace(demo.reference, expected_top1_file=str(demo_json))  # absolute: used as it is
    monkeypatch.setitem(registry._registry(), "convmixer_demo", dataclasses.replace(demo, reference=reference))
    assert gate.known_baseline_top1("convmixer_demo") is None  # not trained yet
    demo_json.write_text(json.dumps({"expected_top1": 62.5, "other": 1}))
    assert gate.known_baseline_top1("convmixer_demo") == 62.5
    demo_json.write_text(json.dumps({"expected_top1": 63.0}))
    assert gate.known_baseline_top1("convmixer_demo") == 63.0  # read when asked, not cached at import
    for broken in ("{not json", json.dumps({"top1": 60}), json.dumps({"expected_top1": "high"})):
        demo_json.write_text(broken)
        with pytest.raises(ConfigError, match=r"demo_model.json"):
            gate.known_baseline_top1("convmixer_demo")


# --- apply_gate against the store -----------------------------------------------------------------------------

MODEL, BACKEND, DEVICE, BS = "convmixer_1536_20", "ascend", "Ascend310P3", 8


def record(
    url: str, run_id: str, day: int, throughput: float, status: str = "ok", top1: float | None = 81.5, **overrides
) -> None:
    accuracy = dict(top1=None, top5=None) if top1 is None else dict(top1=top1, top5=95.5)
    values = dict(
        run_id=run_id,
        logical_date=DAY0 + timedelta(days=day),
        model_variant=MODEL,
        backend=BACKEND,
        device=DEVICE,
        batch_size=BS,
        status=status,
        throughput=throughput,
        **accuracy,
    )
    metrics.record_run(url, make_row(**{**values, **overrides}))


STEADY = (100.0, 101.0, 99.0, 100.5, 99.5, 100.2)  # a quiet history: a halved run is clearly out of it


def test_apply_gate_stores_regressed_then_raises(metrics_url):
    ok_history = {f"h{i}": value for i, value in enumerate(STEADY)}
    for day, (run_id, throughput) in enumerate(ok_history.items()):
        record(metrics_url, run_id, day, throughput)
    record(metrics_url, "slowpoke", 7, 10.0, status="regressed")  # regressed rows never join the history
    record(metrics_url, "crashed", 8, 1.0, status="failed", top1=None)
    record(metrics_url, "other-device", 8, 9999.0, device="Ascend910B")
    record(metrics_url, "never-gated", 8, 10.0, status="pending")  # its gate task died: not history either
    record(metrics_url, "too-noisy", 8, 1.0, status="inconclusive")  # no verdict: not history

    record(metrics_url, "today", 9, 50.0, status="pending")  # as the record step leaves it
    with pytest.raises(RegressionError) as caught:
        gate.apply_gate(metrics_url, "today", BS, BACKEND, runs=1)  # single-run verdicts (a host with no neighbours)
    stored = stored_run(metrics_url, "today", BS, BACKEND)
    assert stored["status"] == "regressed" and stored["throughput_check"] == "regressed"
    assert stored["baseline_throughput"] == statistics.median(STEADY)
    assert 0 <= stored["throughput_p_value"] < gate.tp.DEFAULT_ALPHA
    assert stored["baseline_top1"] == BASELINE
    assert stored["gate_reasons"] == caught.value.decision.reasons
    assert any(reason.startswith("throughput regressed") for reason in stored["gate_reasons"])
    assert "today" in str(caught.value) and "regressed" in str(caught.value)

    # The same run, re-benchmarked fast enough (a retry re-records its row): ok, and the row says so.
    record(metrics_url, "today", 9, statistics.median(STEADY), status="pending")
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND)
    assert decision.status == "ok" and decision.throughput_check == "ok"
    assert stored_run(metrics_url, "today", BS, BACKEND)["status"] == "ok"


def test_a_drop_beyond_the_tolerance_that_the_history_noise_explains_is_not_a_regression(metrics_url):
    noisy = (100.0, 160.0, 70.0, 130.0, 90.0, 150.0)  # CV ~30 %, as on a shared CPU
    for day, value in enumerate(noisy):
        record(metrics_url, f"h{day}", day, value)
    record(metrics_url, "today", 9, 95.0, status="pending")  # 17 % below the median, inside the noise
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND)
    assert decision.status == "ok" and decision.throughput_check == "below"
    assert decision.throughput_p_value is not None and decision.throughput_p_value >= gate.tp.DEFAULT_ALPHA
    assert any("not statistically clear" in reason for reason in decision.reasons)


def test_two_runs_below_in_a_row_regress_together_naming_the_first(metrics_url):
    history = (100.0, 106.0, 95.0, 104.0, 96.0, 102.0, 98.0, 100.0)  # CV ~4 %: floor 90
    for day, value in enumerate(history):
        record(metrics_url, f"h{day}", day, value)
    record(metrics_url, "first-slow", 10, 86.0, status="pending")  # -14 %: one run is never enough
    first = gate.apply_gate(metrics_url, "first-slow", BS, BACKEND)
    assert (first.status, first.throughput_check) == ("ok", "below")
    record(metrics_url, "second-slow", 11, 85.0, status="pending")  # judged with first-slow (which is history)
    with pytest.raises(RegressionError, match="since run first-slow"):
        gate.apply_gate(metrics_url, "second-slow", BS, BACKEND)


def test_too_noisy_run_is_inconclusive_does_not_fail_and_is_not_history(metrics_url):
    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value)
    record(metrics_url, "hogged", 9, 40.0, status="pending", latency_cv=0.6, latency_robust_cv=0.35, measurements=3)
    decision = gate.apply_gate(metrics_url, "hogged", BS, BACKEND)  # no RegressionError
    row = stored_run(metrics_url, "hogged", BS, BACKEND)
    assert decision.status == row["status"] == "inconclusive" and row["throughput_check"] == "noisy"
    assert "robust per-loop CV 35.0% > 10%" in row["gate_reasons"][1] and "3 measurements" in row["gate_reasons"][1]
    assert "quiet the host, raise max_cv_pct, or take more loops" in row["gate_reasons"][1]
    record(metrics_url, "next", 10, 100.0, status="pending")
    assert gate.apply_gate(metrics_url, "next", BS, BACKEND).baseline_throughput == statistics.median(STEADY)


def test_a_few_spiky_loops_are_judged_on_the_robust_figure_not_made_inconclusive(metrics_url):
    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value)
    loop_ms = 1000.0 * BS / 100.0  # 100 img/s
    times = [loop_ms * (1 + 0.01 * ((index % 7) - 3)) for index in range(100)]  # +-3 %
    for index in (10, 45, 80):
        times[index] = 10 * loop_ms  # three loops 10x slower (GC, an interrupt): mean CV ~130 %, the median unmoved
    mean_based = 1000.0 * BS / statistics.fmean(times)
    record(metrics_url, "spiky", 9, mean_based, status="pending", samples_ms=loopstats.pack_samples(times))
    decision = gate.apply_gate(metrics_url, "spiky", BS, BACKEND)
    assert (decision.status, decision.throughput_check) == ("ok", "ok")  # judged (100 img/s), not inconclusive
    assert mean_based < 0.8 * min(STEADY) and "throughput ok: 100.00" in decision.reasons[1]


@pytest.mark.parametrize(
    "busy, why",
    [
        # the benchmark window's CPU counts: 2.5 cores of other work beside the benchmark's 2 on 2 cores, 2.25x wanted
        (
            {"backend": BACKEND, "host_cores": 2, "cores_used": 2, "other_cores": 2.5, "load_before": 0.5},
            "other work kept 2.50 of 2 cores busy",
        ),
        # a record without them (no /proc/stat): the 1-minute load average around the call, ~2.25x fair share
        ({"backend": BACKEND, "host_cores": 2, "load_before": 0.5, "load_after": 4.5}, "load 4.50 > 2 cores"),
    ],
)
def test_busy_host_turns_a_regression_into_inconclusive(metrics_url, busy, why):
    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value)
    record(metrics_url, "today", 9, 50.0, status="pending", fingerprint=busy)
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND, history=20, runs=1)
    assert decision.status == "inconclusive"
    assert any(why in reason for reason in decision.reasons)
    # A drop far beyond what the contention explains is still a regression, with the contention on record.
    record(metrics_url, "today", 9, 5.0, status="pending", fingerprint=busy)
    with pytest.raises(RegressionError):
        gate.apply_gate(metrics_url, "today", BS, BACKEND, runs=1)
    reasons = stored_run(metrics_url, "today", BS, BACKEND)["gate_reasons"]
    assert any(f"busy host: {why}" in reason for reason in reasons)


def test_fingerprint_change_is_named_and_starts_a_new_baseline(metrics_url):
    old = {"backend": BACKEND, "device": DEVICE, "toolkit_version": "CANN 8.0.RC3"}
    new = {**old, "toolkit_version": "CANN 8.1.RC1"}
    for day, value in enumerate(STEADY):
        record(metrics_url, f"h{day}", day, value, fingerprint=old, fingerprint_key=fingerprint.key(old))
    record(metrics_url, "upgraded", 9, 88.0, status="pending", fingerprint=new, fingerprint_key=fingerprint.key(new))
    decision = gate.apply_gate(metrics_url, "upgraded", BS, BACKEND)
    assert decision.status == "ok" and decision.throughput_check == "unjudged"  # no history on the new CANN yet
    change = next(reason for reason in decision.reasons if reason.startswith("environment changed"))
    drop = (88.0 / statistics.median(STEADY) - 1) * 100
    assert f"toolkit_version: CANN 8.0.RC3 → CANN 8.1.RC1: throughput {drop:+.1f}%, top-1 +0.00" in change
    assert "since run h5" in change


def test_row_without_samples_says_what_was_not_judged(metrics_url):
    record(metrics_url, "lonely", 0, 100.0, status="pending")  # multi-thread ais_bench: no per-loop list
    decision = gate.apply_gate(metrics_url, "lonely", BS, BACKEND)
    assert any("none kept" in reason for reason in decision.reasons)
    assert any(reason.startswith("throughput not judged: 100.00 img/s") for reason in decision.reasons)


def test_apply_gate_turns_pending_into_ok_and_stores_the_verdict(metrics_url):
    record(metrics_url, "earlier", 0, 100.0)
    record(metrics_url, "fresh", 1, 95.0, status="pending")
    assert stored_run(metrics_url, "fresh", BS, BACKEND)["gate_reasons"] is None
    decision = gate.apply_gate(metrics_url, "fresh", BS, BACKEND)
    row = stored_run(metrics_url, "fresh", BS, BACKEND)
    assert decision.status == row["status"] == "ok"
    assert row["gate_reasons"] == decision.reasons and row["baseline_throughput"] == 100.0
    assert [stored_run(metrics_url, run, BS, BACKEND)["status"] for run in ("fresh", "earlier")] == ["ok", "ok"]
    # A retried gate task finds the row already gated and decides again, to the same verdict.
    assert gate.apply_gate(metrics_url, "fresh", BS, BACKEND) == decision


def test_apply_gate_accuracy_and_overrides(metrics_url):
    record(metrics_url, "first", 0, 100.0, top1=80.0, status="pending")
    with pytest.raises(RegressionError, match="top1 regressed"):
        gate.apply_gate(metrics_url, "first", BS, BACKEND)
    row = stored_run(metrics_url, "first", BS, BACKEND)
    assert row["status"] == "regressed"
    assert any("only 0 " in reason for reason in row["gate_reasons"])

    decision = gate.apply_gate(metrics_url, "first", BS, BACKEND, top1_tolerance=1.5)
    assert decision.status == "ok"
    assert gate.apply_gate(metrics_url, "first", BS, BACKEND, baseline_top1=79.0).baseline_top1 == 79.0


def test_apply_gate_refuses_missing_and_failed_rows(metrics_url):
    with pytest.raises(MetricsError, match="record_run"):
        gate.apply_gate(metrics_url, "ghost", BS, BACKEND)
    record(metrics_url, "crashed", 0, 1.0, status="failed", top1=None)
    with pytest.raises(MetricsError, match="nothing to gate"):
        gate.apply_gate(metrics_url, "crashed", BS, BACKEND)
    assert stored_run(metrics_url, "crashed", BS, BACKEND)["status"] == "failed"


@pytest.mark.parametrize(
    "row, expected",
    [
        (dict(status="pending"), "not gated yet"),
        (
            dict(status="inconclusive", latency_robust_cv=0.35),
            "too noisy to judge (robust per-loop CV 35%); quiet the host, raise max_cv_pct, or take more loops "
            "(benchmark_loop)",
        ),
        (
            dict(
                status="inconclusive",
                latency_robust_cv=0.35,
                fingerprint={"host_cores": 2, "cores_used": 2, "other_cores": 1.5},
            ),
            "not judged, busy host: other work kept 1.50 of 2 cores busy beside the benchmark's 2; rerun when the host "
            "is quiet",
        ),
        (
            dict(
                status="ok",
                throughput_check="unjudged",
                gate_reasons=[
                    "top1 ok",
                    "throughput not judged: 10.00 img/s (from per-loop samples), only 2 same-fingerprint "
                    "ok runs (need 5)",
                ],
            ),
            "ok; throughput not judged yet (2 of 5 runs of history)",
        ),
        (
            dict(
                status="ok",
                throughput_check="ok",
                throughput=90.0,
                throughput_robust=105.0,
                baseline_throughput=100.0,
                fingerprint={"host_cores": 2, "load_before": 3.0},
            ),
            "ok: +5.0% vs history median; busy host: load 3.00 > 2 cores",
        ),
        (
            dict(
                status="regressed",
                gate_reasons=["top1 ok: 81.4 >= 80.9", "throughput regressed since run r1: 50 then 49"],
            ),
            "throughput regressed since run r1",
        ),
    ],
)
def test_the_short_reason_says_why_and_what_to_do(row, expected):
    assert gate.short_reason(row) == expected
