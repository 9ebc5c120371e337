"""Issue 22's replay (items 14 and 15): results that lied with exit 0, and messages that sent the user the wrong way.
Each test is one case of the hostile-input probe; the fixtures and the one-clear-line rule are issue 10's
(``test_reliability``).
"""

# ruff: noqa: F811 — the fixtures imported from test_reliability are, as pytest wants, the test functions' parameters

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convmixer_tasks import cli, fileio
from convmixer_tasks.backends.ascend import ToolRun
from convmixer_tasks.backends.onnxruntime import OnnxRuntimeBackend
from convmixer_tasks.errors import BackendError, PreprocessError
from convmixer_tasks.stages.aisbench_format import summary_path
from convmixer_tasks.stages.export import export_and_validate, parity_report_path
from convmixer_tasks.stages.prepfolder import read_manifest
from convmixer_tasks.stages.preprocess import preprocess
from tests.ascend_doubles import ascend_doubles, write_tiny_onnx  # noqa: F401 (fixture)
from tests.test_reliability import BATCH, REPO, assert_one_clear_line, dataset, models, prep, run_cli, work  # noqa: F401 (fixtures)


def other_images(folder: Path, seed: int, count: int = 6) -> tuple[Path, Path]:
    """A second set with the same names and shapes as ``dataset`` but other pixels (and labels)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(1, count + 1):
        Image.fromarray(rng.integers(0, 256, size=(70, 64, 3), dtype=np.uint8)).save(
            folder / f"ILSVRC2012_val_{index:08d}.JPEG", quality=90
        )
        lines.append(f"ILSVRC2012_val_{index:08d}.JPEG {(index * 3) % 10}")
    labels = folder.parent / f"{folder.name}_label.txt"
    labels.write_text("\n".join(lines) + "\n")
    return folder, labels


# --- 14: results that lie -----------------------------------------------------------------------------------------


def test_one_shard_rerun_over_another_image_set_is_refused_by_infer(models, dataset, work, capsys):
    """A full run of set A, then shard 0/2 of set B into the same folder: shard 1's files still hold A's images.
    The manifest says which inputs each file holds, so infer (and a full read) refuse the mix."""
    folder = work / "mixed"
    preprocess(dataset[0], folder, BATCH, workers=1)
    other, _ = other_images(work / "val_b", seed=11)
    preprocess(other, folder, BATCH, workers=1, shard=(0, 2))
    with pytest.raises(PreprocessError, match="hold other images than its manifest lists"):
        read_manifest(folder)
    out = work / "mixed_out" / "o"
    code, err = run_cli(capsys, "infer", "--model", str(models[0].path), "--input", str(folder), "--output", str(out))
    assert_one_clear_line(code, err, "infer", str(folder), "run preprocess for every shard")
    assert not out.exists()
    preprocess(other, folder, BATCH, workers=1, shard=(1, 2))  # the other shard brings the folder back to one set
    assert read_manifest(folder).image_count == 6


def test_eval_of_outputs_inferred_from_another_prep_folder_is_refused(models, prep, dataset, work, capsys):
    other, labels = other_images(work / "val_c", seed=12)
    other_prep = preprocess(other, work / "prep_c", BATCH, workers=1).out_dir
    out = work / "out_c" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], other_prep, out)
    argv = ["eval", "--outputs", str(out), "--result-json-path", str(work / "res_c")]
    code, err = run_cli(capsys, *argv, "--label-file", str(dataset[1]), "--prep-image", str(prep))
    assert_one_clear_line(code, err, "eval", "inferred from another prep folder", str(prep))
    code, err = run_cli(capsys, *argv, "--label-file", str(labels), "--prep-image", str(other_prep))
    assert code == 0, err


def test_fidelity_of_an_artifact_compiled_from_another_onnx_is_refused(models, dataset, work, capsys):
    a, _ = models
    onnx_b = work / "m1" / "model.onnx"
    code, err = run_cli(
        capsys,
        "fidelity",
        "--onnx",
        str(onnx_b),
        "--artifact",
        str(a.path),
        "--image-path",
        str(dataset[0]),
        "--label-file",
        str(dataset[1]),
        "--work-dir",
        str(work / "fid"),
    )
    assert_one_clear_line(code, err, "fidelity", "compiled from another ONNX", str(onnx_b))


def test_onnxruntime_compile_refuses_an_ascend_precision_mode(work, capsys):
    cache = work / "prec_cache"
    code, err = run_cli(
        capsys,
        "compile",
        "--backend",
        "onnxruntime",
        "--onnx",
        str(work / "m0" / "model.onnx"),
        "--batch-size",
        "2",
        "--output",
        str(cache),
        "--precision-mode",
        "force_fp16",
    )
    assert_one_clear_line(code, err, "compile", "force_fp16", "ascend backend only")
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_compare_refuses_a_negative_class_count(capsys):
    code, err = run_cli(capsys, "compare", "a", "b", "--classes", "-1")
    assert_one_clear_line(code, err, "compare", "--classes -1")


@pytest.mark.parametrize("flag", [("--opset", "99"), ("--tolerance", "-1")])
def test_refused_export_removes_what_it_would_have_replaced(work, capsys, flag):
    target = work / f"exp_{flag[0][2:]}" / "model.onnx"
    export_and_validate(None, target, variant="convmixer_demo", seed=0, parity_batch=1)
    code, err = run_cli(
        capsys, "export", "--random-weights", "--target", str(target), "--model", "convmixer_demo", *flag
    )
    assert_one_clear_line(code, err, "export", flag[0])
    assert not target.exists() and not parity_report_path(target).exists()


def test_refused_infer_removes_the_previous_outputs(models, prep, dataset, work, capsys):
    out = work / "out_refused" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], prep, out)
    other_batch = preprocess(dataset[0], work / "prep_bs1", 1, workers=1).out_dir
    code, err = run_cli(
        capsys, "infer", "--model", str(models[0].path), "--input", str(other_batch), "--output", str(out)
    )
    assert_one_clear_line(code, err, "infer", "batches of 1")
    assert not out.exists() and not summary_path(out).exists()


def test_cleanup_keeps_a_live_writers_temporary_and_removes_a_dead_ones(tmp_path):
    target = tmp_path / "model.onnx"
    dead = tmp_path / ".model.onnx.killed1.tmp"  # what a kill -9 leaves: nobody holds its lock
    dead.write_bytes(b"half")
    with fileio.atomic_path(target) as live:
        live.write_bytes(b"in progress")
        assert fileio.remove_stale_temporaries(fileio.temporaries_of(target)) == 1
        assert live.exists() and not dead.exists()
    assert target.read_bytes() == b"in progress" and not fileio.temporaries_of(target)


def test_concurrent_exports_to_one_target_never_fail_each_other(tmp_path):
    """Four exports to one target at once (a retried task beside its zombie, runs sharing a work folder) used to
    fail 1-3 of 24 times: each one's cleanup deleted another's temp file. All must succeed, leaving one pair."""
    target = tmp_path / "shared" / "model.onnx"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-m", "convmixer_tasks.cli", "-o", "json", "export", "--random-weights",
            "--model", "convmixer_demo", "--target", str(target)]  # fmt: skip
    children = [
        subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [(child.wait(timeout=600), *child.communicate()) for child in children]
    failures = [err for code, _, err in results if code != 0]
    assert not failures, failures[0]
    report = json.loads(parity_report_path(target).read_text())
    assert report["onnx_sha256"] == json.loads(results[-1][1])["onnx_sha256"]
    assert not fileio.temporaries_of(target) and not fileio.temporaries_of(parity_report_path(target))


def test_ais_bench_timing_nothing_is_not_a_throughput_of_zero(ascend_doubles, tmp_path, monkeypatch):
    backend = ascend_doubles.backend()
    artifact = backend.compile(write_tiny_onnx(tmp_path / "tiny.onnx"), BATCH, tmp_path / "cache")
    said = (
        "[INFO] NPU_compute_time (ms): min = 0, max = 0, mean = 0, median = 0, percentile(99%) = 0\n"
        "[INFO] throughput 1000*batchsize.mean(2)/NPU_compute_time.mean(0): 0\n"
    )
    monkeypatch.setattr(backend, "run_tool", lambda argv, *a, **k: ToolRun(argv, 0, said, 1))
    with pytest.raises(BackendError, match=r"mean NPU compute time of 0 ms .* nothing was timed"):
        backend.benchmark(artifact, loop=1, warmup=0)


# --- 15: misleading or raw messages -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["metrics-rebaseline", "compare"])
def test_commands_given_a_missing_metrics_db_say_so_and_create_nothing(tmp_path, capsys, command):
    db = tmp_path / "typo.db"
    url = f"sqlite:///{db}"
    argv = (
        ["metrics-rebaseline", "--row", "1", "--reason", "new CANN", "--url", url]
        if command == "metrics-rebaseline"
        else ["compare", "row:1", "row:2", "--url", url]
    )
    code, err = run_cli(capsys, *argv)
    assert_one_clear_line(code, err, command, str(db), "does not exist")
    assert not db.exists()


def test_metrics_show_names_airflow_home(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CONVMIXER_METRICS_DB_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    code, err = run_cli(capsys, "metrics-show")
    assert_one_clear_line(code, err, "metrics-show", f"AIRFLOW_HOME={tmp_path / 'home'}", "source .venv/bin/activate")


def test_a_batch_larger_than_the_disk_says_the_batch_is_too_large(dataset, work, capsys):
    out = work / "prep_huge"
    code, err = run_cli(
        capsys, "preprocess", "--image-path", str(dataset[0]), "--prep-image", str(out), "--batch-size", "1000000000"
    )
    assert_one_clear_line(code, err, "preprocess", "batch size 1000000000 is too large", "--batch-size 6 or less")
    assert not list(out.glob("*.bin"))


def test_eval_of_another_batch_sizes_outputs_says_the_batch_sizes_differ(models, prep, dataset, work, capsys):
    out = work / "out_bs" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], prep, out)  # batches of 2
    prep_bs3 = preprocess(dataset[0], work / "prep_bs3", 3, workers=1).out_dir
    code, err = run_cli(
        capsys,
        "eval",
        "--outputs",
        str(out),
        "--label-file",
        str(dataset[1]),
        "--prep-image",
        str(prep_bs3),
        "--result-json-path",
        str(work / "res_bs"),
    )
    assert_one_clear_line(code, err, "eval", "batch sizes differ", "batches of 2", "batches of 3")


def test_ais_bench_crash_with_exit_0_leads_with_its_error(ascend_doubles, tmp_path, monkeypatch):
    backend = ascend_doubles.backend()
    artifact = backend.compile(write_tiny_onnx(tmp_path / "tiny.onnx"), BATCH, tmp_path / "cache")
    said = "[INFO] acl init success\n[ERROR] acl open device 0 failed, ret 507033\n"
    monkeypatch.setattr(backend, "run_tool", lambda argv, *a, **k: ToolRun(argv, 0, said, 1))
    with pytest.raises(BackendError) as info:
        backend.benchmark(artifact, loop=1, warmup=0)
    message = str(info.value)
    assert message.startswith("ais_bench printed: [ERROR] acl open device 0 failed"), message
    assert "npu-smi info" in message and message.index("[ERROR]") < message.index("NPU_compute_time")


def test_ascend_compile_to_a_relative_output_folder(ascend_doubles, tmp_path, monkeypatch, capsys):
    """ATC runs in its build folder: a relative --output used to be resolved there ("wrote no .om")."""
    onnx_path = write_tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    argv = ["-o", "json", "compile", "--backend", "ascend", "--cann-set-env", str(ascend_doubles.set_env),
            "--onnx", str(onnx_path), "--batch-size", "2", "--output", "om"]  # fmt: skip
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    artifact = Path(json.loads(out)["path"])
    assert artifact.is_file() and artifact.parent == tmp_path / "om"


def test_a_metrics_db_from_a_newer_version_says_so(tmp_path, capsys):
    import sqlite3

    from convmixer_tasks.metrics import upgrade
    from convmixer_tasks.metrics.schema import VERSION_TABLE

    db = tmp_path / "newer.db"
    upgrade(f"sqlite:///{db}")
    with sqlite3.connect(db) as connection:
        connection.execute(f"UPDATE {VERSION_TABLE} SET version_num = 'f00dfacef00d'")
    for argv in (["metrics-upgrade"], ["run", "--record", "--work-dir", str(tmp_path / "w")]):
        code, err = run_cli(capsys, *argv, "--url", f"sqlite:///{db}")
        assert_one_clear_line(code, err, argv[0], "'f00dfacef00d'", "written by a newer convmixer-tasks")


# --- 6: the checkpoint an asset event names -----------------------------------------------------------------------


def test_an_asset_event_naming_a_missing_file_is_told_so_and_the_rows_keep_the_path(tmp_path):
    from types import SimpleNamespace

    from convmixer_tasks.errors import ConfigError
    from convmixer_tasks.run.rows import failed_rows
    from convmixer_tasks.run.runfacts import run_facts
    from convmixer_tasks.run.triggers import recorded_checkpoint, with_triggered_checkpoint

    missing = tmp_path / "ckpt" / "convmixer_new.pth.tar"
    events = {"convmixer_checkpoint": [SimpleNamespace(asset=SimpleNamespace(uri="convmixer_checkpoint"),
                                                       extra={"checkpoint": str(missing)})]}  # fmt: skip
    params = {"checkpoint": "/default.pth.tar", "batch_sizes": [4], "backend": "onnxruntime"}
    with pytest.raises(ConfigError) as info:
        with_triggered_checkpoint(params, events)
    message = str(info.value)
    assert str(missing) in message and "named by the triggering asset event" in message
    assert "emit the event again" in message and "set param checkpoint" not in message
    # The failure row of that run names the event's checkpoint, not the param's default.
    (row,) = failed_rows(run_facts("r", "d", None, None), recorded_checkpoint(params, events))
    assert row.checkpoint_path == str(missing)


# --- 3: what the demo prints once, and not too early --------------------------------------------------------------


def test_suspicious_images_are_said_once_per_prep_folder_not_once_per_shard(tmp_path, caplog):
    folder, labels = other_images(tmp_path / "val", seed=5, count=4)
    Image.new("CMYK", (64, 64), (10, 20, 30, 40)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    with caplog.at_level(logging.WARNING):
        for shard in ((0, 2), (1, 2)):
            preprocess(folder, tmp_path / "prep", 1, workers=1, shard=shard, label_file=labels)
    said = [r for r in caplog.records if "suspicious images" in r.getMessage()]
    assert len(said) == 1 and "CMYK" in said[0].getMessage()


def test_the_first_benchmark_does_not_ask_for_metrics_upgrade(tmp_path, caplog):
    """The first run's benchmark reads the history before its record step creates the table: that is no problem
    to warn about (the warning told the user to run metrics-upgrade a moment before the run did it itself)."""
    import sqlite3

    from convmixer_tasks.run.benchmark_step import suspect_check
    from convmixer_tasks.run.run_options import GateOptions
    from tests.test_steps import _step_results

    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    compiled = _step_results(batch_sizes=(4,))[3][0]  # an onnxruntime fp32 artifact of batch size 4
    gate = GateOptions(history=10, throughput_drop_pct=10.0)
    with caplog.at_level(logging.INFO):
        assert suspect_check(f"sqlite:///{db}", "convmixer_demo", compiled, gate)({}) is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "no throughput history yet" in caplog.text


# --- 1: one rule for the embedded AIRFLOW_HOME --------------------------------------------------------------------


def test_activating_the_venv_sets_the_demos_airflow_home_by_the_scripts_rule(tmp_path):
    """setup.sh makes .venv/bin/activate source scripts/airflow-env.sh, the rule the scripts use: after
    `source .venv/bin/activate`, `airflow …` and `convmixer-tasks metrics-show` look where the demo wrote."""
    setup = (REPO / "scripts" / "setup.sh").read_text()
    hook = setup.split("cat >>.venv/bin/activate <<'EOF'\n")[1].split("\nEOF\n")[0]
    venv = tmp_path / "checkout" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (tmp_path / "checkout" / "scripts").symlink_to(REPO / "scripts")
    (venv / "bin" / "activate").write_text(f'VIRTUAL_ENV="{venv}"\nexport VIRTUAL_ENV\n{hook}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CONVMIXER"))}
    echo = 'echo "$AIRFLOW_HOME $AIRFLOW__CORE__DAGS_FOLDER $AIRFLOW__API__HOST"'
    shown = subprocess.run(
        ["bash", "-c", f'. "{venv}/bin/activate" && {echo}'], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    checkout = tmp_path / "checkout"
    assert shown == [str(checkout / "airflow-home"), str(checkout / "dags"), "127.0.0.1"]
    from convmixer_tasks.metrics.url import resolve_metrics_url

    assert (
        resolve_metrics_url(env={"AIRFLOW_HOME": shown[0]}) == f"sqlite:///{checkout}/airflow-home/convmixer_metrics.db"
    )
