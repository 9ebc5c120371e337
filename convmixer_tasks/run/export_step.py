"""The export step: the validated ONNX of (checkpoint content, variant, exporter options), from a content-keyed
cache in the work folder (``workdir``), exported and parity-checked (``export``) only on a miss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from convmixer_tasks.fileio import read_json, sha256_file, to_jsonable
from convmixer_tasks.run.records import ExportedModel
from convmixer_tasks.run.workdir import WorkLayout

# The ONNX step's fixed options (part of its cache key). Opset 17: the exporter default that ATC parses.
ONNX_OPSET = 17
ONNX_DYNAMO = False
PARITY_TOLERANCE = 1e-4
RANDOM_WEIGHTS = "random-weights-seed-0"  # what a run without a checkpoint records as the checkpoint's hash


def export_cached(checkpoint: str | os.PathLike | None, variant: str, work_dir: str | os.PathLike) -> ExportedModel:
    """The validated ONNX for (checkpoint content, variant, opset, exporter), exported only on a cache miss; no
    checkpoint (None or "") exports the card's model with seeded random weights.

    An entry is complete when its ONNX (which ``export_and_validate`` moves in last, after its parity report) has
    the hash that report records: a report alone (a killed export), a truncated or a replaced file is rebuilt.
    """
    checkpoint_sha256 = sha256_file(checkpoint) if checkpoint else RANDOM_WEIGHTS
    cache = WorkLayout(Path(work_dir)).onnx_cache
    key = cache.key(
        {
            "checkpoint_sha256": checkpoint_sha256,
            "variant": variant,
            "opset": ONNX_OPSET,
            "dynamo": ONNX_DYNAMO,
            "tolerance": PARITY_TOLERANCE,
        }
    )
    onnx_path = cache.entry(key) / "model.onnx"
    report_path = onnx_path.with_name(f"{onnx_path.stem}.parity.json")

    def validated() -> dict[str, Any] | None:
        report = read_json(report_path)
        passed = report["parity"]["passed"] and report["onnx_sha256"] == sha256_file(onnx_path)
        return report if passed else None

    report = cache.lookup(validated)
    cached = report is not None
    if report is None:
        from convmixer_tasks.stages.export import export_and_validate

        report = to_jsonable(
            export_and_validate(
                checkpoint or None,
                onnx_path,
                variant=variant,
                opset=ONNX_OPSET,
                dynamo=ONNX_DYNAMO,
                tolerance=PARITY_TOLERANCE,
            )
        )
    return ExportedModel(
        onnx_path=str(onnx_path),
        onnx_sha256=report["onnx_sha256"],
        checkpoint_sha256=checkpoint_sha256,
        variant=variant,
        opset=ONNX_OPSET,
        parity_max_abs_diff=report["parity"]["max_abs_diff"],
        cache_key=key,
        cached=cached,
    )
