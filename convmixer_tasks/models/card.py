"""The model card: everything the pipeline needs to know about one ImageNet classifier, as plain frozen records.

A card says how the model is built (a builder named by dotted path, loaded only when needed), which checkpoint files
it accepts and how their keys map onto the builder's, what the guide's host preprocessing writes, the AIPP the OM is
compiled with and the float transform that is equivalent to it end to end, the ONNX interface, the extra ATC flags,
the label convention and the reference numbers with their source. No torch, numpy or PIL here: the DAG file, the CLI
and the Param choices read cards at parse time.

``CardError`` lives in ``names`` (the names are read without this module) and is re-exported here.

Each card is checked when it is built (``ModelCard.__post_init__``): a missing or contradictory field fails at import
with one line naming the card, the field and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from convmixer_tasks.models.names import CardError as CardError  # re-exported: raised by the checks below

ResizeRule = Literal["shorter", "squash"]  # shorter side to `resize` keeping the aspect ratio / both sides to it
Interpolation = Literal["bilinear", "bicubic"]
CropRounding = Literal["round", "truncate"]  # centre-crop offset: int(round((side - crop) / 2)) or int((…) / 2)
FileDtype = Literal["uint8", "float32"]
FileLayout = Literal["HWC", "NCHW"]
FileUnit = Literal["image", "batch"]  # one file per image (ais_bench packs them) or per batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same normalisation as the ModelZoo guides' AIPP files write it: 255·mean and 1/(255·std), 15 digits.
GUIDE_MIN_CHN = (123.675, 116.28, 103.53)
GUIDE_VAR_RECI = (0.0171247538316637, 0.0175070028011204, 0.0174291938997821)

_BUILDER_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Transform:
    """An image transform in torchvision terms: Resize → CenterCrop → (ToTensor + Normalize when mean/std are set).

    ``mean``/``std`` None means the pixels stay raw (0..255): the transform a uint8 file is written with.
    """

    resize: int  # the shorter side (rule "shorter") or both sides (rule "squash") after resizing
    crop: int  # square centre crop
    interpolation: Interpolation = "bilinear"
    resize_rule: ResizeRule = "shorter"
    crop_rounding: CropRounding = "round"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @property
    def normalized(self) -> bool:
        return self.mean is not None


@dataclass(frozen=True)
class HostPreprocess:
    """What the guide's preprocessing script writes: the transform, then the file's dtype, layout and unit.

    ``uint8`` files hold the raw crop HWC (the guides cast to int8, which keeps the same bytes); ``float32`` files the
    normalised tensor NCHW.
    """

    transform: Transform
    dtype: FileDtype
    layout: FileLayout
    file_unit: FileUnit = "image"


@dataclass(frozen=True)
class Aipp:
    """The static AIPP the OM is compiled with: uint8 RGB of ``src_size`` in, optional crop, then per channel
    ``(x - min_chn) · var_reci`` on the NPU. ``float_equivalent`` is the host transform that gives the same tensor.
    """

    src_size: int  # square source image (the uint8 file's H = W)
    min_chn: tuple[float, float, float]
    var_reci: tuple[float, float, float]
    float_equivalent: Transform
    crop: bool = False
    crop_start: tuple[int, int] = (0, 0)  # (h, w) = load_start_pos_h/w, used only when crop is on
    crop_size: int | None = None  # square crop, used only when crop is on
    input_format: str = "RGB888_U8"

    @property
    def output_size(self) -> int:
        """The post-AIPP H = W: what ATC's --input_shape names."""
        return self.crop_size if self.crop and self.crop_size is not None else self.src_size


@dataclass(frozen=True)
class KeyRename:
    """A regex rewrite applied to every checkpoint key (``re.sub(pattern, replacement, key)``)."""

    pattern: str
    replacement: str


@dataclass(frozen=True)
class CheckpointFormat:
    """The checkpoint files a card accepts and how their keys map onto the builder's state_dict."""

    library: str  # whose save format the keys follow, e.g. "torchvision state_dict" (.pth or .pth.tar alike)
    wrappers: tuple[str, ...] = ("state_dict", "model", "state_dict_ema", "model_ema")  # dict keys around the tensors
    strip_prefixes: tuple[str, ...] = ("module.",)  # DataParallel / DDP saves
    renames: tuple[KeyRename, ...] = ()  # the guide's own key rewrites (DenseNet's legacy names)
    mapper: str | None = None  # "module:function(state, model) -> state" for mappings a regex cannot say
    describe: str | None = None  # "module:function(state) -> str": what a foreign file looks like, for errors
    optional_keys: tuple[str, ...] = (r"(^|\.)num_batches_tracked$",)  # regexes of keys a file may leave out


@dataclass(frozen=True)
class Architecture:
    """How to build the model: ``builder`` is ``"package.module:function"``, called with ``kwargs``."""

    builder: str
    kwargs: Mapping[str, object] = field(default_factory=dict)
    checkpoint: CheckpointFormat | None = None
    default_checkpoint: str | None = None  # relative to the convmixer_tasks package (the demo model's)


@dataclass(frozen=True)
class OnnxIO:
    input_name: str
    output_name: str
    opset: int
    dynamic_batch: bool = True
    num_classes: int = 1000


@dataclass(frozen=True)
class AtcExtras:
    """Flags the guide adds to ATC beyond the common ones (framework, model, output, shape, soc, log)."""

    op_select_implmode: str | None = None
    optypelist_for_implmode: str | None = None
    enable_small_channel: bool = False


@dataclass(frozen=True)
class Labels:
    """ImageNet labels are 0-based; a 1001-way output (background class first) shifts them by +1."""

    offset: int = 0
    plus_one_if_1001: bool = True


@dataclass(frozen=True)
class FpsAt:
    batch_size: int
    fps: float


@dataclass(frozen=True)
class Reference:
    """Published numbers and where they come from. The guide and the ModelZoo index disagree now and then: both are
    kept, and ``top1`` (the gate's baseline) is the guide's, else the index's."""

    source: str  # repository:path of the guide, or "none" for a model without one
    commit: str | None = None
    guide_top1: float | None = None
    guide_top5: float | None = None
    guide_fps: tuple[FpsAt, ...] = ()  # 310P, the guide's batch size → fps table
    index_top1: float | None = None
    index_fps: FpsAt | None = None
    device: str = "Ascend310P3"
    expected_top1_file: str | None = None  # a JSON with "expected_top1", relative to the package (the demo model)
    # False when the published top-1 was measured with other weights than those this card loads (the gate then
    # has no baseline): ViT-B/16's guide uses timm's AugReg weights, the card torchvision's.
    applies_to_checkpoint: bool = True
    notes: tuple[str, ...] = ()  # disagreements and quirks, one fact a line

    @property
    def top1(self) -> float | None:
        """The published top-1: the guide's, else the index's."""
        return self.guide_top1 if self.guide_top1 is not None else self.index_top1

    @property
    def baseline_top1(self) -> float | None:
        """The top-1 the gate holds a run to (None: not gated on accuracy, or read from expected_top1_file)."""
        return self.top1 if self.applies_to_checkpoint else None


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


# The default of a field every card must set: it lets a missing one be reported by name instead of as a TypeError.
_MISSING: Any = _Missing()


@dataclass(frozen=True)
class ModelCard:
    """One classifier. ``architecture`` or ``onnx`` (one of the two) must be set; ``aipp`` only when the guide
    compiles with AIPP."""

    name: str
    family: str = _MISSING
    io: OnnxIO = _MISSING
    preprocess: HostPreprocess = _MISSING  # the guide's own host step
    float_transform: Transform = _MISSING  # what `preprocess --dtype float32` writes (NCHW, normalised)
    labels: Labels = _MISSING
    reference: Reference = _MISSING
    architecture: Architecture | None = None
    onnx: str | None = None  # bring your own ONNX: a path used instead of building and exporting
    aipp: Aipp | None = None  # None: the guide compiles without AIPP (uint8 runs derive one: uint8_aipp)
    atc: AtcExtras = AtcExtras()

    def __post_init__(self) -> None:
        validate_card(self)

    @property
    def input_size(self) -> int:
        """H = W of the model's input tensor."""
        return self.float_transform.crop

    @property
    def has_aipp(self) -> bool:
        """Whether the guide compiles with AIPP (its host step then writes uint8)."""
        return self.aipp is not None

    def uint8_aipp(self) -> Aipp:
        """The AIPP for uint8 input files: the guide's, else one derived from the float path (no crop)."""
        return self.aipp if self.aipp is not None else aipp_from(self.float_transform)


_REQUIRED = {
    "family": 'a family name, e.g. family="resnet"',
    "io": "io=OnnxIO(input_name=…, output_name=…, opset=…)",
    "preprocess": "preprocess=HostPreprocess(transform=Transform(…), dtype=…, layout=…)",
    "float_transform": "float_transform=Transform(…, mean=…, std=…), the normalised float path",
    "labels": "labels=Labels() for 0-based ImageNet labels",
    "reference": 'reference=Reference(source="none") when nothing is published',
}


def _fail(card: str, what: str, fix: str) -> CardError:
    return CardError(f"model card {card!r}: {what}; {fix}")


def validate_card(card: ModelCard) -> None:
    """Raise CardError (one line: the card, the field, the fix) for a missing or contradictory field."""
    name = card.name
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(str(name), "name must be lower-case letters, digits and underscores", "rename the card")
    for attr, fix in _REQUIRED.items():
        if getattr(card, attr) is None or getattr(card, attr) is _MISSING:
            raise _fail(name, f"required field {attr!r} is missing", f"add {fix}")
    if card.architecture is None and card.onnx is None:
        raise _fail(
            name,
            "neither 'architecture' nor 'onnx' is set",
            'add architecture=Architecture(builder="module:function", …) or onnx="path/to/model.onnx"',
        )
    if card.architecture is not None:
        if not _BUILDER_RE.match(card.architecture.builder):
            raise _fail(
                name,
                f"architecture.builder {card.architecture.builder!r} is not a dotted path",
                'write it as "package.module:function"',
            )
        ckpt = card.architecture.checkpoint
        for attr in ("mapper", "describe"):
            dotted = getattr(ckpt, attr) if ckpt is not None else None
            if dotted is not None and not _BUILDER_RE.match(dotted):
                raise _fail(name, f"checkpoint.{attr} {dotted!r} is not a dotted path", 'write "module:function"')
    _check_transform(name, "preprocess.transform", card.preprocess.transform)
    _check_transform(name, "float_transform", card.float_transform)
    _check_choice(name, "preprocess.dtype", card.preprocess.dtype, FileDtype)
    _check_choice(name, "preprocess.layout", card.preprocess.layout, FileLayout)
    _check_choice(name, "preprocess.file_unit", card.preprocess.file_unit, FileUnit)
    if not card.float_transform.normalized:
        raise _fail(name, "float_transform has no mean/std", "give the normalisation of the float path")
    if card.preprocess.dtype == "float32" and not card.preprocess.transform.normalized:
        raise _fail(name, "preprocess writes float32 without mean/std", "add the guide's mean/std to its transform")
    if card.io.opset < 7 or card.io.num_classes < 1:
        raise _fail(name, f"io has opset {card.io.opset} / num_classes {card.io.num_classes}", "fix io")
    if card.aipp is not None:
        _check_aipp(name, card.aipp, card.float_transform)


def _check_choice(card: str, attr: str, value: object, choices: object) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise _fail(card, f"{attr} is {value!r}", f"choose one of: {', '.join(map(str, allowed))}")


def _check_transform(card: str, attr: str, transform: Transform) -> None:
    _check_choice(card, f"{attr}.resize_rule", transform.resize_rule, ResizeRule)
    _check_choice(card, f"{attr}.interpolation", transform.interpolation, Interpolation)
    _check_choice(card, f"{attr}.crop_rounding", transform.crop_rounding, CropRounding)
    if not transform.crop > 0 or not transform.resize > 0:
        raise _fail(card, f"{attr} has resize {transform.resize} / crop {transform.crop}", "use positive sizes")
    if (transform.mean is None) != (transform.std is None):
        raise _fail(card, f"{attr} sets only one of mean/std", "give both or neither")
    if transform.std is not None and any(s <= 0 for s in transform.std):
        raise _fail(card, f"{attr}.std {transform.std} has a non-positive value", "fix std")


def _check_aipp(card: str, aipp: Aipp, float_transform: Transform) -> None:
    """AIPP must compute the float path: same output size, min_chn = 255·mean, var_reci = 1/(255·std)."""
    equivalent = aipp.float_equivalent
    if equivalent != float_transform:
        raise _fail(
            card,
            f"aipp.float_equivalent {equivalent} differs from float_transform {float_transform}",
            "make them the same transform (the float path must equal what AIPP computes)",
        )
    if aipp.crop and (aipp.crop_size is None or aipp.crop_start[0] + aipp.crop_size > aipp.src_size):
        raise _fail(card, "aipp.crop is on without a crop_size inside src_size", "set crop_size and crop_start")
    if aipp.output_size != float_transform.crop:
        raise _fail(
            card,
            f"aipp gives {aipp.output_size}x{aipp.output_size} but float_transform crops {float_transform.crop}",
            "fix aipp.src_size/crop_size",
        )
    assert equivalent.mean is not None and equivalent.std is not None
    for c in range(3):
        expected_min, expected_reci = 255.0 * equivalent.mean[c], 1.0 / (255.0 * equivalent.std[c])
        if not math.isclose(aipp.min_chn[c], expected_min, rel_tol=1e-9) or not math.isclose(
            aipp.var_reci[c], expected_reci, rel_tol=1e-9
        ):
            raise _fail(
                card,
                f"aipp channel {c}: min_chn {aipp.min_chn[c]} / var_reci {aipp.var_reci[c]} are not 255·mean / "
                f"1/(255·std) of the float path ({expected_min:.6g} / {expected_reci:.6g})",
                "fix mean/std or the AIPP numbers",
            )


def aipp_from(transform: Transform, src_size: int | None = None) -> Aipp:
    """The AIPP (no crop) that normalises uint8 files written with ``transform``'s geometry."""
    assert transform.mean is not None and transform.std is not None
    return Aipp(
        src_size=src_size or transform.crop,
        min_chn=(255.0 * transform.mean[0], 255.0 * transform.mean[1], 255.0 * transform.mean[2]),
        var_reci=(1.0 / (255.0 * transform.std[0]), 1.0 / (255.0 * transform.std[1]), 1.0 / (255.0 * transform.std[2])),
        float_equivalent=transform,
    )


def card_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ModelCard))
