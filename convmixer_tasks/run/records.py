"""What one step of a validation run hands to the next: small frozen records, one per batch size × precision mode
(and shard); ``precision`` is the effective mode (the row's ``precision_mode``), so records join on
(model_variant, batch_size, precision): ``join_key``.

They cross Airflow tasks (and hosts) as XCom, so each turns into plain, readable JSON with ``to_dict()`` and back
with ``from_dict()``. The dict carries the record's name and version: a record written by another version of this
package is refused with a clear message instead of being half-read on a worker.

Importing this module is cheap (no numpy/torch/onnx): the DAG file and the plugin may import it at parse time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from convmixer_tasks.backends.base import Artifact
from convmixer_tasks.backends.precision import DEFAULT_GELU_IMPLMODE, effective_precision
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fileio import to_jsonable

R = TypeVar("R", bound="Record")


class Record:
    """Mixin for the frozen dataclasses below: versioned JSON in and out."""

    VERSION: ClassVar[int] = 1

    def values(self) -> dict[str, Any]:
        """The fields as JSON-able values, without the record header."""
        return {field.name: to_jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"record": type(self).__name__, "version": self.VERSION, **self.values()}

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any] | R) -> R:
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"expected a {cls.__name__} record, got {type(data).__name__}; clear the upstream task and run it again"
            )
        name, version = data.get("record"), data.get("version")
        if name != cls.__name__ or version != cls.VERSION:
            raise ConfigError(
                f"expected a {cls.__name__} record version {cls.VERSION}, got {name} version {version} "
                "(written by another version of convmixer-tasks); clear the upstream task and rerun it"
            )
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        missing = [field.name for field in fields if field.name not in data]
        if missing:
            raise ConfigError(f"{cls.__name__} record lacks {', '.join(missing)}; clear the upstream task and rerun it")
        return cls(**{field.name: cls._decode(field.name, data[field.name]) for field in fields})

    @classmethod
    def from_dicts(cls: type[R], items: Iterable[Mapping[str, Any]]) -> list[R]:
        return [cls.from_dict(item) for item in items]

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        """JSON value -> field value; lists become tuples (the records are frozen, their sequences too)."""
        return tuple(value) if isinstance(value, list) else value


JoinKey = tuple[str, int, str]  # (model_variant, batch_size, effective precision): one metrics row's results


def join_key(record: Any) -> JoinKey:
    """What a record of one model × batch size × precision joins on."""
    return (record.model_variant, record.batch_size, record.precision)


@dataclass(frozen=True)
class RunFacts(Record):
    """The Airflow run (or the one-process run) the rows belong to; dates as ISO strings."""

    run_id: str
    dag_id: str | None
    logical_date: str | None
    started_at: str | None
    trigger: str | None = None  # what started the run: Airflow's run type (scheduled, manual, asset_triggered, …)


@dataclass(frozen=True)
class RunPlan(Record):
    """One model × batch size × precision mode of a run, checked and planned once by ``check_inputs``."""

    run_id: str
    batch_size: int
    backend: str
    input_dtype: str
    model_variant: str
    checkpoint: str  # the .pth.tar; "": seeded random weights
    dataset_dir: str
    label_file: str
    image_limit: int | None
    image_count: int
    dataset_fingerprint: str
    prep_dir: str  # content-keyed: cache/prep/<key>
    prep_key: str
    run_dir: str
    precision_mode: str | None = None  # ATC --precision_mode as given; None = ATC's default (precision.py)
    fidelity_subset: int | None = None  # images compared with the ONNX; None = fidelity.DEFAULT_SUBSET or all
    gelu_implmode: str | None = DEFAULT_GELU_IMPLMODE  # ATC's GELU kernel choice; None = ATC picks

    @property
    def precision(self) -> str:
        """The mode the artifact computes in: what the row records and the other records join on."""
        return effective_precision(self.backend, self.precision_mode)


@dataclass(frozen=True)
class PrepShard(Record):
    """One shard of one batch size's prep folder: which of its files this shard owns."""

    batch_size: int
    shard: int
    shards: int
    prep_dir: str
    files: tuple[str, ...]
    files_written: int
    cached: bool
    seconds: float | None = None  # this step's wall time (a cached prep: the check alone); for stage_seconds


@dataclass(frozen=True)
class ExportedModel(Record):
    """The ONNX that passed parity, from the content-keyed ONNX cache."""

    onnx_path: str
    onnx_sha256: str
    checkpoint_sha256: str  # export_step.RANDOM_WEIGHTS for seeded random weights
    variant: str
    opset: int
    parity_max_abs_diff: float
    cache_key: str
    cached: bool


@dataclass(frozen=True)
class CompiledModel(Record):
    """One model × batch size × precision's compiled artifact and the device/toolkit it was compiled for."""

    model_variant: str
    run_id: str
    batch_size: int
    backend: str
    precision: str
    artifact: Artifact
    device: str
    toolkit_version: str
    cached: bool
    prep_dir: str  # the plan's prep folder: the inputs its infer shards read

    def fresh_artifact(self) -> Artifact:
        """The record's artifact, as a fresh object (backends may set fields on it)."""
        return Artifact.from_dict(to_jsonable(self.artifact))

    @classmethod
    def _decode(cls, name: str, value: Any) -> Any:
        if name == "artifact":
            return Artifact.from_dict(value)
        return super()._decode(name, value)


@dataclass(frozen=True)
class ShardOutputs(Record):
    """Where one shard's inference outputs landed (ais_bench layout)."""

    model_variant: str
    batch_size: int
    precision: str
    shard: int
    prep_dir: str
    files: tuple[str, ...]
    output_dir: str
    file_count: int
    summary_path: str | None
    seconds: float | None = None  # this step's wall time; for stage_seconds


@dataclass(frozen=True)
class Scores(Record):
    """Top-1/top-5 of one model × batch size × precision over the merged shard outputs."""

    model_variant: str
    batch_size: int
    precision: str
    top1: float
    top5: float
    image_count: int
    result_json: str
    predictions: str | None = None  # evidence.Predictions file (compressed), stored beside the row
    fidelity_json: str | None = None  # fidelity.summarise of the artifact vs its ONNX; None = not measured
    seconds: float | None = None  # this step's wall time (scoring and the fidelity check); for stage_seconds


@dataclass(frozen=True)
class BenchSummary(Record):
    """Pure-inference throughput of one model × batch size × precision; the per-loop samples stay in ``bench_json``."""

    model_variant: str
    batch_size: int
    backend: str
    precision: str
    loop: int
    warmup: int
    throughput: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    formula: str
    bench_json: str
    # Throughput evidence (the chosen measurement's kept samples and dispersion; see
    # convmixer_tasks.verdict.throughput).
    samples_ms: str | None = None  # packed per-loop times, warm-up excluded; None: the tool kept no per-loop list
    sample_count: int | None = None
    latency_cv: float | None = None
    latency_iqr_ms: float | None = None
    throughput_robust: float | None = None  # 1000 * batch size / median per-loop time: the figure the verdict judges
    latency_robust_cv: float | None = None  # 1.4826 × MAD / median of the per-loop times
    measurements: int = 1  # 1 + re-measurements taken because the CV was too high
    fingerprint: dict[str, Any] | None = None  # fingerprint.build on the benchmarking host, with its load
    # Energy over the kept measurement's window (convmixer_tasks.measure.energy); None with the reason in ``energy``.
    energy_j_per_image: float | None = None
    throughput_per_watt: float | None = None  # images/s/W
    energy: dict[str, Any] | None = None  # source, samples, window, mean W — or why there is none


@dataclass(frozen=True)
class RecordedRow(Record):
    """The metrics row a run wrote for one model × batch size × precision (the key the gate looks it up by)."""

    model_variant: str
    id: int
    run_id: str
    batch_size: int
    backend: str
    precision: str
    chip: str = ""  # the chip type of a run over chips ([convmixer] chips); part of the row key


@dataclass(frozen=True)
class Verdict(Record):
    """The gate's decision on one recorded row."""

    model_variant: str
    batch_size: int
    precision: str
    status: str
    reasons: tuple[str, ...]
    baseline_top1: float | None
    baseline_throughput: float | None


@dataclass(frozen=True)
class TaskFailure(Record):
    """Why one task instance of a run failed, as its failure callback saw it (``runfacts.log_task_failure``), kept
    for ``record_failure`` on whichever host runs it. The scope fields say which rows the task was working for:
    None matches any (``check_inputs`` concerns every row, a preprocess task its batch size's)."""

    task_id: str  # as Airflow names it: "chip_910B3.infer" inside a chip's group
    map_index: int  # -1: not mapped
    label: str | None  # the mapped instance's name in the UI ("convmixer_demo bs4 force_fp16 shard 0")
    error: str  # the exception's one-line message, bounded (runfacts.error_line)
    model_variant: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    chip: str | None = None  # from the task's chip group; None: a task every chip shares

    def cause(self) -> str:
        """ "check_inputs failed: …", "chip_910B3.infer [convmixer_demo bs4 fp32 shard 0] failed: …"."""
        where = f" [{self.label}]" if self.label else f" [map index {self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.task_id}{where} failed: {self.error}"

    def concerns(self, model_variant: str, batch_size: int, precision: str, chip: str) -> bool:
        """Whether the failed task was working for this row (so the row failed here, rather than not running)."""
        scope = ((self.model_variant, model_variant), (self.batch_size, batch_size), (self.precision, precision))
        return all(mine is None or mine == theirs for mine, theirs in scope) and self.chip in (None, chip)
