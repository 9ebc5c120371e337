"""PyTorch → ONNX export and its parity check, as one step: an ONNX file only lands at the target once ONNX Runtime
reproduces PyTorch's logits on a fixed seeded batch within the tolerance.

Everything model-specific comes from the card: the builder and checkpoint format, the input size, the graph's I/O
names, the opset (ConvMixer's 17, the ModelZoo guides' 11) and whether the batch axis is dynamic. A card that brings
its own ONNX skips building: the file is checked against the card, copied to the target and hashed, and the parity
report says it was skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
from convmixer_tasks.models import DEFAULT_MODEL, ModelCard, default_card, get_card
from convmixer_tasks.models.card import OnnxIO
from convmixer_tasks.models.checkpoints import build_model, load_checkpoint
from convmixer_tasks.progress import working
from convmixer_tasks.stages.onnxgraph import graph_inputs

# ATC parses ONNX up to opset 18; a newer opset would export fine here and only fail later on the NPU host.
MAX_OPSET = 18
# The reference scripts export at 11; nothing older is needed for Conv/BatchNorm/Erf/Gemm.
MIN_OPSET = 11
BRING_YOUR_OWN = "skipped: bring-your-own ONNX"
# How long a second export into one folder (a retried task beside its zombie, two runs sharing a work folder) waits
# for the first: the ONNX and its report are one pair, so two writers take turns instead of mixing them.
EXPORT_LOCK_WAIT_S = 1800.0


def image_shape(card: ModelCard | str) -> tuple[int, int, int]:
    """(C, H, W) of one input image of ``card``'s model."""
    size = get_card(card).input_size
    return (3, size, size)


@dataclass
class ParityReport:
    max_abs_diff: float | None  # None: parity skipped (see skipped)
    top1_agreement: float | None  # fraction of rows whose arg-max class is the same in both runtimes
    tolerance: float
    batch: int
    passed: bool  # max_abs_diff <= tolerance (a NaN anywhere fails)
    max_rel_diff: float | None = None  # max_abs_diff / max |PyTorch logit|: the same check, scale-free
    skipped: str | None = None  # why no parity was run (a bring-your-own ONNX has no PyTorch model)


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
            f"pass --opset between {MIN_OPSET} and {MAX_OPSET} (default: the model card's)"
        )
    return opset


def seeded_batch(batch: int, seed: int, card: ModelCard | str = DEFAULT_MODEL) -> torch.Tensor:
    """A fixed input batch shaped like normalised images (roughly zero-mean, unit-variance)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *image_shape(card)), generator=generator)


def prepare_model(source: str | os.PathLike | None, variant: str, seed: int = 0) -> nn.Module:
    """The model in eval mode: weights from ``source``, or seeded random weights when ``source`` is None.

    Random weights get their BatchNorm statistics from one seeded training-mode pass, so activations stay
    normalised through all blocks the way a trained network's do and logits reach a realistic scale (~1). With
    default statistics the 1536/20 logits come out around 0.05, where an absolute tolerance of 1e-4 tests little.
    """
    torch.manual_seed(seed)
    model = build_model(variant)
    if source is not None:
        load_checkpoint(model, source, variant)
    else:
        _calibrate_batchnorm(model, seeded_batch(2, seed + 1, variant))
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


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamo: bool, io: OnnxIO) -> None:
    # The two exporters declare the dynamic batch axis differently; the dynamo one also defaults to external data.
    exporter_options: dict[str, Any]
    if dynamo:
        exporter_options = {"external_data": False, "verbose": False}
        if io.dynamic_batch:
            exporter_options["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        exporter_options = (
            {"dynamic_axes": {io.input_name: {0: "batch"}, io.output_name: {0: "batch"}}} if io.dynamic_batch else {}
        )
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[io.input_name],
        output_names=[io.output_name],
        opset_version=opset,
        dynamo=dynamo,
        **exporter_options,
    )


def _check_onnx_file(path: Path, target: Path, opset: int, io: OnnxIO) -> None:
    """onnx.checker plus the layout later steps rely on: one file, the card's input/output names, and a symbolic
    batch axis when the card asks for one."""
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
    if [i.name for i in inputs] != [io.input_name] or [o.name for o in proto.graph.output] != [io.output_name]:
        raise ExportError(
            f"exported ONNX for {target} has inputs {[i.name for i in inputs]} and outputs "
            f"{[o.name for o in proto.graph.output]}; expected ['{io.input_name}'] and ['{io.output_name}']"
        )
    written_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written_opset != opset:
        # The dynamo exporter implements opset >= 18 only and keeps 18 when converting down fails.
        raise ExportError(
            f"asked for ONNX opset {opset} but the exporter wrote opset {written_opset} for {target}; "
            "use the TorchScript exporter (dynamo=False) for opsets below 18"
        )
    batch_dim = inputs[0].type.tensor_type.shape.dim[0]
    if io.dynamic_batch and not batch_dim.dim_param:
        raise ExportError(
            f"exported ONNX for {target} has a fixed batch size {batch_dim.dim_value}; expected a dynamic batch axis"
        )


def run_parity(
    model: nn.Module, onnx_path: Path, batch: torch.Tensor, tolerance: float, io: OnnxIO | None = None
) -> ParityReport:
    """PyTorch vs ONNX Runtime (CPU) logits on the same batch."""
    import onnxruntime as ort

    io = io or default_card().io
    with torch.no_grad():
        expected = model(batch).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (actual,) = session.run([io.output_name], {io.input_name: batch.numpy()})
    if actual.shape != expected.shape:
        raise ExportError(f"ONNX output '{io.output_name}' has shape {actual.shape}, PyTorch gives {expected.shape}")
    difference = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    max_abs_diff = float(np.max(difference))
    scale = float(np.max(np.abs(expected.astype(np.float64))))
    top1_agreement = float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1)))
    passed = bool(max_abs_diff <= tolerance)  # False for NaN
    return ParityReport(
        max_abs_diff=max_abs_diff,
        top1_agreement=top1_agreement,
        tolerance=tolerance,
        batch=int(batch.shape[0]),
        passed=passed,
        max_rel_diff=max_abs_diff / scale if scale > 0 else max_abs_diff,
    )


def export_and_validate(
    source: str | os.PathLike | None,
    target: str | os.PathLike,
    variant: str = DEFAULT_MODEL,
    opset: int | None = None,
    dynamo: bool = False,
    tolerance: float = 1e-4,
    seed: int = 0,
    parity_batch: int = 2,
) -> ExportResult:
    """Export ``source`` (a checkpoint, or None for seeded random weights) of the card ``variant`` to ``target`` and
    prove it matches; ``opset`` None takes the card's.

    The TorchScript exporter at opset 17 is ConvMixer's default because ONNX Runtime fuses its GELU and BatchNorms
    (the dynamo exporter's opset-18 graph keeps them apart and runs slower, see bench/RESULTS.md); dynamo stays
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
            card = get_card(variant)
            opset = check_opset(card.io.opset if opset is None else opset)
            if not tolerance > 0:
                raise ConfigError(
                    f"parity tolerance {tolerance!r} must be a positive number (--tolerance, default 1e-4)"
                )
            if parity_batch < 1:
                raise ConfigError(f"parity batch {parity_batch!r} must be at least 1")
            return _export_locked(
                Path(source) if source is not None else None, target, card, opset, dynamo, tolerance, seed, parity_batch
            )
    except TimeoutError as exc:
        raise ExportError(str(exc)) from None


def _export_locked(
    source: Path | None,
    target: Path,
    card: ModelCard,
    opset: int,
    dynamo: bool,
    tolerance: float,
    seed: int,
    parity_batch: int,
) -> ExportResult:
    report_path = parity_report_path(target)
    try:
        # Two files cannot be renamed at once, so the ONNX is the commit point: the report (the inner block) lands
        # first and the ONNX last. A kill between the two renames leaves a report beside no ONNX: nothing a later
        # step reads, and the next export removes it.
        with atomic_path(target) as onnx_tmp, atomic_path(report_path) as report_tmp:
            export_seconds = validate_seconds = 0.0
            if card.onnx is not None:
                onnx_file = source if source is not None and source.suffix.lower() == ".onnx" else Path(card.onnx)
                started = time.perf_counter()
                parity = _bring_your_own(card, onnx_file, onnx_tmp, tolerance)
                validate_seconds = round(time.perf_counter() - started, 3)
                source = onnx_file
            else:
                model = prepare_model(source, card.name, seed)
                batch = seeded_batch(parity_batch, seed, card)
                parity, export_seconds, validate_seconds = _export_checked(
                    model, batch, onnx_tmp, target, card, opset, dynamo, tolerance
                )
            result = ExportResult(
                onnx_path=target,
                onnx_sha256=sha256_file(onnx_tmp),
                checkpoint_sha256=sha256_file(source) if source is not None else None,
                variant=card.name,
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


def _bring_your_own(card: ModelCard, onnx_file: Path, tmp: Path, tolerance: float) -> ParityReport:
    """Check a card's own ONNX against the card and copy it to ``tmp``; there is no PyTorch model to compare with."""
    check_onnx_against_card(onnx_file, card)
    shutil.copyfile(onnx_file, tmp)
    return ParityReport(
        max_abs_diff=None, top1_agreement=None, tolerance=tolerance, batch=0, passed=True, skipped=BRING_YOUR_OWN
    )


def check_onnx_against_card(onnx_file: Path, card: ModelCard) -> None:
    """The ONNX's one input (name, float32, N×3×S×S) and one output (name, N×classes) must be what the card says;
    otherwise one line naming the card, the file, expected vs found, and the fix."""
    import onnx

    if not onnx_file.is_file():
        raise ConfigError(
            f"model card {card.name!r}: ONNX {onnx_file} does not exist; fix the card's onnx path or pass --source"
        )
    try:
        proto = onnx.load(str(onnx_file), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"model card {card.name!r}: {onnx_file} is not a readable ONNX model ({exc})") from exc
    size = card.input_size
    fix = f"export the model with input {card.io.input_name!r} float32 [N,3,{size},{size}], or fix the card"

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = graph_inputs(proto)
    found_inputs = [(i.name, dims(i)) for i in inputs]
    if len(inputs) != 1 or inputs[0].name != card.io.input_name:
        raise ConfigError(
            f"model card {card.name!r}: {onnx_file} has inputs {found_inputs}, expected one input "
            f"{card.io.input_name!r}; {fix}"
        )
    shape = dims(inputs[0])
    # A symbolic (or unknown, 0) batch axis is dynamic; a positive one is fixed.
    fixed_batch = bool(shape) and isinstance(shape[0], int) and shape[0] > 0
    batch_ok = bool(shape) and fixed_batch != card.io.dynamic_batch
    if len(shape) != 4 or shape[1:] != [3, size, size] or not batch_ok:
        batch = "a symbolic batch" if card.io.dynamic_batch else "a fixed batch"
        raise ConfigError(
            f"model card {card.name!r}: {onnx_file} input {card.io.input_name!r} has shape {shape}, expected "
            f"[N,3,{size},{size}] with {batch}; {fix}"
        )
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConfigError(f"model card {card.name!r}: {onnx_file} input {card.io.input_name!r} is not float32; {fix}")
    outputs = [(o.name, dims(o)) for o in proto.graph.output]
    if len(outputs) != 1 or outputs[0][0] != card.io.output_name or outputs[0][1][1:] != [card.io.num_classes]:
        raise ConfigError(
            f"model card {card.name!r}: {onnx_file} has outputs {outputs}, expected one output "
            f"{card.io.output_name!r} of shape [N,{card.io.num_classes}]; fix the ONNX or the card's io"
        )


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
    card: ModelCard,
    opset: int,
    dynamo: bool,
    tolerance: float,
) -> tuple[ParityReport, float, float]:
    """Export to ``tmp`` (beside ``target``) and check it; the caller moves it into place once every check passed."""
    started = time.perf_counter()
    try:
        with torch.no_grad(), working(f"export of {card.name}, step 1/2 (torch.onnx.export)"):
            _export_onnx(model, batch, tmp, opset, dynamo, card.io)
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export of {card.name} to {target} failed "
            f"(opset {opset}, dynamo={dynamo}): {type(exc).__name__}: {exc}"
        ) from exc
    exported = time.perf_counter()
    with working(f"export of {card.name}, step 2/2 (onnx.checker, then parity ONNX Runtime vs PyTorch)"):
        _check_onnx_file(tmp, target, opset, card.io)
        parity = run_parity(model, tmp, batch, tolerance, card.io)
    validated = time.perf_counter()
    assert parity.max_abs_diff is not None  # run_parity always measures
    if not math.isfinite(parity.max_abs_diff):
        # No tolerance can pass NaN/inf, and argmax over NaN rows "agrees" trivially: name the real cause.
        raise ExportError(
            f"the model's outputs for {target} are not finite (NaN or inf on {parity.batch} seeded images), which "
            "no tolerance can pass: the checkpoint's weights or BatchNorm statistics most likely hold NaN/inf; "
            "export a checkpoint saved before training diverged"
        )
    if not parity.passed:
        raise ExportError(
            f"ONNX output '{card.io.output_name}' of {target} differs from PyTorch by max |Δ| "
            f"{parity.max_abs_diff:.3g} > tolerance {tolerance:g} (top-1 agreement {parity.top1_agreement:.0%} on "
            f"{parity.batch} seeded images, opset {opset}, dynamo={dynamo}); the ONNX file was not kept — try another "
            "opset/exporter or, if the difference is expected, a larger --tolerance"
        )
    return parity, round(exported - started, 3), round(validated - exported, 3)
