"""The metrics page's digest section: ``GET api/digest`` over a real SQLite metrics DB, behind Airflow's auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.plugins.test_metrics_api import auth_manager, client_for, token  # noqa: F401 - fixtures
from tests.test_metrics import make_row

FAST = "throughput regressed: 10.00 < 90.00 (-90.0%; t-test vs history p=1e-09 < 0.01)"


@pytest.fixture()
def url(tmp_path) -> str:
    from convmixer_tasks import metrics
    from convmixer_tasks.metrics.rebaseline import rebaseline

    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    metrics.upgrade(url)
    now = datetime.now(UTC)
    metrics.record_run(url, make_row(run_id="before", logical_date=now - timedelta(days=20), throughput=100.0))
    accepted = metrics.record_run(url, make_row(run_id="w1", logical_date=now - timedelta(days=3), throughput=80.0,
                                                status="regressed", gate_reasons=[FAST]))  # fmt: skip
    rebaseline(url, accepted, "new CANN", "dora")
    metrics.record_run(url, make_row(run_id="w2", logical_date=now - timedelta(days=1), throughput=40.0,
                                     status="regressed", gate_reasons=[FAST]))  # fmt: skip
    return url


def test_the_digest_endpoint_summarises_the_period(url, token):  # noqa: F811 - the imported fixture
    reply = client_for(url, token).get("/api/digest", params={"days": 7})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["days"] == 7
    (line,) = body["lines"]
    assert (line["model"], line["batch_size"], line["runs"]) == ("convmixer_demo", 4, 2)
    assert line["latest_status"] == "regressed" and line["open_regression"] and line["regressions"] == 1
    assert line["first_throughput"] == 100.0 and line["latest_throughput"] == 40.0
    assert [(one["by"], one["reason"]) for one in line["accepted"]] == [("dora", "new CANN")]
    assert client_for(url, token).get("/api/digest", params={"days": 0}).status_code == 422


def test_the_digest_endpoint_needs_a_login(url):
    assert client_for(url).get("/api/digest").status_code == 401


def test_the_page_loads_the_digest_section():
    from pathlib import Path

    static = Path(__file__).resolve().parents[2] / "plugins" / "convmixer_metrics" / "static"
    page = (static / "index.html").read_text()
    assert 'id="digest"' in page and 'src="static/digest.js"' in page
    assert 'getJson("api/digest"' in (static / "digest.js").read_text()
