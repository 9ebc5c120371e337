"""Progress of the long steps, for the person waiting on them.

In a task log (stderr is not a terminal) a step logs a line every ~5 % or ~30 s, whichever comes later, with
done/total, rate and ETA, so a seven-hour ONNX Runtime run says how far it is without flooding the log; a step that
finishes under the threshold logs nothing. On an interactive terminal a tqdm bar replaces the lines (its carriage
returns would fill a captured log). Work that reports no counts (torch.onnx.export, ATC) uses ``working``: a line
every ~30 s naming what runs and for how long.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

LOG = logging.getLogger("convmixer_tasks.progress")
EVERY_FRACTION = 0.05
EVERY_SECONDS = 30.0


def duration(seconds: float) -> str:
    """``4h07m``, ``3m05s``, ``42s``: short enough to scan in a log line."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def interactive() -> bool:
    """A person is watching stderr (not Airflow's log capture, a pipe or a file)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams (pytest capture, daemons)
        return False


class Progress:
    """Counted progress: ``update(n)`` / ``advance_to(done)`` as work completes; use as a context manager."""

    def __init__(
        self,
        what: str,
        total: int,
        unit: str = "images",
        *,
        logger: logging.Logger | None = None,
        every_fraction: float | None = None,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, max(0, int(total)), unit
        self.logger = logger or LOG
        # Read at construction, not import, so a test (or a caller) can change the module's cadence.
        self.every_fraction = EVERY_FRACTION if every_fraction is None else every_fraction
        self.every_seconds = EVERY_SECONDS if every_seconds is None else every_seconds
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.lines = 0  # log lines written so far
        self._logged_done = 0
        self._logged_at = self.started
        self._bar: Any = None
        if interactive() if bar is None else bar:
            from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs; only the constructor is used

            self._bar = tqdm(total=self.total, desc=what, unit=unit.rstrip("s") or unit, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.advance_to(self.done + n)

    def advance_to(self, done: int) -> None:
        done = min(int(done), self.total)
        if done <= self.done:
            return
        if self._bar is not None:
            self._bar.update(done - self.done)
        self.done = done
        if self._bar is None and self._due():
            self._log()

    def _due(self) -> bool:
        enough_work = self.done - self._logged_done >= self.every_fraction * self.total
        return enough_work and self.clock() - self._logged_at >= self.every_seconds

    def _log(self) -> None:
        now = self.clock()
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        percent = 100.0 * self.done / self.total if self.total else 100.0
        self.logger.info(
            "%s: %d/%d %s (%.0f%%), %s %s/s, elapsed %s, ETA %s",
            self.what,
            self.done,
            self.total,
            self.unit,
            percent,
            _rate(rate),
            self.unit,
            duration(elapsed),
            eta,
        )
        self.lines += 1
        self._logged_done, self._logged_at = self.done, now

    def close(self, finished: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif finished and self.lines and self._logged_done < self.done:
            self._log()  # a step that reported progress also reports where it ended

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(finished=exc_type is None)


@contextmanager
def working(what: str, *, logger: logging.Logger | None = None, every_seconds: float | None = None) -> Iterator[None]:
    """For work that reports no counts: ``<what>: running for 1m00s`` every ~30 s until it returns (none if quicker)."""
    logger = logger or LOG
    every = EVERY_SECONDS if every_seconds is None else every_seconds
    started = time.monotonic()
    stop = threading.Event()
    beats = 0

    def beat() -> None:
        nonlocal beats
        while not stop.wait(every):
            logger.info("%s: running for %s", what, duration(time.monotonic() - started))
            beats += 1

    thread = threading.Thread(target=beat, name="convmixer-progress", daemon=True)
    thread.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        stop.set()
        thread.join()
        if beats and ok:
            logger.info("%s: done in %s", what, duration(time.monotonic() - started))
