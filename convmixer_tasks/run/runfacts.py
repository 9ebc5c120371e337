"""What the metrics rows say about the Airflow run (or the one-process run) they belong to, read off the DagRun,
and the failure hook that names the run in the log. No Airflow import: the DAG passes its objects in."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the records load with the first RunFacts: the DAG file reads log_task_failure at parse time
    from convmixer_tasks.run.records import RunFacts

log = logging.getLogger(__name__)


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()


def run_facts(
    run_id: str,
    dag_id: str | None,
    logical_date: datetime | str | None,
    started_at: datetime | str | None,
    trigger: str | None = None,
) -> RunFacts:
    """What the metrics rows say about the Airflow run (dates as ISO strings: they travel through XCom)."""
    from convmixer_tasks.run.records import RunFacts

    return RunFacts(
        run_id=run_id, dag_id=dag_id, logical_date=_iso(logical_date), started_at=_iso(started_at), trigger=trigger
    )


def log_task_failure(context: Mapping[str, Any]) -> None:
    """Task failure hook: one log line naming the run, task and error (add notifiers beside it in the DAG)."""
    ti = context.get("ti")
    log.error(
        "convmixer_validation run %s: task %s failed: %s",
        context.get("run_id"),
        getattr(ti, "task_id", "?"),
        context.get("exception"),
    )


def run_facts_of(dag_run: Any) -> RunFacts:
    """``run_facts`` of an Airflow DagRun (manual runs in Airflow 3 may have no logical date: use run_after)."""
    run_type = getattr(dag_run, "run_type", None)  # an enum in Airflow; its value is what the row records
    return run_facts(
        dag_run.run_id,
        dag_run.dag_id,
        dag_run.logical_date or dag_run.run_after,
        dag_run.start_date,
        getattr(run_type, "value", run_type),
    )
