"""The one-shot chain (`convmixer-tasks run`) on the demo set: the committed top-1 reproduced exactly, on ONNX
Runtime and on the Ascend path (through the tool doubles), and the CLI's error contract."""

from __future__ import annotations

import json
import logging

import pytest

from convmixer_tasks import cli
from convmixer_tasks.run.demo import demo_expected
from convmixer_tasks.run.local_run import local_params, run_chain
from tests.stored import stored_run
from tests.test_cli_output import COMPACT_HEADER


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """One work folder for the module: the demo set is generated into it once, the caches fill on the first run."""
    return tmp_path_factory.mktemp("work")


def test_demo_run_reproduces_the_committed_top1_at_each_batch_size(work_dir, caplog):
    expected = demo_expected()
    with caplog.at_level(logging.INFO):
        summary = run_chain(local_params(work_dir, batch_sizes=[4, 16], benchmark_loop=3), work_dir)

    # The demo set's CMYK images are the set's fact: warned once for the run, each prep folder's note is INFO.
    said = [record for record in caplog.records if "suspicious images" in record.getMessage()]
    warned = [record.getMessage() for record in said if record.levelno >= logging.WARNING]
    assert len(warned) == 1 and "image set " in warned[0] and "(mode CMYK: " in warned[0], warned
    assert sum(record.levelno == logging.INFO for record in said) == 2  # bs4's and bs16's manifests

    assert [row["batch_size"] for row in summary["rows"]] == [4, 16]
    for row in summary["rows"]:
        # 250 images: the last batch is partial at both sizes, so a counted padded slot would change these.
        assert row["image_count"] == expected["expected_image_count"] == 250
        assert row["top1"] == expected["expected_top1"]
        assert row["top5"] == expected["expected_top5"]
        assert row["backend"] == "onnxruntime" and row["throughput"] > 0
        assert row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert row["status"] == "pending"  # the CLI runs no gate, so no row claims 'ok'
    assert not any(summary["cached"].values())
    assert json.loads((work_dir / "runs").glob("*/summary.json").__next__().read_text())["rows"]


def test_second_run_reuses_prep_onnx_and_artifacts(work_dir):
    first_prep = sorted((work_dir / "cache" / "prep").rglob("input_*.bin"))
    mtimes = {path: path.stat().st_mtime_ns for path in first_prep}

    summary = run_chain(local_params(work_dir, batch_sizes=[4, 16], benchmark_loop=3), work_dir)

    assert summary["cached"] == {"preprocess": True, "export": True, "compile": True}
    assert {path: path.stat().st_mtime_ns for path in first_prep} == mtimes
    assert [row["top1"] for row in summary["rows"]] == [demo_expected()["expected_top1"]] * 2


@pytest.mark.slow
def test_ascend_path_gives_the_same_top1_as_onnxruntime(ascend_doubles, tmp_path):
    """The whole chain through ATC + ais_bench (doubles that run the OM's ONNX) scores exactly like ONNX Runtime."""
    settings = {"cann_set_env": str(ascend_doubles.set_env)}
    run = local_params(tmp_path, batch_sizes=[8], backend="ascend", benchmark_loop=2)
    summary = run_chain(run, tmp_path, backend_settings=settings)

    row = summary["rows"][0]
    assert row["backend"] == "ascend" and row["device"] == "Ascend310P3"
    assert row["top1"] == demo_expected()["expected_top1"]
    assert row["top5"] == demo_expected()["expected_top5"]
    assert row["toolkit_version"] and row["toolkit_version"] != "unknown"


def test_cli_run_maps_over_precision_modes_on_ascend(ascend_doubles, tmp_path, capsys):
    argv = [
        "-o",
        "json",
        "run",
        "--work-dir",
        str(tmp_path),
        "--backend",
        "ascend",
        "--cann-set-env",
        str(ascend_doubles.set_env),
        "--batch-size",
        "8",
        "--loop",
        "2",
        "--limit",
        "16",
        "--precision-mode",
        "force_fp16",
        "must_keep_origin_dtype",
        "--gelu-implmode",
        "none",
    ]
    assert cli.main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(row["batch_size"], row["precision_mode"]) for row in rows] == [
        (8, "force_fp16"),
        (8, "must_keep_origin_dtype"),
    ]
    assert rows[0]["artifact_sha256"] != rows[1]["artifact_sha256"]
    assert all("op_select_implmode" not in row["fingerprint"] for row in rows)  # none: no implmode flag was passed
    fp16, keep = rows
    assert keep["fidelity_min_cosine"] == pytest.approx(1.0, abs=1e-9)  # fp32 compute: the ONNX's numbers
    assert fp16["fidelity_min_cosine"] < keep["fidelity_min_cosine"]
    assert fp16["evidence"]["fidelity"]["max_abs_diff"] > 0


def test_cli_run_prints_a_table_by_default_and_the_rows_as_json_on_request(work_dir, capsys):
    argv = ["run", "--work-dir", str(work_dir), "--batch-size", "4", "--loop", "2"]
    assert cli.main(argv) == 0
    human = capsys.readouterr().out
    assert cli.main([*argv, "--output", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    row = printed["rows"][0]
    assert row["top1"] == demo_expected()["expected_top1"]
    assert not human.lstrip().startswith("{")
    header = next(line for line in human.splitlines() if line.startswith("run "))
    assert header.split() == COMPACT_HEADER
    # ONNX Runtime on the CPU: energy from RAPL where this host lets us read it, else empty with the reason why.
    if row["energy_j_per_image"] is None:
        assert row["throughput_per_watt"] is None and "RAPL" in row["energy"]["reason"]
    else:
        assert row["energy"]["source"].startswith("RAPL") and row["energy"]["samples"] >= 2
    assert row["fingerprint"]["cores_used"] >= 1 and "cpu_steal_pct" in row["fingerprint"]
    table_row = next(line for line in human.splitlines() if line.startswith("cli__"))
    assert table_row.split()[1:6] == ["4", "onnxruntime", "fp32", f"{row['top1']:.2f}", f"{row['top5']:.2f}"]
    # Issue 22: without --record nothing is gated, and the verdict column says so rather than "pending".
    assert table_row.endswith("not gated (--record)") and row["status"] == "pending"


@pytest.mark.parametrize(
    "argv, names",
    [
        (["preprocess", "--image-path", "{tmp}/missing", "--prep-image", "{tmp}/prep", "--batch-size", "4"], "missing"),
        (["export", "--target", "{tmp}/model.onnx"], "--source"),
        (
            [
                "preprocess",
                "--image-path",
                "{tmp}",
                "--prep-image",
                "{tmp}/prep",
                "--batch-size",
                "4",
                "--shard",
                "3/2",
            ],
            "3/2",
        ),
        (["compile", "--onnx", "{tmp}/none.onnx", "--batch-size", "4", "--output", "{tmp}/om"], "none.onnx"),
        (["infer", "--model", "{tmp}/none.onnx", "--input", "{tmp}", "--output", "{tmp}/out"], "none.onnx"),
        (
            ["run", "--work-dir", "{tmp}", "--precision-mode", "force_fp16", "force_fp32"],
            "precision_modes ['force_fp16', 'force_fp32'] apply to the ascend backend only",
        ),
    ],
)
def test_cli_errors_are_one_line_naming_the_problem(argv, names, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"convmixer-tasks {argv[0]}: error:") and names in err[0]
    assert not (tmp_path / "prep" / "manifest.json").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["preprocess", "--image-path", "{demo}/images", "--prep-image", "{tmp}/taken/prep", "--batch-size", "4"],
        ["demo-dataset", "--output", "{tmp}/taken/demo", "--count", "2"],
    ],
)
def test_cli_turns_an_unusable_path_into_one_line_naming_it(argv, tmp_path, capsys):
    from convmixer_tasks.run.demo import make_demo_dataset

    demo = make_demo_dataset(tmp_path / "demo", count=2)
    (tmp_path / "taken").write_text("a file where a folder must go")
    argv = [part.replace("{tmp}", str(tmp_path)).replace("{demo}", str(demo.root)) for part in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"convmixer-tasks {argv[0]}: error:") and str(tmp_path / "taken") in err[0]


def test_cli_demo_dataset_repeated_keeps_the_set_and_prints_it(tmp_path, capsys):
    argv = ["--output", "json", "demo-dataset", "--output", str(tmp_path / "d"), "--count", "3"]
    assert cli.main(argv) == 0
    image = tmp_path / "d" / "images" / "ILSVRC2012_val_00000001.JPEG"
    mtime = image.stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert image.stat().st_mtime_ns == mtime
    printed = [json.loads(chunk) for chunk in capsys.readouterr().out.replace("}\n{", "}\0{").split("\0")]
    assert printed[0] == printed[1] and printed[0]["count"] == 3 and printed[0]["seed"] == 20240601


@pytest.mark.parametrize(
    "argv, names",
    [
        (["run", "--work-dir", "{tmp}/w", "--source", "{tmp}/missing.pth"], "--source"),
        (["run", "--work-dir", "{tmp}/w", "--batch-size", "2"], "--batch-size"),
        (["benchmark", "--model", "{tmp}/missing.onnx"], "compiled model {tmp}/missing.onnx does not exist"),
    ],
)
def test_cli_errors_name_the_cli_flag_not_only_the_dag_param(argv, names, tmp_path, capsys):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names.replace("{tmp}", str(tmp_path)) in err[0]


def test_cli_choices_come_from_the_registries(capsys):
    """--backend and the dtype flags offer the registries' names (one source, as the DAG's Params do)."""
    from convmixer_tasks.backends.catalog import BACKEND_NAMES
    from convmixer_tasks.dtypes import INPUT_DTYPES

    parser = cli.build_parser()
    for backend in BACKEND_NAMES:
        assert parser.parse_args(["benchmark", "--model", "m.om", "--backend", backend]).backend == backend
    for dtype in INPUT_DTYPES:
        for argv in (
            ["preprocess", "--image-path", "i", "--prep-image", "p", "--batch-size", "4", "--dtype", dtype],
            ["compile", "--onnx", "m.onnx", "--batch-size", "4", "--output", "o", "--input-dtype", dtype],
            ["run", "--dtype", dtype],
        ):
            assert dtype in vars(parser.parse_args(argv)).values(), argv
    for argv in (["benchmark", "--model", "m.om", "--backend", "tpu"], ["run", "--dtype", "int8"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "invalid choice" in capsys.readouterr().err


def test_demo_training_is_a_cli_step():
    """`convmixer-tasks demo-train` replaces demo.py's own argument parser (`python -m convmixer_tasks.run.demo
    train`)."""
    args = cli.build_parser().parse_args(["demo-train", "--out-dir", "assets", "--epochs", "1", "--train-count", "8"])
    assert (args.command, args.out_dir, args.epochs, args.train_count) == ("demo-train", "assets", 1, 8)
    import convmixer_tasks.run.demo as demo

    assert not hasattr(demo, "main")


def test_cli_run_with_record_gates_its_rows_like_the_dag(work_dir, tmp_path, capsys):
    """The one-process run records and gates (issue: its rows used to stay pending forever)."""

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    argv = [
        "-o",
        "json",
        "run",
        "--work-dir",
        str(work_dir),
        "--batch-size",
        "4",
        "--loop",
        "3",
        "--record",
        "--url",
        url,
    ]
    assert cli.main([*argv, "--max-cv-pct", "1000"]) == 0  # any dispersion accepted: judged
    summary = json.loads(capsys.readouterr().out)
    [row] = summary["rows"]
    stored = stored_run(url, summary["run_id"], 4, "onnxruntime")
    assert stored["status"] == summary["verdicts"][0]["status"] == "ok"  # no history yet: nothing to regress against
    assert stored["throughput_check"] == "unjudged" and stored["sample_count"] == 3 and stored["warmup_count"] == 5
    assert stored["fingerprint_key"] == row["fingerprint_key"] and stored["fingerprint"]["backend"] == "onnxruntime"
    assert row == stored  # the printed rows are the stored ones, verdict included (they once said 'pending')

    # No real timing has a CV under 0.001 %: re-measured twice, then inconclusive, and the run does not fail.
    assert cli.main([*argv, "--max-cv-pct", "0.001", "--remeasure", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    stored = stored_run(url, summary["run_id"], 4, "onnxruntime")
    assert stored["status"] == "inconclusive" and stored["measurements"] == 3 and stored["throughput_check"] == "noisy"
