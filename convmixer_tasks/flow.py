"""Task-level glue for the Airflow DAG: the work-folder layout, content-keyed caches, shard planning and the small
JSON-able step results that travel between tasks through XCom.

Every function here takes and returns plain dicts/lists/strings/numbers, so a task on one host can hand its result
to a task on another. Importing this module is cheap (stdlib + ``errors``/``fileio`` only): the DAG file imports it
at parse time, and the heavy libraries (torch, numpy, onnx, PIL) are imported inside the functions that use them.
Nothing here imports Airflow; the DAG passes in what it reads from Airflow (params, run facts, the connection).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from convmixer_tasks.errors import ConfigError, PreprocessError, RegressionError
from convmixer_tasks.fileio import atomic_write_json, read_json, sha256_file, sha256_json, to_jsonable

if TYPE_CHECKING:  # type hints only: the backends import numpy
    from convmixer_tasks.backends.base import Artifact

# --- choices the DAG's Param schema offers (kept as literals so parsing the DAG never imports torch) -------------

# Must equal ``model.VARIANTS`` keys; tests/dags/test_dag_import.py checks it.
VARIANT_NAMES = ("convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_demo")
BACKEND_NAMES = ("onnxruntime", "ascend")  # = backends.base.BACKENDS keys
INPUT_DTYPES = ("float32", "uint8")  # = backends.base.INPUT_DTYPES
BATCH_SIZE_CHOICES = (1, 4, 8, 16, 32, 64)
SOC_VERSION_PATTERN = r"^(auto|Ascend[0-9A-Za-z]+)$"

DEMO_VARIANT = "convmixer_demo"  # = demo.DEMO_VARIANT
DEMO_CHECKPOINT = Path(__file__).resolve().parent / "demo_assets" / "convmixer_demo.pth.tar"
DEMO_MARKER = "demo_dataset.json"  # = demo.MARKER_NAME: written last by make_demo_dataset

# The ONNX step's fixed options (part of its cache key). Opset 17: the exporter default that ATC parses.
ONNX_OPSET = 17
ONNX_DYNAMO = False
PARITY_TOLERANCE = 1e-4
BENCH_WARMUP = 5


# --- the work folder ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkLayout:
    """Where each step reads and writes under the shared work folder.

    ``cache/`` holds content-keyed results that any later run may reuse (prep batches, ONNX, compiled artifacts);
    ``runs/<run>/`` holds what belongs to one DAG run only (inference outputs, eval and benchmark JSON).
    """

    root: Path

    @property
    def demo_root(self) -> Path:
        return self.root / "demo"

    @property
    def demo_image_dir(self) -> Path:
        return self.demo_root / "images"

    @property
    def demo_label_file(self) -> Path:
        return self.demo_root / "val_label.txt"

    def prep_dir(self, key: str) -> Path:
        return self.root / "cache" / "prep" / key[:16]

    def onnx_path(self, key: str) -> Path:
        return self.root / "cache" / "onnx" / key[:16] / "model.onnx"

    def artifact_cache(self, backend: str) -> Path:
        return self.root / "cache" / "artifacts" / backend

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_slug(run_id)

    def batch_dir(self, run_id: str, batch_size: int) -> Path:
        return self.run_dir(run_id) / f"bs{batch_size}"

    def shard_output_dir(self, run_id: str, batch_size: int, shard: int) -> Path:
        # ais_bench layout: outputs in .../shardNNN/outputs, summary beside it as outputs_summary.json
        return self.batch_dir(run_id, batch_size) / "infer" / f"shard{shard:03d}" / "outputs"

    def merged_output_dir(self, run_id: str, batch_size: int) -> Path:
        return self.batch_dir(run_id, batch_size) / "outputs"


def run_slug(run_id: str) -> str:
    """A folder name for an Airflow run id (``manual__2026-01-01T00:00:00+00:00`` has ``:`` and ``+``)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80]
    return f"{readable}-{sha256_json(run_id)[:8]}"  # the hash keeps two ids that read alike apart


# --- params ---------------------------------------------------------------------------------------------------------

def batch_sizes_from_params(params: Mapping[str, Any]) -> list[int]:
    """``batch_size`` (a manual trigger's single size) overrides ``batch_sizes``; order kept, duplicates dropped."""
    single = params.get("batch_size")
    sizes = [single] if single is not None else list(params.get("batch_sizes") or [])
    if not sizes:
        raise ConfigError("no batch size given; set param batch_sizes (e.g. [1, 16]) or batch_size "
                          "(CLI: --batch-size)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size not in BATCH_SIZE_CHOICES:
            raise ConfigError(f"batch size {size!r} is not one of {list(BATCH_SIZE_CHOICES)}; fix param batch_sizes "
                              "(CLI: --batch-size)")
    return list(dict.fromkeys(sizes))


def check_param_names(params: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse conf keys the DAG does not declare: Airflow merges them into the params unchecked, so a misspelt key
    (``batch_szie``) would otherwise run silently with the default it meant to change."""
    known = set(known)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown param(s) {', '.join(unknown)} in the run's conf; use only "
                          f"{', '.join(sorted(known))} (check the spelling) and trigger again")


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(timezone.utc).isoformat() if value.tzinfo else value.isoformat()


def run_info(run_id: str, dag_id: str | None, logical_date: datetime | str | None,
             started_at: datetime | str | None) -> dict[str, Any]:
    """What the metrics rows say about the Airflow run (dates as ISO strings: they travel through XCom)."""
    return {"run_id": run_id, "dag_id": dag_id, "logical_date": _iso(logical_date), "started_at": _iso(started_at)}


# --- check inputs ---------------------------------------------------------------------------------------------------

def ensure_demo_dataset(layout: WorkLayout) -> bool:
    """Generate the demo set into the work folder unless a complete one is there; True when it was generated.

    An existing set is left untouched (regenerating rewrites every JPEG, which would change the dataset
    fingerprint and throw away the prep cache).
    """
    if (layout.demo_root / DEMO_MARKER).is_file() and layout.demo_label_file.is_file():
        return False
    from convmixer_tasks.demo import make_demo_dataset

    make_demo_dataset(layout.demo_root)
    return True


def transform_id(dtype: str) -> dict[str, Any]:
    """The preprocessing transform's identity (part of the prep cache key): a change to it invalidates preps."""
    from convmixer_tasks.preprocess import transform_params

    return transform_params(dtype)


def check_inputs(params: Mapping[str, Any], run_id: str, work_dir: str | os.PathLike,
                 known_params: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Validate the run's inputs once, at the edge, and plan it: one plan dict per batch size.

    Fails fast (before any expensive step) on a param outside ``known_params`` (when given), a missing checkpoint,
    a malformed dataset or label file. When the dataset params point at the default demo location and nothing is
    there yet, the demo set is generated.
    """
    from convmixer_tasks.dataset import load_dataset

    if known_params is not None:
        check_param_names(params, known_params)
    layout = WorkLayout(Path(work_dir))
    checkpoint = Path(params["checkpoint"])
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist; set param checkpoint to the .pth.tar file "
                          "(or [convmixer] checkpoint in airflow.cfg; CLI: --source)")
    image_dir, label_file = Path(params["dataset_dir"]), Path(params["label_file"])
    if image_dir == layout.demo_image_dir and label_file == layout.demo_label_file:
        ensure_demo_dataset(layout)
    # variant / backend / dtype choices are the Param schema's job (and the library's, which names the fix)
    variant, backend, dtype = params["model_variant"], params["backend"], params["input_dtype"]
    limit = params.get("image_limit")
    dataset = load_dataset(image_dir, label_file, limit=limit)
    fingerprint = dataset.fingerprint()
    transform = transform_id(dtype)
    plans = []
    for batch_size in batch_sizes_from_params(params):
        prep_key = sha256_json({"dataset": fingerprint, "transform": transform, "batch_size": batch_size,
                                "dtype": dtype, "limit": limit})
        plans.append({
            "run_id": run_id, "batch_size": batch_size, "backend": backend, "input_dtype": dtype,
            "model_variant": variant, "checkpoint": str(checkpoint),
            "dataset_dir": str(image_dir), "label_file": str(label_file), "image_limit": limit,
            "image_count": len(dataset.images), "dataset_fingerprint": fingerprint,
            "prep_dir": str(layout.prep_dir(prep_key)), "prep_key": prep_key,
            "run_dir": str(layout.run_dir(run_id)),
        })
    return plans


# --- preprocess (one shard of one batch size) -----------------------------------------------------------------------

def prepare_shard(plan: Mapping[str, Any], shard: int, shards: int, workers: int | None = None) -> dict[str, Any]:
    """Preprocess shard ``shard`` of ``shards`` into the batch size's content-keyed prep folder.

    A finished prep folder is reused untouched (``cached=True``); an unfinished one is completed by
    ``preprocess``, which skips the files already written with the same inputs.
    """
    from convmixer_tasks.preprocess import preprocess, read_manifest, shard_range

    manifest = _complete_prep(plan)
    written = 0
    if manifest is None:
        result = preprocess(plan["dataset_dir"], plan["prep_dir"], plan["batch_size"], dtype=plan["input_dtype"],
                            workers=workers, shard=(shard, shards), label_file=plan["label_file"],
                            limit=plan["image_limit"])
        written = result.files_written
        # Other shards may still be writing: read the plan, not the files (infer checks them all later).
        manifest = read_manifest(plan["prep_dir"], check_files=False)
    files = [manifest.files[position].name for position in shard_range(len(manifest.files), (shard, shards))]
    return {"batch_size": plan["batch_size"], "shard": shard, "shards": shards, "prep_dir": plan["prep_dir"],
            "files": files, "files_written": written, "cached": written == 0}


def _complete_prep(plan: Mapping[str, Any]) -> Any:
    """The manifest of a finished prep folder for this plan, or None. The folder's name is its content key, so a
    finished one is reused as is: no pixel is read and no file (manifest included) is rewritten."""
    from convmixer_tasks.preprocess import read_manifest

    try:
        manifest = read_manifest(plan["prep_dir"])  # checks every listed file's size and layout marker
    except PreprocessError:
        return None
    return manifest if manifest.dataset_fingerprint == plan["dataset_fingerprint"] else None


# --- export + parity (content-keyed ONNX cache) ---------------------------------------------------------------------

def export_cached(checkpoint: str | os.PathLike, variant: str, work_dir: str | os.PathLike) -> dict[str, Any]:
    """The validated ONNX for (checkpoint content, variant, opset, exporter), exported only on a cache miss.

    The parity report that ``export_and_validate`` writes last beside the ONNX is the cache's completion marker; a
    hit is also checked against the ONNX hash recorded in it, so a truncated or replaced file is rebuilt.
    """
    checkpoint_sha256 = sha256_file(checkpoint)
    key = sha256_json({"checkpoint_sha256": checkpoint_sha256, "variant": variant, "opset": ONNX_OPSET,
                       "dynamo": ONNX_DYNAMO, "tolerance": PARITY_TOLERANCE})
    onnx_path = WorkLayout(Path(work_dir)).onnx_path(key)
    report_path = onnx_path.with_name(f"{onnx_path.stem}.parity.json")
    report = _cached_export(onnx_path, report_path)
    cached = report is not None
    if report is None:
        from convmixer_tasks.export import export_and_validate

        report = to_jsonable(export_and_validate(checkpoint, onnx_path, variant=variant, opset=ONNX_OPSET,
                                                 dynamo=ONNX_DYNAMO, tolerance=PARITY_TOLERANCE))
    return {"onnx_path": str(onnx_path), "onnx_sha256": report["onnx_sha256"],
            "checkpoint_sha256": checkpoint_sha256, "variant": variant, "opset": ONNX_OPSET,
            "parity_max_abs_diff": report["parity"]["max_abs_diff"], "cache_key": key, "cached": cached}


def _cached_export(onnx_path: Path, report_path: Path) -> dict[str, Any] | None:
    if not (onnx_path.is_file() and report_path.is_file()):
        return None
    try:
        report = read_json(report_path)
        if report["parity"]["passed"] and report["onnx_sha256"] == sha256_file(onnx_path):
            return report
    except (ValueError, KeyError, TypeError):
        pass  # a damaged report is a miss: export again
    return None


# --- the NPU steps: compile, infer, benchmark -----------------------------------------------------------------------

def backend_settings(backend: str, device_id: int = 0, cann_set_env: str | None = None) -> dict[str, Any]:
    """Constructor settings for ``get_backend``: the Ascend backend needs its device and CANN env script."""
    if backend == "ascend":
        return {"device_id": device_id, "cann_set_env": cann_set_env}
    return {}


def compile_artifact(plan: Mapping[str, Any], exported: Mapping[str, Any], work_dir: str | os.PathLike,
                     soc_version: str = "auto", settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compile the ONNX for one batch size (cached by ONNX hash + options + runtime) and describe the device."""
    from convmixer_tasks.backends.base import CompileOptions, get_backend

    backend = get_backend(plan["backend"], **(settings or {}))
    info = backend.describe()
    options = CompileOptions(input_dtype=plan["input_dtype"], soc_version=soc_version)
    artifact = backend.compile(exported["onnx_path"], plan["batch_size"],
                               WorkLayout(Path(work_dir)).artifact_cache(plan["backend"]), options)
    return {"batch_size": plan["batch_size"], "backend": plan["backend"], "run_id": plan["run_id"],
            "artifact": to_jsonable(artifact), "device": info.device, "toolkit_version": info.toolkit_version,
            "cached": bool(artifact.cached)}


def _artifact(compiled: Mapping[str, Any]) -> "Artifact":
    from convmixer_tasks.backends.base import Artifact

    return Artifact.from_dict(compiled["artifact"])


def _prep_shard_of(prepared: Iterable[Mapping[str, Any]], batch_size: int, shard: int) -> Mapping[str, Any]:
    for entry in prepared:
        if entry["batch_size"] == batch_size and entry["shard"] == shard:
            return entry
    raise ConfigError(f"no preprocess result for batch size {batch_size} shard {shard}; re-run the preprocess step")


def infer_shard(compiled: Mapping[str, Any], shard: int, prepared: Iterable[Mapping[str, Any]],
                work_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run one shard of the prep files through the artifact into this run's shard output folder.

    The folder is emptied first, so a retried attempt never mixes its outputs with a failed attempt's.
    """
    from convmixer_tasks.backends.base import get_backend

    batch_size = compiled["batch_size"]
    prep = _prep_shard_of(prepared, batch_size, shard)
    output_dir = WorkLayout(Path(work_dir)).shard_output_dir(compiled["run_id"], batch_size, shard)
    shutil.rmtree(output_dir.parent, ignore_errors=True)
    result = {"batch_size": batch_size, "shard": shard, "prep_dir": prep["prep_dir"], "files": prep["files"],
              "output_dir": str(output_dir)}
    if not prep["files"]:
        return {**result, "file_count": 0}  # more shards than files: nothing to run
    backend = get_backend(compiled["backend"], **(settings or {}))
    inferred = backend.infer(_artifact(compiled), prep["prep_dir"], output_dir, files=list(prep["files"]))
    return {**result, "output_dir": str(inferred.output_dir), "file_count": inferred.file_count,
            "summary_path": str(inferred.summary_path)}


def benchmark_artifact(compiled: Mapping[str, Any], loop: int, work_dir: str | os.PathLike,
                       settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pure-inference throughput of one artifact; the per-batch samples go to a file, not through XCom."""
    from convmixer_tasks.backends.base import get_backend

    backend = get_backend(compiled["backend"], **(settings or {}))
    bench = backend.benchmark(_artifact(compiled), loop=loop, warmup=BENCH_WARMUP)
    bench_json = WorkLayout(Path(work_dir)).batch_dir(compiled["run_id"], compiled["batch_size"]) / "benchmark.json"
    atomic_write_json(bench_json, bench)
    summary = {key: value for key, value in to_jsonable(bench).items() if key != "samples"}
    return {**summary, "bench_json": str(bench_json)}


# --- evaluate ---------------------------------------------------------------------------------------------------------

def merge_shard_outputs(shard_dirs: Iterable[str | os.PathLike], target: Path) -> Path:
    """Hard-link every shard's output files into one folder (what ``evaluate`` reads); copies across filesystems."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for shard_dir in shard_dirs:
        for entry in os.scandir(shard_dir):
            if entry.is_file():
                try:
                    os.link(entry.path, target / entry.name)
                except OSError:
                    shutil.copy2(entry.path, target / entry.name)
    return target


def evaluate_run(plans: Iterable[Mapping[str, Any]], inferred: Iterable[Mapping[str, Any]],
                 work_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Top-1/top-5 per batch size from the merged shard outputs, scored through the prep manifest."""
    from convmixer_tasks.evaluate import evaluate

    layout = WorkLayout(Path(work_dir))
    inferred = list(inferred)
    results = []
    for plan in plans:
        batch_size = plan["batch_size"]
        shard_dirs = [entry["output_dir"] for entry in inferred
                      if entry["batch_size"] == batch_size and entry["file_count"]]
        merged = merge_shard_outputs(shard_dirs, layout.merged_output_dir(plan["run_id"], batch_size))
        result = evaluate(merged, plan["label_file"], prep_dir=plan["prep_dir"],
                          result_json=layout.batch_dir(plan["run_id"], batch_size) / "result.json")
        results.append({"batch_size": batch_size, "top1": result.top1, "top5": result.top5,
                        "image_count": result.image_count, "result_json": str(result.result_json)})
    return results


# --- metrics + gate -----------------------------------------------------------------------------------------------

def connection_url(conn_type: str | None, uri: str, host: str | None = None, schema: str | None = None) -> str:
    """A SQLAlchemy URL from an Airflow Connection.

    Airflow writes PostgreSQL as ``postgres://`` (SQLAlchemy wants ``postgresql+<driver>://``) and renders a SQLite
    connection as ``sqlite:///%2Fpath`` (not a path SQLAlchemy can open), so both are rebuilt here.
    """
    if conn_type == "sqlite":
        path = host or schema
        if not path:
            raise ConfigError("the metrics SQLite connection names no file; set its host to the database path")
        return f"sqlite:///{path}"
    from convmixer_tasks.metrics import normalize_url

    return normalize_url(uri)


def metrics_url(connection: str | None = None, setting: str | None = None,
                airflow_home: str | os.PathLike | None = None) -> str:
    """The metrics DB: the Airflow connection's URL, else ``$CONVMIXER_METRICS_DB_URL``, else ``[convmixer]
    metrics_db_url``, else SQLite beside AIRFLOW_HOME (never Airflow's own database)."""
    from convmixer_tasks.metrics import ENV_VAR, resolve_metrics_url

    explicit = connection or os.environ.get(ENV_VAR) or setting or None
    return resolve_metrics_url(explicit, airflow_home=airflow_home)


def _by_batch(entries: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    return {entry["batch_size"]: entry for entry in entries}


def build_rows(run: Mapping[str, Any], plans: Iterable[Mapping[str, Any]], exported: Mapping[str, Any],
               compiled: Iterable[Mapping[str, Any]], benchmarks: Iterable[Mapping[str, Any]],
               evaluated: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One metrics row per batch size, status ``pending``: evaluated but not gated, so it stays out of the gate's
    history (``ok`` rows only) until ``gate_rows`` stores ok/regressed on it."""
    compiled_by, bench_by, eval_by = _by_batch(compiled), _by_batch(benchmarks), _by_batch(evaluated)
    finished_at = datetime.now(timezone.utc).isoformat()
    rows = []
    for plan in plans:
        batch_size = plan["batch_size"]
        comp, bench, scored = compiled_by[batch_size], bench_by[batch_size], eval_by[batch_size]
        rows.append({
            **run, "finished_at": finished_at, "model_variant": plan["model_variant"],
            "checkpoint_sha256": exported["checkpoint_sha256"], "onnx_sha256": exported["onnx_sha256"],
            "artifact_sha256": comp["artifact"]["sha256"], "backend": plan["backend"], "device": comp["device"],
            "toolkit_version": comp["toolkit_version"], "batch_size": batch_size, "input_dtype": plan["input_dtype"],
            "image_count": scored["image_count"], "top1": scored["top1"], "top5": scored["top5"],
            "throughput": bench["throughput"], "latency_mean_ms": bench["latency_mean_ms"],
            "latency_p50_ms": bench["latency_p50_ms"], "latency_p99_ms": bench["latency_p99_ms"],
            "parity_max_abs_diff": exported["parity_max_abs_diff"], "status": "pending",
        })
    return rows


def record_rows(url: str, rows: Iterable[Mapping[str, Any]], *, keep_gated: bool = False) -> list[dict[str, Any]]:
    """Write the rows in one transaction (upsert by run_id + batch size + backend, so a retried task leaves one
    row each; a row the store refuses leaves none of them behind). ``keep_gated`` leaves a row that already has
    the gate's verdict (ok/regressed) as it is: the failure path passes it with ``failed_rows``."""
    from convmixer_tasks.metrics import record_runs, upgrade

    rows = list(rows)
    upgrade(url)
    ids = record_runs(url, rows, keep_gated=keep_gated)
    return [{"id": row_id, "run_id": row["run_id"], "batch_size": row["batch_size"], "backend": row["backend"]}
            for row_id, row in zip(ids, rows)]


def failed_rows(run: Mapping[str, Any], params: Mapping[str, Any], reason: str) -> list[dict[str, Any]]:
    """``failed`` rows (no accuracy, no throughput) for a run that broke before evaluation, one per batch size.

    Record them with ``record_rows(..., keep_gated=True)``: a rerun of a cleared task that fails must not replace a
    verdict an earlier attempt stored (a ``pending`` row from that attempt does become ``failed``)."""
    finished_at = datetime.now(timezone.utc).isoformat()
    return [{**run, "finished_at": finished_at, "model_variant": params["model_variant"],
             "backend": params["backend"], "batch_size": batch_size, "input_dtype": params["input_dtype"],
             "status": "failed", "gate_reasons": [reason]}
            for batch_size in batch_sizes_from_params(params)]


def gate_rows(url: str, recorded: Iterable[Mapping[str, Any]], params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Apply the regression gate to every recorded row (``pending``, or already gated on a retry), then fail once
    if any regressed.

    ``apply_gate`` stores ``regressed`` on the row before raising, so every batch size gets its verdict stored
    even when an earlier one regressed; the combined error names them all (each message names its batch size)
    and carries their ``GateDecision``s as ``.decisions``.
    """
    from convmixer_tasks.gate import apply_gate

    options = gate_options(params)
    verdicts, regressions = [], []
    for row in recorded:
        try:
            decision = apply_gate(url, row["run_id"], row["batch_size"], row["backend"], **options)
            verdicts.append({"batch_size": row["batch_size"], **to_jsonable(decision)})
        except RegressionError as exc:
            regressions.append(exc)
    if regressions:
        error = RegressionError("; ".join(str(exc) for exc in regressions))
        error.decisions = [getattr(exc, "decision", None) for exc in regressions]  # for failure callbacks
        raise error
    return verdicts


def gate_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG params that tune ``gate.apply_gate``.

    A quick run on the first ``image_limit`` images cannot be held to a baseline measured on the whole set, so its
    accuracy is not gated (tolerance 100 points; the stored reasons say so); its throughput still is.
    """
    top1_tolerance = params["top1_tolerance"] if params.get("image_limit") is None else 100.0
    return {"top1_tolerance": top1_tolerance,
            "throughput_drop_pct": params["throughput_tolerance_pct"],
            "history": params["throughput_history"]}
