"""ais_bench: its command lines, the files it reads and writes (modes it insists on, shard folders, where its summary
lands), and its output read back (errors, performance figures)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convmixer_tasks.backends.ascend.tools import ToolRun
from convmixer_tasks.backends.base import Artifact
from convmixer_tasks.errors import BackendError, ConfigError
from convmixer_tasks.stages.aisbench_format import (
    OLD_SUMMARY_NAME,
    PERCENTILE_KEY,
    natural_key,
    output_name,
    parse_compute_time,
    parse_throughput,
    stats,
    summary_path,
    throughput,
)

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
PERF_DIRNAME = "perf"
MAX_OUTPUT_PARENT_MODE = 0o750  # newer ais_bench refuses an existing --output folder with any other bit set
INPUT_WRITE_BITS = stat.S_IWGRP | stat.S_IWOTH  # newer ais_bench refuses input files with either bit

INSTALL_AIS_BENCH = (
    "ais_bench is not on PyPI: on the NPU host build its wheels from Ascend/tools "
    "ais-bench_workload/tool/ais_bench (`pip3 wheel ./backend/` then `pip3 wheel ./`, with the CANN "
    "set_env.sh sourced) and `pip3 install aclruntime-*.whl ais_bench-*.whl`, or point the backend's "
    "`python` setting at the interpreter that has them"
)


def ais_bench_error_lines(output: str) -> list[str]:
    """[ERROR] lines and the exception line of a traceback: what explains an ais_bench failure."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    picked = [line for line in lines if line.startswith("[ERROR]")]
    if "Traceback (most recent call last):" in output:
        exception = [line for line in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line)]
        picked += exception[-1:]
    return picked


def exit_0_failure(run: ToolRun, problem: str, fix: str) -> str:
    """The message for a failure ais_bench reports only in its output (exit 0): its own [ERROR] lines first, with
    what to do about them, then what we found missing; without such lines, ours and ``fix``."""
    errors = ais_bench_error_lines(run.output)
    if errors:
        return (
            f"ais_bench printed: {'; '.join(errors)} (and exited 0); fix what it reports (`npu-smi info` shows the "
            f"device's state) and re-run — {problem}"
        )
    return f"{problem}; ais_bench printed no [ERROR] line; {fix}"


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


def infer_argv(command: list[str], artifact: Artifact, input_folder: Path, staging: Path, device_id: int) -> list[str]:
    """ais_bench's inference command line: every file of ``input_folder`` into ``staging`` (its --output and
    --output_dirname), outputs as BIN."""
    # fmt: off
    return [
        *command,
        "--model", str(Path(artifact.path).resolve()), "--input", str(input_folder),
        "--output", str(staging.parent),
        "--output_dirname", staging.name, "--outfmt", "BIN", "--batchsize", str(artifact.batch_size),
        "--device", str(device_id),
    ]
    # fmt: on


def benchmark_argv(
    command: list[str], artifact: Artifact, loop: int, warmup: int, output: Path, device_id: int
) -> list[str]:
    """ais_bench's pure-inference benchmark command line (no --input); its summary lands in ``output/perf``."""
    # fmt: off
    return [
        *command,
        "--model", str(Path(artifact.path).resolve()), "--loop", str(loop),
        "--batchsize", str(artifact.batch_size),
        "--warmup_count", str(warmup), "--output", str(output), "--output_dirname", PERF_DIRNAME,
        "--device", str(device_id),
    ]
    # fmt: on


def check_ais_bench_run(run: ToolRun, what: str) -> None:
    if run.returncode == 0:
        return
    errors = ais_bench_error_lines(run.output)
    detail = "; ".join(errors) if errors else run.output.strip()[-800:] or "no output"
    raise BackendError(
        f"ais_bench {what} failed with exit status {run.returncode}: {detail}. Command: {' '.join(run.argv)}"
    )


def settle_summary(output_dir: Path, run: ToolRun) -> Path:
    """The summary at our contract's place ``<output_dir>_summary.json`` (older ais_bench writes it inside)."""
    target = summary_path(output_dir)
    old = output_dir / OLD_SUMMARY_NAME
    if old.is_file():
        os.replace(old, target)
    if not target.is_file():
        raise BackendError(
            exit_0_failure(
                run,
                f"ais_bench exited 0 but wrote no summary at {target} (nor {old})",
                "check that it ran with --output",
            )
        )
    return target


def check_outputs(output_dir: Path, names: Sequence[str], run: ToolRun) -> None:
    expected = [output_name(name) for name in names]
    missing = [name for name in expected if not (output_dir / name).is_file()]
    if missing:
        problem = (
            f"ais_bench exited 0 but {len(missing)} of {len(expected)} outputs are missing in "
            f"{output_dir} (e.g. {', '.join(missing[:3])})"
        )
        raise BackendError(exit_0_failure(run, problem, "re-run inference"))
    sizes = {(output_dir / name).stat().st_size for name in expected}
    if len(sizes) != 1 or 0 in sizes:
        raise BackendError(f"ais_bench outputs in {output_dir} have unequal or zero sizes {sorted(sizes)}")
