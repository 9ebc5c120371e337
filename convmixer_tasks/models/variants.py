"""The ConvMixer cards seen as the architecture numbers ``model.py`` builds from, plus the default card's input as one
flat record. A view over ``convmixer_tasks.models`` (the cards hold the facts); plain data, no torch/numpy/PIL.
"""

from __future__ import annotations

from dataclasses import dataclass

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.models import ModelCard, default_card, get_card, package_path
from convmixer_tasks.models.names import CardError, names_in
from convmixer_tasks.models.paths import CONVMIXER_CARD_MODULE, DEMO_VARIANT
from convmixer_tasks.models.registry import all_cards


@dataclass(frozen=True)
class InputSpec:
    """A card's input as the preprocess/export/backend modules read it (until they take the card itself)."""

    crop: int
    resize: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_name: str  # the exported graph's input
    output_name: str  # and its logits output


def input_spec(card: ModelCard) -> InputSpec:
    transform, io = card.float_transform, card.io
    assert transform.mean is not None and transform.std is not None  # validate_card: the float path normalises
    return InputSpec(
        crop=transform.crop,
        resize=transform.resize,
        interpolation=transform.interpolation,
        mean=transform.mean,
        std=transform.std,
        input_name=io.input_name,
        output_name=io.output_name,
    )


@dataclass(frozen=True)
class ConvMixerSpec:
    dim: int
    depth: int
    kernel_size: int
    patch_size: int
    num_classes: int = 1000
    activation: str = "gelu"


# The default card's input (ConvMixer-1536/20's, shared by every ConvMixer card).
INPUT = input_spec(default_card())

_DEMO_CARD = get_card(DEMO_VARIANT)
assert _DEMO_CARD.architecture is not None and _DEMO_CARD.architecture.default_checkpoint is not None
assert _DEMO_CARD.reference is not None and _DEMO_CARD.reference.expected_top1_file is not None
# The committed demo model and its expected scores on the generated demo set (``convmixer-tasks demo-train``).
DEMO_CHECKPOINT = package_path(_DEMO_CARD.architecture.default_checkpoint)
DEMO_EXPECTED = package_path(_DEMO_CARD.reference.expected_top1_file)
DEMO_ASSETS = DEMO_CHECKPOINT.parent

VARIANTS: dict[str, ConvMixerSpec] = {
    card.name: ConvMixerSpec(**card.architecture.kwargs)  # type: ignore[arg-type]
    for card in all_cards()
    if card.family == "convmixer" and card.architecture is not None
}

VARIANT_NAMES: tuple[str, ...] = tuple(VARIANTS)
if names_in(CONVMIXER_CARD_MODULE) != VARIANT_NAMES:  # what the settings check model_variant against, unbuilt
    raise CardError(
        f"the ConvMixer cards {list(VARIANT_NAMES)} are not the cards models/cards/{CONVMIXER_CARD_MODULE}.py names "
        f"({list(names_in(CONVMIXER_CARD_MODULE))}); keep every ConvMixer card that builds a model, and only those, "
        "in that module"
    )


def get_spec(variant: str | ConvMixerSpec) -> ConvMixerSpec:
    if isinstance(variant, ConvMixerSpec):
        return variant
    try:
        return VARIANTS[variant]
    except KeyError:
        known = ", ".join(sorted(VARIANTS))
        raise ConfigError(f"unknown ConvMixer variant {variant!r}; choose one of: {known}") from None
