"""convmixer_tasks.run.steps: the DAG's task steps, exercised without Airflow (plans, caches, rows, gate wiring)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from convmixer_tasks.backends.base import Artifact
from convmixer_tasks.errors import CheckpointError, ConfigError, DatasetError, MetricsError, RegressionError
from convmixer_tasks.models.variants import DEMO_CHECKPOINT
from convmixer_tasks.run import export_step, steps
from convmixer_tasks.run.params import RunParams
from convmixer_tasks.run.records import BenchSummary, CompiledModel, ExportedModel, RunPlan, Scores, TaskFailure
from convmixer_tasks.run.rows import build_row, failed_rows, rows_for_run
from convmixer_tasks.run.runfacts import run_facts
from convmixer_tasks.run.settings import env_reader, load_scheduling_settings
from convmixer_tasks.run.workdir import WorkLayout, run_slug
from tests.stored import stored_run


def _params(tmp_path: Path, **overrides) -> dict:
    layout = WorkLayout(tmp_path / "work")
    checkpoint = tmp_path / "model.pth.tar"
    checkpoint.write_bytes(DEMO_CHECKPOINT.read_bytes())  # check_inputs reads its format and keys
    params = {
        "batch_sizes": [4, 16],
        "batch_size": None,
        "backend": "onnxruntime",
        "input_dtype": "float32",
        "model_variant": "convmixer_demo",
        "checkpoint": str(checkpoint),
        "image_limit": None,
        "dataset_dir": str(layout.demo_image_dir),
        "label_file": str(layout.demo_label_file),
        "top1_tolerance": 0.5,
        "throughput_tolerance_pct": 10.0,
        "throughput_history": 5,
    }
    params.update(overrides)
    return params


DEFAULTS = load_scheduling_settings(env_reader({}))  # the DAG's defaults fill what a test's conf leaves out


def check_inputs(params: dict, run_id: str, work_dir: Path) -> list[RunPlan]:
    """``steps.check_inputs`` on a conf, parsed as the DAG's check_inputs task parses it."""
    return steps.check_inputs(RunParams.from_mapping(params, DEFAULTS), run_id, work_dir)


def gate_rows(url: str, recorded, params: dict):
    return steps.gate_rows(url, recorded, RunParams.from_mapping(params, DEFAULTS))


# --- params and names -----------------------------------------------------------------------------------------------


def test_batch_size_overrides_batch_sizes(tmp_path):
    assert RunParams.from_mapping(_params(tmp_path, batch_sizes=[16, 1])).batch_sizes == (16, 1)
    assert RunParams.from_mapping(_params(tmp_path, batch_sizes=[1, 16], batch_size=4)).batch_sizes == (4,)


@pytest.mark.parametrize(
    "params",
    [{"batch_sizes": []}, {"batch_sizes": [3]}, {"batch_sizes": [True]}, {"batch_size": 0, "batch_sizes": [1]}],
)
def test_bad_batch_sizes_are_refused_naming_the_param(tmp_path, params):
    with pytest.raises(ConfigError, match="batch"):
        RunParams.from_mapping(_params(tmp_path, **params))


def test_run_slug_is_a_safe_distinct_folder_name():
    run_id = "manual__2026-01-05T03:00:00.123456+00:00"
    slug = run_slug(run_id)
    assert ":" not in slug and "+" not in slug and "/" not in slug
    assert slug == run_slug(run_id)
    # ids that read alike after sanitising still get their own folders
    assert run_slug("a:b") != run_slug("a+b")


def test_layout_keeps_caches_apart_from_runs(tmp_path):
    layout = WorkLayout(tmp_path)
    prep = layout.prep_cache.entry("ab" * 32)
    assert prep.parent == tmp_path / "cache" / "prep" and prep.name == "ab" * 8
    onnx = layout.onnx_cache.entry("cd" * 32) / "model.onnx"
    assert onnx.parent.parent == tmp_path / "cache" / "onnx" and onnx.parent.name == "cd" * 8
    assert layout.artifact_cache("ascend").root == tmp_path / "cache" / "artifacts" / "ascend"
    assert layout.artifact_cache("ascend").root != layout.artifact_cache("onnxruntime").root
    shard_dir = layout.shard_output_dir("run:1", 4, 1, precision="force_fp16", model="m")
    assert shard_dir.is_relative_to(layout.run_dir("run:1")) and shard_dir.name == "outputs"
    assert layout.shard_output_dir("run:1", 4, 0, precision="force_fp16", model="m") != shard_dir
    assert layout.shard_output_dir("run:1", 4, 1, precision="force_fp32", model="m") != shard_dir  # modes apart
    merged = layout.merged_output_dir("run:1", 4, precision="fp32", model="m")
    assert merged != layout.merged_output_dir("run:1", 16, precision="fp32", model="m")
    batch = layout.batch_dir("run:1", 4, precision="fp32", model="m")
    assert batch != layout.batch_dir("run:1", 4, precision="force_fp16", model="m")
    assert batch != layout.batch_dir("run:1", 4, precision="fp32", model="n")  # two models of a zoo run apart


def test_run_facts_are_iso_strings_in_utc():
    from datetime import datetime, timedelta, timezone

    local = datetime(2026, 1, 5, 4, 0, tzinfo=timezone(timedelta(hours=1)))
    facts = run_facts("r", "convmixer_validation", local, "2026-01-05T03:00:01+00:00")
    assert facts.logical_date == "2026-01-05T03:00:00+00:00"
    assert facts.started_at == "2026-01-05T03:00:01+00:00"
    assert run_facts("r", None, None, None).logical_date is None


# --- check inputs + preprocess shards -------------------------------------------------------------------------------


def test_check_inputs_generates_the_demo_set_once_and_plans_each_batch_size(tmp_path, small_demo):
    params = _params(tmp_path, image_limit=10)
    plans = check_inputs(params, "run-1", tmp_path / "work")
    layout = WorkLayout(tmp_path / "work")
    assert layout.demo_label_file.is_file()
    assert all(isinstance(plan, RunPlan) for plan in plans)
    assert [plan.batch_size for plan in plans] == [4, 16]
    assert {plan.image_count for plan in plans} == {10}
    assert len({plan.prep_dir for plan in plans}) == 2  # the batch size is part of the prep key
    assert all(Path(plan.prep_dir) == layout.prep_cache.entry(plan.prep_key) for plan in plans)
    first_image = sorted(layout.demo_image_dir.iterdir())[0]
    mtime = first_image.stat().st_mtime_ns

    again = check_inputs(params, "run-2", tmp_path / "work")
    assert first_image.stat().st_mtime_ns == mtime  # an existing demo set is not regenerated
    assert [plan.prep_dir for plan in again] == [plan.prep_dir for plan in plans]
    other_limit = check_inputs({**params, "image_limit": 9}, "run-3", tmp_path / "work")
    assert other_limit[0].prep_dir != plans[0].prep_dir
    uint8 = check_inputs({**params, "input_dtype": "uint8"}, "run-4", tmp_path / "work")
    assert uint8[0].prep_dir != plans[0].prep_dir


def test_check_inputs_fails_fast_on_missing_checkpoint_and_bad_dataset(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint .*missing.pth.tar"):
        check_inputs(_params(tmp_path, checkpoint=str(tmp_path / "missing.pth.tar")), "r", tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        check_inputs(_params(tmp_path, dataset_dir=str(tmp_path / "empty")), "r", tmp_path / "work")


def test_check_inputs_checks_the_checkpoint_against_the_variant(tmp_path):
    # refused here, before preprocess runs for minutes and export finds out
    text = tmp_path / "notes.pth.tar"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"notes.pth.tar is a text file"):
        check_inputs(_params(tmp_path, checkpoint=str(text)), "r", tmp_path / "work")
    with pytest.raises(CheckpointError, match=r"does not fit the model.*variant convmixer_demo"):
        check_inputs(_params(tmp_path, model_variant="convmixer_1536_20"), "r", tmp_path / "work")


def test_check_inputs_refuses_a_conf_key_that_is_not_a_param(tmp_path):
    params = _params(tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"unknown param.* batch_szie in the run's conf \(did you mean batch_szie → batch_size\?\); "
        r".*check the spelling",
    ):
        check_inputs({**params, "batch_szie": 4}, "r", tmp_path / "work")


def test_prep_shards_cover_the_manifest_and_a_finished_folder_is_reused_untouched(tmp_path, small_demo):
    params = _params(tmp_path, image_limit=10, batch_sizes=[4])
    (plan,) = check_inputs(params, "run-1", tmp_path / "work")
    shards = [steps.prepare_shard(plan, index, 2) for index in range(2)]
    assert [entry.cached for entry in shards] == [False, False]
    files = shards[0].files + shards[1].files
    assert files == ("input_00000.bin", "input_00001.bin", "input_00002.bin")  # 10 images in batches of 4
    prep_dir = Path(plan.prep_dir)
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in prep_dir.iterdir() if path.is_file()}

    again = [steps.prepare_shard(plan, index, 2) for index in range(2)]
    assert [entry.cached for entry in again] == [True, True]
    assert [entry.files for entry in again] == [entry.files for entry in shards]
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
    steps.merge_shard_outputs(shard_dirs, target)
    assert sorted(os.listdir(target)) == ["input_00000_0.bin", "input_00001_0.bin", "input_00002_0.bin"]
    assert (target / "input_00001_0.bin").stat().st_ino == (shard_dirs[1] / "input_00001_0.bin").stat().st_ino


# --- export cache ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory):
    """The demo checkpoint exported once into a fresh work folder (a few seconds on 2 cores)."""
    from convmixer_tasks.models.variants import DEMO_CHECKPOINT, DEMO_VARIANT

    work = tmp_path_factory.mktemp("export-work")
    first = export_step.export_cached(DEMO_CHECKPOINT, DEMO_VARIANT, work)
    return work, first


def _export_again(work):
    from convmixer_tasks.models.variants import DEMO_CHECKPOINT, DEMO_VARIANT

    return export_step.export_cached(DEMO_CHECKPOINT, DEMO_VARIANT, work)


def test_export_cache_reuses_a_validated_onnx_untouched(exported_once):
    work, first = exported_once
    assert first.cached is False and first.parity_max_abs_diff <= 1e-4
    onnx = Path(first.onnx_path)
    assert onnx == WorkLayout(work).onnx_cache.entry(first.cache_key) / "model.onnx"
    mtime = onnx.stat().st_mtime_ns
    again = _export_again(work)
    assert again.cached is True and onnx.stat().st_mtime_ns == mtime
    assert dataclasses.replace(again, cached=False) == first


@pytest.mark.parametrize("damage", ["unreadable report", "failed parity", "replaced onnx", "missing onnx"])
def test_export_cache_re_exports_when_the_entry_is_damaged(exported_once, damage):
    """A damaged entry (bad report JSON, a report that did not pass, an ONNX that is not the one the report
    vouches for) is a cache miss and is rebuilt, never an error."""
    from convmixer_tasks.fileio import atomic_write_json, read_json, sha256_file

    work, first = exported_once
    onnx = Path(first.onnx_path)
    report = onnx.with_name("model.parity.json")
    if damage == "unreadable report":
        report.write_text("{not json")
    elif damage == "failed parity":
        data = read_json(report)
        data["parity"]["passed"] = False
        atomic_write_json(report, data)
    elif damage == "replaced onnx":
        onnx.write_bytes(b"onnx")
    else:
        onnx.unlink()
    rebuilt = _export_again(work)
    assert rebuilt.cached is False  # re-exported, not served from the damaged entry
    assert rebuilt.onnx_sha256 == first.onnx_sha256 == sha256_file(onnx)
    assert read_json(report)["parity"]["passed"] is True
    assert _export_again(work).cached is True  # and the rebuilt entry is a hit again


# --- rows, failure rows, gate -----------------------------------------------------------------------------------------


def _step_results(batch_sizes=(4, 16), throughput=100.0, run_id="run-9", backend="onnxruntime", modes=(None,)):
    """What each step hands on for one run of ``batch_sizes`` × precision ``modes`` (Ascend modes: backend ascend);
    a plan's throughput is ``throughput`` × batch size (× 2 for its second mode, so rows tell modes apart)."""
    run = run_facts(run_id, "convmixer_validation", "2026-01-05T03:00:00+00:00", "2026-01-05T03:00:01+00:00")
    plans = [
        RunPlan(
            run_id=run_id,
            batch_size=bs,
            backend=backend,
            input_dtype="float32",
            model_variant="convmixer_768_32",
            checkpoint="/ckpt.pth.tar",
            dataset_dir="/val",
            label_file="/val_label.txt",
            image_limit=None,
            image_count=250,
            dataset_fingerprint="f" * 64,
            prep_dir=f"/cache/prep/{bs}",
            prep_key=f"{bs:064d}",
            run_dir="/runs/run-9",
            precision_mode=mode,
        )
        for bs in batch_sizes
        for mode in modes
    ]
    exported = ExportedModel(
        onnx_path="/cache/onnx/e/model.onnx",
        onnx_sha256="e" * 64,
        checkpoint_sha256="c" * 64,
        variant="convmixer_768_32",
        opset=17,
        parity_max_abs_diff=1e-6,
        cache_key="k" * 64,
        cached=False,
    )
    compiled = [
        CompiledModel(
            model_variant=plan.model_variant,
            run_id=run_id,
            batch_size=plan.batch_size,
            backend=backend,
            precision=plan.precision,
            prep_dir=plan.prep_dir,
            device="cpu-x",
            toolkit_version="onnxruntime 1",
            cached=False,
            artifact=Artifact(
                path=Path(f"/cache/artifacts/{backend}/{plan.batch_size}.onnx"),
                backend=backend,
                batch_size=plan.batch_size,
                input_dtype="float32",
                sha256=f"{plan.batch_size:063d}{index}",
                onnx_sha256="e" * 64,
                options={},
                cached=False,
            ),
        )
        for index, plan in enumerate(plans)
    ]
    benchmarks = [
        BenchSummary(
            model_variant=plan.model_variant,
            batch_size=plan.batch_size,
            backend=backend,
            precision=plan.precision,
            loop=3,
            warmup=5,
            throughput=throughput * plan.batch_size * (1 + modes.index(plan.precision_mode)),
            latency_mean_ms=1.0,
            latency_p50_ms=1.0,
            latency_p99_ms=2.0,
            formula="1000*bs/mean",
            bench_json=f"/runs/run-9/bs{plan.batch_size}/benchmark.json",
        )
        for plan in plans
    ]
    evaluated = [
        Scores(
            model_variant=plan.model_variant,
            batch_size=plan.batch_size,
            precision=plan.precision,
            top1=80.0,
            top5=95.0,
            image_count=250,
            result_json=f"/runs/run-9/bs{plan.batch_size}/result.json",
        )
        for plan in plans
    ]
    return run, plans, [exported], compiled, benchmarks, evaluated


def test_rows_join_each_plan_with_its_own_batch_size_whatever_the_order():
    run, plans, exported, compiled, benchmarks, evaluated = _step_results()
    rows = rows_for_run(run, plans, exported, compiled[::-1], benchmarks[::-1], evaluated)
    assert [(row.batch_size, row.artifact_sha256, row.throughput) for row in rows] == [
        (4, f"{4:063d}0", 400.0),
        (16, f"{16:063d}1", 1600.0),
    ]
    assert {row.checkpoint_path for row in rows} == {"/ckpt.pth.tar"}  # the path beside its sha256
    with pytest.raises(ConfigError, match="different models, batch sizes"):
        build_row(run, plans[0], exported[0], compiled[1], benchmarks[0], evaluated[0])


def test_rows_join_each_plan_with_its_own_batch_size_and_precision_mode():
    run, plans, exported, compiled, benchmarks, evaluated = _step_results(
        backend="ascend", modes=(None, "must_keep_origin_dtype")
    )
    rows = rows_for_run(run, plans, exported, compiled[::-1], benchmarks[::-1], evaluated[::-1])
    assert [(row.batch_size, row.precision_mode, row.artifact_sha256, row.throughput) for row in rows] == [
        (4, "force_fp16", f"{4:063d}0", 400.0),
        (4, "must_keep_origin_dtype", f"{4:063d}1", 800.0),
        (16, "force_fp16", f"{16:063d}2", 1600.0),
        (16, "must_keep_origin_dtype", f"{16:063d}3", 3200.0),
    ]
    with pytest.raises(ConfigError, match="precision modes were joined for the convmixer_768_32 bs4 force_fp16 row"):
        build_row(run, plans[0], exported[0], compiled[0], benchmarks[1], evaluated[0])
    with pytest.raises(ConfigError, match="no benchmark result for convmixer_768_32 bs16 must_keep_origin_dtype"):
        rows_for_run(run, plans, exported, compiled, benchmarks[:3], evaluated)


def test_rows_carry_each_stages_seconds_and_the_end_to_end_rate_beside_the_pure_inference_figure(tmp_path):
    from dataclasses import replace

    from convmixer_tasks.run.records import PrepShard, ShardOutputs

    run, plans, exported, compiled, benchmarks, evaluated = _step_results(batch_sizes=(4,))
    prepared = [
        PrepShard(
            batch_size=4,
            shard=shard,
            shards=2,
            prep_dir="/cache/prep/4",
            files=(),
            files_written=1,
            cached=False,
            seconds=1.5,
        )
        for shard in range(2)
    ]
    prepared.append(replace(prepared[0], prep_dir="/cache/prep/16", seconds=99.0))  # another batch size's prep
    inferred = [
        ShardOutputs(
            model_variant=plans[0].model_variant,
            batch_size=4,
            precision=plans[0].precision,
            shard=shard,
            prep_dir="/cache/prep/4",
            files=(),
            output_dir=f"/o/{shard}",
            file_count=1,
            summary_path=None,
            seconds=2.0,
        )
        for shard in range(2)
    ]
    scored = [replace(evaluated[0], seconds=3.0)]
    (row,) = rows_for_run(run, plans, exported, compiled, benchmarks, scored, prepared, inferred)
    assert row.stage_seconds == {"preprocess": 3.0, "infer": 4.0, "evaluate": 3.0}  # shards summed, per plan
    assert row.e2e_throughput == pytest.approx(250 / 10.0) and row.throughput == 400.0  # beside ais_bench's
    (unknown,) = rows_for_run(run, plans, exported, compiled, benchmarks, evaluated, prepared, inferred)
    assert unknown.stage_seconds is None and unknown.e2e_throughput is None  # a stage without seconds: no rate


def test_rows_carry_every_step_result_and_a_rerecord_keeps_one_row(tmp_path):
    from convmixer_tasks.metrics import query_runs

    url = f"sqlite:///{tmp_path / 'm.db'}"
    rows = rows_for_run(*_step_results())
    recorded = steps.record_rows(url, rows)
    again = steps.record_rows(url, rows)  # a retried record task
    assert [r.id for r in again] == [r.id for r in recorded]
    assert [(r.run_id, r.batch_size, r.backend) for r in recorded] == [
        ("run-9", 4, "onnxruntime"),
        ("run-9", 16, "onnxruntime"),
    ]
    assert query_runs(url)[1] == 2
    row = stored_run(url, "run-9", 16, "onnxruntime")
    assert row["artifact_sha256"] == f"{16:063d}1" and row["throughput"] == 1600.0
    assert row["onnx_sha256"] == "e" * 64 and row["device"] == "cpu-x"
    assert row["status"] == "pending"  # recorded, not gated: the gate's history ignores it until gate_rows
    assert row["dag_id"] == "convmixer_validation" and row["logical_date"].startswith("2026-01-05T03:00:00")


def test_a_refused_row_leaves_none_of_the_runs_rows(tmp_path):
    from convmixer_tasks.metrics import query_runs

    url = f"sqlite:///{tmp_path / 'm.db'}"
    rows = rows_for_run(*_step_results())
    rows[1].throughput = float("nan")  # a broken benchmark figure at batch 16
    with pytest.raises(MetricsError, match="throughput"):
        steps.record_rows(url, rows)
    assert query_runs(url)[1] == 0  # no half-recorded run: batch 4 is not left behind without batch 16


def test_failed_rows_have_no_accuracy_and_are_not_gated(tmp_path):

    url = f"sqlite:///{tmp_path / 'm.db'}"
    run = run_facts("run-f", "convmixer_validation", None, "2026-01-05T03:00:01+00:00")
    params = _params(tmp_path, batch_size=8)
    compile_failed = TaskFailure("compile_model", 0, "convmixer_demo bs8 fp32", "BackendError: atc exited 1")
    recorded = steps.record_rows(url, failed_rows(run, params, [compile_failed]))
    row = stored_run(url, "run-f", 8, "onnxruntime")
    assert row["status"] == "failed" and row["top1"] is None and row["throughput"] is None
    assert row["gate_reasons"] == ["compile_model [convmixer_demo bs8 fp32] failed: BackendError: atc exited 1"]
    with pytest.raises(MetricsError, match="failed"):
        gate_rows(url, recorded, params)


def test_the_failure_path_keeps_a_gated_verdict_and_fails_an_ungated_row(tmp_path):
    """record_failure (keep_gated) after a cleared rerun: a verdict stays, a 'pending' row becomes 'failed'."""

    url = f"sqlite:///{tmp_path / 'm.db'}"
    params = _params(tmp_path, batch_sizes=[4, 16], model_variant="convmixer_768_32")  # the rows' model
    run, plans, exported, compiled, benchmarks, evaluated = _step_results()
    recorded = steps.record_rows(url, rows_for_run(run, plans, exported, compiled, benchmarks, evaluated))
    gate_rows(url, recorded[:1], params)  # batch 4 got its verdict, batch 16 did not
    infer_failed = TaskFailure("infer", 1, None, "RuntimeError: device lost", batch_size=16)
    failed = steps.record_rows(url, failed_rows(run, params, [infer_failed]), keep_gated=True)
    assert [row.id for row in failed] == [row.id for row in recorded]
    gated, ungated = stored_run(url, "run-9", 4, "onnxruntime"), stored_run(url, "run-9", 16, "onnxruntime")
    assert gated["status"] == "ok" and gated["top1"] == 80.0 and gated["throughput"] == 400.0
    assert (
        ungated["status"] == "failed" and ungated["top1"] is None and ungated["gate_reasons"] == [infer_failed.cause()]
    )


def test_gate_stores_every_verdict_before_failing_once(tmp_path):

    url = f"sqlite:///{tmp_path / 'm.db'}"
    params = _params(tmp_path, throughput_history=5, throughput_tolerance_pct=10.0)
    # history: five fast ok runs at batch 4 only (recorded pending, then gated ok: only ok rows are history; the
    # noise-aware gate judges nothing before five)
    for index in range(5):
        old = steps.record_rows(
            url, rows_for_run(*_step_results(batch_sizes=(4,), throughput=1000.0, run_id=f"old-{index}"))
        )
        verdicts = gate_rows(url, old, params)
        assert [verdict.status for verdict in verdicts] == ["ok"] and verdicts[0].batch_size == 4
    # one slow run is never a regression on its own (a neighbour may have slowed that whole run) ...
    first = steps.record_rows(url, rows_for_run(*_step_results(batch_sizes=(4,), throughput=100.0, run_id="run-8")))
    assert [verdict.status for verdict in gate_rows(url, first, params)] == ["ok"]
    # ... the second in a row is judged together with it
    recorded = steps.record_rows(url, rows_for_run(*_step_results(throughput=100.0)))
    with pytest.raises(RegressionError, match="batch size 4") as failure:
        gate_rows(url, recorded, params)
    assert "batch size 16" not in str(failure.value)
    assert [decision.status for decision in failure.value.decisions] == ["regressed"]
    slow, new = stored_run(url, "run-9", 4, "onnxruntime"), stored_run(url, "run-9", 16, "onnxruntime")
    assert slow["status"] == "regressed" and slow["baseline_throughput"] == 4000.0
    assert new["status"] == "ok"  # gated after the regressed one, and stored
    assert any("throughput regressed" in reason for reason in slow["gate_reasons"])


def test_a_partial_run_is_not_gated_on_accuracy_but_still_on_throughput(tmp_path):
    full = RunParams.from_mapping(_params(tmp_path, top1_tolerance=0.5, throughput_tolerance_pct=10.0)).gate_arguments()
    partial = RunParams.from_mapping(_params(tmp_path, top1_tolerance=0.5, image_limit=24)).gate_arguments()
    assert full["top1_tolerance"] == 0.5 and partial["top1_tolerance"] == 100.0
    assert partial["throughput_drop_pct"] == full["throughput_drop_pct"] == 10.0
    assert partial["history"] == full["history"] == 5
    single_run = RunParams.from_mapping(_params(tmp_path, throughput_runs=1)).gate_arguments()
    assert full["runs"] == 2 and single_run["runs"] == 1


def test_stage_seconds_are_stored_and_bad_ones_refused(tmp_path):
    from dataclasses import replace

    from convmixer_tasks.errors import MetricsError
    from tests.stored import stored_run

    url = f"sqlite:///{tmp_path / 'm.db'}"
    (row,) = rows_for_run(*_step_results(batch_sizes=(4,)))
    steps.record_rows(
        url, [replace(row, stage_seconds={"preprocess": 1.0, "infer": 2.0, "evaluate": 0.5}, e2e_throughput=71.4)]
    )
    stored = stored_run(url, "run-9", 4, "onnxruntime")
    assert stored["stage_seconds"] == {"preprocess": 1.0, "infer": 2.0, "evaluate": 0.5}
    assert stored["e2e_throughput"] == 71.4
    with pytest.raises(MetricsError, match="stage_seconds\\['infer'\\] cannot be negative"):
        steps.record_rows(url, [replace(row, run_id="bad", stage_seconds={"infer": -1.0})])
