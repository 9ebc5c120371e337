"""ATC: its command line (and the AIPP config for uint8 input), and its run judged the way ATC reports success."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from convmixer_tasks.backends import base
from convmixer_tasks.backends.ascend.tools import ToolRun
from convmixer_tasks.backends.cann_env import SET_ENV_SETTING
from convmixer_tasks.errors import CompileError, ConfigError
from convmixer_tasks.onnxgraph import graph_inputs
from convmixer_tasks.prepfolder import input_shape
from convmixer_tasks.variants import INPUT

ATC_SUCCESS_LINE = "ATC run success, welcome to the next use."
ATC_CODE_RE = re.compile(r"^[EW][0-9A-Z]\d{4}:.*$", re.MULTILINE)
# The only --op_select_implmode values ATC accepts together with --optypelist_for_implmode.
OPTYPELIST_IMPLMODES = ("high_performance", "high_precision")

INSTALL_ATC = (
    "atc comes with the CANN toolkit: install Ascend-cann-toolkit_<version>_linux-<arch>.run, or set "
    f"{SET_ENV_SETTING} to the set_env.sh of the toolkit that has it"
)


def read_onnx_input(onnx_path: str | os.PathLike) -> tuple[str, int]:
    """(name, rank) of the model's single graph input, read from the file (initialisers are not inputs)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"cannot read ONNX model {onnx_path} ({exc}); re-run the export step") from exc
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise ConfigError(
            f"ONNX model {onnx_path} has {len(inputs)} inputs {[i.name for i in inputs]}; the "
            "classifier export has exactly one image input"
        )
    (graph_input,) = inputs
    if graph_input.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConfigError(
            f"ONNX model {onnx_path} input {graph_input.name!r} is not float32; ATC's AIPP and the "
            "float32 prep files both expect the float32 export"
        )
    return graph_input.name, len(graph_input.type.tensor_type.shape.dim)


def aipp_config(size: int = INPUT.crop) -> str:
    """Static AIPP: uint8 RGB in, ``(x - 255·mean) · 1/(255·std)`` per channel on the NPU, i.e. the float transform."""

    lines = [
        "aipp_op {",
        "  aipp_mode: static",
        "  related_input_rank: 0",
        "  input_format: RGB888_U8",
        f"  src_image_size_w: {size}",
        f"  src_image_size_h: {size}",
        "  csc_switch: false",
    ]
    lines += [f"  min_chn_{c}: {255.0 * m:.16g}" for c, m in enumerate(INPUT.mean)]
    lines += [f"  var_reci_chn_{c}: {1.0 / (255.0 * s):.16g}" for c, s in enumerate(INPUT.std)]
    return "\n".join([*lines, "}"]) + "\n"


def om_input_shape(batch_size: int, input_dtype: str) -> list[int]:
    """The OM's input: NCHW float32, or (with AIPP) NHWC uint8."""
    return input_shape(batch_size, input_dtype)


def atc_argv(
    atc: str,
    onnx_path: str | os.PathLike,
    output_base: str | os.PathLike,
    input_name: str,
    batch_size: int,
    soc_version: str,
    options: base.CompileOptions,
    log_level: str = "error",
    aipp_cfg: str | os.PathLike | None = None,
) -> list[str]:
    """ATC's command line; ``output_base`` has no ``.om`` (ATC appends it)."""
    argv = [
        atc,
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={output_base}",
        "--input_format=NCHW",
        f"--input_shape={input_name}:{batch_size},3,{INPUT.crop},{INPUT.crop}",
        f"--soc_version={soc_version}",
    ]
    if options.op_select_implmode:
        argv.append(f"--op_select_implmode={options.op_select_implmode}")
        if options.optypelist_for_implmode:
            if options.op_select_implmode not in OPTYPELIST_IMPLMODES:  # ATC refuses the pair: say so before it runs
                raise ConfigError(
                    f"--optypelist_for_implmode={options.optypelist_for_implmode} only goes with --op_select_implmode "
                    f"{' or '.join(OPTYPELIST_IMPLMODES)}, not {options.op_select_implmode!r}; pick one of those or "
                    "clear optypelist_for_implmode"
                )
            argv.append(f"--optypelist_for_implmode={options.optypelist_for_implmode}")
    argv.append(f"--log={log_level}")
    if options.precision_mode:
        argv.append(f"--precision_mode={options.precision_mode}")
    if aipp_cfg is not None:
        argv.append(f"--insert_op_conf={aipp_cfg}")
    return argv


def plog_root(env: dict[str, str]) -> Path:
    """Where CANN writes plog files: $ASCEND_PROCESS_LOG_PATH, else $HOME/ascend/log."""
    if env.get("ASCEND_PROCESS_LOG_PATH"):
        return Path(env["ASCEND_PROCESS_LOG_PATH"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / "ascend" / "log"


def plog_location(env: dict[str, str], pid: int) -> str:
    """The plog files of process ``pid`` if any exist, else the folder they would be in."""
    root = plog_root(env)
    found = sorted(glob.glob(str(root / "*" / "plog" / f"plog-{pid}_*.log")))
    return ", ".join(found) if found else f"{root}/{{debug,run}}/plog/plog-{pid}_*.log"


def check_atc_run(run: ToolRun, om_path: Path, env: dict[str, str]) -> None:
    """Raise CompileError unless ATC exited 0, printed its success line and wrote the OM (partial OM removed)."""
    succeeded = run.returncode == 0 and ATC_SUCCESS_LINE in run.output
    if succeeded and om_path.is_file() and om_path.stat().st_size > 0:
        return
    if om_path.exists():
        om_path.unlink()
    if run.returncode != 0:
        reason = f"atc exited with status {run.returncode}"
    elif not succeeded:
        reason = f"atc exited 0 but never printed {ATC_SUCCESS_LINE!r}"
    else:
        reason = f"atc reported success but wrote no {om_path.name}"
    codes = [line.strip() for line in ATC_CODE_RE.findall(run.output)]
    failed_part = ""
    position = run.output.find("run failed")
    if position >= 0:
        following = [line.strip() for line in run.output[position + len("run failed") :].splitlines()]
        failed_part = " | ".join(line for line in following if line and line not in codes)[:600]
    detail = "; ".join(codes) if codes else (failed_part or run.output.strip()[-600:] or "no output")
    message = f"{reason}: {detail}"
    if codes and failed_part:
        message += f" (after 'run failed': {failed_part})"
    raise CompileError(f"{message}. Log: {plog_location(env, run.pid)}. Command: {' '.join(run.argv)}")
