"""Change points over a series' throughput: the detector (ruptures) on known series, the gate's persistent-drop
rule, and the stored change points on both dialects (gate reasons, metrics-show, the rows' JSON)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from convmixer_tasks import cli
from convmixer_tasks.errors import ConfigError, RegressionError
from convmixer_tasks.measure import changepoints as cp
from convmixer_tasks.measure import fingerprint
from convmixer_tasks.metrics.changes import change_points
from convmixer_tasks.verdict import gate
from tests.test_gate import BACKEND, BS, record

QUIET = [100.0 + 0.5 * ((index % 3) - 1) for index in range(12)]  # ±0.5 %: a quiet device


def test_a_step_is_found_where_it_starts_with_its_magnitude_and_test():
    values = QUIET + [0.95 * value for value in QUIET[:5]]
    (step,) = cp.detect(values)
    assert step.index == 12 and step.before == pytest.approx(100.0) and step.after == pytest.approx(95.0)
    assert step.magnitude_pct == pytest.approx(-5.0)
    expected = stats.ttest_ind(np.log(values[:12]), np.log(values[12:]), equal_var=False).pvalue
    assert step.p_value == pytest.approx(expected)


def test_noise_an_episode_and_a_short_series_give_no_step():
    rng = np.random.default_rng(3)
    assert cp.detect((1000 * np.exp(rng.normal(0, 0.05, 80))).tolist()) == []  # noise only
    slowed = [*QUIET, 40.0, *QUIET]  # one run slowed 2.5x is an episode, not a step
    assert cp.detect(slowed) == []
    assert cp.detect(QUIET[:5]) == []  # fewer than 2 x MIN_SIZE runs
    with pytest.raises(ConfigError, match="positive finite"):
        cp.detect([*QUIET, 0.0])


def test_persistent_drop_needs_a_clear_drop_beyond_the_tolerance_not_yet_reported():
    drop = cp.Step(index=3, before=100.0, after=85.0, magnitude_pct=-15.0, p_value=1e-6, noise=0.01)
    statuses = ["ok"] * 3 + ["ok", "ok", "pending"]
    assert cp.persistent_drop([drop], statuses, 10.0, 0.003) is drop
    assert cp.persistent_drop([drop], statuses, 20.0, 0.003) is None  # inside the tolerance
    assert cp.persistent_drop([drop], ["ok"] * 3 + ["regressed", "ok", "pending"], 10.0, 0.003) is None
    unclear = cp.Step(index=3, before=100.0, after=85.0, magnitude_pct=-15.0, p_value=0.2, noise=0.1)
    assert cp.persistent_drop([unclear], statuses, 10.0, 0.003) is None and cp.persistent_drop([], [], 10, 0.1) is None


def test_a_small_step_is_stored_named_and_shown_but_is_not_a_regression(metrics_url, capsys):
    old = {"backend": BACKEND, "toolkit_version": "CANN 8.0.RC3"}
    new = {**old, "toolkit_version": "CANN 8.1.RC1"}
    for day, value in enumerate(QUIET):
        record(metrics_url, f"a{day}", day, value, fingerprint=old, fingerprint_key=fingerprint.key(old))
    for day, value in enumerate(QUIET[:4], start=len(QUIET)):
        record(metrics_url, f"b{day}", day, 0.95 * value, fingerprint=new, fingerprint_key=fingerprint.key(new))
    record(metrics_url, "today", 20, 95.0, status="pending", fingerprint=new, fingerprint_key=fingerprint.key(new))
    decision = gate.apply_gate(metrics_url, "today", BS, BACKEND)
    assert decision.status == "ok"
    line = next(reason for reason in decision.reasons if reason.startswith("change point"))
    assert "throughput -5.0% from run a12" not in line and "from run b12" in line  # the first run after the step
    assert "toolkit_version: CANN 8.0.RC3 → CANN 8.1.RC1" in line
    (stored,) = change_points(metrics_url)
    assert stored["start_run_id"] == "b12" and stored["magnitude_pct"] == pytest.approx(-5.0)
    assert stored["series"]["batch_size"] == BS and stored["detail"]["detector"] == cp.DETECTOR

    assert cli.main(["-o", "json", "metrics-show", "--url", metrics_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["change_points"]) == 1 and "-5.0% from run b12" in shown["change_points"][0]
    starts = [row for row in shown["rows"] if "change_point" in row]
    assert [row["run_id"] for row in starts] == ["b12"]
    assert starts[0]["change_point"]["fingerprint_changes"] == ["toolkit_version: CANN 8.0.RC3 → CANN 8.1.RC1"]
    assert cli.main(["metrics-show", "--url", metrics_url]) == 0  # the table form lists it too
    assert "from run b12" in capsys.readouterr().out

    # Later runs back at 100: the way back up is a change point of its own; the first one keeps where it was found.
    today_id = stored["detected_row_id"]
    for day in range(21, 40):
        record(metrics_url, f"c{day}", day, QUIET[day % 12], fingerprint=new, fingerprint_key=fingerprint.key(new))
    record(metrics_url, "later", 41, 100.0, status="pending", fingerprint=new, fingerprint_key=fingerprint.key(new))
    gate.apply_gate(metrics_url, "later", BS, BACKEND)
    back, first = change_points(metrics_url)
    assert back["magnitude_pct"] == pytest.approx(100 / 95 * 100 - 100, abs=0.6) and back["start_run_id"] > "c"
    assert (first["start_run_id"], first["detected_row_id"]) == ("b12", today_id)


def test_a_persistent_drop_no_run_was_flagged_for_is_a_regression_with_its_start(metrics_url):
    for day, value in enumerate(QUIET):
        record(metrics_url, f"a{day}", day, value)
    # Twelve runs 12 % lower that were let through (say, gated with a wider tolerance): the history median has
    # followed them down, so no single run is below the floor any more.
    for day in range(12, 24):
        record(metrics_url, f"b{day}", day, 0.88 * QUIET[day % 12])
    record(metrics_url, "today", 30, 88.0, status="pending")
    with pytest.raises(RegressionError, match="a persistent step since run b12"):
        gate.apply_gate(metrics_url, "today", BS, BACKEND)


def test_a_step_the_detector_no_longer_sees_is_removed(metrics_url, monkeypatch):
    from convmixer_tasks.metrics import changes
    from tests.stored import stored_run

    for day, value in enumerate(QUIET):
        record(metrics_url, f"a{day}", day, value)
    row = stored_run(metrics_url, "a11", BS, BACKEND)
    seen = [cp.Step(index=6, before=100.0, after=99.0, magnitude_pct=-1.0, p_value=0.5, noise=0.005)]
    monkeypatch.setattr(changes.cp, "detect", lambda values: seen)  # a scripted detector: one step, then none
    assert [point.start_run_id for point in changes.update_change_points(metrics_url, row).found] == ["a6"]
    assert [point["start_run_id"] for point in change_points(metrics_url)] == ["a6"]
    seen = []
    assert changes.update_change_points(metrics_url, row).found == []
    assert change_points(metrics_url) == []
