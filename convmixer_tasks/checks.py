"""Validators shared by every entry point (CLI flags, DAG params, library calls): one message per kind of mistake."""

from __future__ import annotations

from typing import Any

from convmixer_tasks.errors import ConfigError

# The batch sizes a run may ask for (the DAG's Param choices, the settings' batch_sizes).
BATCH_SIZE_CHOICES: tuple[int, ...] = (1, 4, 8, 16, 32, 64)


def check_positive_int(value: Any, name: str, fix: str) -> int:
    """``value`` as a positive int, or a ConfigError naming ``name`` and ``fix``. ``True`` is not a number here."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} {value!r} is invalid; {fix}")
    return value


def check_batch_size(batch_size: Any) -> int:
    return check_positive_int(batch_size, "batch size", "pass a positive integer (--batch-size)")
