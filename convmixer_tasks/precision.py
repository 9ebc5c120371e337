"""Precision as a dimension of a run: the ATC ``--precision_mode`` values (one registry: the DAG param's choices,
the CLI's and the rows' vocabulary) and the mode each backend actually computes in.

A row records the *effective* mode, so "ATC default" is never an empty cell: an Ascend run that sets none computes
in ``force_fp16`` (ATC's default for inference, and what the ModelZoo guide's command gets); ONNX Runtime runs the
ONNX as exported, in fp32.
"""

from __future__ import annotations

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


def check_precision_mode(backend: str, mode: str | None) -> None:
    if mode is None:
        return
    if mode not in PRECISION_MODES:
        raise ConfigError(
            f"precision_mode {mode!r} is not an ATC precision mode; use one of {', '.join(PRECISION_MODES)} "
            f"or null for ATC's default ({ATC_DEFAULT_PRECISION})"
        )
    if backend not in COMPILED_PRECISION_BACKENDS:
        raise ConfigError(
            f"precision_mode {mode} applies to the ascend backend only; backend {backend} runs the ONNX in "
            f"{ONNXRUNTIME_PRECISION} — set precision_mode to null"
        )


def effective_precision(backend: str, mode: str | None) -> str:
    """What a row records: the mode the artifact computes in."""
    if backend in COMPILED_PRECISION_BACKENDS:
        return mode or ATC_DEFAULT_PRECISION
    return ONNXRUNTIME_PRECISION


def describe_precision(backend: str, mode: str | None) -> str:
    """For reasons and logs: the effective mode, with "(ATC default)" when none was set."""
    effective = effective_precision(backend, mode)
    return f"{effective} (ATC default)" if backend in COMPILED_PRECISION_BACKENDS and mode is None else effective
