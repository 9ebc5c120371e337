"""convmixer_tasks.flow: the DAG's task glue, exercised without Airflow (plans, caches, rows, gate wiring)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from convmixer_tasks import flow
from convmixer_tasks.errors import ConfigError, DatasetError, MetricsError, RegressionError


def _params(tmp_path: Path, **overrides) -> dict:
    layout = flow.WorkLayout(tmp_path / "work")
    checkpoint = tmp_path / "model.pth.tar"
    checkpoint.write_bytes(b"not read by check_inputs")
    params = {"batch_sizes": [4, 16], "batch_size": None, "backend": "onnxruntime", "input_dtype": "float32",
              "model_variant": "convmixer_demo", "checkpoint": str(checkpoint), "image_limit": None,
              "dataset_dir": str(layout.demo_image_dir), "label_file": str(layout.demo_label_file),
              "top1_tolerance": 0.5, "throughput_tolerance_pct": 10.0, "throughput_history": 5}
    params.update(overrides)
    return params


# --- params and names -----------------------------------------------------------------------------------------------

def test_batch_size_overrides_batch_sizes_and_duplicates_are_dropped():
    assert flow.batch_sizes_from_params({"batch_sizes": [16, 1, 16], "batch_size": None}) == [16, 1]
    assert flow.batch_sizes_from_params({"batch_sizes": [1, 16], "batch_size": 4}) == [4]


@pytest.mark.parametrize("params", [{"batch_sizes": []}, {"batch_sizes": [3]}, {"batch_sizes": [True]},
                                    {"batch_size": 0, "batch_sizes": [1]}])
def test_bad_batch_sizes_are_refused_naming_the_param(params):
    with pytest.raises(ConfigError, match="batch"):
        flow.batch_sizes_from_params(params)


def test_run_slug_is_a_safe_distinct_folder_name():
    run_id = "manual__2026-01-05T03:00:00.123456+00:00"
    slug = flow.run_slug(run_id)
    assert ":" not in slug and "+" not in slug and "/" not in slug
    assert slug == flow.run_slug(run_id)
    # ids that read alike after sanitising still get their own folders
    assert flow.run_slug("a:b") != flow.run_slug("a+b")


def test_layout_keeps_caches_apart_from_runs(tmp_path):
    layout = flow.WorkLayout(tmp_path)
    prep = layout.prep_dir("ab" * 32)
    assert prep.parent == tmp_path / "cache" / "prep" and prep.name == "ab" * 8
    shard_dir = layout.shard_output_dir("run:1", 4, 1)
    assert shard_dir.is_relative_to(layout.run_dir("run:1")) and shard_dir.name == "outputs"
    assert layout.shard_output_dir("run:1", 4, 0) != shard_dir
    assert layout.merged_output_dir("run:1", 4) != layout.merged_output_dir("run:1", 16)


# --- metrics URL ----------------------------------------------------------------------------------------------------

def test_connection_url_fixes_airflow_renderings():
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3 (not installed): the pinned driver is named
    assert flow.connection_url("postgres", "postgres://u:p%40ss@h:5432/db") == \
        "postgresql+psycopg2://u:p%40ss@h:5432/db"
    assert flow.connection_url("postgres", "postgresql://u@h/db") == "postgresql+psycopg2://u@h/db"
    # Airflow renders a sqlite connection as sqlite:///%2Fpath; the path is in host (JSON form) or schema (URI form)
    assert flow.connection_url("sqlite", "sqlite://%2Ftmp%2Fm.db", host="/tmp/m.db") == "sqlite:////tmp/m.db"
    assert flow.connection_url("sqlite", "sqlite:///%2Ftmp", host="", schema="/tmp/m.db") == "sqlite:////tmp/m.db"
    assert flow.connection_url("mysql", "mysql://u@h/db") == "mysql://u@h/db"
    with pytest.raises(ConfigError, match="host"):
        flow.connection_url("sqlite", "sqlite://", host="", schema="")


def test_metrics_url_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVMIXER_METRICS_DB_URL", raising=False)
    home = tmp_path / "af"
    assert flow.metrics_url(None, "", home) == f"sqlite:///{home / 'convmixer_metrics.db'}"
    assert flow.metrics_url(None, "sqlite:////setting.db", home) == "sqlite:////setting.db"
    monkeypatch.setenv("CONVMIXER_METRICS_DB_URL", "sqlite:////env.db")
    assert flow.metrics_url(None, "sqlite:////setting.db", home) == "sqlite:////env.db"
    assert flow.metrics_url("postgresql://conn/db", "sqlite:////setting.db", home) == "postgresql+psycopg2://conn/db"


# --- check inputs + preprocess shards -------------------------------------------------------------------------------

@pytest.fixture
def small_demo(monkeypatch):
    """The auto-generated demo set at 12 images instead of 250 (generation itself is tests/test_demo.py's)."""
    from convmixer_tasks import demo

    monkeypatch.setattr(demo, "make_demo_dataset", functools.partial(demo.make_demo_dataset, count=12))


def test_check_inputs_generates_the_demo_set_once_and_plans_each_batch_size(tmp_path, small_demo):
    params = _params(tmp_path, image_limit=10)
    plans = flow.check_inputs(params, "run-1", tmp_path / "work")
    layout = flow.WorkLayout(tmp_path / "work")
    assert layout.demo_label_file.is_file()
    assert [plan["batch_size"] for plan in plans] == [4, 16]
    assert {plan["image_count"] for plan in plans} == {10}
    assert len({plan["prep_dir"] for plan in plans}) == 2  # the batch size is part of the prep key
    first_image = sorted(layout.demo_image_dir.iterdir())[0]
    mtime = first_image.stat().st_mtime_ns

    again = flow.check_inputs(params, "run-2", tmp_path / "work")
    assert first_image.stat().st_mtime_ns == mtime  # an existing demo set is not regenerated
    assert [plan["prep_dir"] for plan in again] == [plan["prep_dir"] for plan in plans]
    other_limit = flow.check_inputs({**params, "image_limit": 9}, "run-3", tmp_path / "work")
    assert other_limit[0]["prep_dir"] != plans[0]["prep_dir"]
    uint8 = flow.check_inputs({**params, "input_dtype": "uint8"}, "run-4", tmp_path / "work")
    assert uint8[0]["prep_dir"] != plans[0]["prep_dir"]


def test_check_inputs_fails_fast_on_missing_checkpoint_and_bad_dataset(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint .*missing.pth.tar"):
        flow.check_inputs(_params(tmp_path, checkpoint=str(tmp_path / "missing.pth.tar")), "r", tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        flow.check_inputs(_params(tmp_path, dataset_dir=str(tmp_path / "empty")), "r", tmp_path / "work")


def test_check_inputs_refuses_a_conf_key_that_is_not_a_param(tmp_path):
    params = _params(tmp_path)
    with pytest.raises(ConfigError, match="unknown param.* batch_szie.*check the spelling"):
        flow.check_inputs({**params, "batch_szie": 4}, "r", tmp_path / "work", known_params=params)
    flow.check_param_names(params, known=params)  # every declared key passes


def test_prep_shards_cover_the_manifest_and_a_finished_folder_is_reused_untouched(tmp_path, small_demo):
    params = _params(tmp_path, image_limit=10, batch_sizes=[4])
    (plan,) = flow.check_inputs(params, "run-1", tmp_path / "work")
    shards = [flow.prepare_shard(plan, index, 2) for index in range(2)]
    assert [entry["cached"] for entry in shards] == [False, False]
    files = shards[0]["files"] + shards[1]["files"]
    assert files == ["input_00000.bin", "input_00001.bin", "input_00002.bin"]  # 10 images in batches of 4
    prep_dir = Path(plan["prep_dir"])
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in prep_dir.iterdir() if path.is_file()}

    again = [flow.prepare_shard(plan, index, 2) for index in range(2)]
    assert [entry["cached"] for entry in again] == [True, True]
    assert [entry["files"] for entry in again] == [entry["files"] for entry in shards]
    after = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in prep_dir.iterdir() if path.is_file()}
    assert after == before and "manifest.json" in after


def test_merge_shard_outputs_links_every_shard_and_replaces_an_older_merge(tmp_path):
    shard_dirs = []
    for index, names in enumerate((["input_00000_0.bin"], ["input_00001_0.bin", "input_00002_0.bin"])):
        folder = tmp_path / f"shard{index}"
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(name.encode())
        shard_dirs.append(folder)
    target = tmp_path / "merged"
    target.mkdir()
    (target / "stale_0.bin").write_bytes(b"old")
    flow.merge_shard_outputs(shard_dirs, target)
    assert sorted(os.listdir(target)) == ["input_00000_0.bin", "input_00001_0.bin", "input_00002_0.bin"]
    assert (target / "input_00001_0.bin").stat().st_ino == (shard_dirs[1] / "input_00001_0.bin").stat().st_ino


def test_export_cache_ignores_a_damaged_report(tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"onnx")
    report = tmp_path / "model.parity.json"
    report.write_text("{not json")
    assert flow._cached_export(onnx_path, report) is None
    report.write_text('{"onnx_sha256": "0", "parity": {"passed": true}}')
    assert flow._cached_export(onnx_path, report) is None  # hash mismatch: the ONNX was replaced


# --- rows, failure rows, gate -----------------------------------------------------------------------------------------

def _step_results(batch_sizes=(4, 16), throughput=100.0):
    run = flow.run_info("run-9", "convmixer_validation", "2026-01-05T03:00:00+00:00", "2026-01-05T03:00:01+00:00")
    plans = [{"batch_size": bs, "model_variant": "convmixer_768_32", "backend": "onnxruntime",
              "input_dtype": "float32"} for bs in batch_sizes]
    exported = {"checkpoint_sha256": "c" * 64, "onnx_sha256": "e" * 64, "parity_max_abs_diff": 1e-6}
    compiled = [{"batch_size": bs, "artifact": {"sha256": f"{bs:064d}"}, "device": "cpu-x",
                 "toolkit_version": "onnxruntime 1"} for bs in batch_sizes]
    benchmarks = [{"batch_size": bs, "throughput": throughput * bs, "latency_mean_ms": 1.0, "latency_p50_ms": 1.0,
                   "latency_p99_ms": 2.0} for bs in batch_sizes]
    evaluated = [{"batch_size": bs, "top1": 80.0, "top5": 95.0, "image_count": 250} for bs in batch_sizes]
    return run, plans, exported, compiled, benchmarks, evaluated


def test_rows_carry_every_step_result_and_a_rerecord_keeps_one_row(tmp_path):
    from convmixer_tasks.metrics import get_run, query_runs

    url = f"sqlite:///{tmp_path / 'm.db'}"
    rows = flow.build_rows(*_step_results())
    recorded = flow.record_rows(url, rows)
    again = flow.record_rows(url, rows)  # a retried record task
    assert [r["id"] for r in again] == [r["id"] for r in recorded]
    assert query_runs(url)[1] == 2
    row = get_run(url, "run-9", 16, "onnxruntime")
    assert row["artifact_sha256"] == f"{16:064d}" and row["throughput"] == 1600.0
    assert row["onnx_sha256"] == "e" * 64 and row["device"] == "cpu-x"
    assert row["status"] == "pending"  # recorded, not gated: the gate's history ignores it until gate_rows
    assert row["dag_id"] == "convmixer_validation" and row["logical_date"].startswith("2026-01-05T03:00:00")


def test_a_refused_row_leaves_none_of_the_runs_rows(tmp_path):
    from convmixer_tasks.metrics import query_runs

    url = f"sqlite:///{tmp_path / 'm.db'}"
    rows = flow.build_rows(*_step_results())
    rows[1]["throughput"] = float("nan")  # a broken benchmark figure at batch 16
    with pytest.raises(MetricsError, match="throughput"):
        flow.record_rows(url, rows)
    assert query_runs(url)[1] == 0  # no half-recorded run: batch 4 is not left behind without batch 16


def test_failed_rows_have_no_accuracy_and_are_not_gated(tmp_path):
    from convmixer_tasks.metrics import get_run

    url = f"sqlite:///{tmp_path / 'm.db'}"
    run = flow.run_info("run-f", "convmixer_validation", None, "2026-01-05T03:00:01+00:00")
    params = _params(tmp_path, batch_size=8)
    recorded = flow.record_rows(url, flow.failed_rows(run, params, "compile failed"))
    row = get_run(url, "run-f", 8, "onnxruntime")
    assert row["status"] == "failed" and row["top1"] is None and row["throughput"] is None
    assert row["gate_reasons"] == ["compile failed"]
    with pytest.raises(MetricsError, match="failed"):
        flow.gate_rows(url, recorded, params)


def test_the_failure_path_keeps_a_gated_verdict_and_fails_an_ungated_row(tmp_path):
    """record_failure (keep_gated) after a cleared rerun: a verdict stays, a 'pending' row becomes 'failed'."""
    from convmixer_tasks.metrics import get_run

    url = f"sqlite:///{tmp_path / 'm.db'}"
    params = _params(tmp_path, batch_sizes=[4, 16])
    run, plans, exported, compiled, benchmarks, evaluated = _step_results()
    recorded = flow.record_rows(url, flow.build_rows(run, plans, exported, compiled, benchmarks, evaluated))
    flow.gate_rows(url, recorded[:1], params)  # batch 4 got its verdict, batch 16 did not
    failed = flow.record_rows(url, flow.failed_rows(run, params, "infer failed"), keep_gated=True)
    assert [row["id"] for row in failed] == [row["id"] for row in recorded]
    gated, ungated = get_run(url, "run-9", 4, "onnxruntime"), get_run(url, "run-9", 16, "onnxruntime")
    assert gated["status"] == "ok" and gated["top1"] == 80.0 and gated["throughput"] == 400.0
    assert ungated["status"] == "failed" and ungated["top1"] is None and ungated["gate_reasons"] == ["infer failed"]


def test_gate_stores_every_verdict_before_failing_once(tmp_path):
    from convmixer_tasks.metrics import get_run

    url = f"sqlite:///{tmp_path / 'm.db'}"
    params = _params(tmp_path, throughput_history=2, throughput_tolerance_pct=10.0)
    # history: two fast ok runs at batch 4 only (recorded pending, then gated ok: only ok rows are history)
    for index in range(2):
        run, plans, exported, compiled, benchmarks, evaluated = _step_results(batch_sizes=(4,), throughput=1000.0)
        old = flow.record_rows(url, flow.build_rows({**run, "run_id": f"old-{index}"}, plans, exported, compiled,
                                                    benchmarks, evaluated))
        assert [verdict["status"] for verdict in flow.gate_rows(url, old, params)] == ["ok"]
    recorded = flow.record_rows(url, flow.build_rows(*_step_results(throughput=100.0)))
    with pytest.raises(RegressionError, match="batch size 4") as failure:
        flow.gate_rows(url, recorded, params)
    assert "batch size 16" not in str(failure.value)
    assert [decision.status for decision in failure.value.decisions] == ["regressed"]
    slow, new = get_run(url, "run-9", 4, "onnxruntime"), get_run(url, "run-9", 16, "onnxruntime")
    assert slow["status"] == "regressed" and slow["baseline_throughput"] == 4000.0
    assert new["status"] == "ok"  # gated after the regressed one, and stored
    assert any("throughput regressed" in reason for reason in slow["gate_reasons"])


def test_a_partial_run_is_not_gated_on_accuracy_but_still_on_throughput(tmp_path):
    full = flow.gate_options(_params(tmp_path, top1_tolerance=0.5, throughput_tolerance_pct=10.0))
    partial = flow.gate_options(_params(tmp_path, top1_tolerance=0.5, image_limit=24))
    assert full["top1_tolerance"] == 0.5 and partial["top1_tolerance"] == 100.0
    assert partial["throughput_drop_pct"] == full["throughput_drop_pct"] == 10.0
    assert partial["history"] == full["history"] == 5
