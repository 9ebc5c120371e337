"""convmixer_tasks.run.alerts / review / digest: which rows raise which event, the one message per run (text and HTML,
links, no secrets), the review's answer through metrics.rebaseline, and the digest — on a real SQLite metrics DB."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta

import pytest

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.metrics import record_run, upgrade
from convmixer_tasks.run import alerts, digest, review
from convmixer_tasks.run.settings import REGRESSION_RULES, env_reader, load_alert_settings
from tests.stored import stored_row
from tests.test_metrics import DAY0, make_row

BASE = "https://airflow.example.com"
FAST = "throughput regressed: 10.00 < 90.00 (-90.0%; t-test vs history p=1e-09 < 0.01)"
ENV = (
    "environment changed since run r0: toolkit CANN 8.0 -> CANN 8.1: throughput -20.0% vs the previous environment's "
    "3 ok runs"
)


def settings(**values: str):
    return load_alert_settings(env_reader({f"AIRFLOW__CONVMIXER__{k.upper()}": v for k, v in values.items()}))


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    upgrade(url)
    return url


def add(url: str, run_id: str, day: int, **values) -> int:
    return record_run(url, make_row(run_id=run_id, logical_date=DAY0 + timedelta(days=day), **values))


# --- settings -------------------------------------------------------------------------------------------------------


def test_alert_settings_default_to_no_target_every_event_and_no_review():
    defaults = settings()
    assert defaults.target == "" and defaults.review is False
    assert defaults.regressed_rules == frozenset(REGRESSION_RULES)
    assert defaults.failed and defaults.fingerprint and defaults.baseline_accepted
    assert defaults.inconclusive_streak == 3
    assert defaults.review_timeout == timedelta(hours=24) and defaults.digest_schedule == "0 8 * * 1"


def test_alert_events_pick_rules_and_streaks():
    chosen = settings(alert_events="regressed:accuracy, regressed:fidelity,inconclusive:2", alerts="json://h/x")
    assert chosen.regressed_rules == {"accuracy", "fidelity"} and chosen.inconclusive_streak == 2
    assert not (chosen.failed or chosen.fingerprint or chosen.baseline_accepted)
    assert chosen.target_is_url


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("alert_events", "regressed:speed"),
        ("alert_events", "inconclusive:0"),
        ("alert_events", "failed:2"),
        ("review", "maybe"),
    ],
)
def test_a_bad_alert_setting_names_the_key_and_the_fix(key, value):
    with pytest.raises(ConfigError, match=rf"\[convmixer\] {key} = .* AIRFLOW__CONVMIXER__{key.upper()}"):
        settings(**{key: value})


# --- events and the message -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "rule"), [
    ("top1 regressed: 80.000 < 80.870 (baseline 81.370 - tolerance 0.5)", "accuracy"),
    ("OM diverges from ONNX: min cosine 0.9000 < 0.99 on 3 of 64 images", "fidelity"),
    ("throughput regressed: a persistent step since run r3, 100.00 -> 80.00 (-20.0% beyond -10%)", "change_point"),
    (FAST, "throughput"),
    ("throughput ok: 99.00 >= 90.00", None),
])  # fmt: skip
def test_each_gate_rule_is_recognised_by_its_reason_line(line, rule):
    assert alerts.rule_of(line) == rule


def test_row_events_follow_the_settings():
    regressed = {"status": "regressed", "gate_reasons": ["top1 ok: 84.0 >= 83.5", FAST, ENV]}
    assert alerts.row_events(regressed, 0, settings()) == ("regressed:throughput", "fingerprint")
    assert alerts.row_events(regressed, 0, settings(alert_events="regressed:accuracy")) == ()
    inconclusive = {"status": "inconclusive", "gate_reasons": ["throughput inconclusive: noisy"]}
    assert alerts.row_events(inconclusive, 2, settings()) == ()  # a streak of 2 < 3
    assert alerts.row_events(inconclusive, 3, settings()) == ("inconclusive",)
    assert alerts.row_events({"status": "failed", "gate_reasons": ["boom"]}, 0, settings()) == ("failed",)
    assert alerts.row_events({"status": "ok", "gate_reasons": []}, 0, settings(), accepted=True) == (
        "baseline_accepted",
    )


def test_the_reason_line_is_the_fired_rule_and_hides_credentials():
    row = {"status": "regressed", "gate_reasons": ["top1 ok", FAST]}
    assert alerts.reason_line(row) == FAST
    leaky = {"status": "failed", "gate_reasons": ["cannot reach postgresql://bob:hunter2@db:5432/metrics"]}
    assert alerts.reason_line(leaky) == "cannot reach postgresql://***@db:5432/metrics"


def test_one_message_per_run_with_every_affected_row_and_the_three_links(url):
    add(url, "r0", 0, batch_size=4)
    base4 = add(url, "r1", 1, batch_size=4)
    add(url, "r1", 1, batch_size=16)
    bad4 = add(url, "r2", 2, batch_size=4, status="regressed", throughput=10.0, baseline_throughput=100.0,
               gate_reasons=["top1 ok", FAST])  # fmt: skip
    add(url, "r2", 2, batch_size=16, status="regressed", throughput=5.0, baseline_throughput=100.0,
        gate_reasons=["top1 ok", FAST.replace("10.00", "5.00") + " <script>"])  # fmt: skip
    alert = alerts.collect(url, "r2", "convmixer_validation", settings(), BASE)
    assert [row.batch_size for row in alert.rows] == [4, 16]
    assert alert.rows[0].baseline_row_id == base4 and alert.rows[0].row_id == bad4
    message = alerts.render(alert)
    assert message.subject.startswith("[convmixer] regressed: convmixer_demo on cpu-x86 (bs 4, 16) in run r2")
    run_page = f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/run?id={bad4}"
    compare = f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/compare?a={base4}&b={bad4}"
    airflow_run = f"{BASE}/dags/convmixer_validation/runs/r2"
    for body in (message.text, html.unescape(message.html)):
        for expected in (run_page, compare, airflow_run, FAST, "throughput -90.0% (10.00 vs 100.00 img/s)", "bs 16"):
            assert expected in body
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert message.text.count("Airflow run:") == 1  # one message for the run, not one per row
    assert alerts.RunAlert.from_dict(alert.to_dict()) == alert  # crosses tasks as XCom


def test_an_ok_run_raises_no_event(url):
    add(url, "r0", 0)
    assert alerts.collect(url, "r0", "convmixer_validation", settings(), BASE).rows == ()


def test_an_inconclusive_streak_is_told_at_its_nth_run(url):
    for day in range(3):
        add(url, f"r{day}", day, status="inconclusive", gate_reasons=["throughput inconclusive: noisy host"])
    assert alerts.collect(url, "r1", "d", settings(), BASE).rows == ()
    (row,) = alerts.collect(url, "r2", "d", settings(), BASE).rows
    assert row.events == ("inconclusive",) and row.inconclusive_streak == 3
    assert row.reason == "throughput inconclusive: noisy host"


# --- the review -----------------------------------------------------------------------------------------------------


def regressed_run(url: str) -> alerts.RunAlert:
    add(url, "r0", 0)
    add(url, "r1", 1, status="regressed", throughput=10.0, gate_reasons=[FAST])
    add(url, "r1", 1, batch_size=16, status="ok", gate_reasons=["throughput ok"])
    return alerts.collect(url, "r1", "convmixer_validation", settings(), BASE)


def test_accept_goes_through_rebaseline_with_who_when_and_why(url):
    alert = regressed_run(url)
    rows = review.rows_to_review(alert)
    assert len(rows) == 1  # the ok batch size is not asked about
    outcome = review.apply_answer(url, rows, [review.ACCEPT], "alice", "2026-12-07T10:00:00+00:00", "CANN 8.1")
    assert outcome.accepted == tuple(rows) and "alice accepted" in outcome.line
    row = stored_row(url, rows[0])
    assert row["status"] == "ok" and row["rebaselined_by"] == "alice" and row["rebaseline_reason"] == "CANN 8.1"
    assert review.conclusion([row]) is None


def test_keep_and_timeout_leave_the_regression_and_the_run_fails(url):
    alert = regressed_run(url)
    rows = review.rows_to_review(alert)
    kept = review.apply_answer(url, rows, [review.KEEP], "bob", "t1", None)
    timed_out = review.apply_answer(url, rows, [review.KEEP], None, "t2", "")
    assert kept.accepted == timed_out.accepted == ()
    assert "bob chose to keep" in kept.line and "timed out" in timed_out.line and "kept" in timed_out.line
    row = stored_row(url, rows[0])
    assert row["status"] == "regressed" and row["rebaselined_by"] is None
    assert f"(row {rows[0]}) is regressed" in (review.conclusion([row]) or "")
    assert review.conclusion([]) == "the run recorded no metrics row; see its task logs"


def test_a_row_the_rebaseline_path_refuses_is_reported_not_hidden(url):
    add(url, "r0", 0, status="failed", top1=None, top5=None, throughput=None, latency_mean_ms=None,
        latency_p50_ms=None, latency_p99_ms=None, gate_reasons=["infer failed"])  # fmt: skip
    (row_id,) = [row.row_id for row in alerts.collect(url, "r0", "d", settings(), BASE).rows]
    outcome = review.apply_answer(url, [row_id], [review.ACCEPT], "alice", "t", "why")
    assert outcome.accepted == () and f"row {row_id}" in outcome.refused[0]
    assert "not accepted" in outcome.line


# --- the digest -----------------------------------------------------------------------------------------------------


def test_the_digest_summarises_each_series_over_the_period(url):
    add(url, "old", 0, throughput=100.0)  # before the period: where the change is measured from
    add(url, "w1", 8, throughput=100.0)
    bad = add(url, "w2", 9, status="regressed", throughput=50.0, gate_reasons=[FAST])
    add(url, "w2", 9, batch_size=16, throughput=200.0)
    from convmixer_tasks.metrics.rebaseline import rebaseline

    add(url, "w3", 10, batch_size=16, throughput=150.0, status="regressed", gate_reasons=[FAST])
    accepted = stored_row(url, bad)["id"]
    rebaseline(url, accepted, "new driver", "carol")
    add(url, "w4", 11, status="regressed", throughput=40.0, gate_reasons=[FAST])
    until = DAY0 + timedelta(days=12)
    summary = digest.build(url, until, 7)
    assert [(line.batch_size, line.runs) for line in summary.lines] == [(4, 3), (16, 2)]
    four, sixteen = summary.lines
    assert four.latest_status == "regressed" and four.open_regression and four.regressions == 1
    assert four.first_throughput == 100.0 and four.latest_throughput == 40.0
    assert [(one.row_id, one.by, one.reason) for one in four.accepted] == [(accepted, "carol", "new driver")]
    assert sixteen.open_regression and sixteen.first_throughput == 200.0  # no run before the period: its first
    message = digest.render(summary, BASE)
    assert "2 series, 2 open regressions" in message.subject
    assert "throughput -60.0% (40.00 vs 100.00 img/s)" in message.text
    assert "by carol" in message.text and "new driver" in message.html
    assert f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/run?id={four.latest_row_id}" in message.text
    assert digest.Digest.from_dict(summary.to_dict()) == summary  # the page's JSON round-trips


def test_an_empty_period_says_so(url):
    summary = digest.build(url, datetime(2026, 1, 1, tzinfo=UTC), 7)
    assert summary.lines == () and "No runs in this period." in digest.render(summary, BASE).text
