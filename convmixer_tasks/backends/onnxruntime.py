"""ONNX Runtime backend: runs anywhere (CPU, or CUDA when onnxruntime-gpu is installed) and writes ais_bench's layout.

compile = the ONNX with its batch axis fixed (static shapes let ORT plan memory and pick kernels up front), for
``input_dtype="uint8"`` a prologue doing the model card's Ascend static AIPP (crop, then normalisation), then ORT's
full graph optimisation saved to disk. ORT_ENABLE_ALL output may contain CPU-layout-specific ops, so the device is
part of the cache key and an artifact is only run on the device it was optimised for.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from convmixer_tasks.backends import base
from convmixer_tasks.errors import BackendError, ConfigError
from convmixer_tasks.models.card import Aipp
from convmixer_tasks.progress import Progress, working
from convmixer_tasks.stages import aisbench_format
from convmixer_tasks.stages.onnxgraph import graph_inputs
from convmixer_tasks.stages.prepfolder import PrepFile, manifest_identity

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
NUMPY_DTYPES = {"float32": np.float32, "uint8": np.uint8}
NORMALISED_SUFFIX = "_normalised"  # the float input's new internal name once a uint8 prologue feeds it


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` is often empty or just the arch)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_name(device_id: int = 0) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={device_id}", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
        return out.splitlines()[0] if out else "CUDA GPU"
    except (OSError, subprocess.SubprocessError):
        return "CUDA GPU"


def worker_threads() -> int:
    """Cores this process may run on (cgroup/affinity-aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class OnnxRuntimeBackend(base.Backend):
    name = "onnxruntime"

    def __init__(self, provider: str = "auto", threads: int | None = None, device_id: int = 0) -> None:
        available = ort.get_available_providers()
        if provider == "auto":
            provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
        if provider not in PROVIDERS:
            raise ConfigError(f"ONNX Runtime provider {provider!r} is unknown; use auto, cpu or cuda")
        if PROVIDERS[provider] not in available:
            raise ConfigError(
                f"ONNX Runtime provider {PROVIDERS[provider]} is not available (have {', '.join(available)}); "
                "install onnxruntime-gpu for cuda, or use provider cpu"
            )
        if threads is not None and threads < 1:
            raise ConfigError(f"threads {threads!r} must be a positive integer")
        self.provider = provider
        self.threads = threads or worker_threads()
        self.device_id = device_id

    # --- describe ---------------------------------------------------------------------------------------------

    @cached_property
    def device_info(self) -> base.DeviceInfo:
        device = gpu_name(self.device_id) if self.provider == "cuda" else cpu_model()
        return base.DeviceInfo(
            backend=self.name,
            device=device,
            toolkit_version=f"onnxruntime {ort.__version__} ({PROVIDERS[self.provider]})",
        )

    def describe(self) -> base.DeviceInfo:
        return self.device_info

    def host_cores_used(self) -> int:
        return self.threads if self.provider == "cpu" else 1

    def power_source(self) -> base.PowerSource:
        if self.provider == "cpu":
            return super().power_source()
        from convmixer_tasks.measure.energy import PowerUnavailable

        raise PowerUnavailable(f"no power reader for the {PROVIDERS[self.provider]} device (only RAPL, on CPU)")

    @property
    def runtime(self) -> str:
        """What an optimised model is tied to: ORT version, provider and device."""
        info = self.device_info
        return f"{info.toolkit_version} on {info.device}"

    # --- compile ----------------------------------------------------------------------------------------------

    def compile(self, onnx_path, batch_size, cache_dir, options: base.CompileOptions | None = None) -> base.Artifact:
        options = options or base.CompileOptions()

        def build(tmp: Path) -> dict[str, Any]:
            aipp = options.card().uint8_aipp() if options.input_dtype == "uint8" else None
            return self._build(Path(onnx_path), batch_size, aipp, tmp)

        runtime = self.runtime
        with working(f"ONNX Runtime compile of {Path(onnx_path).name} at batch {batch_size}"):
            return base.compile_cached(
                onnx_path,
                batch_size,
                cache_dir,
                options,
                backend=self.name,
                runtime=runtime,
                suffix=".onnx",
                build=build,
            )

    def _build(self, onnx_path: Path, batch_size: int, aipp: Aipp | None, target: Path) -> dict[str, Any]:
        import onnx

        try:
            model = onnx.load(str(onnx_path))
        except Exception as exc:
            raise BackendError(f"{onnx_path} is not a readable ONNX model ({exc}); re-run the export step") from exc
        input_name, output_name = fix_batch(model, batch_size, onnx_path)
        if aipp is not None:
            prepend_aipp(model, input_name, aipp)
        fixed = target.with_name("fixed.onnx")  # same private temp folder; removed with it
        onnx.save(model, str(fixed))
        session_options = self._session_options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        session_options.optimized_model_filepath = str(target)
        try:
            ort.InferenceSession(str(fixed), session_options, providers=self._providers())
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not optimise {onnx_path} at batch {batch_size}: {exc}") from exc
        graph_input = model.graph.input[0]
        shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
        return {
            "input_shape": shape,
            "input_name": input_name,
            "output_name": output_name,
            "provider": PROVIDERS[self.provider],
            "device": self.device_info.device,
        }

    # --- sessions ---------------------------------------------------------------------------------------------

    def _providers(self) -> list[Any]:
        if self.provider == "cuda":
            return [(PROVIDERS["cuda"], {"device_id": self.device_id}), PROVIDERS["cpu"]]
        return [PROVIDERS["cpu"]]

    def _session_options(self, level: ort.GraphOptimizationLevel) -> ort.SessionOptions:
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = level
        session_options.intra_op_num_threads = self.threads
        session_options.inter_op_num_threads = 1
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.log_severity_level = 3  # warnings about the saved model's layout ops are noise here
        return session_options

    def open_session(self, artifact: base.Artifact) -> ort.InferenceSession:
        """A session on an artifact this backend compiled for this device (it is already optimised)."""
        if artifact.backend != self.name:
            raise BackendError(
                f"artifact {artifact.path} was compiled by {artifact.backend}, not onnxruntime; "
                "compile the ONNX with --backend onnxruntime"
            )
        built_for = artifact.meta.get("runtime")
        if built_for != self.runtime:
            raise BackendError(
                f"artifact {artifact.path} was optimised for '{built_for}' but this worker is '{self.runtime}'; "
                "ORT_ENABLE_ALL models are device-specific: run compile on this worker (it caches per device)"
            )
        base.verify_artifact(artifact)
        # The graph is already optimised; ORT_ENABLE_BASIC keeps load fast without re-running layout passes.
        options = self._session_options(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        try:
            return ort.InferenceSession(str(artifact.path), options, providers=self._providers())
        except Exception as exc:  # ORT raises its own classes (InvalidProtobuf, Fail, ...): one line either way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"ONNX Runtime cannot load {artifact.path} ({first}); re-run compile") from exc

    # --- infer ------------------------------------------------------------------------------------------------

    def infer(self, artifact, prep_dir, output_dir, files=None) -> base.InferResult:
        prep_dir, output_dir = Path(prep_dir), Path(output_dir)
        # Before any check: a refused run, like a failed one, leaves no older result at the output path.
        aisbench_format.clear_previous_outputs(output_dir)
        manifest, selected = base.select_prep_files(artifact, prep_dir, files)
        session = self.open_session(artifact)
        input_name, output_name = artifact.meta["input_name"], artifact.meta["output_name"]
        dtype = NUMPY_DTYPES[artifact.input_dtype]
        args = {
            "model": str(artifact.path),
            "input": str(prep_dir),
            "output": str(output_dir.parent),
            "output_dirname": output_dir.name,
            "outfmt": "BIN",
            "loop": 1,
            "batchsize": artifact.batch_size,
            "device": self.device_id,
            "backend": self.name,
            "provider": PROVIDERS[self.provider],
            "threads": self.threads,
            "files": list(files) if files is not None else None,
        }
        filesinfo: dict[int | str, dict[str, list[str]]] = {}
        compute_ms: list[float] = []
        images = sum(len(prep_file.images) for prep_file in selected)
        progress = Progress(f"ONNX Runtime inference (batch {artifact.batch_size})", images, "images")
        with aisbench_format.staged_outputs(output_dir, manifest_identity(manifest)) as staging:
            staging.mkdir(parents=True)
            per_batch = artifact.batch_size // manifest.batch_size  # 1, or batch_size per-image files
            for start in range(0, len(selected), per_batch):
                group = selected[start : start + per_batch]
                batch = _read_batch(prep_dir, group, per_batch, dtype, artifact.input_shape)
                started = time.perf_counter()
                (logits,) = session.run([output_name], {input_name: batch})
                compute_ms.append((time.perf_counter() - started) * 1000.0)
                # As ais_bench: each input file gets its rows back under its own name; padded slots are not saved.
                rows = np.ascontiguousarray(logits, dtype=np.float32).reshape(per_batch, -1, logits.shape[-1])
                for slot, prep_file in enumerate(group):
                    name = aisbench_format.output_name(prep_file.name, 0, "bin")
                    rows[slot].tofile(staging / name)
                    filesinfo[start + slot] = {
                        "infiles": [str(prep_dir / prep_file.name)],
                        "outfiles": [str(output_dir / name)],
                    }
                    progress.update(len(prep_file.images))
            progress.close()
            aisbench_format.write_summary(staging, filesinfo, compute_ms, artifact.batch_size, args)
        summary = aisbench_format.summary_path(output_dir)
        return base.InferResult(output_dir=output_dir, summary_path=summary, file_count=len(selected), outfmt="bin")

    # --- benchmark --------------------------------------------------------------------------------------------

    def benchmark(self, artifact, loop=100, warmup=5, seed: int = 0) -> base.BenchResult:
        if loop < 1 or warmup < 0:
            raise ConfigError(
                f"benchmark needs loop >= 1 and warmup >= 0, got loop={loop} warmup={warmup}; "
                "fix --loop/--warmup (DAG param benchmark_loop)"
            )
        session = self.open_session(artifact)
        batch = random_batch(artifact.input_dtype, artifact.input_shape, seed)
        run = self._runner(session, artifact, batch)
        progress = Progress(f"ONNX Runtime benchmark (batch {artifact.batch_size})", warmup + loop, "runs")
        for _ in range(warmup):
            run()
            progress.update()
        samples = []
        for _ in range(loop):
            started = time.perf_counter()
            run()
            samples.append((time.perf_counter() - started) * 1000.0)
            progress.update()
        progress.close()
        timing = aisbench_format.stats(samples)
        return base.BenchResult(
            backend=self.name,
            batch_size=artifact.batch_size,
            loop=loop,
            warmup=warmup,
            throughput=aisbench_format.throughput(artifact.batch_size, timing["mean"]),
            latency_mean_ms=timing["mean"],
            latency_p50_ms=timing["median"],
            latency_p99_ms=timing[aisbench_format.PERCENTILE_KEY],
            samples=samples,
            formula=aisbench_format.THROUGHPUT_FORMULA,
        )

    def _runner(self, session, artifact: base.Artifact, batch: np.ndarray):
        """A no-argument call that runs the model once on ``batch``. On CUDA the input stays on the GPU (IO binding)
        so the timing is compute only, like ais_bench's NPU_compute_time."""
        input_name, output_name = artifact.meta["input_name"], artifact.meta["output_name"]
        if self.provider != "cuda":
            return lambda: session.run([output_name], {input_name: batch})
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id))
        binding.bind_output(output_name, "cuda", self.device_id)

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run


# --- graph edits (pure onnx, no session) ------------------------------------------------------------------------


def fix_batch(model, batch_size: int, onnx_path: Path) -> tuple[str, str]:
    """Set the batch axis of the single input and output to ``batch_size``; returns their names."""
    inputs = graph_inputs(model)
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise BackendError(
            f"{onnx_path} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in model.graph.output]}; "
            "this backend takes one image input and one logits output (re-export with the export step)"
        )
    graph_input, graph_output = inputs[0], model.graph.output[0]
    dims = graph_input.type.tensor_type.shape.dim
    import onnx

    if graph_input.type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        raise BackendError(
            f"{onnx_path} input '{graph_input.name}' is not float32 NCHW with 3 channels; "
            "re-export with the export step"
        )
    fixed = dims[0].dim_value
    if fixed and fixed != batch_size:
        raise BackendError(
            f"{onnx_path} has a fixed batch of {fixed}, so it cannot be compiled for batch "
            f"{batch_size}; re-export with a dynamic batch axis (the export step does)"
        )
    for value in (graph_input, graph_output):
        value.type.tensor_type.shape.dim[0].dim_value = batch_size  # also clears dim_param (oneof)
    del model.graph.value_info[:]  # stale symbolic shapes; ORT re-infers them from the fixed input
    return graph_input.name, graph_output.name


def prepend_aipp(model, input_name: str, aipp: Aipp) -> None:
    """Replace the float32 NCHW input with a uint8 NHWC one of the AIPP source size and do in-graph what Ascend
    static AIPP does: the crop window at (load_start_pos_h, load_start_pos_w) when it crops, then
    (pixel − min_chn) × var_reci per channel. The input keeps its name so callers feed it either way."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    graph_input = next(i for i in graph.input if i.name == input_name)
    n, c, h, w = (d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    if aipp.output_size != h or h != w:
        raise BackendError(
            f"the model takes {h}x{w} but the card's AIPP gives {aipp.output_size}x{aipp.output_size}; fix the card's "
            "aipp (src_size/crop_size) or re-export the model"
        )
    inner = input_name + NORMALISED_SUFFIX
    for node in graph.node:
        node.input[:] = [inner if name == input_name else name for name in node.input]

    min_chn = np.asarray(aipp.min_chn, dtype=np.float32).reshape(1, c, 1, 1)
    var_reci = np.asarray(aipp.var_reci, dtype=np.float32).reshape(1, c, 1, 1)
    initializers = [
        onnx.numpy_helper.from_array(min_chn, inner + "_min_chn"),
        onnx.numpy_helper.from_array(var_reci, inner + "_var_reci_chn"),
    ]
    prologue = [helper.make_node("Cast", [input_name], [inner + "_f32"], to=TensorProto.FLOAT)]
    pixels = inner + "_f32"
    if aipp.crop and aipp.crop_size is not None:
        (top, left), size = aipp.crop_start, aipp.crop_size
        window = {"starts": [top, left], "ends": [top + size, left + size], "axes": [1, 2]}
        initializers += [
            onnx.numpy_helper.from_array(np.asarray(value, dtype=np.int64), f"{inner}_crop_{key}")
            for key, value in window.items()
        ]
        crop_inputs = [pixels, *(f"{inner}_crop_{key}" for key in window)]
        prologue.append(helper.make_node("Slice", crop_inputs, [inner + "_crop"]))
        pixels = inner + "_crop"
    prologue += [
        helper.make_node("Transpose", [pixels], [inner + "_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", [inner + "_nchw", inner + "_min_chn"], [inner + "_centred"]),
        helper.make_node("Mul", [inner + "_centred", inner + "_var_reci_chn"], [inner]),
    ]
    graph.initializer.extend(initializers)
    nodes = prologue + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    new_input = helper.make_tensor_value_info(input_name, TensorProto.UINT8, [n, aipp.src_size, aipp.src_size, c])
    index = list(graph.input).index(graph_input)
    graph.input.remove(graph_input)
    graph.input.insert(index, new_input)


def _read_batch(
    prep_dir: Path, group: list[PrepFile], per_batch: int, dtype: type, input_shape: list[int]
) -> np.ndarray:
    """One model batch from prep files: a whole batch file, or ``per_batch`` per-image files in order, the last
    batch padded by repeating its first file (as ais_bench pads; those slots' outputs are dropped)."""
    if per_batch == 1:
        return np.memmap(prep_dir / group[0].name, dtype=dtype, mode="r", shape=tuple(input_shape))
    batch: np.ndarray = np.empty(input_shape, dtype=dtype)
    per_file = batch.reshape(per_batch, -1)
    for slot in range(per_batch):
        source = group[slot] if slot < len(group) else group[0]
        per_file[slot] = np.fromfile(prep_dir / source.name, dtype=dtype)
    return batch


def random_batch(input_dtype: str, input_shape: list[int], seed: int = 0) -> np.ndarray:
    """The fixed benchmark batch: image-like uint8 pixels, or standard-normal floats (normalised images)."""
    rng = np.random.default_rng(seed)
    if input_dtype == "uint8":
        return rng.integers(0, 256, size=input_shape, dtype=np.uint8)
    return rng.standard_normal(input_shape, dtype=np.float32)
