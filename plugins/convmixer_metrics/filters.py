"""What the page may ask for, validated once at the edge (bad input → 422 with a message, never a query)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import HTTPException, Query, status

# Names as the pipeline writes them (model variants, device names such as "Ascend310P3" or "cpu"): plain
# identifiers, so a filter can never smuggle anything odd into a query or a page.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:+\- ]{0,199}$"
BACKENDS = Literal["onnxruntime", "ascend"]
STATUSES = Literal["ok", "regressed", "failed"]
MAX_PAGE = 500
MAX_BATCH_SIZE = 4096


@dataclass(frozen=True)
class RunFilters:
    """The filters shared by the table, the charts and the CSV (keyword arguments of the store's query API)."""

    model: str | None = None
    backend: str | None = None
    device: str | None = None
    batch_size: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None

    def as_query(self) -> dict:
        return asdict(self)


def _utc(value: datetime | None) -> datetime | None:
    # The store's dates are UTC; a date-time without an offset from the page's date inputs is taken as UTC too.
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def run_filters(
    model: Annotated[str | None, Query(pattern=NAME_PATTERN, description="model variant")] = None,
    backend: Annotated[BACKENDS | None, Query()] = None,
    device: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=MAX_BATCH_SIZE)] = None,
    since: Annotated[datetime | None, Query(description="ISO-8601; runs at or after")] = None,
    until: Annotated[datetime | None, Query(description="ISO-8601; runs at or before")] = None,
    status_: Annotated[STATUSES | None, Query(alias="status")] = None,
) -> RunFilters:
    since, until = _utc(since), _utc(until)
    if since and until and since > until:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"'since' ({since.isoformat()}) is after 'until' ({until.isoformat()}); swap them or widen the range",
        )
    return RunFilters(model, backend, device, batch_size, since, until, status_)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 25,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page:
    return Page(limit, offset)
