"""The Ascend tool doubles behave as the spec says the real tools do (tests/doubles/README.md), failures included.

These run the doubles directly; tests/test_backend_ascend.py drives them through the backend.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ascend_doubles import run_double, write_tiny_onnx

SIZE = 3 * 224 * 224


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def atc(
    onnx_path: Path, out_base: Path, *extra: str, shape: str = "image:2,3,224,224", env=None, soc: str = "Ascend310P3"
):
    args = [
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={out_base}",
        "--input_format=NCHW",
        f"--input_shape={shape}",
        f"--soc_version={soc}",
        "--log=error",
        *extra,
    ]
    return run_double("atc", *[a for a in args if a is not None], env=env)


@pytest.fixture(scope="module")
def om_bs2(tiny_onnx, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("om") / "tiny_bs2"
    proc = atc(tiny_onnx, base, "--precision_mode=must_keep_origin_dtype")  # fp32: outputs compared with the ONNX
    assert proc.returncode == 0, proc.stdout
    return base.with_suffix(".om")


def write_images(folder: Path, count: int, per_file: int = 1, seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for index in range(count):
        data = rng.standard_normal((per_file, 3, 224, 224)).astype(np.float32)
        data.tofile(folder / f"input_{index}.bin")
        arrays.append(data)
    return arrays


def reference(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


# --- atc -----------------------------------------------------------------------------------------------------------


def test_atc_success_prints_banner_warning_and_success_line_and_writes_om(tiny_onnx, tmp_path):
    proc = atc(tiny_onnx, tmp_path / "m", "--op_select_implmode=high_performance", "--optypelist_for_implmode=Gelu")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0
    assert lines[0] == "ATC start working now, please wait for a moment."
    assert lines[-1] == "ATC run success, welcome to the next use."
    assert any(re.match(r"^W11001: ", line) for line in lines)
    blob = (tmp_path / "m.om").read_bytes()
    assert blob.startswith(b"OMDOUBLE")
    meta = json.loads(blob[12 : 12 + int.from_bytes(blob[8:12], "little")])
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": [2, 3, 224, 224], "format": "NCHW"}]
    assert meta["soc_version"] == "Ascend310P3"


def test_atc_wrong_input_name_is_e10001_and_writes_nothing(tiny_onnx, tmp_path):
    proc = atc(tiny_onnx, tmp_path / "m", shape="input1:2,3,224,224")
    assert proc.returncode != 0
    assert "ATC run failed" in proc.stdout
    assert re.search(r"^E10001: Value \[input1\] for parameter \[--input_shape\] is invalid", proc.stdout, re.M)
    assert not (tmp_path / "m.om").exists()


@pytest.mark.parametrize(
    "drop, code",
    [("--framework", "E10007"), ("--output", "E10004"), ("--soc_version", "E10004"), ("--model", "E10004")],
)
def test_atc_missing_required_flag_fails_with_its_code(tiny_onnx, tmp_path, drop, code):
    args = [
        "--framework=5",
        f"--model={tiny_onnx}",
        f"--output={tmp_path / 'm'}",
        "--input_shape=image:1,3,224,224",
        "--soc_version=Ascend310P3",
    ]
    proc = run_double("atc", *[a for a in args if not a.startswith(drop + "=")])
    assert proc.returncode != 0
    assert re.search(rf"^{code}: .*{drop}", proc.stdout, re.M)
    assert not list(tmp_path.glob("*.om"))


@pytest.mark.parametrize("soc", ["Ascend310310P3", "310P3", "Ascend910C9"])
def test_atc_unknown_soc_version_is_an_e_code(tiny_onnx, tmp_path, soc):
    proc = atc(tiny_onnx, tmp_path / "m", soc=soc)
    assert proc.returncode != 0
    assert re.search(rf"^E10001: Value \[{soc}\] for parameter \[--soc_version\]", proc.stdout, re.M)


def test_atc_rejects_flag_without_equals_and_optypelist_alone(tiny_onnx, tmp_path):
    proc = run_double("atc", "--framework", "5", f"--model={tiny_onnx}")
    assert proc.returncode != 0 and "E10004: Value for --framework is empty." in proc.stdout
    proc = atc(tiny_onnx, tmp_path / "m", "--optypelist_for_implmode=Gelu")
    assert proc.returncode != 0 and "--optypelist_for_implmode" in proc.stdout


@pytest.mark.parametrize(
    "implmode, ok",
    [
        ("high_performance", True),
        ("high_precision", True),
        ("high_performance_for_all", False),
        ("high_precision_for_all", False),
    ],
)
def test_atc_optypelist_pairs_only_with_the_two_plain_implmodes(tiny_onnx, tmp_path, implmode, ok):
    proc = atc(tiny_onnx, tmp_path / "m", f"--op_select_implmode={implmode}", "--optypelist_for_implmode=Gelu")
    assert (proc.returncode == 0) is ok, proc.stdout
    if not ok:
        assert re.search(r"^E10001: Value \[Gelu\] for parameter \[--optypelist_for_implmode\]", proc.stdout, re.M)


def test_atc_fail_mode_leaves_partial_om_and_writes_plog(tiny_onnx, tmp_path):
    logs = tmp_path / "logs"
    proc = atc(tiny_onnx, tmp_path / "m", env={"ATC_DOUBLE_MODE": "fail", "ASCEND_PROCESS_LOG_PATH": str(logs)})
    assert proc.returncode == 1
    assert "ATC run success" not in proc.stdout
    assert re.search(r"^EZ3003: ", proc.stdout, re.M)
    assert (tmp_path / "m.om").exists()  # the real tool can leave one too: callers must remove it
    plogs = list((logs / "debug" / "plog").glob("plog-*_*.log"))
    assert plogs and "EZ3003" in plogs[0].read_text()


def test_atc_no_success_line_mode_exits_zero_silently(tiny_onnx, tmp_path):
    proc = atc(tiny_onnx, tmp_path / "m", env={"ATC_DOUBLE_MODE": "no_success_line"})
    assert proc.returncode == 0
    assert "ATC run success" not in proc.stdout
    assert (tmp_path / "m.om").exists()


def test_atc_aipp_makes_the_om_input_uint8_nhwc(tiny_onnx, tmp_path):
    cfg = tmp_path / "aipp.cfg"
    cfg.write_text(
        "aipp_op {\n aipp_mode: static\n input_format: RGB888_U8\n src_image_size_w: 224\n"
        " src_image_size_h: 224\n min_chn_0: 10\n var_reci_chn_0: 0.5\n}\n"
    )
    proc = atc(tiny_onnx, tmp_path / "m", f"--insert_op_conf={cfg}")
    assert proc.returncode == 0, proc.stdout
    blob = (tmp_path / "m.om").read_bytes()
    meta = json.loads(blob[12 : 12 + int.from_bytes(blob[8:12], "little")])
    assert meta["inputs"][0]["dtype"] == "uint8" and meta["inputs"][0]["shape"] == [2, 224, 224, 3]
    cfg.write_text(cfg.read_text().replace("224\n src_image_size_h", "100\n src_image_size_h"))
    assert atc(tiny_onnx, tmp_path / "m2", f"--insert_op_conf={cfg}").returncode != 0


# --- npu-smi -------------------------------------------------------------------------------------------------------


def test_npu_smi_prints_the_spec_table_with_selectable_chip_and_health():
    default = run_double("npu-smi", "info")
    assert default.returncode == 0
    rows = [line for line in default.stdout.splitlines() if re.match(r"^\|\s*\d+\s+\d{3}\w*\s+\|", line)]
    assert rows[0].split("|")[1].split() == ["0", "310P3"] and rows[0].split("|")[2].strip() == "OK"
    b3 = run_double("npu-smi", "info", env={"NPU_SMI_DOUBLE_CHIP": "910B3", "NPU_SMI_DOUBLE_MODE": "unhealthy_first"})
    assert re.search(r"^\| 0\s+910B3\s+\| Critical", b3.stdout, re.M)
    assert re.search(r"^\| 1\s+910B3\s+\| OK", b3.stdout, re.M)
    assert "Ascend 910B3" in run_double("npu-smi", "info", "-m", env={"NPU_SMI_DOUBLE_CHIP": "910B3"}).stdout
    busy = run_double("npu-smi", "info", env={"NPU_SMI_DOUBLE_MODE": "busy"})
    assert re.search(r"^\| 0\s+0\s+\| 48213", busy.stdout, re.M)  # a process row that looks like an NPU row
    broken = run_double("npu-smi", "info", env={"NPU_SMI_DOUBLE_MODE": "driver_error"})
    assert broken.returncode != 0 and "dcmi" in broken.stdout


KV = re.compile(r"^\t(\S.{29}) : (.*)$")  # the driver's "\t%-30s : %s" lines


def kv_lines(text: str) -> list[tuple[str, str]]:
    lines = [line for line in text.splitlines() if line]
    matches = [KV.match(line) for line in lines]
    assert all(matches), text
    return [(m.group(1).rstrip(), m.group(2)) for m in matches if m]


@pytest.mark.parametrize(
    "chip, label, default",
    [
        ("310P3", "Power Dissipation(W)", "15.8"),  # a 310P card's reading comes from its MCU
        ("910B3", "NPU Real-time Power(W)", "93.6"),
    ],
)
def test_npu_smi_power_lines_per_chip_family(chip, label, default):
    card = run_double("npu-smi", "info", "-t", "power", "-i", "1", env={"NPU_SMI_DOUBLE_CHIP": chip})
    assert card.returncode == 0
    assert kv_lines(card.stdout) == [("NPU ID", "1"), ("Chip Count", "1"), (label, default), ("Chip ID", "0")]
    chip_level = run_double("npu-smi", "info", "-t", "power", "-i", "0", "-c", "0", env={"NPU_SMI_DOUBLE_CHIP": chip})
    if chip == "310P3":  # the 310P NPU chip has no power reading of its own
        assert chip_level.returncode == 193 and chip_level.stdout == "Failed to execute npu-smi info. ret is -8255.\n"
    else:
        assert kv_lines(chip_level.stdout) == [(label, default)]


def test_npu_smi_power_trace_na_unsupported_and_bad_id(tmp_path):
    trace = tmp_path / "trace.txt"
    trace.write_text("12\n14.25\n")
    played = [
        run_double("npu-smi", "info", "-t", "power", "-i", "0", env={"NPU_SMI_DOUBLE_POWER_TRACE": str(trace)})
        for _ in range(3)
    ]
    assert [kv_lines(run.stdout)[2][1] for run in played] == ["12.0", "14.2", "14.2"]  # %.1f; the last one stays
    na = run_double("npu-smi", "info", "-t", "power", "-i", "0", env={"NPU_SMI_DOUBLE_POWER": "na"})
    assert na.returncode == 0 and ("Power Dissipation(W)", "NA") in kv_lines(na.stdout)
    off = run_double("npu-smi", "info", "-t", "power", "-i", "0", env={"NPU_SMI_DOUBLE_POWER": "unsupported"})
    assert off.returncode == 193 and "ret is -8255" in off.stdout
    bad = run_double("npu-smi", "info", "-t", "power", "-i", "7")
    assert bad.returncode == (-8010 & 0xFF) and "ret is -8010" in bad.stdout


def test_npu_smi_usages_idle_and_busy_and_version():
    idle = dict(kv_lines(run_double("npu-smi", "info", "-t", "usages", "-i", "0", "-c", "0").stdout))
    assert idle["Aicore Usage Rate(%)"] == "0" and "Vectorcore Usage Rate(%)" in idle and "HBM Capacity(MB)" not in idle
    busy = run_double(
        "npu-smi",
        "info",
        "-t",
        "usages",
        "-i",
        "0",
        env={"NPU_SMI_DOUBLE_MODE": "busy", "NPU_SMI_DOUBLE_CHIP": "910B3"},
    )
    values = kv_lines(busy.stdout)
    assert values[:2] == [("NPU ID", "0"), ("Chip Count", "1")] and values[-1] == ("Chip ID", "0")
    assert ("Aicore Usage Rate(%)", "87") in values and ("HBM Capacity(MB)", "65536") in values
    other = dict(
        kv_lines(
            run_double(
                "npu-smi", "info", "-t", "usages", "-i", "1", "-c", "0", env={"NPU_SMI_DOUBLE_MODE": "busy"}
            ).stdout
        )
    )
    assert other["Aicore Usage Rate(%)"] == "0"  # only NPU 0 is busy
    env = {"NPU_SMI_DOUBLE_DRIVER_VERSION": "24.1.rc2"}
    assert run_double("npu-smi", "-v", env=env).stdout == "npu-smi version: 24.1.rc2\n"
    header = r"^\| npu-smi 24\.1\.rc2\s+Version: 24\.1\.rc2\s+\|$"
    assert re.search(header, run_double("npu-smi", "info", env=env).stdout, re.M)


# --- ais_bench -----------------------------------------------------------------------------------------------------


def test_ais_bench_batches_per_image_files_pads_last_batch_and_saves_real_slots_only(om_bs2, tiny_onnx, tmp_path):
    images = write_images(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "out"),
        "--output_dirname",
        "r",
        "--outfmt",
        "BIN",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "out" / "r"
    assert f"[INFO] output path:{out}" in proc.stdout
    assert sorted(os.listdir(out)) == ["input_0_0.bin", "input_1_0.bin", "input_2_0.bin"]
    expected = reference(tiny_onnx, np.concatenate(images))
    for index in range(3):
        got = np.fromfile(out / f"input_{index}_0.bin", dtype=np.float32).reshape(1, -1)
        np.testing.assert_allclose(got, expected[index : index + 1], rtol=1e-5, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "r_summary.json").read_text())
    assert sorted(summary["filesinfo"]) == ["0", "1", "2"]
    assert summary["NPU_compute_time"]["count"] == 2  # two runs: [0,1] and [2, padding]
    assert len(summary["npu_compute_time_list"]) == 2
    assert "\rloop inference exec: (2/2)" in proc.stdout


def test_ais_bench_folder_order_is_natural_and_name_stops_at_first_dot(om_bs2, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("b10.x.bin", "b2.bin", "B3.NPY"):
        data = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
        if name.endswith(".NPY"):
            with open(folder / name, "wb") as handle:  # np.save(path) would append ".npy"
                np.save(handle, data)
        else:
            data.tofile(folder / name)
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--input",
        str(folder),
        "--output",
        str(tmp_path / "o"),
        "--output_dirname",
        "r",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "o" / "r_summary.json").read_text())
    order = [Path(summary["filesinfo"][str(i)]["infiles"][0]).name for i in range(3)]
    assert order == ["b2.bin", "B3.NPY", "b10.x.bin"]
    assert sorted(os.listdir(tmp_path / "o" / "r")) == ["B3_0.bin", "b10_0.bin", "b2_0.bin"]


def test_ais_bench_size_mismatch_is_error_on_stdout_and_traceback(om_bs2, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    np.zeros((1, 224, 224, 3), np.uint8).tofile(folder / "input_00000.bin")  # 150528 B: 1204224 % 150528 == 0!
    np.zeros(1000, np.uint8).tofile(folder / "input_00001.bin")
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--input",
        str(folder / "input_00001.bin"),
        "--output",
        str(tmp_path / "o"),
        "--output_dirname",
        "r",
    )
    assert proc.returncode == 1
    assert f"[ERROR] arg0 tensorsize: {2 * SIZE * 4} filesize: 1000 not match" in proc.stdout
    assert "Traceback" in proc.stderr
    # A uint8 image file divides a float32 model's size: ais_bench batches 8 of them without complaint.
    ok = run_double("ais_bench", "--model", str(om_bs2), "--input", str(folder / "input_00000.bin"))
    assert ok.returncode == 0 and "filesperbatch:8" in ok.stdout


@pytest.mark.parametrize("generation, inside", [("up", False), ("t23", False), ("old", True)])
def test_ais_bench_summary_location_per_generation(om_bs2, tmp_path, generation, inside):
    write_images(tmp_path / "in", 2, per_file=2)
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
        "--output_dirname",
        "r",
        env={"AIS_BENCH_DOUBLE_GEN": generation},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "o" / "r" / "sumary.json").is_file() is inside
    assert (tmp_path / "o" / "r_summary.json").is_file() is not inside
    data = json.loads(
        ((tmp_path / "o" / "r" / "sumary.json") if inside else (tmp_path / "o" / "r_summary.json")).read_text()
    )
    assert ("npu_compute_time_list" in data) is not inside


@pytest.mark.parametrize(
    "style, pattern",
    [
        ("current", r"^\[INFO\] throughput 1000\*batchsize\.mean\(2\.0\)/NPU_compute_time\.mean\(4\.0\): 500\.0$"),
        ("pre_2022_07", r"^\[INFO\] throughput \(1000\*batchsize/NPU_compute_time\): 500\.0$"),
        ("mid_2022", r"^\[INFO\] throughput 1000\*batchsize\(2\)/NPU_compute_time\.mean\(4\.0\): 500\.0$"),
        ("fork", r"^\[INFO\] Throughput 1000\*batchsize\.mean\(2\.0\)/NPU_compute_time\.mean\(4\.0\): 500\.0$"),
        ("multi", r"^\[INFO\] summary throughput:500\.0$"),
    ],
)
def test_ais_bench_throughput_line_formats(om_bs2, style, pattern):
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--loop",
        "3",
        "--batchsize",
        "2",
        env={"AIS_BENCH_DOUBLE_THROUGHPUT": style, "AIS_BENCH_DOUBLE_FIXED_MS": "4.0"},
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(pattern, proc.stdout.replace("\r", "\n"), re.M)
    assert "NPU_compute_time (ms): min = 4.0, max = 4.0, mean = 4.0, median = 4.0, percentile(99%) = 4.0" in proc.stdout


def test_ais_bench_sleep_option_spends_its_wall_time_inside_every_timed_batch(om_bs2):
    # The sleep sits inside the timed window, so each measured batch is at least its length; the process start
    # (imports on a busy host) cannot pass for it, and no upper bound is asserted.
    proc = run_double(
        "ais_bench", "--model", str(om_bs2), "--loop", "3", "--batchsize", "2", env={"AIS_BENCH_DOUBLE_SLEEP_MS": "250"}
    )
    assert proc.returncode == 0, proc.stderr
    (minimum,) = re.findall(r"NPU_compute_time \(ms\): min = ([0-9.]+)", proc.stdout)
    assert float(minimum) >= 250.0, proc.stdout


def test_ais_bench_output_folder_mode_rule_in_new_generation(om_bs2, tmp_path):
    parent = tmp_path / "wide"
    parent.mkdir()
    os.chmod(parent, 0o755)
    args = ["--model", str(om_bs2), "--output", str(parent), "--output_dirname", "r"]
    refused = run_double("ais_bench", *args)
    assert refused.returncode == 1 and "[ERROR] output path:" in refused.stdout and "0o750" in refused.stdout
    assert run_double("ais_bench", *args, env={"AIS_BENCH_DOUBLE_GEN": "t23"}).returncode == 0
    os.chmod(parent, 0o750)
    assert run_double("ais_bench", *args).returncode == 0


def test_ais_bench_new_generation_checks_characters_of_an_output_it_would_create(om_bs2, tmp_path):
    args = ["--model", str(om_bs2), "--output", str(tmp_path / "run:1+x"), "--output_dirname", "r"]
    refused = run_double("ais_bench", *args)
    assert refused.returncode == 1 and "contains invalid characters" in refused.stdout
    assert not (tmp_path / "run:1+x").exists()
    assert run_double("ais_bench", *args, env={"AIS_BENCH_DOUBLE_GEN": "t23"}).returncode == 0


def test_ais_bench_new_generation_refuses_symlinked_inputs(om_bs2, tmp_path):
    write_images(tmp_path / "real", 1, per_file=2)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "input_0.bin").symlink_to(tmp_path / "real" / "input_0.bin")
    proc = run_double("ais_bench", "--model", str(om_bs2), "--input", str(tmp_path / "links"))
    assert proc.returncode == 1 and "soft link" in proc.stdout
    assert (
        run_double(
            "ais_bench", "--model", str(om_bs2), "--input", str(tmp_path / "links"), env={"AIS_BENCH_DOUBLE_GEN": "t23"}
        ).returncode
        == 0
    )


def test_ais_bench_output_without_dirname_uses_a_timestamp_folder(om_bs2, tmp_path):
    proc = run_double("ais_bench", "--model", str(om_bs2), "--output", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout
    (folder,) = [p for p in (tmp_path / "o").iterdir() if p.is_dir()]
    assert re.fullmatch(r"\d{4}_\d{2}_\d{2}-\d{2}_\d{2}_\d{2}", folder.name)
    assert (folder / "pure_infer_data_0.bin").is_file()
    assert (tmp_path / "o" / f"{folder.name}_summary.json").is_file()
    assert run_double("ais_bench", "--model", str(om_bs2), "--output_dirname", "x").returncode == 1


def test_ais_bench_crash_mode_is_a_traceback_after_partial_outputs(om_bs2, tmp_path):
    write_images(tmp_path / "in", 2, per_file=2)
    proc = run_double(
        "ais_bench",
        "--model",
        str(om_bs2),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
        "--output_dirname",
        "r",
        env={"AIS_BENCH_DOUBLE_MODE": "crash"},
    )
    assert proc.returncode == 1
    assert "[ERROR] aclmdlExecute failed" in proc.stdout and "Traceback" in proc.stderr
    assert os.listdir(tmp_path / "o" / "r") == ["input_0_0.bin"]  # half-written, as a crash leaves it
    assert not (tmp_path / "o" / "r_summary.json").exists()


def test_ais_bench_sleep_ms_holds_each_batch_for_that_long(om_bs2, tmp_path):
    write_images(tmp_path / "in", 3)  # two batches of 2: [0, 1] and [2, padding]
    argv = ["--model", str(om_bs2), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    started = time.monotonic()
    proc = run_double("ais_bench", *argv, "--output_dirname", "r", env={"AIS_BENCH_DOUBLE_SLEEP_MS": "700"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started >= 2 * 0.7  # a lower bound: a busy host only adds to it
    assert sorted(os.listdir(tmp_path / "o" / "r")) == ["input_0_0.bin", "input_1_0.bin", "input_2_0.bin"]


def test_ais_bench_applies_aipp_to_uint8_input(tiny_onnx, tmp_path):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    lines = [
        "aipp_op {",
        "aipp_mode: static",
        "input_format: RGB888_U8",
        "src_image_size_w: 224",
        "src_image_size_h: 224",
    ]
    lines += [f"min_chn_{c}: {float(255 * mean[c])!r}" for c in range(3)]
    lines += [f"var_reci_chn_{c}: {float(1 / (255 * std[c]))!r}" for c in range(3)] + ["}"]
    (tmp_path / "aipp.cfg").write_text("\n".join(lines))
    assert (
        atc(
            tiny_onnx,
            tmp_path / "u8",
            f"--insert_op_conf={tmp_path / 'aipp.cfg'}",
            "--precision_mode=must_keep_origin_dtype",
        ).returncode
        == 0
    )  # fp32: compared with the ONNX
    pixels = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    pixels.tofile(tmp_path / "in" / "input_00000.bin")
    proc = run_double(
        "ais_bench",
        "--model",
        str(tmp_path / "u8.om"),
        "--input",
        str(tmp_path / "in"),
        "--output",
        str(tmp_path / "o"),
        "--output_dirname",
        "r",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    normalised = ((pixels / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    got = np.fromfile(tmp_path / "o" / "r" / "input_00000_0.bin", dtype=np.float32).reshape(2, -1)
    np.testing.assert_allclose(got, reference(tiny_onnx, normalised), rtol=1e-4, atol=1e-4)


def test_ais_bench_bad_flag_and_bad_device(om_bs2):
    assert run_double("ais_bench", "--model", str(om_bs2), "--bogus", "1").returncode == 2
    bad_device = run_double("ais_bench", "--model", str(om_bs2), "--device", "5")
    assert bad_device.returncode == 1 and "[ERROR] acl open device 5 failed" in bad_device.stdout
