"""ConvMixer: the definition, the published variants plus a small demo variant, and checkpoint loading.

The model is an ``nn.Sequential`` laid out exactly like the reference implementation (locuslab/convmixer), so the
released ``.pth.tar`` loads with no key renaming: ``0`` stem conv, ``1`` activation, ``2`` stem BatchNorm,
``3 … depth+2`` blocks, then pooling, flatten and the ``Linear`` head at index ``depth+5``. Checkpoints in timm's
layout (``stem.*``, ``blocks.N.*``, ``head.*``) are mapped onto it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convmixer_tasks.errors import CheckpointError, ConfigError
from convmixer_tasks.variants import VARIANTS, ConvMixerSpec, get_spec

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}

# Index of the first block in the Sequential: conv, activation and BatchNorm of the stem come before it. The head
# sits at FIRST_BLOCK_INDEX + depth + 2, after AdaptiveAvgPool2d and Flatten.
FIRST_BLOCK_INDEX = 3


class Residual(nn.Module):
    """``fn(x) + x``; the wrapped module is stored as ``fn`` so keys read ``N.0.fn.*`` like the release."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


def build_model(spec_or_variant: str | ConvMixerSpec) -> nn.Sequential:
    """A fresh (randomly initialised) ConvMixer whose state_dict keys equal the released checkpoint's."""
    spec = get_spec(spec_or_variant)
    if spec.activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {spec.activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
    act = ACTIVATIONS[spec.activation]
    dim, k = spec.dim, spec.kernel_size
    blocks = [
        nn.Sequential(
            # padding=k//2 equals "same" for the odd kernels used here and exports to plain ONNX Conv pads.
            Residual(nn.Sequential(nn.Conv2d(dim, dim, k, groups=dim, padding=k // 2), act(), nn.BatchNorm2d(dim))),
            nn.Conv2d(dim, dim, kernel_size=1),
            act(),
            nn.BatchNorm2d(dim),
        )
        for _ in range(spec.depth)
    ]
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=spec.patch_size, stride=spec.patch_size),
        act(),
        nn.BatchNorm2d(dim),
        *blocks,
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, spec.num_classes),
    )


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint loading

# Wrappers seen around state dicts (timm's train.py, the reference scripts, EMA copies), in order of preference.
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
_TIMM_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped and with a ``module.`` prefix removed (keys not yet mapped).

    ``weights_only=True``: a checkpoint is untrusted input and must not run code when unpickled. Only
    ``argparse.Namespace`` is allowed beyond plain containers and tensors, because timm's training script stores
    its ``args`` in the checkpoint it writes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; pass the path of a .pth/.pth.tar")
    _check_container(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} was refused by weights_only loading ({_load_failure_reason(exc)}): it pickles objects that "
            "could run code when loaded; if it comes from a trusted source, re-save just its state_dict with "
            "torch.save"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path} is damaged ({_load_failure_reason(exc)}); copy or download the checkpoint again"
        ) from exc
    return _strip_prefix(_unwrap(obj, path), "module.")


# torch.save writes a zip archive since torch 1.6; older files are a bare pickle (protocol 2 header).
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_PICKLE_MAGIC = b"\x80\x02"


def _check_container(path: Path) -> None:
    """Name what a file that is not a checkpoint is (text, truncated archive) before torch.load reports it as an
    IndexError or an unpickling problem that sends the user after the wrong fix."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is a truncated or damaged torch.save archive (its zip directory is missing); copy or "
                "download the checkpoint again"
            )
        return
    if head.startswith(_LEGACY_PICKLE_MAGIC):
        return
    if not head:
        looks = "empty"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        looks = f"a text file (starts {head[:16]!r})"
    else:
        looks = f"of an unknown format (starts {head[:8]!r})"
    raise CheckpointError(
        f"{path} is {looks}, not a file written by torch.save; pass the .pth/.pth.tar checkpoint itself"
    )


def _load_failure_reason(exc: Exception) -> str:
    """The one informative line of torch.load's multi-paragraph error: which global it refused, when it says so."""
    text = str(exc)
    refused = re.search(r"(?:Unsupported global|unsupported GLOBAL)[^\n]*", text)
    if refused:
        return refused.group(0).split(". Please use", 1)[0].strip().rstrip(".")
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = lines[0].split(". Please use", 1)[0].split(". This is an internal", 1)[0] if lines else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def check_checkpoint(path: str | os.PathLike, variant: str) -> None:
    """Read ``path`` and check its keys and shapes against ``variant`` without building the real model (the
    expected shapes come from a meta-device copy), so a wrong file or variant is refused before any long step."""
    with torch.device("meta"):
        model = build_model(variant)
    _check_keys(read_state_dict(path), model.state_dict(), Path(path), len(list(model.children())) - 1)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                return _unwrap(obj[key], path)
        top = ", ".join(sorted(map(str, obj))[:8]) or "(empty)"
        raise CheckpointError(
            f"{path} holds no state_dict: top-level keys are {top}; expected tensors, or one of "
            f"{', '.join(_WRAPPER_KEYS)} wrapping them"
        )
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def map_timm_keys(state: Mapping[str, torch.Tensor], head_index: int) -> dict[str, torch.Tensor]:
    """timm's ConvMixer layout → the released Sequential layout; keys that match neither pass unchanged."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("stem."):
            new_key = key[len("stem.") :]
        elif match := _TIMM_BLOCK_RE.match(key):
            new_key = f"{FIRST_BLOCK_INDEX + int(match.group(1))}.{match.group(2)}"
        elif key.startswith("head."):
            new_key = f"{head_index}.{key[len('head.') :]}"
        else:
            new_key = key
        mapped[new_key] = value
    return mapped


def _is_timm_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("stem.", "blocks.", "head.")) for k in state)


def infer_spec(state: Mapping[str, torch.Tensor]) -> ConvMixerSpec | None:
    """Shape of the network a Sequential-layout state dict was saved from (activation is not in the weights)."""
    try:
        stem = state["0.weight"]
        depth = sum(1 for k in state if re.fullmatch(r"\d+\.0\.fn\.0\.weight", k))
        kernel = state[f"{FIRST_BLOCK_INDEX}.0.fn.0.weight"].shape[-1] if depth else 0
        head = state[f"{FIRST_BLOCK_INDEX + depth + 2}.weight"]
        return ConvMixerSpec(
            dim=stem.shape[0],
            depth=depth,
            kernel_size=int(kernel),
            patch_size=stem.shape[-1],
            num_classes=head.shape[0],
        )
    except (KeyError, IndexError, AttributeError):
        return None


def _variant_hint(state: Mapping[str, torch.Tensor]) -> str:
    found = infer_spec(state)
    if found is None:
        return ""
    shape = f"dim={found.dim} depth={found.depth} kernel={found.kernel_size} patch={found.patch_size}"
    names = [
        name
        for name, spec in VARIANTS.items()
        if dataclasses.replace(spec, activation="gelu") == dataclasses.replace(found, activation="gelu")
    ]
    return f"; the checkpoint looks like {shape}" + (f" (variant {' or '.join(names)})" if names else "")


def _first(keys: list[str], count: int = 5) -> str:
    more = f", … (+{len(keys) - count} more)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into ``model`` (built by :func:`build_model`), or raise CheckpointError saying what differs.

    Accepts the released Sequential keys, an optional ``module.`` prefix, ``{'state_dict': …}``-style wrappers and
    timm's key layout. ``num_batches_tracked`` may be absent (it only matters for training).
    """
    path = Path(path)
    state = _check_keys(read_state_dict(path), model.state_dict(), path, len(list(model.children())) - 1)
    for key, value in model.state_dict().items():  # absent num_batches_tracked keeps the model's own value
        state.setdefault(key, value)
    model.load_state_dict(state, strict=True)


def _check_keys(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: Path, head_index: int
) -> dict[str, torch.Tensor]:
    """``state`` in the Sequential layout, or a CheckpointError naming the keys that do not fit ``expected``."""
    if _is_timm_layout(state):
        state = map_timm_keys(state, head_index=head_index)

    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_first(mismatched, 3)})")
        raise CheckpointError(
            f"checkpoint {path} does not fit the model: {'; '.join(parts)}{_variant_hint(state)}; "
            "pass the variant the checkpoint was trained as (--model, or the DAG param model_variant)"
        )
    return state
