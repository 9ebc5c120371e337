"""The demo: a generated ImageNet-shaped val set and a small ConvMixer trained on it, so the whole chain runs (and
its accuracy means something) without ImageNet or the 200 MB release.

The images are synthetic textures from ten visually distinct classes, each mapped to a real ImageNet class id, in
the sizes and colour modes real val images come in (landscape/portrait, tiny, extreme aspect ratio, grayscale,
CMYK). The committed demo model scores clearly high but below 100% on the val set, so a label or ordering bug
shows up as a drop to chance (10%).

Regenerate the committed assets with ``convmixer-tasks demo-train``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    sha256_json,
)
from convmixer_tasks.models.variants import DEMO_ASSETS, DEMO_CHECKPOINT, DEMO_EXPECTED, DEMO_VARIANT, INPUT
from convmixer_tasks.stages.dataset import val_name

DEMO_VAL_SEED = 20240601
DEMO_TRAIN_SEED = 7
DEMO_VAL_COUNT = 250  # not a multiple of 4, 8 or 16: the last batch is partial for the usual batch sizes
ASSETS_DIR = DEMO_ASSETS
MARKER_NAME = "demo_dataset.json"  # written last: the folder holds a complete set (parameters + digests)
PENDING_NAME = ".demo_dataset.pending"  # present while files are swapped in: the folder is ours, not yet a set

# (H, W) float64 in [0, 1]: where a pattern shows its second colour. Everything is drawn in float64: numpy's float32
# sin/exp differ in the last bit between CPU instruction sets, enough to flip some pixels' rounding; in float64 no
# pixel lands that close to a rounding edge, so the JPEG bytes are the same on every machine.
Field = np.ndarray


# --- the classes: each draws a texture field on an (H, W) grid -----------------------------------------------------


def _rotated(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates rotated by a random angle about a random offset (u across, v along)."""
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xx -= rng.uniform(0, w)
    yy -= rng.uniform(0, h)
    return xx * np.cos(theta) + yy * np.sin(theta), -xx * np.sin(theta) + yy * np.cos(theta)


def _radius(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance and angle from a random centre near the middle (the centre crop keeps it), plus dy."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = xx - w * rng.uniform(0.3, 0.7)
    dy = yy - h * rng.uniform(0.3, 0.7)
    return np.hypot(dx, dy), np.arctan2(dy, dx), dy


def _soft(wave: np.ndarray, rng: np.random.Generator) -> Field:
    """A sine in [-1, 1] to a field with a random edge sharpness (smooth bands to hard edges)."""
    return 0.5 + 0.5 * np.tanh(wave * rng.uniform(1.0, 6.0))


def stripes(rng, h, w):
    u, _ = _rotated(rng, h, w)
    return _soft(np.sin(2 * np.pi * u / (min(h, w) * rng.uniform(0.05, 0.14))), rng)


def checkerboard(rng, h, w):
    u, v = _rotated(rng, h, w)
    cell = min(h, w) * rng.uniform(0.06, 0.16)
    return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float64)


def rings(rng, h, w):
    r, _, _ = _radius(rng, h, w)
    return _soft(np.sin(2 * np.pi * r / (min(h, w) * rng.uniform(0.05, 0.14))), rng)


def sunburst(rng, h, w):
    _, angle, _ = _radius(rng, h, w)
    return _soft(np.sin(angle * int(rng.integers(6, 16)) + rng.uniform(0, np.pi)), rng)


def dots(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = np.zeros((h, w), bool)
    radius = min(h, w) * rng.uniform(0.02, 0.05)
    for _ in range(int(rng.integers(25, 70))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return inside.astype(np.float64)


def blobs(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w))
    for _ in range(int(rng.integers(2, 5))):
        sigma = min(h, w) * rng.uniform(0.08, 0.22)
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return np.clip(field, 0, 1)


def gradient(rng, h, w):
    u, _ = _rotated(rng, h, w)
    return (u - u.min()) / max(float(np.ptp(u)), 1.0)


def grid(rng, h, w):
    u, v = _rotated(rng, h, w)
    cell = min(h, w) * rng.uniform(0.08, 0.2)
    width = cell * rng.uniform(0.08, 0.2)
    return ((np.mod(u, cell) < width) | (np.mod(v, cell) < width)).astype(np.float64)


def mosaic(rng, h, w):
    block = max(2, int(min(h, w) * rng.uniform(0.04, 0.1)))
    coarse = rng.random((h // block + 1, w // block + 1))
    return np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:h, :w]


def waves(rng, h, w):
    u, v = _rotated(rng, h, w)
    size = min(h, w)
    bend = size * rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * v / (size * rng.uniform(0.15, 0.35)))
    return _soft(np.sin(2 * np.pi * (u + bend) / (size * rng.uniform(0.05, 0.14))), rng)


# Class -> ImageNet class id. The ids are arbitrary but real (spread over 0..999, 65 being val image 1's label).
CLASSES: tuple[tuple[str, Callable[..., Field], int], ...] = (
    ("stripes", stripes, 340),
    ("checkerboard", checkerboard, 918),
    ("rings", rings, 640),
    ("sunburst", sunburst, 65),
    ("dots", dots, 301),
    ("blobs", blobs, 107),
    ("gradient", gradient, 978),
    ("grid", grid, 457),
    ("mosaic", mosaic, 813),
    ("waves", waves, 586),
)
CLASS_IDS = tuple(class_id for _, _, class_id in CLASSES)

# (width, height) and weight: mostly ImageNet's common shapes, plus tiny and extreme aspect ratios.
# fmt: off
SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((500, 375), 0.30), ((375, 500), 0.15), ((500, 333), 0.12), ((333, 500), 0.06), ((300, 300), 0.10),
    ((640, 480), 0.05), ((224, 224), 0.04), ((233, 350), 0.04), ((120, 90), 0.05), ((90, 120), 0.03),
    ((1000, 150), 0.03), ((150, 700), 0.03),
)
# fmt: on
MODES: tuple[tuple[str, float], ...] = (("RGB", 0.86), ("L", 0.08), ("CMYK", 0.06))


def _pick(rng: np.random.Generator, choices: tuple[tuple[object, float], ...]):
    weights = np.array([weight for _, weight in choices])
    return choices[int(rng.choice(len(choices), p=weights / weights.sum()))][0]


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours that differ enough for the pattern to show (colour alone says nothing of the class)."""
    while True:
        first, second = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if np.abs(first - second).mean() > 0.3:
            return first, second


def render_image(seed: int, index: int) -> tuple[Image.Image, int, int]:
    """Image ``index`` (1-based) of the set with ``seed``: (PIL image, ImageNet label, JPEG quality).

    Each image has its own generator seeded from (seed, index), so image N is the same whatever the count.
    """
    rng = np.random.default_rng([seed, index])
    _, draw, label = CLASSES[int(rng.integers(len(CLASSES)))]
    width, height = _pick(rng, SIZES)
    field = draw(rng, height, width)[..., None]
    first, second = _colours(rng)
    pixels = first * (1 - field) + second * field
    # Uneven lighting and sensor noise: the class must be read from the pattern, not from clean pixel values.
    shade, _ = _rotated(rng, height, width)
    pixels *= 1 - rng.uniform(0, 0.35) * (shade - shade.min())[..., None] / max(float(np.ptp(shade)), 1.0)
    pixels += rng.normal(0, rng.uniform(0.02, 0.12), pixels.shape)
    image = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB")
    mode = _pick(rng, MODES)
    if mode != "RGB":
        image = image.convert(mode)
    return image, label, int(rng.choice([75, 90, 95]))


@dataclass(frozen=True)
class DemoDataset:
    root: Path
    image_dir: Path
    label_file: Path
    count: int
    seed: int
    class_ids: tuple[int, ...]


def _images_digest(image_dir: Path, count: int) -> str | None:
    """sha256 over the names and bytes of images 1..count; None unless the folder holds exactly those files.

    Hashing a few MB is far cheaper than rendering and encoding the images again.
    """
    names = [val_name(index) for index in range(1, count + 1)]  # zero-padded: already in sorted order
    try:
        if sorted(os.listdir(image_dir)) != names:
            return None
        return sha256_json([[name, sha256_file(image_dir / name)] for name in names])
    except OSError:
        return None


def _marker_record(root: Path, count: int, seed: int) -> dict:
    """What the marker says of a complete set: its parameters and the digests of its images and labels."""
    label_file = root / "val_label.txt"
    return {
        "count": count,
        "seed": seed,
        "class_ids": list(CLASS_IDS),
        "images_sha256": _images_digest(root / "images", count),
        "labels_sha256": sha256_file(label_file) if label_file.is_file() else None,
    }


def _is_complete(root: Path, count: int, seed: int) -> bool:
    try:
        recorded = read_json(root / MARKER_NAME)
    except (OSError, ValueError):
        return False
    return recorded == _marker_record(root, count, seed)


def make_demo_dataset(
    out_dir: str | os.PathLike, count: int = DEMO_VAL_COUNT, seed: int = DEMO_VAL_SEED
) -> DemoDataset:
    """Write ``out_dir/images/ILSVRC2012_val_XXXXXXXX.JPEG`` and ``out_dir/val_label.txt``; same bytes every run.

    A complete set of the same count and seed is left untouched (rewriting it would change the dataset fingerprint,
    which keys the prep cache). Otherwise the images are written to a temporary folder and swapped in whole, so an
    interrupted run leaves the previous set (or none), never a mix, and the next run finishes the job. A folder that
    already holds images but is not a demo set is refused.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"demo dataset count must be a positive number of images, got {count!r}; pass --count N >= 1")
    root = Path(out_dir)
    image_dir, label_file = root / "images", root / "val_label.txt"
    dataset = DemoDataset(
        root=root, image_dir=image_dir, label_file=label_file, count=count, seed=seed, class_ids=CLASS_IDS
    )
    if root.exists() and not root.is_dir():
        raise ConfigError(f"demo dataset output {root} is a file; pass a new or empty folder as --output")
    if root.is_dir():
        _clear_stale_temporaries(root)
    if _is_complete(root, count, seed):
        (root / PENDING_NAME).unlink(missing_ok=True)  # left by a run killed after its marker was written
        return dataset
    ours = (root / MARKER_NAME).is_file() or (root / PENDING_NAME).is_file()
    if image_dir.exists() and not ours and (not image_dir.is_dir() or any(image_dir.iterdir())):
        raise ConfigError(
            f"{image_dir} already holds files and is not a generated demo set; pass an empty or new --output folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".images.", dir=root))
    try:
        lines = []
        for index in range(1, count + 1):
            image, label, quality = render_image(seed, index)
            image.save(staging / val_name(index), "JPEG", quality=quality)
            lines.append(f"{val_name(index)} {label}\n")
        # From here until the marker is written, images and labels may disagree: the folder is ours (the pending
        # file says so, so a killed run does not get its own folder refused) but not a set (no marker).
        (root / PENDING_NAME).touch()
        (root / MARKER_NAME).unlink(missing_ok=True)
        if image_dir.exists():
            shutil.rmtree(image_dir)
        staging.rename(image_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    atomic_write_bytes(label_file, "".join(lines).encode())
    atomic_write_json(root / MARKER_NAME, _marker_record(root, count, seed))
    (root / PENDING_NAME).unlink()
    return dataset


def _clear_stale_temporaries(root: Path) -> None:
    """Remove what a killed run left in ``root``: its ``.images.*`` staging folder and the hidden ``.tmp`` files
    of its atomic writes (nothing reads them, but they pile up)."""
    temporaries = []
    for entry in root.iterdir():
        if entry.name.startswith(".images.") and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(".") and entry.name.endswith(".tmp") and entry.is_file():
            temporaries.append(entry)
    remove_stale_temporaries(temporaries)  # a live writer's (it holds the lock) stays


# --- the demo model ----------------------------------------------------------------------------------------------

DEMO_CHECKPOINT_NAME = DEMO_CHECKPOINT.name
DEMO_EXPECTED_NAME = DEMO_EXPECTED.name


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the committed demo model; recorded in demo_model.json."""

    train_count: int = 2000
    train_seed: int = DEMO_TRAIN_SEED
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    torch_seed: int = 0
    threads: int = 2


def demo_checkpoint_path() -> Path:
    """The committed demo checkpoint (released key layout, wrapped as ``{'state_dict': …}``)."""
    return ASSETS_DIR / DEMO_CHECKPOINT_NAME


def demo_expected() -> dict:
    """demo_model.json: the variant, the val set's generation params and the expected top-1/top-5 on it."""
    return read_json(ASSETS_DIR / DEMO_EXPECTED_NAME)


def load_crops(dataset: DemoDataset) -> tuple[np.ndarray, np.ndarray]:
    """(N, 224, 224, 3) uint8 reference crops (pre-normalisation) and (N,) labels, in index order.

    Kept as uint8 so a few thousand images fit in memory; ``transforms.normalize`` of a crop is bit-identical to
    ``transforms.transform_float32`` of its file, so training sees exactly what evaluation feeds the model.
    """
    from convmixer_tasks.stages.dataset import read_labels
    from convmixer_tasks.stages.transforms import transform_uint8

    labels = read_labels(dataset.label_file)
    crops = np.stack([transform_uint8(dataset.image_dir / val_name(i)) for i in range(1, dataset.count + 1)])
    return crops, np.array([labels[i] for i in range(1, dataset.count + 1)], dtype=np.int64)


def _normalized_batch(crops: np.ndarray):
    import torch

    from convmixer_tasks.stages.transforms import normalize

    return torch.from_numpy(np.stack([normalize(crop) for crop in crops]))


def _train(crops: np.ndarray, labels: np.ndarray, settings: TrainSettings, log: Callable[[str], None]):
    """Seeded AdamW + one-cycle schedule on random horizontal/vertical flips of the crops."""
    import torch
    from torch import nn

    from convmixer_tasks.models.builders.convmixer import build_model

    torch.manual_seed(settings.torch_seed)
    generator = torch.Generator().manual_seed(settings.torch_seed)
    model = build_model(DEMO_VARIANT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps_per_epoch = -(-len(crops) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    targets = torch.from_numpy(labels)
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(len(crops), generator=generator).numpy()
        flips = torch.randint(0, 4, (len(crops),), generator=generator).numpy()
        total_loss = correct = 0.0
        for start in range(0, len(crops), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            batch = [crops[r][:, ::-1] if flips[r] & 1 else crops[r] for r in rows]
            batch = [crop[::-1] if flips[r] & 2 else crop for crop, r in zip(batch, rows, strict=False)]
            images = _normalized_batch(np.ascontiguousarray(batch))
            logits = model(images)
            loss = loss_fn(logits, targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(rows)
            correct += (logits.argmax(1) == targets[rows]).sum().item()
        log(
            f"epoch {epoch + 1}/{settings.epochs}: loss {total_loss / len(crops):.3f}, "
            f"train top-1 {correct / len(crops):.1%}"
        )
    return model.eval()


def score_onnx(onnx_path: str | os.PathLike, dataset: DemoDataset) -> dict[str, float]:
    """Top-1/top-5 of an ONNX model on a demo set: reference transform per image, ONNX Runtime, evaluate's ranking.

    Deliberately independent of prep files and backends: it is the yardstick the full pipeline must reproduce.
    """
    import onnxruntime as ort

    from convmixer_tasks.stages.dataset import read_labels
    from convmixer_tasks.stages.evaluate import label_ranks
    from convmixer_tasks.stages.transforms import transform_float32

    labels = read_labels(dataset.label_file)
    indices = sorted(labels)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = []
    for start in range(0, len(indices), 16):
        images = np.stack([transform_float32(dataset.image_dir / val_name(i)) for i in indices[start : start + 16]])
        logits.append(session.run([INPUT.output_name], {INPUT.input_name: images})[0])
    ranks = label_ranks(np.concatenate(logits), np.array([labels[i] for i in indices]))
    # Percent, computed as evaluate does, so the pipeline can be held to these numbers exactly.
    return {
        "top1": 100.0 * int(np.sum(ranks == 0)) / len(indices),
        "top5": 100.0 * int(np.sum(ranks < 5)) / len(indices),
        "image_count": len(indices),
    }


def train_demo_model(
    out_dir: str | os.PathLike = ASSETS_DIR,
    settings: TrainSettings = TrainSettings(),
    val_count: int = DEMO_VAL_COUNT,
    val_seed: int = DEMO_VAL_SEED,
    log: Callable[[str], None] = print,
) -> dict:
    """Train ``convmixer_demo`` on a generated train split, save it in the released key layout, and record its
    top-1/top-5 on the demo val set as the ONNX path computes them. Returns the demo_model.json content.
    """
    import torch

    from convmixer_tasks.stages.export import export_and_validate

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="convmixer-demo-") as tmp:
            work = Path(tmp)
            train_set = make_demo_dataset(work / "train", settings.train_count, settings.train_seed)
            crops, labels = load_crops(train_set)
            log(f"train set: {len(crops)} images in {time.perf_counter() - started:.0f}s")
            model = _train(crops, labels, settings, log)
            train_seconds = time.perf_counter() - started
            trained = work / DEMO_CHECKPOINT_NAME
            torch.save({"state_dict": model.state_dict()}, trained)
            val_set = make_demo_dataset(work / "val", val_count, val_seed)
            export = export_and_validate(trained, work / "demo.onnx", variant=DEMO_VARIANT)
            scores = score_onnx(export.onnx_path, val_set)
            # Only a scored checkpoint replaces the committed one, and its expectations follow right after.
            checkpoint = atomic_write_bytes(out_dir / DEMO_CHECKPOINT_NAME, trained.read_bytes())
    finally:
        torch.set_num_threads(threads)
    expected = {
        "variant": DEMO_VARIANT,
        "checkpoint": DEMO_CHECKPOINT_NAME,
        "checkpoint_sha256": sha256_file(checkpoint),
        "dataset": {"count": val_count, "seed": val_seed},
        "class_ids": {name: class_id for name, _, class_id in CLASSES},
        # Percent, like EvalResult; the gate takes expected_top1 as the demo model's baseline.
        "expected_top1": scores["top1"],
        "expected_top5": scores["top5"],
        "expected_image_count": scores["image_count"],
        "measured_with": {
            "onnx_opset": export.opset,
            "parity_max_abs_diff": export.parity.max_abs_diff,
            "pillow": Image.__version__,
            "numpy": np.__version__,
        },
        "train": {**settings.__dict__, "wall_seconds": round(train_seconds, 1)},  # data generation included
    }
    atomic_write_json(out_dir / DEMO_EXPECTED_NAME, expected)
    for asset in (checkpoint, out_dir / DEMO_EXPECTED_NAME):
        asset.chmod(0o644)  # committed files: readable by whoever runs the demo, as git would check them out
    log(f"demo val: top-1 {scores['top1']:.2f}%, top-5 {scores['top5']:.2f}% on {scores['image_count']} images")
    return expected
