"""Alerts and the review, end to end with real components: the DAG under ``dag.test`` (tests/dags/alerts_runner.py)
on the demo set, a real SMTP server on 127.0.0.1 (aiosmtpd) behind an Airflow SMTP Connection, a real HTTP server
on 127.0.0.1 behind an Apprise ``json://`` URL, and the HITL review answered through Airflow's REST API.

Runs, in order (each regressed run is made so by a seeded history 1000x faster; single-run verdicts):
1. ``first``         – ok: no message.
2. ``smtp``          – regressed, alerts to the SMTP Connection: one e-mail (model, reason, three links).
3. ``apprise``       – regressed, alerts to ``json://127.0.0.1:<port>/hook``: one POST with the same content.
4. ``smtp_down``     – regressed, the SMTP Connection's port closed: one error line; the run and rows as always.
5. ``bad_url``       – regressed, review on, answered "keep" by the user; the alert URL is unusable: one error line.
6. ``timeout``       – regressed, review on, nobody answers: the scheduler's sweep applies the default (keep).
7. ``accept``        – regressed, review on, the user accepts: the row is the baseline, by that user; run success.
8. ``next``          – after the timeout, a run with a wide tolerance: runs and succeeds, no review asked.
Then the digest DAG mails the week's summary through the same SMTP Connection.
"""

from __future__ import annotations

import email
import json
import os
import socket
import subprocess
import sys
import threading
from email import policy
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from convmixer_tasks.run.review import ACCEPT, KEEP

pytestmark = pytest.mark.slow  # ~2 min on 2 cores (eight DAG runs, one ONNX export)

REPO = Path(__file__).resolve().parents[2]
USER, PASSWORD = "alice", "alice-pw"
BASE = "http://airflow.example:8080"
REGRESS = {
    "batch_sizes": [4],
    "benchmark_loop": 10,
    "throughput_history": 5,
    "throughput_max_cv_pct": 1000,
    "throughput_runs": 1,
}
SEED = {"count": 5, "factor": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """aiosmtpd handler: keeps every delivered message."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture(scope="module")
def servers():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    posts: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield {"smtp_port": smtp.port, "inbox": inbox, "http_port": http.server_port, "posts": posts}
    smtp.stop()
    http.shutdown()


def smtp_connection(port: int) -> str:
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": {
        "disable_ssl": True, "disable_tls": True, "from_email": "convmixer@example.com",
        "to": "oncall@example.com", "timeout": 5, "retry_limit": 0}})  # fmt: skip


@pytest.fixture(scope="module")
def runs(servers, tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("alerts")
    closed = free_port()
    smtp = {"AIRFLOW__CONVMIXER__ALERTS": "convmixer_alerts"}
    review = {"AIRFLOW__CONVMIXER__REVIEW": "true", "AIRFLOW__CONVMIXER__REVIEW_TIMEOUT_HOURS": "1"}
    spec = {"user": [USER, PASSWORD], "digest": {"env": smtp}, "runs": [
        {"name": "first", "conf": {**REGRESS, "throughput_tolerance_pct": 99}, "env": smtp},
        {"name": "smtp", "conf": REGRESS, "env": smtp, "seed": SEED},
        {"name": "apprise", "conf": REGRESS, "seed": SEED,
         "env": {"AIRFLOW__CONVMIXER__ALERTS": f"json://127.0.0.1:{servers['http_port']}/hook"}},
        {"name": "smtp_down", "conf": REGRESS, "seed": SEED,
         "env": {"AIRFLOW__CONVMIXER__ALERTS": "convmixer_down"}},
        {"name": "bad_url", "conf": REGRESS, "seed": SEED, "answer": {"option": KEEP, "reason": "looks like a bug"},
         "env": {**review, "AIRFLOW__CONVMIXER__ALERTS": f"json://127.0.0.1:{closed}/hook"}},
        {"name": "timeout", "conf": REGRESS, "seed": SEED, "answer": "timeout",
         "env": {**review, **smtp, "AIRFLOW__CONVMIXER__REVIEW_TIMEOUT_HOURS": "0.001"}},
        {"name": "accept", "conf": REGRESS, "seed": SEED, "env": {**review, **smtp},
         "answer": {"option": ACCEPT, "reason": "CANN 8.1 rolled out"}},
        {"name": "next", "conf": {**REGRESS, "throughput_tolerance_pct": 99.95}, "env": {**review, **smtp},
         "answer": {"option": ACCEPT, "reason": "must not be asked"}},
    ]}  # fmt: skip
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "CONVMIXER_"))
    }
    env.update({
        "AIRFLOW_HOME": str(root / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CONVMIXER__WORK_DIR": str(root / "work"),
        "CONVMIXER_METRICS_DB_URL": f"sqlite:///{root / 'metrics.db'}",
        "AIRFLOW__CONVMIXER__RETRIES": "0", "AIRFLOW__CONVMIXER__ALERT_BASE_URL": BASE,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW_CONN_CONVMIXER_ALERTS": smtp_connection(servers["smtp_port"]),
        "AIRFLOW_CONN_CONVMIXER_DOWN": smtp_connection(closed),
    })  # fmt: skip
    log = root / "runner.log"
    with open(log, "w") as handle:
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "dags" / "alerts_runner.py"),
                               str(root / "spec.json"), str(root / "out.json")], env=env, cwd=REPO, stdout=handle,
                              stderr=subprocess.STDOUT, timeout=900)  # fmt: skip
    assert proc.returncode == 0, log.read_text()[-8000:]
    report = json.loads((root / "out.json").read_text())
    return {**{run["name"]: run for run in report["runs"]}, "digest": report["digest"]}


def mails_about(servers, run_id: str) -> list:
    return [message for message in servers["inbox"].messages if run_id in message["Subject"]]


def row_of(run: dict) -> dict:
    (row,) = run["rows"]
    return row


def links_of(run: dict) -> list[str]:
    row = row_of(run)
    return [
        f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/run?id={row['id']}",
        f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/compare?a=",  # the baseline row's id follows
        f"{BASE}/dags/convmixer_validation/runs/",
    ]


def test_an_ok_run_sends_nothing(runs, servers):
    run = runs["first"]
    assert run["state"] == "success" and row_of(run)["status"] == "ok"
    assert mails_about(servers, run["run_id"]) == []
    assert run["tasks"]["send_alert"] == "success" and run["tasks"]["finish_run"] == "success"
    assert "review" not in run["tasks"]  # review off by default: the HITL task is not in the DAG


def test_a_regressed_run_is_mailed_once_through_the_smtp_connection(runs, servers):
    run = runs["smtp"]
    assert run["state"] == "failed" and run["tasks"]["regression_gate"] == "failed"
    row = row_of(run)
    assert row["status"] == "regressed"
    (mail,) = mails_about(servers, run["run_id"])
    assert mail["To"] == "oncall@example.com" and mail["From"] == "convmixer@example.com"
    assert "regressed" in mail["Subject"] and "convmixer_demo" in mail["Subject"]
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert "convmixer_demo" in body and "bs 4" in body
    assert "throughput regressed" in body  # the verdict's one-line reason
    for link in links_of(run):
        assert link in body, link
    assert run["run_id"].replace("+", "%2B").replace(":", "%3A") in body  # the Airflow run's link, quoted
    assert "sqlite" not in body and "metrics.db" not in body  # no DB URL


def test_the_apprise_url_receives_the_same_content(runs, servers):
    run = runs["apprise"]
    posts = [post for post in servers["posts"] if run["run_id"] in post["json"].get("title", "")]
    assert len(posts) == 1 and posts[0]["path"] == "/hook"
    message = posts[0]["json"]["message"]
    assert "convmixer_demo" in message and "throughput regressed" in message
    for link in links_of(run):
        assert link in message, link
    assert run["state"] == "failed" and row_of(run)["status"] == "regressed"


def test_a_broken_notifier_logs_one_line_and_changes_nothing_else(runs):
    for name, target in (("smtp_down", "connection 'convmixer_down'"), ("bad_url", "Apprise URL json://127.0.0.1")):
        run = runs[name]
        assert run["tasks"]["send_alert"] == "success", name
        assert row_of(run)["status"] == "regressed", name  # recorded and gated as always
        lines = [line for line in run["log"] if "NOT sent through" in line]
        assert len(lines) == 1 and target in lines[0] and lines[0].startswith("ERROR"), (name, run["log"])
        assert run["state"] == "failed"  # by the regression, not by the notifier


def test_review_keep_leaves_the_regression_with_the_responder_on_record(runs):
    run = runs["bad_url"]
    assert run["responder"]["asked"] and run["responder"]["status_code"] == 200, run["responder"]
    assert "throughput regressed" in run["responder"]["body"] and "/run?id=" in run["responder"]["body"]
    assert run["hitl"]["chosen_options"] == [KEEP] and run["hitl"]["responded_by"]["name"] == USER
    assert run["tasks"]["review"] == "success" and run["tasks"]["apply_review"] == "success"
    assert row_of(run)["status"] == "regressed" and row_of(run)["rebaselined_by"] is None
    assert run["state"] == "failed" and run["tasks"]["finish_run"] == "failed"


def test_review_timeout_keeps_the_regression_says_so_and_ends_the_run(runs, servers):
    run = runs["timeout"]
    assert run["responder"]["asked"] and "error" not in run["responder"], run["responder"]
    assert run["hitl"]["chosen_options"] == [KEEP] and run["hitl"]["responded_by"] is None
    assert row_of(run)["status"] == "regressed"
    assert any("review timed out" in line and "verdicts are kept" in line for line in run["log"]), run["log"]
    assert run["state"] == "failed"  # the run ended: it holds no max_active_runs slot
    assert len(mails_about(servers, run["run_id"])) == 1  # the regression's alert, before the review


def test_review_accept_makes_the_row_the_baseline_by_the_responder(runs, servers):
    run = runs["accept"]
    assert run["responder"]["status_code"] == 200, run["responder"]
    row = row_of(run)
    assert row["status"] == "ok" and row["rebaselined_by"] == USER
    assert row["rebaseline_reason"] == "CANN 8.1 rolled out"
    assert run["state"] == "success"  # the gate task failed, the answer decided the run
    assert run["tasks"]["regression_gate"] == "failed" and run["tasks"]["finish_run"] == "success"
    mails = mails_about(servers, run["run_id"])
    assert len(mails) == 2  # the regression, then the acceptance
    accepted = mails[1].get_body(preferencelist=("html",)).get_content()
    assert "baseline accepted" in mails[1]["Subject"] and f"accepted by: {USER}" in accepted


def test_the_next_run_is_not_blocked_and_asks_nothing_when_nothing_regressed(runs):
    run = runs["next"]
    assert run["state"] == "success" and row_of(run)["status"] == "ok"
    assert run["tasks"]["review_request"] == "skipped" and run["tasks"]["review"] == "skipped"
    assert run["responder"] == {"asked": False}


def test_the_digest_dag_mails_the_weeks_summary_through_the_same_notifier(runs, servers):
    assert runs["digest"]["state"] == "success", runs["digest"]
    (mail,) = [message for message in servers["inbox"].messages if message["Subject"].startswith("[convmixer] digest")]
    assert "1 series, 0 open regressions" in mail["Subject"]  # the last run (next) was ok
    body = mail.get_body(preferencelist=("html",)).get_content()
    assert "convmixer_demo" in body and f"by {USER}" in body and "CANN 8.1 rolled out" in body
    assert f"{BASE}/plugin/convmixer-metrics/convmixer-metrics/run?id={row_of(runs['next'])['id']}" in body
