"""ConvMixer: the definition, the published variants plus a small demo variant, and its checkpoint key layouts.

The model is an ``nn.Sequential`` laid out exactly like the reference implementation (locuslab/convmixer), so the
released ``.pth.tar`` loads with no key renaming: ``0`` stem conv, ``1`` activation, ``2`` stem BatchNorm,
``3 … depth+2`` blocks, then pooling, flatten and the ``Linear`` head at index ``depth+5``. Checkpoints in timm's
layout (``stem.*``, ``blocks.N.*``, ``head.*``) are mapped onto it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.models import checkpoints, default_card
from convmixer_tasks.models.checkpoints import checkpoint_format, load_into
from convmixer_tasks.models.checkpoints import read_state_dict as read_state_dict  # callers read files through here
from convmixer_tasks.models.variants import VARIANTS, ConvMixerSpec, get_spec

ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}

# Index of the first block in the Sequential: conv, activation and BatchNorm of the stem come before it. The head
# sits at FIRST_BLOCK_INDEX + depth + 2, after AdaptiveAvgPool2d and Flatten.
FIRST_BLOCK_INDEX = 3
# Every ConvMixer card accepts the same files.
_CONVMIXER_FORMAT = checkpoint_format(default_card())


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
# Checkpoint keys (reading, checking and loading are models.checkpoints', driven by the card)

_TIMM_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def build_convmixer(**kwargs: Any) -> nn.Sequential:
    """The cards' builder: ``kwargs`` are ConvMixerSpec's fields."""
    return build_model(ConvMixerSpec(**kwargs))


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


def map_checkpoint_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The ConvMixer cards' mapper: timm's layout onto the Sequential one (whose head is its last child)."""
    if any(k.startswith(("stem.", "blocks.", "head.")) for k in state):
        return map_timm_keys(state, head_index=len(list(model.children())) - 1)
    return state


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


def describe_state(state: Mapping[str, torch.Tensor]) -> str:
    """The ConvMixer cards' description of a file that does not fit: its shape and the variants of that shape."""
    found = infer_spec(state)
    if found is None:
        return ""
    shape = f"dim={found.dim} depth={found.depth} kernel={found.kernel_size} patch={found.patch_size}"
    names = [
        name
        for name, spec in VARIANTS.items()
        if dataclasses.replace(spec, activation="gelu") == dataclasses.replace(found, activation="gelu")
    ]
    return f"the checkpoint looks like {shape}" + (f" (variant {' or '.join(names)})" if names else "") + "; "


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Load ``path`` into a ConvMixer ``model`` (built by :func:`build_model`), or raise CheckpointError saying what
    differs. Accepts the released Sequential keys, an optional ``module.`` prefix, ``{'state_dict': …}``-style
    wrappers and timm's key layout. ``num_batches_tracked`` may be absent (it only matters for training).
    """
    load_into(model, path, _CONVMIXER_FORMAT, None)


def check_checkpoint(path: str | os.PathLike, variant: str) -> None:
    """Read ``path`` and check it against ``variant``'s model before any long step (any card's name works)."""
    checkpoints.check_checkpoint(path, variant)
