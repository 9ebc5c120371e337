"""ais_bench's output layout, summary JSON and performance lines — written by both backends, read by the evaluator.

Layout (docs/../shared/spec/ascend-tools.md): ``{output}/{dirname}/input_00000_0.bin`` (input basename up to the
first dot, ``_{output index}``, outfmt lower-cased) and the summary as the sibling ``{output}/{dirname}_summary.json``
(ais_bench before late 2022: ``sumary.json`` inside the folder, without ``count``/``npu_compute_time_list``/``pid``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from convmixer_tasks.errors import BackendError, ConfigError, EvalError
from convmixer_tasks.fileio import atomic_write_json, read_json

OUTFMTS = ("bin", "npy", "txt")
OLD_SUMMARY_NAME = "sumary.json"  # sic: the old generation's spelling
PERCENTILE_KEY = "percentile(99%)"
STAT_KEYS = ("min", "max", "mean", "median", PERCENTILE_KEY, "count")
TIME_SECTIONS = ("NPU_compute_time", "H2D_latency", "D2H_latency")
THROUGHPUT_FORMULA = "1000*batchsize/NPU_compute_time.mean"
OUTPUT_FILE_RE = re.compile(r"^[^.]+_\d+\.(bin|npy|txt)$")
STAGING_MARK = ".partial-"  # ".<dirname>.partial-<pid>": an infer's outputs before they are complete
# Our key in the summary: ``prepfolder.manifest_identity`` of the prep folder the outputs were inferred from.
PREP_MANIFEST_KEY = "convmixer_prep_manifest_sha256"


def output_name(input_name: str | os.PathLike, index: int = 0, fmt: str = "bin") -> str:
    """``a/input_00000.bin`` → ``input_00000_0.bin``; like ais_bench, the name stops at the FIRST dot."""
    return f"{os.path.basename(os.fspath(input_name)).split('.')[0]}_{index}.{fmt.lower()}"


def summary_path(output_dir: str | os.PathLike) -> Path:
    """The new-generation summary file: sibling ``<dir>_summary.json`` of the output folder."""
    output_dir = Path(os.path.abspath(output_dir))
    return output_dir.with_name(output_dir.name + "_summary.json")


def clear_previous_outputs(output_dir: str | os.PathLike) -> None:
    """Remove an earlier result at ``output_dir`` (only ais_bench output files and its summary); refuse anything
    else. Done before a run starts, so a run that dies never leaves the previous model's outputs looking current."""
    output_dir = Path(output_dir)
    summary = summary_path(output_dir)
    if output_dir.is_dir():
        foreign = [
            p.name
            for p in output_dir.iterdir()
            if not (p.is_file() and (OUTPUT_FILE_RE.match(p.name) or p.name == OLD_SUMMARY_NAME))
        ]
        if foreign:
            raise ConfigError(
                f"output folder {output_dir} exists and holds files that are not ais_bench outputs "
                f"({', '.join(sorted(foreign)[:5])}); choose another output folder or empty it"
            )
        shutil.rmtree(output_dir)
    elif output_dir.exists():
        raise ConfigError(f"output path {output_dir} exists and is not a folder; choose another output folder")
    summary.unlink(missing_ok=True)


def remove_outputs(output_dir: str | os.PathLike) -> None:
    shutil.rmtree(output_dir, ignore_errors=True)
    summary_path(output_dir).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _clear_stale_staging(output_dir: Path) -> None:
    """Remove the staging folders of killed runs into ``output_dir`` (their pid is gone); a live one is left."""
    prefix = f".{output_dir.name}{STAGING_MARK}"
    if not output_dir.parent.is_dir():
        return
    for entry in output_dir.parent.iterdir():
        if not entry.name.startswith(prefix) or entry.name.endswith("_summary.json"):
            continue
        pid = entry.name[len(prefix) :]
        if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
            remove_outputs(entry)


@contextlib.contextmanager
def staged_outputs(output_dir: str | os.PathLike, prep_manifest: str | None = None) -> Iterator[Path]:
    """Yield a sibling staging folder for a run's outputs; they become ``output_dir`` only if the block finishes.

    The previous result at ``output_dir`` is removed first and the staging folder (with its sibling summary) on any
    failure, so after a crash or ``kill -9`` the path holds either nothing or one run's complete outputs — never a
    mix of two models. The summary moves in last: it marks the outputs complete. ``prep_manifest`` (the inputs'
    ``manifest_identity``) is recorded in it, so eval can tell which prep folder the outputs belong to.
    """
    output_dir = Path(output_dir)
    clear_previous_outputs(output_dir)
    _clear_stale_staging(output_dir)
    staging = output_dir.with_name(f".{output_dir.name}{STAGING_MARK}{os.getpid()}")
    remove_outputs(staging)
    try:
        yield staging
        staged_summary = summary_path(staging)
        if (staging / OLD_SUMMARY_NAME).is_file():
            os.replace(staging / OLD_SUMMARY_NAME, staged_summary)
        if prep_manifest is not None and staged_summary.is_file():
            atomic_write_json(staged_summary, {**read_json(staged_summary), PREP_MANIFEST_KEY: prep_manifest})
        os.replace(staging, output_dir)
        if staged_summary.is_file():
            os.replace(staged_summary, summary_path(output_dir))
    except BaseException:
        remove_outputs(staging)
        remove_outputs(output_dir)
        raise


def natural_key(name: str) -> list[Any]:
    """Sort key that compares digit runs as integers, case-insensitively (how ais_bench orders a folder)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def throughput(batch_size: float, mean_ms: float) -> float:
    """ais_bench's figure: images per second from the mean compute time of one batch (0 when nothing was timed)."""
    return 1000.0 * batch_size / mean_ms if mean_ms > 0 else 0.0


def check_timing(throughput_value: float, mean_ms: float, what: str) -> None:
    """Refuse a measurement that timed nothing: a mean compute time of 0 ms (or not finite) gives throughput 0 or
    infinity, which would be recorded, and gated, as a figure."""
    if not (math.isfinite(mean_ms) and mean_ms > 0 and math.isfinite(throughput_value) and throughput_value > 0):
        raise BackendError(
            f"ais_bench {what} reported a mean NPU compute time of {mean_ms:g} ms and a throughput of "
            f"{throughput_value:g}: nothing was timed, so there is no figure to record; check the device "
            "(`npu-smi info`) and the ais_bench version, then re-run the benchmark"
        )


def stats(times_ms: Iterable[float]) -> dict[str, float | int]:
    """min/max/mean/median/percentile(99%)/count as ais_bench reports them (numpy's percentile; zeros if empty)."""
    import numpy as np

    values = np.asarray(list(times_ms), dtype=np.float64)
    if values.size == 0:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, PERCENTILE_KEY: 0.0, "count": 0}
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        PERCENTILE_KEY: float(np.percentile(values, 99)),
        "count": int(values.size),
    }


def write_summary(
    output_dir: str | os.PathLike,
    filesinfo: dict[int | str, dict[str, list[str]]],
    compute_times_ms: list[float],
    batch_size: int,
    args: dict[str, Any] | None = None,
    h2d_ms: list[float] | None = None,
    d2h_ms: list[float] | None = None,
    pid: int | None = None,
) -> Path:
    """Write ``<output_dir>_summary.json`` atomically with the new-generation keys; returns its path."""
    compute = stats(compute_times_ms)
    summary = {
        "filesinfo": {
            str(k): {"infiles": list(v["infiles"]), "outfiles": list(v["outfiles"])} for k, v in filesinfo.items()
        },
        "args": dict(args or {}),
        "NPU_compute_time": compute,
        "H2D_latency": stats(h2d_ms or []),
        "D2H_latency": stats(d2h_ms or []),
        "throughput": throughput(batch_size, compute["mean"]),
        "npu_compute_time_list": [float(t) for t in compute_times_ms],
        "pid": os.getpid() if pid is None else pid,
    }
    return atomic_write_json(summary_path(output_dir), summary)


def find_summary(output_dir: str | os.PathLike) -> Path:
    """The summary of an output folder, either generation; prefers the new sibling file."""
    for candidate in (summary_path(output_dir), Path(output_dir) / OLD_SUMMARY_NAME):
        if candidate.is_file():
            return candidate
    raise EvalError(
        f"no ais_bench summary for {output_dir}: neither {summary_path(output_dir)} nor "
        f"{Path(output_dir) / OLD_SUMMARY_NAME} exists; re-run inference with --output set"
    )


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read a summary (a summary file, or an output folder to look beside/inside) of either generation.

    Missing new-generation keys are filled so callers see one shape: ``count`` = None when unknown,
    ``npu_compute_time_list`` = [], ``pid`` = None. ``generation`` is "new" or "old"; ``path`` is the file read.
    """
    path = Path(path)
    file = find_summary(path) if path.is_dir() else path
    try:
        data = read_json(file)
    except (OSError, ValueError) as exc:
        raise EvalError(f"ais_bench summary {file} is unreadable ({exc}); re-run inference") from exc
    if not isinstance(data, dict):
        raise EvalError(f"ais_bench summary {file} is not a JSON object; re-run inference")
    data.setdefault("filesinfo", {})
    data.setdefault("args", {})
    for section in TIME_SECTIONS:
        block = dict(data.get(section) or {})
        block.setdefault("count", None)
        data[section] = block
    data.setdefault("npu_compute_time_list", [])
    data.setdefault("pid", None)
    data.setdefault("throughput", None)
    data["generation"] = "old" if file.name == OLD_SUMMARY_NAME else "new"
    data["path"] = str(file)
    return data


def read_output(path: str | os.PathLike, last_dim: int, dtype: str = "float32"):
    """One output file as a 2-D array ``(-1, last_dim)``: BIN raw (no header), NPY, or TXT (one row per line)."""
    import numpy as np

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt == "bin":
        data = np.fromfile(path, dtype=dtype)
    elif fmt == "npy":
        data = np.load(path, allow_pickle=False)
    elif fmt == "txt":
        data = np.loadtxt(path, dtype=dtype, ndmin=2)
    else:
        raise EvalError(f"output file {path} has format {fmt!r}; ais_bench writes one of {', '.join(OUTFMTS)}")
    if data.size % last_dim or (data.ndim == 2 and data.shape[1] != last_dim and fmt == "txt"):
        shape = f"rows of {data.shape[1]} values" if fmt == "txt" and data.ndim == 2 else f"{data.size} values"
        # The class count is the model's (the evaluator has no flag for it): the file is what is wrong.
        raise EvalError(
            f"output file {path} holds {shape}, not whole rows of {last_dim} class logits: not this model's "
            "outputs, or a write cut short; re-run inference into an empty folder"
        )
    return data.reshape(-1, last_dim)


# --- stdout performance lines (every generation) ------------------------------------------------------------------

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
# "throughput 1000*batchsize.mean(1)/NPU_compute_time.mean(0.66): X", "throughput (1000*batchsize/NPU_compute_time): X",
# "throughput 1000*batchsize(16)/NPU_compute_time.mean(…): X", "Throughput …: X"
# A line start or a "[LEVEL]" prefix: progress text without a newline may precede the log record.
_THROUGHPUT_RE = re.compile(
    r"(?:^|\[\w+\]\s*)throughput\b[^\n]*?:\s*" + _NUMBER + r"\s*$", re.IGNORECASE | re.MULTILINE
)
_SUMMARY_THROUGHPUT_RE = re.compile(r"summary throughput\s*:\s*" + _NUMBER, re.IGNORECASE)
_COMPUTE_RE = re.compile(
    r"NPU_compute_time \(ms\):\s*min = "
    + _NUMBER
    + r",\s*max = "
    + _NUMBER
    + r",\s*mean = "
    + _NUMBER
    + r",\s*median = "
    + _NUMBER
    + r",\s*percentile\(99%\) = "
    + _NUMBER
)


def parse_throughput(stdout: str) -> float:
    """The throughput ais_bench printed; a multi-device run's ``summary throughput`` wins over per-device lines."""
    stdout = stdout.replace("\r", "\n")  # tqdm bars share lines with log output
    total = _SUMMARY_THROUGHPUT_RE.findall(stdout)
    if total:
        return float(total[-1])
    lines = _THROUGHPUT_RE.findall(stdout)
    if not lines:
        raise BackendError("ais_bench printed no throughput line")
    return float(lines[-1])


def parse_compute_time(stdout: str) -> dict[str, float]:
    """The last ``NPU_compute_time (ms): …`` line as {min, max, mean, median, percentile(99%)}."""
    found = _COMPUTE_RE.findall(stdout)
    if not found:
        raise BackendError("ais_bench printed no NPU_compute_time line")
    return dict(zip(("min", "max", "mean", "median", PERCENTILE_KEY), (float(v) for v in found[-1]), strict=False))
