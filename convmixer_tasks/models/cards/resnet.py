"""ResNet-50 (ModelZoo Resnet50_Pytorch_Infer): torchvision weights, uint8 256×256 files, AIPP crops 224 at (16, 16)."""

from __future__ import annotations

from convmixer_tasks.models.card import AtcExtras, FpsAt, Reference
from convmixer_tasks.models.cards import common as zoo

FLOAT = zoo.imagenet_transform(resize=256, crop=224)

CARDS = (
    zoo.torchvision_card(
        "resnet50",
        family="resnet",
        builder="convmixer_tasks.models.builders.resnet:resnet50",
        weights_file="resnet50-0676ba61.pth",
        # The guide's host step keeps the 256×256 square; the crop happens on the NPU, at (256 - 224) / 2.
        preprocess=zoo.raw_uint8(resize=256, crop=256),
        float_transform=FLOAT,
        aipp=zoo.guide_aipp(FLOAT, src_size=256, crop_start=16),
        atc=AtcExtras(enable_small_channel=True),
        reference=Reference(
            source=f"{zoo.BUILT_IN}/Resnet50_Pytorch_Infer",
            commit=zoo.GUIDE_COMMIT,
            guide_top1=76.14,
            guide_top5=92.87,
            guide_fps=(FpsAt(64, 4250.0),),
            index_top1=76.14,
            index_fps=FpsAt(64, 4250.0),
            notes=(
                "the guide traces the ONNX at batch 16 with no dynamic axes and compiles it at 64; ours has a "
                "dynamic batch axis so one ONNX serves every batch size",
                "the index's input shape 'bs x 3 x 256 x 256' is the AIPP source size",
                "the README's I/O table says RGB_FP32 NCHW 256x256; the OM takes uint8 HWC",
            ),
        ),
    ),
)
