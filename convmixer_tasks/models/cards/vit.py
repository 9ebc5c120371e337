"""ViT-B/16 at 224 (ModelZoo ViT_base, vit_base_patch16_224): the guide's host transform (shorter side 248 bicubic,
crop 224, mean = std = 0.5, float32 files, no AIPP) and Gelu in high-performance mode.

The guide builds the model with timm 0.6.7 from AugReg ``.npz`` weights; this card loads torchvision's
``vit_b_16`` state_dict instead (our builder follows torchvision's layout). The guide's top-1 was measured with the
AugReg weights, so it is kept as a reference but does not gate runs of torchvision's weights.
"""

from __future__ import annotations

from convmixer_tasks.models.card import AtcExtras, FpsAt, HostPreprocess, OnnxIO, Reference, Transform
from convmixer_tasks.models.cards.common import CONTRIB, GUIDE_COMMIT, torchvision_card

TRANSFORM = Transform(resize=248, crop=224, interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

CARDS = (
    torchvision_card(
        "vit_b_16",
        family="vit",
        builder="convmixer_tasks.models.builders.vit:vit_b_16",
        weights_file="vit_b_16",
        preprocess=HostPreprocess(transform=TRANSFORM, dtype="float32", layout="NCHW"),
        float_transform=TRANSFORM,
        io=OnnxIO(input_name="input", output_name="output", opset=11, dynamic_batch=True),
        atc=AtcExtras(op_select_implmode="high_performance", optypelist_for_implmode="Gelu", enable_small_channel=True),
        reference=Reference(
            source=f"{CONTRIB}/ViT_base",
            commit=GUIDE_COMMIT,
            guide_top1=84.16,
            guide_fps=(FpsAt(16, 660.64),),
            applies_to_checkpoint=False,
            notes=(
                "guide numbers are vit_base_patch16_224 with timm AugReg weights: reference 84.53, 310P3 84.16",
                "torchvision's vit_b_16 weights were published with resize 256 bilinear + ImageNet normalisation",
                "the guide exports one static ONNX per batch size; ours has a dynamic batch axis",
                "index row is patch32_224 (80.63 %, 1679.63 fps at bs64), not this variant",
            ),
        ),
    ),
)
