"""Precision as a dimension: the params (one mode, a list of modes, the GELU implmode), the plans a run maps over,
and the metrics rows keyed, read, updated and gated per batch size × precision mode."""

from __future__ import annotations

from datetime import timedelta

import pytest

from convmixer_tasks import metrics
from convmixer_tasks.backends.precision import gelu_compile_options, precision_modes_from_params
from convmixer_tasks.errors import ConfigError, MetricsError, RegressionError
from convmixer_tasks.metrics.predictions import load_predictions, store_evidence, store_predictions
from convmixer_tasks.run import steps
from convmixer_tasks.run.records import RecordedRow
from convmixer_tasks.run.rows import failed_rows
from convmixer_tasks.run.runfacts import run_facts
from convmixer_tasks.verdict import gate
from tests.stored import stored_run
from tests.test_metrics import DAY0, make_row
from tests.test_steps import _params, check_inputs, gate_rows

ASCEND = {"backend": "ascend"}


def test_precision_modes_come_from_one_mode_or_a_list():
    assert precision_modes_from_params(ASCEND) == [None]  # ATC's default
    assert precision_modes_from_params({**ASCEND, "precision_mode": "force_fp32"}) == ["force_fp32"]
    assert precision_modes_from_params({**ASCEND, "precision_modes": ["force_fp16", "must_keep_origin_dtype"]}) == [
        "force_fp16",
        "must_keep_origin_dtype",
    ]
    assert precision_modes_from_params({"backend": "onnxruntime", "precision_mode": None}) == [None]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {**ASCEND, "precision_mode": "force_fp32", "precision_modes": ["force_fp16"]},
            r"both precision_mode \(force_fp32\) and precision_modes \(\['force_fp16'\]\) are set; set one of them",
        ),
        (
            {"backend": "onnxruntime", "precision_modes": ["force_fp16", "must_keep_origin_dtype"]},
            r"precision_modes \['force_fp16', 'must_keep_origin_dtype'\] apply to the ascend backend only; backend "
            r"onnxruntime runs the ONNX in fp32 — set precision_modes to null",
        ),
        ({"backend": "onnxruntime", "precision_mode": "force_fp16"}, "set precision_mode to null"),
        (
            {**ASCEND, "precision_modes": ["force_fp16", "fp8"]},
            "precision_modes entry 'fp8' is not an ATC precision mode",
        ),
        ({**ASCEND, "precision_modes": ["force_fp16", "force_fp16"]}, "lists force_fp16 twice; list each mode once"),
        ({**ASCEND, "precision_modes": []}, "must be a non-empty list of ATC modes"),
        ({**ASCEND, "precision_modes": "force_fp16"}, "must be a non-empty list of ATC modes"),
    ],
)
def test_a_bad_precision_conf_is_one_clear_error(params, message):
    with pytest.raises(ConfigError, match=message):
        precision_modes_from_params(params)


def test_the_gelu_implmode_maps_to_the_atc_flag_pair_on_ascend_only():
    assert gelu_compile_options("ascend", "high_precision") == {
        "op_select_implmode": "high_precision",
        "optypelist_for_implmode": "Gelu",
    }
    assert gelu_compile_options("ascend", None) == {"op_select_implmode": None, "optypelist_for_implmode": None}
    assert gelu_compile_options("onnxruntime", "high_performance") == {}  # the default: ORT's cache key unchanged
    with pytest.raises(ConfigError, match="gelu_implmode 'high_precision' applies to the ascend backend only"):
        gelu_compile_options("onnxruntime", "high_precision")
    with pytest.raises(ConfigError, match="gelu_implmode 'fastest' is not one ATC takes"):
        gelu_compile_options("ascend", "fastest")


def test_check_inputs_plans_each_batch_size_times_mode_and_prepares_each_batch_size_once(tmp_path, small_demo):
    params = _params(
        tmp_path,
        image_limit=10,
        backend="ascend",
        precision_modes=["force_fp16", "must_keep_origin_dtype"],
        gelu_implmode="high_precision",
    )
    plans = check_inputs(params, "run-1", tmp_path / "work")
    assert [(plan.batch_size, plan.precision) for plan in plans] == [
        (4, "force_fp16"),
        (4, "must_keep_origin_dtype"),
        (16, "force_fp16"),
        (16, "must_keep_origin_dtype"),
    ]
    assert {plan.gelu_implmode for plan in plans} == {"high_precision"}
    assert plans[0].prep_dir == plans[1].prep_dir  # the modes share their batch size's prep folder
    assert [(plan.batch_size, plan.precision) for plan in steps.plans_to_prepare(plans)] == [
        (4, "force_fp16"),
        (16, "force_fp16"),
    ]
    with pytest.raises(ConfigError, match="apply to the ascend backend only"):
        check_inputs({**params, "backend": "onnxruntime"}, "run-2", tmp_path / "work")
    with pytest.raises(ConfigError, match="gelu_implmode 'high_precision' applies to the ascend backend only"):
        check_inputs({**params, "backend": "onnxruntime", "precision_modes": None}, "run-3", tmp_path / "work")


def test_failed_rows_cover_every_batch_size_and_mode_and_survive_an_unreadable_mode():
    run = run_facts("broke", "convmixer_validation", DAY0, DAY0)
    params = {
        "backend": "ascend",
        "batch_sizes": [1, 4],
        "precision_modes": ["force_fp16", "force_fp32"],
        "model_variant": "convmixer_demo",
    }
    rows = failed_rows(run, params)
    assert [(row.batch_size, row.precision_mode) for row in rows] == [
        (1, "force_fp16"),
        (1, "force_fp32"),
        (4, "force_fp16"),
        (4, "force_fp32"),
    ]
    (row,) = failed_rows(run, {**params, "batch_sizes": [1], "precision_modes": ["fp8"]})
    assert row.gate_reasons is not None
    assert row.precision_mode == "force_fp16" and "recorded under precision force_fp16: " in row.gate_reasons[-1]
    assert row.gate_reasons[1].startswith("the run's params were refused: ")


def _two_modes(url: str, run_id: str = "both", **overrides) -> dict[str, int]:
    """One run × batch size × backend recorded in two precision modes; returns {mode: row id}."""
    return {
        mode: metrics.record_run(
            url, make_row(run_id=run_id, backend="ascend", device="Ascend310P3", precision_mode=mode, **overrides)
        )
        for mode in ("force_fp16", "must_keep_origin_dtype")
    }


def test_rows_of_two_modes_are_read_and_written_by_their_own_key(metrics_url):
    ids = _two_modes(metrics_url, status="pending")
    with pytest.raises(
        MetricsError,
        match=r"run both \(batch size 4, backend ascend\) has rows of several precision "
        r"modes \(force_fp16, must_keep_origin_dtype\); pass the precision_mode",
    ):
        metrics.get_run(metrics_url, "both", 4, "ascend")
    assert stored_run(metrics_url, "both", 4, "ascend", "must_keep_origin_dtype")["id"] == ids["must_keep_origin_dtype"]
    with pytest.raises(MetricsError, match="several precision modes"):
        metrics.update_status(metrics_url, "both", 4, "ascend", "ok", [])
    with pytest.raises(MetricsError, match="several precision modes"):
        store_evidence(metrics_url, "both", 4, "ascend", {"flips_p_value": 0.5})
    with pytest.raises(MetricsError, match="several precision modes"):
        store_predictions(metrics_url, "both", 4, "ascend", b"blob", image_count=64)
    # nothing above wrote anything: a refused call leaves both rows as they were
    rows = {mode: stored_run(metrics_url, "both", 4, "ascend", mode) for mode in ids}
    assert {row["status"] for row in rows.values()} == {"pending"} and {
        row["flips_p_value"] for row in rows.values()
    } == {None}
    metrics.update_status(metrics_url, "both", 4, "ascend", "ok", ["fine"], precision_mode="force_fp16")
    store_evidence(metrics_url, "both", 4, "ascend", {"flips_p_value": 0.5}, precision_mode="force_fp16")
    store_predictions(metrics_url, "both", 4, "ascend", b"blob16", image_count=64, precision_mode="force_fp16")
    fp16 = stored_run(metrics_url, "both", 4, "ascend", "force_fp16")
    keep = stored_run(metrics_url, "both", 4, "ascend", "must_keep_origin_dtype")
    assert (fp16["status"], fp16["flips_p_value"]) == ("ok", 0.5)
    assert (keep["status"], keep["flips_p_value"]) == ("pending", None)
    assert load_predictions(metrics_url, ids["force_fp16"]) == b"blob16"
    assert load_predictions(metrics_url, ids["must_keep_origin_dtype"]) is None


def test_the_gate_judges_each_mode_against_its_own_history(metrics_url):
    """fp16 runs twice as fast as fp32 here: mixing the two series would call the fp32 row a regression."""
    for day in range(6):
        for mode, throughput in (("force_fp16", 200.0 + day), ("must_keep_origin_dtype", 100.0 + day % 2)):
            metrics.record_run(
                metrics_url,
                make_row(
                    run_id=f"h{day}",
                    logical_date=DAY0 + timedelta(days=day),
                    backend="ascend",
                    device="Ascend310P3",
                    precision_mode=mode,
                    throughput=throughput,
                    top1=84.5,
                    top5=95.5,
                ),
            )
    _two_modes(
        metrics_url,
        run_id="today",
        status="pending",
        logical_date=DAY0 + timedelta(days=9),
        throughput=100.5,
        top1=84.5,
        top5=95.5,
    )
    rows = [stored_run(metrics_url, "today", 4, "ascend", mode) for mode in ("force_fp16", "must_keep_origin_dtype")]
    recorded = [
        RecordedRow(
            id=row["id"],
            run_id="today",
            batch_size=4,
            backend="ascend",
            model_variant=row["model_variant"],
            precision=row["precision_mode"],
        )
        for row in rows
    ]
    params = {
        "top1_tolerance": 0.5,
        "throughput_tolerance_pct": 10.0,
        "throughput_history": 20,
        "image_limit": None,
        "throughput_runs": 1,
    }  # one clear run decides: this test is about the series, not the two-run rule
    with pytest.raises(RegressionError) as caught:
        gate_rows(metrics_url, recorded, params)
    (decision,) = caught.value.decisions  # only fp16's 100.5 against its own ~202 regressed
    assert decision.status == "regressed"
    fp16, keep = (
        stored_run(metrics_url, "today", 4, "ascend", mode) for mode in ("force_fp16", "must_keep_origin_dtype")
    )
    assert fp16["status"] == "regressed" and keep["status"] == "ok"
    assert not any("environment changed" in reason for reason in keep["gate_reasons"])  # fp16 is not its series
    assert keep["baseline_throughput"] == pytest.approx(100.5) and fp16["baseline_throughput"] == pytest.approx(202.5)
    with pytest.raises(MetricsError, match="several precision modes"):
        gate.apply_gate(metrics_url, "today", 4, "ascend")
