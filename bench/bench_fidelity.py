"""Benchmark: what the fidelity check costs on ConvMixer-1536/20 (random weights) with ONNX Runtime on this CPU.

The check runs the source ONNX in fp32 over a fixed subset of the images (``fidelity.reference_logits``) and compares
its logits with the artifact's. Claim: that costs one CPU pass of those images, and nothing on the next run of the
same ONNX (the logits are cached by ONNX hash + images + transform).

Baseline, measured in the same run on the same images: the evaluation's own pass over them — ``preprocess`` into a
prep folder, then the ONNX Runtime backend's ``infer`` on its fixed-batch artifact (compile time excluded: it is
cached across runs too). Ours: ``reference_logits`` on a cold cache (a miss), then again from a fresh cache object
on the same folder (what the next run sees), plus the metrics on the logits. Ratios are to the baseline.

Run: .venv/bin/python bench/bench_fidelity.py [--images 256] [--batch-size 16] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convmixer_tasks.backends.base import get_backend
from convmixer_tasks.cache import ContentCache
from convmixer_tasks.evidence.fidelity import check_thresholds, fidelity_metrics, reference_logits, summarise
from convmixer_tasks.fileio import sha256_file
from convmixer_tasks.measure import fingerprint, quiet
from convmixer_tasks.run.demo import make_demo_dataset
from convmixer_tasks.stages.dataset import load_dataset
from convmixer_tasks.stages.evaluate import evaluate_with_evidence
from convmixer_tasks.stages.export import export_and_validate
from convmixer_tasks.stages.preprocess import preprocess


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="the fidelity subset size (the param's default)")
    parser.add_argument("--batch-size", type=int, default=16, help="the baseline's batch (the reference uses 16)")
    parser.add_argument("--variant", default="convmixer_1536_20")
    parser.add_argument("--work-dir", default=None, help="keeps the ONNX between runs (default: a new temp folder)")
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_fidelity_"))
    onnx_path = work / f"{args.variant}.onnx"
    if not onnx_path.is_file():
        seconds, _ = timed(lambda: export_and_validate(None, onnx_path, variant=args.variant, parity_batch=1))
        print(f"exported {onnx_path} in {seconds:.0f} s")
    onnx_sha256 = sha256_file(onnx_path)
    demo = work / f"images{args.images}"
    make_demo_dataset(demo, count=args.images)
    images = load_dataset(demo / "images", demo / "val_label.txt").images
    label_file = demo / "val_label.txt"

    backend = get_backend("onnxruntime")
    artifact = backend.compile(onnx_path, args.batch_size, work / "cache")  # cached across runs: not timed
    print(f"cpu: {fingerprint.cpu_model()}, {os.cpu_count()} cores; load before {quiet.load_average()}")

    prep_dir, out_dir = work / f"prep{args.images}", work / f"outputs{args.images}"

    def baseline_pass():
        prep = preprocess(demo / "images", prep_dir, args.batch_size, label_file=label_file)
        return backend.infer(artifact, prep.out_dir, out_dir / "run")

    for folder in (prep_dir, out_dir):  # a cold pass: no prep files to skip
        if folder.exists():
            shutil.rmtree(folder)
    t_base, outputs = timed(baseline_pass)
    cache_dir = work / "reference-cache"
    if cache_dir.exists():
        shutil.rmtree(cache_dir)
    paths, indices = [image.path for image in images], [image.index for image in images]
    t_miss, (reference, cached_first) = timed(
        lambda: reference_logits(onnx_path, onnx_sha256, paths, indices, ContentCache(cache_dir))
    )
    t_hit, (again, cached_again) = timed(
        lambda: reference_logits(onnx_path, onnx_sha256, paths, indices, ContentCache(cache_dir))
    )
    assert not cached_first and cached_again and (again == reference).all()
    scored = evaluate_with_evidence(outputs.output_dir, label_file, prep_dir=prep_dir)
    t_metrics, metrics = timed(lambda: summarise(fidelity_metrics(reference, scored.logits), check_thresholds({})))
    print(f"load after {quiet.load_average()}")
    print(f"images {args.images}, model {args.variant}, artifact batch {args.batch_size}")
    print(f"baseline: preprocess + ORT infer (one pass)   {t_base:8.1f} s  ({args.images / t_base:.2f} img/s)")
    print(f"reference logits, cold cache (fidelity, miss)  {t_miss:8.1f} s  = {t_miss / t_base:.2f} x baseline")
    print(f"reference logits, next run (cache hit)         {t_hit:8.3f} s  = {t_hit / t_base:.4f} x baseline")
    print(f"fidelity metrics + summary                      {t_metrics:8.3f} s")
    print(f"min cosine {metrics['min_cosine']:.6f}, top-1 agreement {metrics['top1_agreement']:.4f} (artifact vs ONNX)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
