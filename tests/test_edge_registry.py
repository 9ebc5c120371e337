"""The chip check under the Edge executor: the worker registry read through the api-server (edge_registry), and
fleet's check with its answers. The answers are built with the edge3 provider's own response model, so their shape is
the one its api-server serialises; the HTTP side runs against a small stand-in api-server on a local port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from convmixer_tasks.errors import ConfigError
from convmixer_tasks.run import edge_registry
from convmixer_tasks.run.edge_registry import api_base_url, fetch_workers, live_queues, parse_workers
from convmixer_tasks.run.fleet import ANY_QUEUE, check_chip_workers, remote_executor

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HEARTBEAT_S = 30  # [edge] heartbeat_interval's default: stale after 150 s
EDGE = "airflow.providers.edge3.executors.EdgeExecutor"
CHIPS = {"310P3": "npu.310P3", "910B3": "npu.910B3"}


def registry_answer(*workers: tuple[str, str, list[str] | None, float | None]) -> dict[str, Any]:
    """``GET /edge_worker/ui/worker``'s JSON for (name, state, queues, heartbeat age in s), as edge3 serialises it."""
    from airflow.providers.edge3.models.edge_worker import EdgeWorkerState
    from airflow.providers.edge3.worker_api.datamodels_ui import Worker, WorkerCollectionResponse

    rows = [
        Worker(
            worker_name=name,
            queues=queues,
            state=EdgeWorkerState(state),
            jobs_active=0,
            sysinfo={"concurrency": 1},
            maintenance_comments="CANN upgrade" if "maintenance" in state else None,
            first_online=NOW - timedelta(hours=1),
            last_heartbeat=None if age is None else NOW - timedelta(seconds=age),
        )
        for name, state, queues, age in workers
    ]
    return WorkerCollectionResponse(workers=rows, total_entries=len(rows)).model_dump(mode="json")


def served_by(answer: dict[str, Any]) -> dict[str, list[str]]:
    return live_queues(parse_workers(answer), NOW, edge_registry.HEARTBEATS_TO_STALE * HEARTBEAT_S)


def check(answer: dict[str, Any], chips: dict[str, str] = CHIPS) -> str:
    return check_chip_workers(
        chips, EDGE, lambda timeout: pytest.fail("asked Celery"), edge_queues=lambda t: served_by(answer)
    )


def test_alive_workers_serve_their_queues_and_a_worker_without_queues_serves_every_queue():
    answer = registry_answer(
        ("npu310@a", "idle", ["npu.310P3"], 5),
        ("npu310@b", "running", ["npu", "npu.310P3"], 140),
        ("any@c", "idle", None, 1),
    )
    assert answer["workers"][0]["last_heartbeat"].endswith("Z")  # the provider's own serialisation is what we parse
    assert served_by(answer) == {"npu.310P3": ["npu310@a", "npu310@b"], "npu": ["npu310@b"], ANY_QUEUE: ["any@c"]}
    assert "live Edge workers serve every requested chip" in check(registry_answer(("any@c", "running", None, 1)))


@pytest.mark.parametrize(
    ("workers", "why"),
    [
        ((), "no worker registered"),
        ((("npu910@a", "idle", ["npu.910B3"], 151),), "last heartbeat older than 5 intervals"),
        ((("npu910@a", "running", ["npu.910B3"], None),), "never sent a heartbeat"),
        ((("npu310@a", "idle", ["npu.310P3"], 1),), "serves another chip only"),
        ((("npu910@a", "maintenance mode", ["npu.910B3"], 1),), "in maintenance"),
        ((("npu910@a", "maintenance request", ["npu.910B3"], 1),), "going into maintenance"),
        ((("npu910@a", "offline", ["npu.910B3"], 1),), "offline"),
        ((("npu910@a", "unknown", ["npu.910B3"], 1),), "marked unknown by the executor"),
        ((("npu910@a", "starting", ["npu.910B3"], 1),), "not yet registered"),
    ],
)
def test_a_chip_without_an_alive_edge_worker_fails_with_one_line_naming_it_and_how_to_add_one(workers, why):
    answer = registry_answer(*workers, ("npu310@z", "idle", ["npu.310P3"], 1))
    with pytest.raises(ConfigError) as failure:
        check(answer)
    message = str(failure.value)
    assert message.startswith("no live Edge worker serves chip 910B3 (queue 'npu.910B3');"), (why, message)
    assert "310P3" not in message.split(";")[0], why  # the served chip is not named
    assert "ascend-entrypoint.sh edge" in message and "airflow edge worker --queues npu.910B3" in message
    assert "leave the chip out of param chips" in message and "\n" not in message


def test_every_unserved_chip_is_named_in_the_one_line():
    with pytest.raises(ConfigError, match=r"chip 310P3 \(queue 'npu.310P3'\), chip 910B3 \(queue 'npu.910B3'\)"):
        check(registry_answer())


def test_a_heartbeat_without_a_zone_is_utc_and_a_bad_answer_fails_naming_its_shape():
    answer = registry_answer(("npu910@a", "idle", ["npu.910B3"], 10))
    answer["workers"][0]["last_heartbeat"] = answer["workers"][0]["last_heartbeat"].removesuffix("Z")
    assert served_by(answer) == {"npu.910B3": ["npu910@a"]}
    bad_answers: list[dict[str, Any]] = [
        {"detail": "Not Found"},
        {"workers": [{"queues": []}]},
        {"workers": [{"worker_name": "a", "queues": "npu"}]},
    ]
    for bad in bad_answers:
        with pytest.raises(ConfigError, match=r"/edge_worker/ui/worker answered .*not the Edge worker list"):
            parse_workers(bad)


@pytest.mark.parametrize(
    ("executor", "kind"),
    [("CeleryExecutor", "celery"), ("LocalExecutor,CeleryExecutor", "celery"), (EDGE, "edge"), ("EdgeExecutor", "edge"),
     (f"{EDGE},CeleryExecutor", "edge"), (f"CeleryExecutor,{EDGE}", "celery"), ("LocalExecutor", None)],
)  # fmt: skip
def test_the_first_remote_executor_named_is_the_one_asked(executor, kind):
    assert remote_executor(executor) == kind


def test_under_edge_without_the_connection_nothing_is_asked_and_the_line_says_how_to_enable_the_check():
    line = check_chip_workers(CHIPS, EDGE, lambda timeout: pytest.fail("asked Celery"), edge_queues=None)
    assert "not checking" in line and "'convmixer_airflow_api'" in line


def test_the_edge_question_gets_the_timeout():
    asked: list[float] = []

    def edge_queues(timeout: float) -> dict[str, list[str]]:
        asked.append(timeout)
        return {ANY_QUEUE: ["w"]}

    check_chip_workers(CHIPS, EDGE, lambda t: None, timeout=2.5, edge_queues=edge_queues)
    assert asked == [2.5]


@pytest.mark.parametrize(
    ("host", "port", "schema", "url"),
    [("http://api:8080/", None, None, "http://api:8080"), ("api", 8080, None, "http://api:8080"),
     ("api.example.org", None, "https", "https://api.example.org"), ("https://api.example.org", 8443, "", "https://api.example.org:8443")],
)  # fmt: skip
def test_the_api_url_comes_from_the_connections_fields(host, port, schema, url):
    assert api_base_url(host, port, schema) == url


def test_a_connection_without_host_fails_naming_it():
    with pytest.raises(ConfigError, match="'convmixer_airflow_api' has no host"):
        api_base_url(None, None, None)


# --- over HTTP, against a stand-in api-server ----------------------------------------------------------------------


class StandInApiServer(BaseHTTPRequestHandler):
    """/auth/token for admin:secret, then the registry answer for its token; ``status`` overrides the list's status."""

    answer: ClassVar[dict[str, Any]] = {}
    status = 200
    slow_s = 0.0  # how long the list takes to answer
    seen: ClassVar[list[tuple[str, str, str | None]]] = []

    def do_POST(self):  # http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, None))
        if self.path == "/auth/token" and body == {"username": "admin", "password": "secret"}:
            self._reply(201, {"access_token": "tok"})
        else:
            self._reply(401, {"detail": "Invalid credentials"})

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers.get("Authorization")))
        time.sleep(self.slow_s)
        if self.path != "/edge_worker/ui/worker" or self.status == 404:
            self._reply(404, {"detail": "Not Found"})
        elif self.headers.get("Authorization") != "Bearer tok":
            self._reply(401, {"detail": "Not authenticated"})
        else:
            self._reply(self.status, self.answer)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the slow answer's client has hung up: expected
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[StandInApiServer]]]:
    handler = type(
        "Handler", (StandInApiServer,), {"seen": [], "answer": registry_answer(), "status": 200, "slow_s": 0.0}
    )
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_the_registry_is_read_as_the_connections_user(api_server):
    url, handler = api_server
    handler.answer = registry_answer(("npu910@a", "idle", ["npu.910B3"], 3))
    connection = SimpleNamespace(host=url, port=None, schema=None, login="admin", password="secret")
    ask = edge_registry.registry_queues(connection, HEARTBEAT_S, now=lambda: NOW)
    assert ask(2.0) == {"npu.910B3": ["npu910@a"]}
    assert handler.seen == [("POST", "/auth/token", None), ("GET", "/edge_worker/ui/worker", "Bearer tok")]


def test_a_refused_login_a_missing_edge_api_and_an_unreachable_server_each_fail_with_their_fix(api_server):
    url, handler = api_server
    with pytest.raises(ConfigError, match=r"refused the login of Airflow Connection 'convmixer_airflow_api' \(401"):
        fetch_workers(url, "admin", "wrong", 2.0)
    handler.status = 404
    with pytest.raises(ConfigError, match=r"does not serve /edge_worker/ui/worker; set \[edge\] api_enabled = True"):
        fetch_workers(url, "admin", "secret", 2.0)
    handler.status = 403
    with pytest.raises(ConfigError, match=r"may not read the Edge worker registry .*view access to Jobs"):
        fetch_workers(url, "admin", "secret", 2.0)
    handler.status, handler.slow_s = 200, 1.0
    with pytest.raises(ConfigError, match=r"did not answer within 0.2 s .*Edge workers; check that it is up"):
        fetch_workers(url, "admin", "secret", 0.2)
    with pytest.raises(ConfigError, match=r"cannot ask the Edge worker registry at http://127.0.0.1:9 .*fix the host"):
        fetch_workers("http://127.0.0.1:9", "admin", "secret", 2.0)
