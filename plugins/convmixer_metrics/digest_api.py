"""The digest section's endpoint: ``convmixer_tasks.run.digest.build`` over the last N days, as the digest DAG sends it.

Kept in its own module (and ``static/digest.js``) so the history page's own code stays as it is."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

MAX_DAYS = 366


def add_routes(router: APIRouter, db_url: Callable[[], str], call_store: Callable[..., Any], headers: dict) -> None:
    @router.get("/api/digest")
    def zoo_digest(days: Annotated[int | None, Query(ge=1, le=MAX_DAYS)] = None) -> JSONResponse:
        """Per model × chip × batch size × precision over the last ``days`` (default ``[convmixer] digest_days``):
        the latest verdict, the change over the period, regressions and who accepted which run as a baseline."""
        from airflow.configuration import conf

        from convmixer_tasks.run import digest
        from convmixer_tasks.run.settings import airflow_conf_reader, load_alert_settings

        period = days or load_alert_settings(airflow_conf_reader(conf)).digest_days
        now = datetime.now(UTC)
        empty = digest.Digest(since=now.isoformat(), until=now.isoformat(), lines=())
        summary = call_store(db_url, lambda url: digest.build(url, now, period), empty=empty)
        return JSONResponse(jsonable_encoder({"days": period, **summary.values()}), headers=headers)
