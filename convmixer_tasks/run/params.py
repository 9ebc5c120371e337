"""The run's parameters: ``RunParams``, one frozen record parsed once at each edge — a DAG task's params, the CLI's
flags (``convmixer-tasks run``), ``local_run`` — through one constructor, ``RunParams.from_mapping``.

Each field states its Param: name, JSON schema (so Airflow refuses an impossible value when the run is triggered),
description; its default is the field's (figures from ``defaults``) or a ``[convmixer]`` setting's. ``param_specs``
turns them into the DAG's Params, so a default or a rule is written once. Choices come from the registries
(backends, input dtypes, variants, precision modes). Cheap to import: the DAG file builds its Params from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from convmixer_tasks.backends.catalog import BACKEND_NAMES
from convmixer_tasks.backends.precision import (
    ATC_DEFAULT_PRECISION,
    DEFAULT_GELU_IMPLMODE,
    GELU_IMPLMODES,
    GELU_OPTYPE,
    PRECISION_MODES,
    gelu_compile_options,
    precision_modes_from_params,
)
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.dtypes import INPUT_DTYPES
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.models.names import card_names
from convmixer_tasks.run.run_options import (
    EVIDENCE_DESCRIPTION,
    EVIDENCE_PARAM,
    BenchmarkOptions,
    Declared,
    EvidenceOptions,
    GateOptions,
    SharedSchema,
    evidence_schema,
    param_field,
    setting_field,
    shared_schema,
)
from convmixer_tasks.run.settings import SchedulingSettings

SOC_VERSION_PATTERN = r"^(auto|Ascend[0-9A-Za-z]+)$"


def model_names() -> tuple[str, ...]:
    """The models a run may name: every model card's (``convmixer-tasks models`` lists them)."""
    return card_names()


# The JSON-schema draft the Params declare: every keyword they use is draft 7's, and Airflow checks each Param's
# schema against its draft's metaschema whenever the DAG is parsed; draft 7's check costs a third of 2020-12's.
JSON_SCHEMA_DRAFT = "http://json-schema.org/draft-07/schema#"
# A checkpoint param value that exports the model with seeded random weights (its top-1 is at chance).
RANDOM_CHECKPOINT = "random"
# What the CLI's `run` calls each param (the rest have no flag there); error messages name both.
CLI_FLAGS = {
    "batch_sizes": "--batch-size",
    "batch_size": "--batch-size",
    "backend": "--backend",
    "dataset_dir": "--image-path",
    "label_file": "--annotation-file-path",
    "checkpoint": "--source",
    "model_variant": "--model",
    "model_variants": "--model",
    "checkpoints": "--checkpoint MODEL=PATH",
    "soc_version": "--soc-version",
    "input_dtype": "--dtype",
    "image_limit": "--limit",
    "throughput_max_cv_pct": "--max-cv-pct",
    "benchmark_remeasure": "--remeasure",
    "benchmark_confirm": "--confirm",
    "benchmark_loop": "--loop",
    "precision_modes": "--precision-mode",
    "gelu_implmode": "--gelu-implmode",
}


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    schema: SharedSchema  # JSON-schema keywords, as ``airflow.sdk.Param(schema=…)`` takes them; read-only
    description: str


_SIZES = list(BATCH_SIZE_CHOICES)


@dataclass(frozen=True, kw_only=True)
class RunParams:
    """One run's parameters, checked: what every step reads instead of the raw conf.

    The run maps over ``models`` × ``batch_sizes`` × ``precision_modes`` (the shorthand params ``batch_size`` and
    ``precision_mode`` fold into their lists)."""

    batch_sizes: tuple[int, ...] = setting_field(
        "batch_sizes",
        "batch_sizes",
        {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "enum": _SIZES}},
        "Batch sizes to compile, infer and benchmark (one metrics row each).",
        Declared(
            "batch_size",
            {"type": ["null", "integer"], "enum": [None, *_SIZES]},
            'One batch size; when set it replaces batch_sizes (e.g. conf {"batch_size": 4}).',
        ),
    )
    backend: str = setting_field(
        "default_backend",
        "backend",
        {"type": "string", "enum": list(BACKEND_NAMES)},
        "ascend: ATC + ais_bench on an NPU worker; onnxruntime: runs anywhere.",
    )
    dataset_dir: str = setting_field(
        "dataset_dir",
        "dataset_dir",
        {"type": "string", "minLength": 1},
        "ImageNet val JPEGs (flat or synset folders); default: the generated demo set.",
    )
    label_file: str = setting_field("label_file", "label_file", {"type": "string", "minLength": 1}, "val_label.txt.")
    checkpoint: str = setting_field("checkpoint", "checkpoint", {"type": "string", "minLength": 1}, "The .pth.tar.")
    model_variant: str = setting_field(
        "model_variant", "model_variant", {"type": "string", "enum": list(model_names())}, "The checkpoint's model."
    )
    model_variants: tuple[str, ...] | None = param_field(
        None,
        "model_variants",
        {
            "type": ["null", "array"],
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "enum": list(model_names())},
        },
        "A zoo run: map the run over these models as over batch sizes (one row per model × batch size × precision "
        "mode, each compared with its own model's history). Each model's checkpoint comes from checkpoints (or "
        "checkpoint, for model_variant). null = model_variant alone.",
    )
    checkpoints: tuple[tuple[str, str], ...] = param_field(
        (),
        "checkpoints",
        {
            "type": "object",
            "propertyNames": {"enum": list(model_names())},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        f'A zoo run\'s checkpoints: {{model: "/path/to/model.pth.tar"}}; "{RANDOM_CHECKPOINT}" exports the model '
        "with seeded random weights (its top-1 is at chance: a smoke test, not a result).",
    )
    soc_version: str = param_field(
        "auto",
        "soc_version",
        {"type": "string", "pattern": SOC_VERSION_PATTERN},
        "Ascend SoC for ATC, e.g. Ascend310P3; auto = read from npu-smi.",
    )
    input_dtype: str = param_field(
        "float32",
        "input_dtype",
        {"type": "string", "enum": list(INPUT_DTYPES)},
        "float32 NCHW (reference) or uint8 NHWC (normalised inside the model / AIPP).",
    )
    image_limit: int | None = param_field(
        None,
        "image_limit",
        {"type": ["null", "integer"], "minimum": 1},
        "Only the first N images (quick runs; their accuracy is not gated against the full-set baseline); null = all.",
    )
    precision_modes: tuple[str | None, ...] = param_field(
        (None,),
        "precision_modes",
        {
            "type": ["null", "array"],
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "enum": list(PRECISION_MODES)},
        },
        "Ascend only: map the run over these ATC modes as over batch sizes (one row per batch size × mode, each "
        'compared with its own mode only), e.g. ["force_fp16", "must_keep_origin_dtype"]; null = precision_mode '
        "alone. Set one of precision_mode / precision_modes.",
        Declared(
            "precision_mode",
            {"type": ["null", "string"], "enum": [None, *PRECISION_MODES]},
            f"Ascend only: ATC --precision_mode; null = ATC's default ({ATC_DEFAULT_PRECISION}, recorded as such). "
            "ONNX Runtime runs fp32 (leave null).",
        ),
    )
    gelu_implmode: str | None = param_field(
        DEFAULT_GELU_IMPLMODE,
        "gelu_implmode",
        {"type": ["null", "string"], "enum": [None, *GELU_IMPLMODES]},
        f"Ascend only: ATC --op_select_implmode for --optypelist_for_implmode={GELU_OPTYPE} (the seed guide uses "
        f"{DEFAULT_GELU_IMPLMODE}); null = pass neither flag. Part of the compile cache key and the row's "
        "fingerprint.",
    )
    gate: GateOptions = field(default_factory=GateOptions)
    benchmark: BenchmarkOptions = field(default_factory=BenchmarkOptions)
    evidence: EvidenceOptions = field(
        default_factory=EvidenceOptions,
        metadata={"params": (Declared(EVIDENCE_PARAM, evidence_schema(), EVIDENCE_DESCRIPTION),)},
    )

    @property
    def models(self) -> tuple[str, ...]:
        """The models the run maps over: ``model_variants``, or ``model_variant`` alone."""
        return self.model_variants or (self.model_variant,)

    def checkpoint_of(self, variant: str) -> str:
        """The checkpoint (or ``RANDOM_CHECKPOINT``) of one of the run's models."""
        named = dict(self.checkpoints)
        if variant in named:
            return named[variant]
        if variant == self.model_variant:
            return self.checkpoint
        raise ConfigError(
            f"no checkpoint for model {variant}; set param checkpoints, e.g. "
            f'{{"{variant}": "/path/to/{variant}.pth.tar"}} ("{RANDOM_CHECKPOINT}" for seeded random weights; '
            f"CLI: --checkpoint {variant}=PATH or --random-weights)"
        )

    def gate_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``gate.apply_gate``. A quick run on the first ``image_limit`` images cannot be
        held to a baseline measured on the whole set, so its accuracy is not gated (tolerance 100 points; the
        stored reasons say so); its throughput still is."""
        return {
            "top1_tolerance": self.gate.top1_tolerance if self.image_limit is None else 100.0,
            "throughput_drop_pct": self.gate.throughput_drop_pct,
            "history": self.gate.history,
            "significance": self.evidence.top1_significance,
            "max_cv_pct": self.benchmark.max_cv_pct,
            "runs": self.gate.runs,
        }

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any], settings: SchedulingSettings | None = None) -> RunParams:
        """The run's params from a DAG run's params, a trigger conf or the CLI's flags (by Param name); a name
        left out takes its default (a setting's from ``settings``). Refuses unknown names, values outside their
        schema and contradictions (both precision params, a GELU mode for ONNX Runtime), one line naming the
        param and the fix."""
        specs = param_specs(settings) if settings is not None else None
        unknown = sorted(set(params) - set(_declared()))
        if unknown:
            from difflib import get_close_matches

            # The likely fix first: a failed row keeps only the message's first few hundred characters.
            meant = {name: get_close_matches(name, _declared(), n=1) for name in unknown}
            hints = [f"{name} → {close[0]}" for name, close in meant.items() if close]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ConfigError(
                f"unknown param(s) {', '.join(unknown)} in the run's conf{hint}; use only {', '.join(_declared())} "
                "(check the spelling) and trigger again"
            )

        def given(name: str) -> Any:
            if name in params:
                return params[name]
            if specs is not None:
                return specs[name].default
            declared = _declared()[name]
            if declared.setting is not None:
                raise ConfigError(
                    f"param {name} is not set; give it ({_flag(name)}) or set [convmixer] {declared.setting}"
                )
            return declared.default

        for name in params:
            _check_schema(name, params[name])
        values: dict[str, Any] = {
            "batch_sizes": _batch_sizes(given("batch_size"), given("batch_sizes")),
            "model_variants": _variants(given("model_variants")),
            "checkpoints": tuple(sorted((given("checkpoints") or {}).items())),
            "gate": _nested(GateOptions, given),
            "benchmark": _nested(BenchmarkOptions, given),
            "evidence": EvidenceOptions(**{**(given(EVIDENCE_PARAM) or {})}),
        }
        for one in dataclasses.fields(cls):
            if one.name not in values:
                values[one.name] = given(one.metadata["params"][0].name)
        raw_modes = {"precision_mode": given("precision_mode"), "precision_modes": given("precision_modes")}
        values["precision_modes"] = tuple(precision_modes_from_params({**raw_modes, "backend": values["backend"]}))
        gelu_compile_options(values["backend"], values["gelu_implmode"])  # a mode set for ONNX Runtime fails here
        return cls(**values)


def _flag(name: str) -> str:
    return f"CLI: {CLI_FLAGS[name]}" if name in CLI_FLAGS else "DAG param only"


def _declared() -> dict[str, Declared]:
    """Every Param, by name, in the order the DAG shows them."""
    return {declared.name: declared for declared, _ in _walk()}


def _walk() -> Iterator[tuple[Declared, Any]]:
    """(Param, its default) for every field of RunParams and of its nested options, shorthands included."""
    for one in dataclasses.fields(RunParams):
        nested = {"gate": GateOptions, "benchmark": BenchmarkOptions}.get(one.name)
        for inner in dataclasses.fields(nested) if nested else [one]:
            for index, declared in enumerate(inner.metadata["params"]):
                default = declared.default if index else inner.default
                if declared.name == EVIDENCE_PARAM:
                    default = dataclasses.asdict(EvidenceOptions())
                elif declared.name == "precision_modes":
                    default = None  # the field's (None,) is "precision_mode alone"
                elif declared.name == "checkpoints":
                    default = {}
                yield dataclasses.replace(declared, default=default), default


def _check_schema(name: str, value: Any) -> None:
    """The value against its Param's JSON schema (what Airflow checks when a run is triggered; the CLI's flags and
    direct callers come through here too)."""
    import jsonschema

    declared = _declared()[name]
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(declared.schema).iter_errors(value))
    if error is not None:
        where = ".".join([name, *(str(part) for part in error.absolute_path)])
        raise ConfigError(f"param {where}: {error.message}; fix it ({_flag(name)})")
    if name == EVIDENCE_PARAM:
        for key, number in (value or {}).items():
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(f"param evidence.{key} = {number!r} must be a finite number; fix it")


def _batch_sizes(single: Any, several: Any) -> tuple[int, ...]:
    """``batch_size`` (a manual trigger's single size) overrides ``batch_sizes``; order kept, duplicates dropped.
    The error names the param the value came from."""
    name, sizes = ("batch_size", [single]) if single is not None else ("batch_sizes", list(several or []))
    if not sizes:
        raise ConfigError("no batch size given; set param batch_sizes (e.g. [1, 16]) or batch_size (CLI: --batch-size)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size not in BATCH_SIZE_CHOICES:
            raise ConfigError(
                f"batch size {size!r} is not one of {_SIZES} (a whole number); fix param {name} (CLI: --batch-size)"
            )
    return tuple(dict.fromkeys(sizes))


def _variants(several: Any) -> tuple[str, ...] | None:
    """``model_variants`` (a zoo run; None = ``model_variant`` alone), order kept, duplicates dropped."""
    return None if several is None else tuple(dict.fromkeys(several))


def _nested(record: type, given: Any) -> Any:
    return record(**{one.name: given(one.metadata["params"][0].name) for one in dataclasses.fields(record)})


def param_specs(settings: SchedulingSettings) -> dict[str, ParamSpec]:
    """The DAG's Params, derived from ``RunParams``: each field's name, schema and description, its default the
    field's or the ``[convmixer]`` setting it names."""
    specs = {}
    for declared, default in _walk():
        if declared.setting is not None:
            default = getattr(settings, declared.setting)
            default = list(default) if isinstance(default, tuple) else default
        specs[declared.name] = ParamSpec(
            default, shared_schema({"$schema": JSON_SCHEMA_DRAFT, **declared.schema}), declared.description
        )
    return specs
