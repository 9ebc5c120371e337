"""Regression gate: the pure rules, the baselines, and apply_gate's 'store regressed, then fail' on both dialects."""

from __future__ import annotations

import json
import statistics
from datetime import timedelta

import pytest

from convmixer_tasks import gate, metrics
from convmixer_tasks.errors import ConfigError, MetricsError, RegressionError
from tests.test_metrics import DAY0, make_row

BASELINE = gate.BASELINE_TOP1["convmixer_1536_20"]


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


@pytest.mark.parametrize("settings", [dict(top1_tolerance=-1), dict(top1_tolerance=float("nan")),
                                      dict(throughput_drop_pct=100), dict(throughput_drop_pct=-5)])
def test_bad_settings_are_refused(settings):
    # the message names the DAG param that carries the setting, not the function's keyword
    param = {"top1_tolerance": gate.TOP1_TOLERANCE_PARAM, "throughput_drop_pct": gate.THROUGHPUT_TOLERANCE_PARAM}
    with pytest.raises(ConfigError, match=param[next(iter(settings))]):
        gate.evaluate_gate(BASELINE, 1.0, BASELINE, [1.0], **settings)


# --- baselines ------------------------------------------------------------------------------------------------

def test_known_baselines(tmp_path, monkeypatch):
    assert gate.known_baseline_top1("convmixer_1536_20") == 81.37
    assert gate.known_baseline_top1("convmixer_768_32") is None

    demo_json = tmp_path / "demo_model.json"
    monkeypatch.setattr(gate, "DEMO_EXPECTED", demo_json)
    assert gate.known_baseline_top1("convmixer_demo") is None  # not trained yet
    demo_json.write_text(json.dumps({"expected_top1": 62.5, "other": 1}))
    assert gate.known_baseline_top1("convmixer_demo") == 62.5
    demo_json.write_text(json.dumps({"expected_top1": 63.0}))
    assert gate.known_baseline_top1("convmixer_demo") == 63.0  # read when asked, not cached at import
    for broken in ("{not json", json.dumps({"top1": 60}), json.dumps({"expected_top1": "high"})):
        demo_json.write_text(broken)
        with pytest.raises(ConfigError, match="demo_model.json"):
            gate.known_baseline_top1("convmixer_demo")


# --- apply_gate against the store -----------------------------------------------------------------------------

MODEL, BACKEND, DEVICE, BS = "convmixer_1536_20", "ascend", "Ascend310P3", 8


def record(url: str, run_id: str, day: int, throughput: float, status: str = "ok", top1: float = 81.5,
           **overrides) -> None:
    accuracy = dict(top1=None, top5=None) if top1 is None else dict(top1=top1, top5=95.5)
    values = dict(run_id=run_id, logical_date=DAY0 + timedelta(days=day), model_variant=MODEL, backend=BACKEND,
                  device=DEVICE, batch_size=BS, status=status, throughput=throughput, **accuracy)
    metrics.record_run(url, make_row(**{**values, **overrides}))


def test_apply_gate_stores_regressed_then_raises(metrics_url):
    ok_history = {"h1": 500.0, "h2": 100.0, "h3": 110.0, "h4": 120.0, "h5": 130.0, "h6": 140.0}
    for day, (run_id, throughput) in enumerate(ok_history.items()):
        record(metrics_url, run_id, day, throughput)
    record(metrics_url, "slowpoke", 7, 10.0, status="regressed")  # regressed rows never join the median
    record(metrics_url, "crashed", 8, 1.0, status="failed", top1=None)
    record(metrics_url, "other-device", 8, 9999.0, device="Ascend910B")
    record(metrics_url, "never-gated", 8, 10.0, status="pending")  # its gate task died: not history either
    newest_five = list(ok_history.values())[-5:]  # h1 (oldest, 500) falls out of the last-5 window

    record(metrics_url, "today", 9, 100.0, status="pending")  # as the record step leaves it
    with pytest.raises(RegressionError) as caught:
        gate.apply_gate(metrics_url, "today", BS, BACKEND)
    stored = metrics.get_run(metrics_url, "today", BS, BACKEND)
    assert stored["status"] == "regressed"
    assert stored["baseline_throughput"] == statistics.median(newest_five)
    assert stored["baseline_top1"] == BASELINE
    assert stored["gate_reasons"] == caught.value.decision.reasons
    assert any(reason.startswith("throughput regressed") for reason in stored["gate_reasons"])
    assert "today" in str(caught.value) and "regressed" in str(caught.value)

    # The same run, re-benchmarked fast enough (a retry re-records its row): ok, and the row says so.
    record(metrics_url, "today", 9, statistics.median(newest_five), status="pending")
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND)
    assert decision.status == "ok"
    assert metrics.get_run(metrics_url, "today", BS, BACKEND)["status"] == "ok"


def test_apply_gate_turns_pending_into_ok_and_stores_the_verdict(metrics_url):
    record(metrics_url, "earlier", 0, 100.0)
    record(metrics_url, "fresh", 1, 95.0, status="pending")
    assert metrics.get_run(metrics_url, "fresh", BS, BACKEND)["gate_reasons"] is None
    decision = gate.apply_gate(metrics_url, "fresh", BS, BACKEND)
    row = metrics.get_run(metrics_url, "fresh", BS, BACKEND)
    assert decision.status == row["status"] == "ok"
    assert row["gate_reasons"] == decision.reasons and row["baseline_throughput"] == 100.0
    assert metrics.recent_ok_throughputs(metrics_url, MODEL, BACKEND, DEVICE, BS, n=5) == [95.0, 100.0]
    # A retried gate task finds the row already gated and decides again, to the same verdict.
    assert gate.apply_gate(metrics_url, "fresh", BS, BACKEND) == decision


def test_apply_gate_accuracy_and_overrides(metrics_url):
    record(metrics_url, "first", 0, 100.0, top1=80.0, status="pending")
    with pytest.raises(RegressionError, match="top1 regressed"):
        gate.apply_gate(metrics_url, "first", BS, BACKEND)
    row = metrics.get_run(metrics_url, "first", BS, BACKEND)
    assert row["status"] == "regressed"
    assert any("no history" in reason for reason in row["gate_reasons"])

    decision = gate.apply_gate(metrics_url, "first", BS, BACKEND, top1_tolerance=1.5)
    assert decision.status == "ok"
    assert gate.apply_gate(metrics_url, "first", BS, BACKEND, baseline_top1=79.0).baseline_top1 == 79.0


def test_apply_gate_refuses_missing_and_failed_rows(metrics_url):
    with pytest.raises(MetricsError, match="record_run"):
        gate.apply_gate(metrics_url, "ghost", BS, BACKEND)
    record(metrics_url, "crashed", 0, 1.0, status="failed", top1=None)
    with pytest.raises(MetricsError, match="nothing to gate"):
        gate.apply_gate(metrics_url, "crashed", BS, BACKEND)
    assert metrics.get_run(metrics_url, "crashed", BS, BACKEND)["status"] == "failed"
