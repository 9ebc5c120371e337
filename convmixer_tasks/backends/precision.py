"""Precision as a dimension of a run: the ATC ``--precision_mode`` values (one registry: the DAG param's choices,
the CLI's and the rows' vocabulary) and the mode each backend actually computes in.

A row records the *effective* mode, so "ATC default" is never an empty cell: an Ascend run that sets none computes
in ``force_fp16`` (ATC's default for inference, and what the ModelZoo guide's command gets); ONNX Runtime runs the
ONNX as exported, in fp32.

A run maps over several modes (param ``precision_modes``) as it maps over batch sizes: one row per batch size ×
mode, each compared only with rows of its own mode. The GELU implmode (``gelu_implmode``) is an ATC option of the
compile, not a dimension: it is part of the compile cache key and of the row's fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from convmixer_tasks.errors import ConfigError

ATC_DEFAULT_PRECISION = "force_fp16"
# ATC --precision_mode values (CANN 7-8), most accurate first as documented, then the bf16/cube variants.
PRECISION_MODES: tuple[str, ...] = (
    "force_fp32",
    "must_keep_origin_dtype",
    "allow_fp32_to_fp16",
    "allow_mix_precision",
    "allow_mix_precision_fp16",
    "force_fp16",
    "allow_mix_precision_bf16",
    "allow_fp32_to_bf16",
    "cube_fp16in_fp32out",
)
ONNXRUNTIME_PRECISION = "fp32"
# Backends whose compiler takes --precision_mode; any other runs the ONNX's own (fp32) arithmetic.
COMPILED_PRECISION_BACKENDS = ("ascend",)


# GELU's kernel choice (ATC --op_select_implmode with --optypelist_for_implmode=Gelu); the seed guide's command
# uses high_performance. None: neither flag is passed, ATC picks.
GELU_IMPLMODES: tuple[str, ...] = ("high_performance", "high_precision")
DEFAULT_GELU_IMPLMODE = "high_performance"
GELU_OPTYPE = "Gelu"


def check_precision_mode(backend: Any, mode: Any, param: str = "precision_mode") -> None:
    if mode is None:
        return
    if not isinstance(mode, str) or mode not in PRECISION_MODES:
        raise ConfigError(
            f"{param} {mode!r} is not an ATC precision mode; use one of {', '.join(PRECISION_MODES)} "
            f"or null for ATC's default ({ATC_DEFAULT_PRECISION})"
        )
    if backend not in COMPILED_PRECISION_BACKENDS:
        raise ConfigError(
            f"{param} {mode} applies to the ascend backend only; backend {backend} runs the ONNX in "
            f"{ONNXRUNTIME_PRECISION} — set {param} to null"
        )


def precision_modes_from_params(params: Mapping[str, Any]) -> list[str | None]:
    """The ATC modes a run maps over, as given (None = ATC's default): ``precision_modes`` (a list) or the single
    ``precision_mode``; neither = [None]. Two entries that compute the same (null and force_fp16) would write the
    same row, so they are refused, as is setting both params."""
    single, several = params.get("precision_mode"), params.get("precision_modes")
    backend = params.get("backend")
    if several is None:
        check_precision_mode(backend, single)
        return [single]
    if single is not None:
        raise ConfigError(
            f"both precision_mode ({single}) and precision_modes ({several}) are set; set one of them "
            "(precision_modes maps the run over several modes)"
        )
    if isinstance(several, str) or not isinstance(several, (list, tuple)) or not several:
        raise ConfigError(
            f"precision_modes must be a non-empty list of ATC modes, e.g. [force_fp16, force_fp32], got {several!r}"
        )
    if backend not in COMPILED_PRECISION_BACKENDS:
        raise ConfigError(
            f"precision_modes {list(several)} apply to the ascend backend only; backend {backend} runs the ONNX in "
            f"{ONNXRUNTIME_PRECISION} — set precision_modes to null"
        )
    seen: dict[str, str | None] = {}
    for mode in several:
        check_precision_mode(backend, mode, "precision_modes entry")
        effective = effective_precision(backend, mode)
        if effective in seen:
            raise ConfigError(f"precision_modes lists {effective} twice; list each mode once")
        seen[effective] = mode
    return list(seen.values())


class GeluOptions(TypedDict, total=False):
    """The ``CompileOptions`` fields the GELU implmode param sets."""

    op_select_implmode: str | None
    optypelist_for_implmode: str | None


def gelu_compile_options(backend: str, implmode: str | None) -> GeluOptions:
    """``CompileOptions`` fields for the GELU implmode param: the ATC flag pair, or neither when None. Backends
    without ATC keep the options' defaults, so their compile cache keys do not move with an Ascend-only param."""
    if backend not in COMPILED_PRECISION_BACKENDS:
        if implmode != DEFAULT_GELU_IMPLMODE:
            raise ConfigError(
                f"gelu_implmode {implmode!r} applies to the ascend backend only; backend {backend} computes GELU as "
                f"the ONNX does — leave gelu_implmode at {DEFAULT_GELU_IMPLMODE}"
            )
        return {}
    if implmode is None:
        return {"op_select_implmode": None, "optypelist_for_implmode": None}
    if implmode not in GELU_IMPLMODES:
        raise ConfigError(
            f"gelu_implmode {implmode!r} is not one ATC takes with --optypelist_for_implmode; use one of "
            f"{', '.join(GELU_IMPLMODES)} or null (ATC picks)"
        )
    return {"op_select_implmode": implmode, "optypelist_for_implmode": GELU_OPTYPE}


def effective_precision(backend: str, mode: str | None) -> str:
    """What a row records: the mode the artifact computes in."""
    if backend in COMPILED_PRECISION_BACKENDS:
        return mode or ATC_DEFAULT_PRECISION
    return ONNXRUNTIME_PRECISION


def describe_precision(backend: str, mode: str | None) -> str:
    """For reasons and logs: the effective mode, with "(ATC default)" when none was set."""
    effective = effective_precision(backend, mode)
    return f"{effective} (ATC default)" if backend in COMPILED_PRECISION_BACKENDS and mode is None else effective
