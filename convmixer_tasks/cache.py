"""One content-keyed cache for every reusable result (prep folders, validated ONNX files, compiled artifacts).

An entry's name is the hash of everything that decides its bytes, so a hit can be reused untouched and a change of
any input simply misses. Each user supplies how to read an entry back and whether it is complete; a damaged entry
(unreadable JSON, a missing key, a file whose hash no longer matches) is a miss and gets rebuilt, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from convmixer_tasks.errors import ConvMixerError
from convmixer_tasks.fileio import sha256_json

T = TypeVar("T")
KEY_CHARS = 16  # of the sha256 in entry names: short enough for paths, long enough never to collide here
# What reading a damaged or half-written entry raises.
DAMAGED = (OSError, ValueError, KeyError, TypeError, ConvMixerError)


@dataclass(frozen=True)
class ContentCache:
    root: Path

    @staticmethod
    def key(identity: Mapping[str, Any]) -> str:
        """The full key: sha256 of the identity's canonical JSON."""
        return sha256_json(identity)

    def entry(self, key: str) -> Path:
        """The entry's folder (or name stem) under the cache root."""
        return self.root / key[:KEY_CHARS]

    @staticmethod
    def lookup(read: Callable[[], T | None]) -> T | None:
        """``read()``'s result for a complete entry; None for a missing, incomplete or damaged one."""
        try:
            return read()
        except DAMAGED:
            return None
