"""The run's parameters (DAG Params and the trigger conf): defaults from the settings, JSON-schema choices from the
registries (backends, input dtypes, variants), so adding a backend or a variant never touches the DAG file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from convmixer_tasks.backends.base import BACKEND_NAMES
from convmixer_tasks.checks import BATCH_SIZE_CHOICES
from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fidelity import DEFAULT_SUBSET, DEFAULT_THRESHOLDS
from convmixer_tasks.gate import (
    DEFAULT_HISTORY,
    DEFAULT_SIGNIFICANCE,
    DEFAULT_THROUGHPUT_DROP_PCT,
    DEFAULT_TOP1_TOLERANCE,
    THROUGHPUT_TOLERANCE_PARAM,
    TOP1_TOLERANCE_PARAM,
)
from convmixer_tasks.precision import (
    ATC_DEFAULT_PRECISION,
    DEFAULT_GELU_IMPLMODE,
    GELU_IMPLMODES,
    GELU_OPTYPE,
    PRECISION_MODES,
)
from convmixer_tasks.prepfolder import INPUT_DTYPES
from convmixer_tasks.quiet import DEFAULT_IDLE_WAIT_S
from convmixer_tasks.settings import SchedulingSettings
from convmixer_tasks.throughput import DEFAULT_CONFIRM, DEFAULT_MAX_CV_PCT, DEFAULT_REMEASURE, DEFAULT_RUNS
from convmixer_tasks.variants import VARIANT_NAMES

SOC_VERSION_PATTERN = r"^(auto|Ascend[0-9A-Za-z]+)$"
BENCHMARK_LOOP = 100


def evidence_defaults() -> dict[str, Any]:
    return {"fidelity_subset": None, **DEFAULT_THRESHOLDS, "top1_significance": DEFAULT_SIGNIFICANCE}


def evidence_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``evidence`` param, checked, with the defaults under the keys a conf left out (a conf replaces the whole
    dict). The thresholds are checked by ``fidelity.check_thresholds`` and the subset by ``subset_positions``."""
    given = params.get("evidence") or {}
    defaults = evidence_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)} in param evidence; use {', '.join(defaults)} (check the spelling)"
        )
    options = {**defaults, **given}
    significance = options["top1_significance"]
    if isinstance(significance, bool) or not isinstance(significance, (int, float)) or not 0 < significance <= 1:
        raise ConfigError(f"evidence.top1_significance must be a p-value threshold in (0, 1], got {significance!r}")
    return options


def batch_sizes_from_params(params: Mapping[str, Any]) -> list[int]:
    """``batch_size`` (a manual trigger's single size) overrides ``batch_sizes``; order kept, duplicates dropped."""
    single = params.get("batch_size")
    sizes = [single] if single is not None else list(params.get("batch_sizes") or [])
    if not sizes:
        raise ConfigError("no batch size given; set param batch_sizes (e.g. [1, 16]) or batch_size (CLI: --batch-size)")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size not in BATCH_SIZE_CHOICES:
            raise ConfigError(
                f"batch size {size!r} is not one of {list(BATCH_SIZE_CHOICES)}; fix param batch_sizes "
                "(CLI: --batch-size)"
            )
    return list(dict.fromkeys(sizes))


def check_param_names(params: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse conf keys the DAG does not declare: Airflow merges them into the params unchecked, so a misspelt key
    (``batch_szie``) would otherwise run silently with the default it meant to change."""
    known = set(known)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"unknown param(s) {', '.join(unknown)} in the run's conf; use only "
            f"{', '.join(sorted(known))} (check the spelling) and trigger again"
        )


def benchmark_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG params that tune ``benchmark_artifact``: loops, re-measurements and the CV that triggers them, and
    the confirmations a suspect figure takes."""
    return {
        "loop": params["benchmark_loop"],
        "remeasure": params["benchmark_remeasure"],
        "max_cv_pct": params["throughput_max_cv_pct"],
        "idle_wait_s": params.get("benchmark_idle_wait_s", DEFAULT_IDLE_WAIT_S),
        "confirm": params.get("benchmark_confirm", DEFAULT_CONFIRM),
    }


def gate_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG params that tune ``gate.apply_gate``.

    A quick run on the first ``image_limit`` images cannot be held to a baseline measured on the whole set, so its
    accuracy is not gated (tolerance 100 points; the stored reasons say so); its throughput still is.
    """
    top1_tolerance = params[TOP1_TOLERANCE_PARAM] if params.get("image_limit") is None else 100.0
    return {
        "top1_tolerance": top1_tolerance,
        "throughput_drop_pct": params[THROUGHPUT_TOLERANCE_PARAM],
        "history": params["throughput_history"],
        "significance": evidence_options(params)["top1_significance"],
        **({"max_cv_pct": params["throughput_max_cv_pct"]} if "throughput_max_cv_pct" in params else {}),
        **({"runs": params["throughput_runs"]} if "throughput_runs" in params else {}),
    }


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    schema: dict[str, Any]  # JSON-schema keywords, as ``airflow.sdk.Param`` takes them
    description: str


def param_specs(settings: SchedulingSettings) -> dict[str, ParamSpec]:
    sizes = list(BATCH_SIZE_CHOICES)
    return {
        "batch_sizes": ParamSpec(
            list(settings.batch_sizes),
            {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "integer", "enum": sizes}},
            "Batch sizes to compile, infer and benchmark (one metrics row each).",
        ),
        "batch_size": ParamSpec(
            None,
            {"type": ["null", "integer"], "enum": [None, *sizes]},
            'One batch size; when set it replaces batch_sizes (e.g. conf {"batch_size": 4}).',
        ),
        "backend": ParamSpec(
            settings.default_backend,
            {"type": "string", "enum": list(BACKEND_NAMES)},
            "ascend: ATC + ais_bench on an NPU worker; onnxruntime: runs anywhere.",
        ),
        "dataset_dir": ParamSpec(
            settings.dataset_dir,
            {"type": "string", "minLength": 1},
            "ImageNet val JPEGs (flat or synset folders); default: the generated demo set.",
        ),
        "label_file": ParamSpec(
            settings.label_file, {"type": "string", "minLength": 1}, "val_label.txt for the images."
        ),
        "checkpoint": ParamSpec(settings.checkpoint, {"type": "string", "minLength": 1}, "The .pth.tar to validate."),
        "model_variant": ParamSpec(
            settings.model_variant, {"type": "string", "enum": list(VARIANT_NAMES)}, "Architecture of the checkpoint."
        ),
        "soc_version": ParamSpec(
            "auto",
            {"type": "string", "pattern": SOC_VERSION_PATTERN},
            "Ascend SoC for ATC, e.g. Ascend310P3; auto = read from npu-smi.",
        ),
        "input_dtype": ParamSpec(
            "float32",
            {"type": "string", "enum": list(INPUT_DTYPES)},
            "float32 NCHW (reference) or uint8 NHWC (normalised inside the model / AIPP).",
        ),
        "image_limit": ParamSpec(
            None,
            {"type": ["null", "integer"], "minimum": 1},
            "Only the first N images (quick runs; their accuracy is not gated against the "
            "full-set baseline); null = all.",
        ),
        TOP1_TOLERANCE_PARAM: ParamSpec(
            DEFAULT_TOP1_TOLERANCE,
            {"type": "number", "minimum": 0, "maximum": 100},
            "Gate: allowed top-1 drop (percentage points) below the variant's published "
            "baseline (the demo model: its committed expected_top1).",
        ),
        THROUGHPUT_TOLERANCE_PARAM: ParamSpec(
            DEFAULT_THROUGHPUT_DROP_PCT,
            {"type": "number", "minimum": 0, "exclusiveMaximum": 100},
            "Gate: allowed throughput drop, in percent of the median of the recent ok runs with the same "
            "environment fingerprint (same model, backend, device, batch size); a drop beyond it must also be "
            "statistically clear against their noise to count as a regression.",
        ),
        "throughput_history": ParamSpec(
            DEFAULT_HISTORY,
            {"type": "integer", "minimum": 1, "maximum": 100},
            "Gate: how many recent same-fingerprint ok runs form the throughput baseline and its noise "
            "(no throughput verdict before 5).",
        ),
        "throughput_max_cv_pct": ParamSpec(
            DEFAULT_MAX_CV_PCT,
            {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
            "Gate: per-loop coefficient of variation (percent) above which a benchmark is too noisy to judge: "
            "re-measured, then 'inconclusive'.",
        ),
        "benchmark_remeasure": ParamSpec(
            DEFAULT_REMEASURE,
            {"type": "integer", "minimum": 0, "maximum": 10},
            "Re-measurements a benchmark may take while its per-loop CV is above throughput_max_cv_pct.",
        ),
        "throughput_runs": ParamSpec(
            DEFAULT_RUNS,
            {"type": "integer", "enum": [1, 2]},
            "Gate: consecutive runs a throughput regression needs. 2: one run slowed from start to end by a "
            "neighbour is never a regression (bench/RESULTS.md); 1: single-run verdicts, for hosts no one shares.",
        ),
        "benchmark_confirm": ParamSpec(
            DEFAULT_CONFIRM,
            {"type": "integer", "minimum": 0, "maximum": 10},
            "Measurements a benchmark takes to confirm a figure below its same-fingerprint history's suspect line "
            "(half the throughput tolerance below the median); the verdict judges such a run on them. 0 = never.",
        ),
        "precision_mode": ParamSpec(
            None,
            {"type": ["null", "string"], "enum": [None, *PRECISION_MODES]},
            f"Ascend only: ATC --precision_mode; null = ATC's default ({ATC_DEFAULT_PRECISION}, recorded as such). "
            "ONNX Runtime runs fp32 (leave null).",
        ),
        "precision_modes": ParamSpec(
            None,
            {
                "type": ["null", "array"],
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "enum": list(PRECISION_MODES)},
            },
            "Ascend only: map the run over these ATC modes as over batch sizes (one row per batch size × mode, "
            'each compared with its own mode only), e.g. ["force_fp16", "must_keep_origin_dtype"]; null = '
            "precision_mode alone. Set one of precision_mode / precision_modes.",
        ),
        "gelu_implmode": ParamSpec(
            DEFAULT_GELU_IMPLMODE,
            {"type": ["null", "string"], "enum": [None, *GELU_IMPLMODES]},
            f"Ascend only: ATC --op_select_implmode for --optypelist_for_implmode={GELU_OPTYPE} (the seed guide "
            f"uses {DEFAULT_GELU_IMPLMODE}); null = pass neither flag. Part of the compile cache key and the "
            "row's fingerprint.",
        ),
        # One object param, schema kept to "object": every param's schema is checked and deep-copied into each
        # task at parse time (~1 ms per task for a nested schema); ``evidence_options`` checks the keys and values.
        "evidence": ParamSpec(
            evidence_defaults(),
            {"type": "object"},
            f"fidelity_subset: images (fixed seeded subset) on which the artifact is compared with its ONNX in fp32 "
            f"(null = {DEFAULT_SUBSET}, or all when fewer; more than the set is an error). min_cosine / "
            "max_rel_euclidean / max_kl: a breach on any image is a regression (msit compare's defaults). "
            "top1_significance: a top-1 drop beyond top1_tolerance against the previous ok run or the ONNX "
            "reference run regresses only when McNemar's exact p is below it. Keys left out keep their defaults.",
        ),
        "benchmark_idle_wait_s": ParamSpec(
            DEFAULT_IDLE_WAIT_S,
            {"type": "number", "minimum": 0, "maximum": 3600},
            "Seconds a busy device (Ascend: AI Core in use or a process on it, per npu-smi) is waited for before it "
            "is timed anyway; the row then says it was busy.",
        ),
        "benchmark_loop": ParamSpec(
            BENCHMARK_LOOP,
            {"type": "integer", "minimum": 1, "maximum": 100000},
            "Pure-inference iterations per batch size (after 5 warm-up runs).",
        ),
    }
