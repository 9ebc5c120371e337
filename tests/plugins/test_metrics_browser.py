"""The metrics page in a real browser: a real ``airflow api-server`` with the repo's plugins folder, headless
Chromium (Debian's ``chromium`` package) driven by Playwright, logging in through Airflow's own login form.

Also writes ``docs/metrics-page.png`` (the README's screenshot) from what the browser showed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.plugins import DAG_ID, demo_rows

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "docs" / "metrics-page.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SERVER_START_TIMEOUT_S = 120
WAIT_MS = 30_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def _stop(process: subprocess.Popen) -> None:
    """Stop the api-server and the worker it forked (its own process group, started by this test)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory):
    """An api-server on a free port with a migrated SQLite DB, SimpleAuthManager (admin) and seeded metrics."""
    from convmixer_tasks import metrics

    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    metrics_url = f"sqlite:///{home / 'convmixer_metrics.db'}"
    metrics.upgrade(metrics_url)
    for row in demo_rows():
        metrics.record_run(metrics_url, row)

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__API_AUTH__JWT_SECRET": "convmixer-browser-test-" + "z" * 48,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "CONVMIXER_METRICS_DB_URL": metrics_url,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env.pop("AIRFLOW_CONN_CONVMIXER_METRICS", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, timeout=180, capture_output=True)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = home / "api-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while _status(f"{base}/api/v2/monitor/health") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"api-server did not come up on {base}:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield {"base": base, "password": password, "log": log_path}
    finally:
        _stop(process)


@pytest.fixture()
def browser_page():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


def _api(base: str, method: str, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _point_metrics_at(server: dict, connection: dict) -> None:
    """Create or replace the ``convmixer_metrics`` Airflow Connection (which wins over the env var)."""
    token = _api(server["base"], "POST", "/auth/token", {"username": "admin", "password": server["password"]})
    body = {"connection_id": "convmixer_metrics", **connection}
    try:
        _api(server["base"], "POST", "/api/v2/connections", body, token["access_token"])
    except urllib.error.HTTPError as err:
        if err.code != 409:
            raise
        _api(server["base"], "PATCH", "/api/v2/connections/convmixer_metrics", body, token["access_token"])


def _metrics_frame(page):
    # The UI mirrors the iframe's path into its own URL (/plugin/convmixer-metrics/convmixer-metrics/), so match
    # on the path's start, not on a substring.
    for frame in page.frames:
        if urlsplit(frame.url).path.startswith("/convmixer-metrics/"):
            return frame
    raise AssertionError(f"no metrics iframe among {[f.url for f in page.frames]}")


def _chart_points(frame, canvas_id: str) -> list[dict]:
    """The plotted run points of one chart (baselines excluded), with their pixel positions in the canvas."""
    return frame.evaluate(
        """(id) => {
            const chart = Chart.getChart(document.getElementById(id));
            return chart.data.datasets.flatMap((dataset, d) => dataset.isBaseline ? [] :
                chart.getDatasetMeta(d).data.map((element, i) => ({
                    x: element.x, y: element.y, run_id: dataset.data[i].run.run_id,
                    status: dataset.data[i].run.status, series: dataset.label})));
        }""",
        canvas_id,
    )


def test_metrics_page_in_the_airflow_ui(airflow_server, browser_page):
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)

    # The plugin's endpoints are mounted in the real server and refuse anonymous callers.
    assert _status(f"{base}/convmixer-metrics/api/runs") == 401
    assert _status(f"{base}/convmixer-metrics/") == 401

    # Log in through the UI's own form.
    _log_in(page, airflow_server)

    # Browse → ConvMixer metrics opens the page inside the UI.
    page.get_by_role("button", name=re.compile("Browse", re.I)).click()
    page.get_by_role("menuitem", name="ConvMixer metrics").click()
    page.wait_for_url(re.compile(r"/plugin/convmixer-metrics(/|$)"))
    frame_locator = page.frame_locator("iframe[src*='convmixer-metrics']")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    frame = _metrics_frame(page)

    rows = demo_rows()
    table_rows = frame_locator.locator("#runs-table tbody tr")
    expect(table_rows).to_have_count(len(rows))
    shown_runs = sorted(table_rows.evaluate_all("trs => trs.map(tr => tr.dataset.runId)"))
    assert shown_runs == sorted(row["run_id"] for row in rows)
    expect(frame_locator.locator("#runs-table tbody .status-regressed")).to_have_count(1)
    expect(frame_locator.locator("#runs-table tbody .status-failed")).to_have_count(1)
    first_link = frame_locator.locator("#runs-table tbody td.run a").first
    assert re.fullmatch(rf"/dags/{DAG_ID}/runs/[^/]+", first_link.get_attribute("href"))

    throughput_points = _chart_points(frame, "chart-throughput")
    evaluated = [row for row in rows if row.get("top1") is not None]  # a failed run has no point to plot
    assert len(throughput_points) == len(_chart_points(frame, "chart-top1")) == len(evaluated) < len(rows)
    (regressed,) = [point for point in throughput_points if point["status"] == "regressed"]

    # The README's picture: no hover or focus left on the nav, so the same data gives the same image.
    page.mouse.move(page.viewport_size["width"] - 5, page.viewport_size["height"] - 5)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.wait_for_timeout(500)  # let the hover transition and the last paint settle
    page.screenshot(path=str(SCREENSHOT))

    # Hovering the regressed point shows that run in the tooltip.
    canvas_box = frame_locator.locator("#chart-throughput").bounding_box()
    page.mouse.move(canvas_box["x"] + regressed["x"], canvas_box["y"] + regressed["y"])
    tooltip = frame.wait_for_function(
        """() => {
            const t = Chart.getChart(document.getElementById('chart-throughput')).tooltip;
            return t.opacity > 0 && t.body.length ? JSON.stringify([t.title, t.body]) : null;
        }""",
        timeout=WAIT_MS,
    ).json_value()
    assert regressed["run_id"] in tooltip and "regressed" in tooltip

    # A filter changes the table and the charts.
    frame_locator.locator("select[name=batch_size]").select_option("1")
    expected = [row for row in rows if row["batch_size"] == 1]
    plotted = [row for row in expected if row.get("top1") is not None]
    expect(table_rows).to_have_count(len(expected))
    assert set(table_rows.evaluate_all("trs => trs.map(tr => tr.dataset.runId)")) == {r["run_id"] for r in expected}
    frame.wait_for_function(
        "(n) => Chart.getChart(document.getElementById('chart-top1')).data.datasets"
        ".filter(d => !d.isBaseline).reduce((sum, d) => sum + d.data.length, 0) === n",
        arg=len(plotted), timeout=WAIT_MS,
    )
    csv_href = frame_locator.locator("#csv").get_attribute("href")
    assert csv_href == "api/runs.csv?batch_size=1"

    # Clicking a point opens that DAG run in the Airflow UI (the top window, not the iframe).
    point = _chart_points(frame, "chart-top1")[0]
    canvas_box = frame_locator.locator("#chart-top1").bounding_box()
    page.mouse.click(canvas_box["x"] + point["x"], canvas_box["y"] + point["y"])
    page.wait_for_url(f"{base}/dags/{DAG_ID}/runs/{quote(point['run_id'], safe='')}")

    assert problems == []


def _log_in(page, server: dict) -> None:
    page.goto(f"{server['base']}/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(server["password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))


def test_empty_and_unreachable_metrics_db_states(airflow_server, browser_page, tmp_path):
    """The page's URL comes from the Airflow Connection first: switch it to show the two non-data states."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    _log_in(page, airflow_server)
    frame = page.frame_locator("iframe[src*='convmixer-metrics']")
    try:
        # No run recorded yet (the DB file does not exist): the empty state says how to trigger one.
        _point_metrics_at(airflow_server, {"conn_type": "sqlite", "host": str(tmp_path / "no-runs-yet.db")})
        page.goto(f"{base}/plugin/convmixer-metrics")
        expect(frame.locator("body")).to_have_attribute("data-state", "empty")
        expect(frame.locator("#empty")).to_contain_text(
            """airflow dags trigger convmixer_validation -c '{"batch_size": 4}'""")
        expect(frame.locator("#charts")).to_be_hidden()
        expect(frame.locator("#runs")).to_be_hidden()

        # The metrics DB is down: a clear error instead of a table, and no password in it.
        _point_metrics_at(airflow_server, {"conn_type": "postgres", "host": "127.0.0.1", "port": 1,
                                           "login": "metrics", "password": "do-not-show", "schema": "metrics"})
        page.reload()
        expect(frame.locator("body")).to_have_attribute("data-state", "error")
        error = frame.locator("#error")
        expect(error).to_contain_text("Metrics database unavailable")
        expect(error).to_contain_text("127.0.0.1")
        assert "do-not-show" not in error.inner_text()
        expect(frame.locator("#runs")).to_be_hidden()
    finally:  # the other test reads the seeded DB through the env var
        token = _api(base, "POST", "/auth/token", {"username": "admin", "password": airflow_server["password"]})
        try:
            _api(base, "DELETE", "/api/v2/connections/convmixer_metrics", {}, token["access_token"])
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise
