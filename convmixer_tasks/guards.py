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


@contextlib.contextmanager
def exclusive(lock_path: Path, what: str, wait_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block (released when the process dies, so a killed
    holder never blocks anyone). A second writer waits up to ``wait_s`` seconds, logging who holds it, then gives up
    with a message that names the holder."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 — held open for the whole block
    try:
        deadline = time.monotonic() + wait_s
        logged = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(lock_path)
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{what} is being written by {holder}; wait for it to finish (or stop it), then re-run"
                    ) from None
                if not logged:
                    log.warning("%s is being written by %s; waiting up to %.0f s", what, holder, wait_s)
                    logged = True
                time.sleep(LOCK_POLL_S)
        handle.seek(0)
        handle.truncate()
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        handle.write(json.dumps(stamp))
        handle.flush()
        yield
    finally:
        handle.close()  # closing drops the lock
