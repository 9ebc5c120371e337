"""Small file helpers shared by every stage: content hashes and writes that never leave a half-written file."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-able object with sorted keys: a stable cache key for option sets."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block finishes.

    Readers therefore see either the old file or the complete new one, and a killed process leaves at most a
    ``.tmp`` file that the next run ignores. The writer holds an ``flock`` on its temporary file until the rename
    (the kernel drops it when the process dies), so ``remove_stale_temporaries`` tells a dead writer's leftover from
    a live writer's file in progress: concurrent writers of one target never delete each other's.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _owned_temporary(target)
    # mkstemp makes the file owner-only; results are shared between workers (other users, other hosts), so give
    # them the permissions a plain open() would under the current umask.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        try:
            if tmp.exists() and _same_file(fd, tmp):
                tmp.unlink()
        finally:
            os.close(fd)  # drops the lock, after the rename or the removal


def _owned_temporary(target: Path) -> tuple[int, Path]:
    """A new ``.<name>.XXXX.tmp`` beside ``target`` with this process's lock on it (its fd stays open)."""
    while True:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A cleaner may have taken the unlocked file between mkstemp and flock: keep it only if it is still ours.
        if _same_file(fd, Path(tmp_name)):
            return fd, Path(tmp_name)
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), path.stat())
    except FileNotFoundError:
        return False


def temporaries_of(target: str | os.PathLike) -> list[Path]:
    """The ``.tmp`` files ``atomic_path`` made for ``target`` (finished, in progress or left by a kill)."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    prefix = f".{target.name}."
    return [
        Path(entry.path)
        for entry in os.scandir(target.parent)
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp") and entry.name.count(".") >= 3
    ]


def remove_stale_temporaries(paths: list[Path]) -> int:
    """Remove those of ``paths`` no live writer holds (their writer was killed); returns how many went.

    A writer in progress holds its file's lock, so it is skipped; a file whose lock this process gets is dead and
    removed while the lock is held, so no writer can start using it in between.
    """
    removed = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # gone already (its writer finished or another cleaner was first)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if _same_file(fd, path):
                path.unlink()
                removed += 1
        finally:
            os.close(fd)
    return removed


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths and tuples to plain JSON types (step results cross process and host boundaries)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def atomic_write_json(target: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n"
    return atomic_write_bytes(target, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
