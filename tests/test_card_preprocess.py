"""Every card's host preprocessing, byte for byte against the independent oracles: the guide's own files
(tests/guide_transforms.py; ConvMixer's reference in tests/reference_transform.py) and the float path
(``--dtype float32``: batched NCHW like ConvMixer's reference), on the tricky images — grayscale, CMYK, palette and
alpha PNGs, tiny, extreme aspect ratios, odd sizes with half-pixel crop offsets — plus a slice of the demo set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convmixer_tasks.models.registry import all_cards, card_names, get_card
from convmixer_tasks.run.demo import make_demo_dataset
from convmixer_tasks.stages.prepfolder import read_manifest
from convmixer_tasks.stages.preprocess import preprocess
from tests.guide_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ORACLES,
    float_batches,
    resnet50_guide,
    to_tensor_normalize,
)
from tests.reference_transform import reference_preprocess
from tests.test_preprocess import make_image

# (width, height, mode, format): what real val folders hold, and the sizes that stress each guide's rounding.
TRICKY = [
    ((500, 375), "RGB", "JPEG"),
    ((375, 500), "L", "JPEG"),
    ((300, 240), "CMYK", "JPEG"),
    ((260, 300), "P", "PNG"),
    ((240, 700), "RGBA", "PNG"),
    ((100, 60), "RGB", "JPEG"),  # smaller than every resize: upsampled
    ((1000, 50), "RGB", "JPEG"),  # extreme aspect ratios
    ((50, 1000), "RGB", "JPEG"),
    ((10, 400), "RGB", "JPEG"),  # tiny short side
    ((256, 301), "RGB", "JPEG"),  # short side already 256: no resize; (301 - 256) / 2 = 22.5 rounds to 22
    ((342, 343), "RGB", "JPEG"),  # Inception's 342 already; odd crop offset
    ((248, 333), "RGB", "JPEG"),  # ViT's 248 already
    ((299, 299), "RGB", "JPEG"),
    ((257, 513), "RGB", "JPEG"),  # odd everything
]
DEMO_COUNT = 12
BATCH = 4


@pytest.fixture(scope="module")
def tricky_set(tmp_path_factory) -> list[Path]:
    """The tricky images (noise: the hardest case for exactness) and demo images, in one val folder."""
    folder = tmp_path_factory.mktemp("tricky") / "images"
    for i, (size, mode, fmt) in enumerate(TRICKY):
        make_image(folder, 100 + i, size=size, mode=mode, fmt=fmt)
    demo = make_demo_dataset(tmp_path_factory.mktemp("demo"), count=DEMO_COUNT)
    for index in range(1, DEMO_COUNT + 1):
        name = f"ILSVRC2012_val_{index:08d}.JPEG"
        shutil.copyfile(demo.image_dir / name, folder / name)
    return sorted(folder.iterdir())


def test_every_card_has_an_oracle():
    """A new card without an independent oracle of its guide would pass untested: name it here."""
    missing = [card.name for card in all_cards() if card.family != "convmixer" and card.name not in ORACLES]
    assert not missing, f"add an oracle to tests/guide_transforms.py for {missing}"


@pytest.mark.parametrize("name", card_names())
def test_guide_files_are_the_oracles_bytes(tmp_path, tricky_set, name):
    card = get_card(name)
    out = tmp_path / "prep"
    result = preprocess(tricky_set[0].parent, out, batch_size=BATCH, workers=1, model=card)
    manifest = read_manifest(out)
    if card.family == "convmixer":  # the guide is the reference script: batches of float32
        expected = reference_preprocess([str(p) for p in tricky_set], tmp_path / "ref", batch_size=BATCH)
        assert [f.name for f in manifest.files] == expected
        for file_name in expected:
            assert (out / file_name).read_bytes() == (tmp_path / "ref" / file_name).read_bytes(), file_name
        return
    oracle = ORACLES[name]
    assert manifest.per_image and manifest.batch_size == 1 and result.file_count == len(tricky_set)
    for prep_file, path in zip(manifest.files, tricky_set, strict=True):
        assert prep_file.name == path.stem + ".bin" and prep_file.images == [path.name]
        data = (out / prep_file.name).read_bytes()
        assert len(data) == oracle.file_nbytes, prep_file.name
        assert data == oracle.guide(path), f"{name}: {path.name} differs from the guide's bytes"


@pytest.mark.parametrize("name", card_names())
def test_float_path_is_the_reference_float_transform_batched(tmp_path, tricky_set, name):
    card = get_card(name)
    out = tmp_path / "prep"
    preprocess(tricky_set[0].parent, out, batch_size=BATCH, dtype="float32", workers=1, model=card)
    manifest = read_manifest(out)
    assert not manifest.per_image and manifest.dtype == "float32"
    assert manifest.input_shape == [BATCH, 3, card.input_size, card.input_size]
    names = [path.name for path in tricky_set]
    assert [image for f in manifest.files for image in f.images] == names
    if card.family == "convmixer":
        ref = tmp_path / "ref"
        expected = [(ref / n).read_bytes() for n in reference_preprocess([str(p) for p in tricky_set], ref, BATCH)]
    else:
        expected = float_batches(ORACLES[name].float_path, tricky_set, BATCH)
    assert [(out / f.name).read_bytes() for f in manifest.files] == expected


def test_resnet50_guide_and_aipp_crop_give_the_float_path_pixels(tricky_set):
    """The oracles agree with each other: ResNet-50's 256×256 file cropped at (16, 16) to 224 (what its AIPP does) is
    the float path's Resize(256) + CenterCrop(224), pixel for pixel, on every tricky image."""
    float_path = ORACLES["resnet50"].float_path
    for path in tricky_set:
        pixels = np.frombuffer(resnet50_guide(path), dtype=np.uint8).reshape(256, 256, 3)[16:240, 16:240]
        assert to_tensor_normalize(Image.fromarray(pixels), IMAGENET_MEAN, IMAGENET_STD).tobytes() == (
            float_path(path).tobytes()
        ), path.name
