"""What the ModelZoo guides for torchvision classifiers share: the I/O names, opset 11, ImageNet normalisation
(on the host or in AIPP) and a plain torchvision state_dict. Holds no cards itself."""

from __future__ import annotations

from collections.abc import Mapping

from convmixer_tasks.models.card import (
    GUIDE_MIN_CHN,
    GUIDE_VAR_RECI,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Aipp,
    Architecture,
    AtcExtras,
    CheckpointFormat,
    HostPreprocess,
    Interpolation,
    Labels,
    ModelCard,
    OnnxIO,
    Reference,
    Transform,
)

GUIDE_COMMIT = "6a2804a"  # Ascend/ModelZoo-PyTorch, 2023-12-15
BUILT_IN = "Ascend/ModelZoo-PyTorch:ACL_PyTorch/built-in/cv"
CONTRIB = "Ascend/ModelZoo-PyTorch:ACL_PyTorch/contrib/cv/classfication"
ACTUAL_INPUT = OnnxIO(input_name="actual_input_1", output_name="output1", opset=11, dynamic_batch=True)


def imagenet_transform(resize: int, crop: int, interpolation: Interpolation = "bilinear") -> Transform:
    return Transform(resize=resize, crop=crop, interpolation=interpolation, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def raw_uint8(resize: int, crop: int, interpolation: Interpolation = "bilinear") -> HostPreprocess:
    """The AIPP guides' host step: the resized, cropped pixels as raw HWC bytes, one file per image."""
    return HostPreprocess(
        transform=Transform(resize=resize, crop=crop, interpolation=interpolation), dtype="uint8", layout="HWC"
    )


def guide_aipp(float_transform: Transform, src_size: int, crop_start: int | None = None) -> Aipp:
    """The guides' AIPP: ImageNet normalisation as their files write it, cropping ``float_transform.crop`` at
    (crop_start, crop_start) when a start is given."""
    return Aipp(
        src_size=src_size,
        min_chn=GUIDE_MIN_CHN,
        var_reci=GUIDE_VAR_RECI,
        float_equivalent=float_transform,
        crop=crop_start is not None,
        crop_start=(crop_start, crop_start) if crop_start is not None else (0, 0),
        crop_size=float_transform.crop if crop_start is not None else None,
    )


def torchvision_card(
    name: str,
    family: str,
    builder: str,
    weights_file: str,
    preprocess: HostPreprocess,
    float_transform: Transform,
    reference: Reference,
    aipp: Aipp | None = None,
    kwargs: Mapping[str, object] | None = None,
    atc: AtcExtras | None = None,
    io: OnnxIO = ACTUAL_INPUT,
) -> ModelCard:
    """A guide that builds a torchvision model and loads torchvision's released state_dict ``weights_file``."""
    return ModelCard(
        name=name,
        family=family,
        architecture=Architecture(
            builder=builder,
            kwargs=dict(kwargs or {}),
            checkpoint=CheckpointFormat(library=f"torchvision state_dict ({weights_file})"),
        ),
        preprocess=preprocess,
        float_transform=float_transform,
        aipp=aipp,
        io=io,
        atc=atc or AtcExtras(),
        labels=Labels(),
        reference=reference,
    )
