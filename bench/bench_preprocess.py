"""Preprocess throughput and memory: ours (workers, LUT normalisation, preallocated batch buffer) vs the reference.

    python bench/bench_preprocess.py                 # 1000 generated JPEGs; RSS check at 1k and 10k images
    python bench/bench_preprocess.py --no-rss-10k    # skip the 10k-image RSS run

Baseline: the ModelZoo reference done literally and serially in this process (tests/reference_transform.py: PIL
open/convert/resize/crop, a torch tensor, ToTensor/Normalize arithmetic, per-image np.concatenate batching, tofile),
torch on one thread (serial; on a busy 2-core machine torch's second thread makes it ~8x slower, a straw man).
Ours runs in a fresh process that imports only preprocess, as the CLI and an Airflow task run it. Every output is
compared byte for byte with the baseline's. Peak RSS is that process's (and its largest worker's), at 1k and 10k
images: flat means streaming.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from convmixer_tasks.fileio import sha256_file  # noqa: E402
from tests.reference_transform import reference_pixels, reference_preprocess  # noqa: E402

# ImageNet val is mostly 500 px on the long side; a few odd ones for variety.
SIZES = [(500, 375)] * 6 + [(375, 500)] * 2 + [(500, 333), (333, 500), (500, 500), (640, 480), (400, 300), (800, 600)]


def generate(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Photo-like JPEGs (smooth field + grain, quality 90): decode cost close to real ImageNet files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(1, count + 1):
        width, height = SIZES[rng.integers(len(SIZES))]
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels)
        if index % 50 == 0:
            img = img.convert("L")  # ImageNet val has some grayscale JPEGs
        path = folder / f"ILSVRC2012_val_{index:08d}.JPEG"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def digests(folder: Path, names: list[str]) -> list[str]:
    """Hashes of a run's files, then the files go: the next run starts from the same page-cache state as this one
    (on this VM, filling never-used memory with page cache costs ~1 ms per 600 KB, which would bias the later run)."""
    hashes = [sha256_file(folder / name) for name in names]
    shutil.rmtree(folder)
    return hashes


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of its children, workers included) spent in ``run()``."""

    def cpu() -> float:
        return sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )

    cpu_start, wall_start = cpu(), time.perf_counter()
    run()
    return time.perf_counter() - wall_start, cpu() - cpu_start


def run_reference(paths: list[Path], out: Path, batch_size: int) -> tuple[float, float, list[str]]:
    """(img/s, CPU ms per image, file names) of the serial reference."""
    shutil.rmtree(out, ignore_errors=True)
    names: list[str] = []
    wall, cpu = timed(lambda: names.extend(reference_preprocess([str(p) for p in paths], out, batch_size)))
    return len(paths) / wall, cpu * 1e3 / len(paths), names


# Ours runs as users run it (CLI, Airflow task): in a fresh process that imports only preprocess. Forked workers of
# a parent holding torch pay ~10% more CPU per image (copy-on-write of its pages); the reference keeps torch here.
OURS_CODE = """
import json, re, resource, sys, time
from convmixer_tasks.stages.preprocess import preprocess

def cpu():
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))

images, out, batch_size, dtype, workers = sys.argv[1:]
cpu_start, wall_start = cpu(), time.perf_counter()
result = preprocess(images, out, int(batch_size), dtype=dtype, workers=int(workers))
wall, cpu_s = time.perf_counter() - wall_start, cpu() - cpu_start
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))  # ru_maxrss survives exec
print(json.dumps({"images": result.image_count, "wall": wall, "cpu": cpu_s, "main_mb": hwm / 1024,
                  "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_ours_process(images: Path, out: Path, batch_size: int, dtype: str, workers: int) -> dict[str, float]:
    """preprocess() in a fresh process: images, wall s, CPU s (workers included), peak RSS of main and a worker."""
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", OURS_CODE, str(images), str(out), str(batch_size), dtype, str(workers)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_ours(images: Path, out: Path, batch_size: int, dtype: str, workers: int) -> tuple[float, float]:
    """(img/s, CPU ms per image) of preprocess()."""
    run = run_ours_process(images, out, batch_size, dtype, workers)
    return run["images"] / run["wall"], run["cpu"] * 1e3 / run["images"]


def peak_rss_mb(images: Path, out: Path, workers: int) -> dict[str, float]:
    """Peak RSS of a process running preprocess (float32, batch 16) and of its largest worker."""
    run = run_ours_process(images, out, 16, "float32", workers)
    shutil.rmtree(out, ignore_errors=True)
    return {"main": run["main_mb"], "worker": run["worker_mb"]}


def _spin(_: int) -> int:
    total = 0
    for i in range(2_000_000):
        total += i
    return total


def parallel_capacity(workers: int) -> float:
    """Cores this machine gives us right now: the same pure-CPU tasks in ``workers`` processes vs in 1."""
    timings = []
    for processes in (1, workers):
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_spin, range(2 * workers))
        timings.append(time.perf_counter() - start)
    return timings[0] / timings[1]


def link_dataset(source: list[Path], folder: Path, count: int) -> None:
    """``count`` val names hard-linked onto the generated files: a big dataset without the disk or the wait."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(1, count + 1):
        os.link(source[(index - 1) % len(source)], folder / f"ILSVRC2012_val_{index:08d}.JPEG")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per case (best one kept)")
    parser.add_argument("--rss-images", type=int, default=10_000, help="size of the large RSS run")
    parser.add_argument("--no-rss-10k", action="store_true", help="skip the large RSS run")
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        paths = generate(root / "images", args.images)
        print(f"generated {len(paths)} JPEGs in {time.perf_counter() - started:.1f}s")

        capacity = parallel_capacity(args.workers)
        print(f"parallel capacity now: {capacity:.2f}x with {args.workers} processes (2.0 = two idle cores)")
        rates: dict[str, float] = {}  # best img/s
        cpu_ms: dict[str, float] = {}  # least CPU ms per image (this process + workers): what load cannot inflate much
        identical: dict[str, bool] = {}

        def keep(table: dict, key: str, value, combine) -> None:
            table[key] = combine(table[key], value) if key in table else value

        ref_dir, ours_dir = root / "ref", root / "ours"  # reused: each run starts by deleting the last one's files
        for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
            for bs in (1, 16):
                rate, cpu, names = run_reference(paths, ref_dir, bs)
                keep(rates, f"reference bs{bs}", rate, max)
                keep(cpu_ms, f"reference bs{bs}", cpu, min)
                expected = digests(ref_dir, names)
                rate, cpu = run_ours(root / "images", ours_dir, bs, "float32", args.workers)
                keep(rates, f"ours bs{bs} float32 w{args.workers}", rate, max)
                keep(cpu_ms, f"ours bs{bs} float32 w{args.workers}", cpu, min)
                keep(identical, f"float32 bs{bs}", digests(ours_dir, names) == expected, min)
            rate, cpu = run_ours(root / "images", ours_dir, 16, "uint8", args.workers)
            keep(rates, f"ours bs16 uint8 w{args.workers}", rate, max)
            keep(cpu_ms, f"ours bs16 uint8 w{args.workers}", cpu, min)
            sample = min(len(paths), 64)
            ours_u8 = np.concatenate(
                [np.fromfile(ours_dir / f"input_{k:05d}.bin", dtype=np.uint8) for k in range((sample + 15) // 16)]
            ).reshape(-1, 224, 224, 3)
            keep(
                identical,
                f"uint8 (first {sample} images)",
                all(np.array_equal(ours_u8[i], reference_pixels(paths[i])) for i in range(sample)),
                min,
            )
            shutil.rmtree(ours_dir)

        pairs = {  # ours, reference, target
            "bs1 float32 vs reference bs1": (f"ours bs1 float32 w{args.workers}", "reference bs1", 1.8),
            "bs16 float32 vs reference bs16": (f"ours bs16 float32 w{args.workers}", "reference bs16", 2.5),
            "bs16 uint8 vs reference bs16": (f"ours bs16 uint8 w{args.workers}", "reference bs16", 2.2),
        }
        for name, rate in rates.items():
            print(f"{name:28s} {rate:8.1f} img/s  {cpu_ms[name]:5.2f} CPU-ms/img")
        for name, (ours, ref, target) in pairs.items():
            ratio, cpu_ratio = rates[ours] / rates[ref], cpu_ms[ref] / cpu_ms[ours]
            print(
                f"{name:32s} {ratio:5.2f}x  (target >= {target}x: {'ok' if ratio >= target else 'MISSED'}); "
                f"CPU/img reference:ours {cpu_ratio:4.2f}, "
                f"i.e. ~{cpu_ratio * args.workers:4.2f}x on {args.workers} idle cores"
            )
        for name, same in identical.items():
            print(f"bit-identical {name}: {same}")

        rss = {args.images: peak_rss_mb(root / "images", root / "rss_small", args.workers)}
        if not args.no_rss_10k:
            link_dataset(paths, root / "images_large", args.rss_images)
            rss[args.rss_images] = peak_rss_mb(root / "images_large", root / "rss_large", args.workers)
        for count, peaks in rss.items():
            print(
                f"peak RSS at {count:6d} images: main {peaks['main']:.0f} MB, largest worker {peaks['worker']:.0f} MB"
            )
        flat = True
        if len(rss) == 2:
            # Pixels must not accumulate: one float32 image is 588 KiB. Names/paths/manifest entries are O(N) metadata
            # in the main process (~1-2 KiB per image), which workers inherit through fork.
            (small_n, small), (large_n, large) = rss.items()
            per_image_kb = {k: (large[k] - small[k]) * 1024 / (large_n - small_n) for k in ("main", "worker")}
            flat = all(v < 4 for v in per_image_kb.values())
            print(
                f"RSS growth per extra image: main {per_image_kb['main']:.2f} KiB, worker "
                f"{per_image_kb['worker']:.2f} KiB (flat = under 4 KiB, vs 588 KiB of output per image): {flat}"
            )
        print(f"total {time.perf_counter() - started:.0f}s")
    return 0 if all(identical.values()) and flat else 1


if __name__ == "__main__":
    sys.exit(main())
