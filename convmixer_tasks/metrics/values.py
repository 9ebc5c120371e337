"""The checks a value passes before it is written to, or filters, the metrics table: one rule per column type, the
status vocabulary, dates as aware UTC; a bad value raises ``MetricsError`` naming the field and what it must be."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Float, Integer, String

from convmixer_tasks.errors import MetricsError
from convmixer_tasks.metrics.schema import STATUSES, THROUGHPUT_CHECKS, MetricsRow, UTCDateTime, ValidationRun, as_utc

_COLUMNS = {column.key: column for column in ValidationRun.__table__.columns}
_FIELDS = MetricsRow.field_names()
_REQUIRED = ("run_id", "model_variant", "backend", "batch_size", "status")
_PERCENT_FIELDS = ("top1", "top5", "baseline_top1")
_FRACTION_FIELDS = ("fidelity_top1_agreement", "flips_p_value", "reference_p_value")
_SIGNED_FIELDS = ("fidelity_min_cosine",)  # a cosine of -1..1
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_status(status: Any, name: str = "status") -> str:
    if status not in STATUSES:
        raise MetricsError(f"{name} {status!r} is not a known status; use one of {', '.join(STATUSES)}")
    return status


def _check_reasons(reasons: Any, name: str = "gate_reasons") -> list[str] | None:
    if reasons is None:
        return None
    if (
        isinstance(reasons, str)
        or not isinstance(reasons, (list, tuple))
        or not all(isinstance(reason, str) for reason in reasons)
    ):
        raise MetricsError(f"{name} must be a list of strings, got {reasons!r}")
    return list(reasons)


def _check_fingerprint(value: Any) -> dict[str, Any]:
    """A flat mapping of names to strings, numbers, None or lists of numbers (the measurement record's confirmation
    figures): what the environment was and how it was measured (see fingerprint.py)."""

    def plain(item: Any) -> bool:
        return item is None or isinstance(item, (str, int, float))

    def numbers_list(item: Any) -> bool:
        return isinstance(item, list) and all(
            isinstance(one, (int, float)) and not isinstance(one, bool) for one in item
        )

    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and (plain(item) or numbers_list(item)) for key, item in value.items()
    ):
        raise MetricsError(f"fingerprint must map names to strings/numbers/None/lists of numbers, got {value!r}")
    return dict(value)


def _check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MetricsError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise MetricsError(f"{name} must be {bound}, got {value}")
    return int(value)  # numpy ints → int: psycopg2 cannot adapt numpy scalars


def _check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise MetricsError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if name in _PERCENT_FIELDS and not 0.0 <= value <= 100.0:
        raise MetricsError(f"{name} is a percentage (0..100), got {value}; multiply a 0..1 fraction by 100")
    if name in _FRACTION_FIELDS and not 0.0 <= value <= 1.0:
        raise MetricsError(f"{name} is a fraction or probability (0..1), got {value}")
    if name not in _PERCENT_FIELDS and name not in _SIGNED_FIELDS and value < 0:
        raise MetricsError(f"{name} cannot be negative, got {value}")
    return value


def parse_datetime(value: Any, name: str) -> tuple[datetime, bool]:
    """``value`` (datetime, date or ISO-8601 string) as an aware UTC datetime, and whether it was a bare date."""
    is_date = isinstance(value, date) and not isinstance(value, datetime)
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed: datetime | date = datetime.fromisoformat(text)
        except ValueError:
            raise MetricsError(f"{name} {value!r} is not a date; use e.g. 2026-11-25 or 2026-11-25T08:00:00Z") from None
        is_date = len(text) <= len("2026-11-25")
        value = parsed
    if is_date:
        return datetime(value.year, value.month, value.day, tzinfo=UTC), True
    if not isinstance(value, datetime):
        raise MetricsError(f"{name} must be a date/time or ISO-8601 string, got {value!r}")
    value = as_utc(value)  # pendulum (Airflow) datetimes become plain ones below
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, tzinfo=UTC
    ), False


def _check_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "status":
        return _check_status(value)
    if name == "gate_reasons":
        return _check_reasons(value)
    if name in ("evidence", "energy"):
        if not isinstance(value, Mapping):
            raise MetricsError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
        return dict(value)
    if name == "fingerprint":
        return _check_fingerprint(value)
    if name == "stage_seconds":  # each stage's wall seconds: {"preprocess": 1.2, "infer": 3.4, "evaluate": 0.5}
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise MetricsError(f"stage_seconds must map stage names to seconds, got {value!r}")
        return {key: _check_float(seconds, f"stage_seconds[{key!r}]") for key, seconds in value.items()}
    if name == "throughput_check" and value not in THROUGHPUT_CHECKS:
        raise MetricsError(f"throughput_check {value!r} is not known; use one of {', '.join(THROUGHPUT_CHECKS)}")
    column_type = _COLUMNS[name].type
    if isinstance(column_type, UTCDateTime):
        return parse_datetime(value, name)[0]
    if isinstance(column_type, Integer):
        return _check_int(value, name, minimum=1 if name == "batch_size" else 0)
    if isinstance(column_type, Float):
        return _check_float(value, name)
    if isinstance(column_type, String):
        if not isinstance(value, str) or (name in _REQUIRED and not value.strip()):
            raise MetricsError(f"{name} must be a non-empty string, got {value!r}")
        if column_type.length and len(value) > column_type.length:
            raise MetricsError(f"{name} is {len(value)} characters; the column holds {column_type.length}")
        if name.endswith("_sha256") and not _SHA256_RE.fullmatch(value):
            raise MetricsError(f"{name} must be a lowercase hex SHA-256 (64 characters), got {value!r}")
        return value
    raise AssertionError(f"no validation rule for column {name}")  # a new column needs one
