"""What the page may ask for, validated once at the edge (bad input → 422 with a message, never a query)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Literal

from fastapi import HTTPException, Query, status

from convmixer_tasks import flow, metrics

# Model variants are identifiers (convmixer_1536_20). Device names are whatever the hardware reports
# ("Ascend310P3", "Intel(R) Xeon(R) ... @ 2.90GHz"), so they only have to be printable and fit the column.
# Filters reach the store as bound parameters, never as SQL text.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
DEVICE_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
BACKENDS = Literal[tuple(flow.BACKEND_NAMES)]  # the DAG's backend choices
STATUSES = Literal[tuple(metrics.STATUSES)]
MAX_PAGE = metrics.MAX_LIMIT  # the store's own cap on one page
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class RunFilters:
    """The filters shared by the table, the charts and the CSV (keyword arguments of the store's query API)."""

    model: str | None = None
    backend: str | None = None
    device: str | None = None
    batch_size: int | None = None
    since: date | datetime | None = None  # a bare date: from that day's start
    until: datetime | None = None  # a bare date was turned into the last microsecond of that day
    status: str | None = None

    def as_query(self) -> dict:
        return asdict(self)


# The page labels ``since`` and ``until`` From and To; messages name both, for the page and for scripts.
LABELS = {"since": "From", "until": "To"}


def _when(name: str, text: str | None) -> date | datetime | None:
    """ISO-8601 date or date-time → date, or aware UTC datetime (an offset-less time is taken as UTC)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if len(text) == len("2026-11-25"):
            return date.fromisoformat(text)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{LABELS[name]} ({name}) {text!r} is not a date; use e.g. 2026-11-25 or 2026-11-25T08:00:00Z",
        ) from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _day_start(value: date | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.combine(value, time(), timezone.utc)


def _day_end(value: date | datetime) -> datetime:
    """A bare ``until`` date means through the end of that day (what the page's date picker means)."""
    return value if isinstance(value, datetime) else _day_start(value) + timedelta(days=1, microseconds=-1)


def run_filters(
    model: Annotated[str | None, Query(pattern=MODEL_PATTERN, description="model variant")] = None,
    backend: Annotated[BACKENDS | None, Query()] = None,
    device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=MAX_BATCH_SIZE)] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO-8601 date or date-time; from")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO-8601 date (whole day) or date-time")] = None,
    status_: Annotated[STATUSES | None, Query(alias="status")] = None,
) -> RunFilters:
    start, end = _when("since", since), _when("until", until)
    end = None if end is None else _day_end(end)
    if start and end and _day_start(start) > end:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"From ({since}) is after To ({until}); swap them or widen the range",
        )
    return RunFilters(model, backend, device, batch_size, start, end, status_)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 25,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    return Page(limit, offset)
