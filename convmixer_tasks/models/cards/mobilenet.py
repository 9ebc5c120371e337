"""MobileNetV2 (ModelZoo MobileNetV2_for_Pytorch): torchvision weights, uint8 224×224 files cropped on the host,
AIPP normalises without cropping."""

from __future__ import annotations

from convmixer_tasks.models.card import FpsAt, Reference
from convmixer_tasks.models.cards import common as zoo

FLOAT = zoo.imagenet_transform(resize=256, crop=224)

CARDS = (
    zoo.torchvision_card(
        "mobilenet_v2",
        family="mobilenet",
        builder="convmixer_tasks.models.builders.mobilenet:mobilenet_v2",
        weights_file="mobilenet_v2-b0353104.pth",
        # The guide casts the float crop to int8 (wrap-around); uint8 writes the same bytes.
        preprocess=zoo.raw_uint8(resize=256, crop=224),
        float_transform=FLOAT,
        aipp=zoo.guide_aipp(FLOAT, src_size=224),
        reference=Reference(
            source=f"{zoo.BUILT_IN}/MobileNetV2_for_Pytorch",
            commit=zoo.GUIDE_COMMIT,
            guide_top1=71.87,
            guide_top5=90.32,
            guide_fps=(FpsAt(4, 7072.0),),
            index_fps=FpsAt(4, 7072.0),
            notes=("310B1 at bs4: 1488.1 fps", "the guide's AIPP file holds an inactive crop (start 16/16, size 224)"),
        ),
    ),
)
