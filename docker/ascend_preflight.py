"""The NPU worker's preflight, in Python: what ascend-entrypoint.sh cannot prove with file tests.

    python ascend_preflight.py [--device N] [--cann-set-env PATH] [--keep DIR]
    python ascend_preflight.py --chip [--cann-set-env PATH]   # print this host's chip type (e.g. 310P3), nothing else

``--chip`` is what ascend-entrypoint.sh names its queue by (``npu.<chip>``): the Name npu-smi reports, read
through the same backend code that gives compile_model its ``--soc_version``.

It runs, in this order, and stops at the first failure with one line that names the step and the fix:

  user      the task user resolves to a name (the Task SDK calls getpass.getuser() when every task starts) and
            HOME is a writable folder (ATC and ACL write $HOME/ascend/log unless ASCEND_PROCESS_LOG_PATH is set)
  driver    libascend_hal.so is in a folder on the CANN environment's LD_LIBRARY_PATH (the driver's lib64/driver
            mount); without it the first inference fails with "cannot open shared object file"
  compile   ATC compiles a one-operator ONNX model for the chip npu-smi reports, through the same backend code and
            flags the compile_model task uses; this runs ATC's operator compiler (TBE) and so its Python
            dependencies (numpy, protobuf, ...) in this image
  device    ais_bench runs that model once on the device (--loop 1): ACL init, set device, load, execute

It uses only the public API of convmixer_tasks.backends.ascend; it writes into a temporary folder it removes
(unless --keep). Exit status 0 = the worker can do its job.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
import sys
import tempfile
import time
from pathlib import Path

DRIVER_LIBRARY = "libascend_hal.so"
INPUT_NAME = "image"  # the exported classifier's input name; ATC's --input_shape must use the ONNX input name
PREFLIGHT_BATCH = 1


class PreflightFailure(Exception):
    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


def say(message: str) -> None:
    print(f"ascend-preflight: {message}", file=sys.stderr, flush=True)


def check_user() -> str:
    try:
        name = getpass.getuser()
    except Exception as exc:  # OSError / KeyError, by Python version
        raise PreflightFailure("user", f"uid {os.getuid()} has no user name ({exc}); every Airflow task would fail "
                               "at start. Run the worker with gid 0 on an image whose /etc/passwd is group-writable "
                               "(ascend-entrypoint.sh then adds the entry), or run it as a uid the image knows "
                               "(AIRFLOW_UID=50000)") from exc
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        say(f"note: uid {os.getuid()} is not in /etc/passwd; the name {name!r} comes from $USER/$LOGNAME")
    home = os.environ.get("HOME", "")
    if not home or not os.path.isdir(home) or not os.access(home, os.W_OK | os.X_OK):
        if not os.environ.get("ASCEND_PROCESS_LOG_PATH"):
            raise PreflightFailure("user", f"HOME={home or '(unset)'} is not a writable folder for uid "
                                   f"{os.getuid()} and ASCEND_PROCESS_LOG_PATH is unset: ATC and ACL could not "
                                   "write their logs. Set ASCEND_PROCESS_LOG_PATH to a writable folder")
        say(f"note: HOME={home or '(unset)'} is not writable; CANN logs go to ASCEND_PROCESS_LOG_PATH")
    return name


def check_driver_library(ld_library_path: str) -> Path:
    folders = [folder for folder in ld_library_path.split(os.pathsep) if folder]
    for folder in folders:
        candidate = Path(folder) / DRIVER_LIBRARY
        if candidate.exists():
            return candidate
    raise PreflightFailure("driver", f"{DRIVER_LIBRARY} is in none of the LD_LIBRARY_PATH folders "
                           f"({', '.join(folders) or 'empty'}): mount the host's /usr/local/Ascend/driver/lib64/ "
                           "read-only at the same path and keep /usr/local/Ascend/driver/lib64/driver and "
                           "/usr/local/Ascend/driver/lib64/common on LD_LIBRARY_PATH (the image sets both)")


def one_op_onnx(path: Path) -> Path:
    """A float32 [N,3,224,224] -> Relu -> output model: the classifier's input contract, one AI Core operator."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", [INPUT_NAME], ["class"])], "convmixer_preflight",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["batch", 3, 224, 224])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="ascend_preflight")
    model.ir_version = 7  # readable by every onnx/onnxruntime/ATC generation the project meets
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def run(device_id: int, cann_set_env: str | None, workdir: Path) -> dict[str, object]:
    from convmixer_tasks.backends.ascend import AscendBackend
    from convmixer_tasks.errors import ConvMixerError

    facts: dict[str, object] = {"user": check_user()}
    backend = AscendBackend(device_id=device_id, cann_set_env=cann_set_env, atc_timeout_s=900,
                            ais_bench_timeout_s=600)
    try:
        env = backend.cann.env
    except ConvMixerError as exc:
        raise PreflightFailure("driver", str(exc)) from exc
    facts["driver_library"] = str(check_driver_library(env.get("LD_LIBRARY_PATH", "")))
    facts["toolkit"] = backend.cann.toolkit_version

    started = time.monotonic()
    try:
        artifact = backend.compile(one_op_onnx(workdir / "preflight.onnx"), PREFLIGHT_BATCH, workdir / "om")
    except ConvMixerError as exc:
        raise PreflightFailure("compile", f"ATC cannot compile a one-operator model: {exc}") from exc
    facts["soc_version"] = artifact.meta.get("soc_version")
    facts["compile_s"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    try:
        bench = backend.benchmark(artifact, loop=1, warmup=0)
    except ConvMixerError as exc:
        raise PreflightFailure("device", f"ais_bench cannot run a model on device {device_id}: {exc}") from exc
    facts["device"] = device_id
    facts["device_run_ms"] = round(bench.latency_mean_ms, 3)
    facts["device_s"] = round(time.monotonic() - started, 1)
    return facts


def worker_chip(device_id: int, cann_set_env: str | None) -> str:
    """The chip type of this host (npu-smi's Name of its first healthy NPU, as ``soc_version`` reads it)."""
    from convmixer_tasks.backends.ascend import AscendBackend
    from convmixer_tasks.errors import ConvMixerError

    try:
        soc = AscendBackend(device_id=device_id, cann_set_env=cann_set_env).soc_version()
    except ConvMixerError as exc:
        raise PreflightFailure("chip", f"cannot read this host's chip type from npu-smi: {exc}") from exc
    return soc.removeprefix("Ascend")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ascend_preflight.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", type=int, default=int(os.environ.get("AIRFLOW__CONVMIXER__NPU_DEVICE_ID", "0")))
    parser.add_argument("--cann-set-env", default=os.environ.get("AIRFLOW__CONVMIXER__CANN_SET_ENV"))
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the ONNX and OM there")
    parser.add_argument("--chip", action="store_true", help="print this host's chip type (npu-smi's Name) only")
    args = parser.parse_args(argv)
    try:
        if args.chip:
            print(worker_chip(args.device, args.cann_set_env))
            return 0
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            facts = run(args.device, args.cann_set_env, Path(args.keep))
        else:
            with tempfile.TemporaryDirectory(prefix="convmixer-preflight-") as tmp:
                facts = run(args.device, args.cann_set_env, Path(tmp))
    except PreflightFailure as exc:
        say(f"FAILED at '{exc.step}': {exc}")
        return 1
    say("ok: " + ", ".join(f"{key}={value}" for key, value in facts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
