"""The per-image predictions stored beside each metrics row, and the rows a row is paired with: the previous ``ok``
run on the same model, backend, precision and batch size, and the reference run (the ONNX in fp32 on ONNX Runtime,
same checkpoint). ``evidence.decode`` reads a blob back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from convmixer_tasks.backends.precision import ONNXRUNTIME_PRECISION
from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.engine import _db_errors, get_engine
from convmixer_tasks.metrics.queries import _NEWEST_FIRST, _key, _one_row_id, describe_key
from convmixer_tasks.metrics.schema import STATUS_OK, RunPredictions, ValidationRun, utcnow
from convmixer_tasks.metrics.url import mask_url
from convmixer_tasks.metrics.values import _check_value, parse_datetime

REFERENCE_BACKEND = "onnxruntime"
# Written by the gate after pairing; record_run leaves them unset.
EVIDENCE_COLUMNS = ("flips_p_value", "reference_p_value", "evidence")


def store_predictions(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    blob: bytes,
    image_count: int,
    precision_mode: str | None = None,
    model_variant: str | None = None,
    chip: str | None = None,
) -> int:
    """Put the row's predictions blob in place (replacing a retried attempt's); returns the stored size in bytes.
    Without ``precision_mode`` (and ``model_variant``) the run × batch size must have a single row."""
    what = describe_key(run_id, batch_size, backend, precision_mode, model_variant)
    with _db_errors(url, f"store predictions of {what}"), Session(get_engine(url)) as session, session.begin():
        row_id = _one_row_id(session, run_id, batch_size, backend, precision_mode, model_variant, chip)
        if row_id is None:
            raise MetricsError(f"no metrics row for {what} in {mask_url(url)}; record the row before its predictions")
        existing = session.get(RunPredictions, row_id)
        if existing is None:
            session.add(RunPredictions(run_row_id=row_id, image_count=image_count, data=blob, created_at=utcnow()))
        else:
            existing.image_count, existing.data, existing.created_at = image_count, blob, utcnow()
    return len(blob)


def load_predictions(url: str, row_id: int) -> bytes | None:
    with _db_errors(url, f"read predictions of row {row_id}"), Session(get_engine(url)) as session:
        stored = session.get(RunPredictions, row_id)
        return None if stored is None else bytes(stored.data)


def _newest(url: str, action: str, clauses: list[Any]) -> dict[str, Any] | None:
    """The newest row matching ``clauses`` that has predictions stored."""
    with _db_errors(url, action), Session(get_engine(url)) as session:
        query = (
            select(ValidationRun)
            .join(RunPredictions, RunPredictions.run_row_id == ValidationRun.id)
            .where(*clauses)
            .order_by(*_NEWEST_FIRST)
            .limit(1)
        )
        run = session.scalars(query).one_or_none()
        return None if run is None else run.to_dict()


def previous_ok_row(url: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The newest ``ok`` row before this run's on the same model, backend, precision, batch size and image count."""
    return _newest(
        url,
        "read the previous ok run",
        [
            ValidationRun.model_variant == row["model_variant"],
            ValidationRun.backend == row["backend"],
            ValidationRun.precision_mode == row["precision_mode"],  # None → IS NULL (rows from before 0003)
            ValidationRun.batch_size == row["batch_size"],
            ValidationRun.image_count == row["image_count"],
            ValidationRun.status == STATUS_OK,
            ValidationRun.run_id != row["run_id"],
            ValidationRun.logical_date <= parse_datetime(row["logical_date"], "logical_date")[0],
        ],
    )


def reference_row(url: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The newest ``ok`` ONNX Runtime (fp32) row of the same checkpoint and image count, any batch size, from
    another run (for an ONNX Runtime row that is its own previous reference run)."""
    if row["checkpoint_sha256"] is None:
        return None
    return _newest(
        url,
        "read the reference run",
        [
            ValidationRun.model_variant == row["model_variant"],
            ValidationRun.checkpoint_sha256 == row["checkpoint_sha256"],
            ValidationRun.backend == REFERENCE_BACKEND,
            ValidationRun.precision_mode == ONNXRUNTIME_PRECISION,
            ValidationRun.image_count == row["image_count"],
            ValidationRun.status == STATUS_OK,
            ValidationRun.run_id != row["run_id"],
        ],
    )


def store_evidence(
    url: str,
    run_id: str,
    batch_size: int,
    backend: str,
    values: dict[str, Any],
    precision_mode: str | None = None,
    model_variant: str | None = None,
    chip: str | None = None,
) -> None:
    """Set the gate's pairing results (``EVIDENCE_COLUMNS``) on a recorded row (without ``precision_mode`` and
    ``model_variant``, the run × batch size's only row)."""
    unknown = sorted(set(values) - set(EVIDENCE_COLUMNS))
    if unknown:
        raise MetricsError(f"store_evidence got unknown column(s) {', '.join(unknown)}; use {EVIDENCE_COLUMNS}")
    checked = {name: _check_value(name, value) for name, value in values.items()}
    what = describe_key(run_id, batch_size, backend, precision_mode, model_variant)
    with _db_errors(url, f"store the evidence of {what}"), Session(get_engine(url)) as session, session.begin():
        # Write first (a read first can deadlock on SQLite against a concurrent writer); more than one row matched
        # means several precisions and no mode named: refused, and the transaction rolls back.
        result = session.execute(
            update(ValidationRun)
            .where(*_key(run_id, batch_size, backend, precision_mode, model_variant, chip))
            .values(**checked, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        updated = getattr(result, "rowcount", 0)
        if updated > 1:  # _one_row_id raises: the transaction rolls back
            _one_row_id(session, run_id, batch_size, backend, precision_mode, model_variant, chip)
        if updated == 0:
            raise MetricsError(f"no metrics row for {what} in {mask_url(url)}; record the row before its evidence")
