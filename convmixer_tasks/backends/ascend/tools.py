"""Running a CANN tool as a subprocess: its record (``ToolRun``), its output streamed to a relay, its process group
stopped."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class ToolRun:
    argv: list[str]
    returncode: int
    output: str  # stdout and stderr interleaved: ais_bench logs [ERROR] on stdout, tracebacks on stderr
    pid: int


def read_streaming(proc: subprocess.Popen, timeout_s: float, on_output: Callable[[str], None]) -> bytes:
    """All of ``proc``'s stdout, also handed to ``on_output`` chunk by chunk while it runs; raises TimeoutExpired."""
    chunks: list[bytes] = []
    stdout = proc.stdout
    assert stdout is not None, "run_tool opens stdout as a pipe"

    def pump() -> None:
        relay = True
        for chunk in iter(lambda: os.read(stdout.fileno(), 65536), b""):
            chunks.append(chunk)
            if relay:
                try:
                    on_output(chunk.decode(errors="replace"))
                except Exception:  # a broken relay must not stop the pipe from draining (the tool would block)
                    relay = False
                    log.debug("progress relay for %s failed; output still collected", proc.args, exc_info=True)

    reader = threading.Thread(target=pump, name="tool-output", daemon=True)
    reader.start()
    proc.wait(timeout=timeout_s)
    reader.join()
    return b"".join(chunks)


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the tool and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
