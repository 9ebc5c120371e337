"""Run the ConvMixer DAG with ``dag.test`` for the alert and review scenarios; report what happened as JSON.

Used by tests/dags/test_alerts_dag.py, in a fresh process (Airflow reads AIRFLOW_HOME once, at its first import).
Each run sets its own ``env`` (``[convmixer]`` alert settings, Connections) and parses the DAG folder again, so the
DAG is built with that run's settings. The review (the HITL task ``review``) is answered the way the UI answers it:
through Airflow's own REST API (the real FastAPI app, in this process, on the same metadata DB), signed in as a
SimpleAuthManager user with a JWT from ``POST /auth/token``. A timeout is resolved by the scheduler's own sweep
(``SchedulerJobRunner.check_awaiting_input_timeouts``, what every scheduler loop runs) once the deadline passed:
``dag.test`` runs no scheduler, and waits for the parked task like a run with max_active_runs=1 would.

    python tests/dags/alerts_runner.py SPEC.json OUT.json

SPEC: {"user": [name, password], "digest": {"env": {...}} | null,
       "runs": [{"name", "conf", "env": {...}, "seed": {"count", "factor"} | null,
                 "answer": {"option", "reason"} | "timeout" | null}]}
      seed: ``count`` ok rows copied from the first run's row, throughput × ``factor`` (a fast history: regressed).
OUT:  {"runs": [{"name", "run_id", "state", "tasks": {task_id: state}, "rows": [...], "hitl": {...} | null,
                 "log": [what the DAG file's logger said]}]}
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

DAG_ID = "convmixer_validation"
API = "/api/v2"


class Responder(threading.Thread):
    """Answers the run's pending review through the REST API, or lets it time out and runs the scheduler's sweep."""

    def __init__(self, client, token: str, answer) -> None:
        super().__init__(daemon=True)
        self.client, self.token, self.answer = client, token, answer
        self.result: dict = {}
        self.done = threading.Event()

    def _pending(self) -> dict | None:
        reply = self.client.get(
            f"{API}/dags/{DAG_ID}/dagRuns/~/hitlDetails", headers={"Authorization": f"Bearer {self.token}"}
        )
        reply.raise_for_status()
        waiting = [entry for entry in reply.json()["hitl_details"] if not entry.get("response_received")]
        return waiting[0] if waiting else None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            pending = None
            while pending is None and not self.done.is_set() and time.monotonic() < deadline:
                pending = self._pending()
                if pending is None:
                    time.sleep(0.5)
            if pending is None:
                self.result = {"asked": False}
                return
            ti = pending["task_instance"]
            self.result = {
                "asked": True,
                "subject": pending["subject"],
                "body": pending["body"],
                "options": pending["options"],
                "run_id": ti["dag_run_id"],
                "state": ti["state"],
            }
            if self.answer == "timeout":
                from airflow.jobs.job import Job
                from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

                while not self.done.is_set() and time.monotonic() < deadline:
                    SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
                    if self._pending() is None:
                        break
                    time.sleep(0.5)
                return
            reply = self.client.patch(
                f"{API}/dags/{DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/-1/hitlDetails",
                headers={"Authorization": f"Bearer {self.token}"},
                json={"chosen_options": [self.answer["option"]], "params_input": {"reason": self.answer["reason"]}},
            )
            self.result.update(status_code=reply.status_code, response=reply.json())
        except Exception as exc:  # reported, and the test fails on it
            self.result["error"] = repr(exc)


def seed_rows(metrics_url: str, template: dict, count: int, factor: float, label: str) -> None:
    from convmixer_tasks.metrics import record_run

    for index in range(count):
        row = {
            key: value
            for key, value in template.items()
            if key
            not in ("id", "created_at", "updated_at", "ran_at", "rebaselined_at", "rebaselined_by", "rebaseline_reason")
        }
        row.update(
            run_id=f"seeded-{label}-{index}",
            status="ok",
            gate_reasons=None,
            logical_date=datetime.now(UTC).isoformat(),
            throughput=template["throughput"] * factor,
            throughput_robust=template["throughput_robust"] * factor,  # the figure the verdict judges
        )
        if index == 0:  # the seeded level is the series' history: the real runs before it do not count
            row.update(rebaselined_at=datetime.now(UTC).isoformat(), rebaselined_by="alerts_runner")
        record_run(metrics_url, row)


class DagLog(logging.Handler):
    """Keeps what the DAG file's own logger says while a run's tasks run in this process (``dag.test``)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.endswith("convmixer_validation"):
            self.lines.append(f"{record.levelname} {record.getMessage()}")


def main(spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    assert "airflow" not in sys.modules, "Airflow must be imported after AIRFLOW_HOME is set"
    from airflow.utils import db

    db.resetdb()
    from airflow.api_fastapi.app import create_app
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from convmixer_tasks.metrics.reports import run_rows

    client = TestClient(create_app())
    user, password = spec["user"]
    reply = client.post("/auth/token", json={"username": user, "password": password})
    reply.raise_for_status()
    token = reply.json()["access_token"]
    metrics_url = os.environ["CONVMIXER_METRICS_DB_URL"]
    base_env = dict(os.environ)

    results: list[dict] = []
    for run in spec["runs"]:
        os.environ.clear()
        os.environ.update({**base_env, **run.get("env", {})})
        if run.get("seed"):
            template = next(row for row in results[0]["rows"])
            seed_rows(metrics_url, template, run["seed"]["count"], run["seed"]["factor"], run["name"])
        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        if bag.import_errors:
            raise SystemExit(f"DAG import errors: {bag.import_errors}")
        responder = Responder(client, token, run.get("answer")) if run.get("answer") else None
        if responder:
            responder.start()
        dag_log = DagLog()
        logging.getLogger().addHandler(dag_log)
        started = time.perf_counter()
        dag_run = bag.dags[DAG_ID].test(run_conf=run.get("conf") or {})
        seconds = time.perf_counter() - started
        logging.getLogger().removeHandler(dag_log)
        if responder:
            responder.done.set()
            responder.join(timeout=30)
        with create_session() as session:
            tis = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances(session=session)}
            detail = session.scalar(
                select(HITLDetail)
                .join(TaskInstance, HITLDetail.ti_id == TaskInstance.id)
                .where(TaskInstance.run_id == dag_run.run_id)
            )
            hitl = (
                None
                if detail is None
                else {
                    "chosen_options": detail.chosen_options,
                    "responded_by": detail.responded_by,
                    "responded_at": str(detail.responded_at),
                    "params_input": detail.params_input,
                }
            )
        results.append(
            {
                "name": run["name"],
                "run_id": dag_run.run_id,
                "state": str(dag_run.state),
                "seconds": seconds,
                "tasks": tis,
                "rows": run_rows(metrics_url, dag_run.run_id),
                "hitl": hitl,
                "responder": responder.result if responder else None,
                "log": dag_log.lines,
            }
        )
    digest = None
    if spec.get("digest"):  # the digest DAG, after the runs, through the same notifier
        os.environ.clear()
        os.environ.update({**base_env, **spec["digest"]["env"]})
        bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        digest_run = bag.dags["convmixer_digest"].test()
        with create_session() as session:
            digest = {
                "state": str(digest_run.state),
                "tasks": {ti.task_id: str(ti.state) for ti in digest_run.get_task_instances(session=session)},
            }
    Path(out_path).write_text(json.dumps({"runs": results, "digest": digest}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
