"""ONNX Runtime backend end to end on the small demo ConvMixer: compile cache, uint8 vs float32 artifacts, ais_bench
output layout + summary, input checks, benchmark figures, and get_backend.

Expected logits come from a plain ONNX Runtime session on the exported (dynamic-batch) model, not from the backend.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from convmixer_tasks.backends.base import Artifact, CompileOptions, compile_cached, get_backend, sidecar_path
from convmixer_tasks.backends.onnxruntime import OnnxRuntimeBackend
from convmixer_tasks.errors import BackendError, ConfigError
from convmixer_tasks.fileio import sha256_file, to_jsonable
from convmixer_tasks.stages import aisbench_format
from convmixer_tasks.stages.aisbench_format import PREP_MANIFEST_KEY
from convmixer_tasks.stages.export import export_and_validate
from convmixer_tasks.stages.prepfolder import manifest_identity, read_manifest
from convmixer_tasks.stages.preprocess import preprocess

BATCH = 4
IMAGES = 6  # two prep files; the second has 2 padded slots
NUM_CLASSES = 1000


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("ort")


@pytest.fixture(scope="module")
def onnx_model(work):
    return export_and_validate(None, work / "demo.onnx", variant="convmixer_demo", parity_batch=1).onnx_path


@pytest.fixture(scope="module")
def image_dir(work):
    folder = work / "val"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for index in range(1, IMAGES + 1):  # small, non-square: resize (upscale) and centre crop both matter
        pixels = rng.integers(0, 256, size=(60 + 7 * index, 80, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"ILSVRC2012_val_{index:08d}.JPEG", quality=95)
    return folder


@pytest.fixture(scope="module")
def prep_f32(work, image_dir):
    return preprocess(image_dir, work / "prep_f32", BATCH, dtype="float32", workers=1).out_dir


@pytest.fixture(scope="module")
def prep_u8(work, image_dir):
    return preprocess(image_dir, work / "prep_u8", BATCH, dtype="uint8", workers=1).out_dir


@pytest.fixture(scope="module")
def backend():
    return OnnxRuntimeBackend()


@pytest.fixture(scope="module")
def artifact_f32(backend, onnx_model, work):
    return backend.compile(onnx_model, BATCH, work / "cache")


@pytest.fixture(scope="module")
def artifact_u8(backend, onnx_model, work):
    return backend.compile(onnx_model, BATCH, work / "cache", CompileOptions(input_dtype="uint8"))


def reference_logits(onnx_path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(["class"], {"image": batch})[0]


# --- get_backend / describe --------------------------------------------------------------------------------------


def test_get_backend_unknown_name_lists_known():
    with pytest.raises(ConfigError) as info:
        get_backend("tensorrt")
    assert "'tensorrt'" in str(info.value) and "ascend" in str(info.value) and "onnxruntime" in str(info.value)


def test_get_backend_returns_onnxruntime_with_settings():
    chosen = get_backend("onnxruntime", threads=1)
    assert isinstance(chosen, OnnxRuntimeBackend) and chosen.threads == 1 and chosen.provider == "cpu"


def test_importing_base_stays_light():
    code = (
        "import sys, convmixer_tasks.backends.base; "
        "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_describe(backend):
    info = backend.describe()
    assert info.backend == "onnxruntime"
    assert info.toolkit_version == f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    assert info.device and info.device != "unknown CPU"


def test_provider_choice(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert OnnxRuntimeBackend().provider == "cpu"
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        OnnxRuntimeBackend(provider="cuda")
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        OnnxRuntimeBackend(provider="tpu")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert OnnxRuntimeBackend().provider == "cuda"  # auto prefers the GPU when onnxruntime-gpu is installed


# --- compile -----------------------------------------------------------------------------------------------------


def test_compile_records_fixed_batch_artifact(artifact_f32, onnx_model):
    assert artifact_f32.backend == "onnxruntime" and artifact_f32.batch_size == BATCH
    assert artifact_f32.input_dtype == "float32" and artifact_f32.input_shape == [BATCH, 3, 224, 224]
    assert artifact_f32.onnx_sha256 == sha256_file(onnx_model)
    assert artifact_f32.sha256 == sha256_file(artifact_f32.path)
    assert artifact_f32.options == to_jsonable(CompileOptions())
    assert artifact_f32.cache_key[:16] in artifact_f32.path.name
    saved = onnx.load(str(artifact_f32.path))
    dims = [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [BATCH, 3, 224, 224] and saved.graph.output[0].type.tensor_type.shape.dim[0].dim_value == BATCH
    sidecar = json.loads(sidecar_path(artifact_f32.path).read_text())
    assert sidecar["sha256"] == artifact_f32.sha256 and sidecar["cache_key"] == artifact_f32.cache_key


def test_uint8_artifact_takes_nhwc_bytes(artifact_u8):
    assert artifact_u8.input_dtype == "uint8" and artifact_u8.input_shape == [BATCH, 224, 224, 3]
    graph_input = onnx.load(str(artifact_u8.path)).graph.input[0]
    assert graph_input.name == "image" and graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [BATCH, 224, 224, 3]


def test_compile_cache_hit_and_misses(backend, onnx_model, artifact_f32, artifact_u8, work, tmp_path):
    again = backend.compile(onnx_model, BATCH, work / "cache")
    assert again.cached is True and again.path == artifact_f32.path and again.sha256 == artifact_f32.sha256

    assert artifact_u8.path != artifact_f32.path  # changed options -> another key
    other_batch = backend.compile(onnx_model, 2, work / "cache")
    assert other_batch.cached is False and other_batch.path != artifact_f32.path

    changed = tmp_path / "demo.onnx"
    model = onnx.load(str(onnx_model))
    model.doc_string = "same graph, other bytes"
    onnx.save(model, str(changed))
    assert backend.compile(changed, BATCH, work / "cache").cached is False


def test_damaged_or_unfinished_artifact_is_rebuilt(backend, onnx_model, tmp_path):
    first = backend.compile(onnx_model, BATCH, tmp_path)
    with open(first.path, "r+b") as handle:  # bytes no longer match the sidecar's hash
        handle.truncate(100)
    rebuilt = backend.compile(onnx_model, BATCH, tmp_path)
    assert rebuilt.cached is False and sha256_file(rebuilt.path) == first.sha256

    sidecar_path(rebuilt.path).unlink()  # killed after the move, before the sidecar: not usable
    assert backend.compile(onnx_model, BATCH, tmp_path).cached is False


def test_killed_build_leaves_nothing_usable(onnx_model, tmp_path):
    def build(target):
        target.write_bytes(b"half an artifact")
        raise KeyboardInterrupt  # what a kill looks like from inside the process

    with pytest.raises(KeyboardInterrupt):
        compile_cached(
            backend="onnxruntime",
            runtime="test",
            onnx_path=onnx_model,
            batch_size=BATCH,
            cache_dir=tmp_path,
            options=CompileOptions(),
            suffix=".onnx",
            build=build,
        )
    assert list(tmp_path.iterdir()) == []


def test_compile_rejects_bad_batch_and_missing_onnx(backend, onnx_model, tmp_path):
    with pytest.raises(ConfigError, match="--batch-size"):
        backend.compile(onnx_model, 0, tmp_path)
    with pytest.raises(ConfigError, match="export"):
        backend.compile(tmp_path / "nope.onnx", BATCH, tmp_path)
    with pytest.raises(ConfigError, match="--input-dtype"):
        CompileOptions(input_dtype="float16")


def test_artifact_json_round_trip(artifact_u8):
    assert Artifact.from_dict(json.loads(json.dumps(to_jsonable(artifact_u8)))) == artifact_u8
    loaded = Artifact.load(artifact_u8.path)
    assert loaded.path == artifact_u8.path and loaded.cache_key == artifact_u8.cache_key and loaded.cached


# --- infer -------------------------------------------------------------------------------------------------------


def test_infer_writes_ais_bench_layout(backend, artifact_f32, prep_f32, onnx_model, work):
    output_dir = work / "out" / "f32"
    result = backend.infer(artifact_f32, prep_f32, output_dir)

    assert result.file_count == 2 and result.outfmt == "bin"
    assert result.summary_path == work / "out" / "f32_summary.json"
    assert sorted(p.name for p in output_dir.iterdir()) == ["input_00000_0.bin", "input_00001_0.bin"]
    for name in ("input_00000", "input_00001"):
        batch = np.fromfile(prep_f32 / f"{name}.bin", dtype=np.float32).reshape(BATCH, 3, 224, 224)
        logits = np.fromfile(output_dir / f"{name}_0.bin", dtype=np.float32)
        assert logits.size == BATCH * NUM_CLASSES  # padded rows included, like ais_bench on a whole-batch file
        np.testing.assert_allclose(
            logits.reshape(BATCH, NUM_CLASSES), reference_logits(onnx_model, batch), rtol=1e-5, atol=1e-5
        )

    summary = json.loads(result.summary_path.read_text())
    assert set(summary) == {
        "filesinfo",
        "args",
        "NPU_compute_time",
        "H2D_latency",
        "D2H_latency",
        "throughput",
        "npu_compute_time_list",
        "pid",
        PREP_MANIFEST_KEY,
    }
    assert summary[PREP_MANIFEST_KEY] == manifest_identity(read_manifest(prep_f32))  # what eval checks
    assert summary["filesinfo"]["1"] == {
        "infiles": [str(prep_f32 / "input_00001.bin")],
        "outfiles": [str(output_dir / "input_00001_0.bin")],
    }
    compute = summary["NPU_compute_time"]
    assert compute["count"] == 2 and len(summary["npu_compute_time_list"]) == 2
    assert summary["throughput"] == pytest.approx(1000 * BATCH / compute["mean"])
    assert aisbench_format.read_summary(output_dir)["generation"] == "new"


def test_uint8_artifact_matches_float32_on_same_images(backend, artifact_f32, artifact_u8, prep_f32, prep_u8, work):
    out_f32 = backend.infer(artifact_f32, prep_f32, work / "cmp" / "f32").output_dir
    out_u8 = backend.infer(artifact_u8, prep_u8, work / "cmp" / "u8").output_dir
    manifest = read_manifest(prep_u8)
    compared = 0
    for prep_file in manifest.files:
        real = len(prep_file.images)  # padded slots differ on purpose: zeros mean another pixel in each dtype
        name = aisbench_format.output_name(prep_file.name)
        a = np.fromfile(out_f32 / name, dtype=np.float32).reshape(BATCH, NUM_CLASSES)[:real]
        b = np.fromfile(out_u8 / name, dtype=np.float32).reshape(BATCH, NUM_CLASSES)[:real]
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
        assert np.abs(a).max() > 1e-3  # the comparison is not between two all-zero outputs
        compared += real
    assert compared == IMAGES


def test_infer_shard_subset(backend, artifact_f32, prep_f32, work):
    output_dir = work / "shard" / "1"
    result = backend.infer(artifact_f32, prep_f32, output_dir, files=["input_00001.bin"])
    assert result.file_count == 1
    assert [p.name for p in output_dir.iterdir()] == ["input_00001_0.bin"]
    assert list(json.loads(result.summary_path.read_text())["filesinfo"]) == ["0"]
    with pytest.raises(ConfigError, match=r"input_00009.bin"):
        backend.infer(artifact_f32, prep_f32, output_dir, files=["input_00009.bin"])


def test_infer_refuses_other_dtype(backend, artifact_u8, prep_f32, tmp_path):
    with pytest.raises(BackendError) as info:
        backend.infer(artifact_u8, prep_f32, tmp_path / "out")
    message = str(info.value)
    assert "float32" in message and "uint8" in message and "--dtype uint8" in message
    assert not (tmp_path / "out_summary.json").exists()


def test_infer_refuses_wrong_file_size(backend, artifact_f32, prep_f32, tmp_path):
    import shutil

    prep = tmp_path / "prep"
    shutil.copytree(prep_f32, prep)
    with open(prep / "input_00001.bin", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(BackendError) as info:
        backend.infer(artifact_f32, prep, tmp_path / "out")
    message = str(info.value)
    expected_bytes = BATCH * 3 * 224 * 224 * 4
    assert "input_00001.bin" in message and "1000 bytes" in message and str(expected_bytes) in message
    assert "--batch-size" in message
    assert not (tmp_path / "out").exists()  # checked before anything ran


def test_infer_refuses_other_batch_size(backend, onnx_model, prep_f32, work, tmp_path):
    artifact_bs2 = backend.compile(onnx_model, 2, work / "cache")
    with pytest.raises(BackendError, match="--batch-size 2"):
        backend.infer(artifact_bs2, prep_f32, tmp_path / "out")


def test_artifact_from_another_device_is_refused(backend, artifact_f32, prep_f32, tmp_path):
    foreign = Artifact.from_dict(
        {**to_jsonable(artifact_f32), "meta": {**artifact_f32.meta, "runtime": "onnxruntime 0.1 on another CPU"}}
    )
    with pytest.raises(BackendError, match="compile on this worker"):
        backend.infer(foreign, prep_f32, tmp_path / "out")


# --- benchmark ---------------------------------------------------------------------------------------------------


def test_benchmark_fields_and_formula(backend, artifact_u8):
    result = backend.benchmark(artifact_u8, loop=5, warmup=1)
    assert result.backend == "onnxruntime" and result.batch_size == BATCH
    assert result.loop == 5 and result.warmup == 1 and len(result.samples) == 5
    assert all(sample > 0 for sample in result.samples)
    mean = sum(result.samples) / len(result.samples)
    assert result.latency_mean_ms == pytest.approx(mean)
    assert result.latency_p50_ms == pytest.approx(float(np.median(result.samples)))
    assert min(result.samples) <= result.latency_p99_ms <= max(result.samples)
    assert result.throughput == pytest.approx(1000 * BATCH / mean)
    assert result.formula == "1000*batchsize/NPU_compute_time.mean"
    with pytest.raises(ConfigError, match="loop"):
        backend.benchmark(artifact_u8, loop=0)
