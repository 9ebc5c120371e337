"""The metrics page in a real browser: a real ``airflow api-server`` with the repo's plugins folder, headless
Chromium (Debian's ``chromium`` package) driven by Playwright, logging in through Airflow's own login form.

Also takes the README's screenshots (the history light, dark and on a phone, a run page wide and on a phone in
dark mode) from what the browser showed: into a temporary folder, or into ``docs/`` with
``CONVMIXER_SCREENSHOTS=docs`` (see ``shots``).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import pytest

from tests.plugins import (
    DAG_ID,
    NEW_NPU,
    NPU,
    REGRESSED_ASCEND_RUN,
    THROUGHPUT_REGRESSED_RUN,
    demo_rows,
    seed_with_evidence,
)
from tests.stored import stored_row, stored_run

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# A test run writes its screenshots to a temporary folder, so the tests never change tracked files; the README's
# images in docs/ are re-taken on purpose with CONVMIXER_SCREENSHOTS=docs (any other value: that folder).
SCREENSHOTS_ENV = "CONVMIXER_SCREENSHOTS"
SCREENSHOT = "metrics-page.png"
SCREENSHOT_DARK = "metrics-page-dark.png"
SCREENSHOT_PHONE = "metrics-page-phone.png"
SCREENSHOT_RUN = "metrics-run-page.png"
SCREENSHOT_RUN_PHONE_DARK = "metrics-run-page-phone-dark.png"
if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

WIDE: ViewportSize = {"width": 1440, "height": 1000}
PHONE = {"width": 390, "height": 844}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
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
    seed_with_evidence(metrics_url)
    ids = {
        (row["run_id"], row["batch_size"], row["backend"]): row["id"]
        for row in metrics.query_runs(metrics_url, limit=metrics.MAX_LIMIT)[0]
    }

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
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
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while _status(f"{base}/api/v2/monitor/health") != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"api-server did not come up on {base}:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        yield {
            "base": base,
            "password": passwords["admin"],
            "passwords": passwords,
            "log": log_path,
            "ids": ids,
            "metrics_url": metrics_url,
        }
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go: a temporary folder unless $CONVMIXER_SCREENSHOTS names one (``docs``: the
    README's, relative to the repository)."""
    chosen = os.environ.get(SCREENSHOTS_ENV, "").strip()
    if not chosen:
        return tmp_path_factory.mktemp("screenshots")
    folder = Path(chosen) if Path(chosen).is_absolute() else REPO_ROOT / chosen
    if not folder.is_dir():
        pytest.fail(f"${SCREENSHOTS_ENV}={chosen!r} is not a folder; use docs (the README's images) or leave it unset")
    return folder


@pytest.fixture()
def browser_page():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=WAIT_MS)
        try:
            context = browser.new_context(viewport=WIDE, accept_downloads=True)
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


def _chart_points(frame, canvas_id: str, baselines: bool = False) -> list[dict]:
    """The plotted run points of one chart (or its baseline marks), with their pixel positions in the canvas and
    the marker Chart.js resolved for them."""
    return frame.evaluate(
        """([id, baselines]) => {
            const chart = Chart.getChart(document.getElementById(id));
            const area = chart.chartArea;
            return chart.data.datasets.flatMap((dataset, d) => !!dataset.isBaseline !== baselines ? [] :
                chart.getDatasetMeta(d).data.map((element, i) => ({
                    x: element.x, y: element.y, run_id: dataset.data[i].run.run_id,
                    status: dataset.data[i].run.status, series: dataset.label.replace(/ baseline$/, ""),
                    style: element.options.pointStyle, radius: element.options.radius,
                    color: dataset.borderColor, shape: dataset.shape,
                    inside: element.x >= area.left && element.x <= area.right &&
                            element.y >= area.top && element.y <= area.bottom})));
        }""",
        [canvas_id, baselines],
    )


def _open_metrics_page(page, base: str, query: str = ""):
    """The page inside the Airflow UI (as Browse → ConvMixer metrics shows it), once its data has loaded."""
    from playwright.sync_api import expect

    page.goto(f"{base}/plugin/convmixer-metrics/convmixer-metrics/{query}")
    frame_locator = page.frame_locator("iframe[src*='convmixer-metrics']")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", re.compile("loaded|no-match|error"))
    return frame_locator, _metrics_frame(page)


def _no_sideways_scroll(frame) -> dict:
    """How much wider than its window the page and its table are (both 0 when nothing scrolls sideways)."""
    return frame.evaluate("""() => {
        const wrap = document.querySelector('.table-wrap');
        return {page: document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth,
                table: wrap.scrollWidth - wrap.clientWidth};
    }""")


def _settle_for_screenshot(page) -> None:
    """No hover or focus left on the nav, so the same data gives the same image."""
    page.mouse.move(page.viewport_size["width"] - 5, page.viewport_size["height"] - 5)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.wait_for_timeout(500)  # let the hover transition and the last paint settle


def test_metrics_page_in_the_airflow_ui(airflow_server, browser_page, shots):
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)

    # The plugin's endpoints are mounted in the real server and refuse anonymous callers.
    assert _status(f"{base}/convmixer-metrics/api/runs") == 401
    assert _status(f"{base}/convmixer-metrics/") == 401

    # Log in through the UI's own form, in light mode (what Airflow stores when the user picks it).
    _log_in(page, airflow_server)
    page.evaluate("() => localStorage.setItem('theme', 'light')")
    page.reload()

    # Browse → ConvMixer metrics opens the page inside the UI.
    page.get_by_role("button", name=re.compile("Browse", re.I)).click()
    page.get_by_role("menuitem", name="ConvMixer metrics").click()
    page.wait_for_url(re.compile(r"/plugin/convmixer-metrics(/|$)"))
    frame_locator = page.frame_locator("iframe[src*='convmixer-metrics']")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    frame = _metrics_frame(page)
    expect(frame_locator.locator("html")).to_have_attribute("data-theme", "light")

    rows = demo_rows()
    table_rows = frame_locator.locator("#runs-table tbody tr")
    expect(table_rows).to_have_count(len(rows))
    shown_runs = sorted(table_rows.evaluate_all("trs => trs.map(tr => tr.dataset.runId)"))
    assert shown_runs == sorted(row["run_id"] for row in rows)
    first_link = frame_locator.locator("#runs-table tbody td.ran a").first
    assert re.fullmatch(rf"/dags/{DAG_ID}/runs/[^/]+", first_link.get_attribute("href"))

    # Status is the first column and why a run regressed is on screen, not in a tooltip; nothing scrolls sideways.
    assert frame_locator.locator("#runs-table thead th").first.inner_text() == "Status"
    regressed_cells = frame_locator.locator("#runs-table tbody td.status-cell:has(.status-regressed)")
    expect(regressed_cells).to_have_count(2)
    expect(regressed_cells.locator(".reasons li", has_text="throughput regressed: 61.20 < 84.60")).to_be_visible()
    expect(regressed_cells.locator(".reasons li", has_text="top1 regressed: 80.410 < 80.870")).to_be_visible()
    expect(frame_locator.locator("td.status-cell:has(.status-failed) .reasons")).to_contain_text("atc exited")
    assert _no_sideways_scroll(frame) == {"page": 0, "table": 0}
    frame_width = frame.evaluate("() => window.innerWidth")
    for cell in frame_locator.locator("#runs-table tbody tr").first.locator("td").all():
        box = cell.bounding_box()
        assert box["x"] + box["width"] <= page.viewport_size["width"] and box["width"] > 0
    assert frame_width < WIDE["width"]  # the UI's nav takes its share: the page fits what is left

    # Environment changes: highlighted cells in the table and a vertical line on each chart, listed in words.
    changed = frame_locator.locator("#runs-table td.env .changed")
    expect(changed).to_have_count(2)
    assert sorted(changed.evaluate_all("els => els.map(e => e.dataset.field)")) == ["device", "toolkit_version"]
    expect(frame_locator.locator("#env-changes li")).to_have_count(2)
    expect(frame_locator.locator("#env-changes")).to_contain_text("toolkit CANN 8.0.RC1 → CANN 8.0.RC2")
    expect(frame_locator.locator("#env-changes")).to_contain_text(f"device {NPU} → {NEW_NPU}")
    for canvas in ("chart-top1", "chart-throughput"):
        lines = frame.evaluate(
            f"() => Chart.getChart(document.getElementById('{canvas}'))"
            ".options.plugins.envLines.lines.map(l => l.label)"
        )
        assert sorted(lines) == ["device", "toolkit"], canvas

    # Charts: every evaluated run once, a regression marked only on the chart of the metric that regressed.
    evaluated = [row for row in rows if row.get("top1") is not None]  # a failed run has no point to plot
    top1_points, throughput_points = _chart_points(frame, "chart-top1"), _chart_points(frame, "chart-throughput")
    assert len(throughput_points) == len(top1_points) == len(evaluated) < len(rows)
    assert [p["run_id"] for p in top1_points if p["style"] == "triangle"] == ["manual__2026-11-04T10:00:00+00:00"]
    assert [p["run_id"] for p in throughput_points if p["style"] == "triangle"] == [
        "scheduled__2026-11-04T00:00:00+00:00"
    ]
    # Series sitting on the same values stay apart: each has its own colour and marker shape.
    series_looks = {(p["series"], p["color"], p["shape"]) for p in top1_points}
    assert len(series_looks) == len({p["series"] for p in top1_points}) == 4  # bs 1 on ascend only failed
    assert len({(color, shape) for _, color, shape in series_looks}) == 4
    # The baseline of the one-run series is drawn (a dash at that run) inside the plot.
    (lone,) = [p for p in _chart_points(frame, "chart-top1", baselines=True) if NEW_NPU in p["series"]]
    assert lone["radius"] > 0 and lone["inside"]

    # By default one slot per run, in the order they ran: runs four minutes apart are far apart on screen, and the
    # scheduled run that started 31 h after its logical date comes after the Ascend runs it followed.
    x = {p["run_id"]: p["x"] for p in top1_points}
    assert x["manual__2026-11-04T10:04:00+00:00"] - x["manual__2026-11-04T10:00:00+00:00"] > 30
    assert x["scheduled__2026-11-04T00:00:00+00:00"] > x["manual__2026-11-04T10:04:00+00:00"]
    labels = frame.evaluate(
        "() => Chart.getChart(document.getElementById('chart-top1')).scales.x.getLabelItems().map(item => item.label)"
    )
    run_starts = {(row.get("started_at") or row["logical_date"]).strftime("%m-%d %H:%M") for row in evaluated}
    assert len(labels) > 3 and set(labels) <= run_starts  # ticks name runs by when they started (UTC)

    _settle_for_screenshot(page)
    page.screenshot(path=str(shots / SCREENSHOT))

    # Hovering the regressed point shows that run and why in the tooltip.
    regressed = next(p for p in throughput_points if p["style"] == "triangle")
    canvas_box = frame_locator.locator("#chart-throughput").bounding_box()
    page.mouse.move(canvas_box["x"] + regressed["x"], canvas_box["y"] + regressed["y"])
    tooltip = frame.wait_for_function(
        """() => {
            const t = Chart.getChart(document.getElementById('chart-throughput')).tooltip;
            return t.opacity > 0 && t.body.length ? JSON.stringify([t.title, t.body]) : null;
        }""",
        timeout=WAIT_MS,
    ).json_value()
    assert regressed["run_id"] in tooltip and "throughput regressed" in tooltip

    # To scale in time, the late scheduled run still sits after the runs it followed.
    colours = {p["series"]: p["color"] for p in top1_points}
    frame_locator.locator("#x-axis").select_option("time")
    frame.wait_for_function("() => Chart.getChart(document.getElementById('chart-top1')).options.scales.x.min > 1e12")
    x = {p["run_id"]: p["x"] for p in _chart_points(frame, "chart-top1")}
    assert x["scheduled__2026-11-04T00:00:00+00:00"] > x["manual__2026-11-04T10:04:00+00:00"]

    # Filters go into the URL; a reload (or the link, shared) shows the same view, colours unchanged.
    frame_locator.locator("select[name=backend]").select_option("ascend")
    frame_locator.locator("select[name=batch_size]").select_option("4")
    expected = [row for row in rows if row["batch_size"] == 4 and row["backend"] == "ascend"]
    expect(table_rows).to_have_count(len(expected))
    assert frame_locator.locator("#csv").get_attribute("href") == "api/runs.csv?backend=ascend&batch_size=4"
    expect(frame_locator.locator("#csv")).to_have_text(f"Download CSV (all {len(expected)} matching runs)")
    page.wait_for_url(re.compile(r"/plugin/convmixer-metrics/convmixer-metrics/\?backend=ascend&batch_size=4&x=time$"))
    shared = page.url
    page.reload()
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    frame = _metrics_frame(page)
    assert page.url == shared
    expect(frame_locator.locator("select[name=backend]")).to_have_value("ascend")
    expect(frame_locator.locator("select[name=batch_size]")).to_have_value("4")
    expect(frame_locator.locator("#x-axis")).to_have_value("time")
    expect(table_rows).to_have_count(len(expected))
    assert {p["series"]: p["color"] for p in _chart_points(frame, "chart-top1")}.items() <= colours.items()

    # A filter that leaves nothing to plot says so instead of drawing two empty charts.
    frame_locator.locator("select[name=status]").select_option("failed")
    frame_locator.locator("select[name=backend]").select_option("")
    frame_locator.locator("select[name=batch_size]").select_option("")
    expect(table_rows).to_have_count(1)
    for metric in ("top1", "throughput"):
        expect(frame_locator.locator(f"figure[data-metric={metric}] .chart-empty")).to_be_visible()
        expect(frame_locator.locator(f"#chart-{metric}")).to_be_hidden()

    # Dates the server refuses are reported in the form's words.
    frame_locator.locator("select[name=status]").select_option("")
    frame_locator.locator("input[name=since]").fill("2026-11-04")
    frame_locator.locator("input[name=until]").fill("2026-11-02")
    error = frame_locator.locator("#error")
    expect(error).to_contain_text("From (2026-11-04) is after To (2026-11-02)")
    assert "HTTP" not in error.inner_text() and "since" not in error.inner_text()
    frame_locator.locator("button[type=reset]").click()
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")

    # Pick two rows to compare: the link names both rows.
    before_id = airflow_server["ids"]["manual__2026-11-03T12:00:00+00:00", 4, "ascend"]
    after_id = airflow_server["ids"][REGRESSED_ASCEND_RUN, 4, "ascend"]
    frame_locator.locator(f"td.pick input[value='{before_id}']").check()
    frame_locator.locator(f"td.pick input[value='{after_id}']").check()
    compare = frame_locator.locator("#compare")
    expect(compare).to_have_text("Compare the two picked runs (2/2)")
    assert compare.get_attribute("href") == f"compare?a={before_id}&b={after_id}"

    # The run's DAG run link in the table opens in the Airflow UI (the top window, not the iframe).
    row_link = frame_locator.locator("#runs-table tbody td.ran a").first
    href = row_link.get_attribute("href")
    row_link.click()
    page.wait_for_url(f"{base}{href}")

    # Clicking a chart point opens that run's page inside the metrics frame (the UI's URL follows it).
    frame_locator, frame = _open_metrics_page(page, base)
    point = _chart_points(frame, "chart-top1")[0]
    canvas_box = frame_locator.locator("#chart-top1").bounding_box()
    page.mouse.click(canvas_box["x"] + point["x"], canvas_box["y"] + point["y"])
    page.wait_for_url(re.compile(r"/plugin/convmixer-metrics/convmixer-metrics/run\?id=\d+$"))
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    expect(frame_locator.locator("#subtitle")).to_contain_text(point["run_id"])

    assert problems == []


def test_dark_mode_follows_airflow(airflow_server, browser_page, shots):
    """Airflow keeps the user's choice in localStorage 'theme' and marks its <html> 'dark'; the page follows both,
    also when the user switches while the page is open."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    _log_in(page, airflow_server)
    page.evaluate("() => localStorage.setItem('theme', 'dark')")
    frame_locator, frame = _open_metrics_page(page, base)
    assert page.evaluate("() => document.documentElement.classList.contains('dark')")  # Airflow itself is dark
    expect(frame_locator.locator("html")).to_have_attribute("data-theme", "dark")
    assert _luminance(frame, "body", "backgroundColor") < 0.1
    assert _luminance(frame, "body", "color") > 0.6
    assert _luminance(frame, "#runs-table th", "backgroundColor") < 0.2
    legend_colour = frame.evaluate(
        "() => Chart.getChart(document.getElementById('chart-top1')).options.plugins.legend.labels.color"
    )
    assert legend_colour == frame.evaluate(
        "() => getComputedStyle(document.body).color.length && "
        "getComputedStyle(document.documentElement).getPropertyValue('--fg')"
        ".trim()"
    )
    _settle_for_screenshot(page)
    page.screenshot(path=str(shots / SCREENSHOT_DARK))

    # Switching in Airflow (what its colour-mode toggle does to <html>) switches the open page and its charts.
    page.evaluate(
        "() => { document.documentElement.classList.replace('dark', 'light');"
        " document.documentElement.style.colorScheme = 'light'; }"
    )
    expect(frame_locator.locator("html")).to_have_attribute("data-theme", "light")
    assert _luminance(frame, "body", "backgroundColor") > 0.9
    frame.wait_for_function(
        "() => Chart.getChart(document.getElementById('chart-top1')).options.plugins.legend.labels.color === '#1a202c'"
    )


def _luminance(frame, selector: str, prop: str) -> float:
    """Relative brightness 0..1 of a computed colour."""
    rgb = frame.evaluate(f"() => getComputedStyle(document.querySelector('{selector}')).{prop}")
    r, g, b = (int(v) for v in re.findall(r"\d+", rgb)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def test_phone_width_shows_the_essentials(airflow_server, browser_page, shots):
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(PHONE)
    _log_in(page, airflow_server)
    frame_locator, frame = _open_metrics_page(page, base)
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    # Each run is a card: status with its reason, model, then batch size, top-1 and throughput, each named.
    regressed = frame_locator.locator("#runs-table tbody tr:has(.status-regressed)").first
    cells = [c for c in regressed.locator("td").all() if c.is_visible()]
    assert [c.get_attribute("data-label") for c in cells] == [
        "Status",
        "Ran (UTC) · run",
        "Model",
        "Batch size",
        "Top-1 %",
        "Throughput (img/s)",
        "Compare",
    ]
    # When it ran and its run id, and the compare box the pager's "Compare the two picked runs" counts.
    expect(regressed.locator("td.ran small")).to_have_text(re.compile(r"^(scheduled|manual)__"))
    expect(regressed.locator("td.pick input")).to_be_visible()
    expect(regressed.locator(".reasons")).to_be_visible()
    shown_label = cells[3].evaluate("td => getComputedStyle(td, '::before').content")
    assert shown_label == '"Batch size"'  # the label is shown above the number
    for cell in cells:
        box = cell.bounding_box()
        assert box["width"] > 0 and box["x"] + box["width"] <= PHONE["width"]
    frame_locator.locator("#runs-table").scroll_into_view_if_needed()
    _settle_for_screenshot(page)
    page.screenshot(path=str(shots / SCREENSHOT_PHONE))
    assert _no_sideways_scroll(frame) == {"page": 0, "table": 0}
    # The pager's buttons keep their text on one line.
    newer, older = frame_locator.locator("#prev"), frame_locator.locator("#next")
    assert newer.bounding_box()["height"] == older.bounding_box()["height"] < 2 * 13 * 1.4


def test_expired_session_banner_links_to_the_login_page(airflow_server, browser_page):
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    _log_in(page, airflow_server)
    frame_locator, _frame = _open_metrics_page(page, base)
    page.context.clear_cookies()  # the session ends while the page is open
    frame_locator.locator("select[name=batch_size]").select_option("1")
    error = frame_locator.locator("#error")
    expect(error).to_contain_text("Your Airflow session has ended")
    link = error.get_by_role("link", name="Sign in to Airflow")
    assert "/auth/login?next=" in link.get_attribute("href")
    link.click()
    page.wait_for_url(re.compile(r"/auth/login"))  # the whole window, not the iframe


def _log_in(page, server: dict, user: str = "admin") -> None:
    page.goto(f"{server['base']}/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(server["passwords"][user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))


def test_empty_and_unreachable_metrics_db_states(airflow_server, browser_page, tmp_path):
    """The page's URL comes from the Airflow Connection first: switch it to show the two non-data states."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    _log_in(page, airflow_server)
    frame = page.frame_locator("iframe[src*='convmixer-metrics']")
    try:
        # No run recorded yet (the DB file does not exist): the empty state says how to trigger one (after
        # unpausing: the DAG is created paused and a trigger alone would stay queued).
        _point_metrics_at(airflow_server, {"conn_type": "sqlite", "host": str(tmp_path / "no-runs-yet.db")})
        page.goto(f"{base}/plugin/convmixer-metrics")
        expect(frame.locator("body")).to_have_attribute("data-state", "empty")
        expect(frame.locator("#empty")).to_contain_text("airflow dags unpause convmixer_validation")
        expect(frame.locator("#empty")).to_contain_text(
            """airflow dags trigger convmixer_validation -c '{"batch_size": 4}'"""
        )
        expect(frame.locator("#charts")).to_be_hidden()
        expect(frame.locator("#runs")).to_be_hidden()

        # The metrics DB is down: a clear error instead of a table, naming neither the server nor the account.
        _point_metrics_at(
            airflow_server,
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 1,
                "login": "metrics-login",
                "password": "do-not-show",
                "schema": "metrics-db",
            },
        )
        page.reload()
        expect(frame.locator("body")).to_have_attribute("data-state", "error")
        error = frame.locator("#error")
        expect(error).to_contain_text("Metrics database unavailable")
        expect(error).to_contain_text("unreachable")
        for secret in ("127.0.0.1", "metrics-login", "do-not-show", "metrics-db", "port"):
            assert secret not in error.inner_text()
        assert "metrics-login" in server_log(airflow_server)  # where an administrator finds it
        expect(frame.locator("#runs")).to_be_hidden()
    finally:  # the other test reads the seeded DB through the env var
        token = _api(base, "POST", "/auth/token", {"username": "admin", "password": airflow_server["password"]})
        try:
            _api(base, "DELETE", "/api/v2/connections/convmixer_metrics", {}, token["access_token"])
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise


def server_log(server: dict) -> str:
    return Path(server["log"]).read_text(errors="replace")


def _open_in_ui(page, base: str, path_and_query: str):
    """One of the plugin's pages (run?id=…, compare?a=…&b=…) inside the Airflow UI, once its data has loaded."""
    from playwright.sync_api import expect

    page.goto(f"{base}/plugin/convmixer-metrics/convmixer-metrics/{path_and_query}")
    frame_locator = page.frame_locator("iframe[src*='convmixer-metrics']")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", re.compile("loaded|error"))
    return frame_locator, _metrics_frame(page)


def test_run_page_compare_and_accept_as_admin(airflow_server, browser_page, shots):
    """Light, 1440 px: the regressed Ascend run's page (fidelity breached, flips with McNemar, latency boxes, no
    energy), the compare view against the run before it, then the admin accepts it as the new baseline."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    _log_in(page, airflow_server)
    page.evaluate("() => localStorage.setItem('theme', 'light')")
    regressed = airflow_server["ids"][REGRESSED_ASCEND_RUN, 4, "ascend"]
    previous = airflow_server["ids"]["manual__2026-11-03T12:00:00+00:00", 4, "ascend"]
    run, frame = _open_in_ui(page, base, f"run?id={regressed}")
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")

    # Verdict: the rule that fired is marked, the ones that held too.
    expect(run.locator("#status .status-regressed")).to_be_visible()
    expect(run.locator("#reasons li[data-outcome=fired]").first).to_contain_text("top1 regressed: 80.410 < 80.870")
    expect(run.locator("#reasons li[data-outcome=held]", has_text="throughput ok")).to_have_count(1)
    # Each line says in words how it took part, the deciding one first.
    expect(run.locator("#reasons li").first.locator(".rule-outcome")).to_have_text("fired")
    expect(run.locator("#reasons li[data-outcome=held] .rule-outcome").first).to_have_text("held")
    # Both throughput figures, the end-to-end one with its stages, and the spread in percent.
    expect(run.locator("#figures dd[data-field=throughput_robust]")).to_have_text("413.1 img/s")
    expect(run.locator("#figures dd[data-field=e2e_throughput]")).to_have_text("126.8 img/s")
    expect(run.locator("#figures dd[data-field=stage_seconds]")).to_have_text(
        "preprocess 4.20 s · infer 1.21 s · evaluate 0.35 s"
    )
    expect(run.locator("#figures dd[data-field=latency_cv]")).to_have_text("234.8 %")
    expect(run.locator("#figures dd[data-field=latency_robust_cv]")).to_have_text("2.1 %")
    expect(run.locator("#figures dd[data-field=checkpoint_path]")).to_contain_text("convmixer_1536_20_ks9_p7.pth.tar")
    # What changed since the previous run of the series, highlighted in the fingerprint.
    expect(run.locator("#fingerprint-diff li.changed").first).to_contain_text(
        "toolkit_version: CANN 8.0.RC1 → CANN 8.0.RC2"
    )
    expect(run.locator("#fingerprint-table tr.changed th")).to_have_text(["toolkit_version"])
    # Fidelity against the ONNX, and the flips against the previous ok run with McNemar's p and image names.
    expect(run.locator("#fidelity .verdict-bad")).to_contain_text("OM diverges from ONNX: min cosine")
    previous_flips = run.locator(".flip-block").first
    expect(previous_flips.locator(".flip-summary")).to_contain_text(
        re.compile(
            r"Against run manual__2026-11-03T12:00:00\+00:00 \(batch size 4\): \d+ right→wrong, \d+ "
            r"wrong→right, top-1 -\d\.\d{3} pt, McNemar exact p = \S+\."
        )
    )
    expect(previous_flips.locator(".names li").first).to_have_text(re.compile(r"ILSVRC2012_val_\d{8}\.JPEG"))
    p_value = float(previous_flips.get_attribute("data-p"))
    assert 0 < p_value < 0.05
    expect(run.locator("#classes")).to_contain_text("class ")
    # Latency: a box per run of the series (the previous one and this one), this run's histogram.
    boxes = frame.evaluate("() => Chart.getChart(document.getElementById('chart-boxes')).data.labels")
    assert len(boxes) == 2 and boxes[-1].endswith("(this)")
    assert (
        frame.evaluate(
            "() => Chart.getChart(document.getElementById('chart-histogram'))"
            ".data.datasets[0].data.reduce((a, b) => a + b, 0)"
        )
        == 40
    )
    expect(run.locator("#energy-summary")).to_have_text("Not measured: no power reading was recorded for this run.")
    # Links: the Airflow run and its gate task's log (opened in the UI), the previous run's page.
    hrefs = run.locator("#airflow-links a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    run_url = f"/dags/{DAG_ID}/runs/{quote(REGRESSED_ASCEND_RUN, safe='')}"
    assert hrefs[:2] == [run_url, f"{run_url}/tasks/regression_gate"]
    assert run.locator("a[data-rel=previous]").get_attribute("href") == f"run?id={previous}"
    assert _no_sideways_scroll_page(frame) == 0
    _whole_page_screenshot(page, f"{base}/convmixer-metrics/run?id={regressed}", shots / SCREENSHOT_RUN)

    # Compare with the previous run: the fingerprint difference, the deltas and the flips between them.
    run.locator("a[data-rel=compare-previous]").click()
    page.wait_for_url(re.compile(rf"/convmixer-metrics/compare\?a={previous}&b={regressed}$"))
    # The first comparison imports scipy in the server: slow on a busy machine.
    expect(run.locator("body")).to_have_attribute("data-state", "loaded", timeout=WAIT_MS)
    expect(run.locator("#fingerprint-diff")).to_have_text("toolkit_version: CANN 8.0.RC1 → CANN 8.0.RC2")
    expect(run.locator("#deltas tr[data-field=top1]")).to_have_class("worse")
    expect(run.locator("#deltas tr[data-field=top1] td").nth(2)).to_have_text("-0.940")
    expect(run.locator("#flips .flip-summary")).to_contain_text("a real change, not noise")
    expect(run.locator("#throughput-test")).to_contain_text("Welch's t-test on the 40 and 40 per-loop times")
    # The run before predates the robust and end-to-end figures: said, not a dash.
    expect(run.locator("#deltas tr[data-field=throughput_robust] td").first).to_have_text("not measured")
    expect(run.locator("#deltas tr[data-field=latency_robust_cv] td").nth(1)).to_have_text("2.1")

    # Accept as baseline: a reason is required; then who/when/why shows here and in the history.
    page.go_back()
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")
    button = run.locator("#accept-button")
    expect(button).to_be_enabled()
    button.click()
    expect(run.locator("#accept-error")).to_contain_text("Say why")
    run.locator("textarea[name=reason]").fill("CANN 8.0.RC2 rolled out on purpose")
    button.click()
    expect(run.locator("#accepted")).to_contain_text("accepted as baseline by admin")
    expect(run.locator("#accepted")).to_contain_text("CANN 8.0.RC2 rolled out on purpose")
    expect(run.locator("#accepted")).to_contain_text("It stays regressed on top1, fidelity")
    expect(run.locator("#accept-form")).to_be_hidden()
    # Top-1 and fidelity fired: accepting moves the throughput baseline, but the badge stays red beside the red
    # "OM diverges" line (metrics.rebaseline).
    expect(run.locator("#status .status-regressed")).to_be_visible()
    expect(run.locator("#fidelity .verdict-bad")).to_contain_text("OM diverges from ONNX")
    history, _ = _open_metrics_page(page, base)
    expect(history.locator("#runs-table td.status-cell .accepted")).to_contain_text(
        re.compile(r"accepted as baseline by admin, 2026-\d\d-\d\d \d\d:\d\d UTC: CANN 8.0.RC2 rolled out")
    )
    assert problems == []


def test_viewer_is_refused_accept_on_a_phone_in_dark_mode(airflow_server, browser_page, shots):
    """Dark, 390 px: a read-only user sees the button disabled with why, and the server refuses the write too."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(PHONE)
    _log_in(page, airflow_server, user="viewer")
    page.evaluate("() => localStorage.setItem('theme', 'dark')")
    regressed = airflow_server["ids"][THROUGHPUT_REGRESSED_RUN, 4, "onnxruntime"]
    run, frame = _open_in_ui(page, base, f"run?id={regressed}")
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")
    expect(run.locator("html")).to_have_attribute("data-theme", "dark")
    assert _luminance(frame, "body", "backgroundColor") < 0.1
    expect(run.locator("#reasons li[data-outcome=fired]")).to_contain_text("throughput regressed: 61.20 < 84.60")
    button = run.locator("#accept-button")
    expect(button).to_be_disabled()
    expect(run.locator("#accept-why")).to_contain_text(
        "You cannot accept this run: your Airflow user 'viewer' may view but not edit DAG convmixer_validation"
    )
    assert _no_sideways_scroll_page(frame) == 0
    _settle_for_screenshot(page)
    page.screenshot(path=str(shots / SCREENSHOT_RUN_PHONE_DARK), full_page=True)
    # Enabling the button by hand does not help: a viewer is never given the page's CSRF token, and the server
    # checks the edit permission as well (tests/plugins/test_metrics_api.py sends a viewer's valid token).
    status = frame.evaluate(
        """async (id) => {
        const response = await fetch('api/runs/' + id + '/accept', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': 'none'},
            body: JSON.stringify({reason: 'let me in'})});
        return response.status;
    }""",
        regressed,
    )
    assert status == 403

    assert stored_row(airflow_server["metrics_url"], regressed)["rebaselined_at"] is None


def _whole_page_screenshot(page, url: str, path: Path) -> None:
    """The plugin page on its own (same session), top to bottom: inside the UI only its first screen would show."""
    from playwright.sync_api import expect

    alone = page.context.new_page()
    try:
        alone.set_viewport_size(page.viewport_size)
        alone.goto(url)
        expect(alone.locator("body")).to_have_attribute("data-state", "loaded")
        alone.wait_for_timeout(500)
        alone.screenshot(path=str(path), full_page=True)
    finally:
        alone.close()


def _no_sideways_scroll_page(frame) -> int:
    return frame.evaluate("() => document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth")


@pytest.mark.parametrize(("theme", "viewport"), [("light", WIDE), ("dark", PHONE)])
def test_bad_filters_in_the_url_are_reported_not_dropped(airflow_server, browser_page, theme, viewport):
    """since=notadate, an impossible date, a page size beyond the cap or a negative offset: the page shows the
    API's clear 422 in the form's words instead of silently showing every run."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(viewport)
    _log_in(page, airflow_server)
    page.evaluate(f"() => localStorage.setItem('theme', '{theme}')")
    for query, words in (
        ("since=notadate", "From"),
        ("until=2026-13-45", "To"),
        ("limit=100000000", "limit"),
        ("offset=-5", "offset"),
    ):
        frame_locator, _frame = _open_metrics_page(page, base, f"?{query}")
        expect(frame_locator.locator("body")).to_have_attribute("data-state", "error")
        error = frame_locator.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text(words)
        expect(frame_locator.locator("#runs")).to_be_hidden()
    # Clearing the form takes the view back from the URL.
    frame_locator.locator("button[type=reset]").click()
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")


@pytest.mark.parametrize(("theme", "viewport"), [("light", WIDE), ("dark", PHONE)])
def test_phone_card_rules_stay_on_the_history_table(airflow_server, browser_page, theme, viewport):
    """The run page's key/value tables keep two columns (no words broken into a grid) and the compare page's
    "Figures (B − A)" keeps its headers, at 390 px as at 1440 px."""
    from playwright.sync_api import expect

    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(viewport)
    _log_in(page, airflow_server, user="viewer")
    page.evaluate(f"() => localStorage.setItem('theme', '{theme}')")
    ids = airflow_server["ids"]
    regressed = ids[REGRESSED_ASCEND_RUN, 4, "ascend"]
    run, frame = _open_in_ui(page, base, f"run?id={regressed}")
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")
    shapes = frame.evaluate("""() => [...document.querySelectorAll('#fingerprint-table tr')].map(tr => ({
        display: getComputedStyle(tr).display, cells: tr.children.length,
        key: tr.children[0].getBoundingClientRect().height, text: tr.children[0].textContent}))""")
    assert shapes and all(s["display"] == "table-row" and s["cells"] == 2 for s in shapes)
    backend = next(s for s in shapes if s["text"] == "backend")
    assert backend["key"] < 2 * 13 * 1.4  # "backend" on one line, not broken into "backe nd"
    assert _no_sideways_scroll_page(frame) == 0

    previous = ids["manual__2026-11-03T12:00:00+00:00", 4, "ascend"]
    compare, frame = _open_in_ui(page, base, f"compare?a={previous}&b={regressed}")
    expect(compare.locator("body")).to_have_attribute("data-state", "loaded")
    expect(compare.locator("#deltas thead th")).to_have_text(["Metric", "A", "B", "B − A", "change"])
    expect(compare.locator("#deltas thead")).to_be_visible()
    assert frame.evaluate("() => getComputedStyle(document.querySelector('#deltas tbody tr')).display") == "table-row"


@pytest.mark.parametrize(("theme", "viewport"), [("light", WIDE), ("dark", PHONE)])
def test_a_fidelity_regression_is_marked_on_neither_chart(airflow_server, browser_page, theme, viewport):
    """A run that regressed on fidelity alone ("OM diverges from ONNX"), whose other lines mention top1 and
    throughput ("top1 ok …", "throughput inconclusive …"): no red triangle on either chart; its table cell shows
    the deciding line. Recorded last (its own model), so the other tests' views are unchanged."""
    from playwright.sync_api import expect

    from convmixer_tasks import metrics

    model = "convmixer_768_32"
    url = airflow_server["metrics_url"]
    from convmixer_tasks.measure.loopstats import pack_samples

    # Loops of about 0.5 ms with a few 40 ms spikes (a GC pause, an interrupt), as ais_bench lists show them.
    spiky = pack_samples([40.0 if loop % 25 == 0 else 0.5 + 0.01 * (loop % 7) for loop in range(100)])
    for day, status, reasons in (
        (
            5,
            "ok",
            [
                "top1 ok: 80.100 >= 79.660 (baseline 80.160 - tolerance 0.5)",
                "throughput ok: no history (no earlier ok run on this model, backend, device and batch size)",
            ],
        ),
        (
            6,
            "regressed",
            [
                "top1 ok: 80.120 >= 79.660 (baseline 80.160 - tolerance 0.5)",
                "throughput inconclusive: per-loop CV 234.8% > 10% after 3 measurements",
                "OM diverges from ONNX: min cosine 0.9812 < 0.999 (the artifact is not the model)",
            ],
        ),
    ):
        when = datetime(2026, 11, day, 8, tzinfo=UTC)
        metrics.record_run(
            url,
            {
                "run_id": f"manual__{when.isoformat()}",
                "dag_id": DAG_ID,
                "logical_date": when,
                "started_at": when,
                "model_variant": model,
                "backend": "ascend",
                "device": NPU,
                "toolkit_version": "CANN 8.0.RC2",
                "batch_size": 4,
                "input_dtype": "uint8",
                "image_count": 500,
                "top1": 80.1,
                "top5": 95.0,
                "throughput": 700.0,
                "status": status,
                "throughput_check": "noisy" if day == 6 else "unjudged",
                "gate_reasons": reasons,
                "samples_ms": spiky if day == 6 else None,
                "fingerprint": {"backend": "ascend", "device": NPU},
            },
        )
    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(viewport)
    _log_in(page, airflow_server)
    page.evaluate(f"() => localStorage.setItem('theme', '{theme}')")
    frame_locator, frame = _open_metrics_page(page, base, f"?model={model}")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    for canvas in ("chart-top1", "chart-throughput"):
        points = _chart_points(frame, canvas)
        assert len(points) == 2 and [p for p in points if p["style"] == "triangle"] == [], canvas
    cell = frame_locator.locator("#runs-table td.status-cell:has(.status-regressed)")
    expect(cell.locator(".reasons li")).to_have_text(
        ["OM diverges from ONNX: min cosine 0.9812 < 0.999 (the artifact is not the model)"]
    )

    # Hovering the last (rightmost) point: the tooltip, reasons and all, stays inside the chart.
    last = max(_chart_points(frame, "chart-throughput"), key=lambda p: p["x"])
    frame_locator.locator("#chart-throughput").scroll_into_view_if_needed()
    box = frame_locator.locator("#chart-throughput").bounding_box()
    page.mouse.move(box["x"] + last["x"], box["y"] + last["y"])
    edges = frame.wait_for_function(
        """() => {
        const chart = Chart.getChart(document.getElementById('chart-throughput'));
        const t = chart.tooltip;
        return t.opacity > 0 && t.body.length ? [t.x, t.x + t.width, chart.width] : null;
    }""",
        timeout=WAIT_MS,
    ).json_value()
    assert edges[0] >= 0 and edges[1] <= edges[2], edges
    # No x-axis label repeats.
    labels = [
        label
        for label in frame.evaluate(
            "() => Chart.getChart(document.getElementById('chart-top1')).scales.x.getLabelItems().map(i => i.label)"
        )
        if label
    ]
    assert len(labels) == len(set(labels))

    # Its run page: the spikes do not flatten the latency boxes (a log axis), and the spread reads in percent.
    row = stored_run(url, "manual__2026-11-06T08:00:00+00:00", 4, "ascend")
    run, frame = _open_in_ui(page, base, f"run?id={row['id']}")
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")
    assert frame.evaluate("() => Chart.getChart(document.getElementById('chart-boxes')).options.scales.y.type") == (
        "logarithmic"
    )
    expect(run.locator("#reasons li").first).to_have_attribute("data-outcome", "fired")
    expect(run.locator("#reasons li").first).to_contain_text("OM diverges from ONNX")


@pytest.mark.parametrize(("theme", "viewport"), [("light", WIDE), ("dark", WIDE), ("light", PHONE), ("dark", PHONE)])
def test_a_failed_row_shows_the_task_and_error_that_failed_it(airflow_server, browser_page, theme, viewport):
    """A run whose check_inputs refused a misspelt conf key: its failed row (built by rows.failed_rows from the
    failure the task's callback kept) shows the cause as its deciding line in the table and first on its run
    page. Recorded last (its own model), so the other tests' views are unchanged."""
    from playwright.sync_api import expect

    from convmixer_tasks.run import steps
    from convmixer_tasks.run.records import TaskFailure
    from convmixer_tasks.run.rows import failed_rows
    from convmixer_tasks.run.runfacts import run_facts

    model, run_id = "convmixer_demo", "manual__2026-11-07T08:00:00+00:00"
    cause = "check_inputs failed: unknown param(s) batch_szie in the run's conf (did you mean batch_szie → batch_size?)"
    failure = TaskFailure("check_inputs", -1, None, cause.removeprefix("check_inputs failed: "))
    params = {"model_variant": model, "backend": "onnxruntime", "batch_sizes": [1, 4], "batch_szie": 4}
    rows = failed_rows(
        run_facts(run_id, DAG_ID, "2026-11-07T08:00:00+00:00", None), params, [failure], asked={"batch_szie": 4}
    )
    (row,) = steps.record_rows(airflow_server["metrics_url"], rows, keep_gated=True)  # same key: once however run

    base, page = airflow_server["base"], browser_page
    page.set_viewport_size(viewport)
    _log_in(page, airflow_server, user="viewer")
    page.evaluate(f"() => localStorage.setItem('theme', '{theme}')")
    frame_locator, frame = _open_metrics_page(page, base, f"?model={model}")
    expect(frame_locator.locator("body")).to_have_attribute("data-state", "loaded")
    expect(frame_locator.locator("html")).to_have_attribute("data-theme", theme)
    reasons = frame_locator.locator("#runs-table td.status-cell:has(.status-failed) .reasons li")
    expect(reasons.first).to_be_visible()
    expect(reasons.first).to_have_text(cause)
    assert _no_sideways_scroll_page(frame) == 0

    run, frame = _open_in_ui(page, base, f"run?id={row.id}")
    expect(run.locator("body")).to_have_attribute("data-state", "loaded")
    expect(run.locator("#reasons li").first).to_be_visible()
    expect(run.locator("#reasons li").first).to_contain_text(cause)
    expect(run.locator("#reasons li").nth(1)).to_contain_text("recorded under batch size 1: the refused conf")
