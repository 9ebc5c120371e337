"""The body of the ais_bench double: flags, input grouping, running, output files, summary, performance lines.

Environment (set by tests through tests/ascend_doubles.py):
  AIS_BENCH_DOUBLE_GEN=up (default: 2025 upstream — path security rules, sibling <dir>_summary.json)
                      | t23 (2023 generation — no path rules, sibling summary)
                      | old (before late 2022 — summary as sumary.json inside the output folder)
  AIS_BENCH_DOUBLE_THROUGHPUT=current (default) | pre_2022_07 | mid_2022 | fork | multi | none
  AIS_BENCH_DOUBLE_MODE=ok (default) | crash (the C++ layer fails after the first batch's outputs were written)
  AIS_BENCH_DOUBLE_FIXED_MS=<float>  report this compute time for every run instead of the measured one
  AIS_BENCH_DOUBLE_SLEEP_MS=<float>  also spend this much wall time (ms) per executed batch, warm-ups and loops
                                     included, as the real tool spends device time (scale-out bench, worker-loss test)
  AIS_BENCH_DOUBLE_ARGV_LOG=<file>   append this call's argv as one JSON line
  NPU_SMI_DOUBLE_COUNT=<n>           devices present (shared with the npu-smi double; default 2)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import stat
import struct
import sys
import time
from typing import Any

import numpy as np

OM_MAGIC = b"OMDOUBLE"
PURE_INFER_FAKE_FILE = "pure_infer_data"
PADDING_INFER_FAKE_FILE = "padding_infer_fake_file"
PATH_WHITE_LIST = re.compile(r"^[_A-Za-z0-9/.-]+$")
MAX_OUTPUT_MODE = 0o750

logger = logging.getLogger("ais_bench")


class DoubleInferError(RuntimeError):
    pass


def str2bool(value: str) -> bool:
    lowered = str(value).lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError("Boolean value expected 'yes', 'true', 't', 'y', '1', 'no', 'false'...")


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is an invalid positive int value")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ais_bench")
    parser.add_argument("--model", "-m", required=True, help="the path of the om model")
    parser.add_argument("--input", "-i", default=None, help="input file or dir, comma separated")
    parser.add_argument("--output", "-o", default=None, help="inference data output path")
    parser.add_argument("--output_dirname", default=None, help="actual output directory name")
    parser.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    parser.add_argument("--loop", "-l", type=positive_int, default=1)
    parser.add_argument("--debug", type=str2bool, default=False)
    parser.add_argument("--device", "-d", default="0")
    parser.add_argument("--dymBatch", type=int, default=0)
    parser.add_argument("--dymHW", default=None)
    parser.add_argument("--dymDims", default=None)
    parser.add_argument("--dymShape", "--dym-shape", default=None)
    parser.add_argument("--auto_set_dymshape_mode", type=str2bool, default=False)
    parser.add_argument("--batchsize", type=int, default=None)
    parser.add_argument("--warmup_count", "--warmup-count", type=int, default=1)
    parser.add_argument("--display_all_summary", type=str2bool, default=False)
    return parser


# --- the double OM ------------------------------------------------------------------------------------------------


def load_om(path: str) -> tuple[dict, bytes]:
    with open(path, "rb") as handle:
        blob = handle.read()
    if not blob.startswith(OM_MAGIC) or len(blob) < len(OM_MAGIC) + 4:
        logger.error(f"load model from file failed, model file is {path}")
        raise DoubleInferError(f"[-1][ACL: invalid parameter] load model {path} failed")
    (meta_len,) = struct.unpack("<I", blob[len(OM_MAGIC) : len(OM_MAGIC) + 4])
    start = len(OM_MAGIC) + 4
    try:
        meta = json.loads(blob[start : start + meta_len])
    except ValueError:
        logger.error(f"load model from file failed, model file is {path}")
        # Chained implicitly, as ais_bench's own raise is: the double prints the traceback the tool prints.
        raise DoubleInferError(f"[-1][ACL: invalid parameter] load model {path} failed")  # noqa: B904
    return meta, blob[start + meta_len :]


class DoubleSession:
    """What InferSession would be: the OM's input/output descriptions and an execute() call."""

    def __init__(self, om_path: str):
        import onnxruntime

        self.meta, onnx_bytes = load_om(om_path)
        (self.input,) = self.meta["inputs"]
        self.dtype = np.dtype(self.input["dtype"])
        self.realsize = int(np.prod(self.input["shape"])) * self.dtype.itemsize
        self.sleep_s = float(os.environ.get("AIS_BENCH_DOUBLE_SLEEP_MS") or 0) / 1000.0
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            logger.error(f"load model from file failed, model file is {om_path}")
            # Chained implicitly, as ais_bench's own raise is: the double prints the traceback the tool prints.
            raise DoubleInferError(f"[-1][ACL: invalid parameter] load model {om_path} failed: {exc}")  # noqa: B904

    def to_model_input(self, raw: np.ndarray) -> np.ndarray:
        data = raw.view(self.dtype).reshape(self.input["shape"])
        aipp = self.meta.get("aipp")
        if aipp:  # RGB888_U8 NHWC → the crop window → ((x - mean - min) * var_reci) per channel, NCHW float
            if aipp.get("crop"):
                (top, left), (height, width) = aipp["crop"]["start"], aipp["crop"]["size"]
                data = data[:, top : top + height, left : left + width, :]
            pixels = data.astype(np.float32)
            mean = np.asarray(aipp["mean_chn"], np.float32)
            low = np.asarray(aipp["min_chn"], np.float32)
            scale = np.asarray(aipp["var_reci_chn"], np.float32)
            data = ((pixels - mean - low) * scale).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(data, dtype=np.dtype(self.meta["onnx_input"]["dtype"]))

    def execute(self, raw: np.ndarray) -> tuple[list[np.ndarray], float]:
        feed = {self.meta["onnx_input"]["name"]: self.to_model_input(raw)}
        start = time.perf_counter()
        outputs = self.session.run(None, feed)
        if self.sleep_s:  # the device's time per batch, inside the timed window as on the NPU
            time.sleep(self.sleep_s)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        fixed = os.environ.get("AIS_BENCH_DOUBLE_FIXED_MS")
        return outputs, float(fixed) if fixed else elapsed_ms


# --- path rules of the newer generations --------------------------------------------------------------------------


def check_path(path: str, kind: str) -> None:
    real = os.path.abspath(path)
    if not PATH_WHITE_LIST.match(real):
        logger.error(f"{kind} path:{path} contains invalid characters; only [_A-Za-z0-9/.-] are allowed")
        raise DoubleInferError(f"invalid {kind} path")
    if os.path.islink(path.rstrip("/")):
        logger.error(f"{kind} path:{path} is a soft link, which is not allowed")
        raise DoubleInferError(f"invalid {kind} path")
    if os.path.exists(path):
        info = os.stat(path)
        if info.st_uid != os.getuid() and os.getuid() != 0:
            logger.error(f"{kind} path:{path} is not owned by the current user")
            raise DoubleInferError(f"invalid {kind} path")


def check_input_file(path: str) -> None:
    check_path(path, "input")
    if os.stat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        logger.error(f"input file:{path} is writable by group or others, which is not allowed")
        raise DoubleInferError("invalid input path")


def check_output_mode(path: str) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & ~MAX_OUTPUT_MODE:
        logger.error(f"output path:{path} has permission {oct(mode)}, which exceeds the maximum {oct(MAX_OUTPUT_MODE)}")
        raise DoubleInferError("invalid output path")


# --- inputs -------------------------------------------------------------------------------------------------------


def natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def files_of_dir(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.endswith((".bin", ".BIN", ".npy", ".NPY"))]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def read_file(path: str) -> np.ndarray:
    if path.endswith((".npy", ".NPY")):
        return np.ascontiguousarray(np.load(path)).view(np.uint8).reshape(-1)
    return np.fromfile(path, dtype=np.uint8)


def data_size(path: str) -> int:
    if path.endswith((".npy", ".NPY")):
        return int(np.load(path, mmap_mode="r").nbytes)
    return os.path.getsize(path)


def group_files(input_arg: str, realsize: int, strict: bool) -> list[list[str]]:
    """Input 0's files in batches of realsize/filesize, the last one padded with PADDING_INFER_FAKE_FILE."""
    items = [item for item in input_arg.split(",") if item]
    if not items:
        logger.error("Invalid args. Input args are empty")
        raise DoubleInferError("empty input")
    if os.path.isdir(items[0]):
        if len(items) != 1:
            logger.error(f"Invalid args. args input dir num:{len(items)} not equal to model inputs num:1")
            raise DoubleInferError("input count")
        files = files_of_dir(items[0])
    elif os.path.isfile(items[0]):
        for index, path in enumerate(items):
            if not os.path.isfile(path):
                logger.error(f"Invalid input args.--input:{items} input[{index}]:{path} not exist")
                raise DoubleInferError("input missing")
        files = items
    else:
        logger.error(f"Invalid args. {items[0]}  of --input is invalid")
        raise DoubleInferError("input invalid")
    if not files:
        logger.error("create_infileslist_from_fileslist return infileslist size: 0")
        raise DoubleInferError("no input files")
    if strict:
        for path in files:
            check_input_file(path)
    filesize = data_size(files[0])
    if filesize == 0 or realsize % filesize != 0:
        logger.error(f"arg0 tensorsize: {realsize} filesize: {filesize} not match")
        raise DoubleInferError("tensor size")
    per_batch = realsize // filesize
    batches = []
    for start in range(0, len(files), per_batch):
        chunk = files[start : start + per_batch]
        batches.append(chunk + [PADDING_INFER_FAKE_FILE] * (per_batch - len(chunk)))
    logger.info(
        f"get filesperbatch files0 size:{filesize} tensor0size:{realsize} filesperbatch:{per_batch} "
        f"runcount:{len(batches)}"
    )
    return batches


def batch_bytes(batch: list[str], realsize: int) -> np.ndarray:
    parts = [read_file(batch[0] if path == PADDING_INFER_FAKE_FILE else path) for path in batch]
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if data.nbytes != realsize:
        logger.error(f"ndata size:{data.nbytes} not match {realsize}")
        raise DoubleInferError("batch size")
    return data


def save_output(array: np.ndarray, path: str, outfmt: str) -> None:
    if outfmt == "NPY":
        np.save(path, array)
    elif outfmt == "TXT":
        np.savetxt(path, array.reshape(-1, array.shape[-1]), fmt="%f", delimiter=" ", newline=" \n")
    else:
        array.tofile(path)


# --- summary ------------------------------------------------------------------------------------------------------


def list_info(values: list[float]) -> dict:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, "percentile(99%)": 0.0, "count": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "percentile(99%)": float(np.percentile(arr, 99)),
        "count": len(values),
    }


def print_performance(
    compute: dict, h2d: dict, d2h: dict, batchsize: float, throughput: float, display_all: bool, style: str
) -> None:
    def line(name: str, info: dict) -> str:
        return (
            f"{name} (ms): min = {info['min']}, max = {info['max']}, mean = {info['mean']}, "
            f"median = {info['median']}, percentile(99%) = {info['percentile(99%)']}"
        )

    logger.info("-----------------Performance Summary------------------")
    if display_all:
        logger.info(line("H2D_latency", h2d))
    logger.info(line("NPU_compute_time", compute))
    if display_all:
        logger.info(line("D2H_latency", d2h))
    if style == "current":
        logger.info(
            f"throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({compute['mean']}): {throughput}"
        )
    elif style == "pre_2022_07":
        logger.info(f"throughput (1000*batchsize/NPU_compute_time): {throughput}")
    elif style == "mid_2022":
        logger.info(
            f"throughput 1000*batchsize({int(batchsize)})/NPU_compute_time.mean({compute['mean']}): {throughput}"
        )
    elif style == "fork":
        logger.info(
            f"Throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({compute['mean']}): {throughput}"
        )
    logger.info("------------------------------------------------------")
    if style == "multi":
        logger.info(f"summary throughput:{throughput}")


# --- the run ------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    generation = os.environ.get("AIS_BENCH_DOUBLE_GEN", "up")
    strict = generation == "up"
    mode = os.environ.get("AIS_BENCH_DOUBLE_MODE", "ok")

    if args.output_dirname is not None and args.output is None:
        logger.error("--output_dirname must be used together with --output")
        raise DoubleInferError("output_dirname without output")
    if strict and args.output_dirname is not None and os.path.isabs(args.output_dirname):
        logger.error(f"--output_dirname {args.output_dirname} must be a relative name, not an absolute path")
        raise DoubleInferError("absolute output_dirname")
    devices = [int(d) for d in str(args.device).split(",")]
    if len(devices) != 1:
        logger.error("this ais_bench double runs on one device only; pass a single --device")
        raise DoubleInferError("multi device")
    device_count = int(os.environ.get("NPU_SMI_DOUBLE_COUNT", "2"))
    if not 0 <= devices[0] < device_count:
        logger.error(f"acl open device {devices[0]} failed ret[107001]; device count is {device_count}")
        raise DoubleInferError(f"[-1][ACL: invalid device id] device {devices[0]}")

    if not os.path.isfile(args.model):
        logger.error(f"model path:{args.model} is not a file")
        raise DoubleInferError("model missing")
    if strict:
        check_path(args.model, "model")
    session = DoubleSession(args.model)
    batchsize = args.batchsize if args.batchsize is not None else session.input["shape"][0]

    output_folder = None
    if args.output is not None:
        if strict:  # the path rules hold for an --output the tool is about to create too
            check_path(args.output, "output")
        if os.path.isdir(args.output):
            if strict:
                check_output_mode(args.output)
        else:
            os.makedirs(args.output, MAX_OUTPUT_MODE)
        name = args.output_dirname or datetime.datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
        output_folder = os.path.join(args.output, name)
        os.makedirs(output_folder, MAX_OUTPUT_MODE, exist_ok=True)
        logger.info(f"output path:{output_folder}")

    batches = [[PURE_INFER_FAKE_FILE]] if args.input is None else group_files(args.input, session.realsize, strict)

    def load(batch: list[str]) -> np.ndarray:
        if batch == [PURE_INFER_FAKE_FILE]:
            return np.zeros(session.realsize, dtype=np.uint8)
        return batch_bytes(batch, session.realsize)

    for _ in range(args.warmup_count):
        session.execute(load(batches[0]))
    logger.info(f"warm up {args.warmup_count} done")

    filesinfo: dict[str, dict[str, list[str]]] = {}
    compute_ms: list[float] = []
    total = len(batches) * args.loop
    done = 0
    for index, batch in enumerate(batches):
        raw = load(batch)
        outputs = None
        for _ in range(args.loop):
            outputs, elapsed = session.execute(raw)
            compute_ms.append(elapsed)
            done += 1
            sys.stdout.write(f"\rloop inference exec: ({done}/{total})")
            sys.stdout.flush()
        if output_folder is not None:
            assert outputs is not None, "--loop is at least 1"
            for out_index, out in enumerate(outputs):
                pieces = np.array_split(out, len(batch), axis=0)
                for slot, (path, piece) in enumerate(zip(batch, pieces, strict=True)):
                    if path == PADDING_INFER_FAKE_FILE:
                        continue  # padded slots are run and timed, never saved
                    sample_id = str(index * len(batch) + slot)
                    out_path = os.path.join(
                        output_folder, f"{os.path.basename(path).split('.')[0]}_{out_index}.{args.outfmt.lower()}"
                    )
                    entry = filesinfo.setdefault(sample_id, {"infiles": [path], "outfiles": []})
                    entry["outfiles"].append(out_path)
                    save_output(piece, out_path, args.outfmt)
        if mode == "crash":
            sys.stdout.write("\n")
            logger.error("aclmdlExecute failed, ret[507011]")
            raise DoubleInferError("[-1][ACL: general failure]")
    sys.stdout.write("\n")

    compute = list_info(compute_ms)
    throughput = 1000.0 * batchsize / compute["mean"] if compute["mean"] else 0
    style = os.environ.get("AIS_BENCH_DOUBLE_THROUGHPUT", "current")
    print_performance(
        compute, list_info([]), list_info([]), float(batchsize), throughput, args.display_all_summary, style
    )
    if output_folder is not None:
        summary: dict[str, Any] = {
            "filesinfo": filesinfo,
            "args": vars(args),
            "NPU_compute_time": compute,
            "H2D_latency": list_info([]),
            "D2H_latency": list_info([]),
            "throughput": throughput,
            "npu_compute_time_list": compute_ms,
            "pid": os.getpid(),
        }
        if generation == "old":  # before late 2022: inside the folder, misspelt, fewer keys
            for key in ("npu_compute_time_list", "pid"):
                summary.pop(key)
            for section in ("NPU_compute_time", "H2D_latency", "D2H_latency"):
                summary[section].pop("count")
            path = os.path.join(output_folder, "sumary.json")
        else:
            path = output_folder.rstrip("/") + "_summary.json"
        with open(path, "w") as handle:
            json.dump(summary, handle)


def main(argv: list[str]) -> int:
    if os.environ.get("AIS_BENCH_DOUBLE_ARGV_LOG"):
        with open(os.environ["AIS_BENCH_DOUBLE_ARGV_LOG"], "a") as handle:
            handle.write(json.dumps(argv) + "\n")
    handler = logging.StreamHandler(sys.stdout)  # ais_bench logs [INFO]/[ERROR] on stdout
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    args = build_parser().parse_args(argv)
    run(args)  # errors propagate as a traceback and exit status 1, as the real tool's do
    return 0
