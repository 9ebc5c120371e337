"""Inception-v3 (ModelZoo InceptionV3_for_Pytorch): torchvision weights with ``transform_input=True`` inside the
graph, uint8 299×299 files, AIPP normalises without cropping."""

from __future__ import annotations

from convmixer_tasks.models.card import FpsAt, Reference
from convmixer_tasks.models.cards import common as zoo

FLOAT = zoo.imagenet_transform(resize=342, crop=299)

CARDS = (
    zoo.torchvision_card(
        "inception_v3",
        family="inception",
        builder="convmixer_tasks.models.builders.inception:inception_v3",
        # The released file carries the auxiliary head: built with it, it loads strictly; eval mode returns the
        # main logits only.
        kwargs={"transform_input": True, "aux_logits": True},
        weights_file="inception_v3_google-1a9a5a14.pth",
        preprocess=zoo.raw_uint8(resize=342, crop=299),
        float_transform=FLOAT,
        aipp=zoo.guide_aipp(FLOAT, src_size=299),
        reference=Reference(
            source=f"{zoo.BUILT_IN}/InceptionV3_for_Pytorch",
            commit=zoo.GUIDE_COMMIT,
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
