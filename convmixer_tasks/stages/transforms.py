"""The reference transform (bit-exact) per model card: load, resize, crop, normalise; and the header scan.

Transform (the ModelZoo reference = torchvision on PIL images): ``convert('RGB')`` → Resize(233, BICUBIC) on the shorter
side → CenterCrop(224) → ToTensor (/255) → Normalize(MEAN, STD), all in float32.

Other models' guides differ only in the numbers and a few switches (a card's ``HostPreprocess``: the resize size
and filter, squash instead of shorter side, truncated crop offsets, uint8 pixels, one file per image), so one
implementation serves them all; ``prepfolder.host_preprocess`` picks a card's, the default is the default model's.
The default transform's numbers come from the model's input spec (``variants.INPUT``). ``preprocess`` batches the
pixels into files.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import PIL
from PIL import Image

from convmixer_tasks.errors import ConfigError, PreprocessError
from convmixer_tasks.models.card import HostPreprocess
from convmixer_tasks.models.registry import default_card
from convmixer_tasks.models.variants import INPUT
from convmixer_tasks.stages.dataset import SHOW_FIRST, ValDataset
from convmixer_tasks.stages.prepfolder import SuspiciousImage, host_preprocess

MEAN, STD, CROP, RESIZE = INPUT.mean, INPUT.std, INPUT.crop, INPUT.resize  # RESIZE 233: the reference's int(224 / 0.96)
# One size limit for every image, checked from the header before any decoding: PIL's warning level (PIL itself
# only warns there and refuses at twice that, so its warning is silenced where ours refuses).
MAX_IMAGE_PIXELS = 89_478_485
# Modes the reference's convert('RGB') maps exactly: ImageNet val's JPEGs are RGB or grayscale, GIF/PNG palettes.
PLAIN_MODES = ("RGB", "L", "P")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
FLOAT32 = host_preprocess(default_card(), "float32")
UINT8 = host_preprocess(default_card(), "uint8")


# --- the transform ------------------------------------------------------------------------------------------------


def resized_size(width: int, height: int, size: int = RESIZE) -> tuple[int, int]:
    """torchvision ``Resize(int)``: shorter side -> ``size``, longer side ``int(size * long / short)`` (truncated)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_offsets(width: int, height: int, crop: int = CROP, truncate: bool = False) -> tuple[int, int]:
    """torchvision ``CenterCrop``: (left, top) = ``int(round((side - crop) / 2.0))``; Python rounds halves to even.
    ``truncate``: ``int((side - crop) / 2)``, as VGG16's guide script crops."""
    if truncate:
        return int((width - crop) / 2), int((height - crop) / 2)
    return round((width - crop) / 2.0), round((height - crop) / 2.0)


def too_large_error(sizes: list[tuple[str, str]]) -> PreprocessError:
    """The one refusal for images above ``MAX_IMAGE_PIXELS``: (path, "WxH pixels") of each, the first few named."""
    limit = f"the limit of {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels per image"
    if len(sizes) == 1:
        (path, size), *_ = sizes
        return PreprocessError(
            f"image {path} is {size}, above {limit} (decoding it would take gigabytes); downscale it or remove it "
            "(and its label)"
        )
    shown = ", ".join(f"{path} is {size}" for path, size in sizes[:SHOW_FIRST])
    more = f" (first {SHOW_FIRST} shown)" if len(sizes) > SHOW_FIRST else ""
    return PreprocessError(
        f"{len(sizes)} images are above {limit} (decoding one would take gigabytes){more}: {shown}; downscale them or "
        "remove them (and their labels)"
    )


def _size_text(img: Image.Image) -> str | None:
    """The image's size as "WxH pixels" when its header puts it above the limit, else None."""
    return f"{img.width}x{img.height} pixels" if img.width * img.height > MAX_IMAGE_PIXELS else None


@contextlib.contextmanager
def _open_header(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` (header only, nothing decoded yet) without PIL's size warning: ``MAX_IMAGE_PIXELS`` refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            yield img


def mode_concern(mode: str) -> str | None:
    """Why converting an image of this mode to 8-bit RGB (as the reference does) may not show what it holds."""
    if mode in PLAIN_MODES:
        return None
    if mode == "F" or mode.startswith("I"):
        return "more than 8 bits per sample: values above 255 saturate in 8-bit RGB"
    if mode == "CMYK":
        return "CMYK converted without a colour profile: colours are approximate"
    if mode in ALPHA_MODES:
        return "its transparency is dropped"
    return "an unusual mode, converted to RGB"


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decoded RGB image; a file PIL cannot read, or one above ``MAX_IMAGE_PIXELS``, is a PreprocessError naming it.

    Modes other than RGB are converted exactly as the reference does (PIL's ``convert``), so the output stays
    bit-identical; a run reports the images whose mode loses something on the way (``scan_images``).
    """
    try:
        with _open_header(path) as img:
            too_large = _size_text(img)  # before decoding: the header already says
            if too_large:
                raise too_large_error([(str(path), too_large)])
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")
    except Image.DecompressionBombError as exc:  # PIL's own, larger limit: the same refusal
        raise too_large_error([(str(path), "too large for PIL to open")]) from exc
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PreprocessError(
            f"image {path} cannot be decoded ({type(exc).__name__}: {exc}); replace it or remove it (and its label)"
        ) from exc


def resize_crop(img: Image.Image, prep: HostPreprocess = FLOAT32) -> np.ndarray:
    """(crop, crop, 3) uint8 view of the transform's resize + centre crop of an RGB image (by default
    Resize(233, BICUBIC) + CenterCrop(224)). An image already at the size is not resampled, as torchvision skips it."""
    transform = prep.transform
    if transform.resize_rule == "squash":
        width, height = transform.resize, transform.resize
    else:
        width, height = resized_size(*img.size, size=transform.resize)
    resized = img if (width, height) == img.size else img.resize((width, height), RESAMPLING[transform.interpolation])
    crop = transform.crop
    left, top = crop_offsets(width, height, crop, transform.crop_rounding == "truncate")
    return np.asarray(resized)[top : top + crop, left : left + crop]


@functools.lru_cache(maxsize=8)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: what ToTensor + Normalize give each channel's pixel value.

    torchvision computes, in float32, ``x = float(u8) / 255`` then ``(x - mean) / std`` with mean/std as float32
    tensors. A pixel has only 256 values, so doing exactly that arithmetic once per value and looking the results up
    is bit-identical and several times cheaper than doing it per pixel.
    """
    x = np.arange(256, dtype=np.float32) / np.float32(255)
    mean_column = np.asarray(mean, dtype=np.float32)[:, None]
    std_column = np.asarray(std, dtype=np.float32)[:, None]
    return (x[None, :] - mean_column) / std_column


def normalize_into(pixels: np.ndarray, out: np.ndarray, prep: HostPreprocess = FLOAT32) -> np.ndarray:
    """(H, W, 3) uint8 HWC pixels -> ``out`` (3, H, W) float32 CHW, normalised like the reference."""
    mean, std = prep.transform.mean, prep.transform.std
    if mean is None or std is None:
        raise ConfigError(f"transform {prep.transform} has no mean/std to normalise with; the card must give them")
    table = _normalisation_table(tuple(mean), tuple(std))
    for channel in range(3):  # uint8 indices are always in range; "clip" skips take's buffered bounds check
        np.take(table[channel], pixels[:, :, channel], out=out[channel], mode="clip")
    return out


def normalize(pixels: np.ndarray, prep: HostPreprocess = FLOAT32) -> np.ndarray:
    """(H, W, 3) uint8 crop -> new (3, H, W) float32, exactly as ``transform_float32`` would give it."""
    return normalize_into(pixels, np.empty((3, *pixels.shape[:2]), dtype=np.float32), prep)


def transform_uint8(path: str | os.PathLike, prep: HostPreprocess = UINT8) -> np.ndarray:
    """(crop, crop, 3) uint8 HWC: the cropped pixels before /255 (what AIPP or a uint8-input model takes)."""
    return np.ascontiguousarray(resize_crop(load_rgb(path), prep))


def transform_float32(path: str | os.PathLike, prep: HostPreprocess = FLOAT32) -> np.ndarray:
    """(3, crop, crop) float32 CHW, bit-identical to the reference transform."""
    return normalize(resize_crop(load_rgb(path), prep), prep)


def transform_params(dtype: str, prep: HostPreprocess | None = None) -> dict[str, Any]:
    """What produced the pixels; part of the manifest and of every file's cache key. The choices only some guides
    make appear only when made, so the default transform's record (and every layout id made from it) is unchanged."""
    prep = prep or host_preprocess(default_card(), dtype)
    transform = prep.transform
    params: dict[str, Any] = {
        "resize": transform.resize,
        "crop": transform.crop,
        "interpolation": transform.interpolation,
        "mean": None if transform.mean is None else list(transform.mean),
        "std": None if transform.std is None else list(transform.std),
        "normalized": dtype == "float32",
        "layout": "NCHW" if dtype == "float32" else "NHWC",
        "pillow": PIL.__version__,  # resampling code lives in Pillow: another version may give other pixels
    }
    if transform.resize_rule != "shorter":
        params["resize_rule"] = transform.resize_rule
    if transform.crop_rounding != "round":
        params["crop_rounding"] = transform.crop_rounding
    if prep.file_unit != "batch":
        params["file_unit"] = prep.file_unit
    return params


def scan_images(dataset: ValDataset) -> tuple[list[SuspiciousImage], list[tuple[str, str]]]:
    """Every image's header (mode and size; no pixel decoded): the suspicious ones, and (path, size) of those above
    ``MAX_IMAGE_PIXELS``. A file whose header PIL cannot read is left to the transform, which names it."""
    suspicious, too_large = [], []
    for image in dataset.images:
        try:
            with _open_header(image.path) as img:
                mode, width, height, size = img.mode, img.width, img.height, _size_text(img)
        except Image.DecompressionBombError:
            too_large.append((str(image.path), "too large for PIL to open"))
            continue
        except (OSError, ValueError, SyntaxError, EOFError, struct.error):
            continue
        if size:
            too_large.append((str(image.path), size))
        concern = mode_concern(mode)
        if concern:
            suspicious.append(SuspiciousImage(image.name, mode, width, height, concern))
    return suspicious, too_large
