"""What the metrics rows say about the Airflow run (or the one-process run) they belong to, read off the DagRun,
and the failure hook that names the run in the log and keeps the failure (an XCom) for record_failure. No Airflow
import: the DAG passes its objects in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from convmixer_tasks.errors import ConvMixerError, masked

if TYPE_CHECKING:  # the records load with the first RunFacts: the DAG file reads log_task_failure at parse time
    from convmixer_tasks.run.records import RunFacts, TaskFailure

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


FAILURE_XCOM_KEY = "convmixer_failure"  # the XCom a failed task's callback leaves for record_failure
FAILURE_SCOPE_KEY = "convmixer_failure_scope"  # the context entry a task names its rows under (note_scope)
ERROR_TEXT_LIMIT = 300  # characters of an exception's message a failed row keeps


def error_line(exc: object) -> str:
    """An exception as one bounded line: its message (our errors and Airflow's are already one clear line), else
    ``Type: message``; whitespace runs, tracebacks' newlines included, become one space; credentials in URLs are
    masked (the line is stored on rows the metrics page shows)."""
    if exc is None:
        return "no exception was passed to the failure callback (see the task log)"
    if isinstance(exc, BaseException):
        own = isinstance(exc, ConvMixerError) or type(exc).__name__.startswith("Airflow")
        text = str(exc) if own and str(exc) else f"{type(exc).__name__}: {exc}".rstrip(": ")
    else:
        text = str(exc)
    text = masked(" ".join(text.split()))
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


def note_scope(
    context: Any, *, model_variant: str | None = None, batch_size: int | None = None, precision: str | None = None
) -> None:
    """Name the rows the running task works for in its context, where its failure callback reads them (Airflow 3
    runs the callback in the task's own process with the same context). None: any."""
    context[FAILURE_SCOPE_KEY] = {"model_variant": model_variant, "batch_size": batch_size, "precision": precision}


def task_failure(context: Mapping[str, Any]) -> TaskFailure:
    """The failed task instance, its label, the error's line and the rows it worked for, from a callback context."""
    from convmixer_tasks.run.fleet import chip_of_task_id
    from convmixer_tasks.run.records import TaskFailure

    ti = context.get("ti")
    task_id = str(getattr(ti, "task_id", "?"))
    map_index = getattr(ti, "map_index", None)
    scope = context.get(FAILURE_SCOPE_KEY) or {}
    return TaskFailure(
        task_id=task_id,
        map_index=map_index if isinstance(map_index, int) else -1,
        label=getattr(ti, "rendered_map_index", None) or None,
        error=error_line(context.get("exception")),
        chip=chip_of_task_id(task_id),
        **scope,
    )


def log_task_failure(context: Mapping[str, Any]) -> None:
    """Task failure hook: one log line naming the run, task and error, and the failure kept as an XCom of the
    failed task (``FAILURE_XCOM_KEY``) for ``record_failure``, which may run on another host. Never raises: a
    failure that cannot be kept is named by record_failure without its error (``NO_ERROR_KEPT``)."""
    failure = task_failure(context)
    log.error("convmixer_validation run %s: %s", context.get("run_id"), failure.cause())
    ti = context.get("ti")
    try:
        ti.xcom_push(key=FAILURE_XCOM_KEY, value=failure.to_dict())  # type: ignore[union-attr]
    except Exception as exc:  # the callback must not turn one failure into two
        log.warning("the failure of %s was not kept for record_failure: %s", failure.task_id, error_line(exc))


NO_ERROR_KEPT = "no error was kept (killed, timed out, or its failure callback could not run); see its task log"


def failures_of(
    pushed: Iterable[Any],
    breadcrumbs: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    among: Collection[str] | None = None,
) -> list[TaskFailure]:
    """The ``TaskFailure`` records among the XComs record_failure pulled (None where a task left none), in order;
    then, from the run's finished task instances (``breadcrumbs()``: dicts with task_id, map_index, state, as the
    Task SDK's ``get_task_breadcrumbs`` gives them), each failed one that kept no record, so a task killed before
    its callback ran is still named (only those ``among`` the given task ids: the tasks whose XComs were pulled). A
    value this version cannot read is skipped; unreadable breadcrumbs add none."""
    from convmixer_tasks.run.fleet import chip_of_task_id
    from convmixer_tasks.run.records import TaskFailure

    failures = []
    for value in pushed:
        if value is None:
            continue
        try:
            failures.append(TaskFailure.from_dict(value))
        except (ConvMixerError, TypeError) as exc:
            log.warning("a kept task failure could not be read: %s", error_line(exc))
    try:
        finished = list(breadcrumbs()) if breadcrumbs is not None else []
    except Exception as exc:  # an older API server, a hiccup: the kept failures still say why
        log.warning("the run's failed tasks could not be listed: %s", error_line(exc))
        finished = []
    kept = {(failure.task_id, failure.map_index) for failure in failures}
    for crumb in finished:
        task_id, map_index, state = crumb.get("task_id"), crumb.get("map_index"), crumb.get("state")
        index = map_index if isinstance(map_index, int) else -1
        if among is not None and task_id not in among:
            continue
        if getattr(state, "value", state) == "failed" and (task_id, index) not in kept:
            failures.append(TaskFailure(str(task_id), index, None, NO_ERROR_KEPT, chip=chip_of_task_id(str(task_id))))
    return failures


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
