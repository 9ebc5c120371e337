"""Which output row is which image: the output folder read into one (N, C) float32 array, and each row's label.

The prep manifest knows it exactly (the padded slots included); without one, the output names do: ConvMixer's reference
arithmetic (``input_XXXXX_0`` row i → image ``XXXXX*batch_size+i+1``), or the other guides' one file per image
(``ILSVRC2012_val_XXXXXXXX_0`` → that image). ``evaluate`` scores the rows.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convmixer_tasks.errors import EvalError
from convmixer_tasks.fileio import read_json
from convmixer_tasks.progress import Progress
from convmixer_tasks.stages.aisbench_format import OUTFMTS, PREP_MANIFEST_KEY, output_name, read_output, summary_path
from convmixer_tasks.stages.dataset import VAL_NAME_RE, val_name
from convmixer_tasks.stages.prepfolder import PrepManifest, manifest_identity, read_manifest

log = logging.getLogger(__name__)

# Output 0 of one input file, as ais_bench names it: input basename up to the first dot + "_0".
OUTPUT_FILE_RE = re.compile(r"^(?P<stem>[^.]+)_0\.(?P<fmt>" + "|".join(OUTFMTS) + r")$")
# What the reference's name arithmetic understands: the number after "input_" is the batch number.
REFERENCE_STEM_RE = re.compile(r"^input_(?P<batch>\d+)$")
# A guide's per-image output: the image's stem (ais_bench keeps the input's name up to its first dot).
IMAGE_STEM_RE = re.compile(r"^ILSVRC2012_val_(?P<index>\d{8})$")
CHUNK_ROWS = 8192  # bounds the boolean temporaries of a pass over the rows (~8 MB each at 1000 classes)
_LIST_LIMIT = 5  # how many names an error message lists before "…"


@dataclass(frozen=True)
class OutputSet:
    """The output files of one folder: their format and ``{file name: path}``."""

    folder: Path
    outfmt: str
    files: dict[str, Path]


def resolve_output_dir(output_dir: str | os.PathLike) -> Path:
    """The folder that holds the output files: ``output_dir`` itself, or its only sub-folder that holds outputs.

    The reference took ``os.listdir(folder)[0]``, which picks the sibling ``<dir>_summary.json`` of today's
    ais_bench as often as the folder; we look for output files instead and refuse to guess between several.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        raise EvalError(
            f"output folder {folder} does not exist; pass the folder ais_bench wrote (--output/--output_dirname)"
        )
    if _holds_outputs(folder):
        return folder
    candidates = sorted(sub for sub in folder.iterdir() if sub.is_dir() and _holds_outputs(sub))
    if len(candidates) == 1:
        log.info("no outputs directly in %s; using its only output sub-folder %s", folder, candidates[0])
        return candidates[0]
    if candidates:
        raise EvalError(
            f"{folder} holds several output folders ({_names(c.name for c in candidates)}); "
            "pass the one to evaluate as --folder-davinci-target"
        )
    raise EvalError(
        f"no ais_bench outputs (input_XXXXX_0.{{{','.join(OUTFMTS)}}}) in {folder} or its sub-folders; "
        "run inference first or pass the folder it wrote"
    )


def scan_outputs(folder: str | os.PathLike) -> OutputSet:
    """The ``*_0.{bin,npy,txt}`` files of ``folder``; one format only (a mix means two runs shared the folder)."""
    folder = Path(folder)
    by_format: dict[str, dict[str, Path]] = {}
    for entry in os.scandir(folder):
        match = OUTPUT_FILE_RE.match(entry.name)
        if match and entry.is_file():
            by_format.setdefault(match["fmt"], {})[entry.name] = Path(entry.path)
    if not by_format:
        raise EvalError(
            f"no ais_bench outputs (input_XXXXX_0.{{{','.join(OUTFMTS)}}}) in {folder}; run inference first"
        )
    if len(by_format) > 1:
        counts = ", ".join(f"{len(files)} .{fmt}" for fmt, files in sorted(by_format.items()))
        raise EvalError(
            f"{folder} mixes output formats ({counts}); outputs of different runs share it — "
            "delete the folder and re-run inference with one --outfmt"
        )
    ((outfmt, files),) = by_format.items()
    return OutputSet(folder=folder, outfmt=outfmt, files=files)


def load_logits(paths: list[Path], num_classes: int, rows_per_file: int | None = None) -> np.ndarray:
    """All files stacked into one (files × rows, num_classes) float32 array; every file must hold the same rows.

    ``rows_per_file`` None takes the first file's row count (every file of a fixed-batch run has batch-size rows,
    padded slots included).
    """
    if not paths:
        raise EvalError("no output files to evaluate; run inference first")
    logits: np.ndarray | None = None
    progress = Progress("eval: reading outputs", len(paths), "files")
    for position, path in enumerate(paths):
        rows = _read_rows(path, num_classes)
        if rows_per_file is None:
            rows_per_file = rows.shape[0]
        if rows.shape[0] != rows_per_file:
            raise EvalError(
                f"output file {path} holds {rows.shape[0]} rows of {num_classes} logits, expected {rows_per_file} "
                "(the batch size); the outputs come from a model compiled for another batch size or output dtype — "
                "re-run inference with the artifact compiled for this batch size, or fix --batch-size"
            )
        if logits is None:
            logits = np.empty((len(paths) * rows_per_file, num_classes), dtype=np.float32)
        logits[position * rows_per_file : (position + 1) * rows_per_file] = rows
        progress.update()
    progress.close()
    assert logits is not None, "the caller checked that there are output files"
    return logits


def image_index(image_name: str) -> int:
    """The 8-digit validation index in ``ILSVRC2012_val_XXXXXXXX.JPEG``."""
    match = VAL_NAME_RE.search(os.path.basename(image_name))
    if match is None:
        raise EvalError(
            f"image name {image_name!r} in the prep manifest is not ILSVRC2012_val_XXXXXXXX.JPEG; re-run preprocess"
        )
    return int(match.group(1))


# --- which row is which image --------------------------------------------------------------------------------------


def _check_outputs_came_from(outputs: OutputSet, prep_dir: str | os.PathLike, manifest: PrepManifest) -> None:
    """Refuse outputs whose summary says they were inferred from another prep folder (one of the same shape would
    otherwise be scored image by wrong image). Outputs without our record (ais_bench run by hand) are taken as
    they are."""
    summary = summary_path(outputs.folder)
    try:
        recorded = read_json(summary).get(PREP_MANIFEST_KEY) if summary.is_file() else None
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is not None and recorded != manifest_identity(manifest):
        raise EvalError(
            f"the outputs in {outputs.folder} were inferred from another prep folder than {prep_dir} (its summary "
            f"{summary.name} records manifest {str(recorded)[:12]}…, {prep_dir}'s is "
            f"{manifest_identity(manifest)[:12]}…); pass the prep folder they came from as --prep-image, or re-run "
            f"infer with --input {prep_dir}"
        )


def _check_output_batch(outputs: OutputSet, prep_dir: str | os.PathLike, manifest: PrepManifest, classes: int) -> None:
    """Outputs of another batch size than the prep folder's: say so, not "N files have no output"."""
    first = outputs.files[min(outputs.files)]
    rows = _read_rows(first, classes).shape[0]
    if rows != manifest.batch_size:
        raise EvalError(
            f"the outputs in {outputs.folder} hold batches of {rows} ({first.name}) but prep folder {prep_dir} holds "
            f"batches of {manifest.batch_size}: the batch sizes differ; pass the batch-size-{rows} prep folder the "
            "outputs came from as --prep-image"
        )


def plan_from_manifest(
    prep_dir: str | os.PathLike, outputs: OutputSet, labels: dict[int, int], batch_size: int | None, classes: int
) -> tuple[list[Path], int, np.ndarray, np.ndarray]:
    """Output paths in manifest order, rows per file, each row's label (-1 for padded slots) and image index."""
    manifest = read_manifest(prep_dir, check_files=False)  # the inputs themselves may be gone or on another host
    if batch_size is not None and batch_size != manifest.batch_size:
        raise EvalError(
            f"--batch-size {batch_size} disagrees with the prep manifest in {prep_dir} (batch size "
            f"{manifest.batch_size}); drop --batch-size or pass the prep folder these outputs came from"
        )
    _check_output_batch(outputs, prep_dir, manifest, classes)
    _check_outputs_came_from(outputs, prep_dir, manifest)
    expected = {output_name(prep_file.name, 0, outputs.outfmt): prep_file for prep_file in manifest.files}
    missing = [name for name in expected if name not in outputs.files]
    if missing:
        raise EvalError(
            f"{len(missing)} of {len(expected)} manifest files have no output in {outputs.folder} "
            f"({_names(missing)}); run inference for them (or on the whole "
            "prep folder) before evaluating"
        )
    extra = sorted(set(outputs.files) - set(expected))
    if extra:
        raise EvalError(
            f"{outputs.folder} holds {len(extra)} outputs that are not in the manifest of {prep_dir} "
            f"({_names(extra)}); they come from another prep run — "
            "pass the matching --prep-image or clear the output folder and re-run inference"
        )
    row_labels = np.full(len(expected) * manifest.batch_size, -1, dtype=np.int64)
    row_indices = np.zeros_like(row_labels)
    unlabelled: list[str] = []
    for position, prep_file in enumerate(expected.values()):
        for slot, image_name in enumerate(prep_file.images):
            index = image_index(image_name)
            label = labels.get(index)
            if label is None:
                unlabelled.append(image_name)
            else:
                row_labels[position * manifest.batch_size + slot] = label
                row_indices[position * manifest.batch_size + slot] = index
    if unlabelled:
        raise EvalError(
            f"{len(unlabelled)} images in the prep manifest have no label in the label file "
            f"({_names(unlabelled)}); use the val_label.txt that covers the prepared images"
        )
    paths = [outputs.files[name] for name in expected]
    return paths, manifest.batch_size, row_labels, row_indices


def reference_files(outputs: OutputSet) -> tuple[list[Path], np.ndarray]:
    """Output paths sorted by batch number, and the numbers, for the reference's name arithmetic."""
    numbered: dict[int, Path] = {}
    for name, path in outputs.files.items():
        named = OUTPUT_FILE_RE.match(name)
        assert named is not None, "OutputSet keeps only names that match OUTPUT_FILE_RE"
        match = REFERENCE_STEM_RE.match(named["stem"])
        if match is None:
            raise EvalError(
                f"output {path.name} is not named input_XXXXX_0.{outputs.outfmt}, so its rows cannot be mapped to "
                "images by name; pass --prep-image (the prep folder's manifest) instead"
            )
        batch = int(match["batch"])
        if batch in numbered:
            raise EvalError(
                f"{numbered[batch].name} and {path.name} both claim batch {batch}; clear the folder and re-run "
                "inference"
            )
        numbered[batch] = path
    order = sorted(numbered)
    return [numbered[batch] for batch in order], np.asarray(order, dtype=np.int64)


def image_named(outputs: OutputSet) -> bool:
    """Whether the outputs are a guide's one file per image (every stem an image's), not ConvMixer's batches."""
    return all(IMAGE_STEM_RE.match(_stem(name)) for name in outputs.files)


def _stem(name: str) -> str:
    named = OUTPUT_FILE_RE.match(name)
    assert named is not None, "OutputSet keeps only names that match OUTPUT_FILE_RE"
    return named["stem"]


def image_files(outputs: OutputSet) -> tuple[list[Path], np.ndarray]:
    """Per-image output paths in image order, and each one's image index."""
    by_index = {}
    for name, path in outputs.files.items():
        match = IMAGE_STEM_RE.match(_stem(name))
        assert match is not None, "image_named checked every name"
        by_index[int(match["index"])] = path
    order = sorted(by_index)
    return [by_index[index] for index in order], np.asarray(order, dtype=np.int64)


def plan_from_image_names(paths: list[Path], indices: np.ndarray, labels: dict[int, int]) -> np.ndarray:
    """Each per-image output's label; an output without a label, or a label without an output, is an error (the
    guides' scripts fail on the first, and the second would score a subset as if it were the set)."""
    unlabelled = [path.name for path, index in zip(paths, indices, strict=True) if int(index) not in labels]
    if unlabelled:
        raise EvalError(
            f"{len(unlabelled)} outputs are images with no label in the label file ({_names(unlabelled)}); use the "
            "val_label.txt that covers them, or pass --prep-image so only the prepared images are evaluated"
        )
    uncovered = sorted(set(labels) - {int(index) for index in indices})
    if uncovered:
        raise EvalError(
            f"{len(uncovered)} of {len(labels)} labelled images have no output "
            f"({_names([val_name(i, '') for i in uncovered], len(uncovered))}); run inference on all prep files, or "
            "pass --prep-image so only the prepared images are evaluated"
        )
    return np.asarray([labels[int(index)] for index in indices], dtype=np.int64)


def plan_from_names(
    paths: list[Path], batch_numbers: np.ndarray, rows_per_file: int, labels: dict[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's label by ``index = batch*bs + row + 1``; the label file defines the evaluated set.

    Rows past the last labelled image are padded slots of the final batch (ignored — the reference counted one in
    the denominator); any other row without a label, or label without a row, is an error.
    """
    indices = (batch_numbers[:, None] * rows_per_file + np.arange(rows_per_file)[None, :] + 1).ravel()
    # Sorted lookups, not an array indexed by image number: memory follows the rows and the label lines, never the
    # largest index a label file names (ILSVRC2012_val_99999999 would cost ~800 MB).
    label_indices = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
    label_values = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
    order = np.argsort(label_indices)
    label_indices, label_values = label_indices[order], label_values[order]
    last_labelled = int(label_indices[-1]) if label_indices.size else 0
    at = np.minimum(np.searchsorted(label_indices, indices), max(label_indices.size - 1, 0))
    found = label_indices.size > 0 and label_indices[at] == indices
    row_labels = np.where(found, label_values[at], -1) if label_indices.size else np.full(indices.shape, -1)

    last_batch = (last_labelled - 1) // rows_per_file  # the batch that holds the last labelled image
    beyond = [path.name for path, batch in zip(paths, batch_numbers, strict=False) if batch > last_batch]
    if beyond:
        raise EvalError(
            f"{len(beyond)} output files lie past the last labelled image {val_name(last_labelled, '')} under "
            f"index = batch*{rows_per_file}+row+1 ({_names(beyond)}); check --batch-size, use the val_label.txt "
            "that covers these images, or pass --prep-image so the manifest maps rows"
        )
    padding = indices > last_labelled
    unlabelled = ~padding & (row_labels < 0)
    if unlabelled.any():
        rows = np.flatnonzero(unlabelled)
        examples = [
            f"{paths[r // rows_per_file].name} row {r % rows_per_file} → {val_name(indices[r], '')}" for r in rows
        ]
        raise EvalError(
            f"{rows.size} output rows map to images with no label in the label file ({_names(examples)}) under "
            f"index = batch*{rows_per_file}+row+1; check --batch-size, use the matching val_label.txt, or pass "
            "--prep-image so the manifest maps rows"
        )
    uncovered = label_indices[~np.isin(label_indices, indices[~padding])]
    if uncovered.size:
        first = np.sort(uncovered)[:_LIST_LIMIT]
        examples = [f"{val_name(i, '')} (batch {(i - 1) // rows_per_file})" for i in first]
        raise EvalError(
            f"{uncovered.size} of {len(labels)} labelled images have no output row "
            f"({_names(examples, uncovered.size)}); run inference on all prep files, or pass --prep-image so only "
            "the prepared images are evaluated"
        )
    if padding.any():
        log.info("ignoring %d padded slots in %s", int(padding.sum()), paths[-1].name)
    return row_labels, indices


# --- checks and helpers ---------------------------------------------------------------------------------------------


def _read_rows(path: Path, num_classes: int) -> np.ndarray:
    """One output file as (rows, num_classes) float32, with the size/shape errors a user can act on."""
    if path.suffix.lower() == ".bin":
        size = path.stat().st_size
        row_bytes = num_classes * 4
        if size == 0 or size % row_bytes:
            raise EvalError(
                f"output file {path} is {size} bytes, not a whole number of rows of {num_classes} float32 logits "
                f"({row_bytes} bytes each); the write was cut short or the model has another class count/output "
                "dtype — re-run inference"
            )
    try:
        rows = read_output(path, num_classes)
    except (OSError, ValueError) as exc:  # unreadable NPY, ragged or non-numeric TXT
        raise EvalError(f"output file {path} is unreadable ({exc}); re-run inference") from exc
    if not np.issubdtype(rows.dtype, np.floating):
        raise EvalError(f"output file {path} holds {rows.dtype} values, not float logits; re-run inference")
    if rows.shape[0] == 0:
        raise EvalError(f"output file {path} is empty; re-run inference")
    return rows.astype(np.float32, copy=False)


def check_finite(logits: np.ndarray, paths: list[Path], rows_per_file: int) -> None:
    """Refuse NaN/Inf anywhere: a NaN label logit would otherwise rank first (nothing compares greater)."""
    for start in range(0, logits.shape[0], CHUNK_ROWS):
        finite = np.isfinite(logits[start : start + CHUNK_ROWS]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise EvalError(
                f"output file {paths[row // rows_per_file]} row {row % rows_per_file} holds NaN/Inf logits; the "
                "model overflowed or the outputs are corrupt — check the compile precision (e.g. "
                "precision_mode=force_fp32) and re-run inference"
            )


def _holds_outputs(folder: Path) -> bool:
    return any(OUTPUT_FILE_RE.match(entry.name) and entry.is_file() for entry in os.scandir(folder))


def _names(items, total: int | None = None) -> str:
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(str(item) for item in items[:_LIST_LIMIT])
    return shown + (", …" if total > _LIST_LIMIT else "")
