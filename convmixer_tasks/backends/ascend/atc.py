"""ATC: its command line and the AIPP config for uint8 input (both from the model card), and its run judged the way
ATC reports success."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from convmixer_tasks.backends import base
from convmixer_tasks.backends.ascend.tools import ToolRun
from convmixer_tasks.backends.cann_env import SET_ENV_SETTING
from convmixer_tasks.errors import CompileError, ConfigError
from convmixer_tasks.models.card import Aipp, ModelCard
from convmixer_tasks.models.registry import default_card
from convmixer_tasks.stages.onnxgraph import graph_inputs
from convmixer_tasks.stages.prepfolder import input_shape

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


def aipp_config(aipp: Aipp | None = None) -> str:
    """Static AIPP: uint8 RGB of ``src_size`` in, the optional crop, then ``(x - min_chn) · var_reci`` per channel on
    the NPU (``min_chn = 255·mean``, ``var_reci = 1/(255·std)``: the float transform). Default: the default model's."""
    aipp = aipp or default_card().uint8_aipp()

    lines = [
        "aipp_op {",
        "  aipp_mode: static",
        "  related_input_rank: 0",
        f"  input_format: {aipp.input_format}",
        f"  src_image_size_w: {aipp.src_size}",
        f"  src_image_size_h: {aipp.src_size}",
    ]
    if aipp.crop and aipp.crop_size is not None:
        start_h, start_w = aipp.crop_start
        lines += [
            "  crop: true",
            f"  load_start_pos_h: {start_h}",
            f"  load_start_pos_w: {start_w}",
            f"  crop_size_w: {aipp.crop_size}",
            f"  crop_size_h: {aipp.crop_size}",
        ]
    lines.append("  csc_switch: false")
    lines += [f"  min_chn_{c}: {value:.16g}" for c, value in enumerate(aipp.min_chn)]
    lines += [f"  var_reci_chn_{c}: {value:.16g}" for c, value in enumerate(aipp.var_reci)]
    return "\n".join([*lines, "}"]) + "\n"


def om_input_shape(batch_size: int, input_dtype: str, card: ModelCard | None = None) -> list[int]:
    """The OM's input: NCHW float32 at the model's size, or (with AIPP) NHWC uint8 at the AIPP source size."""
    card = card or default_card()
    if input_dtype == "uint8":
        return input_shape(batch_size, input_dtype, card.uint8_aipp().src_size)
    return input_shape(batch_size, input_dtype, card.input_size)


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
    """ATC's command line; ``output_base`` has no ``.om`` (ATC appends it). The shape is the tensor the model takes,
    after AIPP (224/299), never the uint8 file's size; the card adds its guide's extras."""
    card = options.card()
    size = card.input_size
    argv = [
        atc,
        "--framework=5",
        f"--model={onnx_path}",
        f"--output={output_base}",
        "--input_format=NCHW",
        f"--input_shape={input_name}:{batch_size},3,{size},{size}",
        f"--soc_version={soc_version}",
    ]
    if card.atc.enable_small_channel:
        argv.append("--enable_small_channel=1")
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
