"""The backend interface (describe / compile / infer / benchmark), its JSON-able results, and what both backends share:
the compile cache (content-hash key + artifact JSON sidecar, atomic) and the check of prep files against an artifact.

Importing this module stays light (no numpy/onnx/onnxruntime): ``get_backend`` imports a backend module only when
asked for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convmixer_tasks.backends.catalog import BACKENDS
from convmixer_tasks.backends.precision import check_precision_mode
from convmixer_tasks.cache import ContentCache
from convmixer_tasks.checks import check_batch_size
from convmixer_tasks.dtypes import DTYPE_ITEMSIZE, INPUT_DTYPES
from convmixer_tasks.errors import BackendError, ConfigError
from convmixer_tasks.fileio import atomic_write_json, read_json, sha256_file
from convmixer_tasks.models.card import ModelCard
from convmixer_tasks.models.registry import default_card, get_card
from convmixer_tasks.stages.prepfolder import PrepFile, PrepManifest, check_prep_files, read_manifest

if TYPE_CHECKING:
    from convmixer_tasks.device_state import DeviceState
    from convmixer_tasks.measure.energy import PowerSource


SIDECAR_SUFFIX = ".json"  # artifact "x.om" -> sidecar "x.om.json"


@dataclass
class DeviceInfo:
    backend: str
    device: str  # CPU model, GPU name, or Ascend SoC (e.g. "Ascend310P3")
    toolkit_version: str  # e.g. "onnxruntime 1.31.1 (CPUExecutionProvider)" or the CANN version


@dataclass
class CompileOptions:
    input_dtype: str = "float32"  # "uint8": NHWC uint8 input, normalisation inside the artifact (AIPP-equivalent)
    soc_version: str = "auto"  # Ascend only; "auto" = read from npu-smi
    precision_mode: str | None = None  # Ascend only; None = ATC default
    # Ascend only: the seed guide's GELU kernel choice; None passes neither flag (precision.gelu_compile_options)
    op_select_implmode: str | None = "high_performance"
    optypelist_for_implmode: str | None = "Gelu"
    # The model card (name) whose input size, AIPP and ATC extras apply; None = the default model.
    model: str | None = None

    def __post_init__(self) -> None:
        if self.input_dtype not in INPUT_DTYPES:
            raise ConfigError(
                f"input dtype {self.input_dtype!r} is not supported; use one of {', '.join(INPUT_DTYPES)} "
                "(--input-dtype)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def card(self) -> ModelCard:
        return get_card(self.model) if self.model is not None else default_card()


@dataclass
class Artifact:
    path: Path
    backend: str
    batch_size: int
    input_dtype: str
    sha256: str
    onnx_sha256: str
    options: dict[str, Any]
    cached: bool
    # Additions to the architecture contract (defaulted, so positional construction still works):
    input_shape: list[int] = field(default_factory=list)  # the artifact's input, e.g. [4,3,224,224] / [4,224,224,3]
    cache_key: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # backend-specific facts (device, runtime, tool command)

    @property
    def input_nbytes(self) -> int:
        return math.prod(self.input_shape) * DTYPE_ITEMSIZE[self.input_dtype]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        """Rebuild from ``fileio.to_jsonable(artifact)`` — how an artifact crosses Airflow tasks."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["path"] = Path(values["path"])
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Artifact:
        """Read an artifact from its JSON sidecar (given the artifact path or the sidecar path)."""
        path = Path(path)
        sidecar = path if path.name.endswith(SIDECAR_SUFFIX) else sidecar_path(path)
        artifact_file = sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])
        if not artifact_file.is_file():
            raise BackendError(
                f"compiled model {artifact_file} does not exist; pass an artifact written by "
                "`convmixer-tasks compile` (--model)"
            )
        if not sidecar.is_file():
            raise BackendError(f"artifact sidecar {sidecar} is missing; re-run compile to rebuild the artifact")
        try:
            artifact = cls.from_dict(read_json(sidecar))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackendError(
                f"artifact sidecar {sidecar} is unreadable ({type(exc).__name__}); re-run compile to rebuild it"
            ) from exc
        artifact.path = sidecar.with_name(sidecar.name[: -len(SIDECAR_SUFFIX)])
        artifact.cached = True
        return artifact


def verify_artifact(artifact: Artifact) -> None:
    """Refuse an artifact whose bytes are not the ones compile recorded (truncated, or another model copied over
    it): running it would report figures for a model nobody compiled."""
    path = Path(artifact.path)
    if not path.is_file():
        raise BackendError(f"compiled model {path} is missing; re-run compile")
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise BackendError(
            f"compiled model {path} is not the file compile wrote (sha256 {actual[:12]}…, recorded "
            f"{str(artifact.sha256)[:12]}…: truncated or replaced); re-run compile"
        )


@dataclass
class InferResult:
    output_dir: Path
    summary_path: Path
    file_count: int
    outfmt: str = "bin"


@dataclass
class BenchResult:
    backend: str
    batch_size: int
    loop: int
    warmup: int
    throughput: float  # images/s = 1000 * batch_size / latency_mean_ms
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    samples: list[float]  # per-batch compute times in ms, warm-up excluded
    formula: str


class Backend(ABC):
    name: str

    @abstractmethod
    def describe(self) -> DeviceInfo: ...

    @abstractmethod
    def compile(
        self,
        onnx_path: str | os.PathLike,
        batch_size: int,
        cache_dir: str | os.PathLike,
        options: CompileOptions | None = None,
    ) -> Artifact: ...

    @abstractmethod
    def infer(
        self,
        artifact: Artifact,
        prep_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        files: list[str] | None = None,
    ) -> InferResult: ...

    @abstractmethod
    def benchmark(self, artifact: Artifact, loop: int = 100, warmup: int = 5) -> BenchResult: ...

    # -- what a measurement records beside its figures (quiet.BenchmarkWindow, fingerprint.build) --

    def environment(self) -> dict[str, str | int | float | None]:
        """Tool facts the figures depend on beyond ``describe()`` (e.g. the NPU driver); flat, for the fingerprint."""
        return {}

    def device_state(self) -> DeviceState | None:
        """The state of the device about to be timed, or None when the backend cannot see its activity."""
        return None

    def host_cores_used(self) -> int:
        """Host cores a benchmark keeps busy (the load average above it means others competed)."""
        return 1

    def power_source(self) -> PowerSource:
        """What measures the power a benchmark draws; ``energy.PowerUnavailable`` (saying why) when nothing does.
        A CPU-bound backend reads the host's RAPL counters."""
        from convmixer_tasks.measure.energy import rapl_source

        return rapl_source()


def get_backend(name: str, **settings: Any) -> Backend:
    """The backend called ``name``; ``settings`` go to its constructor (e.g. ``device_id`` for ascend)."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))} (--backend)")
    entry = BACKENDS[name]
    backend_class = getattr(importlib.import_module(entry.module), entry.class_name)
    return backend_class(**settings)


# --- compile cache -------------------------------------------------------------------------------------------------


def sidecar_path(artifact_path: str | os.PathLike) -> Path:
    artifact_path = Path(artifact_path)
    return artifact_path.with_name(artifact_path.name + SIDECAR_SUFFIX)


# What a backend's build step returns: the artifact's input shape plus anything worth recording.
BuildFn = Callable[[Path], dict[str, Any]]


def compile_cached(
    onnx_path: str | os.PathLike,
    batch_size: int,
    cache_dir: str | os.PathLike,
    options: CompileOptions,
    *,
    backend: str,
    runtime: str,
    suffix: str,
    build: BuildFn,
) -> Artifact:
    """Return the cached artifact for (ONNX content, batch, options, backend, runtime), building it if absent.

    ``runtime`` is whatever makes an artifact non-portable (toolkit version, device/SoC). ``build(tmp_path)`` must write
    the artifact at ``tmp_path`` (inside a private temp folder, so tools that add their own suffix can write beside
    it) and return a dict with at least ``input_shape``. The artifact is moved into place first and the sidecar
    written last, so an interrupted compile leaves no sidecar and is rebuilt on the next call.
    """
    check_batch_size(batch_size)
    # An option this backend ignores must not be recorded in the sidecar as if the artifact computed in it.
    check_precision_mode(backend, options.precision_mode, "precision_mode (--precision-mode)")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ConfigError(f"ONNX model {onnx_path} does not exist; run the export step first or fix --onnx")
    onnx_sha256 = sha256_file(onnx_path)
    options_dict = options.to_dict()
    cache = ContentCache(Path(cache_dir))
    key = cache.key(
        {
            "backend": backend,
            "runtime": runtime,
            "onnx_sha256": onnx_sha256,
            "batch_size": batch_size,
            "options": options_dict,
        }
    )
    # Absolute before any tool sees it: ATC runs in the build folder and would resolve a relative path there.
    cache_dir = cache.root.absolute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = onnx_path.name.split(".")[0]
    artifact_path = cache_dir / f"{stem}_bs{batch_size}_{options.input_dtype}_{cache.entry(key).name}{suffix}"

    hit = cache.lookup(lambda: _load_cache_hit(artifact_path, key))
    if hit is not None:
        return hit

    tmp_dir = Path(tempfile.mkdtemp(prefix=f".build-{key[:16]}-", dir=cache_dir))
    try:
        tmp_artifact = tmp_dir / artifact_path.name
        meta = dict(build(tmp_artifact))
        if not tmp_artifact.is_file():
            raise BackendError(f"{backend} compile of {onnx_path} produced no artifact at {tmp_artifact}")
        input_shape = [int(d) for d in meta.pop("input_shape")]
        artifact = Artifact(
            path=artifact_path,
            backend=backend,
            batch_size=batch_size,
            input_dtype=options.input_dtype,
            sha256=sha256_file(tmp_artifact),
            onnx_sha256=onnx_sha256,
            options=options_dict,
            cached=False,
            input_shape=input_shape,
            cache_key=key,
            meta={"runtime": runtime, **meta},
        )
        os.replace(tmp_artifact, artifact_path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    atomic_write_json(sidecar_path(artifact_path), artifact)
    return artifact


def _load_cache_hit(artifact_path: Path, key: str) -> Artifact | None:
    """The cached artifact if its sidecar matches ``key`` and its bytes still match the recorded hash."""
    sidecar = sidecar_path(artifact_path)
    if not (artifact_path.is_file() and sidecar.is_file()):
        return None
    artifact = Artifact.from_dict(read_json(sidecar))
    if artifact.cache_key != key or sha256_file(artifact_path) != artifact.sha256:
        return None
    artifact.path = artifact_path
    artifact.cached = True
    return artifact


# --- prep files vs artifact ----------------------------------------------------------------------------------------


def select_prep_files(
    artifact: Artifact, prep_dir: str | os.PathLike, files: list[str] | None = None
) -> tuple[PrepManifest, list[PrepFile]]:
    """The manifest and the prep files to run (all, or the shard ``files``), after checking that they fit the
    artifact's input: dtype, batch size, per-file byte size. ais_bench never checks dtype, so both backends call this.
    """

    prep_dir = Path(prep_dir)
    # Only the selected files are checked below: other shards of the folder may still be being written.
    manifest = read_manifest(prep_dir, check_files=False)
    # Per-image files (a guide's layout) fill a batch of any size: ais_bench packs batch_size of them per run.
    files_per_batch = artifact.batch_size if manifest.per_image else 1
    fix = (
        f"re-run preprocess with --batch-size {artifact.batch_size} --dtype {artifact.input_dtype}, "
        f"or compile with --batch-size {manifest.batch_size} --input-dtype {manifest.dtype}"
    )
    if manifest.per_image:
        fix = f"re-run preprocess for this model's input ({artifact.input_dtype}), or compile for {manifest.dtype}"
    if manifest.dtype != artifact.input_dtype or int(manifest.batch_size) * files_per_batch != artifact.batch_size:
        raise BackendError(
            f"prep folder {prep_dir} holds {manifest.dtype} batches of {manifest.batch_size} but artifact "
            f"{artifact.path.name} takes {artifact.input_dtype} batches of {artifact.batch_size}; {fix}"
        )
    if artifact.input_shape and list(manifest.input_shape[1:]) != list(artifact.input_shape[1:]):
        raise BackendError(
            f"prep folder {prep_dir} has input shape {list(manifest.input_shape)} but artifact {artifact.path.name} "
            f"takes {artifact.input_shape}; {fix}"
        )

    by_name = {prep_file.name: prep_file for prep_file in manifest.files}
    if files is None:
        selected = list(manifest.files)
    else:
        unknown = [name for name in files if name not in by_name]
        if unknown:
            raise ConfigError(
                f"files {unknown[:5]} are not in {prep_dir}/manifest.json; pass names listed in the manifest"
            )
        selected = [by_name[name] for name in files]

    expected = artifact.input_nbytes // files_per_batch
    for prep_file in selected:
        bin_path = prep_dir / prep_file.name
        if not bin_path.is_file():
            raise BackendError(f"input file {bin_path} listed in the manifest is missing; re-run preprocess")
        actual = bin_path.stat().st_size
        if actual != expected:
            raise BackendError(
                f"input file {bin_path} is {actual} bytes but artifact {artifact.path.name} expects {expected} "
                f"({artifact.input_dtype} {artifact.input_shape}); {fix}"
            )
    check_prep_files(prep_dir, manifest, selected)  # and each holds the images the manifest says
    return manifest, selected
