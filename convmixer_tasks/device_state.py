"""What a backend says about its device's activity before a benchmark: the one type the backend interface and the
quiet-device check share (it sits below both, so neither imports the other for it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceState:
    busy: bool
    detail: str  # e.g. "AI Core 87 %; process 48213 python3 (2048 MB)", or "idle"
    known: bool = True  # False: the backend could not tell (not waited for; the row says it was not checked)
