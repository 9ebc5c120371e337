"""Inception-v3 (ModelZoo InceptionV3_for_Pytorch): torchvision weights with ``transform_input=True`` inside the
graph, uint8 299×299 files, AIPP normalises without cropping."""

from __future__ import annotations

from convmixer_tasks.models.card import (
    GUIDE_MIN_CHN,
    GUIDE_VAR_RECI,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Aipp,
    Architecture,
    CheckpointFormat,
    FpsAt,
    HostPreprocess,
    Labels,
    ModelCard,
    OnnxIO,
    Reference,
    Transform,
)

FLOAT = Transform(resize=342, crop=299, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)

CARDS = (
    ModelCard(
        name="inception_v3",
        family="inception",
        architecture=Architecture(
            builder="convmixer_tasks.models.builders.inception:inception_v3",
            # The released file carries the auxiliary head: built with it, it loads strictly; eval mode returns
            # the main logits only.
            kwargs={"transform_input": True, "aux_logits": True},
            checkpoint=CheckpointFormat(library="torchvision state_dict (inception_v3_google-1a9a5a14.pth)"),
        ),
        preprocess=HostPreprocess(
            transform=Transform(resize=342, crop=299, interpolation="bilinear"), dtype="uint8", layout="HWC"
        ),
        float_transform=FLOAT,
        aipp=Aipp(src_size=299, min_chn=GUIDE_MIN_CHN, var_reci=GUIDE_VAR_RECI, float_equivalent=FLOAT),
        io=OnnxIO(input_name="actual_input_1", output_name="output1", opset=11, dynamic_batch=True),
        labels=Labels(),
        reference=Reference(
            source="Ascend/ModelZoo-PyTorch:ACL_PyTorch/built-in/cv/InceptionV3_for_Pytorch",
            commit="6a2804a",
            guide_top1=77.31,
            guide_top5=93.46,
            guide_fps=(
                FpsAt(1, 1099.11),
                FpsAt(4, 2300.75),
                FpsAt(8, 2388.07),
                FpsAt(16, 2336.78),
                FpsAt(32, 2317.59),
                FpsAt(64, 1916.61),
            ),
            index_fps=FpsAt(8, 2388.0),
            notes=(
                "the guide's prose claims 2736.9 fps at bs8, its table 2388.07",
                "index (Apr 2023, 00d2cb1): 2736 fps at bs8",
            ),
        ),
    ),
)
