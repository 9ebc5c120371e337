"""ais_bench's own progress, relayed to the task log at the house cadence.

ais_bench rewrites ``\\rloop inference exec: (i/N)`` on stdout after every batch run; captured in a task log that is
one line per batch (or one endless line). ``AisBenchProgress`` reads the stream as it arrives and turns the counter
into ``progress.Progress`` lines (every ~5 % or ~30 s, whichever comes later).
"""

from __future__ import annotations

import re

from convmixer_tasks.progress import Progress

LOOP_RE = re.compile(r"loop inference exec: \((\d+)/(\d+)\)")
_TAIL = 64  # enough to hold one counter split across two reads


class AisBenchProgress:
    """Feed it stdout chunks (``feed``); ``close`` when the tool exits."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress: Progress | None = None  # made at the first counter: only then is N known
        self._tail = ""

    def feed(self, chunk: str) -> None:
        text = self._tail + chunk
        matches = list(LOOP_RE.finditer(text))
        # Keep what follows the last complete counter; it may be the start of the next one.
        self._tail = text[matches[-1].end() :][-_TAIL:] if matches else text[-_TAIL:]
        if not matches:
            return
        done, total = int(matches[-1].group(1)), int(matches[-1].group(2))
        if self.progress is None or self.progress.total != total:
            self.close()  # a new counter (another pass) starts its own line series
            self.progress = Progress(self.what, total, "batch runs")
        self.progress.advance_to(done)

    def close(self, finished: bool = True) -> None:
        if self.progress is not None:
            self.progress.close(finished)
