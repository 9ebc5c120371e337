"""The generated demo set (deterministic, ImageNet-shaped, awkward images included) and the committed demo model."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import torch
from PIL import Image

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fileio import sha256_file
from convmixer_tasks.models.builders.convmixer import build_model, load_checkpoint, read_state_dict
from convmixer_tasks.run.demo import (
    CLASS_IDS,
    DEMO_VAL_COUNT,
    DEMO_VAL_SEED,
    DEMO_VARIANT,
    MARKER_NAME,
    demo_checkpoint_path,
    demo_expected,
    make_demo_dataset,
    render_image,
    score_onnx,
)
from convmixer_tasks.stages.dataset import load_dataset, read_labels
from convmixer_tasks.stages.export import export_and_validate

LINE_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG (\d+)$")


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    """The default demo val set, generated once for this module."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo"))


def file_bytes(image_dir):
    return {path.name: path.read_bytes() for path in sorted(image_dir.iterdir())}


def test_two_generations_are_byte_identical(tmp_path):
    first = make_demo_dataset(tmp_path / "a", count=30, seed=11)
    second = make_demo_dataset(tmp_path / "b", count=30, seed=11)
    assert file_bytes(first.image_dir) == file_bytes(second.image_dir)
    assert first.label_file.read_bytes() == second.label_file.read_bytes()


def test_another_seed_gives_other_images_and_a_prefix_does_not_depend_on_count(tmp_path, demo_set):
    other = make_demo_dataset(tmp_path / "other", count=10, seed=DEMO_VAL_SEED + 1)
    prefix = make_demo_dataset(tmp_path / "prefix", count=10)
    full = file_bytes(demo_set.image_dir)
    assert file_bytes(prefix.image_dir) == {name: full[name] for name in sorted(full)[:10]}
    assert file_bytes(other.image_dir) != file_bytes(prefix.image_dir)


def test_names_and_label_file_have_the_imagenet_shape(demo_set):
    names = sorted(p.name for p in demo_set.image_dir.iterdir())
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, DEMO_VAL_COUNT + 1)]
    lines = demo_set.label_file.read_text().splitlines()
    assert len(lines) == DEMO_VAL_COUNT
    parsed = [LINE_RE.match(line) for line in lines]
    assert all(parsed)
    assert [int(m.group(1)) for m in parsed if m] == list(range(1, DEMO_VAL_COUNT + 1))
    # the project's own reader agrees, and every label is one of the demo classes' ImageNet ids
    labels = read_labels(demo_set.label_file)
    assert sorted(labels) == list(range(1, DEMO_VAL_COUNT + 1)) and set(labels.values()) == set(CLASS_IDS)
    assert len(load_dataset(demo_set.image_dir, demo_set.label_file).images) == DEMO_VAL_COUNT


def test_classes_are_balanced_enough_that_wrong_labels_score_near_chance(demo_set):
    counts = collections.Counter(read_labels(demo_set.label_file).values())
    assert len(counts) == 10 and max(counts.values()) <= 0.15 * DEMO_VAL_COUNT
    assert DEMO_VAL_COUNT % 4 and DEMO_VAL_COUNT % 8 and DEMO_VAL_COUNT % 16  # last batch partial


def test_set_holds_grayscale_cmyk_tiny_and_extreme_aspect_images(demo_set):
    modes: collections.Counter[str] = collections.Counter()
    sizes = set()
    for path in demo_set.image_dir.iterdir():
        with Image.open(path) as image:
            assert image.format == "JPEG"
            modes[image.mode] += 1
            sizes.add(image.size)
    assert modes["L"] >= 3 and modes["CMYK"] >= 3 and modes["RGB"] > 0.7 * DEMO_VAL_COUNT
    assert any(max(w, h) < 224 for w, h in sizes), "an image smaller than the crop"
    assert any(max(w, h) / min(w, h) >= 4 for w, h in sizes), "an extreme aspect ratio"
    assert {(500, 375), (375, 500)} <= sizes


def test_render_image_is_a_pure_function_of_seed_and_index():
    first, label, quality = render_image(5, 17)
    again, label_again, _ = render_image(5, 17)
    assert np.array_equal(np.asarray(first), np.asarray(again)) and label == label_again
    assert label in CLASS_IDS and quality in (75, 90, 95)


def test_regenerating_replaces_a_demo_set_but_refuses_a_foreign_folder(tmp_path):
    make_demo_dataset(tmp_path / "d", count=12)
    smaller = make_demo_dataset(tmp_path / "d", count=5)
    assert len(list(smaller.image_dir.iterdir())) == 5
    assert len(smaller.label_file.read_text().splitlines()) == 5
    assert (tmp_path / "d" / MARKER_NAME).is_file()

    foreign = tmp_path / "imagenet" / "images"
    foreign.mkdir(parents=True)
    (foreign / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"a real image")
    with pytest.raises(ConfigError, match="not a generated demo set"):
        make_demo_dataset(tmp_path / "imagenet", count=3)
    assert (foreign / "ILSVRC2012_val_00000001.JPEG").read_bytes() == b"a real image"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["demo_dataset.json", "images", "val_label.txt"]


def test_a_repeat_call_on_a_complete_set_touches_nothing_but_a_damaged_set_is_regenerated(tmp_path):
    root = tmp_path / "d"
    first = make_demo_dataset(root, count=8, seed=5)
    stats = {path: path.stat().st_mtime_ns for path in root.rglob("*")}
    fingerprint = load_dataset(first.image_dir, first.label_file).fingerprint()
    original = file_bytes(first.image_dir)

    assert make_demo_dataset(root, count=8, seed=5) == first
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*")} == stats  # so the prep cache stays valid
    assert load_dataset(first.image_dir, first.label_file).fingerprint() == fingerprint

    (first.image_dir / "ILSVRC2012_val_00000003.JPEG").unlink()
    (first.image_dir / "ILSVRC2012_val_00000005.JPEG").write_bytes(b"damaged")
    make_demo_dataset(root, count=8, seed=5)
    assert file_bytes(first.image_dir) == original

    labels = first.label_file.read_bytes()
    first.label_file.write_text("ILSVRC2012_val_00000001.JPEG 1\n")
    make_demo_dataset(root, count=8, seed=5)
    assert first.label_file.read_bytes() == labels

    make_demo_dataset(root, count=8, seed=6)  # another seed is another set
    assert file_bytes(first.image_dir) != original


def test_a_run_interrupted_mid_swap_is_finished_by_the_next_one_not_refused(tmp_path, monkeypatch):
    from convmixer_tasks.run import demo

    make_demo_dataset(tmp_path, count=4)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for a kill after the new images are in, before the labels are

    with monkeypatch.context() as patch:
        patch.setattr(demo, "atomic_write_bytes", killed)
        with pytest.raises(KeyboardInterrupt):
            make_demo_dataset(tmp_path, count=6)
    assert not (tmp_path / MARKER_NAME).exists()  # images and labels disagree: not a set

    again = make_demo_dataset(tmp_path, count=6)
    assert len(list(again.image_dir.iterdir())) == 6 and len(read_labels(again.label_file)) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_dataset.json", "images", "val_label.txt"]


def test_an_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ConfigError, match="out is a file"):
        make_demo_dataset(tmp_path / "out", count=2)


@pytest.mark.parametrize("count", [0, -3, 2.5, True])
def test_count_must_be_a_positive_integer(tmp_path, count):
    with pytest.raises(ConfigError, match="count"):
        make_demo_dataset(tmp_path, count=count)


def test_training_crops_normalise_to_exactly_the_reference_transform(tmp_path):
    """Training keeps uint8 crops and normalises per batch; that must equal what evaluation feeds the model."""
    from convmixer_tasks.run.demo import load_crops
    from convmixer_tasks.stages.transforms import normalize, transform_float32

    small = make_demo_dataset(tmp_path, count=6, seed=3)
    crops, labels = load_crops(small)
    assert crops.shape == (6, 224, 224, 3) and crops.dtype == np.uint8
    assert labels.tolist() == [read_labels(small.label_file)[i] for i in range(1, 7)]
    for index, crop in enumerate(crops, start=1):
        reference = transform_float32(small.image_dir / f"ILSVRC2012_val_{index:08d}.JPEG")
        assert np.array_equal(normalize(crop), reference)


# --- the committed demo model ----------------------------------------------------------------------------------


def test_committed_checkpoint_is_small_released_layout_and_loads_into_convmixer_demo():
    path = demo_checkpoint_path()
    assert path.stat().st_size < 2_000_000
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert set(raw) == {"state_dict"}
    assert list(raw["state_dict"]) == list(build_model(DEMO_VARIANT).state_dict())  # Sequential keys, in order
    model = build_model(DEMO_VARIANT)
    load_checkpoint(model, path)
    assert torch.equal(model.state_dict()["9.weight"], read_state_dict(path)["9.weight"])


def test_expected_scores_describe_the_committed_checkpoint():
    expected = demo_expected()
    assert expected["variant"] == DEMO_VARIANT
    assert expected["dataset"] == {"count": DEMO_VAL_COUNT, "seed": DEMO_VAL_SEED}
    assert expected["checkpoint_sha256"] == sha256_file(demo_checkpoint_path())
    assert 70.0 <= expected["expected_top1"] < 100.0  # high, yet below 100% so ordering bugs show
    assert expected["expected_top1"] <= expected["expected_top5"] <= 100.0


def test_committed_model_reproduces_its_expected_scores_and_wrong_labels_drop_to_chance(demo_set, tmp_path):
    export = export_and_validate(demo_checkpoint_path(), tmp_path / "demo.onnx", variant=DEMO_VARIANT)
    scores = score_onnx(export.onnx_path, demo_set)
    expected = demo_expected()
    assert scores["image_count"] == DEMO_VAL_COUNT
    assert scores["top1"] == pytest.approx(expected["expected_top1"], abs=1e-9)
    assert scores["top5"] == pytest.approx(expected["expected_top5"], abs=1e-9)

    # A label file shifted by one image (the classic off-by-one) must score near chance (10 classes).
    lines = demo_set.label_file.read_text().splitlines()
    names, labels = [line.split()[0] for line in lines], [line.split()[1] for line in lines]
    shifted = tmp_path / "shifted" / "val_label.txt"
    shifted.parent.mkdir()
    shifted.write_text("".join(f"{n} {label}\n" for n, label in zip(names, labels[1:] + labels[:1], strict=True)))
    wrong = score_onnx(export.onnx_path, demo_set.__class__(**{**demo_set.__dict__, "label_file": shifted}))
    assert wrong["top1"] < 25.0
