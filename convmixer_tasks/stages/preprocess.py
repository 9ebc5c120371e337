"""Batching into ``input_XXXXX.bin``, the manifest, resume, shards and workers; the pixels come from ``transforms``.

Files are raw ``tofile`` dumps of ``batch_size`` images, the last batch zero-padded, so ais_bench can read the folder
as it reads the reference's. One run serves every card's ``HostPreprocess`` (batch files or one file per image).

The folder's layout and manifest are ``prepfolder``'s contract; this module writes them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convmixer_tasks import guards
from convmixer_tasks.checks import check_batch_size
from convmixer_tasks.dtypes import INPUT_DTYPES
from convmixer_tasks.errors import ConfigError, PreprocessError
from convmixer_tasks.fileio import atomic_path, atomic_write_json, read_json, remove_stale_temporaries, sha256_json
from convmixer_tasks.models.card import HostPreprocess, ModelCard
from convmixer_tasks.models.registry import default_card, get_card
from convmixer_tasks.progress import Progress
from convmixer_tasks.stages.dataset import SHOW_FIRST, ValDataset, ValImage, load_dataset
from convmixer_tasks.stages.prepfolder import (
    MANIFEST_NAME,
    STATE_DIR,
    PrepFile,
    PrepManifest,
    SuspiciousImage,
    check_shard,
    file_name,
    file_shape,
    has_size,
    host_preprocess,
    image_file_name,
    is_prep_file,
    manifest_from_json,
    read_markers,
    shard_range,
)
from convmixer_tasks.stages.transforms import (
    FLOAT32,
    load_rgb,
    normalize_into,
    resize_crop,
    scan_images,
    too_large_error,
    transform_params,
)

logger = logging.getLogger(__name__)

_AIS_BENCH_INPUT_RE = re.compile(r"\.(bin|npy)$", re.IGNORECASE)  # what ais_bench picks up from a folder
PREP_LOCK_WAIT_S = 300.0  # how long a second writer of the same shard waits for the first (a zombie's retry)


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class PrepResult:
    out_dir: Path
    manifest_path: Path
    dtype: str
    batch_size: int
    image_count: int  # in the whole manifest (all shards)
    file_count: int  # in the whole manifest (all shards)
    files_written: int  # by this call (this shard)
    files_skipped: int  # by this call: already done with the same inputs
    dataset_fingerprint: str
    entries_skipped: int = 0  # in the image folder but not in the set (the manifest's "skipped" names them)
    images_suspicious: int = 0  # in the set, converted as the reference does but flagged (the manifest's "suspicious")


def _suspicious_text(suspicious: list[SuspiciousImage]) -> str:
    """The first few suspicious images, each with its mode and why: the tail of the notes' log lines."""
    shown = ", ".join(f"{s.image} (mode {s.mode}: {s.reason})" for s in suspicious[:SHOW_FIRST])
    more = f" (first {SHOW_FIRST} shown)" if len(suspicious) > SHOW_FIRST else ""
    return f"{more}: {shown}" if shown else ""


def report_image_set(dataset: ValDataset) -> list[SuspiciousImage]:
    """Say, once per run where the set is read (``steps.check_inputs``), which of its images are suspicious (CMYK,
    more than 8 bits, …): a fact of the image set, not of each batch size's prep folder. Each manifest still lists
    them; preprocess then notes its folder's list at INFO (``set_reported``)."""
    suspicious, _ = scan_images(dataset)
    if suspicious:
        logger.warning(
            "image set %s: %d suspicious images, converted exactly as the reference does%s",
            dataset.image_dir,
            len(suspicious),
            _suspicious_text(suspicious),
        )
    return suspicious


def _report_notes(manifest: PrepManifest, out_dir: Path, set_reported: bool) -> None:
    """The folder's one summary line for what the manifest lists beside the files (the skipped names were logged
    when the folder was read): a warning, unless the run already said the image set's (``report_image_set``)."""
    if not (manifest.skipped or manifest.suspicious):
        return
    logger.log(
        logging.INFO if set_reported else logging.WARNING,
        "preprocess: %s lists %d entries skipped from the image folder and %d suspicious images, converted "
        "exactly as the reference does%s",
        out_dir / MANIFEST_NAME,
        len(manifest.skipped),
        len(manifest.suspicious),
        _suspicious_text(manifest.suspicious),
    )


def _plan(
    dataset: ValDataset, batch_size: int, prep: HostPreprocess, suspicious: list[SuspiciousImage]
) -> PrepManifest:
    names = [image.name for image in dataset.images]
    per_image = prep.file_unit == "image"
    if per_image:  # ais_bench packs the files into the model's batch: the folder fits any batch size
        batch_size = 1
        files = [
            PrepFile(name=image_file_name(image.name), images=[image.name], inputs=_inputs_key([image]))
            for image in dataset.images
        ]
    else:
        files = [
            PrepFile(
                name=file_name(position),
                images=names[start : start + batch_size],
                padded_slots=max(0, start + batch_size - len(names)),
                inputs=_inputs_key(dataset.images[start : start + batch_size]),
            )
            for position, start in enumerate(range(0, len(names), batch_size))
        ]
    return PrepManifest(
        batch_size=batch_size,
        dtype=prep.dtype,
        input_shape=file_shape(prep, batch_size),
        dataset_fingerprint=dataset.fingerprint(),
        transform=transform_params(prep.dtype, prep),
        files=files,
        image_count=len(names),
        per_image=per_image,
        skipped=list(dataset.skipped),
        suspicious=suspicious,
    )


# --- settings -----------------------------------------------------------------------------------------------------


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"workers must be a positive integer, got {workers!r}; pass --workers N >= 1 or leave it "
            "unset for all cores"
        )
    return workers


# --- the run ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One output file to (re)write; crosses to a worker process, so plain strings only."""

    out_dir: str
    name: str
    paths: tuple[str, ...]
    marker: str  # "<layout>.<inputs>"
    stale_markers: tuple[str, ...]
    prep: HostPreprocess = FLOAT32  # frozen records of numbers and strings: they pickle to a worker as the rest


def _inputs_key(images: Iterable[ValImage]) -> str:
    return sha256_json([image.stat_key() for image in images])[:32]


def _fill_and_write(job: _Job, buffer: np.ndarray) -> None:
    out_dir = Path(job.out_dir)
    for stale in job.stale_markers:  # first, so a kill mid-write never leaves a marker vouching for new bytes
        (out_dir / STATE_DIR / f"{job.name}.{stale}").unlink(missing_ok=True)
    for slot, path in enumerate(job.paths):
        pixels = resize_crop(load_rgb(path), job.prep)
        if buffer.dtype == np.float32:
            normalize_into(pixels, buffer[slot], job.prep)
        else:
            buffer[slot] = pixels
    buffer[len(job.paths) :] = 0
    try:
        with atomic_path(out_dir / job.name) as tmp:
            _write_buffer(buffer, tmp)
    except OSError as exc:
        if not guards.is_no_space(exc, out_dir / job.name, buffer.nbytes):
            raise
        free = shutil.disk_usage(out_dir).free
        raise PreprocessError(
            guards.space_error(out_dir, buffer.nbytes, free, f"writing {job.name} ({buffer.nbytes} bytes)")
        ) from None
    (out_dir / STATE_DIR / f"{job.name}.{job.marker}").touch()


def _write_buffer(buffer: np.ndarray, path: Path) -> None:
    buffer.tofile(path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


_worker_buffer: np.ndarray | None = None  # one batch, allocated once per worker process and reused


def _init_worker(shape: list[int], dtype: str) -> None:
    global _worker_buffer
    _worker_buffer = np.empty(shape, dtype=dtype)


def _worker_write(job: _Job) -> str:
    assert _worker_buffer is not None, "the pool's initializer allocates the buffer"
    _fill_and_write(job, _worker_buffer)
    return job.name


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork when this process is single-threaded: workers need nothing but this module and start instantly.

    With other threads alive (an Airflow task runner, `dag.test`) a forked child can inherit a lock one of them
    held and hang forever, so workers then start from a clean forkserver instead.
    """
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context()
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")


def _run_jobs(jobs: list[_Job], manifest: PrepManifest, workers: int) -> None:
    if workers > 1 and multiprocessing.current_process().daemon:
        logger.warning("preprocess: running inside a daemonic process, which may not start workers; using 1")
        workers = 1
    # Images, not files: the rate and ETA then read as the README's (and the other steps') do.
    with Progress(f"preprocess ({len(jobs)} files of {manifest.batch_size})", sum(len(j.paths) for j in jobs)) as bar:
        if workers == 1:
            buffer = np.empty(manifest.input_shape, dtype=manifest.dtype)
            for job in jobs:
                _fill_and_write(job, buffer)
                bar.update(len(job.paths))
            return
        chunksize = max(1, 8 // manifest.batch_size)  # small files: fewer round trips to the workers
        images = {job.name: len(job.paths) for job in jobs}
        with _pool_context().Pool(
            workers, initializer=_init_worker, initargs=(manifest.input_shape, manifest.dtype)
        ) as pool:
            for name in pool.imap_unordered(_worker_write, jobs, chunksize=chunksize):
                bar.update(images[name])


def _refuse_foreign_inputs(out_dir: Path) -> None:
    """ais_bench would feed every *.bin/*.npy in the folder to the model: refuse a folder holding others' files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PreprocessError(f"output {out_dir} is a file; pass a folder for the prep files")
    if not out_dir.is_dir():
        return
    foreign = sorted(
        e.name for e in os.scandir(out_dir) if _AIS_BENCH_INPUT_RE.search(e.name) and not is_prep_file(e.name)
    )
    if foreign:
        raise PreprocessError(
            f"output folder {out_dir} holds {len(foreign)} .bin/.npy files that preprocess did not write "
            f"({', '.join(foreign[:5])}); ais_bench would read them as inputs: pick an empty folder or remove them"
        )


def _clear_stale(out_dir: Path, manifest: PrepManifest, markers: dict[str, set[str]]) -> None:
    """Before any write: drop a manifest that no longer describes the folder, files past the new file count, and
    temp files a killed run left (a live writer's are kept). Files in other shards' ranges are theirs to redo."""
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists():
        try:
            same = manifest_from_json(read_json(manifest_path)) == manifest
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if not same:
            manifest_path.unlink(missing_ok=True)
    listed = {prep_file.name for prep_file in manifest.files}
    for name, name_markers in markers.items():
        if name not in listed:  # read_markers keeps only prep file names
            for marker in name_markers:
                (out_dir / STATE_DIR / f"{name}.{marker}").unlink(missing_ok=True)
    temporaries = []
    for entry in os.scandir(out_dir):
        if is_prep_file(entry.name):
            if entry.name not in listed:
                Path(entry.path).unlink(missing_ok=True)
        elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
            target = entry.name[1:].partition(".bin.")[0] + ".bin"  # atomic_path's ".<name>.XXXX.tmp"
            if is_prep_file(target):
                temporaries.append(Path(entry.path))
    remove_stale_temporaries(temporaries)  # a killed run's; another shard's writer in flight holds its own


def preprocess(
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int,
    dtype: str | None = None,
    workers: int | None = None,
    shard: tuple[int, int] = (0, 1),
    label_file: str | os.PathLike | None = None,
    limit: int | None = None,
    model: ModelCard | str | None = None,
    set_reported: bool = False,
) -> PrepResult:
    """Write this shard's prep files and the manifest; files already done with the same inputs are skipped, so a
    rerun after a kill or an edit redoes only what changed.

    ``model`` (a card or its name; the default model when None) and ``dtype`` pick the transform, dtype and file
    layout (``prepfolder.host_preprocess``): ``dtype`` None is the model's guide, ``float32`` its float path batched
    like ConvMixer's reference, ``uint8`` the pixels its AIPP takes. A per-image layout ignores ``batch_size``.
    ``set_reported``: the run already said what the image set's headers flag (``report_image_set``), so this
    folder's note is logged at INFO, not as a warning per batch size.
    """
    batch_size = check_batch_size(batch_size)
    if dtype is not None and dtype not in INPUT_DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(INPUT_DTYPES)}")
    prep = host_preprocess(get_card(model) if model is not None else default_card(), dtype)
    workers = _check_workers(workers)
    shard = check_shard(shard)
    dataset = load_dataset(image_dir, label_file=label_file, limit=limit)
    out_dir = Path(out_dir)
    _refuse_foreign_inputs(out_dir)

    suspicious, too_large = scan_images(dataset)
    manifest = _plan(dataset, batch_size, prep, suspicious)
    owned = shard_range(len(manifest.files), shard)
    (out_dir / STATE_DIR).mkdir(parents=True, exist_ok=True)
    # One writer per shard of a folder: a zombie task and its retry would otherwise delete each other's temp files.
    lock = out_dir / STATE_DIR / f"lock.shard-{shard[0]}-of-{shard[1]}"
    try:
        with guards.exclusive(lock, f"prep folder {out_dir} (shard {shard[0]}/{shard[1]})", PREP_LOCK_WAIT_S):
            return _preprocess_locked(dataset, out_dir, manifest, owned, shard, workers, too_large, prep, set_reported)
    except TimeoutError as exc:
        raise PreprocessError(str(exc)) from None


def _preprocess_locked(
    dataset: ValDataset,
    out_dir: Path,
    manifest: PrepManifest,
    owned: range,
    shard: tuple[int, int],
    workers: int,
    too_large: list[tuple[str, str]],
    prep: HostPreprocess,
    set_reported: bool,
) -> PrepResult:
    batch_size, dtype = manifest.batch_size, manifest.dtype
    markers = read_markers(out_dir)
    _clear_stale(out_dir, manifest, markers)
    if too_large:  # after the clearing, so a manifest of the folder's older inputs does not outlive the refusal
        raise too_large_error(too_large)

    layout, nbytes = manifest.layout_id(), manifest.file_nbytes()
    jobs = []
    for position in owned:
        name = manifest.files[position].name
        images = dataset.images[position * batch_size : (position + 1) * batch_size]
        marker = f"{layout}.{manifest.files[position].inputs}"
        existing = markers.get(name, set())
        if existing == {marker} and has_size(out_dir / name, nbytes):
            continue
        jobs.append(
            _Job(
                out_dir=str(out_dir),
                name=name,
                paths=tuple(str(image.path) for image in images),
                marker=marker,
                stale_markers=tuple(existing),
                prep=prep,
            )
        )
    logger.info(
        "preprocess: %d images -> %d files of %d (%s), shard %d/%d owns %d, %d to write, %d workers",
        manifest.image_count,
        len(manifest.files),
        batch_size,
        dtype,
        shard[0],
        shard[1],
        len(owned),
        len(jobs),
        min(workers, max(1, len(jobs))),
    )
    if jobs:
        # Refuse up front, with the figure, rather than fail on a short write after minutes of decoding.
        replaced = sum(_size(out_dir / job.name) for job in jobs)
        needed = len(jobs) * nbytes - replaced + min(workers, len(jobs)) * nbytes  # + one temp file per worker
        refusal = guards.check_free_space(out_dir, needed, f"preprocess ({len(jobs)} files of {nbytes} bytes)")
        if refusal and batch_size > manifest.image_count:  # the padding, not the images, fills the disk
            raise PreprocessError(
                f"batch size {batch_size} is too large: it exceeds the set's {manifest.image_count} images, and each "
                f"file is padded to {batch_size} images ({nbytes:,} bytes), more than {out_dir}'s file system has "
                f"free; pass --batch-size {manifest.image_count} or less"
            )
        if refusal:
            raise PreprocessError(refusal)
        _run_jobs(jobs, manifest, min(workers, len(jobs)))

    manifest_path = atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    if shard[0] == 0:  # every shard writes the same manifest: one of them says what it lists
        _report_notes(manifest, out_dir, set_reported)
    return PrepResult(
        out_dir=out_dir,
        manifest_path=manifest_path,
        dtype=dtype,
        batch_size=batch_size,
        image_count=manifest.image_count,
        file_count=len(manifest.files),
        files_written=len(jobs),
        files_skipped=len(owned) - len(jobs),
        dataset_fingerprint=manifest.dataset_fingerprint,
        entries_skipped=len(manifest.skipped),
        images_suspicious=len(manifest.suspicious),
    )
