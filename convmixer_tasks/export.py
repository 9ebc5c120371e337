"""PyTorch → ONNX export and its parity check, as one step: an ONNX file only lands at the target once ONNX Runtime
reproduces PyTorch's logits on a fixed seeded batch within the tolerance.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convmixer_tasks import guards
from convmixer_tasks.errors import ConfigError, ExportError
from convmixer_tasks.fileio import atomic_path, remove_stale_temporaries, sha256_file, temporaries_of, to_jsonable
from convmixer_tasks.model import build_model, get_spec, load_checkpoint
from convmixer_tasks.onnxgraph import graph_inputs
from convmixer_tasks.progress import working
from convmixer_tasks.variants import INPUT

INPUT_NAME = INPUT.input_name
OUTPUT_NAME = INPUT.output_name
# ATC parses ONNX up to opset 18; a newer opset would export fine here and only fail later on the NPU host.
MAX_OPSET = 18
# The reference script exports at 11; nothing older is needed for Conv/BatchNorm/Erf/Gemm.
MIN_OPSET = 11
IMAGE_SHAPE = (3, INPUT.crop, INPUT.crop)
# How long a second export into one folder (a retried task beside its zombie, two runs sharing a work folder) waits
# for the first: the ONNX and its report are one pair, so two writers take turns instead of mixing them.
EXPORT_LOCK_WAIT_S = 1800.0


@dataclass
class ParityReport:
    max_abs_diff: float
    top1_agreement: float  # fraction of rows whose arg-max class is the same in both runtimes
    tolerance: float
    batch: int
    passed: bool  # max_abs_diff <= tolerance (a NaN anywhere fails)


@dataclass
class ExportResult:
    onnx_path: Path
    onnx_sha256: str
    checkpoint_sha256: str | None
    variant: str
    opset: int
    dynamo: bool
    parity: ParityReport
    report_path: Path
    export_seconds: float = 0.0  # torch.onnx.export alone
    validate_seconds: float = 0.0  # checker + ONNX Runtime session + both forward passes


def parity_report_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.with_name(f"{target.stem}.parity.json")


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"ONNX opset {opset!r} is not supported: ATC accepts opset <= {MAX_OPSET}; "
            f"pass --opset between {MIN_OPSET} and {MAX_OPSET} (default 17)"
        )
    return opset


def seeded_batch(batch: int, seed: int) -> torch.Tensor:
    """A fixed input batch shaped like normalised images (roughly zero-mean, unit-variance)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *IMAGE_SHAPE), generator=generator)


def prepare_model(source: str | os.PathLike | None, variant: str, seed: int = 0) -> nn.Sequential:
    """The model in eval mode: weights from ``source``, or seeded random weights when ``source`` is None.

    Random weights get their BatchNorm statistics from one seeded training-mode pass, so activations stay
    normalised through all blocks the way a trained network's do and logits reach a realistic scale (~1). With
    default statistics the 1536/20 logits come out around 0.05, where an absolute tolerance of 1e-4 tests little.
    """
    torch.manual_seed(seed)
    model = build_model(variant)
    if source is not None:
        load_checkpoint(model, source)
    else:
        _calibrate_batchnorm(model, seeded_batch(2, seed + 1))
    return model.eval()


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, batch: torch.Tensor) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass stores exactly this batch's statistics
    model.train()(batch)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool) -> None:
    # The two exporters declare the dynamic batch axis differently; the dynamo one also defaults to external data.
    exporter_options: dict[str, Any] = (
        {"dynamic_shapes": ({0: torch.export.Dim("batch")},), "external_data": False, "verbose": False}
        if dynamo
        else {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
    )
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=dynamo,
        **exporter_options,
    )


def _check_onnx_file(path: Path, target: Path, opset: int) -> None:
    """onnx.checker plus the layout later steps rely on: one file, input ``image`` with a symbolic batch axis."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:
        raise ExportError(f"exported ONNX for {target} fails onnx.checker: {exc}") from exc
    proto = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"exported ONNX for {target} stores {len(external)} tensors as external data; "
            "this step must write a single file (models under 2 GB)"
        )
    inputs = graph_inputs(proto)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        raise ExportError(
            f"exported ONNX for {target} has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in proto.graph.output]}; expected ['{INPUT_NAME}'] and ['{OUTPUT_NAME}']"
        )
    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written_opset != opset:
        # The dynamo exporter implements opset >= 18 only and keeps 18 when converting down fails.
        raise ExportError(
            f"asked for ONNX opset {opset} but the exporter wrote opset {written_opset} for {target}; "
            "use the TorchScript exporter (dynamo=False) for opsets below 18"
        )
    batch_dim = inputs[0].type.tensor_type.shape.dim[0]
    if not batch_dim.dim_param:
        raise ExportError(
            f"exported ONNX for {target} has a fixed batch size {batch_dim.dim_value}; expected a dynamic batch axis"
        )


def run_parity(model: nn.Module, onnx_path: Path, batch: torch.Tensor, tolerance: float) -> ParityReport:
    """PyTorch vs ONNX Runtime (CPU) logits on the same batch."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = model(batch).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
    if actual.shape != expected.shape:
        raise ExportError(f"ONNX output '{OUTPUT_NAME}' has shape {actual.shape}, PyTorch gives {expected.shape}")
    max_abs_diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    top1_agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    passed = bool(max_abs_diff <= tolerance)  # False for NaN
    return ParityReport(
        max_abs_diff=max_abs_diff,
        top1_agreement=top1_agreement,
        tolerance=tolerance,
        batch=int(batch.shape[0]),
        passed=passed,
    )


def export_and_validate(
    source: str | os.PathLike | None,
    target: str | os.PathLike,
    variant: str = "convmixer_1536_20",
    opset: int = 17,
    dynamo: bool = False,
    tolerance: float = 1e-4,
    seed: int = 0,
    parity_batch: int = 2,
) -> ExportResult:
    """Export ``source`` (a checkpoint, or None for seeded random weights) to ``target`` and prove it matches.

    The TorchScript exporter at opset 17 is the default because ONNX Runtime fuses its GELU and BatchNorms (the
    dynamo exporter's opset-18 graph keeps them apart and runs slower, see bench/RESULTS.md); dynamo stays
    selectable, at opset 18 only, for torch versions without the TorchScript exporter.
    """
    target = Path(target)
    if target.suffix.lower() != ".onnx":
        raise ConfigError(f"export target {target} must end in .onnx")
    try:
        with guards.exclusive_folder(target.parent, f"ONNX export to {target}", EXPORT_LOCK_WAIT_S):
            # What this attempt would replace goes first: a failure of any kind (a refused option, a bad checkpoint)
            # or a kill then leaves nothing, never an older ONNX or report that answers for another source.
            clear_stale_temporaries(target)
            _remove_pair(target)
            check_opset(opset)
            if not tolerance > 0:
                raise ConfigError(
                    f"parity tolerance {tolerance!r} must be a positive number (--tolerance, default 1e-4)"
                )
            if parity_batch < 1:
                raise ConfigError(f"parity batch {parity_batch!r} must be at least 1")
            get_spec(variant)
            return _export_locked(
                Path(source) if source is not None else None,
                target,
                variant,
                opset,
                dynamo,
                tolerance,
                seed,
                parity_batch,
            )
    except TimeoutError as exc:
        raise ExportError(str(exc)) from None


def _export_locked(
    source: Path | None,
    target: Path,
    variant: str,
    opset: int,
    dynamo: bool,
    tolerance: float,
    seed: int,
    parity_batch: int,
) -> ExportResult:
    report_path = parity_report_path(target)
    try:
        model = prepare_model(source, variant, seed)
        batch = seeded_batch(parity_batch, seed)
        # Two files cannot be renamed at once, so the ONNX is the commit point: the report (the inner block) lands
        # first and the ONNX last. A kill between the two renames leaves a report beside no ONNX: nothing a later
        # step reads, and the next export removes it.
        with atomic_path(target) as onnx_tmp, atomic_path(report_path) as report_tmp:
            parity, export_seconds, validate_seconds = _export_checked(
                model, batch, onnx_tmp, target, variant, opset, dynamo, tolerance
            )
            result = ExportResult(
                onnx_path=target,
                onnx_sha256=sha256_file(onnx_tmp),
                checkpoint_sha256=sha256_file(source) if source is not None else None,
                variant=variant,
                opset=opset,
                dynamo=dynamo,
                parity=parity,
                report_path=report_path,
                export_seconds=export_seconds,
                validate_seconds=validate_seconds,
            )
            report_tmp.write_text(json.dumps(to_jsonable(result), indent=2, sort_keys=True) + "\n")
    except BaseException:
        _remove_pair(target)
        raise
    return result


def _remove_pair(target: Path) -> None:
    """Remove an ONNX and its report in the reverse of their landing order: the ONNX first, so no moment (and no
    kill) ever shows an ONNX without the report that describes it."""
    for path in (target, parity_report_path(target)):
        path.unlink(missing_ok=True)


def clear_stale_temporaries(target: Path) -> None:
    """Remove the ``.tmp`` files a killed export left beside ``target``; a live writer's are left alone."""
    remove_stale_temporaries(temporaries_of(target) + temporaries_of(parity_report_path(target)))


def _export_checked(
    model: nn.Module,
    batch: torch.Tensor,
    tmp: Path,
    target: Path,
    variant: str,
    opset: int,
    dynamo: bool,
    tolerance: float,
) -> tuple[ParityReport, float, float]:
    """Export to ``tmp`` (beside ``target``) and check it; the caller moves it into place once every check passed."""
    started = time.perf_counter()
    try:
        with torch.no_grad(), working(f"export of {variant}, step 1/2 (torch.onnx.export)"):
            _export_onnx(model, batch, tmp, opset, dynamo)
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export of {variant} to {target} failed "
            f"(opset {opset}, dynamo={dynamo}): {type(exc).__name__}: {exc}"
        ) from exc
    exported = time.perf_counter()
    with working(f"export of {variant}, step 2/2 (onnx.checker, then parity ONNX Runtime vs PyTorch)"):
        _check_onnx_file(tmp, target, opset)
        parity = run_parity(model, tmp, batch, tolerance)
    validated = time.perf_counter()
    if not math.isfinite(parity.max_abs_diff):
        # No tolerance can pass NaN/inf, and argmax over NaN rows "agrees" trivially: name the real cause.
        raise ExportError(
            f"the model's outputs for {target} are not finite (NaN or inf on {parity.batch} seeded images), which "
            "no tolerance can pass: the checkpoint's weights or BatchNorm statistics most likely hold NaN/inf; "
            "export a checkpoint saved before training diverged"
        )
    if not parity.passed:
        raise ExportError(
            f"ONNX output '{OUTPUT_NAME}' of {target} differs from PyTorch by max |Δ| {parity.max_abs_diff:.3g} "
            f"> tolerance {tolerance:g} (top-1 agreement {parity.top1_agreement:.0%} on {parity.batch} seeded "
            f"images, opset {opset}, dynamo={dynamo}); the ONNX file was not kept — try another opset/exporter "
            "or, if the difference is expected, a larger --tolerance"
        )
    return parity, round(exported - started, 3), round(validated - exported, 3)
