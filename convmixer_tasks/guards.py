"""Guards a step takes before it writes: enough free space for what it will write, and one writer per output.

Both turn what would be a confusing mid-run failure (a short write, a temp file deleted under another writer)
into one line up front that names the folder, the figure or the holder, and the fix. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOCK_POLL_S = 1.0


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def space_error(folder: Path, needed: int, free: int, what: str) -> str:
    return (
        f"no space left on device for {folder}: {what} needs {_mb(needed)} and the file system has {_mb(free)} "
        "free; free some space or choose a folder on a larger file system"
    )


def check_free_space(folder: Path, needed: int, what: str) -> str | None:
    """The refusal message when ``folder``'s file system has less than ``needed`` bytes free, else None."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return space_error(folder, needed, free, what) if free < needed else None


def is_no_space(exc: OSError, path: Path, needed: int) -> bool:
    """Whether a failed write was the disk filling up: ENOSPC/EDQUOT, or numpy's errno-less short write
    ("N requested and M written") on a file system that now has less than ``needed`` free."""
    if exc.errno in NO_SPACE_ERRNOS:
        return True
    if exc.errno is None and "requested and" in str(exc):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(path.parent).free < needed
    return False


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (since {info.get('since', '?')})"


def _acquire(fd: int, what: str, holder: str | None, lock_path: Path, wait_s: float) -> None:
    """Take an exclusive ``flock`` on ``fd``, waiting up to ``wait_s`` seconds (logging once who holds it)."""
    deadline = time.monotonic() + wait_s
    logged = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            who = holder or _holder(lock_path)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{what} is being written by {who}; wait for it to finish (or stop it), then re-run"
                ) from None
            if not logged:
                log.warning("%s is being written by %s; waiting up to %.0f s", what, who, wait_s)
                logged = True
            time.sleep(LOCK_POLL_S)


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str, wait_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block (released when the process dies, so a killed
    holder never blocks anyone). A second writer waits up to ``wait_s`` seconds, logging who holds it, then gives up
    with a message that names the holder."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 — held open for the whole block
    try:
        _acquire(handle.fileno(), what, None, lock_path, wait_s)
        handle.seek(0)
        handle.truncate()
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        handle.write(json.dumps(stamp))
        handle.flush()
        yield
    finally:
        handle.close()  # closing drops the lock


@contextlib.contextmanager
def exclusive_folder(folder: Path, what: str, wait_s: float) -> Iterator[None]:
    """``exclusive`` on the folder itself: no lock file is left among the results. A file system that cannot lock a
    folder (NFS without flock emulation for read-only handles) runs the block unguarded, as before the lock."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            _acquire(fd, what, "another process", folder, wait_s)
        except OSError as exc:  # EBADF/ENOLCK: not lockable here
            log.debug("cannot lock %s (%s); %s runs without the lock", folder, exc, what)
        yield
    finally:
        os.close(fd)
