"""What the page may ask for, validated once at the edge (bad input → 422 with a message, never a query)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import HTTPException, Query, status

from convmixer_tasks import metrics
from convmixer_tasks.backends.catalog import BACKEND_NAMES
from convmixer_tasks.errors import MetricsError

# Model variants are identifiers (convmixer_1536_20). Device names are whatever the hardware reports
# ("Ascend310P3", "Intel(R) Xeon(R) ... @ 2.90GHz"), so they only have to be printable and fit the column.
# Filters reach the store as bound parameters, never as SQL text.
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
DEVICE_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
# Literal over the registries' runtime tuples: FastAPI validates against them; mypy cannot read a runtime tuple.
BACKENDS = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
STATUSES = Literal[metrics.STATUSES]  # type: ignore[valid-type]
MAX_PAGE = metrics.MAX_LIMIT  # the store's own cap on one page
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class RunFilters:
    """The filters shared by the table, the charts and the CSV (keyword arguments of the store's query API)."""

    model: str | None = None
    backend: str | None = None
    device: str | None = None
    batch_size: int | None = None
    since: datetime | None = None
    until: datetime | None = None  # a bare date was turned into the last microsecond of that day
    status: str | None = None

    def as_query(self) -> dict:
        return asdict(self)


def run_filters(
    model: Annotated[str | None, Query(pattern=MODEL_PATTERN, description="model variant")] = None,
    backend: Annotated[BACKENDS | None, Query()] = None,
    device: Annotated[str | None, Query(pattern=DEVICE_PATTERN)] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=MAX_BATCH_SIZE)] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO-8601 date or date-time; from")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO-8601 date (whole day) or date-time")] = None,
    status_: Annotated[STATUSES | None, Query(alias="status")] = None,
) -> RunFilters:
    try:  # the store's rule: a bare To date covers that whole day
        start, end = metrics.time_range(since, until, labels=("From", "To"))
    except MetricsError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return RunFilters(model, backend, device, batch_size, start, end, status_)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 25, offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0
) -> Page:
    return Page(limit, offset)
