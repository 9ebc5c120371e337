"""ONNX Runtime backend vs PyTorch eager on ConvMixer-1536/20 (random weights), against this CPU's measured roofline.

    python bench/bench_backends.py [--batch-size 4] [--loop 3] [--warmup 2] [--rounds 3] [--work-dir DIR]

Baseline: PyTorch eager (torch.inference_mode, same thread count) on the same model and batch size. Ours: the
ORT backend's compiled fixed-batch artifact through ``OnnxRuntimeBackend.benchmark`` (compute time only, warm-up
excluded, throughput = 1000 × batch / mean ms like ais_bench). Both sides run ``--rounds`` times, alternating, and
the best round of each is reported, because the 2 cores are shared with other work.
Roofline: the model's FLOPs counted from its Conv/Linear layers ÷ the fp32 peak measured with a large torch.mm.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convmixer_tasks.backends.base import get_backend
from convmixer_tasks.backends.onnxruntime import random_batch, worker_threads
from convmixer_tasks.models.checkpoints import build_model
from convmixer_tasks.stages.export import export_and_validate, image_shape, prepare_model


def model_flops(variant: str) -> float:
    """FLOPs of one image (2 per multiply-add) of the Conv2d and Linear layers, from shapes on the meta device."""
    total = 0.0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            macs_per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2.0 * output.numel() * macs_per_out
        elif isinstance(module, nn.Linear):
            total += 2.0 * output.numel() * module.in_features

    with torch.device("meta"):
        model = build_model(variant)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(count)
    model(torch.empty((1, *image_shape(variant)), device="meta"))
    return total


def peak_gflops(size: int = 3072, reps: int = 4) -> float:
    """Best-of fp32 GEMM rate with the current torch thread count: the practical FMA peak of these cores."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up (thread pool, page faults)
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9


def bench_torch(model: nn.Module, batch: torch.Tensor, loop: int, warmup: int) -> float:
    """Images/s of PyTorch eager from the mean of ``loop`` timed forwards (same formula as ais_bench)."""
    samples = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(batch)
        for _ in range(loop):
            started = time.perf_counter()
            model(batch)
            samples.append((time.perf_counter() - started) * 1000.0)
    return 1000.0 * batch.shape[0] / statistics.fmean(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="convmixer_1536_20")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--loop", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keeps model.onnx and the ORT cache between runs (default: a new temp folder)",
    )
    args = parser.parse_args()

    threads = worker_threads()
    torch.set_num_threads(threads)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_backends_"))
    work_dir.mkdir(parents=True, exist_ok=True)

    flops = model_flops(args.variant)
    print(
        f"threads {threads}; load average {os.getloadavg()[0]:.1f}; model {args.variant}: "
        f"{flops / 1e9:.1f} GFLOP/image (Conv+Linear, 2/MAC)"
    )

    onnx_path = work_dir / f"{args.variant}.onnx"
    if not onnx_path.is_file():
        started = time.perf_counter()
        export = export_and_validate(None, onnx_path, variant=args.variant, parity_batch=1)
        print(
            f"exported {onnx_path} (opset {export.opset}, parity max|d| {export.parity.max_abs_diff:.2e}) "
            f"in {time.perf_counter() - started:.0f} s"
        )

    backend = get_backend("onnxruntime")
    started = time.perf_counter()
    artifact = backend.compile(onnx_path, args.batch_size, work_dir / "cache")
    print(
        f"{backend.describe()}; compiled {artifact.path.name} (cached={artifact.cached}) "
        f"in {time.perf_counter() - started:.1f} s"
    )

    model = prepare_model(None, args.variant)  # the same seeded weights the ONNX was exported from
    batch = torch.from_numpy(random_batch("float32", artifact.input_shape))
    torch_runs, ort_runs, peaks = [], [], []
    for round_index in range(args.rounds):
        peaks.append(peak_gflops())  # every round: a busy machine shows up as a low peak
        torch_runs.append(bench_torch(model, batch, args.loop, args.warmup))
        result = backend.benchmark(artifact, loop=args.loop, warmup=args.warmup)
        ort_runs.append(result.throughput)
        print(
            f"round {round_index + 1}: GEMM peak {peaks[-1]:.0f} GFLOP/s | "
            f"pytorch eager {torch_runs[-1]:.3f} img/s | onnxruntime {result.throughput:.3f} img/s "
            f"(mean {result.latency_mean_ms:.0f} ms, p99 {result.latency_p99_ms:.0f} ms per batch)"
        )

    best_torch, best_ort, peak = max(torch_runs), max(ort_runs), max(peaks)
    roofline = peak * 1e9 / flops
    print(
        f"\nbatch {args.batch_size}, best of {args.rounds} rounds x {args.loop} loops, formula {result.formula}; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"measured fp32 GEMM peak {peak:.0f} GFLOP/s -> roofline {roofline:.2f} img/s")
    print(f"{'':22}{'img/s':>8}{'% roofline':>12}")
    print(f"{'pytorch eager':22}{best_torch:8.3f}{100 * best_torch / roofline:11.1f}%")
    print(f"{'onnxruntime (ours)':22}{best_ort:8.3f}{100 * best_ort / roofline:11.1f}%")
    per_round = sorted(o / t for o, t in zip(ort_runs, torch_runs, strict=True))
    print(
        f"speed-up ORT / PyTorch eager: {best_ort / best_torch:.2f}x (best vs best); "
        f"per round {', '.join(f'{r:.2f}x' for r in per_round)}"
    )


if __name__ == "__main__":
    main()
