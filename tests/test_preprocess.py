"""Preprocess: bit-exact against the independent oracle (tests/reference_transform.py), batching and padding, uint8
mode, resume after a kill, shards, changed inputs, layout changes, and bad inputs that must leave nothing behind."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convmixer_tasks.errors import ConfigError, DatasetError, PreprocessError
from convmixer_tasks.stages.prepfolder import parse_shard, read_manifest
from convmixer_tasks.stages.preprocess import preprocess
from convmixer_tasks.stages.transforms import CROP, MEAN, RESIZE, STD, transform_float32, transform_uint8
from tests.reference_transform import reference_pixels, reference_preprocess, reference_transform

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOAT_IMAGE_BYTES = 3 * 224 * 224 * 4
UINT8_IMAGE_BYTES = 224 * 224 * 3


def make_image(folder: Path, index: int, size=(120, 90), mode: str = "RGB", fmt: str = "JPEG", seed=None) -> Path:
    """Random-noise image (the hardest case for exactness) named like ImageNet val; PNG content for modes JPEG
    cannot hold (P, RGBA) — PIL, like the reference, opens by content, not by extension."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(index if seed is None else seed)
    width, height = size
    if mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    elif mode in ("CMYK", "RGBA"):
        img = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode)
    else:
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        if mode == "P":
            img = img.convert("P")
    assert img.mode == mode
    path = folder / f"ILSVRC2012_val_{index:08d}.JPEG"
    img.save(path, format=fmt)
    return path


def make_dataset(folder: Path, count: int, size=(120, 90), first: int = 1) -> list[Path]:
    return [make_image(folder, index, size) for index in range(first, first + count)]


def bin_files(folder: Path) -> list[str]:
    """What ais_bench would feed to the model from this folder."""
    return sorted(p.name for p in folder.iterdir() if re.search(r"\.(bin|npy)$", p.name, re.IGNORECASE))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """name -> bytes of every file in the folder: bins, manifest, and any hidden temp file left behind."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- the transform ------------------------------------------------------------------------------------------------


def test_constants_are_the_reference_ones():
    assert (RESIZE, CROP) == (233, 224)
    assert MEAN == (0.485, 0.456, 0.406) and STD == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    "size, mode, fmt",
    [
        ((500, 375), "RGB", "JPEG"),  # ImageNet-typical landscape
        ((375, 500), "L", "JPEG"),  # grayscale portrait
        ((300, 240), "CMYK", "JPEG"),
        ((260, 300), "P", "PNG"),
        ((240, 700), "RGBA", "PNG"),
        ((100, 60), "RGB", "JPEG"),  # smaller than 233: upsampled
        ((1000, 50), "RGB", "JPEG"),  # extreme aspect ratios
        ((50, 1000), "RGB", "JPEG"),
        ((10, 400), "RGB", "JPEG"),  # tiny short side
        ((233, 350), "RGB", "JPEG"),  # short side already 233: no resize, odd crop offset (4.5 rounds to 4)
        ((224, 224), "RGB", "JPEG"),
        ((311, 233), "RGB", "JPEG"),  # (311 - 224) / 2 = 43.5 rounds to 44 (half to even)
    ],
)
def test_transform_is_bit_identical_to_the_oracle(tmp_path, size, mode, fmt):
    path = make_image(tmp_path, 1, size=size, mode=mode, fmt=fmt)
    ours = transform_float32(path)
    oracle = reference_transform(path)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224) and ours.flags.c_contiguous
    assert ours.tobytes() == oracle.tobytes()
    pixels = transform_uint8(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (224, 224, 3) and pixels.flags.c_contiguous
    assert np.array_equal(pixels, reference_pixels(path))


def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / "ILSVRC2012_val_00000001.JPEG"
    path.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(PreprocessError, match=re.escape(str(path))):
        transform_float32(path)


# --- batches, manifest, uint8 -------------------------------------------------------------------------------------


def test_batches_match_the_reference_script_and_pad_with_zeros(tmp_path):
    images = tmp_path / "images"
    paths = [
        make_image(images, 1, (200, 150), "RGB"),
        make_image(images, 2, (150, 200), "L"),
        make_image(images, 3, (180, 180), "CMYK"),
        make_image(images, 4, (90, 300), "P", "PNG"),
        make_image(images, 5, (300, 90), "RGBA", "PNG"),
    ]
    out = tmp_path / "prep"
    result = preprocess(images, out, batch_size=3, workers=2)
    expected = reference_preprocess([str(p) for p in paths], tmp_path / "ref", batch_size=3)

    assert bin_files(out) == expected == ["input_00000.bin", "input_00001.bin"]
    for name in expected:
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    last = np.fromfile(out / "input_00001.bin", dtype=np.float32).reshape(3, 3, 224, 224)
    assert last[:2].any(axis=(1, 2, 3)).all()  # real slots hold data
    assert not last[2].any()  # the padded slot is zeros
    assert (result.image_count, result.file_count, result.files_written, result.files_skipped) == (5, 2, 2, 0)

    manifest = read_manifest(out)
    assert manifest.batch_size == 3 and manifest.dtype == "float32" and manifest.input_shape == [3, 3, 224, 224]
    assert [f.images for f in manifest.files] == [[p.name for p in paths[:3]], [p.name for p in paths[3:]]]
    assert [f.padded_slots for f in manifest.files] == [0, 1]
    assert manifest.image_count == 5 and manifest.dataset_fingerprint == result.dataset_fingerprint
    assert manifest.transform["resize"] == 233 and manifest.transform["crop"] == 224
    assert json.loads((out / "manifest.json").read_text())["files"][1]["padded_slots"] == 1


def test_uint8_mode_holds_the_oracle_pixels_nhwc(tmp_path):
    images = tmp_path / "images"
    paths = [make_image(images, i, (160 + 10 * i, 120)) for i in range(1, 4)]
    out = tmp_path / "prep"
    result = preprocess(images, out, batch_size=2, dtype="uint8", workers=1)
    assert result.dtype == "uint8" and bin_files(out) == ["input_00000.bin", "input_00001.bin"]
    data = np.concatenate([np.fromfile(out / name, dtype=np.uint8) for name in bin_files(out)]).reshape(4, 224, 224, 3)
    for slot, path in enumerate(paths):
        assert np.array_equal(data[slot], reference_pixels(path))
    assert not data[3].any()
    manifest = read_manifest(out)
    assert manifest.input_shape == [2, 224, 224, 3] and manifest.transform["layout"] == "NHWC"
    assert (out / "input_00000.bin").stat().st_size == 2 * UINT8_IMAGE_BYTES


def test_only_our_files_are_visible_to_an_ais_bench_folder_scan(tmp_path):
    make_dataset(tmp_path / "images", 5)
    out = tmp_path / "prep"
    preprocess(tmp_path / "images", out, batch_size=2, workers=1)
    assert bin_files(out) == [f.name for f in read_manifest(out).files]
    assert sorted(p.name for p in out.iterdir()) == [
        ".state",
        "input_00000.bin",
        "input_00001.bin",
        "input_00002.bin",
        "manifest.json",
    ]


def test_limit_and_label_file(tmp_path):
    images = tmp_path / "images"
    make_dataset(images, 5)
    labels = tmp_path / "val_label.txt"
    labels.write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {i}\n" for i in range(1, 6)))
    result = preprocess(images, tmp_path / "prep", batch_size=2, workers=1, label_file=labels, limit=3)
    assert (result.image_count, result.file_count) == (3, 2)
    assert read_manifest(tmp_path / "prep").files[1].images == ["ILSVRC2012_val_00000003.JPEG"]


def test_progress_is_logged(tmp_path, caplog):
    make_dataset(tmp_path / "images", 4)
    with caplog.at_level(logging.INFO, logger="convmixer_tasks.stages.preprocess"):
        preprocess(tmp_path / "images", tmp_path / "prep", batch_size=1, workers=1)
    messages = [r.getMessage() for r in caplog.records]
    assert any("4 to write" in m for m in messages)
    # Counted progress is progress.Progress's (rate, ETA, a bar on a terminal: tests/test_progress.py); a run this
    # short logs none there, and preprocess has no progress lines of its own any more (issue 22).
    assert not any("files written" in m for m in messages)


def markers_in(out) -> list[str]:
    """The done-markers of a prep folder (its .state also holds the per-shard writer locks)."""
    return sorted(name for name in os.listdir(out / ".state") if not name.startswith("lock."))


# --- resume, changes, layout ----------------------------------------------------------------------------------------


def test_rerun_skips_done_files_and_redoes_deleted_state_or_truncated_files(tmp_path):
    make_dataset(tmp_path / "images", 7)
    out = tmp_path / "prep"
    preprocess(tmp_path / "images", out, batch_size=2, workers=2)
    before = folder_bytes(out)

    again = preprocess(tmp_path / "images", out, batch_size=2, workers=2)
    assert (again.files_written, again.files_skipped) == (0, 4)

    markers = sorted(p for p in (out / ".state").iterdir() if not p.name.startswith("lock."))  # not the writer lock
    assert [m.name.split(".")[0] for m in markers] == ["input_00000", "input_00001", "input_00002", "input_00003"]
    markers[1].unlink()  # killed after the rename, before the marker
    with open(out / "input_00002.bin", "r+b") as handle:  # or a file cut short by other means
        handle.truncate(1000)
    (out / ".input_00003.bin.k1ll3d.tmp").write_bytes(b"half a file")  # killed mid-write
    resumed = preprocess(tmp_path / "images", out, batch_size=2, workers=2)
    assert (resumed.files_written, resumed.files_skipped) == (2, 2)
    assert folder_bytes(out) == before
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


def test_resume_after_a_real_kill_gives_identical_files(tmp_path):
    images = tmp_path / "images"
    make_dataset(images, 150, size=(400, 300))
    out = tmp_path / "prep"
    code = (
        "from convmixer_tasks.stages.preprocess import preprocess; "
        f"preprocess({str(images)!r}, {str(out)!r}, 1, workers=2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            state = out / ".state"
            if state.is_dir() and len(markers_in(out)) >= 3:
                break
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its pool workers, as an OOM kill or a lost node would
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "manifest.json").exists()
    done_before = len(markers_in(out))
    assert 3 <= done_before < 150

    resumed = preprocess(images, out, batch_size=1, workers=2)
    assert resumed.files_skipped >= done_before - 2  # files in flight may have lost their marker
    assert resumed.files_written + resumed.files_skipped == 150
    clean = tmp_path / "clean"
    preprocess(images, clean, batch_size=1, workers=2)
    assert folder_bytes(out) == folder_bytes(clean)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".state"]


def test_a_changed_image_redoes_only_its_file(tmp_path):
    images = tmp_path / "images"
    paths = make_dataset(images, 6)
    out = tmp_path / "prep"
    preprocess(images, out, batch_size=2, workers=1)
    stamps = {name: (out / name).stat().st_mtime_ns for name in bin_files(out)}
    inodes = {name: (out / name).stat().st_ino for name in bin_files(out)}

    make_image(images, 3, size=(130, 95), seed=99)  # replaced: new size and mtime
    rerun = preprocess(images, out, batch_size=2, workers=1)
    assert (rerun.files_written, rerun.files_skipped) == (1, 2)
    for name in ("input_00000.bin", "input_00002.bin"):
        stat = (out / name).stat()
        assert (stat.st_mtime_ns, stat.st_ino) == (stamps[name], inodes[name])
    assert (out / "input_00001.bin").stat().st_ino != inodes["input_00001.bin"]
    reference_preprocess([str(p) for p in paths], tmp_path / "ref", batch_size=2)
    for name in bin_files(out):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert read_manifest(out).dataset_fingerprint == rerun.dataset_fingerprint


def test_another_batch_size_or_dtype_replaces_the_old_files(tmp_path):
    images = tmp_path / "images"
    make_dataset(images, 5)
    out = tmp_path / "prep"
    preprocess(images, out, batch_size=1, workers=1)  # 5 float32 files of 602112 bytes
    result = preprocess(images, out, batch_size=4, dtype="uint8", workers=1)  # 2 uint8 files of 602112 bytes
    assert (result.files_written, result.files_skipped) == (2, 0)
    assert bin_files(out) == ["input_00000.bin", "input_00001.bin"]
    assert len(markers_in(out)) == 2
    clean = tmp_path / "clean"
    preprocess(images, clean, batch_size=4, dtype="uint8", workers=1)
    assert folder_bytes(out) == folder_bytes(clean)
    assert read_manifest(out).dtype == "uint8"


def test_read_manifest_rejects_files_of_another_layout_even_with_the_same_size(tmp_path):
    make_dataset(tmp_path / "images", 4)
    preprocess(tmp_path / "images", tmp_path / "float", batch_size=1, workers=1)
    preprocess(tmp_path / "images", tmp_path / "uint8", batch_size=4, dtype="uint8", workers=1)
    float_size = (tmp_path / "float" / "input_00000.bin").stat().st_size
    assert float_size == (tmp_path / "uint8" / "input_00000.bin").stat().st_size
    (tmp_path / "float" / "manifest.json").write_bytes((tmp_path / "uint8" / "manifest.json").read_bytes())
    with pytest.raises(PreprocessError, match="not finished in this layout"):
        read_manifest(tmp_path / "float")
    assert read_manifest(tmp_path / "float", check_files=False).dtype == "uint8"


# --- shards -------------------------------------------------------------------------------------------------------


def _run_shard(images: str, out: str, shard: tuple[int, int]) -> None:
    preprocess(images, out, batch_size=2, workers=1, shard=shard)


def test_two_shards_in_parallel_processes_equal_one_unsharded_run(tmp_path):
    images = tmp_path / "images"
    make_dataset(images, 9)
    sharded = tmp_path / "sharded"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_run_shard, args=(str(images), str(sharded), (i, 2))) for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    whole = tmp_path / "whole"
    preprocess(images, whole, batch_size=2, workers=1)
    assert folder_bytes(sharded) == folder_bytes(whole)
    assert markers_in(sharded) == markers_in(whole)


def test_each_shard_writes_only_its_range_and_the_full_manifest(tmp_path):
    make_dataset(tmp_path / "images", 9)
    out = tmp_path / "prep"
    first = preprocess(tmp_path / "images", out, batch_size=2, workers=1, shard=(0, 2))
    assert bin_files(out) == ["input_00000.bin", "input_00001.bin"]  # 5 files: shard 0 of 2 takes 0..1
    assert (first.files_written, first.file_count, first.image_count) == (2, 5, 9)
    with pytest.raises(PreprocessError, match="incomplete: 3 of 5 files"):
        read_manifest(out)
    second = preprocess(tmp_path / "images", out, batch_size=2, workers=1, shard=(1, 2))
    assert second.files_written == 3 and len(read_manifest(out).files) == 5


def test_parse_shard():
    assert parse_shard("1/4") == (1, 4)
    assert parse_shard(" 0 / 1 ") == (0, 1)
    for text in ["4/4", "1", "a/b", "-1/2", "0/0", ""]:
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(text)


# --- bad inputs leave nothing behind --------------------------------------------------------------------------------


def _labels(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "case, match",
    [
        ("image_without_label", "images without a label"),
        ("label_without_image", "labels without an image"),
        ("duplicate_index", "duplicate image indices"),
        ("malformed_line", "malformed label lines"),
        ("label_out_of_range", "labels outside 0..999"),
        ("empty_folder", "holds no ILSVRC2012_val"),
    ],
)
def test_bad_dataset_raises_and_writes_nothing(tmp_path, case, match):
    images = tmp_path / "images"
    images.mkdir()
    good = [f"ILSVRC2012_val_{i:08d}.JPEG {i}" for i in (1, 2)]
    if case != "empty_folder":
        make_dataset(images, 2)
    lines = {
        "image_without_label": good[:1],
        "label_without_image": [*good, "ILSVRC2012_val_00000003.JPEG 3"],
        "malformed_line": [*good, "ILSVRC2012_val_00000003.JPEG"],
        "label_out_of_range": [good[0], "ILSVRC2012_val_00000002.JPEG 1000"],
    }.get(case, good)
    if case == "duplicate_index":
        make_image(images / "n01440764", 2)
    out = tmp_path / "prep"
    with pytest.raises(DatasetError, match=match):
        preprocess(images, out, batch_size=2, workers=1, label_file=_labels(tmp_path / "val_label.txt", lines))
    assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_stops_the_run_naming_it_and_writes_no_manifest(tmp_path, workers):
    images = tmp_path / "images"
    make_dataset(images, 4)
    broken = images / "ILSVRC2012_val_00000003.JPEG"
    broken.write_bytes(broken.read_bytes()[:300])  # truncated JPEG
    out = tmp_path / "prep"
    with pytest.raises(PreprocessError, match=r"ILSVRC2012_val_00000003.JPEG"):
        preprocess(images, out, batch_size=1, workers=workers)
    assert not (out / "manifest.json").exists()
    assert "input_00002.bin" not in bin_files(out)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_rerun_leaves_no_manifest_describing_old_files(tmp_path):
    images = tmp_path / "images"
    make_dataset(images, 4)
    out = tmp_path / "prep"
    preprocess(images, out, batch_size=2, workers=1)
    (images / "ILSVRC2012_val_00000004.JPEG").write_bytes(b"broken")
    with pytest.raises(PreprocessError, match=r"ILSVRC2012_val_00000004.JPEG"):
        preprocess(images, out, batch_size=2, workers=1)
    assert not (out / "manifest.json").exists()  # the old one no longer matches the folder's inputs


def test_foreign_bin_files_in_the_output_folder_are_refused(tmp_path):
    make_dataset(tmp_path / "images", 2)
    out = tmp_path / "prep"
    out.mkdir()
    (out / "other_model_input.BIN").write_bytes(b"x")
    (out / ".hidden.npy").write_bytes(b"x")  # ais_bench lists hidden files too
    with pytest.raises(PreprocessError, match=r"2 \.bin/\.npy files.*\.hidden\.npy, other_model_input\.BIN"):
        preprocess(tmp_path / "images", out, batch_size=1, workers=1)
    assert sorted(os.listdir(out)) == [".hidden.npy", "other_model_input.BIN"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": 2, "dtype": "float16"}, "dtype"),
        ({"batch_size": 2, "workers": 0}, "--workers"),
        ({"batch_size": 2, "shard": (2, 2)}, "shard"),
    ],
)
def test_bad_settings_are_config_errors_before_any_work(tmp_path, kwargs, match):
    make_dataset(tmp_path / "images", 2)
    with pytest.raises(ConfigError, match=match):
        preprocess(tmp_path / "images", tmp_path / "prep", **kwargs)
    assert not (tmp_path / "prep").exists()


def test_read_manifest_errors_are_clear(tmp_path):
    with pytest.raises(PreprocessError, match=r"manifest.json is missing"):
        read_manifest(tmp_path)
    make_dataset(tmp_path / "images", 3)
    out = tmp_path / "prep"
    preprocess(tmp_path / "images", out, batch_size=2, workers=1)
    (out / "input_00001.bin").unlink()
    with pytest.raises(PreprocessError, match=r"incomplete: 1 of 2 files.*input_00001.bin"):
        read_manifest(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(PreprocessError, match="corrupt"):
        read_manifest(out)
    (out / "manifest.json").write_text(json.dumps({"batch_size": 2}))
    with pytest.raises(PreprocessError, match="corrupt"):
        read_manifest(out)


def _preprocess_in_daemon(images: str, out: str, results) -> None:
    results.put(preprocess(images, out, batch_size=1, workers=2).files_written)


def test_a_daemonic_caller_gets_an_in_process_run_instead_of_a_crash(tmp_path):
    make_dataset(tmp_path / "images", 3)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    # daemon: as under a prefork task worker, such a process may not have children
    proc = context.Process(
        target=_preprocess_in_daemon, args=(str(tmp_path / "images"), str(tmp_path / "prep"), results), daemon=True
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0 and results.get(timeout=5) == 3
    assert bin_files(tmp_path / "prep") == ["input_00000.bin", "input_00001.bin", "input_00002.bin"]


def test_workers_start_safely_while_other_threads_run(tmp_path, monkeypatch):
    """Inside an Airflow task other threads are alive; forking then can deadlock, so a forkserver is used."""
    import threading

    from convmixer_tasks.stages import preprocess as prep_module

    requested = []
    real_get_context = multiprocessing.get_context

    def spy(method=None):  # which start method the worker pool asks for
        requested.append(method)
        return real_get_context(method)

    monkeypatch.setattr(multiprocessing, "get_context", spy)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for index in range(1, 6):
        Image.new("RGB", (300, 260), (index * 40, 20, 90)).save(image_dir / f"ILSVRC2012_val_{index:08d}.JPEG")
    # Earlier tests may leave a thread behind (tqdm's monitor): make "alone" true for the first call only.
    real_active_count = threading.active_count
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    alone = prep_module.preprocess(image_dir, tmp_path / "alone", batch_size=2, workers=2)
    assert requested == ["fork"]  # one thread: forking is safe (and fastest)
    monkeypatch.setattr(threading, "active_count", real_active_count)
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)
    busy.start()
    try:
        threaded = prep_module.preprocess(image_dir, tmp_path / "threaded", batch_size=2, workers=2)
    finally:
        stop.set()
        busy.join()
    assert requested == ["fork", "forkserver"]
    monkeypatch.undo()
    single = prep_module.preprocess(image_dir, tmp_path / "single", batch_size=2, workers=1)
    for name in ("input_00000.bin", "input_00001.bin", "input_00002.bin"):
        assert (alone.out_dir / name).read_bytes() == (single.out_dir / name).read_bytes()
        assert (threaded.out_dir / name).read_bytes() == (single.out_dir / name).read_bytes()
