"""Benchmark: evaluate.evaluate over BIN outputs vs a reference-style eval loop over TXT outputs (ModelZoo approach).

Synthesises ImageNet-val-sized outputs in a temp dir (default 50,000 images, batch 16 → 3,125 files of 16×1000
float32 logits) with a label file and a prep manifest. Each row holds 1000 distinct logits on a 0.01 grid, so
writing them as TXT with '%f' (as ais_bench does) loses no order and has no ties: both evaluators must report the
same top-1/top-5, and both must equal the accuracies the data was built with.

Run: .venv/bin/python bench/bench_eval.py [--images 50000] [--batch-size 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convmixer_tasks.fileio import atomic_write_json
from convmixer_tasks.stages.evaluate import evaluate
from convmixer_tasks.stages.prepfolder import MANIFEST_NAME, PrepFile, PrepManifest, file_name, input_shape

NUM_CLASSES = 1000
TARGET_SECONDS = 2.0
TARGET_RATIO = 40.0


def synthesize(images: int, batch_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits (files*bs, C) float32, labels (images,), label ranks (images,)); padded rows peak at class 0."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=images)
    # Label rank: ~80% top-1, ~15% ranks 1-4, the rest anywhere below — an ImageNet-like accuracy profile.
    draw = rng.random(images)
    near_miss, far_miss = rng.integers(1, 5, images), rng.integers(5, NUM_CLASSES, images)
    ranks = np.where(draw < 0.80, 0, np.where(draw < 0.95, near_miss, far_miss))
    values = rng.permuted(np.tile(np.arange(NUM_CLASSES, dtype=np.int16), (images, 1)), axis=1)
    wanted = (NUM_CLASSES - 1 - ranks).astype(np.int16)
    holder = np.argmax(values == wanted[:, None], axis=1)  # the class holding the wanted value swaps with the label
    rows = np.arange(images)
    values[rows, holder] = values[rows, labels]
    values[rows, labels] = wanted
    files = -(-images // batch_size)
    logits = np.zeros((files * batch_size, NUM_CLASSES), dtype=np.float32)
    logits[:images] = values.astype(np.float32) * np.float32(0.01) - np.float32(5.0)
    logits[images:, 0] = 1.0  # padded slots: zero-image outputs the evaluators must ignore
    return logits, labels, ranks


def write_dataset(root: Path, logits: np.ndarray, labels: np.ndarray, batch_size: int) -> dict[str, Path]:
    images = labels.size
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, images + 1)]
    label_file = root / "val_label.txt"
    label_file.write_text("".join(f"{name} {label}\n" for name, label in zip(names, labels.tolist(), strict=True)))
    prep = root / "prep"
    files = len(logits) // batch_size
    prep_files = [
        PrepFile(
            name=file_name(n),
            images=names[n * batch_size : (n + 1) * batch_size],
            padded_slots=max(0, (n + 1) * batch_size - images),
        )
        for n in range(files)
    ]
    manifest = PrepManifest(
        batch_size=batch_size,
        dtype="float32",
        input_shape=input_shape(batch_size, "float32"),
        dataset_fingerprint="bench",
        transform={},
        files=prep_files,
        image_count=images,
    )
    atomic_write_json(prep / MANIFEST_NAME, manifest)  # only the manifest: evaluation reads no input files
    bin_dir, txt_dir = root / "out_bin", root / "out_txt"
    bin_dir.mkdir()
    txt_dir.mkdir()
    for n in range(files):
        block = logits[n * batch_size : (n + 1) * batch_size]
        block.tofile(bin_dir / f"input_{n:05d}_0.bin")
        # ais_bench TXT: one row per line, '%f', space-separated with a trailing space
        np.savetxt(txt_dir / f"input_{n:05d}_0.txt", block, fmt="%f", delimiter=" ", newline=" \n")
    return {"labels": label_file, "prep": prep, "bin": bin_dir, "txt": txt_dir}


# --- the baseline: how the ModelZoo convmixer_eval_acc.py scores TXT outputs (name arithmetic, per-row argsort) ---


def reference_style_eval(folder: Path, label_file: Path, batch_size: int, topn: int = 5) -> tuple[float, float, int]:
    """Per file, per row: re-open the file and walk to line i, float32() every value, argsort, scan the top n.

    Faithful to the reference's structure and cost; its bugs are left out (``convert_index`` is a bool there, and
    it counts a padded slot) — the data here has no partial batch, so that changes nothing measured.
    """
    gt = {}
    with open(label_file) as handle:
        for line in handle:
            name, label = line.strip().split(" ")
            gt[name.split(".")[0]] = label
    image_count = len(gt)
    count = 0
    hits = np.zeros(topn)
    for output_file in os.listdir(folder):
        for i in range(batch_size):
            stem = output_file.split(".")[0]
            start = stem.find("_") + 1
            index = int(stem[start : start + 5]) * batch_size + i + 1
            if index > image_count:
                break
            count += 1
            with open(folder / output_file) as handle:
                for row, text in enumerate(handle):
                    if row == i:
                        data = text
            values = data.strip().split(" ")
            prediction = np.zeros(len(values), dtype=np.float32)
            for k, value in enumerate(values):
                prediction[k] = np.float32(value)
            order = np.argsort(-prediction)
            truth = int(gt[f"ILSVRC2012_val_{index:08d}"])
            for k in range(min(len(order), topn)):
                if str(truth) == str(order[k]):
                    hits[k] += 1
                    break
    accuracy = np.cumsum(hits) / count * 100
    return float(accuracy[0]), float(accuracy[topn - 1]), count


def timed(function, repeat: int):
    """(best seconds, last result) over ``repeat`` runs."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="runs of our evaluator (best is reported)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        logits, labels, ranks = synthesize(args.images, args.batch_size)
        paths = write_dataset(root, logits, labels, args.batch_size)
        files = len(logits) // args.batch_size
        print(
            f"synthesised {args.images} images, {files} files of {args.batch_size}x{NUM_CLASSES} "
            f"(BIN + TXT) in {time.perf_counter() - start:.1f} s"
        )
        truth = (100 * float(np.mean(ranks < 1)), 100 * float(np.mean(ranks < 5)))

        ours_bin_s, ours = timed(
            lambda: evaluate(paths["bin"], paths["labels"], prep_dir=paths["prep"], result_json=root / "result.json"),
            args.repeat,
        )
        ours_names_s, ours_names = timed(
            lambda: evaluate(paths["bin"], paths["labels"], batch_size=args.batch_size), args.repeat
        )
        ours_txt_s, ours_txt = timed(lambda: evaluate(paths["txt"], paths["labels"], prep_dir=paths["prep"]), 1)
        base_s, base = timed(lambda: reference_style_eval(paths["txt"], paths["labels"], args.batch_size), 1)

    rows = [
        ("reference-style loop, TXT (baseline)", base_s, base[0], base[1], base[2]),
        ("evaluate(), BIN, manifest", ours_bin_s, ours.top1, ours.top5, ours.image_count),
        ("evaluate(), BIN, name arithmetic", ours_names_s, ours_names.top1, ours_names.top5, ours_names.image_count),
        ("evaluate(), TXT, manifest", ours_txt_s, ours_txt.top1, ours_txt.top5, ours_txt.image_count),
    ]
    print(f"{'evaluator':40s} {'seconds':>8s} {'x base':>8s} {'top1 %':>9s} {'top5 %':>9s} {'images':>7s}")
    for name, seconds, top1, top5, count in rows:
        print(f"{name:40s} {seconds:8.3f} {base_s / seconds:8.1f} {top1:9.4f} {top5:9.4f} {count:7d}")
    print(f"{'built with':40s} {'':8s} {'':8s} {truth[0]:9.4f} {truth[1]:9.4f} {args.images:7d}")

    agree = all(
        count == args.images and abs(top1 - truth[0]) < 1e-9 and abs(top5 - truth[1]) < 1e-9
        for _, _, top1, top5, count in rows
    )
    ratio = base_s / ours_bin_s
    print(f"top-1/top-5 agree across evaluators and with the construction: {'yes' if agree else 'NO'}")
    fast_enough, ratio_met = ours_bin_s < TARGET_SECONDS, ratio >= TARGET_RATIO
    print(
        f"ours (BIN) {ours_bin_s:.3f} s (target < {TARGET_SECONDS} s: {'met' if fast_enough else 'MISSED'}); "
        f"{ratio:.1f}x the TXT loop (target >= {TARGET_RATIO:.0f}x: {'met' if ratio_met else 'MISSED'})"
    )
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
