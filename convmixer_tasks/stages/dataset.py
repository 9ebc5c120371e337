"""ImageNet val as users have it: discovery (flat or synset folders), ``val_label.txt`` parsing, validation and
fingerprint.

Every problem a folder can have is collected first and reported in ONE :class:`DatasetError`, so a user fixes the
dataset in one go instead of re-running once per broken file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from convmixer_tasks.errors import ConfigError, DatasetError
from convmixer_tasks.fileio import sha256_json

# group(1) is the 8-digit index; the reference orders images by it.
log = logging.getLogger(__name__)
VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(?:jpeg|jpg)$", re.IGNORECASE)
# Label lines name the image; some label files drop the extension, which costs nothing to accept.
_LABEL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})(?:\.(?:jpeg|jpg))?$", re.IGNORECASE)


def val_name(index: int, suffix: str = ".JPEG") -> str:
    """The ImageNet val file name for an 8-digit index (``suffix=""`` for the bare stem used in messages)."""
    return f"ILSVRC2012_val_{int(index):08d}{suffix}"


SHOW_FIRST = 5  # offenders listed per kind of problem; the count says how many there are in all
SHOW_SKIPPED = 10  # skipped entries named in the log line (the prep manifest lists them all)


@dataclass(frozen=True)
class ValImage:
    index: int
    name: str
    path: Path
    label: int | None
    size: int  # stat'ed once when the dataset is loaded: the fingerprint and the prep cache keys share it
    mtime_ns: int

    def stat_key(self) -> tuple[str, int, int]:
        """(name, size, mtime_ns): what says "this file changed" without reading a pixel."""
        return self.name, self.size, self.mtime_ns


@dataclass(frozen=True)
class SkippedEntry:
    """Something in the image folder that is not part of the set, and why (the prep manifest lists these)."""

    entry: str  # path relative to the image folder
    reason: str  # "not named ILSVRC2012_val_*" or "not a regular file"


@dataclass(frozen=True)
class ValDataset:
    image_dir: Path
    label_file: Path | None
    images: tuple[ValImage, ...]
    skipped: tuple[SkippedEntry, ...] = ()  # sorted by entry

    def fingerprint(self) -> str:
        """sha256 over (name, size, mtime_ns, label) in index order; cheap (stats only), for caching."""
        return sha256_json([[*image.stat_key(), image.label] for image in self.images])


class _Problems:
    """Offenders grouped by kind, rendered as one message with counts and the first few of each kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[str]] = {}

    def add(self, kind: str, offender: str) -> None:
        self.kinds.setdefault(kind, []).append(offender)

    def extend(self, other: _Problems) -> None:
        for kind, offenders in other.kinds.items():
            self.kinds.setdefault(kind, []).extend(offenders)

    def raise_if_any(self, what: str, fix: str) -> None:
        if not self.kinds:
            return
        parts = []
        for kind, offenders in self.kinds.items():
            shown = ", ".join(offenders[:SHOW_FIRST])
            more = f" (first {SHOW_FIRST} shown)" if len(offenders) > SHOW_FIRST else ""
            parts.append(f"{len(offenders)} {kind}{more}: {shown}")
        raise DatasetError(f"{what}: " + "; ".join(parts) + f". {fix}")


def _parse_labels(label_file: Path, num_classes: int) -> tuple[dict[int, tuple[int, int]], _Problems]:
    """Index -> (label, line number), plus every malformed / out-of-range / duplicate line found."""
    problems = _Problems()
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"label file {label_file} does not exist; pass the val_label.txt path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"label file {label_file} cannot be read as UTF-8 text ({exc}); pass val_label.txt") from exc
    labels: dict[int, tuple[int, int]] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        match = _LABEL_NAME_RE.match(fields[0]) if len(fields) == 2 else None
        if match is None or not re.fullmatch(r"[+-]?\d+", fields[1]):
            problems.add(
                "malformed label lines (want 'ILSVRC2012_val_00000001.JPEG 65')",
                f"line {line_no}: {line.strip()[:60]!r}",
            )
            continue
        index, label = int(match.group(1)), int(fields[1])
        if not 0 <= label < num_classes:
            problems.add(f"labels outside 0..{num_classes - 1}", f"line {line_no}: {label}")
        elif index in labels:
            problems.add(
                "duplicate label lines for one image", f"line {line_no} repeats {fields[0]} of line {labels[index][1]}"
            )
        else:
            labels[index] = (label, line_no)
    return labels, problems


def read_labels(label_file: str | os.PathLike, num_classes: int = 1000) -> dict[int, int]:
    """``val_label.txt`` as {8-digit index: label}; any bad line raises one DatasetError naming the lines."""
    label_file = Path(label_file)
    labels, problems = _parse_labels(label_file, num_classes)
    problems.raise_if_any(f"label file {label_file} is malformed", "Fix those lines.")
    return {index: label for index, (label, _) in labels.items()}


def _discover(image_dir: Path) -> tuple[list[tuple[int, str, Path]], list[SkippedEntry]]:
    """(index, name, path) of every val image directly in ``image_dir`` or one level down (synset folders), and
    what was left out (hidden entries and the synset folders themselves are not "left out")."""
    found = []
    folders = [image_dir]
    with os.scandir(image_dir) as entries:
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                folders.append(Path(entry.path))
    skipped = []
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                match = VAL_NAME_RE.match(entry.name)
                if match and entry.is_file():
                    found.append((int(match.group(1)), entry.name, Path(entry.path)))
                elif not entry.name.startswith(".") and not (folder == image_dir and entry.is_dir()):
                    kind = "not a regular file" if match or not entry.is_file() else "not named ILSVRC2012_val_*"
                    skipped.append(SkippedEntry(_relative(Path(entry.path), image_dir), kind))
    skipped.sort(key=lambda skip: skip.entry)
    if skipped:
        # Said once, with names: a "… copy.JPEG" or a FIFO left out of the evaluated set should not go unnoticed.
        shown = ", ".join(f"{skip.entry} ({skip.reason})" for skip in skipped[:SHOW_SKIPPED])
        more = f", … (+{len(skipped) - SHOW_SKIPPED} more)" if len(skipped) > SHOW_SKIPPED else ""
        log.warning("skipped %d entries in %s: %s%s", len(skipped), image_dir, shown, more)
    found.sort(key=lambda item: (item[0], str(item[2])))
    return found, skipped


def _val_image(index: int, name: str, path: Path, label: int | None) -> ValImage:
    stat = path.stat()
    return ValImage(index=index, name=name, path=path, label=label, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def load_dataset(
    image_dir: str | os.PathLike,
    label_file: str | os.PathLike | None = None,
    limit: int | None = None,
    num_classes: int = 1000,
) -> ValDataset:
    """Validated images sorted by index (the first ``limit`` only, if given), with labels when a label file is given.

    With ``limit``, labels of images past the kept range are not "labels without images": a quick run on the first N
    images of a full val set is fine.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of images, got {limit!r}; leave it unset for all images")
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} does not exist or is not a folder; pass the ImageNet val folder")
    found, skipped = _discover(image_dir)
    if not found:
        raise DatasetError(
            f"image folder {image_dir} holds no ILSVRC2012_val_XXXXXXXX.JPEG images (flat or in synset sub-folders); "
            "pass the ImageNet val folder"
        )

    problems = _Problems()
    by_index: dict[int, list[Path]] = {}
    for index, _, path in found:
        by_index.setdefault(index, []).append(path)
    for index, paths in by_index.items():
        if len(paths) > 1:
            problems.add(
                "duplicate image indices", f"{index:08d} ({' and '.join(_relative(p, image_dir) for p in paths)})"
            )
    found = [item for item in found if by_index[item[0]][0] == item[2]]  # one per index, so the limit is exact
    if limit is not None:
        found = found[:limit]

    labels: dict[int, tuple[int, int]] = {}
    if label_file is not None:
        label_file = Path(label_file)
        labels, label_problems = _parse_labels(label_file, num_classes)
        problems.extend(label_problems)
        for index, name, _ in found:
            if index not in labels:
                problems.add("images without a label", name)
        kept = {index for index, _, _ in found}
        last_kept = found[-1][0]
        for index, (_, line_no) in sorted(labels.items()):
            if index not in kept and (limit is None or index <= last_kept):
                problems.add("labels without an image", f"line {line_no}: {val_name(index, '')}")

    where = f"dataset {image_dir}" + (f" with labels {label_file}" if label_file is not None else "")
    problems.raise_if_any(f"{where} is inconsistent", "Fix the folder or the label file and run again.")
    images = tuple(
        _val_image(index, name, path, labels[index][0] if label_file is not None else None)
        for index, name, path in found
    )
    return ValDataset(image_dir=image_dir, label_file=label_file, images=images, skipped=tuple(skipped))
