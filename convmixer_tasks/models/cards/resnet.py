"""ResNet-50 (ModelZoo Resnet50_Pytorch_Infer): torchvision weights, uint8 256×256 files, AIPP crops 224 at (16, 16)."""

from __future__ import annotations

from convmixer_tasks.models.card import (
    GUIDE_MIN_CHN,
    GUIDE_VAR_RECI,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Aipp,
    Architecture,
    AtcExtras,
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
        name="resnet50",
        family="resnet",
        architecture=Architecture(
            builder="convmixer_tasks.models.builders.resnet:resnet50",
            checkpoint=CheckpointFormat(library="torchvision state_dict (resnet50-0676ba61.pth)"),
        ),
        # The guide's host step keeps the 256×256 square; the crop happens on the NPU.
        preprocess=HostPreprocess(
            transform=Transform(resize=256, crop=256, interpolation="bilinear"), dtype="uint8", layout="HWC"
        ),
        float_transform=FLOAT,
        aipp=Aipp(
            src_size=256,
            crop=True,
            crop_start=(16, 16),  # (256 - 224) / 2
            crop_size=224,
            min_chn=GUIDE_MIN_CHN,
            var_reci=GUIDE_VAR_RECI,
            float_equivalent=FLOAT,
        ),
        io=OnnxIO(input_name="actual_input_1", output_name="output1", opset=11, dynamic_batch=True),
        atc=AtcExtras(enable_small_channel=True),
        labels=Labels(),
        reference=Reference(
            source="Ascend/ModelZoo-PyTorch:ACL_PyTorch/built-in/cv/Resnet50_Pytorch_Infer",
            commit="6a2804a",
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
