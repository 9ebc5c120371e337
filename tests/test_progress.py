"""Progress of long steps: the cadence rule (every ~5 % or ~30 s, whichever comes later) on a fake clock, then the
real steps — ONNX Runtime inference, the 1536/20 export, ais_bench's counter relayed through the Ascend double —
with their log captured. Real steps finish in seconds here, so those tests shorten the module's interval; the
default interval is kept where the point is that a quick step logs nothing.
"""

from __future__ import annotations

import logging
import re

import pytest

from convmixer_tasks import progress
from convmixer_tasks.backends.aisbench_progress import AisBenchProgress
from convmixer_tasks.progress import Progress
from tests.ascend_doubles import write_tiny_onnx


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(what)]


def counts(got: list[str]) -> list[str]:
    """The ``done/total`` of each progress line."""
    found = [re.search(r": (\d+/\d+) ", line) for line in got]
    assert all(found), got
    return [match.group(1) for match in found if match]


def run_counted(caplog, total: int, seconds_each: float) -> list[str]:
    clock = Clock()
    with (
        caplog.at_level(logging.INFO, logger="convmixer_tasks.progress"),
        Progress("job", total, "images", clock=clock, bar=False) as job,
    ):
        for _ in range(total):
            clock.now += seconds_each
            job.update()
    return lines(caplog, "job:")


def test_time_rule_wins_when_5_percent_comes_quickly(caplog):
    # 100 images at 1 s each: 5 % takes 5 s, so the 30 s rule decides: lines at 30, 60, 90 and the final 100.
    got = run_counted(caplog, 100, 1.0)
    assert counts(got) == ["30/100", "60/100", "90/100", "100/100"]
    assert got[0] == "job: 30/100 images (30%), 1.00 images/s, elapsed 30s, ETA 1m10s"


def test_fraction_rule_wins_when_5_percent_takes_longer_than_30_s(caplog):
    # 200 images at 10 s each: 30 s is 3 images, 5 % is 10, so a line every 10 images (20 lines, the last at 200).
    got = run_counted(caplog, 200, 10.0)
    assert len(got) == 20 and got[0].startswith("job: 10/200 images (5%), 0.10 images/s, elapsed 1m40s, ETA 31m40s")
    assert got[-1].startswith("job: 200/200 images (100%)") and got[-1].endswith("ETA 0s")


def test_a_step_under_the_threshold_logs_nothing(caplog):
    assert run_counted(caplog, 1000, 0.02) == []  # 20 s in all


def test_a_failed_step_does_not_claim_to_have_finished(caplog):
    clock = Clock()
    with (
        caplog.at_level(logging.INFO),
        pytest.raises(RuntimeError),
        Progress("job", 100, clock=clock, bar=False) as job,
    ):
        for _ in range(40):
            clock.now += 1.0
            job.update()
        raise RuntimeError("boom")
    assert counts(lines(caplog, "job:")) == ["30/100"]


def test_a_terminal_gets_a_bar_and_the_log_no_lines(caplog, capsys):
    clock = Clock()
    with caplog.at_level(logging.INFO), Progress("job", 10, clock=clock, bar=True) as job:
        for _ in range(10):
            clock.now += 60.0
            job.update()
    assert lines(caplog, "job:") == []
    assert "10/10" in capsys.readouterr().err  # tqdm's bar


def test_working_beats_while_the_work_runs_and_stays_silent_when_quick(caplog):
    import time

    with caplog.at_level(logging.INFO), progress.working("slow thing", every_seconds=0.05):
        time.sleep(0.3)
    with progress.working("quick thing", every_seconds=30):
        pass
    slow = lines(caplog, "slow thing:")
    assert len(slow) >= 3 and slow[0] == "slow thing: running for 0s" and slow[-1].startswith("slow thing: done in")
    assert lines(caplog, "quick thing") == []


def test_ais_bench_counter_is_relayed_even_when_split_across_reads(caplog, monkeypatch):
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    relay = AisBenchProgress("ais_bench inference")
    stream = "".join(f"\rloop inference exec: ({i}/40)" for i in range(1, 41)) + "\n[INFO] throughput ...\n"
    with caplog.at_level(logging.INFO):
        for start in range(0, len(stream), 7):  # 7-character reads cut most counters in two
            relay.feed(stream[start : start + 7])
        relay.close()
    got = lines(caplog, "ais_bench inference:")
    assert counts(got) == [f"{i}/40" for i in range(2, 41, 2)]  # every 5 % = 2 runs
    assert "batch runs" in got[0] and "\r" not in "".join(got)


# --- the real steps ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_setup(tmp_path_factory):
    from convmixer_tasks.backends.onnxruntime import OnnxRuntimeBackend
    from convmixer_tasks.run.demo import make_demo_dataset
    from convmixer_tasks.stages.export import export_and_validate
    from convmixer_tasks.stages.preprocess import preprocess

    work = tmp_path_factory.mktemp("progress")
    demo = make_demo_dataset(work / "demo", count=40)
    prep = preprocess(demo.image_dir, work / "prep", batch_size=2, workers=1).out_dir
    onnx = export_and_validate(None, work / "demo.onnx", variant="convmixer_demo", parity_batch=1).onnx_path
    backend = OnnxRuntimeBackend(threads=1)
    return backend, backend.compile(onnx, 2, work / "cache"), prep, work


def test_onnxruntime_inference_logs_progress_over_enough_images(ort_setup, caplog, monkeypatch):
    backend, artifact, prep, work = ort_setup
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)  # 40 images take well under 30 s here
    with caplog.at_level(logging.INFO):
        backend.infer(artifact, prep, work / "out_progress")
    got = lines(caplog, "ONNX Runtime inference (batch 2):")
    assert counts(got) == [f"{i}/40" for i in range(2, 41, 2)]
    assert all(" images/s, elapsed " in line and ", ETA " in line for line in got)


def test_onnxruntime_inference_and_benchmark_under_the_threshold_log_nothing(ort_setup, caplog):
    backend, artifact, prep, work = ort_setup
    with caplog.at_level(logging.INFO):
        backend.infer(artifact, prep, work / "out_quiet")
        backend.benchmark(artifact, loop=5, warmup=1)
    assert [r for r in caplog.records if r.name == "convmixer_tasks.progress"] == []


def test_onnxruntime_benchmark_counts_warmup_and_loops(ort_setup, caplog, monkeypatch):
    backend, artifact, _, _ = ort_setup
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    with caplog.at_level(logging.INFO):
        backend.benchmark(artifact, loop=18, warmup=2)
    got = lines(caplog, "ONNX Runtime benchmark (batch 2):")
    assert counts(got)[0] == "1/20" and counts(got)[-1] == "20/20" and "runs/s" in got[-1]


def test_ascend_infer_relays_the_ais_bench_counter(ascend_doubles, ort_setup, caplog, monkeypatch, tmp_path):
    _, _, prep, _ = ort_setup
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    backend = ascend_doubles.backend()
    artifact = backend.compile(write_tiny_onnx(tmp_path / "tiny.onnx", input_name="input1"), 2, tmp_path / "cache")
    with caplog.at_level(logging.INFO):
        backend.infer(artifact, prep, tmp_path / "work" / "out")
    got = lines(caplog, "ais_bench inference (batch 2):")
    done = [int(count.split("/")[0]) for count in counts(got)]
    # 40 images in 20 batch runs; one pipe read may carry several counters, so lines <= 20 but in order to the end.
    assert done[-1] == 20 and done == sorted(set(done)) and all(c.endswith("/20") for c in counts(got))


def test_ascend_benchmark_relays_the_counter_and_atc_compile_reports_while_it_runs(
    ascend_doubles, caplog, monkeypatch, tmp_path
):
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    backend = ascend_doubles.backend()
    with caplog.at_level(logging.INFO):
        # A zero interval makes the heartbeat thread log as fast as it can while the atc double runs.
        artifact = backend.compile(write_tiny_onnx(tmp_path / "t.onnx", input_name="input1"), 2, tmp_path / "cache")
        backend.benchmark(artifact, loop=10, warmup=1)
    atc = lines(caplog, "ATC compile of t.onnx at batch 2 for Ascend")
    assert atc and "running for" in atc[0] and "done in" in atc[-1]
    assert counts(lines(caplog, "ais_bench benchmark (batch 2):"))[-1] == "10/10"


def test_onnxruntime_compile_reports_while_it_runs(ort_setup, caplog, monkeypatch, tmp_path):
    backend, _artifact, _, work = ort_setup
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    with caplog.at_level(logging.INFO):
        backend.compile(work / "demo.onnx", 3, tmp_path / "cache")  # a new batch size: a cache miss
    got = lines(caplog, "ONNX Runtime compile of demo.onnx at batch 3:")
    assert got and got[0].startswith("ONNX Runtime compile of demo.onnx at batch 3: running for")


@pytest.mark.slow
def test_1536_20_export_reports_its_stages_while_it_runs(tmp_path, caplog, monkeypatch):
    from convmixer_tasks.stages.export import export_and_validate

    monkeypatch.setattr(progress, "EVERY_SECONDS", 1.0)  # minutes on a worker; seconds on a fast host
    with caplog.at_level(logging.INFO):
        export_and_validate(None, tmp_path / "convmixer_1536_20.onnx", variant="convmixer_1536_20", parity_batch=1)
    step1 = lines(caplog, "export of convmixer_1536_20, step 1/2 (torch.onnx.export):")
    assert (
        step1
        and step1[0].endswith("running for 1s")
        and step1[-1].startswith("export of convmixer_1536_20, step 1/2 (torch.onnx.export): done in")
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_preprocess_reports_through_progress_with_rate_and_eta(ort_setup, caplog, monkeypatch, workers):
    """Issue 22: preprocess had its own 20 lines per run, with no ETA and no bar; it now uses ``Progress``."""
    from convmixer_tasks.stages.preprocess import preprocess

    _, _, _, work = ort_setup
    images = work / "prep_images"
    if not images.exists():
        from convmixer_tasks.run.demo import make_demo_dataset

        make_demo_dataset(images, count=12)
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)
    with caplog.at_level(logging.INFO):
        preprocess(images / "images", work / f"prep_progress_{workers}", 2, workers=workers)
    got = lines(caplog, "preprocess (6 files of 2):")
    assert counts(got)[-1] == "12/12" and len(got) <= 1 / progress.EVERY_FRACTION + 1
    assert all(" images/s, elapsed " in line and ", ETA " in line for line in got)
    assert not [r for r in caplog.records if "files written (~" in r.getMessage()]
