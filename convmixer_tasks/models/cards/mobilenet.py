"""MobileNetV2 (ModelZoo MobileNetV2_for_Pytorch): torchvision weights, uint8 224×224 files cropped on the host,
AIPP normalises without cropping."""

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

FLOAT = Transform(resize=256, crop=224, interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD)

CARDS = (
    ModelCard(
        name="mobilenet_v2",
        family="mobilenet",
        architecture=Architecture(
            builder="convmixer_tasks.models.builders.mobilenet:mobilenet_v2",
            checkpoint=CheckpointFormat(library="torchvision state_dict (mobilenet_v2-b0353104.pth)"),
        ),
        # The guide casts the float crop to int8 (wrap-around); uint8 writes the same bytes.
        preprocess=HostPreprocess(
            transform=Transform(resize=256, crop=224, interpolation="bilinear"), dtype="uint8", layout="HWC"
        ),
        float_transform=FLOAT,
        aipp=Aipp(src_size=224, min_chn=GUIDE_MIN_CHN, var_reci=GUIDE_VAR_RECI, float_equivalent=FLOAT),
        io=OnnxIO(input_name="actual_input_1", output_name="output1", opset=11, dynamic_batch=True),
        labels=Labels(),
        reference=Reference(
            source="Ascend/ModelZoo-PyTorch:ACL_PyTorch/built-in/cv/MobileNetV2_for_Pytorch",
            commit="6a2804a",
            guide_top1=71.87,
            guide_top5=90.32,
            guide_fps=(FpsAt(4, 7072.0),),
            index_fps=FpsAt(4, 7072.0),
            notes=("310B1 at bs4: 1488.1 fps", "the guide's AIPP file holds an inactive crop (start 16/16, size 224)"),
        ),
    ),
)
