"""Issue 10's replay: the ways a kill or a failure used to leave a plausible result, and the messages that sent the
user the wrong way. Each test is one item; kills are real SIGKILLs of a subprocess stopped at a chosen moment
(the child patches one library call to write a marker file and wait), never a simulated exception.

Every CLI failure must be one ``convmixer-tasks <cmd>: error: …`` line on stderr with no traceback, and whatever
is left on disk must be either nothing or a complete result. ``test_items_are_counted`` prints the count.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convmixer_tasks import cli
from convmixer_tasks.backends.ascend import ToolRun
from convmixer_tasks.backends.base import Artifact, sidecar_path
from convmixer_tasks.backends.onnxruntime import OnnxRuntimeBackend
from convmixer_tasks.errors import BackendError, ExportError
from convmixer_tasks.fileio import sha256_file
from convmixer_tasks.models.variants import DEMO_CHECKPOINT
from convmixer_tasks.stages.aisbench_format import STAGING_MARK, summary_path
from convmixer_tasks.stages.export import export_and_validate, parity_report_path
from convmixer_tasks.stages.preprocess import preprocess

REPO = Path(__file__).resolve().parents[1]
BATCH = 2
IMAGES = 6  # three prep files, so a kill can land between two of them
ITEMS: list[str] = []  # every replayed item, for the count


def item(function):
    ITEMS.append(function.__name__)
    return function


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def dataset(work):
    folder = work / "val"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lines = []
    for index in range(1, IMAGES + 1):
        Image.fromarray(rng.integers(0, 256, size=(64, 72, 3), dtype=np.uint8)).save(
            folder / f"ILSVRC2012_val_{index:08d}.JPEG", quality=95
        )
        lines.append(f"ILSVRC2012_val_{index:08d}.JPEG {index % 10}")
    labels = work / "val_label.txt"
    labels.write_text("\n".join(lines) + "\n")
    return folder, labels


@pytest.fixture(scope="module")
def prep(work, dataset):
    return preprocess(dataset[0], work / "prep", BATCH, workers=1).out_dir


@pytest.fixture(scope="module")
def models(work):
    """Two different demo models (seeds 0 and 1), each exported and compiled for ONNX Runtime."""
    backend = OnnxRuntimeBackend(threads=1)
    artifacts = []
    for seed in (0, 1):
        onnx_path = export_and_validate(
            None, work / f"m{seed}" / "model.onnx", variant="convmixer_demo", seed=seed, parity_batch=1
        ).onnx_path
        artifacts.append(backend.compile(onnx_path, BATCH, work / f"cache{seed}"))
    return artifacts


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, command: str, *needles: str) -> str:
    """rc 1 and exactly one non-log line: the error, naming what it must; never a traceback."""
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line and " WARNING " not in line]
    assert code == 1, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"convmixer-tasks {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def kill_when(script: str, marker: Path, timeout_s: float = 240.0) -> None:
    """Run ``script`` in a child Python; SIGKILL it once it has written ``marker`` (the chosen moment)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=REPO)
    deadline = time.monotonic() + timeout_s
    try:
        while not marker.exists():
            assert child.poll() is None, f"the child exited ({child.returncode}) before the kill point"
            assert time.monotonic() < deadline, "the child never reached the kill point"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


# --- results that look real but are not ---------------------------------------------------------------------------


@item
def test_killed_infer_into_a_reused_folder_leaves_no_result(models, prep, dataset, work, capsys):
    out = work / "out1" / "o"
    a, b = models
    code, err = run_cli(capsys, "infer", "--model", str(a.path), "--input", str(prep), "--output", str(out))
    assert code == 0, err
    assert summary_path(out).is_file() and len(os.listdir(out)) == 3
    marker = work / "infer.killpoint"
    # Model B stops after its first output batch, as a kill -9 midway would find it.
    kill_when(
        f"""
        import pathlib, time, onnxruntime
        real, calls = onnxruntime.InferenceSession.run, []
        def run(self, *a, **k):
            calls.append(1)
            if len(calls) == 2:
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(600)
            return real(self, *a, **k)
        onnxruntime.InferenceSession.run = run
        from convmixer_tasks import cli
        cli.main(["infer", "--model", {str(b.path)!r}, "--input", {str(prep)!r}, "--output", {str(out)!r}])
        """,
        marker,
    )
    # Neither A's outputs (cleared before B started) nor a half of B's: nothing eval could score.
    assert not out.exists() and not summary_path(out).exists()
    code, err = run_cli(
        capsys,
        "eval",
        "--outputs",
        str(out),
        "--label-file",
        str(dataset[1]),
        "--prep-image",
        str(prep),
        "--result-json-path",
        str(work / "res1"),
    )
    assert_one_clear_line(code, err, "eval")
    # The next run clears the killed run's staging folder and lands whole.
    code, err = run_cli(capsys, "infer", "--model", str(b.path), "--input", str(prep), "--output", str(out))
    assert code == 0, err
    assert not [p for p in out.parent.iterdir() if STAGING_MARK in p.name]
    assert len(os.listdir(out)) == 3


@item
def test_failed_infer_removes_the_previous_result(models, prep, work):
    out = work / "out2" / "o"
    backend = OnnxRuntimeBackend(threads=1)
    backend.infer(models[0], prep, out)
    broken = Artifact.from_dict({**models[1].__dict__, "input_shape": [BATCH, 3, 224, 224]})
    broken.meta = {**broken.meta, "output_name": "no_such_output"}
    with pytest.raises(Exception):  # noqa: B017 — any failure: what matters is what is left behind
        backend.infer(broken, prep, out)
    assert not out.exists() and not summary_path(out).exists()


@item
def test_killed_ascend_infer_into_a_reused_folder_leaves_no_result(ascend_doubles, prep, tmp_path, capsys):
    """The Ascend backend shares the staging and clearing (aisbench_format): a kill after ais_bench wrote a whole
    run's outputs, before they were settled, leaves neither those nor the previous run's outputs and summary."""
    from tests.ascend_doubles import write_tiny_onnx

    artifact = ascend_doubles.backend().compile(write_tiny_onnx(tmp_path / "tiny.onnx"), BATCH, tmp_path / "cache")
    out = tmp_path / "o" / "r"
    argv = [
        "infer",
        "--backend",
        "ascend",
        "--cann-set-env",
        str(ascend_doubles.set_env),
        "--model",
        str(artifact.path),
        "--input",
        str(prep),
        "--output",
        str(out),
    ]
    code, err = run_cli(capsys, *argv)
    assert code == 0 and summary_path(out).is_file() and len(os.listdir(out)) == 3, err
    marker = tmp_path / "ais_bench.killpoint"
    kill_when(
        f"""
        import pathlib, time
        from convmixer_tasks.backends import ascend
        real = ascend.AscendBackend.run_tool
        def run_tool(self, command, *a, **k):  # ais_bench has written every output; settling them is next
            result = real(self, command, *a, **k)
            if "--output_dirname" in command:
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(600)
            return result
        ascend.AscendBackend.run_tool = run_tool
        from convmixer_tasks import cli
        cli.main({argv!r})
        """,
        marker,
    )
    assert not out.exists() and not summary_path(out).exists()
    code, err = run_cli(capsys, *argv)  # the next run clears the killed run's staging folder and lands whole
    assert code == 0, err
    assert sorted(os.listdir(out.parent)) == ["r", "r_summary.json"] and len(os.listdir(out)) == 3


@item
def test_truncated_artifact_is_refused_in_one_line(models, prep, work, capsys):
    copy = work / "trunc" / models[0].path.name
    copy.parent.mkdir()
    shutil.copy(models[0].path, copy)
    shutil.copy(sidecar_path(models[0].path), sidecar_path(copy))
    copy.write_bytes(copy.read_bytes()[:1000])
    for command in ("infer", "benchmark"):
        extra = ["--input", str(prep), "--output", str(work / "trunc" / "o")] if command == "infer" else ["--loop", "1"]
        code, err = run_cli(capsys, command, "--model", str(copy), *extra)
        assert_one_clear_line(code, err, command, str(copy), "re-run compile")


@item
def test_other_model_copied_over_the_artifact_is_refused(models, work, capsys):
    target = work / "swap" / models[0].path.name
    target.parent.mkdir()
    shutil.copy(models[1].path, target)  # B's bytes under A's sidecar
    shutil.copy(sidecar_path(models[0].path), sidecar_path(target))
    code, err = run_cli(capsys, "benchmark", "--model", str(target), "--loop", "1")
    assert_one_clear_line(code, err, "benchmark", "re-run compile", "truncated or replaced")


@item
def test_unreadable_sidecar_is_one_line(models, work, capsys):
    target = work / "sidecar" / models[0].path.name
    target.parent.mkdir()
    shutil.copy(models[0].path, target)
    sidecar_path(target).write_text('{"path": "x", "back')
    code, err = run_cli(capsys, "benchmark", "--model", str(target), "--loop", "1")
    assert_one_clear_line(code, err, "benchmark", str(sidecar_path(target)), "re-run compile")


@item
def test_killed_export_leaves_no_onnx_nor_an_old_report(work):
    target = work / "exp" / "model.onnx"
    export_and_validate(None, target, variant="convmixer_demo", seed=0, parity_batch=1)
    assert target.is_file() and parity_report_path(target).is_file()
    marker = work / "export.killpoint"
    kill_when(
        f"""
        import pathlib, time
        from convmixer_tasks.stages import export
        def parity(*a, **k):  # the new ONNX is written and being checked
            pathlib.Path({str(marker)!r}).write_text("x")
            time.sleep(600)
        export.run_parity = parity
        export.export_and_validate(None, {str(target)!r}, variant="convmixer_demo", seed=1, parity_batch=1)
        """,
        marker,
    )
    assert not target.exists() and not parity_report_path(target).exists()
    leftovers = sorted(p.name for p in target.parent.iterdir())
    assert leftovers and all(name.endswith(".tmp") for name in leftovers)  # hidden, and never read as a result
    result = export_and_validate(None, target, variant="convmixer_demo", seed=1, parity_batch=1)
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.parity.json"]  # stale .tmp gone
    assert json.loads(parity_report_path(target).read_text())["onnx_sha256"] == result.onnx_sha256


def _onnx_with_its_own_report(target: Path) -> bool:
    """What a consumer may read: an ONNX beside a report that describes exactly that file (or no ONNX at all)."""
    if not target.exists():
        return True
    report = parity_report_path(target)
    return report.is_file() and json.loads(report.read_text())["onnx_sha256"] == sha256_file(target)


@item
@pytest.mark.parametrize("call", ["replace", "unlink"])
def test_export_killed_between_its_two_renames_or_removals_leaves_no_onnx_without_its_report(work, call):
    """The ONNX and its report cannot move in one rename; a kill after the first of the two (landing the new pair,
    or clearing the previous one) must still leave no ONNX that its report does not describe."""
    from convmixer_tasks.run import export_step

    target = work / f"exp_{call}" / "model.onnx"
    export_and_validate(None, target, variant="convmixer_demo", seed=0, parity_batch=1)
    marker = work / f"export.{call}.killpoint"
    pair = sorted({str(target), str(parity_report_path(target))})
    kill_when(
        f"""
        import os, pathlib, time
        real = os.{call}
        def stop_after_first(*args, **kwargs):  # the first of the pair's two renames (or removals), then the kill
            result = real(*args, **kwargs)
            if os.fspath(args[-1]) in {pair!r}:
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(600)
            return result
        os.{call} = stop_after_first
        from convmixer_tasks.stages import export
        export.export_and_validate(None, {str(target)!r}, variant="convmixer_demo", seed=1, parity_batch=1)
        """,
        marker,
    )
    assert _onnx_with_its_own_report(target)
    assert not target.exists()  # the ONNX is the commit point: it lands last and goes first
    export_and_validate(None, target, variant="convmixer_demo", seed=1, parity_batch=1)  # the rerun lands both
    assert target.exists() and _onnx_with_its_own_report(target)
    # The DAG's export cache takes a report alone (what the kill leaves) for a miss and exports again.
    work_dir = work / f"exp_{call}_work"
    Path(export_step.export_cached(DEMO_CHECKPOINT, "convmixer_demo", work_dir).onnx_path).unlink()
    again = export_step.export_cached(DEMO_CHECKPOINT, "convmixer_demo", work_dir)
    assert not again.cached and _onnx_with_its_own_report(Path(again.onnx_path))


@item
def test_failed_export_removes_what_it_would_have_replaced(work, capsys):
    target = work / "exp2" / "model.onnx"
    export_and_validate(None, target, variant="convmixer_demo", seed=0, parity_batch=1)
    text = work / "exp2" / "notes.pth.tar"
    text.write_text("this is not a checkpoint\n")
    code, err = run_cli(capsys, "export", "--source", str(text), "--target", str(target), "--model", "convmixer_demo")
    assert_one_clear_line(code, err, "export", str(text))
    assert not target.exists() and not parity_report_path(target).exists()


@item
def test_failed_eval_removes_the_stale_result_json(models, prep, dataset, work, capsys):
    out = work / "out3" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], prep, out)
    results = work / "res"
    argv = ["eval", "--label-file", str(dataset[1]), "--result-json-path", str(results), "--prep-image", str(prep)]
    code, err = run_cli(capsys, *argv, "--outputs", str(out))
    assert code == 0 and (results / "result.json").is_file(), err
    (out / "input_00001_0.bin").write_bytes(b"\0" * 12)  # now unscorable
    code, err = run_cli(capsys, *argv, "--outputs", str(out))
    assert_one_clear_line(code, err, "eval")
    assert not (results / "result.json").exists()


@item
def test_record_failure_writes_a_row_for_any_conf(tmp_path):
    from convmixer_tasks import metrics
    from convmixer_tasks.errors import ConfigError
    from convmixer_tasks.run import steps
    from convmixer_tasks.run.local_run import local_params
    from convmixer_tasks.run.rows import failed_rows
    from convmixer_tasks.run.runfacts import run_facts

    url = f"sqlite:///{tmp_path / 'm.db'}"
    base = {"model_variant": "convmixer_demo", "backend": "onnxruntime", "input_dtype": "float32"}
    run = run_facts("manual__1", "convmixer_validation", "2026-01-01T00:00:00+00:00", None)
    # RunParams refuses this conf, naming the param the user passed (not batch_sizes)...
    with pytest.raises(ConfigError, match=r"batch size 4\.0 .*; fix param batch_size \("):
        local_params(tmp_path, **base, batch_size=4.0, batch_sizes=[1])
    rows = failed_rows(run, {**base, "batch_size": 4.0, "batch_sizes": [1]})
    steps.record_rows(url, rows, keep_gated=True)  # ...and its failure is still recorded
    (row,), _ = metrics.query_runs(url)
    assert (row["batch_size"], row["status"]) == (4, "failed")
    assert "fix param batch_size (" in row["gate_reasons"][1]  # the refusal is on the row
    # Nothing readable at all: one row under a stated placeholder, still naming what was asked.
    run2 = run_facts("manual__2", "convmixer_validation", "2026-01-01T00:00:00+00:00", None)
    rows = failed_rows(run2, {"batch_size": "four", "backend": 7})
    steps.record_rows(url, rows, keep_gated=True)
    assert len(rows) == 1 and rows[0].gate_reasons is not None
    assert rows[0].backend == "7" and "'four'" in rows[0].gate_reasons[-1]


# --- messages that sent the user the wrong way --------------------------------------------------------------------


@item
def test_preprocess_without_the_space_it_needs_is_refused_up_front(dataset, work, capsys, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100_000, 100_000))
    out = work / "prep_full"
    code, err = run_cli(
        capsys,
        "preprocess",
        "--image-path",
        str(dataset[0]),
        "--prep-image",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "1",
    )
    line = assert_one_clear_line(code, err, "preprocess", "no space left on device", str(out), "0.1 MB free")
    assert "3 files of 1204224 bytes" in line  # the figure the run needs, known before any pixel is decoded
    assert not list(out.glob("*.bin"))


@item
def test_disk_filling_up_mid_preprocess_names_the_file(dataset, work, capsys, monkeypatch):
    import errno

    from convmixer_tasks.stages import preprocess as prep_module

    written: list[str] = []

    def write(buffer, path):  # the third file hits a full disk, as a real ENOSPC would
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        buffer.tofile(path)

    monkeypatch.setattr(prep_module, "_write_buffer", write)
    out = work / "prep_enospc"
    code, err = run_cli(
        capsys,
        "preprocess",
        "--image-path",
        str(dataset[0]),
        "--prep-image",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "1",
    )
    assert_one_clear_line(code, err, "preprocess", "no space left on device", "input_00002.bin")
    assert not (out / "input_00002.bin").exists() and not list(out.glob(".*.tmp"))  # nothing half-written
    assert not (out / "manifest.json").exists()


@item
def test_second_preprocess_into_one_folder_says_who_holds_it(dataset, work, capsys, monkeypatch):
    from convmixer_tasks.stages import preprocess as prep_module

    out = work / "prep_locked"
    marker = work / "lock.held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import pathlib, time
            from convmixer_tasks import guards
            with guards.exclusive(pathlib.Path({str(out / ".state" / "lock.shard-0-of-1")!r}), "x", 1):
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(600)
        """),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        while not marker.exists():
            assert holder.poll() is None
            time.sleep(0.05)
        monkeypatch.setattr(prep_module, "PREP_LOCK_WAIT_S", 0.5)
        argv = [
            "preprocess",
            "--image-path",
            str(dataset[0]),
            "--prep-image",
            str(out),
            "--batch-size",
            "2",
            "--workers",
            "1",
        ]
        code, err = run_cli(capsys, *argv)
        assert_one_clear_line(code, err, "preprocess", f"pid {holder.pid}", "being written")
    finally:
        holder.kill()
        holder.wait()
    code, err = run_cli(capsys, *argv)  # the killed holder's lock died with it
    assert code == 0, err


@item
@pytest.mark.parametrize("step", ["infer", "benchmark"])
def test_ais_bench_error_lines_are_in_an_exit_0_failure(ascend_doubles, prep, tmp_path, monkeypatch, step):
    """ais_bench exits 0, prints `[ERROR] acl open device …` and no figures: the error itself carries that line."""
    from tests.ascend_doubles import write_tiny_onnx

    backend = ascend_doubles.backend()
    artifact = backend.compile(write_tiny_onnx(tmp_path / "tiny.onnx"), BATCH, tmp_path / "cache")
    said = "[INFO] acl init success\n[ERROR] acl open device 0 failed, ret 507033\n"
    monkeypatch.setattr(backend, "run_tool", lambda argv, *a, **k: ToolRun(argv, 0, said, 1))
    out = tmp_path / "o"
    with pytest.raises(BackendError, match=r"ais_bench printed: \[ERROR\] acl open device 0 failed, ret 507033"):
        backend.infer(artifact, prep, out) if step == "infer" else backend.benchmark(artifact, loop=1, warmup=0)
    assert not out.exists()


@item
@pytest.mark.parametrize("case", ["text file", "another variant's checkpoint"])
def test_check_inputs_refuses_a_checkpoint_that_export_would_refuse_before_any_work(dataset, tmp_path, capsys, case):
    """Before the check, preprocess ran for minutes and export failed only then; now check_inputs (the CLI `run`'s
    first step, as the DAG's) refuses it, and no prep folder is started."""
    checkpoint, variant = DEMO_CHECKPOINT, "convmixer_1536_20"
    if case == "text file":
        checkpoint, variant = tmp_path / "notes.pth.tar", "convmixer_demo"
        checkpoint.write_text("these are notes, not weights\n")
    work_dir = tmp_path / "work"
    code, err = run_cli(
        capsys,
        "run",
        "--work-dir",
        str(work_dir),
        "--image-path",
        str(dataset[0]),
        "--annotation-file-path",
        str(dataset[1]),
        "--source",
        str(checkpoint),
        "--model",
        variant,
    )
    needle = "is a text file" if case == "text file" else "does not fit the model"
    line = assert_one_clear_line(code, err, "run", str(checkpoint), needle)
    assert case == "text file" or "looks like dim=64 depth=4 kernel=5 patch=14 (variant convmixer_demo)" in line
    assert not list(work_dir.rglob("manifest.json")) and not list(work_dir.rglob("*.bin"))


@item
def test_every_trigger_the_docs_show_comes_after_an_unpause():
    """The DAG is created paused; a run triggered before `airflow dags unpause` waits in the queue forever. Every
    place that tells a person to trigger it says to unpause it first (the metrics page's empty state included)."""
    unpause = "airflow dags unpause convmixer_validation"
    places = [
        REPO / "README.md",
        REPO / "docker" / "README.md",
        REPO / "scripts" / "run_demo_dag.sh",
        REPO / "plugins" / "convmixer_metrics" / "static" / "index.html",
    ]
    for path in places:
        text = path.read_text()
        assert unpause in text, path
        trigger = text.find("airflow dags trigger convmixer_validation")
        assert trigger == -1 or text.index(unpause) < trigger, f"{path}: a trigger shown before the unpause"


@item
def test_gate_advice_names_real_params():
    import re

    from convmixer_tasks.run.params import param_specs
    from convmixer_tasks.run.settings import env_reader, load_scheduling_settings
    from convmixer_tasks.verdict import gate

    declared = set(param_specs(load_scheduling_settings(env_reader({}), Path("/tmp"))))
    source = Path(gate.__file__).read_text()
    advice = re.search(r"rerun with a larger DAG param \{(\w+)\} / \{(\w+)\}", source)
    assert advice, "the gate's advice moved; keep it naming params through the constants"
    for constant in advice.groups():
        assert getattr(gate, constant) in declared


@item
def test_checkpoint_messages_name_the_real_problem(tmp_path, capsys):
    text = tmp_path / "text.pth.tar"
    text.write_text("hello\n")
    truncated = tmp_path / "cut.pth.tar"
    truncated.write_bytes(DEMO_CHECKPOINT.read_bytes()[:5000])
    evil = tmp_path / "evil.pth.tar"
    evil.write_bytes(_malicious_pickle())
    cases = [(text, "is a text file"), (truncated, "truncated or damaged"), (evil, "posix.system")]
    for path, needle in cases:
        code, err = run_cli(
            capsys, "export", "--source", str(path), "--target", str(tmp_path / "m.onnx"), "--model", "convmixer_demo"
        )
        line = assert_one_clear_line(code, err, "export", str(path), needle)
        assert ("re-save" in line) == (path is evil), line  # trusted-pickle advice only where it applies


def _malicious_pickle() -> bytes:
    """A torch.save archive whose pickle calls os.system on load (never loaded here with weights_only=False)."""
    import io

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    return buffer.getvalue()


@item
def test_txt_outputs_with_999_columns_blame_the_file_not_a_flag(prep, dataset, work, capsys):
    out = work / "txt999" / "o"
    out.mkdir(parents=True)
    for index in range(3):
        np.savetxt(out / f"input_{index:05d}_0.txt", np.zeros((BATCH, 999), dtype=np.float32))
    code, err = run_cli(
        capsys,
        "eval",
        "--outputs",
        str(out),
        "--label-file",
        str(dataset[1]),
        "--prep-image",
        str(prep),
        "--result-json-path",
        str(work / "res999"),
    )
    line = assert_one_clear_line(code, err, "eval", "input_00000_0.txt", "rows of 999 values", "1000 class logits")
    assert "--num-classes" not in line  # eval has no such flag


@item
def test_nan_checkpoint_is_not_told_to_raise_the_tolerance(tmp_path):
    import torch

    from convmixer_tasks.models.builders.convmixer import build_model

    model = build_model("convmixer_demo")
    state = model.state_dict()
    first = next(k for k, v in state.items() if v.dtype.is_floating_point)
    state[first] = torch.full_like(state[first], float("nan"))
    checkpoint = tmp_path / "nan.pth.tar"
    torch.save({"state_dict": state}, checkpoint)
    with pytest.raises(ExportError) as info:
        export_and_validate(checkpoint, tmp_path / "nan.onnx", variant="convmixer_demo", parity_batch=1)
    assert "not finite" in str(info.value) and "--tolerance" not in str(info.value)
    assert not (tmp_path / "nan.onnx").exists()


# --- quietly accepted ---------------------------------------------------------------------------------------------


@item
def test_empty_json_file_name_is_refused(models, prep, dataset, work, capsys):
    out = work / "out4" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], prep, out)
    results = work / "res4"
    code, err = run_cli(
        capsys,
        "eval",
        "--outputs",
        str(out),
        "--label-file",
        str(dataset[1]),
        "--result-json-path",
        str(results),
        "--json-file-name",
        "",
    )
    assert_one_clear_line(code, err, "eval", "--json-file-name")
    assert not results.exists() or not any(results.iterdir())


@item
def test_a_huge_image_number_in_the_labels_costs_no_memory(models, prep, dataset, work, capsys):
    import tracemalloc

    out = work / "out5" / "o"
    OnnxRuntimeBackend(threads=1).infer(models[0], prep, out)
    labels = work / "labels_huge.txt"
    labels.write_text(dataset[1].read_text() + "ILSVRC2012_val_99999999.JPEG 5\n")
    tracemalloc.start()
    try:
        code, err = run_cli(
            capsys,
            "eval",
            "--outputs",
            str(out),
            "--label-file",
            str(labels),
            "--batch-size",
            "2",
            "--result-json-path",
            str(work / "res5"),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_clear_line(code, err, "eval", "ILSVRC2012_val_99999999", "no output row")
    assert peak < 20e6, f"eval peaked at {peak / 1e6:.0f} MB for 6 images"


@item
def test_killed_demo_dataset_leaves_nothing_the_next_run_keeps(work, capsys):
    root = work / "demo_killed"
    marker = work / "demo.killpoint"
    kill_when(
        f"""
        import pathlib, time
        from convmixer_tasks.run import demo
        real, calls = demo.render_image, []
        def render(*a, **k):  # a few images into the staging folder, then stop there
            calls.append(1)
            if len(calls) == 3:
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(600)
            return real(*a, **k)
        demo.render_image = render
        demo.make_demo_dataset({str(root)!r}, count=5)
        """,
        marker,
    )
    assert [p.name for p in root.iterdir() if p.name.startswith(".images.")]  # what the kill left
    (root / ".val_label.txt.abc123.tmp").write_text("half")  # as a kill inside an atomic write leaves it
    code, err = run_cli(capsys, "demo-dataset", "--output", str(root), "--count", "5")
    assert code == 0, err
    assert sorted(p.name for p in root.iterdir()) == ["demo_dataset.json", "images", "val_label.txt"]


@item
def test_skipped_and_suspicious_images_are_said_and_listed_in_the_manifest(tmp_path, capsys):
    from tests.reference_transform import reference_transform

    folder = tmp_path / "val"
    folder.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    Image.new("RGB", (40, 30)).save(folder / "ILSVRC2012_val_00000001 copy.JPEG")
    os.mkfifo(folder / "ILSVRC2012_val_00000002.JPEG")
    deep = folder / "ILSVRC2012_val_00000003.JPEG"
    Image.fromarray(np.full((30, 40), 40000, dtype=np.uint16)).save(deep, format="PNG")  # 16-bit: all above 255
    Image.new("CMYK", (30, 40)).save(folder / "ILSVRC2012_val_00000004.JPEG")
    Image.new("L", (30, 40)).save(folder / "ILSVRC2012_val_00000005.JPEG")  # grayscale is plain ImageNet
    out = tmp_path / "prep"
    argv = ["preprocess", "--image-path", str(folder), "--prep-image", str(out), "--batch-size", "2", "--workers", "1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    # One summary line each: what the folder read skipped, and what the manifest lists beside the files.
    assert "skipped 2 entries" in printed.err and "ILSVRC2012_val_00000001 copy.JPEG (not named" in printed.err
    assert f"{out / 'manifest.json'} lists 2 entries skipped from the image folder and 2 suspicious" in printed.err
    assert "ILSVRC2012_val_00000003.JPEG (mode I;16: more than 8 bits per sample: values above 255 saturate" in (
        printed.err
    )
    assert "entries_skipped" in printed.out and "images_suspicious" in printed.out  # the step's own summary
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == [
        {"entry": "ILSVRC2012_val_00000001 copy.JPEG", "reason": "not named ILSVRC2012_val_*"},
        {"entry": "ILSVRC2012_val_00000002.JPEG", "reason": "not a regular file"},
    ]
    assert [(s["image"], s["mode"], s["width"], s["height"]) for s in manifest["suspicious"]] == [
        ("ILSVRC2012_val_00000003.JPEG", "I;16", 40, 30),
        ("ILSVRC2012_val_00000004.JPEG", "CMYK", 30, 40),
    ]
    # Said, not changed: the 16-bit image's slot is still bit-identical to the reference transform.
    slots = np.fromfile(out / "input_00000.bin", dtype=np.float32).reshape(2, 3, 224, 224)
    assert slots[1].tobytes() == reference_transform(deep).tobytes()
    # A rerun writes nothing and keeps the same manifest (the lists are no reason to redo a file).
    assert cli.main(argv) == 0 and json.loads((out / "manifest.json").read_text()) == manifest
    assert "files_written 0" in " ".join(capsys.readouterr().out.split())


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width``x``height`` (its data is never decoded): a huge image in 100 bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\0" * 4))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + data + chunk(b"IEND", b"")


@item
def test_one_image_size_limit_with_a_clear_refusal_before_any_work(tmp_path, capsys):
    folder = tmp_path / "val"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(folder / "ILSVRC2012_val_00000001.JPEG")
    (folder / "ILSVRC2012_val_00000002.JPEG").write_bytes(_png_header(11000, 11000))  # PIL only warns at this size
    (folder / "ILSVRC2012_val_00000003.JPEG").write_bytes(_png_header(20000, 20000))  # PIL refuses this one itself
    out = tmp_path / "p"
    code, err = run_cli(
        capsys,
        "preprocess",
        "--image-path",
        str(folder),
        "--prep-image",
        str(out),
        "--batch-size",
        "1",
        "--workers",
        "1",
    )
    line = assert_one_clear_line(
        code,
        err,
        "preprocess",
        "2 images are above the limit of 89.5 megapixels per image",
        "ILSVRC2012_val_00000002.JPEG is 11000x11000 pixels",
        "ILSVRC2012_val_00000003.JPEG is too large for PIL to open",
    )
    assert "DecompressionBomb" not in err, line  # PIL's own warning is not a second, different limit
    assert not list(out.glob("*.bin")) and not (out / "manifest.json").exists()  # refused before any file


@item
def test_metrics_show_does_not_create_a_database(tmp_path, capsys):
    db = tmp_path / "typo.db"
    code, err = run_cli(capsys, "metrics-show", "--url", f"sqlite:///{db}")
    assert_one_clear_line(code, err, "metrics-show", str(db), "no metrics database")
    assert not db.exists()


# --- also ---------------------------------------------------------------------------------------------------------

# A stand-in for `airflow standalone` with the process layout and the signal handling of Airflow 3.3's (checked by
# hand: SIGINT to standalone alone stops everything in ~10-25 s; SIGINT to its whole group, as Ctrl-C sends, leaves
# the scheduler waiting forever on LocalExecutor workers that ignore SIGINT). standalone stops its components
# (SIGTERM) on KeyboardInterrupt only; the component exits on SIGTERM unless a SIGINT reached it first; the task
# process sits in a process group of its own, as Airflow's task supervisor puts it, and with STUBBORN=1 it ignores
# SIGINT and SIGTERM.
FAKE_COMPONENT = "; ".join(
    [
        "import signal, sys, time",
        "wedged = []",
        "signal.signal(signal.SIGINT, lambda *_: wedged.append(1))",
        "signal.signal(signal.SIGTERM, lambda *_: wedged or sys.exit(0))",
        "time.sleep(600)",
    ]
)
FAKE_STANDALONE = f"""
import os, subprocess, sys, time
assert sys.argv[1:] == ["standalone"], sys.argv
ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
component = subprocess.Popen([sys.executable, "-c", {FAKE_COMPONENT!r}, "airflow", "scheduler"])
task = subprocess.Popen([sys.executable, "-c", "import signal, time; " + ignore * (os.environ["STUBBORN"] == "1")
                         + "time.sleep(600)", "airflow", "task"], process_group=0)
print("pids", os.getpid(), component.pid, task.pid, flush=True)
try:
    while True:
        time.sleep(0.1)
except KeyboardInterrupt:
    print("shutting down components", flush=True)
for child in (component, task):
    child.terminate()
for child in (component, task):
    child.wait()
print("complete", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


@item
@pytest.mark.parametrize("case", ["clean", "stubborn task", "standalone killed first"])
def test_standalone_script_stops_everything_standalone_started(tmp_path, case):
    """scripts/standalone.sh start/stop: the SIGINT reaches standalone alone, as the KeyboardInterrupt it stops its
    components on (bash would start it ignoring SIGINT), and nothing of its session survives: not a task process in
    a group of its own that ignores signals, nor what a `kill` of standalone itself left behind (the issue's case)."""
    stubborn, killed_first = case == "stubborn task", case == "standalone killed first"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "airflow").write_text(f"#!{sys.executable}\n{FAKE_STANDALONE}")
    (bin_dir / "airflow").chmod(0o755)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "STUBBORN": str(int(stubborn)),
        "STANDALONE_STOP_TIMEOUT": "2",
    }
    script = str(REPO / "scripts" / "standalone.sh")

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([script, command], env=env, capture_output=True, text=True, timeout=60)

    log = home / "standalone.log"
    pids: list[int] = []
    try:
        assert run("start").returncode == 0
        deadline = time.monotonic() + 30
        while not pids:
            assert time.monotonic() < deadline, log.read_text()
            said = [line.split()[1:] for line in log.read_text().splitlines() if line.startswith("pids ")]
            pids = [int(pid) for pid in said[0]] if said else []
            time.sleep(0.1)
        again = run("start")  # a second start would orphan the first session
        assert again.returncode == 1 and "already running" in again.stderr and str(pids[0]) in again.stderr
        assert f"running (session {pids[0]}, 3 processes" in run("status").stdout
        if killed_first:
            os.kill(pids[0], signal.SIGTERM)  # standalone alone dies; its scheduler and task run on
            while _alive(pids[0]):
                time.sleep(0.05)
            assert all(_alive(pid) for pid in pids[1:]) and "running (session" in run("status").stdout
        stopped = run("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not [pid for pid in pids if _alive(pid)]
        if killed_first:
            assert "had exited and left 2 processes: sending SIGTERM" in stopped.stderr
        else:
            assert "shutting down components" in log.read_text()  # SIGINT arrived as KeyboardInterrupt
            assert ("complete" in log.read_text()) != stubborn  # clean: standalone saw its components exit
        assert ("forcibly" in stopped.stdout) == (stubborn or killed_first)
        assert run("status").stdout.strip() == "airflow standalone is not running"
        assert not (home / "standalone.pid").exists()
    finally:
        for pid in pids:  # only what this test started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_items_are_counted():
    print(f"\nissue 10 reliability items replayed: {len(ITEMS)}")
    assert len(ITEMS) == len(set(ITEMS)) >= 28  # a replay removed is an item no longer held
