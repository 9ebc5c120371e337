"""Independent oracle of the ModelZoo reference preprocess: torchvision's functional ops re-typed literally with torch
tensors and PIL (torchvision itself is not installed). Shares no code with convmixer_tasks.stages.preprocess on purpose:
the tests compare the two byte for byte.

Literal means slow and allocation-happy, like the original: PIL crop, a uint8 tensor from the bytes, permute +
contiguous, ``.to(float32).div(255)``, ``clone().sub_(mean).div_(std)``, and per-image ``np.concatenate`` batching.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

REF_CROP = 224
REF_RESIZE = int(224 / 0.96)
REF_MEAN = [0.485, 0.456, 0.406]
REF_STD = [0.229, 0.224, 0.225]


def tv_resize(img: Image.Image, size: int) -> Image.Image:
    """torchvision.transforms.functional.resize(img, size:int, BICUBIC) for PIL images."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return img
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def tv_center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision.transforms.functional.center_crop for a PIL image at least ``size`` on both sides."""
    image_width, image_height = img.size
    crop_top = round((image_height - size) / 2.0)
    crop_left = round((image_width - size) / 2.0)
    return img.crop((crop_left, crop_top, crop_left + size, crop_top + size))


def tv_to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor for an RGB PIL image."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], len(pic.getbands()))
    img = img.permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def tv_normalize(tensor: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision.transforms.functional.normalize(inplace=False)."""
    tensor = tensor.clone()
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    return tensor.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))


def reference_pixels(path) -> np.ndarray:
    """(224, 224, 3) uint8: the image after Resize + CenterCrop, before ToTensor."""
    img = Image.open(path).convert("RGB")
    return np.array(tv_center_crop(tv_resize(img, REF_RESIZE), REF_CROP))


def reference_transform(path) -> np.ndarray:
    """(3, 224, 224) float32, as the reference script feeds it to the model."""
    img = Image.open(path).convert("RGB")
    img = tv_center_crop(tv_resize(img, REF_RESIZE), REF_CROP)
    return tv_normalize(tv_to_tensor(img), REF_MEAN, REF_STD).numpy()


def reference_preprocess(image_paths, out_dir, batch_size: int) -> list[str]:
    """The reference script's batching: images in the given order, ``batch_size`` per ``input_{:05d}.bin``, each
    batch grown by np.concatenate one image at a time, the last batch zero-padded. Returns the file names."""
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for start in range(0, len(image_paths), batch_size):
        batch = None
        for path in image_paths[start : start + batch_size]:
            image = reference_transform(path)[None]
            batch = image if batch is None else np.concatenate((batch, image), axis=0)
        assert batch is not None, "the range only starts a batch where an image is left"
        if batch.shape[0] < batch_size:
            pad = np.zeros((batch_size - batch.shape[0], *batch.shape[1:]), dtype=np.float32)
            batch = np.concatenate((batch, pad), axis=0)
        name = f"input_{start // batch_size:05d}.bin"
        batch.tofile(os.path.join(out_dir, name))
        names.append(name)
    return names
