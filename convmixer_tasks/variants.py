"""The ConvMixer variants and the input every variant takes: architecture numbers, the transform's parameters and
the exported graph's I/O names. Plain data (no torch, numpy or PIL), so the DAG's Param choices, the CLI and the
preprocess/export/backend modules all read one definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from convmixer_tasks.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """What a model expects of an image, as timm keeps it in a model's config: the transform is built from this."""

    crop: int = 224  # input_size is (3, crop, crop)
    crop_pct: float = 0.96  # resize the shorter side to floor(crop / crop_pct) = 233 before the centre crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_name: str = "image"  # the exported graph's input
    output_name: str = "class"  # and its logits output

    @property
    def resize(self) -> int:
        return math.floor(self.crop / self.crop_pct)


@dataclass(frozen=True)
class ConvMixerSpec:
    dim: int
    depth: int
    kernel_size: int
    patch_size: int
    num_classes: int = 1000
    activation: str = "gelu"


# Every variant takes the ImageNet input of the reference scripts.
INPUT = InputSpec()

DEMO_VARIANT = "convmixer_demo"
# The committed demo model and its expected scores on the generated demo set (``convmixer-tasks demo-train``).
DEMO_ASSETS = Path(__file__).resolve().parent / "demo_assets"
DEMO_CHECKPOINT = DEMO_ASSETS / f"{DEMO_VARIANT}.pth.tar"
DEMO_EXPECTED = DEMO_ASSETS / "demo_model.json"

VARIANTS: dict[str, ConvMixerSpec] = {
    "convmixer_1536_20": ConvMixerSpec(dim=1536, depth=20, kernel_size=9, patch_size=7),
    "convmixer_768_32": ConvMixerSpec(dim=768, depth=32, kernel_size=7, patch_size=7, activation="relu"),
    "convmixer_1024_20_ks9_p14": ConvMixerSpec(dim=1024, depth=20, kernel_size=9, patch_size=14),
    # Small enough to train on two CPU cores in a couple of minutes; 1000 classes so its outputs are shaped
    # like the real model's and flow through the same evaluate/ais_bench code unchanged.
    DEMO_VARIANT: ConvMixerSpec(dim=64, depth=4, kernel_size=5, patch_size=14),
}

VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)


def get_spec(variant: str | ConvMixerSpec) -> ConvMixerSpec:
    if isinstance(variant, ConvMixerSpec):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise ConfigError(f"unknown ConvMixer variant {variant!r}; choose one of: {known}") from None
