"""ais_bench output layout: file naming, summary JSON of both generations, stats keys, stdout performance lines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convmixer_tasks.errors import BackendError, EvalError
from convmixer_tasks.stages import aisbench_format as fmt


@pytest.mark.parametrize(
    ("input_name", "index", "outfmt", "expected"),
    [
        ("input_00000.bin", 0, "bin", "input_00000_0.bin"),
        ("/data/prep/input_00012.bin", 0, "BIN", "input_00012_0.bin"),
        ("prep/a.1.bin", 2, "NPY", "a_2.npy"),  # stops at the FIRST dot, like ais_bench (a.1 and a.2 collide)
        ("prep/a.2.bin", 2, "txt", "a_2.txt"),
        ("noext", 1, "bin", "noext_1.bin"),
    ],
)
def test_output_name_cuts_at_first_dot(input_name, index, outfmt, expected):
    assert fmt.output_name(input_name, index, outfmt) == expected


def test_summary_path_is_a_sibling(tmp_path):
    assert fmt.summary_path(tmp_path / "out") == tmp_path / "out_summary.json"
    assert fmt.summary_path(f"{tmp_path}/out/") == tmp_path / "out_summary.json"


def test_stats_keys_and_values():
    times = [float(v) for v in range(1, 101)]  # 1..100 ms
    result = fmt.stats(times)
    assert list(result) == ["min", "max", "mean", "median", "percentile(99%)", "count"]
    assert result["min"] == 1.0 and result["max"] == 100.0 and result["count"] == 100
    assert result["mean"] == pytest.approx(50.5) and result["median"] == pytest.approx(50.5)
    # numpy's linear interpolation: position 0.99 * 99 = 98.01 between 99 and 100
    assert result["percentile(99%)"] == pytest.approx(99.01)
    assert fmt.stats([]) == {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}


def test_throughput_formula():
    assert fmt.throughput(4, 2.0) == pytest.approx(2000.0)
    assert fmt.throughput(16, 0.0) == 0.0  # ais_bench reports 0 rather than dividing by zero
    assert fmt.THROUGHPUT_FORMULA == "1000*batchsize/NPU_compute_time.mean"


def test_write_then_read_new_generation(tmp_path):
    out_dir = tmp_path / "outputs" / "run1"
    out_dir.mkdir(parents=True)
    filesinfo: dict[int | str, dict[str, list[str]]]
    filesinfo = {
        0: {"infiles": ["prep/input_00000.bin"], "outfiles": [str(out_dir / "input_00000_0.bin")]},
        1: {"infiles": ["prep/input_00001.bin"], "outfiles": [str(out_dir / "input_00001_0.bin")]},
    }
    written = fmt.write_summary(out_dir, filesinfo, [10.0, 30.0], batch_size=4, args={"loop": 1}, pid=1234)

    assert written == tmp_path / "outputs" / "run1_summary.json"
    raw = json.loads(written.read_text())
    assert set(raw) == {
        "filesinfo",
        "args",
        "NPU_compute_time",
        "H2D_latency",
        "D2H_latency",
        "throughput",
        "npu_compute_time_list",
        "pid",
    }
    assert list(raw["filesinfo"]) == ["0", "1"]  # sample ids are strings, as in ais_bench's JSON
    assert raw["throughput"] == pytest.approx(1000 * 4 / 20.0)
    assert raw["NPU_compute_time"]["count"] == 2 and raw["H2D_latency"]["count"] == 0
    assert raw["npu_compute_time_list"] == [10.0, 30.0] and raw["pid"] == 1234

    for where in (out_dir, written):  # the folder or the file itself
        summary = fmt.read_summary(where)
        assert summary["generation"] == "new"
        assert summary["filesinfo"]["1"]["infiles"] == ["prep/input_00001.bin"]
        assert summary["NPU_compute_time"]["mean"] == pytest.approx(20.0)


def test_read_old_generation_inside_folder(tmp_path):
    out_dir = tmp_path / "2022_06_01-10_00_00"
    out_dir.mkdir()
    old = {  # the pre-late-2022 layout: no count, no npu_compute_time_list, no pid
        "filesinfo": {"0": {"infiles": ["prep/input_00000.bin"], "outfiles": ["x/input_00000_0.bin"]}},
        "NPU_compute_time": {"min": 5.0, "max": 5.0, "mean": 5.0, "median": 5.0, "percentile(99%)": 5.0},
        "H2D_latency": {"min": 0.1, "max": 0.1, "mean": 0.1, "median": 0.1, "percentile(99%)": 0.1},
        "D2H_latency": {"min": 0.1, "max": 0.1, "mean": 0.1, "median": 0.1, "percentile(99%)": 0.1},
        "throughput": 800.0,
    }
    (out_dir / "sumary.json").write_text(json.dumps(old))

    summary = fmt.read_summary(out_dir)
    assert summary["generation"] == "old"
    assert summary["throughput"] == 800.0
    assert summary["NPU_compute_time"]["count"] is None
    assert summary["npu_compute_time_list"] == [] and summary["pid"] is None


def test_new_summary_wins_when_both_exist(tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "sumary.json").write_text(json.dumps({"throughput": 1.0}))
    fmt.write_summary(out_dir, {}, [2.0], batch_size=1)
    assert fmt.read_summary(out_dir)["generation"] == "new"


def test_missing_summary_names_both_places(tmp_path):
    with pytest.raises(EvalError) as info:
        fmt.read_summary(tmp_path)
    assert f"{tmp_path}_summary.json" in str(info.value) and "sumary.json" in str(info.value)


def test_unreadable_summary_is_an_eval_error(tmp_path):
    bad = tmp_path / "x_summary.json"
    bad.write_text("{not json")
    with pytest.raises(EvalError, match="unreadable"):
        fmt.read_summary(bad)


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (
            "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.6610000133514404): 1512.8592735267011\n",
            1512.8592735267011,
        ),
        ("[INFO] throughput (1000*batchsize/NPU_compute_time): 241.5\n", 241.5),
        ("[INFO] throughput 1000*batchsize(16)/NPU_compute_time.mean(12.5): 1280.0\n", 1280.0),
        ("[INFO] Throughput: 99.25\n", 99.25),
        (
            "\rloop inference exec: (100/100)[INFO] throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(2): 2000\n",
            2000.0,
        ),
        (
            "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(1.0): 1000.0\n"
            "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(1.0): 1000.0\n"
            "[INFO] summary throughput:2000.5\n",
            2000.5,
        ),
    ],
)
def test_parse_throughput_every_generation(stdout, expected):
    assert fmt.parse_throughput(stdout) == pytest.approx(expected)


def test_parse_throughput_missing_line():
    with pytest.raises(BackendError, match="no throughput"):
        fmt.parse_throughput("[ERROR] arg0 tensorsize: 196608 filesize: 602112 not match\n")


def test_parse_compute_time():
    stdout = (
        "[INFO] -----------------Performance Summary------------------\n"
        "[INFO] NPU_compute_time (ms): min = 0.661, max = 0.7, mean = 0.68, median = 0.67, "
        "percentile(99%) = 0.699\n"
    )
    assert fmt.parse_compute_time(stdout) == {
        "min": 0.661,
        "max": 0.7,
        "mean": 0.68,
        "median": 0.67,
        "percentile(99%)": 0.699,
    }


def test_read_output_all_formats(tmp_path):
    rows = np.arange(2 * 5, dtype=np.float32).reshape(2, 5) / 7
    rows.tofile(tmp_path / "input_00000_0.bin")
    np.save(tmp_path / "input_00000_0.npy", rows)
    with open(tmp_path / "input_00000_0.txt", "w") as handle:  # ais_bench TXT: "%f " per value, row per line
        for row in rows:
            handle.write("".join(f"{v:f} " for v in row) + "\n")

    np.testing.assert_array_equal(fmt.read_output(tmp_path / "input_00000_0.bin", 5), rows)
    np.testing.assert_array_equal(fmt.read_output(tmp_path / "input_00000_0.npy", 5), rows)
    np.testing.assert_allclose(fmt.read_output(tmp_path / "input_00000_0.txt", 5), rows, atol=1e-6)
    with pytest.raises(EvalError, match="holds 10 values, not whole rows of 3 class logits"):
        fmt.read_output(tmp_path / "input_00000_0.bin", 3)


def test_natural_key_orders_numbers_as_integers():
    names = ["input_10.bin", "input_9.bin", "INPUT_100.bin", "input_1.bin"]
    assert sorted(names, key=fmt.natural_key) == ["input_1.bin", "input_9.bin", "input_10.bin", "INPUT_100.bin"]
