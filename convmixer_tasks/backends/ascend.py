"""The Ascend backend: ATC compiles ONNX to an OM, ais_bench runs it, npu-smi names the chip.

Every tool runs as a subprocess (argv lists, never a shell string) inside the CANN environment captured once from
``set_env.sh`` (see ``cann_env.py``). Success is decided the way the tools report it — ATC: exit status 0 AND its
success line; ais_bench: exit status 0 AND the summary/output files — and every failure raises a ``BackendError``
that carries the tool's own error lines, with nothing half-written left behind. Nothing here falls back to another
runtime: without the tools this backend fails and says what to install.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convmixer_tasks.backends import base
from convmixer_tasks.backends.aisbench_format import (
    OLD_SUMMARY_NAME,
    PERCENTILE_KEY,
    THROUGHPUT_FORMULA,
    natural_key,
    output_name,
    parse_compute_time,
    parse_throughput,
    read_summary,
    staged_outputs,
    stats,
    summary_path,
    throughput,
)
from convmixer_tasks.backends.aisbench_progress import AisBenchProgress
from convmixer_tasks.backends.cann_env import SET_ENV_SETTING, UNKNOWN_VERSION, CannEnv, file_identity, load_cann_env
from convmixer_tasks.energy import KIND_POWER, PowerSource, PowerUnavailable
from convmixer_tasks.errors import BackendError, CompileError, ConfigError, ToolMissingError
from convmixer_tasks.onnxgraph import graph_inputs
from convmixer_tasks.prepfolder import input_shape
from convmixer_tasks.progress import working
from convmixer_tasks.quiet import DeviceState
from convmixer_tasks.variants import INPUT

ATC_SUCCESS_LINE = "ATC run success, welcome to the next use."
ATC_CODE_RE = re.compile(r"^[EW][0-9A-Z]\d{4}:.*$", re.MULTILINE)
# "Ascend" + a 3-digit family + an optional model suffix (310P3, 910B4-1, 910ProA) or "_dddd" (910_9391).
# A suffix may not start with a digit, which is what rejects the seed guide's "Ascend310310P3".
SOC_RE = re.compile(r"^Ascend\d{3}(?:[A-Za-z][A-Za-z0-9]*(?:-\d+)?|_\d{4})?$")
SOC_EXAMPLES = "Ascend310P3, Ascend910B3, Ascend310B1, Ascend910A, Ascend910_9391"
# First row after each "+===" separator of `npu-smi info`: NPU id, Name, Health.
NPU_ROW_RE = re.compile(r"^\|\s*(\d+)\s+(\S+)\s+\|\s*(\w+)")
NPU_NAME_RE = re.compile(r"^\d{3}[A-Za-z0-9_-]*$")
HEALTHY = "OK"
# `npu-smi info -t <type> -i <npu>` prints "\t<name padded to 30> : <value>" lines.
NPU_SMI_VALUE_RE = re.compile(r"^\s*(\S[^:]*?)\s*:\s*(.*?)\s*$")
# Real-time readings only: 310/310B print "Rated Power Dissipation(W)", a rating, not a measurement.
POWER_LABELS = ("NPU Real-time Power(W)", "Power Dissipation(W)")
AICORE_USAGE = "Aicore Usage Rate(%)"
# Header of `npu-smi info`: "| npu-smi 23.0.6   Version: 23.0.6 |" — the second is the driver's version.
DRIVER_VERSION_RE = re.compile(r"\bVersion:\s*(\S+)")
# Process table rows of `npu-smi info`: | NPU  Chip | Process id | Process name | Process memory(MB) |
PROCESS_ROW_RE = re.compile(r"^\|\s*(\d+)\s+(\d+)\s*\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*(\d+)")
# `npu-smi info -m` rows: NPU ID, Chip ID, Chip Logic ID (the device id ACL and ais_bench use, "-" for the MCU), Name.
CHIP_MAP_RE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+|-)\s+(\S.*?)\s*$")
NPU_SMI_TIMEOUT_S = 30
# Run by the ais_bench interpreter: its version (every upstream build says 0.0.2) and a digest of its Python files,
# which is what tells two builds apart.
AIS_BENCH_IDENTITY_PROBE = """
import hashlib, importlib.metadata as metadata, importlib.util, json, pathlib
spec = importlib.util.find_spec("ais_bench")
root = pathlib.Path(spec.submodule_search_locations[0])
digest = hashlib.sha256()
for path in sorted(root.rglob("*.py")):
    digest.update(path.relative_to(root).as_posix().encode() + b"\\0" + path.read_bytes())
try:
    version = metadata.version("ais_bench")
except metadata.PackageNotFoundError:
    version = None
print(json.dumps({"version": version, "sha256": digest.hexdigest()}))
"""
# The only --op_select_implmode values ATC accepts together with --optypelist_for_implmode.
OPTYPELIST_IMPLMODES = ("high_performance", "high_precision")
PERF_DIRNAME = "perf"
MAX_OUTPUT_PARENT_MODE = 0o750  # newer ais_bench refuses an existing --output folder with any other bit set
INPUT_WRITE_BITS = stat.S_IWGRP | stat.S_IWOTH  # newer ais_bench refuses input files with either bit

INSTALL_ATC = (
    "atc comes with the CANN toolkit: install Ascend-cann-toolkit_<version>_linux-<arch>.run, or set "
    f"{SET_ENV_SETTING} to the set_env.sh of the toolkit that has it"
)
INSTALL_NPU_SMI = (
    "npu-smi comes with the Ascend NPU driver (Ascend-hdk-<chip>-npu-driver); install it, or in a "
    "container mount /usr/local/bin/npu-smi and /usr/local/Ascend/driver"
)
INSTALL_AIS_BENCH = (
    "ais_bench is not on PyPI: on the NPU host build its wheels from Ascend/tools "
    "ais-bench_workload/tool/ais_bench (`pip3 wheel ./backend/` then `pip3 wheel ./`, with the CANN "
    "set_env.sh sourced) and `pip3 install aclruntime-*.whl ais_bench-*.whl`, or point the backend's "
    "`python` setting at the interpreter that has them"
)


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    name: str  # e.g. "310P3", as npu-smi prints it
    health: str  # "OK", "Warning", "Alarm", "Critical", ...

    @property
    def soc_version(self) -> str:
        return f"Ascend{self.name}"


@dataclass
class ToolRun:
    argv: list[str]
    returncode: int
    output: str  # stdout and stderr interleaved: ais_bench logs [ERROR] on stdout, tracebacks on stderr
    pid: int


log = logging.getLogger(__name__)


# --- chip names and npu-smi ---------------------------------------------------------------------------------------


def validate_soc_version(value: str) -> str:
    """``value`` if it is an Ascend SoC name as ATC's --soc_version takes it; else a ConfigError naming it."""
    if isinstance(value, str) and SOC_RE.match(value):
        return value
    hint = ""
    if isinstance(value, str) and re.match(r"^\d{3}", value):
        hint = f" (did you mean Ascend{value}? --soc_version needs the 'Ascend' prefix)"
    elif isinstance(value, str) and value.startswith("Ascend "):
        hint = f" (drop the space: {value.replace(' ', '')})"
    raise ConfigError(
        f"SoC version {value!r} is not an Ascend chip name{hint}; expected 'Ascend' + the Name column of "
        f"`npu-smi info`, e.g. {SOC_EXAMPLES} (--soc-version, or 'auto' to read it from npu-smi)"
    )


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """NPU rows of ``npu-smi info``: the first row after each ``+===`` separator of the device table.

    Parsing stops at the process table, whose rows (``| 0  0 | 48213 | python3 …``) would otherwise match too.
    """
    chips: list[NpuChip] = []
    after_separator = False
    for line in text.splitlines():
        if "Process id" in line or "Process name" in line:
            break
        if line.startswith("+="):
            after_separator = True
            continue
        if after_separator:
            match = NPU_ROW_RE.match(line)
            if match and NPU_NAME_RE.match(match.group(2)):
                chips.append(NpuChip(int(match.group(1)), match.group(2), match.group(3)))
        after_separator = False
    return chips


def soc_from_chips(chips: Sequence[NpuChip]) -> str:
    """ "Ascend" + the Name of the first healthy NPU, validated."""
    for chip in chips:
        if chip.health == HEALTHY:
            return validate_soc_version(chip.soc_version)
    if not chips:
        raise BackendError("`npu-smi info` listed no NPU; check the driver (npu-smi info) or pass --soc-version")
    listed = ", ".join(f"NPU {c.npu_id} {c.name} {c.health}" for c in chips)
    raise BackendError(f"`npu-smi info` lists no healthy NPU ({listed}); fix the device or pass --soc-version")


def npu_smi_values(text: str) -> dict[str, str]:
    """``name: value`` of an ``npu-smi info -t <type>`` answer (for one chip; the first of a name wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = NPU_SMI_VALUE_RE.match(line)
        if match:
            values.setdefault(match.group(1), match.group(2))
    return values


def parse_power(text: str) -> float:
    """Watts from ``npu-smi info -t power``; PowerUnavailable when it shows none (NA, or only a rated figure)."""
    values = npu_smi_values(text)
    for label in POWER_LABELS:
        if label in values:
            try:
                watts = float(values[label])
            except ValueError:
                raise PowerUnavailable(f"npu-smi shows {label} = {values[label]!r}, not a number") from None
            if watts < 0:
                raise PowerUnavailable(f"npu-smi shows a negative {label} ({watts})")
            return watts
    shown = ", ".join(name for name in values if "Power" in name) or "no power line"
    raise PowerUnavailable(f"npu-smi shows no real-time power ({shown}); expected one of {', '.join(POWER_LABELS)}")


def parse_chip_map(text: str) -> dict[int, tuple[int, int]]:
    """``npu-smi info -m``: device (chip logic) id → (NPU id, chip id); MCU rows (logic id "-") left out."""
    found: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        match = CHIP_MAP_RE.match(line)
        if match and match.group(3) != "-":
            found[int(match.group(3))] = (int(match.group(1)), int(match.group(2)))
    return found


def parse_processes(text: str) -> list[tuple[int, int, int, str, int]]:
    """(NPU, chip, pid, name, memory MB) rows of the process table of ``npu-smi info``."""
    rows = []
    in_processes = False
    for line in text.splitlines():
        if "Process id" in line:
            in_processes = True
            continue
        match = PROCESS_ROW_RE.match(line) if in_processes else None
        if match:
            npu, chip, pid, name, memory = match.groups()
            rows.append((int(npu), int(chip), int(pid), name, int(memory)))
    return rows


def parse_driver_version(text: str) -> str | None:
    """The driver version from the header of ``npu-smi info`` (None when the header is not there)."""
    for line in text.splitlines()[:5]:
        match = DRIVER_VERSION_RE.search(line)
        if match:
            return match.group(1)
    return None


# --- ATC ----------------------------------------------------------------------------------------------------------


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


# --- ais_bench ----------------------------------------------------------------------------------------------------


def ais_bench_error_lines(output: str) -> list[str]:
    """[ERROR] lines and the exception line of a traceback: what explains an ais_bench failure."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    picked = [line for line in lines if line.startswith("[ERROR]")]
    if "Traceback (most recent call last):" in output:
        exception = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line)]
        picked += exception[-1:]
    return picked


def printed_errors(run: ToolRun) -> str:
    """``; ais_bench printed: …`` with its [ERROR] lines, for failures it reports only in its output (exit 0)."""
    errors = ais_bench_error_lines(run.output)
    return f"; ais_bench printed: {'; '.join(errors)}" if errors else "; ais_bench printed no [ERROR] line"


def ais_bench_input_files(folder: Path) -> list[str]:
    """The names ais_bench would take from ``folder``: *.bin/*.npy in either case, naturally sorted."""
    names = [p.name for p in folder.iterdir() if p.is_file() and p.suffix in (".bin", ".BIN", ".npy", ".NPY")]
    return sorted(names, key=natural_key)


def link_shard_folder(prep_dir: Path, names: Sequence[str], folder: Path) -> Path:
    """A folder holding exactly ``names`` from ``prep_dir`` as hard links (ais_bench takes folders, not lists, and
    newer generations refuse symlinks). Across file systems the files are copied instead."""
    folder.mkdir(mode=MAX_OUTPUT_PARENT_MODE)
    for name in names:
        try:
            os.link(prep_dir / name, folder / name)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copy2(prep_dir / name, folder / name)
    return folder


def prepare_output_parent(parent: Path) -> None:
    """Create ais_bench's --output folder with mode 0o750, or tighten an existing one we own to at most 0o750."""
    if not parent.exists():
        parent.mkdir(mode=MAX_OUTPUT_PARENT_MODE, parents=True)
        os.chmod(parent, MAX_OUTPUT_PARENT_MODE)  # mkdir's mode is masked by the umask; state it exactly
        return
    mode = stat.S_IMODE(parent.stat().st_mode)
    if mode & ~MAX_OUTPUT_PARENT_MODE:
        if parent.stat().st_uid != os.getuid():
            raise ConfigError(
                f"output parent folder {parent} has mode {oct(mode)} and is not ours to change; newer ais_bench "
                f"refuses --output folders above {oct(MAX_OUTPUT_PARENT_MODE)}: `chmod 750 {parent}` or pick "
                "another output folder"
            )
        os.chmod(parent, mode & MAX_OUTPUT_PARENT_MODE)


def tighten_input_files(paths: Sequence[Path]) -> None:
    """Drop group/other write from input files we own; newer ais_bench refuses such inputs, and a worker under umask
    002 (the Airflow image's) writes prep files 0o664. A file we do not own cannot be changed: say how to fix it."""
    for path in paths:
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if not mode & INPUT_WRITE_BITS:
            continue
        if info.st_uid != os.getuid():
            raise ConfigError(
                f"input file {path} has mode {oct(mode)} and is not ours to change; newer ais_bench refuses input "
                f"files writable by group or others: `chmod go-w {path.parent}/*.bin` or re-run preprocess as this user"
            )
        os.chmod(path, mode & ~INPUT_WRITE_BITS)


def perf_from_summary(summary: dict[str, Any], batch_size: int) -> tuple[float, dict[str, float], list[float]]:
    """(throughput, {mean, median, p99}, samples) from a summary JSON of either generation.

    Multi-threaded runs record only mean/count: median and p99 then come from ``npu_compute_time_list``.
    """
    compute = summary.get("NPU_compute_time") or {}
    samples = [float(t) for t in summary.get("npu_compute_time_list") or [] if not isinstance(t, (list, tuple))]
    latency: dict[str, float] = {}
    for key in ("mean", "median", PERCENTILE_KEY):
        if compute.get(key) is not None:
            latency[key] = float(compute[key])
    if len(latency) < 3 and samples:
        computed = stats(samples)
        for key in ("mean", "median", PERCENTILE_KEY):
            latency.setdefault(key, float(computed[key]))
    if len(latency) < 3:
        raise BackendError(
            f"ais_bench summary {summary.get('path', '')} has no NPU_compute_time statistics "
            f"(found {sorted(compute)}); re-run the benchmark"
        )
    value = summary.get("throughput")
    return (float(value) if value is not None else throughput(batch_size, latency["mean"])), latency, samples


def perf_from_stdout(output: str) -> tuple[float, dict[str, float], list[float]]:
    """(throughput, {mean, median, p99}, []) from ais_bench's printed performance summary, any generation."""
    compute = parse_compute_time(output)
    return parse_throughput(output), {k: compute[k] for k in ("mean", "median", PERCENTILE_KEY)}, []


def read_streaming(proc: subprocess.Popen, timeout_s: float, on_output: Callable[[str], None]) -> bytes:
    """All of ``proc``'s stdout, also handed to ``on_output`` chunk by chunk while it runs; raises TimeoutExpired."""
    chunks: list[bytes] = []
    stdout = proc.stdout
    assert stdout is not None, "run_tool opens stdout as a pipe"

    def pump() -> None:
        relay = True
        for chunk in iter(lambda: os.read(stdout.fileno(), 65536), b""):
            chunks.append(chunk)
            if relay:
                try:
                    on_output(chunk.decode(errors="replace"))
                except Exception:  # a broken relay must not stop the pipe from draining (the tool would block)
                    relay = False
                    log.debug("progress relay for %s failed; output still collected", proc.args, exc_info=True)

    reader = threading.Thread(target=pump, name="tool-output", daemon=True)
    reader.start()
    proc.wait(timeout=timeout_s)
    reader.join()
    return b"".join(chunks)


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the tool and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


# --- the backend --------------------------------------------------------------------------------------------------


class AscendBackend(base.Backend):
    """ATC + ais_bench + npu-smi on an Ascend host; settings come from get_backend("ascend", ...)."""

    name = "ascend"

    def __init__(
        self,
        device_id: int = 0,
        cann_set_env: str | os.PathLike | None = None,
        python: str = "python3",
        atc_log: str = "error",
        atc_timeout_s: float = 3 * 3600,
        ais_bench_timeout_s: float = 6 * 3600,
    ):
        if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
            raise ConfigError(f"NPU device id {device_id!r} is invalid; pass a non-negative integer (--device)")
        self.device_id = device_id
        self.cann_set_env = cann_set_env
        self.python = python
        self.atc_log = atc_log
        self.atc_timeout_s = atc_timeout_s
        self.ais_bench_timeout_s = ais_bench_timeout_s
        self._cann: CannEnv | None = None
        self._ais_bench_checked = False
        self._location: tuple[int, int] | None = None

    # -- environment and tools --

    @property
    def cann(self) -> CannEnv:
        """The CANN environment, sourced on first use (constructing the backend needs no Ascend host)."""
        if self._cann is None:
            self._cann = load_cann_env(self.cann_set_env)
        return self._cann

    def tool(self, name: str, install_hint: str) -> str:
        path = self.cann.which(name)
        if path is None:
            raise ToolMissingError(
                f"{name} not found on the PATH of the CANN environment ({self.cann.set_env}); {install_hint}"
            )
        return path

    def run_tool(
        self, argv: list[str], timeout_s: float, cwd: Path | None = None, on_output: Callable[[str], None] | None = None
    ) -> ToolRun:
        """Run ``argv`` in the CANN environment; ``on_output`` sees the output as it arrives (progress relays)."""
        try:
            # Own process group: a tool may be a wrapper that starts the real binary (atc → atc.bin); stopping only
            # the wrapper would leave the binary running and holding the pipe, so communicate() would never return.
            proc = subprocess.Popen(
                argv,
                env=self.cann.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ToolMissingError(f"{argv[0]} cannot be started ({exc})") from exc
        try:
            if on_output is None:
                output, _ = proc.communicate(timeout=timeout_s)
            else:
                output = read_streaming(proc, timeout_s, on_output)
        except subprocess.TimeoutExpired as exc:
            kill_process_group(proc)
            proc.communicate()
            raise BackendError(
                f"{os.path.basename(argv[0])} did not finish in {timeout_s:.0f}s and was stopped: {' '.join(argv)}"
            ) from exc
        except BaseException:  # a killed task (Airflow's SIGTERM handler raises) must not leave the tool running
            kill_process_group(proc)
            proc.wait()
            raise
        return ToolRun(argv=argv, returncode=proc.returncode, output=output.decode(errors="replace"), pid=proc.pid)

    def ais_bench_command(self) -> list[str]:
        """``python3 -m ais_bench`` with the host interpreter that has ais_bench installed (checked once)."""
        python = self.python if os.path.isabs(self.python) else self.cann.which(self.python)
        if python is None:
            raise ToolMissingError(
                f"{self.python} not found on the PATH of the CANN environment "
                f"({self.cann.set_env}); {INSTALL_AIS_BENCH}"
            )
        if not self._ais_bench_checked:
            probe = self.run_tool(
                [
                    python,
                    "-c",
                    "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('ais_bench') else 3)",
                ],
                120,
            )
            if probe.returncode != 0:
                raise ToolMissingError(f"the ais_bench module is not importable by {python}: {INSTALL_AIS_BENCH}")
            self._ais_bench_checked = True
        return [python, "-m", "ais_bench"]

    def npu_smi(self, *args: str) -> str:
        """The output of ``npu-smi <args>``; BackendError naming the command when it fails."""
        run = self.run_tool([self.tool("npu-smi", INSTALL_NPU_SMI), *args], NPU_SMI_TIMEOUT_S)
        if run.returncode != 0:
            raise BackendError(
                f"`npu-smi {' '.join(args)}` failed with status {run.returncode}: {run.output.strip()[-500:]}; "
                "check the NPU driver (is the device visible in this container?)"
            )
        return run.output

    def npu_chips(self) -> list[NpuChip]:
        return parse_npu_smi_info(self.npu_smi("info"))

    def npu_location(self) -> tuple[int, int]:
        """(NPU id, chip id) of ``device_id``: npu-smi's -i/-c take those, not the device id (``npu-smi info -m``)."""
        if self._location is None:
            chips = parse_chip_map(self.npu_smi("info", "-m"))
            if self.device_id not in chips:
                raise BackendError(
                    f"device {self.device_id} is not in `npu-smi info -m` (devices {sorted(chips)}); pick one of "
                    "those (--device)"
                )
            self._location = chips[self.device_id]
        return self._location

    def device_state(self) -> DeviceState:
        """Busy when the chip's AI Core is in use or its process table lists a process; unknown (not busy, said so)
        when npu-smi cannot tell."""
        try:
            npu, chip = self.npu_location()
            processes = [row for row in parse_processes(self.npu_smi("info")) if row[:2] == (npu, chip)]
            usage = npu_smi_values(self.npu_smi("info", "-t", "usages", "-i", str(npu), "-c", str(chip)))
        except BackendError as exc:
            return DeviceState(
                busy=False, detail=f"npu-smi could not tell whether the device is idle: {exc}", known=False
            )
        aicore = usage.get(AICORE_USAGE)
        try:
            aicore_pct = float(aicore) if aicore is not None else None
        except ValueError:
            aicore_pct = None
        parts = [] if aicore_pct in (None, 0) else [f"AI Core {aicore_pct:g} %"]
        parts += [f"process {pid} {name} ({memory} MB)" for _, _, pid, name, memory in processes]
        busy = bool(processes) or bool(aicore_pct)
        if aicore_pct is None and not busy:  # no process, but the AI Core's use is unknown: not known to be idle
            detail = f"NPU {npu} chip {chip}: no process, but npu-smi showed no {AICORE_USAGE} ({aicore!r})"
            return DeviceState(busy=False, detail=detail, known=False)
        return DeviceState(busy=busy, detail=f"NPU {npu} chip {chip}: " + ("; ".join(parts) or "idle"))

    def power_source(self) -> PowerSource:
        """``npu-smi info -t power -i <npu>``: the card's real-time power, the reading ais_bench's
        --energy_consumption takes (on a 310P card the NPU chip itself has none, only the card's MCU)."""
        try:
            npu, _ = self.npu_location()
            argv = [self.tool("npu-smi", INSTALL_NPU_SMI), "info", "-t", "power", "-i", str(npu)]
        except BackendError as exc:
            raise PowerUnavailable(str(exc)) from exc

        def read() -> float:
            try:
                run = self.run_tool(argv, NPU_SMI_TIMEOUT_S)
            except BackendError as exc:  # a hung or vanished npu-smi ends the trace, not the benchmark
                raise PowerUnavailable(str(exc)) from exc
            if run.returncode != 0:
                raise PowerUnavailable(f"failed with status {run.returncode}: {run.output.strip()[-300:]}")
            return parse_power(run.output)

        return PowerSource(name=f"npu-smi info -t power -i {npu}", kind=KIND_POWER, read=read)

    def environment(self) -> dict[str, str | int | float | None]:
        """The NPU driver (npu-smi's header; None when npu-smi cannot say, e.g. a container without the driver
        tool, where the SoC was given by hand) and the ais_bench build (version + digest of its files)."""
        try:
            driver = parse_driver_version(self.npu_smi("info"))
        except BackendError as exc:
            log.warning("NPU driver version not recorded: %s", exc)
            driver = None
        return {"npu_driver_version": driver, "ais_bench": self.ais_bench_identity()}

    def ais_bench_identity(self) -> str:
        python = self.ais_bench_command()[0]
        run = self.run_tool([python, "-c", AIS_BENCH_IDENTITY_PROBE], 120)
        try:
            found = json.loads(run.output.strip().splitlines()[-1]) if run.returncode == 0 else None
        except (ValueError, IndexError):
            found = None
        if not isinstance(found, dict):
            raise BackendError(f"cannot identify the ais_bench build with {python}: {run.output.strip()[-300:]}")
        return f"{found.get('version') or 'unknown version'} sha256:{str(found.get('sha256'))[:16]}"

    def soc_version(self) -> str:
        return soc_from_chips(self.npu_chips())

    def runtime_identity(self, soc_version: str) -> str:
        """What makes an OM non-portable: the SoC and the toolkit (its version, else the atc binary itself)."""
        version = self.cann.toolkit_version
        if version == UNKNOWN_VERSION:
            version = f"atc {file_identity(self.tool('atc', INSTALL_ATC))}"
        return f"CANN {version}; {soc_version}"

    # -- the Backend interface --

    def describe(self) -> base.DeviceInfo:
        return base.DeviceInfo(backend=self.name, device=self.soc_version(), toolkit_version=self.cann.toolkit_version)

    def compile(
        self,
        onnx_path: str | os.PathLike,
        batch_size: int,
        cache_dir: str | os.PathLike,
        options: base.CompileOptions | None = None,
    ) -> base.Artifact:
        options = options or base.CompileOptions()
        soc = self.soc_version() if options.soc_version == "auto" else validate_soc_version(options.soc_version)
        options = dataclasses.replace(options, soc_version=soc)  # the cache key and record name the real chip
        atc = self.tool("atc", INSTALL_ATC)
        onnx_abs = Path(onnx_path).resolve()

        def build(tmp_artifact: Path) -> dict[str, Any]:
            input_name, rank = read_onnx_input(onnx_abs)  # only on a cache miss: the 1536/20 file is ~200 MB
            if rank != 4:
                raise ConfigError(f"ONNX model {onnx_path} input {input_name!r} has rank {rank}, not 4 (N,3,H,W)")
            aipp_cfg = None
            aipp_text = None
            if options.input_dtype == "uint8":
                aipp_text = aipp_config()
                aipp_cfg = tmp_artifact.parent / "aipp.cfg"
                aipp_cfg.write_text(aipp_text)
            output_base = tmp_artifact.with_name(tmp_artifact.name[: -len(".om")])
            argv = atc_argv(atc, onnx_abs, output_base, input_name, batch_size, soc, options, self.atc_log, aipp_cfg)
            # ATC drops fusion_result.json and kernel_meta/ into its working folder: keep them in the build folder.
            with working(f"ATC compile of {onnx_abs.name} at batch {batch_size} for {soc}"):
                run = self.run_tool(argv, self.atc_timeout_s, cwd=tmp_artifact.parent)
            check_atc_run(run, tmp_artifact, self.cann.env)
            return {
                "input_shape": om_input_shape(batch_size, options.input_dtype),
                "soc_version": soc,
                "toolkit_version": self.cann.toolkit_version,
                "onnx_input_name": input_name,
                "atc_argv": argv,
                "aipp_config": aipp_text,
                "atc_warnings": [line for line in ATC_CODE_RE.findall(run.output) if line.startswith("W")],
            }

        runtime = self.runtime_identity(soc)
        return base.compile_cached(
            onnx_path, batch_size, cache_dir, options, backend=self.name, runtime=runtime, suffix=".om", build=build
        )

    def infer(
        self,
        artifact: base.Artifact,
        prep_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        files: list[str] | None = None,
    ) -> base.InferResult:
        self._check_artifact(artifact)
        prep_dir = Path(prep_dir).resolve()  # newer ais_bench refuses symlinked paths: hand it real ones
        _, selected = base.select_prep_files(artifact, prep_dir, files)  # dtype/shape/size: ais_bench checks none
        names = [prep_file.name for prep_file in selected]
        output_dir = Path(output_dir).absolute()
        output_dir = output_dir.parent.resolve() / output_dir.name
        command = self.ais_bench_command()
        tighten_input_files([prep_dir / name for name in names])  # hard links below share the mode
        prepare_output_parent(output_dir.parent)

        link_folder = None
        input_folder = prep_dir
        try:
            with staged_outputs(output_dir) as staging:
                if ais_bench_input_files(prep_dir) != sorted(names, key=natural_key):
                    link_folder = output_dir.parent / f".{output_dir.name}_inputs"
                    shutil.rmtree(link_folder, ignore_errors=True)
                    input_folder = link_shard_folder(prep_dir, names, link_folder)
                # fmt: off
                argv = [
                    *command,
                    "--model", str(Path(artifact.path).resolve()), "--input", str(input_folder),
                    "--output", str(staging.parent),
                    "--output_dirname", staging.name, "--outfmt", "BIN", "--batchsize", str(artifact.batch_size),
                    "--device", str(self.device_id),
                ]
                # fmt: on
                relay = AisBenchProgress(f"ais_bench inference (batch {artifact.batch_size})")
                run = self.run_tool(argv, self.ais_bench_timeout_s, on_output=relay.feed)
                relay.close(finished=run.returncode == 0)
                self._check_ais_bench_run(run, "inference")
                self._settle_summary(staging, run)
                self._check_outputs(staging, names, run)
        finally:
            if link_folder is not None:
                shutil.rmtree(link_folder, ignore_errors=True)
        summary = summary_path(output_dir)
        return base.InferResult(output_dir=output_dir, summary_path=summary, file_count=len(names), outfmt="bin")

    def benchmark(self, artifact: base.Artifact, loop: int = 100, warmup: int = 5) -> base.BenchResult:
        self._check_artifact(artifact)
        if isinstance(loop, bool) or not isinstance(loop, int) or loop < 1:
            raise ConfigError(f"loop count {loop!r} is invalid; pass a positive integer (--loop)")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warm-up count {warmup!r} is invalid; pass 0 or more (--warmup)")
        command = self.ais_bench_command()
        with tempfile.TemporaryDirectory(prefix="ais_bench_perf_") as tmp:  # mode 0o700: fine for newer ais_bench
            # fmt: off
            argv = [
                *command,
                "--model", str(Path(artifact.path).resolve()), "--loop", str(loop),
                "--batchsize", str(artifact.batch_size),
                "--warmup_count", str(warmup), "--output", tmp, "--output_dirname", PERF_DIRNAME,
                "--device", str(self.device_id),
            ]
            # fmt: on
            relay = AisBenchProgress(f"ais_bench benchmark (batch {artifact.batch_size})")
            run = self.run_tool(argv, self.ais_bench_timeout_s, on_output=relay.feed)
            relay.close(finished=run.returncode == 0)
            self._check_ais_bench_run(run, "benchmark")
            perf_dir = Path(tmp) / PERF_DIRNAME
            has_summary = summary_path(perf_dir).is_file() or (perf_dir / OLD_SUMMARY_NAME).is_file()
            try:
                if has_summary:
                    value, latency, samples = perf_from_summary(read_summary(perf_dir), artifact.batch_size)
                else:
                    value, latency, samples = perf_from_stdout(run.output)
            except BackendError as exc:
                raise BackendError(f"{exc}{printed_errors(run)}") from exc
        return base.BenchResult(
            backend=self.name,
            batch_size=artifact.batch_size,
            loop=loop,
            warmup=warmup,
            throughput=value,
            latency_mean_ms=latency["mean"],
            latency_p50_ms=latency["median"],
            latency_p99_ms=latency[PERCENTILE_KEY],
            samples=samples,
            formula=THROUGHPUT_FORMULA,
        )

    # -- helpers --

    def _check_artifact(self, artifact: base.Artifact) -> None:
        if artifact.backend != self.name:
            raise ConfigError(
                f"artifact {artifact.path} was compiled by the {artifact.backend} backend, not "
                f"{self.name}; compile it with --backend {self.name}"
            )
        base.verify_artifact(artifact)

    @staticmethod
    def _check_ais_bench_run(run: ToolRun, what: str) -> None:
        if run.returncode == 0:
            return
        errors = ais_bench_error_lines(run.output)
        detail = "; ".join(errors) if errors else run.output.strip()[-800:] or "no output"
        raise BackendError(
            f"ais_bench {what} failed with exit status {run.returncode}: {detail}. Command: {' '.join(run.argv)}"
        )

    @staticmethod
    def _settle_summary(output_dir: Path, run: ToolRun) -> Path:
        """The summary at our contract's place ``<output_dir>_summary.json`` (older ais_bench writes it inside)."""
        target = summary_path(output_dir)
        old = output_dir / OLD_SUMMARY_NAME
        if old.is_file():
            os.replace(old, target)
        if not target.is_file():
            raise BackendError(
                f"ais_bench exited 0 but wrote no summary at {target} (nor {old}){printed_errors(run)}; "
                "check that it ran with --output"
            )
        return target

    @staticmethod
    def _check_outputs(output_dir: Path, names: Sequence[str], run: ToolRun) -> None:
        expected = [output_name(name) for name in names]
        missing = [name for name in expected if not (output_dir / name).is_file()]
        if missing:
            raise BackendError(
                f"ais_bench exited 0 but {len(missing)} of {len(expected)} outputs are missing in "
                f"{output_dir} (e.g. {', '.join(missing[:3])}){printed_errors(run)}"
            )
        sizes = {(output_dir / name).stat().st_size for name in expected}
        if len(sizes) != 1 or 0 in sizes:
            raise BackendError(f"ais_bench outputs in {output_dir} have unequal or zero sizes {sorted(sizes)}")
