"""ConvMixer (locuslab/convmixer): the ModelZoo's convmixer_1536_20, the other published shapes, and our demo model.

All share the guide's input: Resize(floor(224 / 0.96) = 233, bicubic) → CenterCrop(224) → ImageNet norm, float32
NCHW with ``batch_size`` images per file. The guide compiles without AIPP; uint8 runs derive theirs from the float
path (``ModelCard.uint8_aipp``).
"""

from __future__ import annotations

from convmixer_tasks.models.card import (
    IMAGENET_MEAN,
    IMAGENET_STD,
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
from convmixer_tasks.models.paths import DEMO_CHECKPOINT_FILE, DEMO_VARIANT

# crop_pct 0.96 as timm keeps it for ConvMixer: floor(224 / 0.96) = 233.
TRANSFORM = Transform(resize=233, crop=224, interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD)
PREPROCESS = HostPreprocess(transform=TRANSFORM, dtype="float32", layout="NCHW", file_unit="batch")
# The release's Sequential keys, or timm's stem./blocks.N./head. layout (mapped by index arithmetic).
CHECKPOINT = CheckpointFormat(
    library="locuslab/convmixer .pth.tar",
    mapper="convmixer_tasks.models.builders.convmixer:map_checkpoint_keys",
    describe="convmixer_tasks.models.builders.convmixer:describe_state",
)
# Our export keeps opset 17 (the guide's is 11): ONNX Runtime fuses GELU/BatchNorm there (bench/RESULTS.md).
IO = OnnxIO(input_name="image", output_name="class", opset=17, dynamic_batch=True)
# The guide's implmode for Gelu; CompileOptions applies it by default today.
ATC = AtcExtras(op_select_implmode="high_performance", optypelist_for_implmode="Gelu")
GUIDE = "Ascend/ModelZoo-PyTorch:ACL_PyTorch/contrib/cv/classfication/convmixer_1536_20"
NO_GUIDE = "none (no ModelZoo guide)"


def convmixer_card(
    name: str, dim: int, depth: int, kernel_size: int, patch_size: int, reference: Reference, **extra: object
) -> ModelCard:
    kwargs = {"dim": dim, "depth": depth, "kernel_size": kernel_size, "patch_size": patch_size, **extra}
    return ModelCard(
        name=name,
        family="convmixer",
        io=IO,
        preprocess=PREPROCESS,
        float_transform=TRANSFORM,
        labels=Labels(),
        reference=reference,
        architecture=Architecture(
            builder="convmixer_tasks.models.builders.convmixer:build_convmixer",
            kwargs=kwargs,
            checkpoint=CHECKPOINT,
            default_checkpoint=DEMO_CHECKPOINT_FILE if name == DEMO_VARIANT else None,
        ),
        atc=ATC,
    )


CARDS = (
    convmixer_card(
        "convmixer_1536_20",
        dim=1536,
        depth=20,
        kernel_size=9,
        patch_size=7,
        reference=Reference(
            source=GUIDE,
            commit="6a2804a",
            guide_top1=81.37,
            guide_fps=(
                FpsAt(1, 113.42),
                FpsAt(4, 105.39),
                FpsAt(8, 112.20),
                FpsAt(16, 113.84),
                FpsAt(32, 112.64),
                FpsAt(64, 110.05),
            ),
            index_top1=81.37,
            index_fps=FpsAt(1, 102.9),
            notes=(
                "guide reports top-1 only",
                "the guide's OM is compiled at batch 1 whatever batch_size is; best fps 113.84@16 vs index 102.9@1",
                "guide exports at opset 11; ours at 17",
            ),
        ),
    ),
    convmixer_card(
        "convmixer_768_32",
        dim=768,
        depth=32,
        kernel_size=7,
        patch_size=7,
        activation="relu",
        reference=Reference(source=NO_GUIDE),
    ),
    convmixer_card(
        "convmixer_1024_20_ks9_p14",
        dim=1024,
        depth=20,
        kernel_size=9,
        patch_size=14,
        reference=Reference(source=NO_GUIDE),
    ),
    # Small enough to train on two CPU cores in a couple of minutes; 1000 classes so its outputs are shaped like the
    # real model's. Its expected top-1 on the generated demo set is committed beside its checkpoint.
    convmixer_card(
        "convmixer_demo",
        dim=64,
        depth=4,
        kernel_size=5,
        patch_size=14,
        reference=Reference(source="convmixer-tasks demo-train", expected_top1_file="demo_assets/demo_model.json"),
    ),
)
