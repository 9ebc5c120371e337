"""The Edge executor's worker registry, asked the way a task may ask it: over HTTP, through the api-server.

Under the Edge executor (apache-airflow-providers-edge3) every worker registers itself with the api-server and
heartbeats its state and queues into the ``edge_worker`` table. A task cannot read that table (Airflow 3's Task SDK
gives tasks no ORM access to the metadata DB), and the task's own execution-API token is valid for the execution API
only. What the provider offers is the api-server's ``GET /edge_worker/ui/worker`` (the list behind its "Edge
Executor" page; the ``/edge_worker/v1`` worker routes have no list), which wants a user with view access to Jobs.
So the chip check logs in as the user of an Airflow Connection (``fleet.EDGE_API_CONN_ID``) at ``/auth/token`` and
reads that list. The provider marks its UI routes as not yet stable: the answer is read field by field, and an
answer of another shape fails with one line naming it.

A worker counts as alive when its state is ``idle`` or ``running`` and its last heartbeat is younger than
``HEARTBEATS_TO_STALE`` heartbeat intervals (the limit after which the executor itself marks it unknown; a dead
worker keeps its last state until the scheduler notices). A worker registered without queues fetches from every queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.run.fleet import ANY_QUEUE, EDGE_API_CONN_ID, ServedQueues

LIVE_STATES = frozenset({"idle", "running"})  # maintenance, offline, unknown, starting, terminating: takes no task
HEARTBEATS_TO_STALE = 5  # the EdgeExecutor's own liveness limit, in [edge] heartbeat_interval
# Celery's inspect timeout (3 s) bounds a wait for broadcast replies; a login and a list request on a busy api-server
# may take longer, and a timeout here fails the run, so each request gets at least this long.
MIN_HTTP_TIMEOUT_S = 15.0
TOKEN_PATH = "/auth/token"
WORKERS_PATH = "/edge_worker/ui/worker"


@dataclass(frozen=True)
class EdgeWorker:
    """One row of the registry: ``queues`` None = the worker fetches from every queue."""

    name: str
    state: str
    queues: tuple[str, ...] | None
    last_heartbeat: datetime | None

    def alive(self, now: datetime, stale_after_s: float) -> bool:
        if self.state not in LIVE_STATES or self.last_heartbeat is None:
            return False
        return (now - self.last_heartbeat).total_seconds() <= stale_after_s


def _shape_error(what: str) -> ConfigError:
    return ConfigError(
        f"the api-server's {WORKERS_PATH} answered {what}, not the Edge worker list this check reads "
        "(apache-airflow-providers-edge3 5.x); pin the provider version this package was tested with or update "
        "convmixer_tasks.run.edge_registry"
    )


def _heartbeat(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _shape_error(f"a last_heartbeat of {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_workers(answer: object) -> tuple[EdgeWorker, ...]:
    """The registry's rows from the JSON answer of ``GET /edge_worker/ui/worker``."""
    rows = answer.get("workers") if isinstance(answer, Mapping) else None
    if not isinstance(rows, list):
        raise _shape_error(f"{str(answer)[:120]!r}")
    workers = []
    for row in rows:
        if not isinstance(row, Mapping) or not isinstance(row.get("worker_name"), str):
            raise _shape_error(f"a worker {str(row)[:120]!r}")
        queues = row.get("queues")
        if queues is not None and not (isinstance(queues, list) and all(isinstance(q, str) for q in queues)):
            raise _shape_error(f"queues {queues!r} for worker {row['worker_name']!r}")
        workers.append(
            EdgeWorker(
                name=row["worker_name"],
                state=str(row.get("state")),
                queues=tuple(queues) if queues else None,
                last_heartbeat=_heartbeat(row.get("last_heartbeat")),
            )
        )
    return tuple(workers)


def live_queues(workers: Sequence[EdgeWorker], now: datetime, stale_after_s: float) -> dict[str, list[str]]:
    """{queue: [alive workers serving it]}; workers without queues are listed under ``fleet.ANY_QUEUE``."""
    served: dict[str, list[str]] = {}
    for worker in workers:
        if worker.alive(now, stale_after_s):
            for queue in worker.queues or (ANY_QUEUE,):
                served.setdefault(queue, []).append(worker.name)
    return served


def api_base_url(host: str | None, port: int | None, schema: str | None) -> str:
    """The api-server's root URL from a Connection's fields (host may carry the scheme, as in ``http://api:8080``)."""
    if not host:
        raise ConfigError(
            f"Airflow Connection {EDGE_API_CONN_ID!r} has no host; set it to the api-server's URL, e.g. "
            "http://airflow-apiserver:8080"
        )
    if host.startswith(("http://", "https://")):
        base = host
    else:
        scheme = schema if schema in ("http", "https") else "http"
        base = f"{scheme}://{host}"
    if port and base.count(":") < 2:
        base = f"{base}:{port}"
    return base.rstrip("/")


def fetch_workers(base_url: str, login: str | None, password: str | None, timeout: float) -> object:
    """The JSON answer of ``GET /edge_worker/ui/worker``, asked as the Connection's user."""
    import httpx  # the Task SDK's own HTTP client; imported here to keep the chip check's module light

    where = f"Airflow Connection {EDGE_API_CONN_ID!r}"
    try:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            token = client.post(TOKEN_PATH, json={"username": login or "", "password": password or ""})
            if token.status_code not in (200, 201):
                raise ConfigError(
                    f"the api-server at {base_url} refused the login of {where} ({token.status_code} on "
                    f"{TOKEN_PATH}); set its login and password to a user allowed to view Jobs"
                )
            reply = client.get(WORKERS_PATH, headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    except httpx.TimeoutException:
        raise ConfigError(
            f"the api-server at {base_url} did not answer within {timeout:g} s while the chip check asked for its "
            f"Edge workers; check that it is up and that the host of {where} is the api-server"
        ) from None
    except (ValueError, KeyError):
        raise _shape_error(f"a login of another shape on {TOKEN_PATH} (no access_token)") from None
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"cannot ask the Edge worker registry at {base_url} ({type(exc).__name__}: {exc}); fix the host of {where}"
        ) from None
    if reply.status_code == 404:
        raise ConfigError(
            f"the api-server at {base_url} does not serve {WORKERS_PATH}; set [edge] api_enabled = True there "
            f"(AIRFLOW__EDGE__API_ENABLED) or point {where} at the api-server that runs the Edge executor"
        )
    if reply.status_code in (401, 403):
        raise ConfigError(
            f"the user of {where} may not read the Edge worker registry ({reply.status_code} on {WORKERS_PATH}); "
            "give it view access to Jobs"
        )
    if reply.status_code != 200:
        raise _shape_error(f"HTTP {reply.status_code}")
    try:
        return reply.json()
    except ValueError:
        raise _shape_error(f"{reply.text[:120]!r}") from None


def registry_queues(
    connection: Any, heartbeat_interval_s: float, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Callable[[float], ServedQueues]:
    """The question ``fleet.check_chip_workers`` asks under the Edge executor, for an Airflow Connection (its host,
    port, schema, login and password): ``ask(timeout)`` → {queue: [alive Edge workers serving it]}."""
    base_url = api_base_url(connection.host, connection.port, connection.schema)

    def ask(timeout: float) -> ServedQueues:
        answer = fetch_workers(base_url, connection.login, connection.password, max(timeout, MIN_HTTP_TIMEOUT_S))
        workers = parse_workers(answer)
        return live_queues(workers, now(), HEARTBEATS_TO_STALE * heartbeat_interval_s)

    return ask
