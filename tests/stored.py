"""Rows a test has just recorded, read back: a missing row fails the test at the read, naming the row."""

from __future__ import annotations

from typing import Any

from convmixer_tasks import metrics


def stored_run(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    precision_mode: str | None = None,
    model_variant: str | None = None,
) -> dict[str, Any]:
    """``metrics.get_run`` of a row that must exist."""
    row = metrics.get_run(url, run_id, batch_size, backend, precision_mode, model_variant)
    assert row is not None, f"no metrics row for run {run_id} (batch size {batch_size}, {backend}, {precision_mode})"
    return row


def stored_row(url: str, row_id: int) -> dict[str, Any]:
    """``metrics.get_row`` of a row that must exist."""
    row = metrics.get_row(url, row_id)
    assert row is not None, f"no metrics row with id {row_id}"
    return row
