"""Independent oracle of each ModelZoo guide's host preprocessing, typed from the guides' descriptions in
``/work/shared/spec/modelzoo-classifiers.md`` and shares no code with ``convmixer_tasks`` (the tests compare the two
byte for byte). One function per guide, written the way that guide's script does it; plus the float path each
card derives (torchvision's Resize + CenterCrop + ToTensor + Normalize, in float32, batched like ConvMixer's files).

Deliberately literal and slow: PIL resize, ``int()``-truncated long side, centre crop with the guide's rounding, a
torch float tensor from the bytes, ``/255``, ``sub_(mean).div_(std)``.

Known gap: MobileNetV2's script decodes with ``cv2.imread`` (BGR → RGB); OpenCV is not installed here, so this oracle
decodes with PIL like every other guide. Its JPEG decoder may differ from OpenCV's by a grey level on some pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]


# --- the pieces, as torchvision 0.12-era functional code does them on PIL images -----------------------------------


def open_rgb(path) -> Image.Image:
    return Image.open(path).convert("RGB")


def resize_shorter(img: Image.Image, size: int, resample: int) -> Image.Image:
    """Shorter side -> ``size``, longer side ``int(size * long / short)``; an image already there is untouched."""
    w, h = img.size
    if (w <= h and w == size) or (h <= w and h == size):
        return img
    if w < h:
        return img.resize((size, int(size * h / w)), resample)
    return img.resize((int(size * w / h), size), resample)


def squash(img: Image.Image, size: int, resample: int) -> Image.Image:
    """VGG16's ``resize((256, 256))``: both sides to ``size``, aspect ratio lost."""
    return img.resize((size, size), resample)


def center_crop(img: Image.Image, size: int, truncate: bool = False) -> Image.Image:
    """Centre ``size``×``size``; offsets ``int(round(d / 2.0))`` (torchvision) or ``int(d / 2)`` (VGG16's script)."""
    w, h = img.size
    if truncate:
        top, left = int((h - size) / 2), int((w - size) / 2)
    else:
        top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def to_tensor_normalize(img: Image.Image, mean, std) -> np.ndarray:
    """ToTensor (uint8 HWC -> float32 CHW / 255) then Normalize, as torch does it: float32 all the way."""
    tensor = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    tensor = tensor.to(torch.float32).div(255)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t).numpy()


# --- each guide's host preprocessing: the bytes of the one .bin it writes per image ---------------------------------


def resnet50_guide(path) -> bytes:
    """imagenet_torch_preprocess.py, type 'resnet' in that folder: 256 bilinear, centre 256, int8-cast HWC."""
    img = center_crop(resize_shorter(open_rgb(path), 256, Image.Resampling.BILINEAR), 256)
    return np.array(img, dtype=np.uint8).astype(np.int8).tobytes()


def inceptionv3_guide(path) -> bytes:
    """inceptionv3_preprocess.py: shorter side 342 bilinear, centre 299, int8-cast HWC."""
    img = center_crop(resize_shorter(open_rgb(path), 342, Image.Resampling.BILINEAR), 299)
    return np.array(img, dtype=np.uint8).astype(np.int8).tobytes()


def mobilenetv2_guide(path) -> bytes:
    """preprocess.py: Scale(256) bilinear, CenterCrop(224), HWC array -> float -> int8 (wraps 128..255)."""
    img = center_crop(resize_shorter(open_rgb(path), 256, Image.Resampling.BILINEAR), 224)
    return np.array(img).astype(np.float32).astype(np.int8).tobytes()


def vit_b16_guide(path) -> bytes:
    """Vit_base_preprocess.py at 224: shorter side 248 bicubic, centre 224, /255, (x - 0.5) / 0.5, float32 CHW."""
    img = center_crop(resize_shorter(open_rgb(path), 248, Image.Resampling.BICUBIC), 224)
    return to_tensor_normalize(img, HALF, HALF).tobytes()


def densenet121_guide(path) -> bytes:
    """densenet121_preprocess.py: Resize(256) bilinear, CenterCrop(224), ToTensor, ImageNet norm, float32 CHW."""
    img = center_crop(resize_shorter(open_rgb(path), 256, Image.Resampling.BILINEAR), 224)
    return to_tensor_normalize(img, IMAGENET_MEAN, IMAGENET_STD).tobytes()


def regnetx_016_guide(path) -> bytes:
    """timm eval transform: Resize(int(224 / 0.875) = 256, bicubic), CenterCrop(224), ImageNet norm, float32."""
    img = center_crop(resize_shorter(open_rgb(path), 256, Image.Resampling.BICUBIC), 224)
    return to_tensor_normalize(img, IMAGENET_MEAN, IMAGENET_STD).tobytes()


def vgg16_guide(path) -> bytes:
    """vgg16_preprocess.py: squash to 256×256 bilinear, centre 224 with truncated offsets, ImageNet norm, float32."""
    img = center_crop(squash(open_rgb(path), 256, Image.Resampling.BILINEAR), 224, truncate=True)
    return to_tensor_normalize(img, IMAGENET_MEAN, IMAGENET_STD).tobytes()


# --- the float path: Resize + CenterCrop + ToTensor + Normalize, batched ---------------------------------------------


@dataclass(frozen=True)
class FloatPath:
    """The float transform equivalent end to end to a guide (AIPP folded back onto the host where it has one)."""

    resize: int
    crop: int
    resample: int
    mean: list[float]
    std: list[float]
    squash: bool = False
    truncate: bool = False

    def __call__(self, path) -> np.ndarray:
        img = open_rgb(path)
        resize = squash if self.squash else resize_shorter
        img = resize(img, self.resize, self.resample)
        return to_tensor_normalize(center_crop(img, self.crop, self.truncate), self.mean, self.std)


@dataclass(frozen=True)
class GuideOracle:
    guide: Callable[[os.PathLike], bytes]  # one file's bytes per image
    file_nbytes: int  # what the guide says one image's file is
    float_path: FloatPath


ORACLES: dict[str, GuideOracle] = {
    # ResNet-50: the host writes 256×256, AIPP crops 224 at (16, 16): the float equivalent is 256 -> 224.
    "resnet50": GuideOracle(
        resnet50_guide, 196_608, FloatPath(256, 224, Image.Resampling.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    ),
    "inception_v3": GuideOracle(
        inceptionv3_guide, 268_203, FloatPath(342, 299, Image.Resampling.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    ),
    "mobilenet_v2": GuideOracle(
        mobilenetv2_guide, 150_528, FloatPath(256, 224, Image.Resampling.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    ),
    "vit_b_16": GuideOracle(vit_b16_guide, 602_112, FloatPath(248, 224, Image.Resampling.BICUBIC, HALF, HALF)),
    "densenet121": GuideOracle(
        densenet121_guide, 602_112, FloatPath(256, 224, Image.Resampling.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    ),
    "regnetx_016": GuideOracle(
        regnetx_016_guide, 602_112, FloatPath(256, 224, Image.Resampling.BICUBIC, IMAGENET_MEAN, IMAGENET_STD)
    ),
    "vgg16": GuideOracle(
        vgg16_guide,
        602_112,
        FloatPath(256, 224, Image.Resampling.BILINEAR, IMAGENET_MEAN, IMAGENET_STD, squash=True, truncate=True),
    ),
}


def float_batches(float_path: FloatPath, image_paths, batch_size: int) -> list[bytes]:
    """``batch_size`` images per file in the given order, float32 NCHW, the last file zero-padded."""
    files = []
    for start in range(0, len(image_paths), batch_size):
        images = [float_path(path) for path in image_paths[start : start + batch_size]]
        batch = np.zeros((batch_size, *images[0].shape), dtype=np.float32)
        for slot, image in enumerate(images):
            batch[slot] = image
        files.append(batch.tobytes())
    return files
