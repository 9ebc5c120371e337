"""The prep folder's contract: what ``preprocess`` writes and every later step reads (the manifest, file names, input
shapes, dtypes, shard ranges). JSON and file sizes only, no numpy or PIL, so readers pay nothing for the transform.

Layout (ais_bench takes every ``*.bin``/``*.npy`` in the folder, so nothing else of ours ends so)::

    prep/input_00000.bin …      finished files only (written to a hidden ``.tmp`` name, then renamed): a batch
                                each, or (a guide's per-image layout) ``ILSVRC2012_val_00000001.bin`` … one image
                                each, named after the JPEG's stem, which ais_bench packs into the model's batch
    prep/manifest.json          which image sits in which file/slot, and which entries of the image folder were
                                skipped or are suspicious; written last, identical from every shard
    prep/.state/<file>.<layout>.<inputs>   empty marker: this file holds these inputs in this layout
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convmixer_tasks.dtypes import DTYPE_ITEMSIZE, INPUT_DTYPES
from convmixer_tasks.errors import ConfigError, PreprocessError
from convmixer_tasks.fileio import read_json, sha256_json, to_jsonable
from convmixer_tasks.models.card import HostPreprocess, ModelCard
from convmixer_tasks.models.variants import INPUT
from convmixer_tasks.stages.dataset import SkippedEntry

# The input dtypes a prep folder (and a compiled artifact) can hold: float32 NCHW normalised, or uint8 NHWC pixels.

MANIFEST_NAME = "manifest.json"
STATE_DIR = ".state"
FILE_RE = re.compile(r"^input_(\d{5,})\.bin$")
IMAGE_FILE_RE = re.compile(r"^ILSVRC2012_val_\d{8}\.bin$")  # per-image layout: the JPEG's stem + .bin


def file_shape(prep: HostPreprocess, images: int) -> list[int]:
    """One prep file's array: NCHW float32 (normalised) or NHWC uint8 (pixels)."""
    return input_shape(images, prep.dtype, prep.transform.crop)


def host_preprocess(card: ModelCard, dtype: str | None = None) -> HostPreprocess:
    """What preprocess writes for ``card``: its guide's host step (``dtype`` None), the float path batched as
    ConvMixer's reference (``float32``: the card's float transform, NCHW), or uint8 pixels (``uint8``: the guide's
    own when it writes uint8 for AIPP, else the float path's crop, batched NHWC, for an AIPP derived from it)."""
    if dtype is None:
        return card.preprocess
    if dtype not in INPUT_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)} (--dtype)")
    if dtype == "uint8" and card.preprocess.dtype == "uint8":
        return card.preprocess
    if dtype == "float32":
        return HostPreprocess(transform=card.float_transform, dtype="float32", layout="NCHW", file_unit="batch")
    return HostPreprocess(transform=card.float_transform, dtype="uint8", layout="HWC", file_unit="batch")


# --- manifest -----------------------------------------------------------------------------------------------------


@dataclass
class PrepFile:
    name: str  # e.g. "input_00000.bin"
    images: list[str]  # image names in slot order, real slots only
    padded_slots: int = 0  # zero-filled slots after them (last file only)
    # Hash of these images' (name, size, mtime): the ``.state`` marker a file written from exactly them carries.
    # Empty in manifests older than it (their files are then checked by layout only).
    inputs: str = ""


@dataclass(frozen=True)
class SuspiciousImage:
    """An image of the set whose conversion to 8-bit RGB (exactly the reference's) may not show what it holds."""

    image: str  # name, as in PrepFile.images
    mode: str  # PIL's mode, from the file's header
    width: int
    height: int
    reason: str


@dataclass
class PrepManifest:
    batch_size: int
    dtype: str
    input_shape: list[int]  # per file: [bs, 3, 224, 224] (float32) or [bs, 224, 224, 3] (uint8)
    dataset_fingerprint: str
    transform: dict[str, Any]
    files: list[PrepFile]
    image_count: int
    # One file per image named after it (batch_size 1), which ais_bench packs into any model batch.
    per_image: bool = False
    # Not part of the layout: a manifest without them (an older one) just says nothing was left out or flagged.
    skipped: list[SkippedEntry] = field(default_factory=list)  # in the image folder, not in the set
    suspicious: list[SuspiciousImage] = field(default_factory=list)  # in the set, in index order

    def file_nbytes(self) -> int:
        return math.prod(self.input_shape) * DTYPE_ITEMSIZE[self.dtype]

    def layout_id(self) -> str:
        """Hash of everything but the inputs that decides a file's bytes; a file from another layout never counts."""
        return sha256_json([self.dtype, self.batch_size, self.input_shape, self.transform])[:16]


def manifest_identity(manifest: PrepManifest) -> str:
    """What outputs record of the prep folder they were inferred from: the hash of its whole manifest (images per
    file and slot, layout, dataset), so eval can refuse outputs scored against another folder of the same shape."""
    return sha256_json(to_jsonable(manifest))


def input_shape(batch_size: int, dtype: str, crop: int = INPUT.crop) -> list[int]:
    return [batch_size, 3, crop, crop] if dtype == "float32" else [batch_size, crop, crop, 3]


def file_name(position: int) -> str:
    return f"input_{position:05d}.bin"


def image_file_name(image_name: str) -> str:
    """A per-image file: the image's name up to its first dot + ``.bin``, as the guides write them (ais_bench then
    names the output ``<stem>_0.<fmt>``)."""
    return image_name.split(".")[0] + ".bin"


def is_prep_file(name: str) -> bool:
    """A file name preprocess writes (batched or per image)."""
    return bool(FILE_RE.match(name) or IMAGE_FILE_RE.match(name))


def manifest_from_json(raw: Any) -> PrepManifest:
    """Rebuild and cross-check a manifest; ValueError/KeyError/TypeError say what is inconsistent."""
    files = [
        PrepFile(
            name=str(f["name"]),
            images=[str(n) for n in f["images"]],
            padded_slots=int(f["padded_slots"]),
            inputs=str(f.get("inputs", "")),
        )
        for f in raw["files"]
    ]
    manifest = PrepManifest(
        batch_size=int(raw["batch_size"]),
        dtype=str(raw["dtype"]),
        input_shape=[int(n) for n in raw["input_shape"]],
        dataset_fingerprint=str(raw["dataset_fingerprint"]),
        transform=dict(raw["transform"]),
        files=files,
        image_count=int(raw["image_count"]),
        per_image=bool(raw.get("per_image", False)),
        skipped=[SkippedEntry(entry=str(e["entry"]), reason=str(e["reason"])) for e in raw.get("skipped", [])],
        suspicious=[
            SuspiciousImage(
                image=str(e["image"]),
                mode=str(e["mode"]),
                width=int(e["width"]),
                height=int(e["height"]),
                reason=str(e["reason"]),
            )
            for e in raw.get("suspicious", [])
        ],
    )
    crop = manifest.input_shape[2] if len(manifest.input_shape) == 4 else 0
    if (
        manifest.dtype not in INPUT_DTYPES
        or manifest.input_shape != input_shape(manifest.batch_size, manifest.dtype, crop)
        or (manifest.per_image and manifest.batch_size != 1)
    ):
        raise ValueError(
            f"dtype {manifest.dtype!r} / input_shape {manifest.input_shape} / batch size "
            f"{manifest.batch_size} do not fit together"
        )
    for position, prep_file in enumerate(files):
        expected_name = (
            image_file_name(prep_file.images[0]) if manifest.per_image and prep_file.images else file_name(position)
        )
        if prep_file.name != expected_name or len(prep_file.images) + prep_file.padded_slots != manifest.batch_size:
            raise ValueError(f"file entry {position} ({prep_file.name}) does not fit batch size {manifest.batch_size}")
    if sum(len(f.images) for f in files) != manifest.image_count:
        raise ValueError(f"image_count {manifest.image_count} differs from the images listed")
    return manifest


def file_position(name: str) -> int | None:
    match = FILE_RE.match(name)
    return int(match.group(1)) if match else None


def read_markers(out_dir: Path) -> dict[str, set[str]]:
    """file name -> {"<layout id>.<inputs key>"} from the empty marker files in ``.state/``."""
    markers: dict[str, set[str]] = {}
    state_dir = out_dir / STATE_DIR
    if state_dir.is_dir():
        for entry in os.scandir(state_dir):
            name, _, marker = entry.name.partition(".bin.")
            if marker.count(".") == 1 and is_prep_file(name + ".bin"):
                markers.setdefault(name + ".bin", set()).add(marker)
    return markers


def read_manifest(prep_dir: str | os.PathLike, check_files: bool = True) -> PrepManifest:
    """The manifest of a prep folder. ``check_files`` also checks that every listed file is there, of the right size,
    and was finished in the manifest's layout (catches a shard that has not run or an older run's files)."""
    prep_dir = Path(prep_dir)
    path = prep_dir / MANIFEST_NAME
    if not path.is_file():
        raise PreprocessError(f"{path} is missing: run preprocess into {prep_dir} (every shard) before using it")
    try:
        manifest = manifest_from_json(read_json(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PreprocessError(
            f"{path} is corrupt ({type(exc).__name__}: {exc}); delete it and re-run preprocess"
        ) from exc
    if check_files:
        check_prep_files(prep_dir, manifest, manifest.files)
    return manifest


def check_prep_files(prep_dir: Path, manifest: PrepManifest, files: list[PrepFile]) -> None:
    """Each of ``files`` is there, of the manifest's size, and was finished from the images the manifest lists for
    it: a shard run after the image set changed leaves the other shards' older files, which must not be scored."""
    markers = read_markers(prep_dir)
    layout, nbytes = manifest.layout_id(), manifest.file_nbytes()
    bad, foreign = [], []
    for prep_file in files:
        mine = markers.get(prep_file.name, set())
        if not has_size(prep_dir / prep_file.name, nbytes) or not any(m.startswith(layout + ".") for m in mine):
            bad.append(prep_file.name)
        elif prep_file.inputs and f"{layout}.{prep_file.inputs}" not in mine:
            foreign.append(prep_file.name)
    if bad:
        raise PreprocessError(
            f"prep folder {prep_dir} is incomplete: {len(bad)} of {len(files)} files missing, of the "
            f"wrong size or not finished in this layout (first: {', '.join(bad[:5])}); run preprocess for every "
            "shard into it (or copy it whole, .state/ included)"
        )
    if foreign:
        raise PreprocessError(
            f"prep folder {prep_dir}: {len(foreign)} of {len(files)} files hold other images than its manifest "
            f"lists (first: {', '.join(foreign[:5])}) — a shard was re-run after the image set changed and the "
            "others were not; run preprocess for every shard into it (or use an empty folder)"
        )


def has_size(path: Path, nbytes: int) -> bool:
    try:
        return path.stat().st_size == nbytes
    except FileNotFoundError:
        return False


# --- shards -------------------------------------------------------------------------------------------------------


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ConfigError(f"shard {shard!r} is not a pair (i, n); use e.g. (0, 1) or parse_shard('0/4')") from None
    if not (count >= 1 and 0 <= index < count):
        raise ConfigError(f"shard {index}/{count} is out of range: want i/n with n >= 1 and 0 <= i < n")
    return index, count


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): the second of four contiguous ranges of files."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ConfigError(f"--shard {text!r} is not i/n (e.g. 0/4 = the first of 4 shards)")
    return check_shard((int(match.group(1)), int(match.group(2))))


def shard_range(file_count: int, shard: tuple[int, int]) -> range:
    """Files of shard i of n: the i-th of n contiguous, near-equal ranges."""
    index, count = shard
    return range(index * file_count // count, (index + 1) * file_count // count)
