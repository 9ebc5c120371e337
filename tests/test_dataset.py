"""ImageNet-val discovery, label parsing, validation (one error listing every kind of problem) and the fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convmixer_tasks.errors import ConfigError, DatasetError
from convmixer_tasks.stages.dataset import VAL_NAME_RE, load_dataset, read_labels


def touch_image(folder: Path, index: int, ext: str = "JPEG", content: bytes = b"not decoded here") -> Path:
    """Dataset code never reads pixels, so any bytes do; the name is what matters."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ILSVRC2012_val_{index:08d}.{ext}"
    path.write_bytes(content)
    return path


def write_labels(path: Path, pairs) -> Path:
    path.write_text("".join(f"ILSVRC2012_val_{index:08d}.JPEG {label}\n" for index, label in pairs))
    return path


def test_name_regex_takes_any_extension_case_and_gives_the_index():
    for name in [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000001.jpeg",
        "ILSVRC2012_val_00000001.jpg",
        "ilsvrc2012_val_00000001.JpEg",
    ]:
        found = VAL_NAME_RE.search(name)
        assert found and found.group(1) == "00000001"
    for name in [
        "ILSVRC2012_val_0000001.JPEG",
        "ILSVRC2012_val_00000001.png",
        "ILSVRC2012_val_00000001.JPEG.bak",
        "x_ILSVRC2012_val_00000001.JPEG",
    ]:
        assert VAL_NAME_RE.search(name) is None


def test_flat_folder_is_sorted_by_index_not_by_name(tmp_path):
    images = tmp_path / "images"
    touch_image(images, 10, "jpeg")
    touch_image(images, 2, "JPEG")
    touch_image(images, 1, "jpg")
    (images / "val_label.txt").write_text("stray file\n")
    (images / "README").write_text("ignored\n")
    dataset = load_dataset(images)
    assert [image.index for image in dataset.images] == [1, 2, 10]
    assert [image.name for image in dataset.images] == [
        "ILSVRC2012_val_00000001.jpg",
        "ILSVRC2012_val_00000002.JPEG",
        "ILSVRC2012_val_00000010.jpeg",
    ]
    assert all(image.label is None for image in dataset.images)
    assert dataset.images[0].path == images / "ILSVRC2012_val_00000001.jpg"


def test_synset_folders_and_labels(tmp_path):
    images = tmp_path / "val"
    touch_image(images / "n01440764", 3)
    touch_image(images / "n01443537", 1)
    touch_image(images / "n01443537", 2)
    labels = write_labels(tmp_path / "val_label.txt", [(1, 1), (2, 1), (3, 0)])
    dataset = load_dataset(images, labels)
    assert [(image.index, image.label) for image in dataset.images] == [(1, 1), (2, 1), (3, 0)]
    assert dataset.images[2].path == images / "n01440764" / "ILSVRC2012_val_00000003.JPEG"
    assert dataset.label_file == labels


def test_read_labels_parses_and_accepts_blank_lines_and_crlf(tmp_path):
    path = tmp_path / "val_label.txt"
    path.write_bytes(
        b"ILSVRC2012_val_00000001.JPEG 65\r\n\r\nILSVRC2012_val_00000002.JPEG 970\r\nILSVRC2012_val_00000003 0\n"
    )
    assert read_labels(path) == {1: 65, 2: 970, 3: 0}


def test_read_labels_reports_line_numbers_of_malformed_lines(tmp_path):
    path = tmp_path / "val_label.txt"
    path.write_text(
        "ILSVRC2012_val_00000001.JPEG 65\n"
        "ILSVRC2012_val_00000002.JPEG\n"
        "ILSVRC2012_val_00000003.JPEG 6.5\n"
        "garbage 1\n"
        "ILSVRC2012_val_00000005.JPEG 1000\n"
        "ILSVRC2012_val_00000001.JPEG 3\n"
    )
    with pytest.raises(DatasetError) as info:
        read_labels(path)
    message = str(info.value)
    assert str(path) in message
    assert "3 malformed label lines" in message
    for line_no in (2, 3, 4):
        assert f"line {line_no}:" in message
    assert "1 labels outside 0..999" in message and "line 5: 1000" in message
    assert "1 duplicate label lines" in message and "line 6" in message
    assert "line 1:" not in message


def test_read_labels_num_classes_bounds_the_range(tmp_path):
    path = write_labels(tmp_path / "val_label.txt", [(1, 9), (2, 10)])
    assert read_labels(path, num_classes=11) == {1: 9, 2: 10}
    with pytest.raises(DatasetError, match=r"labels outside 0\.\.9"):
        read_labels(path, num_classes=10)


def test_missing_label_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_labels(tmp_path / "nope.txt")


def test_every_kind_of_problem_comes_in_one_error_with_counts_and_first_five(tmp_path):
    images = tmp_path / "images"
    for index in range(1, 11):
        touch_image(images, index)
    touch_image(images, 3, "jpeg")  # same index twice
    touch_image(images / "n01440764", 4)  # and in a synset folder
    labels = tmp_path / "val_label.txt"
    # labels for 1..3 only (7 images unlabelled), one label without image (12), one malformed, one out of range
    labels.write_text(
        "ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000002.JPEG 2\n"
        "ILSVRC2012_val_00000003.JPEG 3\nILSVRC2012_val_00000012.JPEG 4\nbroken line here\n"
        "ILSVRC2012_val_00000004.JPEG -1\n"
    )
    with pytest.raises(DatasetError) as info:
        load_dataset(images, labels)
    message = str(info.value)
    assert "7 images without a label (first 5 shown)" in message
    assert "ILSVRC2012_val_00000004.JPEG" in message and "ILSVRC2012_val_00000008.JPEG" in message
    assert "ILSVRC2012_val_00000009.JPEG" not in message  # beyond the first five
    assert "1 labels without an image: line 4: ILSVRC2012_val_00000012" in message
    assert "2 duplicate image indices" in message
    assert "ILSVRC2012_val_00000003.JPEG and ILSVRC2012_val_00000003.jpeg" in message
    assert os.path.join("n01440764", "ILSVRC2012_val_00000004.JPEG") in message
    assert "1 malformed label lines" in message and "line 5:" in message
    assert "1 labels outside 0..999: line 6: -1" in message


def test_without_label_file_only_images_are_checked(tmp_path):
    images = tmp_path / "images"
    touch_image(images, 1)
    touch_image(images / "n01", 1)
    with pytest.raises(DatasetError, match="1 duplicate image indices"):
        load_dataset(images)


def test_limit_keeps_first_n_and_ignores_labels_past_it(tmp_path):
    images = tmp_path / "images"
    for index in (5, 1, 3, 2, 4):
        touch_image(images, index)
    labels = write_labels(tmp_path / "val_label.txt", [(i, i) for i in range(1, 8)])  # 6, 7: no image, past limit
    dataset = load_dataset(images, labels, limit=3)
    assert [image.index for image in dataset.images] == [1, 2, 3]
    with pytest.raises(DatasetError, match="2 labels without an image"):
        load_dataset(images, labels)  # without a limit, 6 and 7 are labels without images


def test_limit_still_reports_a_gap_inside_the_kept_range(tmp_path):
    images = tmp_path / "images"
    for index in (1, 3, 4):
        touch_image(images, index)
    labels = write_labels(tmp_path / "val_label.txt", [(1, 0), (2, 0), (3, 0), (4, 0)])
    with pytest.raises(DatasetError, match="labels without an image: line 2: ILSVRC2012_val_00000002"):
        load_dataset(images, labels, limit=2)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_bad_limit_is_a_config_error(tmp_path, limit):
    touch_image(tmp_path, 1)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset(tmp_path, limit=limit)


def test_empty_or_missing_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"holds no ILSVRC2012_val_XXXXXXXX.JPEG images"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "missing")


def test_fingerprint_follows_names_sizes_mtimes_and_labels_but_not_pixels(tmp_path):
    images = tmp_path / "images"
    first = touch_image(images, 1, content=b"aaaa")
    touch_image(images, 2, content=b"bbbb")
    labels = write_labels(tmp_path / "val_label.txt", [(1, 0), (2, 1)])
    base = load_dataset(images, labels).fingerprint()
    assert load_dataset(images, labels).fingerprint() == base

    stat = first.stat()
    first.write_bytes(b"cccc")  # same size, other bytes: restored mtime hides it (no pixel reads)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_dataset(images, labels).fingerprint() == base

    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = load_dataset(images, labels).fingerprint()
    assert touched != base

    first.write_bytes(b"ccccc")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_dataset(images, labels).fingerprint() not in (base, touched)

    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    first.write_bytes(b"cccc")
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    relabelled = write_labels(tmp_path / "other_labels.txt", [(1, 0), (2, 2)])
    assert load_dataset(images, relabelled).fingerprint() != base
    assert load_dataset(images).fingerprint() != base  # labels are part of it
