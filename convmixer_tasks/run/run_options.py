"""How a run parameter declares its Param (name, JSON schema, description, where its default comes from), and the
option records ``RunParams`` carries: the benchmark's, the gate's and the ``evidence`` param's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from convmixer_tasks.defaults import (
    BENCHMARK_LOOP,
    DEFAULT_CONFIRM,
    DEFAULT_HISTORY,
    DEFAULT_IDLE_WAIT_S,
    DEFAULT_MAX_CV_PCT,
    DEFAULT_REMEASURE,
    DEFAULT_RUNS,
    DEFAULT_SIGNIFICANCE,
    DEFAULT_SUBSET,
    DEFAULT_THRESHOLDS,
    DEFAULT_THROUGHPUT_DROP_PCT,
    DEFAULT_TOP1_TOLERANCE,
    THROUGHPUT_TOLERANCE_PARAM,
    TOP1_TOLERANCE_PARAM,
)


@dataclass(frozen=True)
class Declared:
    """A field's Param: its name in the conf, schema, description, and where its default comes from."""

    name: str
    schema: dict[str, Any]
    description: str
    setting: str | None = None  # the SchedulingSettings attribute holding the default; None: the field's default
    default: Any = None  # for a second, shorthand Param of the same field (batch_size for batch_sizes)


def _read_only(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError("a Param's JSON schema is read-only (every task of the DAG shares it); build a new one instead")


class SharedSchema(dict[str, Any]):
    """A Param's JSON schema (or an object inside one), read-only. Airflow deep-copies the DAG's Params into each of
    its tasks when the DAG is parsed; a schema that cannot change is shared by them instead, as a tuple would be.
    It is the dict it holds to everything else: equality, JSON, Airflow's serialization, jsonschema."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> SharedSchema:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedSchema:
        return self

    def __reduce__(self) -> tuple[Any, ...]:  # pickle builds it from a plain dict (its item setter refuses)
        return type(self), (dict(self),)


class SharedList(list[Any]):
    """A list inside a ``SharedSchema`` (an enum, a type union), read-only likewise."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = clear = extend = insert = pop = remove = _read_only
    reverse = sort = _read_only

    def __copy__(self) -> SharedList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedList:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (list(self),)


def shared_schema(schema: Mapping[str, Any]) -> SharedSchema:
    """``schema`` as a read-only ``SharedSchema``, every dict and list inside it too (copies: ``schema`` is left as
    it is)."""

    def freeze(value: Any) -> Any:
        if isinstance(value, dict):
            return SharedSchema({key: freeze(inner) for key, inner in value.items()})
        if isinstance(value, list):
            return SharedList(freeze(inner) for inner in value)
        return value

    frozen: SharedSchema = freeze(dict(schema))
    return frozen


def param_field(default: Any, name: str, schema: dict[str, Any], description: str, *also: Declared) -> Any:
    """A field whose Param is ``name``; ``also``: shorthand Params folded into the same field."""
    return field(default=default, metadata={"params": (Declared(name, schema, description), *also)})


def setting_field(setting: str, name: str, schema: dict[str, Any], description: str, *also: Declared) -> Any:
    """A field whose Param's default is a ``[convmixer]`` setting (no default of its own: a caller names it)."""
    return field(metadata={"params": (Declared(name, schema, description, setting), *also)})


def number_schema(minimum: float | None = None, maximum: float | None = None, **bounds: float) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", **bounds}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


@dataclass(frozen=True, kw_only=True)
class BenchmarkOptions:
    """What tunes ``benchmark_step.benchmark_artifact``: loops, re-measurements while the per-loop CV is above
    ``max_cv_pct``, the idle wait for a busy device, the confirmations a suspect figure takes."""

    loop: int = param_field(
        BENCHMARK_LOOP,
        "benchmark_loop",
        {"type": "integer", "minimum": 1, "maximum": 100000},
        "Pure-inference iterations per batch size (after 5 warm-up runs).",
    )
    remeasure: int = param_field(
        DEFAULT_REMEASURE,
        "benchmark_remeasure",
        {"type": "integer", "minimum": 0, "maximum": 10},
        "Re-measurements a benchmark may take while its per-loop CV is above throughput_max_cv_pct.",
    )
    max_cv_pct: float = param_field(
        DEFAULT_MAX_CV_PCT,
        "throughput_max_cv_pct",
        number_schema(maximum=1000, exclusiveMinimum=0),
        "Gate: per-loop coefficient of variation (percent) above which a benchmark is too noisy to judge: "
        "re-measured, then 'inconclusive'.",
    )
    idle_wait_s: float = param_field(
        DEFAULT_IDLE_WAIT_S,
        "benchmark_idle_wait_s",
        number_schema(0, 3600),
        "Seconds a busy device (Ascend: AI Core in use or a process on it, per npu-smi) is waited for before it "
        "is timed anyway; the row then says it was busy.",
    )
    confirm: int = param_field(
        DEFAULT_CONFIRM,
        "benchmark_confirm",
        {"type": "integer", "minimum": 0, "maximum": 10},
        "Measurements a benchmark takes to confirm a figure below its same-fingerprint history's suspect line "
        "(half the throughput tolerance below the median); the verdict judges such a run on them. 0 = never.",
    )


@dataclass(frozen=True, kw_only=True)
class GateOptions:
    """What tunes ``gate.apply_gate`` (with the benchmark's ``max_cv_pct`` and the evidence's significance)."""

    top1_tolerance: float = param_field(
        DEFAULT_TOP1_TOLERANCE,
        TOP1_TOLERANCE_PARAM,
        number_schema(0, 100),
        "Gate: allowed top-1 drop (percentage points) below the variant's published baseline (the demo model: "
        "its committed expected_top1).",
    )
    throughput_drop_pct: float = param_field(
        DEFAULT_THROUGHPUT_DROP_PCT,
        THROUGHPUT_TOLERANCE_PARAM,
        number_schema(0, exclusiveMaximum=100),
        "Gate: allowed throughput drop, in percent of the median of the recent ok runs with the same environment "
        "fingerprint (same model, backend, device, batch size); a drop beyond it must also be statistically clear "
        "against their noise to count as a regression.",
    )
    history: int = param_field(
        DEFAULT_HISTORY,
        "throughput_history",
        {"type": "integer", "minimum": 1, "maximum": 100},
        "Gate: how many recent same-fingerprint ok runs form the throughput baseline and its noise (no throughput "
        "verdict before 5).",
    )
    runs: int = param_field(
        DEFAULT_RUNS,
        "throughput_runs",
        {"type": "integer", "enum": [1, 2]},
        "Gate: consecutive runs a throughput regression needs. 2: one run slowed from start to end by a neighbour "
        "is never a regression (bench/RESULTS.md); 1: single-run verdicts, for hosts no one shares.",
    )


def _key(default: Any, schema: dict[str, Any]) -> Any:
    """A key of the ``evidence`` object param."""
    return field(default=default, metadata={"schema": schema})


@dataclass(frozen=True, kw_only=True)
class EvidenceOptions:
    """The ``evidence`` param: the fidelity subset and limits (msit compare's defaults), and the significance a
    paired top-1 drop needs."""

    fidelity_subset: int | None = _key(None, {"type": ["null", "integer"], "minimum": 1})
    min_cosine: float = _key(DEFAULT_THRESHOLDS["min_cosine"], number_schema(-1, 1))
    max_rel_euclidean: float = _key(DEFAULT_THRESHOLDS["max_rel_euclidean"], number_schema(0))
    max_kl: float = _key(DEFAULT_THRESHOLDS["max_kl"], number_schema(0))
    top1_significance: float = _key(DEFAULT_SIGNIFICANCE, number_schema(maximum=1, exclusiveMinimum=0))

    def thresholds(self) -> dict[str, float]:
        """The fidelity limits, as ``fidelity.check_thresholds`` takes them."""
        return {name: getattr(self, name) for name in DEFAULT_THRESHOLDS}


EVIDENCE_PARAM = "evidence"
EVIDENCE_DESCRIPTION = (
    f"fidelity_subset: images (fixed seeded subset) on which the artifact is compared with its ONNX in fp32 (null = "
    f"{DEFAULT_SUBSET}, or all when fewer; more than the set is an error). min_cosine (in [-1, 1]) / "
    "max_rel_euclidean / max_kl (>= 0): a breach on any image is a regression (msit compare's defaults). "
    "top1_significance (in (0, 1]): a top-1 drop beyond top1_tolerance against the previous ok run or the ONNX "
    "reference run regresses only when McNemar's exact p is below it. Keys left out keep their defaults."
)


def evidence_schema() -> dict[str, Any]:
    keys = dataclasses.fields(EvidenceOptions)
    return {
        "type": "object",
        "properties": {key.name: key.metadata["schema"] for key in keys},
        "additionalProperties": False,
    }
