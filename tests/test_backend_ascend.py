"""The Ascend backend driven against the tool doubles (tests/doubles): argv, parsing, environment, failures, cache."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from convmixer_tasks.backends import ascend, cann_env
from convmixer_tasks.backends.base import CompileOptions
from convmixer_tasks.errors import BackendError, CompileError, ConfigError, ToolMissingError
from convmixer_tasks.stages.aisbench_format import summary_path
from tests.ascend_doubles import run_double, write_tiny_onnx

SPEC_TABLE = """\
+-------------------+-----------------+------------------------------------------------------+
| NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===================+=================+======================================================+
| 0       310P3     | OK              | 15.8         42                0    / 0              |
| 0       0         | 0000:82:00.0    | 0            1074 / 21534                            |
+===================+=================+======================================================+
| 1       310P3     | OK              | 15.4         43                0    / 0              |
| 0       1         | 0000:89:00.0    | 0            1070 / 21534                            |
+===================+=================+======================================================+
"""


# --- shared inputs (module scope: images, prep folders and ONNX are read-only for the tests) -------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from convmixer_tasks.run.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), count=5)


@pytest.fixture(scope="module")
def prep_f32(demo, tmp_path_factory) -> Path:
    from convmixer_tasks.stages.preprocess import preprocess

    return preprocess(demo.image_dir, tmp_path_factory.mktemp("prep") / "f32_bs2", batch_size=2, workers=1).out_dir


@pytest.fixture(scope="module")
def prep_u8(demo, tmp_path_factory) -> Path:
    from convmixer_tasks.stages.preprocess import preprocess

    return preprocess(
        demo.image_dir, tmp_path_factory.mktemp("prep") / "u8_bs2", batch_size=2, dtype="uint8", workers=1
    ).out_dir


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx", input_name="input1")


def argv_log(doubles, tmp_path: Path, tool: str) -> Path:
    path = tmp_path / f"{tool}.argv.jsonl"
    doubles.mode(**{f"{'ATC' if tool == 'atc' else 'AIS_BENCH'}_DOUBLE_ARGV_LOG": str(path)})
    return path


def read_argvs(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def onnx_outputs(onnx_path: Path, prep_dir: Path, name: str) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    batch = np.fromfile(prep_dir / name, dtype=np.float32).reshape(2, 3, 224, 224)
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


# --- chip names and npu-smi ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "soc",
    [
        "Ascend310",
        "Ascend310P3",
        "Ascend310B1",
        "Ascend910A",
        "Ascend910B",
        "Ascend910B3",
        "Ascend910B4-1",
        "Ascend910ProB",
        "Ascend910_9391",
        "Ascend310P17",
        "Ascend950PR",
    ],
)
def test_valid_soc_versions_pass(soc):
    assert ascend.validate_soc_version(soc) == soc


@pytest.mark.parametrize(
    "soc, hint",
    [
        ("Ascend310310P3", "expected 'Ascend'"),
        ("310P3", "did you mean Ascend310P3"),
        ("Ascend 310P3", "drop the space"),
        ("ascend310p3", "expected"),
        ("Ascend", "expected"),
        ("Ascend310P3; rm -rf /", "expected"),
    ],
)
def test_garbage_soc_versions_are_refused_naming_value_and_form(soc, hint):
    with pytest.raises(ConfigError) as info:
        ascend.validate_soc_version(soc)
    assert repr(soc) in str(info.value) and hint in str(info.value) and "--soc-version" in str(info.value)


def test_npu_smi_parsing_of_the_spec_table():
    chips = ascend.parse_npu_smi_info(SPEC_TABLE)
    assert chips == [ascend.NpuChip(0, "310P3", "OK"), ascend.NpuChip(1, "310P3", "OK")]
    assert ascend.soc_from_chips(chips) == "Ascend310P3"


@pytest.mark.parametrize(
    "env, soc, npu_ids",
    [
        ({}, "Ascend310P3", [0, 1]),
        ({"NPU_SMI_DOUBLE_CHIP": "910B3"}, "Ascend910B3", [0, 1]),
        ({"NPU_SMI_DOUBLE_MODE": "unhealthy_first"}, "Ascend310P3", [0, 1]),
        ({"NPU_SMI_DOUBLE_MODE": "busy", "NPU_SMI_DOUBLE_COUNT": "3"}, "Ascend310P3", [0, 1, 2]),
    ],
)
def test_npu_smi_parsing_of_double_output(env, soc, npu_ids):
    chips = ascend.parse_npu_smi_info(run_double("npu-smi", "info", env=env).stdout)
    assert [chip.npu_id for chip in chips] == npu_ids  # the busy process row is not an NPU
    assert ascend.soc_from_chips(chips) == soc
    if env.get("NPU_SMI_DOUBLE_MODE") == "unhealthy_first":
        assert chips[0].health == "Critical" and chips[1].health == "OK"


def test_no_healthy_npu_is_an_error_listing_them():
    table = run_double("npu-smi", "info", env={"NPU_SMI_DOUBLE_MODE": "all_unhealthy"}).stdout
    chips = ascend.parse_npu_smi_info(table)
    with pytest.raises(BackendError, match=r"no healthy NPU \(NPU 0 310P3 Critical, NPU 1 310P3 Critical\)"):
        ascend.soc_from_chips(chips)
    with pytest.raises(BackendError, match="listed no NPU"):
        ascend.soc_from_chips([])


# --- ATC command, AIPP, result check -------------------------------------------------------------------------------


def test_atc_argv_is_exact():
    options = CompileOptions(precision_mode="allow_mix_precision")
    argv = ascend.atc_argv(
        "/t/atc", "/m/model.onnx", "/c/model_bs8", "image", 8, "Ascend910B3", options, "info", "/c/aipp.cfg"
    )
    assert argv == [
        "/t/atc",
        "--framework=5",
        "--model=/m/model.onnx",
        "--output=/c/model_bs8",
        "--input_format=NCHW",
        "--input_shape=image:8,3,224,224",
        "--soc_version=Ascend910B3",
        "--op_select_implmode=high_performance",
        "--optypelist_for_implmode=Gelu",
        "--log=info",
        "--precision_mode=allow_mix_precision",
        "--insert_op_conf=/c/aipp.cfg",
    ]
    plain = ascend.atc_argv(
        "atc",
        "m.onnx",
        "out",
        "x",
        1,
        "Ascend310P3",
        CompileOptions(op_select_implmode="", optypelist_for_implmode="Gelu"),
    )
    assert not any(arg.startswith(("--op_select", "--optypelist", "--precision", "--insert")) for arg in plain)


def test_atc_argv_refuses_optypelist_with_a_for_all_implmode():
    options = CompileOptions(op_select_implmode="high_precision_for_all")  # optypelist keeps its default "Gelu"
    with pytest.raises(
        ConfigError,
        match=r"only goes with --op_select_implmode high_performance or high_precision, "
        r"not 'high_precision_for_all'",
    ):
        ascend.atc_argv("atc", "m.onnx", "out", "x", 1, "Ascend310P3", options)
    cleared = ascend.atc_argv(
        "atc",
        "m.onnx",
        "out",
        "x",
        1,
        "Ascend310P3",
        CompileOptions(op_select_implmode="high_precision_for_all", optypelist_for_implmode=""),
    )
    assert "--op_select_implmode=high_precision_for_all" in cleared
    assert not any(arg.startswith("--optypelist") for arg in cleared)


def test_aipp_config_matches_the_spec_values():
    from convmixer_tasks.models.variants import INPUT

    MEAN, STD = INPUT.mean, INPUT.std

    text = ascend.aipp_config()
    values = dict(re.findall(r"(\w+)\s*:\s*(\S+)", text))
    assert values["aipp_mode"] == "static" and values["input_format"] == "RGB888_U8"
    assert values["src_image_size_w"] == values["src_image_size_h"] == "224"
    spec_mins, spec_vars = (123.675, 116.28, 103.53), (0.0171247538316637, 0.0175070028011204, 0.0174291938997821)
    for channel, (mean, std, spec_min, spec_var) in enumerate(zip(MEAN, STD, spec_mins, spec_vars, strict=True)):
        assert float(values[f"min_chn_{channel}"]) == pytest.approx(255 * mean, abs=1e-9)
        assert float(values[f"min_chn_{channel}"]) == pytest.approx(spec_min, abs=1e-9)
        assert float(values[f"var_reci_chn_{channel}"]) == pytest.approx(1 / (255 * std), rel=1e-12)
        assert float(values[f"var_reci_chn_{channel}"]) == pytest.approx(spec_var, rel=1e-12)
    assert text.startswith("aipp_op {") and text.rstrip().endswith("}")


def test_atc_check_needs_status_zero_and_success_line(tmp_path):
    om = tmp_path / "m.om"
    env = {"ASCEND_PROCESS_LOG_PATH": str(tmp_path / "log")}
    om.write_bytes(b"x")
    ascend.check_atc_run(ascend.ToolRun(["atc"], 0, f"start\n{ascend.ATC_SUCCESS_LINE}\n", 1), om, env)
    assert om.exists()
    with pytest.raises(CompileError, match="never printed"):
        ascend.check_atc_run(ascend.ToolRun(["atc"], 0, "ATC start working now\n", 1), om, env)
    assert not om.exists()  # a partial OM never survives a failure
    om.write_bytes(b"partial")
    output = (
        "ATC start working now, please wait for a moment.\nATC run failed, Please check the detail log, Try "
        "'atc --help' for more information\nE10001: Value [x] for parameter [--input_shape] is invalid.\n"
        "W11001: Op [a] does not hit\n  some detail\n"
    )
    with pytest.raises(CompileError) as info:
        ascend.check_atc_run(ascend.ToolRun(["atc", "--x=1"], 1, output, 4242), om, env)
    message = str(info.value)
    assert "exited with status 1" in message and "E10001: Value [x]" in message and "W11001: Op [a]" in message
    assert "some detail" in message and "Try 'atc --help'" in message
    assert f"{tmp_path / 'log'}/{{debug,run}}/plog/plog-4242_*.log" in message
    assert not om.exists()


def test_plog_location_falls_back_to_home(tmp_path):
    plog = tmp_path / "ascend" / "log" / "debug" / "plog" / "plog-77_20240101.log"
    plog.parent.mkdir(parents=True)
    plog.write_text("x")
    assert ascend.plog_location({"HOME": str(tmp_path)}, 77) == str(plog)


# --- CANN environment ----------------------------------------------------------------------------------------------


def test_env_capture_from_fake_set_env(ascend_doubles):
    env = cann_env.load_cann_env(ascend_doubles.set_env)
    home = ascend_doubles.toolkit_home
    assert env.env["ASCEND_TOOLKIT_HOME"] == str(home) and env.env["ASCEND_OPP_PATH"] == f"{home}/opp"
    assert env.env["PATH"].split(os.pathsep)[0] == f"{home}/bin"
    assert env.env["LD_LIBRARY_PATH"].startswith(f"{home}/lib64:")
    assert env.toolkit_home == home and env.toolkit_version == "8.0.RC3"
    assert env.which("atc") == str(home / "bin" / "atc") and env.which("npu-smi")
    assert "_" not in env.env


def test_env_capture_keeps_multiline_values_and_drops_script_stdout(tmp_path):
    script = tmp_path / "set_env.sh"
    script.write_text('echo "Welcome to CANN"\nexport MULTI="a\nb=c"\nexport ASCEND_HOME_PATH=/x\n')
    env = cann_env.source_set_env(script, {"PATH": os.environ["PATH"]})
    assert env["MULTI"] == "a\nb=c" and env["ASCEND_HOME_PATH"] == "/x"
    assert cann_env.parse_env0(b"A=1\0B=x=y\0_=/bin/env\0") == {"A": "1", "B": "x=y"}


def test_env_capture_ignores_the_users_bashrc_when_stdin_is_a_socket(tmp_path):
    """An Airflow 3 task's stdin is a socket to its supervisor; bash at shell level 1 (a worker under a service
    manager) takes a socket on stdin for a remote shell and reads ~/.bashrc even for `bash -c`. A .bashrc that puts
    pyenv's or conda's shims first handed the CANN tools another python3 ("No module named 'onnx'" in the atc
    double, in the real-Celery tests)."""
    import socket
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text('export PATH="/from-bashrc:$PATH"\nexport FROM_BASHRC=1\n')
    script = tmp_path / "set_env.sh"
    script.write_text("export ASCEND_HOME_PATH=/x\n")
    child = (
        "import json, sys\nfrom convmixer_tasks.backends import cann_env\n"
        "print(json.dumps(cann_env.source_set_env(sys.argv[1])))"
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.run(
            [sys.executable, "-c", child, str(script)],
            stdin=theirs.fileno(),
            env={**os.environ, "HOME": str(home), "SHLVL": "0"},  # a worker started by a service manager
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    env = json.loads(proc.stdout)
    assert env["ASCEND_HOME_PATH"] == "/x"
    assert "FROM_BASHRC" not in env and "/from-bashrc" not in env["PATH"].split(os.pathsep)


def test_failing_set_env_is_a_backend_error(tmp_path):
    script = tmp_path / "set_env.sh"
    script.write_text("echo broken >&2\nreturn 3\n")
    with pytest.raises(BackendError, match=r"sourcing .*set_env.sh failed with exit status 3: broken"):
        cann_env.source_set_env(script)


def test_missing_set_env_names_path_and_setting(tmp_path, monkeypatch):
    with pytest.raises(ToolMissingError) as info:
        cann_env.resolve_set_env(tmp_path / "nope" / "set_env.sh")
    assert str(tmp_path / "nope" / "set_env.sh") in str(info.value) and "--cann-set-env" in str(info.value)
    monkeypatch.setattr(cann_env, "DEFAULT_SET_ENV_PATHS", (tmp_path / "a.sh", tmp_path / "b.sh"))
    with pytest.raises(ToolMissingError, match=r"a\.sh or .*b\.sh.*--cann-set-env"):
        cann_env.resolve_set_env(None)
    (tmp_path / "b.sh").write_text("")
    assert cann_env.resolve_set_env(None) == tmp_path / "b.sh"  # CANN >= 8.5 location when the older is absent


def test_version_from_cann_85_layout_and_fallbacks(ascend_doubles):
    ascend_doubles.use_layout("cann", version="8.5.0")
    assert ascend_doubles.install_info.parent.parent == ascend_doubles.root / "Ascend" / "cann"
    assert cann_env.load_cann_env(ascend_doubles.set_env).toolkit_version == "8.5.0"
    ascend_doubles.use_layout("toolkit", version=None)
    assert cann_env.load_cann_env(ascend_doubles.set_env).toolkit_version == "unknown"
    version_info = ascend_doubles.toolkit_home / "compiler" / "version.info"
    version_info.parent.mkdir(parents=True)
    version_info.write_text("Version=7.0.0\nversion_dir=7.0.0\n")
    assert cann_env.load_cann_env(ascend_doubles.set_env).toolkit_version == "7.0.0"


def test_backend_construction_needs_no_ascend_host():
    backend = ascend.AscendBackend(cann_set_env="/nonexistent/set_env.sh")
    with pytest.raises(ToolMissingError, match=r"/nonexistent/set_env.sh"):
        backend.describe()
    with pytest.raises(ConfigError, match="--device"):
        ascend.AscendBackend(device_id=-1)


# --- describe ------------------------------------------------------------------------------------------------------


def test_describe_reports_soc_and_toolkit(ascend_doubles):
    info = ascend_doubles.backend().describe()
    assert (info.backend, info.device, info.toolkit_version) == ("ascend", "Ascend310P3", "8.0.RC3")
    ascend_doubles.mode(NPU_SMI_DOUBLE_CHIP="910B3", NPU_SMI_DOUBLE_MODE="unhealthy_first")
    assert ascend_doubles.backend().describe().device == "Ascend910B3"


def test_npu_smi_failures(ascend_doubles):
    ascend_doubles.mode(NPU_SMI_DOUBLE_MODE="driver_error")
    with pytest.raises(BackendError, match=r"`npu-smi info` failed with status 255: dcmi"):
        ascend_doubles.backend().describe()
    ascend_doubles.remove("npu-smi")
    with pytest.raises(ToolMissingError, match=r"npu-smi not found.*Ascend NPU driver"):
        ascend_doubles.backend().describe()


# --- compile -------------------------------------------------------------------------------------------------------


def test_compile_runs_atc_with_exact_argv_and_reads_input_name(ascend_doubles, tiny_onnx, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "atc")
    artifact = ascend_doubles.backend().compile(tiny_onnx, 4, tmp_path / "cache")
    (argv,) = read_argvs(log)
    cache = tmp_path / "cache"
    assert argv[:2] == ["--framework=5", f"--model={tiny_onnx.resolve()}"]
    assert re.fullmatch(rf"--output={re.escape(str(cache))}/\.build-[^/]+/{artifact.path.stem}", argv[2])
    assert argv[3:] == [
        "--input_format=NCHW",
        "--input_shape=input1:4,3,224,224",
        "--soc_version=Ascend310P3",
        "--op_select_implmode=high_performance",
        "--optypelist_for_implmode=Gelu",
        "--log=error",
    ]
    assert artifact.path.parent == cache and artifact.path.suffix == ".om" and artifact.path.is_file()
    assert artifact.input_shape == [4, 3, 224, 224] and artifact.input_dtype == "float32"
    assert artifact.options["soc_version"] == "Ascend310P3" and artifact.meta["onnx_input_name"] == "input1"
    assert artifact.meta["runtime"] == "CANN 8.0.RC3; Ascend310P3"
    assert artifact.meta["atc_warnings"] and artifact.meta["atc_warnings"][0].startswith("W11001:")
    assert sorted(p.name for p in cache.iterdir()) == [artifact.path.name, artifact.path.name + ".json"]


def test_compile_uint8_passes_aipp_config_and_om_takes_nhwc_uint8(ascend_doubles, tiny_onnx, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "atc")
    artifact = ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache", CompileOptions(input_dtype="uint8"))
    (argv,) = read_argvs(log)
    assert argv[-1].startswith("--insert_op_conf=") and argv[-1].endswith("/aipp.cfg")
    assert artifact.input_shape == [2, 224, 224, 3] and artifact.meta["aipp_config"] == ascend.aipp_config()
    assert not (tmp_path / "cache" / "aipp.cfg").exists()  # written in the private build folder only


def test_compile_cache_hit_and_misses(ascend_doubles, tiny_onnx, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "atc")
    cache = tmp_path / "cache"
    first = ascend_doubles.backend().compile(tiny_onnx, 2, cache)
    again = ascend_doubles.backend().compile(tiny_onnx, 2, cache)
    assert (first.cached, again.cached) == (False, True) and again.path == first.path
    assert again.sha256 == first.sha256 and len(read_argvs(log)) == 1  # the hit never ran atc
    other_bs = ascend_doubles.backend().compile(tiny_onnx, 4, cache)
    other_mode = ascend_doubles.backend().compile(tiny_onnx, 2, cache, CompileOptions(precision_mode="force_fp32"))
    ascend_doubles.mode(NPU_SMI_DOUBLE_CHIP="910B3")
    other_chip = ascend_doubles.backend().compile(tiny_onnx, 2, cache)
    assert not any(a.cached for a in (other_bs, other_mode, other_chip))
    assert len({a.path for a in (first, other_bs, other_mode, other_chip)}) == 4 and len(read_argvs(log)) == 4
    assert other_chip.options["soc_version"] == "Ascend910B3"
    explicit = ascend_doubles.backend().compile(tiny_onnx, 2, cache, CompileOptions(soc_version="Ascend910B3"))
    assert explicit.cached and explicit.path == other_chip.path  # "auto" resolved to the same chip is the same key


def test_the_gelu_implmode_reaches_atc_and_keys_the_cache_and_the_fingerprint(ascend_doubles, tiny_onnx, tmp_path):
    from convmixer_tasks.backends.precision import gelu_compile_options
    from convmixer_tasks.measure import fingerprint

    log = argv_log(ascend_doubles, tmp_path, "atc")
    built = {
        mode: ascend_doubles.backend().compile(
            tiny_onnx, 2, tmp_path / "cache", CompileOptions(**gelu_compile_options("ascend", mode))
        )
        for mode in ("high_performance", "high_precision", None)
    }
    assert len({artifact.path for artifact in built.values()}) == 3 and not any(a.cached for a in built.values())
    flags = [[arg for arg in argv if arg.startswith(("--op_select", "--optypelist"))] for argv in read_argvs(log)]
    assert flags == [
        ["--op_select_implmode=high_performance", "--optypelist_for_implmode=Gelu"],
        ["--op_select_implmode=high_precision", "--optypelist_for_implmode=Gelu"],
        [],
    ]  # null: neither flag, ATC picks (the double accepts that too)
    assert built[None].options["op_select_implmode"] is None
    prints = {mode: fingerprint.build("ascend", "Ascend310P3", "8.0", a.options, a.meta) for mode, a in built.items()}
    assert prints["high_precision"]["op_select_implmode"] == "high_precision"
    assert len({fingerprint.key(one) for one in prints.values()}) == 3  # throughput history never mixes them


def test_compile_failure_carries_codes_and_log_and_leaves_nothing(ascend_doubles, tiny_onnx, tmp_path):
    ascend_doubles.mode(ATC_DOUBLE_MODE="fail")
    cache = tmp_path / "cache"
    with pytest.raises(CompileError) as info:
        ascend_doubles.backend().compile(tiny_onnx, 2, cache)
    message = str(info.value)
    assert isinstance(info.value, BackendError)
    assert "EZ3003: No supported Ops kernel and engine are found for [Gelu_0]" in message and "E19999" in message
    assert "Try 'atc --help'" in message
    plogs = list((ascend_doubles.log_dir / "debug" / "plog").glob("plog-*.log"))
    assert plogs and str(plogs[0]) in message
    assert list(cache.rglob("*")) == []  # no .om, no sidecar, no build folder


def test_compile_without_success_line_is_a_failure(ascend_doubles, tiny_onnx, tmp_path):
    ascend_doubles.mode(ATC_DOUBLE_MODE="no_success_line")
    with pytest.raises(CompileError, match="atc exited 0 but never printed 'ATC run success"):
        ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache")
    assert list((tmp_path / "cache").rglob("*")) == []


def test_compile_refuses_bad_chip_before_running_atc(ascend_doubles, tiny_onnx, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "atc")
    with pytest.raises(ConfigError, match="'Ascend310310P3' is not an Ascend chip name"):
        ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache", CompileOptions(soc_version="Ascend310310P3"))
    assert read_argvs(log) == []


def test_compile_auto_soc_skips_unhealthy_chip_and_fails_without_healthy(ascend_doubles, tiny_onnx, tmp_path):
    ascend_doubles.mode(NPU_SMI_DOUBLE_CHIP="910B3", NPU_SMI_DOUBLE_MODE="unhealthy_first")
    assert ascend_doubles.backend().compile(tiny_onnx, 1, tmp_path / "c").options["soc_version"] == "Ascend910B3"
    ascend_doubles.mode(NPU_SMI_DOUBLE_MODE="all_unhealthy")
    with pytest.raises(BackendError, match="no healthy NPU"):
        ascend_doubles.backend().compile(tiny_onnx, 1, tmp_path / "c2")


def test_compile_with_missing_atc_names_the_toolkit(ascend_doubles, tiny_onnx, tmp_path):
    ascend_doubles.remove("atc")
    with pytest.raises(ToolMissingError, match=r"atc not found on the PATH of the CANN environment .*CANN toolkit"):
        ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache")


def test_compile_with_unknown_toolkit_version_keys_cache_on_the_atc_binary(ascend_doubles):
    ascend_doubles.use_layout("toolkit", version=None)
    identity = ascend_doubles.backend().runtime_identity("Ascend310P3")
    assert identity.startswith(f"CANN atc {ascend_doubles.toolkit_home / 'bin' / 'atc'}:")


# --- infer ---------------------------------------------------------------------------------------------------------


def test_infer_writes_contract_layout_with_correct_values(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "ais_bench")  # before the backend: it captures its environment once
    backend = ascend_doubles.backend()
    # fp32 arithmetic: this checks the layout and values against the ONNX; the precision modes are test_evidence's
    fp32 = CompileOptions(precision_mode="must_keep_origin_dtype")
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache", fp32)
    out = tmp_path / "work" / "outputs_bs2"
    result = backend.infer(artifact, prep_f32, out)
    assert result.output_dir == out and result.summary_path == summary_path(out) and result.file_count == 3
    assert sorted(os.listdir(out)) == ["input_00000_0.bin", "input_00001_0.bin", "input_00002_0.bin"]
    for name in ("input_00000", "input_00002"):
        got = np.fromfile(out / f"{name}_0.bin", dtype=np.float32).reshape(2, -1)
        np.testing.assert_allclose(got, onnx_outputs(tiny_onnx, prep_f32, f"{name}.bin"), rtol=1e-5, atol=1e-5)
    assert stat.S_IMODE((tmp_path / "work").stat().st_mode) == 0o750
    (argv,) = read_argvs(log)
    assert argv == [
        "--model",
        str(artifact.path),
        "--input",
        str(prep_f32),
        "--output",
        str(tmp_path / "work"),
        "--output_dirname",
        f".outputs_bs2.partial-{os.getpid()}",
        "--outfmt",
        "BIN",
        "--batchsize",
        "2",
        "--device",
        "0",
    ]
    # ais_bench writes into a staging sibling that became the result; nothing of it is left beside it
    assert sorted(os.listdir(tmp_path / "work")) == ["outputs_bs2", "outputs_bs2_summary.json"]


def test_infer_shard_uses_a_hard_link_folder_and_removes_it(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "ais_bench")
    backend = ascend_doubles.backend(device_id=1)
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    out = tmp_path / "work" / "shard1"
    result = backend.infer(artifact, prep_f32, out, files=["input_00001.bin", "input_00002.bin"])
    assert result.file_count == 2 and sorted(os.listdir(out)) == ["input_00001_0.bin", "input_00002_0.bin"]
    (argv,) = read_argvs(log)
    link_folder = Path(argv[argv.index("--input") + 1])
    assert link_folder == tmp_path / "work" / ".shard1_inputs" and not link_folder.exists()
    assert argv[argv.index("--device") + 1] == "1"
    summary = json.loads(result.summary_path.read_text())
    assert [Path(v["infiles"][0]).name for v in summary["filesinfo"].values()] == ["input_00001.bin", "input_00002.bin"]


def test_a_retried_infer_shard_ignores_what_a_killed_attempt_left(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    """A host lost mid-infer leaves its half in the shared work folder: ais_bench's staging folder with some outputs
    (one cut short), the hard-link input folder, an output the shard does not own. The retry runs on another host,
    where the dead attempt's pid may well be alive: it must still leave the shard's own outputs and nothing else."""
    from convmixer_tasks.run import steps
    from convmixer_tasks.run.records import CompiledModel, PrepShard
    from convmixer_tasks.run.workdir import WorkLayout
    from convmixer_tasks.stages.aisbench_format import STAGING_MARK

    artifact = ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache")
    compiled = CompiledModel(
        model_variant="tiny",
        run_id="run-1",
        batch_size=2,
        backend="ascend",
        precision="force_fp16",
        artifact=artifact,
        device="Ascend310P3",
        toolkit_version="8.0.RC3",
        cached=True,
        prep_dir=str(prep_f32),
    )
    owned = ("input_00001.bin", "input_00002.bin")
    prepared = [
        PrepShard(batch_size=2, shard=1, shards=2, prep_dir=str(prep_f32), files=owned, files_written=0, cached=True)
    ]
    work = tmp_path / "work"
    out = WorkLayout(work).shard_output_dir("run-1", 2, 1, precision="force_fp16", model="tiny")
    staging = out.with_name(f".{out.name}{STAGING_MARK}1")  # pid 1: alive on every host, so not "stale" by pid
    staging.mkdir(parents=True)
    (staging / "input_00001_0.bin").write_bytes(b"\0" * 7)  # cut short by the kill
    (out.parent / f".{out.name}_inputs").mkdir()
    (out.parent / f".{out.name}_inputs" / "input_00001.bin").write_bytes(b"\0" * 7)
    out.mkdir()
    (out / "input_00000_0.bin").write_bytes(b"\0" * 7)  # not this shard's image

    result = steps.infer_shard(compiled, 1, prepared, work, {"cann_set_env": str(ascend_doubles.set_env)})

    assert result.file_count == 2 and Path(result.output_dir) == out
    assert sorted(os.listdir(out.parent)) == ["outputs", "outputs_summary.json"]  # no staging, no link folder
    assert sorted(os.listdir(out)) == ["input_00001_0.bin", "input_00002_0.bin"]
    for name in ("input_00001", "input_00002"):
        got = np.fromfile(out / f"{name}_0.bin", dtype=np.float32).reshape(2, -1)
        np.testing.assert_allclose(got, onnx_outputs(tiny_onnx, prep_f32, f"{name}.bin"), rtol=1e-2, atol=1e-2)
    filesinfo = json.loads(summary_path(out).read_text())["filesinfo"]
    assert sorted(Path(entry["infiles"][0]).name for entry in filesinfo.values()) == list(owned)


def test_link_shard_folder_makes_hard_links_not_symlinks(prep_f32, tmp_path):
    folder = ascend.link_shard_folder(prep_f32, ["input_00002.bin"], tmp_path / "links")
    (entry,) = folder.iterdir()
    assert not entry.is_symlink() and entry.stat().st_ino == (prep_f32 / "input_00002.bin").stat().st_ino
    assert stat.S_IMODE(folder.stat().st_mode) & ~0o750 == 0


def test_infer_tightens_a_wide_output_parent(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    parent = tmp_path / "wide"
    parent.mkdir()
    os.chmod(parent, 0o775)
    backend.infer(artifact, prep_f32, parent / "out")  # the "up" double refuses > 0o750: this passing proves the fix
    assert stat.S_IMODE(parent.stat().st_mode) == 0o750


def test_infer_tightens_group_writable_prep_files(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    import shutil

    prep = Path(shutil.copytree(prep_f32, tmp_path / "prep"))  # the module's prep folder stays untouched
    bins = sorted(prep.glob("*.bin"))
    for path in bins:
        os.chmod(path, 0o664)  # what preprocess writes under umask 002 (the Airflow image's)
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    backend.infer(artifact, prep, tmp_path / "o" / "r")  # the "up" double refuses g/o-writable inputs
    assert {stat.S_IMODE(path.stat().st_mode) for path in bins} == {0o644}


def test_group_writable_input_we_do_not_own_names_file_and_fix(tmp_path, monkeypatch):
    path = tmp_path / "input_00000.bin"
    path.write_bytes(b"x")
    os.chmod(path, 0o666)
    monkeypatch.setattr(os, "getuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(ConfigError, match=rf"input file {re.escape(str(path))} has mode 0o666 .*chmod go-w"):
        ascend.tighten_input_files([path])
    assert stat.S_IMODE(path.stat().st_mode) == 0o666


def test_tool_timeout_stops_the_tools_children_too(tmp_path):
    wrapper = tmp_path / "tool"  # like atc: a script that starts the real binary and waits for it
    wrapper.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {tmp_path / 'child.pid'}\nwait\n")
    wrapper.chmod(0o755)
    backend = ascend.AscendBackend()
    backend._cann = cann_env.CannEnv(
        set_env=tmp_path / "set_env.sh", env=dict(os.environ), toolkit_home=None, toolkit_version="unknown"
    )
    import time

    started = time.monotonic()
    with pytest.raises(BackendError, match=r"tool did not finish in 1s and was stopped"):
        backend.run_tool([str(wrapper)], timeout_s=1)
    assert time.monotonic() - started < 20  # not the child's 60 s: the child held the pipe open
    stat_file = Path(f"/proc/{int((tmp_path / 'child.pid').read_text())}/stat")

    def running() -> bool:  # gone, or a zombie waiting for whoever inherited it, is not running
        try:
            return stat_file.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 5
    while running():
        assert time.monotonic() < deadline, "the tool's child is still running after the timeout"
        time.sleep(0.05)


def test_infer_old_generation_summary_is_moved_to_the_sibling_place(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    ascend_doubles.mode(AIS_BENCH_DOUBLE_GEN="old")
    backend = ascend_doubles.backend()
    result = backend.infer(backend.compile(tiny_onnx, 2, tmp_path / "cache"), prep_f32, tmp_path / "o" / "r")
    assert result.summary_path == tmp_path / "o" / "r_summary.json" and result.summary_path.is_file()
    assert "sumary.json" not in os.listdir(tmp_path / "o" / "r")


def test_infer_rerun_replaces_previous_outputs_but_refuses_foreign_folders(
    ascend_doubles, tiny_onnx, prep_f32, tmp_path
):
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    out = tmp_path / "o" / "r"
    backend.infer(artifact, prep_f32, out)
    (out / "input_00009_0.bin").write_bytes(b"stale")
    backend.infer(artifact, prep_f32, out)
    assert "input_00009_0.bin" not in os.listdir(out)
    (out / "notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files that are not ais_bench outputs \(notes.md\)"):
        backend.infer(artifact, prep_f32, out)
    assert (out / "notes.md").exists()


def test_infer_crash_leaves_no_outputs(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    ascend_doubles.mode(AIS_BENCH_DOUBLE_MODE="crash")
    backend = ascend_doubles.backend()
    out = tmp_path / "o" / "r"
    with pytest.raises(BackendError) as info:
        backend.infer(artifact, prep_f32, out)
    message = str(info.value)
    assert "ais_bench inference failed with exit status 1" in message
    assert "[ERROR] aclmdlExecute failed, ret[507011]" in message
    assert "DoubleInferError: [-1][ACL: general failure]" in message
    assert not out.exists() and not summary_path(out).exists()


def test_infer_dtype_mismatch_is_caught_before_ais_bench(ascend_doubles, tiny_onnx, prep_u8, tmp_path):
    log = argv_log(ascend_doubles, tmp_path, "ais_bench")
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")  # float32 OM
    backend.benchmark(artifact, loop=1, warmup=0)  # proves the log records this backend's ais_bench calls
    assert len(read_argvs(log)) == 1
    with pytest.raises(BackendError, match=r"holds uint8 batches of 2 but artifact .* takes float32 batches of 2"):
        backend.infer(artifact, prep_u8, tmp_path / "o" / "r")
    assert len(read_argvs(log)) == 1 and not (tmp_path / "o" / "r").exists()


def test_infer_size_mismatch_reported_by_ais_bench_leaves_no_outputs(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    backend = ascend_doubles.backend()
    bs1 = backend.compile(tiny_onnx, 1, tmp_path / "cache")
    # A record that lies about its OM (bs 2 claimed, bs 1 compiled) gets past our checks; ais_bench then refuses.
    forged = type(bs1)(**{**bs1.__dict__, "batch_size": 2, "input_shape": [2, 3, 224, 224]})
    out = tmp_path / "o" / "r"
    with pytest.raises(BackendError, match=r"\[ERROR\] arg0 tensorsize: 602112 filesize: 1204224 not match"):
        backend.infer(forged, prep_f32, out)
    assert not out.exists() and not summary_path(out).exists()


def test_infer_uint8_aipp_path_matches_float_path(ascend_doubles, tiny_onnx, prep_f32, prep_u8, tmp_path):
    backend = ascend_doubles.backend()
    f32 = backend.infer(backend.compile(tiny_onnx, 2, tmp_path / "c"), prep_f32, tmp_path / "o" / "f32")
    u8 = backend.infer(
        backend.compile(tiny_onnx, 2, tmp_path / "c", CompileOptions(input_dtype="uint8")),
        prep_u8,
        tmp_path / "o" / "u8",
    )
    from convmixer_tasks.stages.prepfolder import read_manifest

    for prep_file in read_manifest(prep_u8).files:  # padded slots differ by design: zero pixels vs zero floats
        name, real = prep_file.name.replace(".bin", "_0.bin"), len(prep_file.images)
        np.testing.assert_allclose(
            np.fromfile(u8.output_dir / name, dtype=np.float32).reshape(2, -1)[:real],
            np.fromfile(f32.output_dir / name, dtype=np.float32).reshape(2, -1)[:real],
            rtol=1e-4,
            atol=1e-4,
        )


def test_missing_ais_bench_names_the_wheels(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    artifact = ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache")
    ascend_doubles.remove("ais_bench")
    backend = ascend_doubles.backend()
    with pytest.raises(ToolMissingError, match=r"ais_bench module is not importable .*pip3 wheel \./backend/"):
        backend.infer(artifact, prep_f32, tmp_path / "o" / "r")
    with pytest.raises(ToolMissingError, match="ais_bench"):
        backend.benchmark(artifact)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ToolMissingError, match="python9 not found"):
        ascend_doubles.backend(python="python9").benchmark(artifact)


def test_infer_refuses_foreign_artifact(ascend_doubles, tiny_onnx, prep_f32, tmp_path):
    artifact = ascend_doubles.backend().compile(tiny_onnx, 2, tmp_path / "cache")
    foreign = type(artifact)(**{**artifact.__dict__, "backend": "onnxruntime"})
    with pytest.raises(ConfigError, match="compiled by the onnxruntime backend"):
        ascend_doubles.backend().infer(foreign, prep_f32, tmp_path / "o")


# --- benchmark -----------------------------------------------------------------------------------------------------


def test_benchmark_command_and_result(ascend_doubles, tiny_onnx, tmp_path):
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 2, tmp_path / "cache")
    log = argv_log(ascend_doubles, tmp_path, "ais_bench")
    ascend_doubles.mode(AIS_BENCH_DOUBLE_FIXED_MS="2.5")
    result = ascend_doubles.backend().benchmark(artifact, loop=7, warmup=2)
    (argv,) = read_argvs(log)
    assert argv[:10] == [
        "--model",
        str(artifact.path),
        "--loop",
        "7",
        "--batchsize",
        "2",
        "--warmup_count",
        "2",
        "--output",
        argv[9],
    ]
    assert argv[10:] == ["--output_dirname", "perf", "--device", "0"] and not Path(argv[9]).exists()
    assert "--input" not in argv
    assert (result.backend, result.batch_size, result.loop, result.warmup) == ("ascend", 2, 7, 2)
    assert result.samples == [2.5] * 7
    assert result.latency_mean_ms == result.latency_p50_ms == result.latency_p99_ms == 2.5
    assert result.throughput == pytest.approx(1000 * 2 / 2.5) and "NPU_compute_time" in result.formula


def test_benchmark_reads_old_generation_summary(ascend_doubles, tiny_onnx, tmp_path):
    ascend_doubles.mode(
        AIS_BENCH_DOUBLE_GEN="old", AIS_BENCH_DOUBLE_FIXED_MS="4", AIS_BENCH_DOUBLE_THROUGHPUT="pre_2022_07"
    )
    backend = ascend_doubles.backend()
    result = backend.benchmark(backend.compile(tiny_onnx, 4, tmp_path / "cache"), loop=3, warmup=0)
    assert result.throughput == pytest.approx(1000.0) and result.latency_p99_ms == 4.0
    assert result.samples == []  # the old summary has no per-run list


def test_benchmark_rejects_bad_counts(ascend_doubles, tiny_onnx, tmp_path):
    backend = ascend_doubles.backend()
    artifact = backend.compile(tiny_onnx, 1, tmp_path / "cache")
    with pytest.raises(ConfigError, match="--loop"):
        backend.benchmark(artifact, loop=0)
    with pytest.raises(ConfigError, match="--warmup"):
        backend.benchmark(artifact, warmup=-1)


# Literal performance lines from the spec and the generations it lists.
CURRENT = (
    "[INFO] NPU_compute_time (ms): min = 0.661, max = 0.661, mean = 0.661, median = 0.661, "
    "percentile(99%) = 0.661\n"
    "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.6610000133514404): 1512.8592735267011\n"
)


@pytest.mark.parametrize(
    "throughput_line, expected",
    [
        (
            "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.6610000133514404): 1512.8592735267011",
            1512.8592735267011,
        ),
        ("[INFO] throughput (1000*batchsize/NPU_compute_time): 95.795763362348555", 95.795763362348555),
        ("[INFO] throughput 1000*batchsize(16)/NPU_compute_time.mean(12.5): 1280.0", 1280.0),
        (
            "[INFO] Throughput 1000*batchsize.mean(4)/NPU_compute_time.mean(38.87): 102.91136243948735",
            102.91136243948735,
        ),
        (
            "[INFO] throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(1.0): 1000.0\n"
            "[INFO] summary throughput:2000.5",
            2000.5,
        ),
    ],
)
def test_perf_from_stdout_every_listed_format(throughput_line, expected):
    stdout = (
        "\rloop inference exec: (1/100)\rloop inference exec: (100/100)\n"
        "[INFO] -----------------Performance Summary------------------\n"
        "[INFO] NPU_compute_time (ms): min = 0.5, max = 0.9, mean = 0.661, median = 0.65, "
        "percentile(99%) = 0.88\n" + throughput_line + "\n[INFO] ------------------------------------------\n"
    )
    value, latency, samples = ascend.perf_from_stdout(stdout)
    assert value == pytest.approx(expected)
    assert latency == {"mean": 0.661, "median": 0.65, "percentile(99%)": 0.88} and samples == []


def test_perf_from_stdout_without_lines_is_an_error():
    with pytest.raises(BackendError, match="NPU_compute_time"):
        ascend.perf_from_stdout("[ERROR] something\n")
    with pytest.raises(BackendError, match="throughput"):
        ascend.perf_from_stdout(CURRENT.splitlines()[0])


def test_perf_from_summary_multithreaded_layout_uses_the_list():
    summary = {
        "NPU_compute_time": {"mean": 2.0, "count": 3},
        "npu_compute_time_list": [1.0, 2.0, 3.0],
        "throughput": None,
    }
    value, latency, samples = ascend.perf_from_summary(summary, batch_size=4)
    assert value == pytest.approx(2000.0) and latency["median"] == 2.0 and samples == [1.0, 2.0, 3.0]
    assert latency["percentile(99%)"] == pytest.approx(np.percentile([1.0, 2.0, 3.0], 99))
    with pytest.raises(BackendError, match="no NPU_compute_time statistics"):
        ascend.perf_from_summary({"NPU_compute_time": {"mean": 2.0}}, batch_size=1)


def test_ais_bench_error_lines_pick_errors_and_exception():
    output = (
        "[INFO] output path:/x\n[ERROR] arg0 tensorsize: 1 filesize: 2 not match\n"
        'Traceback (most recent call last):\n  File "x", line 1\nRuntimeError: bad\n'
    )
    assert ascend.ais_bench_error_lines(output) == [
        "[ERROR] arg0 tensorsize: 1 filesize: 2 not match",
        "RuntimeError: bad",
    ]


# --- end to end: the Ascend path agrees with the ONNX Runtime path --------------------------------------------------


@pytest.mark.parametrize("ascend_dtype", ["float32", "uint8"])
def test_ascend_path_on_demo_set_matches_onnxruntime_top1(ascend_doubles, tmp_path, ascend_dtype):
    from convmixer_tasks.backends.base import get_backend
    from convmixer_tasks.run.demo import make_demo_dataset
    from convmixer_tasks.stages.evaluate import evaluate
    from convmixer_tasks.stages.export import export_and_validate
    from convmixer_tasks.stages.prepfolder import read_manifest
    from convmixer_tasks.stages.preprocess import preprocess

    demo = make_demo_dataset(tmp_path / "demo", count=10)  # batch 4: the last file is half padding
    onnx_path = export_and_validate(None, tmp_path / "demo.onnx", variant="convmixer_demo").onnx_path
    prep = {
        dtype: preprocess(demo.image_dir, tmp_path / f"prep_{dtype}", batch_size=4, dtype=dtype, workers=1).out_dir
        for dtype in {"float32", ascend_dtype}
    }

    ort = get_backend("onnxruntime")
    ort_out = ort.infer(ort.compile(onnx_path, 4, tmp_path / "ort_cache"), prep["float32"], tmp_path / "ort" / "out")
    npu = ascend_doubles.backend()
    # fp32 arithmetic (ATC's default force_fp16 may flip an image: the DAG-run test covers that case)
    fp32 = CompileOptions(input_dtype=ascend_dtype, precision_mode="must_keep_origin_dtype")
    npu_art = npu.compile(onnx_path, 4, tmp_path / "om_cache", fp32)
    npu_out = npu.infer(npu_art, prep[ascend_dtype], tmp_path / "npu" / "out")

    ort_eval = evaluate(ort_out.output_dir, demo.label_file, prep_dir=prep["float32"])
    npu_eval = evaluate(npu_out.output_dir, demo.label_file, prep_dir=prep[ascend_dtype])
    assert npu_eval.image_count == ort_eval.image_count == 10
    assert (npu_eval.top1, npu_eval.top5) == (ort_eval.top1, ort_eval.top5)
    for prep_file in read_manifest(prep["float32"]).files:  # real slots only: padding differs between dtypes
        name, real = prep_file.name.replace(".bin", "_0.bin"), len(prep_file.images)
        ort_logits = np.fromfile(ort_out.output_dir / name, dtype=np.float32).reshape(4, -1)[:real]
        npu_logits = np.fromfile(npu_out.output_dir / name, dtype=np.float32).reshape(4, -1)[:real]
        assert (ort_logits.argmax(1) == npu_logits.argmax(1)).all()
        np.testing.assert_allclose(npu_logits, ort_logits, rtol=1e-3, atol=1e-3)
