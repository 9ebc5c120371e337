"""The metrics plugin's HTTP API against a real SQLite metrics DB and real Airflow JWTs (TestClient, no server).

Airflow reads its configuration when first imported, so AIRFLOW_HOME points at a temp folder before that; the JWT
check reads Airflow's revoked-token table, so its metadata DB is created there too.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DIR = REPO_ROOT / "plugins"

if "airflow" not in sys.modules:  # another test module may have configured Airflow already; keep its home then
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="convmixer-plugin-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "convmixer-plugin-tests-" + "x" * 48)
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))  # what Airflow does for its plugins folder

from tests.plugins import (  # noqa: E402
    BATCH_SIZES,
    DAG_ID,
    DAYS,
    DEVICE,
    NEW_NPU,
    NPU,
    REGRESSED_ASCEND_RUN,
    THROUGHPUT_REGRESSED_RUN,
    demo_rows,
    seed_with_evidence,
)

ENDPOINTS = [
    "/",
    "/run",
    "/compare",
    "/static/page.js",
    "/static/run.js",
    "/api/filters",
    "/api/runs",
    "/api/series",
    "/api/runs.csv",
    "/api/runs/1",
    "/api/compare?a=1&b=2",
]


@pytest.fixture(scope="module")
def auth_manager():
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.utils import db

    db.initdb()  # creates the tables on a fresh home; a no-op upgrade on one another module already made
    manager = create_auth_manager()
    manager.init()
    return manager


def mint(manager, role: str | None = "viewer", username: str = "tester", **kwargs) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role), **kwargs)


@pytest.fixture(scope="module")
def token(auth_manager) -> str:
    return mint(auth_manager)


@pytest.fixture(scope="module")
def seeded_url(tmp_path_factory) -> str:
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path_factory.mktemp('metrics') / 'metrics.db'}"
    metrics.upgrade(url)
    for row in demo_rows():
        metrics.record_run(url, row)
    return url


def client_for(url: str, token: str | None = None):
    from convmixer_metrics.app import create_app
    from fastapi.testclient import TestClient

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return TestClient(create_app(db_url=lambda: url), headers=headers)


@pytest.fixture()
def api(seeded_url, token):
    return client_for(seeded_url, token)


# --- registration -------------------------------------------------------------------------------------------------


def test_airflow_plugin_loader_finds_exactly_the_metrics_plugin():
    from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS_DIR))

    assert errors == {}
    assert [plugin.name for plugin in plugins] == ["convmixer_metrics"]
    (app_entry,) = plugins[0].fastapi_apps
    assert not any(app_entry["url_prefix"].startswith(prefix) for prefix in RESERVED_URL_PREFIXES)
    (view,) = plugins[0].external_views
    parsed = ExternalViewResponse.model_validate(view)  # what the UI's /ui/plugins serialises
    assert parsed.category == "browse" and parsed.url_route == "convmixer-metrics"
    assert parsed.href == app_entry["url_prefix"] + "/"


def test_registered_app_is_the_protected_one_built_on_first_request(token):
    from convmixer_metrics.plugin import ConvMixerMetricsPlugin
    from fastapi.testclient import TestClient

    (entry,) = ConvMixerMetricsPlugin.fastapi_apps
    client = TestClient(entry["app"])
    assert client.get("/api/filters").status_code == 401
    assert client.get("/static/page.js", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_importing_the_plugin_stays_cheap_for_task_processes():
    """Every task process imports the plugins folder (for macros): no FastAPI app or auth imports at that point."""
    import subprocess

    code = (
        "import sys, convmixer_metrics_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('convmixer_metrics.app', 'airflow.api_fastapi'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PLUGINS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- authentication -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_requests_without_credentials_are_refused(seeded_url, path):
    response = client_for(seeded_url).get(path)
    assert response.status_code == 401
    assert "convmixer_1536_20" not in response.text


@pytest.mark.parametrize("path", ENDPOINTS)
def test_bad_tokens_are_refused(seeded_url, auth_manager, path):
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    forged = JWTGenerator(
        secret_key="not-the-server-secret-" + "y" * 48, valid_for=60, audience="apache-airflow", issuer=None
    ).generate({"sub": "mallory", "role": "admin"})
    expired = mint(auth_manager, expiration_time_in_seconds=-60)
    for bad in ("not-a-jwt", forged, expired):
        response = client_for(seeded_url, bad).get(path)
        assert response.status_code in (401, 403), (bad, response.text)
        assert "convmixer_1536_20" not in response.text


def test_user_without_a_role_is_forbidden(seeded_url, auth_manager):
    response = client_for(seeded_url, mint(auth_manager, role=None)).get("/api/runs")
    assert response.status_code == 403


@pytest.mark.parametrize("path", ENDPOINTS)
def test_token_with_a_role_airflow_does_not_know_is_forbidden_not_an_error(seeded_url, auth_manager, path):
    """SimpleAuthManager itself raises KeyError for such a role (a 500 from Airflow's own check)."""
    response = client_for(seeded_url, mint(auth_manager, role="superhero")).get(path)
    assert response.status_code == 403
    assert "convmixer_1536_20" not in response.text


def test_expired_session_answer_names_the_login_page(seeded_url):
    response = client_for(seeded_url).get("/api/runs", headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["login_url"].endswith("/auth/login")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_valid_bearer_token_is_accepted(api, path):
    assert api.get(path).status_code == 200


def test_ui_session_cookie_is_accepted(seeded_url, token):
    response = client_for(seeded_url).get("/api/runs", cookies={"_token": token})
    assert response.status_code == 200 and response.json()["total"] == len(demo_rows())


def test_browser_without_session_gets_a_login_link_and_no_data(seeded_url):
    response = client_for(seeded_url).get("/", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert "/auth/login" in response.text and "scheduled__" not in response.text


def test_page_shell_holds_no_data_and_locks_down_scripts(api):
    response = api.get("/")
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "scheduled__" not in response.text and "convmixer_1536_20" not in response.text
    assert 'src="static/vendor/chart.js/chart.umd.min.js"' in response.text


@pytest.mark.parametrize("name", ["../app.py", "..%2Fapp.py", "index.html", "nope.js", "vendor/../../app.py"])
def test_static_route_serves_only_the_listed_files(api, name):
    assert api.get(f"/static/{name}").status_code == 404


def test_vendored_chart_library_is_served_locally(api):
    response = api.get("/static/vendor/chart.js/chart.umd.min.js")
    assert response.status_code == 200 and "Chart.js v4" in response.text[:200]


# --- table --------------------------------------------------------------------------------------------------------


def test_runs_are_latest_run_first_with_total(api):
    """By when each run ran, so a scheduled run that started a day after its logical date is not listed below the
    runs it followed."""
    body = api.get("/api/runs", params={"limit": 50}).json()
    ran = [row["ran_at"] for row in body["rows"]]
    assert body["total"] == len(demo_rows()) == len(body["rows"])
    assert ran == sorted(ran, reverse=True)
    assert body["rows"][0]["run_id"] == "scheduled__2026-11-04T00:00:00+00:00"
    assert body["rows"][0]["logical_date"] < body["rows"][2]["logical_date"]


def test_pages_tile_the_full_list(api):
    everything = api.get("/api/runs", params={"limit": 50}).json()["rows"]
    pages = [api.get("/api/runs", params={"limit": 4, "offset": offset}).json() for offset in (0, 4, 8)]
    assert [len(page["rows"]) for page in pages] == [4, 4, len(everything) - 8]
    assert [row for page in pages for row in page["rows"]] == everything
    assert {page["total"] for page in pages} == {len(everything)}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"batch_size": 4}, lambda r: r["batch_size"] == 4),
        ({"backend": "ascend"}, lambda r: r["backend"] == "ascend"),
        ({"device": DEVICE}, lambda r: r["device"] == DEVICE),
        ({"model": "convmixer_1536_20"}, lambda r: True),
        ({"status": "regressed"}, lambda r: r["status"] == "regressed"),
        ({"since": "2026-11-03"}, lambda r: r["logical_date"] >= "2026-11-03"),
        ({"until": "2026-11-02"}, lambda r: r["logical_date"] < "2026-11-03"),  # a bare date: the whole day
        (
            {"since": "2026-11-03T06:00:00Z", "until": "2026-11-03"},
            lambda r: "2026-11-03T06" <= r["logical_date"] < "2026-11-04",
        ),
        (
            {"since": "2026-11-02T00:00:00Z", "until": "2026-11-03T06:00:00+00:00", "batch_size": 1},
            lambda r: r["batch_size"] == 1 and "2026-11-02" <= r["logical_date"] < "2026-11-03T06",
        ),
    ],
)
def test_filters_select_matching_rows(api, params, expected):
    body = api.get("/api/runs", params={**params, "limit": 50}).json()
    wanted = [row for row in api.get("/api/runs", params={"limit": 50}).json()["rows"] if expected(row)]
    assert body["rows"] == wanted and body["total"] == len(wanted) > 0


def test_unknown_model_matches_nothing(api):
    body = api.get("/api/runs", params={"model": "convmixer_768_32"}).json()
    assert (body["rows"], body["total"], body["limit"], body["offset"]) == ([], 0, 25, 0)


def test_rows_say_when_they_ran_which_rule_fired_and_what_changed(api):
    rows = {
        (row["run_id"], row["batch_size"], row["backend"]): row
        for row in api.get("/api/runs", params={"limit": 50}).json()["rows"]
    }
    late = rows["scheduled__2026-11-04T00:00:00+00:00", 4, "onnxruntime"]
    assert late["ran_at"] == "2026-11-05T07:00:00+00:00" != late["logical_date"]
    assert late["regressed_on"] == ["throughput"]
    assert rows["manual__2026-11-02T09:30:00+00:00", 1, "ascend"]["ran_at"] == "2026-11-02T09:30:00+00:00"
    new_toolkit = rows["manual__2026-11-04T10:00:00+00:00", 4, "ascend"]
    assert new_toolkit["regressed_on"] == ["top1"]
    assert new_toolkit["env_changed"] == {"toolkit_version": "CANN 8.0.RC1"}
    assert rows["manual__2026-11-04T10:04:00+00:00", 4, "ascend"]["env_changed"] == {"device": NPU}
    assert sum(bool(row["env_changed"]) for row in rows.values()) == 2


def test_environment_changes_are_found_beyond_the_filters(api):
    """Filtered to the new device only, its first run still shows the device it replaced."""
    (row,) = api.get("/api/runs", params={"device": NEW_NPU}).json()["rows"]
    assert row["env_changed"] == {"device": NPU}


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "four"}, "batch_size"),
        ({"backend": "tensorflow"}, "backend"),
        ({"status": "great"}, "status"),
        ({"model": "x' OR '1'='1"}, "model"),
        ({"device": "cpu\n"}, "device"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"since": "2026-11-04", "until": "2026-11-02"}, "swap"),
    ],
)
def test_bad_inputs_get_422_naming_the_parameter(api, params, word):
    response = api.get("/api/runs", params=params)
    assert response.status_code == 422
    assert word in response.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "last tuesday"}, "From (since) 'last tuesday' is not a date"),
        ({"until": "2026-13-45"}, "To (until) '2026-13-45' is not a date"),
        ({"since": "2026-11-04", "until": "2026-11-02"}, "From (2026-11-04) is after To (2026-11-02)"),
    ],
)
def test_date_errors_use_the_forms_words(api, params, message):
    assert api.get("/api/runs", params=params).json()["detail"].startswith(message)


# --- charts -------------------------------------------------------------------------------------------------------


def test_series_one_per_batch_size_backend_device_in_the_order_they_ran(api):
    groups = api.get("/api/series").json()["series"]
    keys = [(g["batch_size"], g["backend"], g["device"]) for g in groups]
    assert sorted(keys) == sorted({(r["batch_size"], r["backend"], r["device"]) for r in demo_rows()})
    assert len(keys) == 5
    for group in groups:
        times = [point["ran_at"] for point in group["points"]]
        assert times == sorted(times)
        assert all(point["dag_id"] == DAG_ID for point in group["points"])
    # The late scheduled run is plotted when it ran, after the Ascend runs it followed, not at its logical date.
    ran = {p["run_id"]: p["ran_at"] for g in groups for p in g["points"]}
    assert ran["manual__2026-11-04T10:04:00+00:00"] < ran["scheduled__2026-11-04T00:00:00+00:00"]


def test_series_keep_their_slot_whatever_the_filters(api):
    """The slot picks a series' colour: filtering must not renumber the series that remain."""
    everything = {
        (g["batch_size"], g["backend"], g["device"]): g["slot"] for g in api.get("/api/series").json()["series"]
    }
    assert sorted(everything.values()) == list(range(len(everything)))
    for params in ({"backend": "ascend"}, {"batch_size": 4}, {"device": NEW_NPU}, {"status": "regressed"}):
        for group in api.get("/api/series", params=params).json()["series"]:
            assert group["slot"] == everything[group["batch_size"], group["backend"], group["device"]], params


def test_series_list_environment_changes_among_the_runs_shown(api):
    body = api.get("/api/series").json()
    assert body["env_fields"] == {"device": "device", "toolkit_version": "toolkit"}
    assert [(c["run_id"], c["fields"]) for c in body["changes"]] == [
        ("manual__2026-11-04T10:00:00+00:00", {"toolkit_version": ["CANN 8.0.RC1", "CANN 8.0.RC2"]}),
        ("manual__2026-11-04T10:04:00+00:00", {"device": [NPU, NEW_NPU]}),
    ]
    assert api.get("/api/series", params={"backend": "onnxruntime"}).json()["changes"] == []


def test_series_points_carry_baselines_and_the_regressed_run(api):
    (group,) = api.get("/api/series", params={"batch_size": 4, "backend": "onnxruntime"}).json()["series"]
    expected = {row["run_id"]: row for row in demo_rows() if row["batch_size"] == 4 and row["backend"] == "onnxruntime"}
    assert len(group["points"]) == DAYS
    for point in group["points"]:
        row = expected[point["run_id"]]
        assert (point["baseline_top1"], point["baseline_throughput"]) == (
            row["baseline_top1"],
            row["baseline_throughput"],
        )
        assert point["status"] == row["status"]
    assert [p["status"] for p in group["points"]].count("regressed") == 1


def test_filter_values_list_what_is_recorded(api):
    values = api.get("/api/filters").json()
    assert values["batch_sizes"] == sorted(BATCH_SIZES)
    assert values["backends"] == ["ascend", "onnxruntime"]
    assert set(values["devices"]) == {DEVICE, NPU, NEW_NPU}
    assert values["models"] == ["convmixer_1536_20"]


def test_pending_runs_are_listed_filtered_and_offered(tmp_path, token):
    """A run recorded but not gated yet ('pending') is shown and can be filtered for."""
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'pending.db'}"
    metrics.upgrade(url)
    healthy, waiting = demo_rows()[:2]
    metrics.record_run(url, healthy)
    metrics.record_run(url, {**waiting, "status": "pending", "gate_reasons": None, "baseline_throughput": None})
    api = client_for(url, token)
    assert "pending" in api.get("/api/filters").json()["statuses"]
    body = api.get("/api/runs", params={"status": "pending"}).json()
    assert body["total"] == 1 and body["rows"][0]["batch_size"] == waiting["batch_size"]
    assert body["rows"][0]["status"] == "pending"
    points = [
        point
        for group in api.get("/api/series", params={"status": "pending"}).json()["series"]
        for point in group["points"]
    ]
    assert [point["status"] for point in points] == ["pending"]

    css = (PLUGINS_DIR / "convmixer_metrics" / "static" / "page.css").read_text()
    assert all(f".status-{name} {{" in css for name in metrics.STATUSES)  # every status has its badge colour


# --- CSV ----------------------------------------------------------------------------------------------------------


def test_csv_download_has_every_filtered_row(api):
    from convmixer_metrics import app as plugin_app

    response = api.get("/api/runs.csv", params={"backend": "onnxruntime"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="convmixer-metrics-')
    table = list(csv.reader(io.StringIO(response.text)))
    assert tuple(table[0]) == plugin_app.CSV_COLUMNS
    expected = api.get("/api/runs", params={"backend": "onnxruntime", "limit": 50}).json()["rows"]
    assert table[0][:2] == ["id", "run_id"]  # the id links back to the run page (run?id=)
    assert [(int(line[0]), line[1]) for line in table[1:]] == [(row["id"], row["run_id"]) for row in expected]
    assert len(table) - 1 == len(expected) == DAYS * len(BATCH_SIZES)
    regressed = [
        dict(zip(table[0], line, strict=True)) for line in table[1:] if line[table[0].index("status")] == "regressed"
    ]
    assert len(regressed) == 1 and "throughput regressed" in regressed[0]["gate_reasons"]


def test_csv_structured_cells_are_json(accept_url, token):
    """energy, fingerprint and evidence come out as JSON a program can read back, not Python reprs."""
    import json

    table = list(csv.reader(io.StringIO(client_for(accept_url, token).get("/api/runs.csv").text)))
    rows = [dict(zip(table[0], line, strict=True)) for line in table[1:]]
    regressed = next(row for row in rows if row["run_id"] == REGRESSED_ASCEND_RUN)
    assert json.loads(regressed["fingerprint"])["toolkit_version"] == "CANN 8.0.RC2"
    assert json.loads(regressed["evidence"])["fidelity"]["breaches"][0].startswith("OM diverges from ONNX")
    assert "'" not in regressed["fingerprint"] and "None" not in regressed["evidence"]


def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'formula.db'}"
    metrics.upgrade(url)
    metrics.record_run(url, {**demo_rows()[0], "toolkit_version": '=HYPERLINK("http://x")'})
    table = list(csv.reader(io.StringIO(client_for(url, token).get("/api/runs.csv").text)))
    assert dict(zip(table[0], table[1], strict=True))["toolkit_version"] == '\'=HYPERLINK("http://x")'


# --- empty and broken databases -----------------------------------------------------------------------------------


def test_empty_database_answers_empty(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    metrics.upgrade(url)
    api = client_for(url, token)
    assert api.get("/api/runs").json()["total"] == 0
    assert api.get("/api/series").json()["series"] == []
    assert api.get("/api/filters").json()["batch_sizes"] == []
    assert api.get("/api/runs.csv").text.strip().split(",")[:2] == ["id", "run_id"]


def test_database_not_created_yet_is_empty_and_stays_uncreated(tmp_path, token):
    path = tmp_path / "never-written.db"
    api = client_for(f"sqlite:///{path}", token)
    assert api.get("/api/runs").json()["total"] == 0
    assert api.get("/api/series").json()["series"] == []
    assert not path.exists()  # the page never creates (writes) the metrics DB


def test_unreachable_database_is_a_503_that_does_not_name_the_database(token, caplog):
    url = "postgresql+psycopg2://metrics-user:s3cret-pw@127.0.0.1:1/metricsdb"  # nothing listens on port 1
    api = client_for(url, token)
    for path in ("/api/runs", "/api/series", "/api/filters", "/api/runs.csv"):
        response = api.get(path)
        assert response.status_code == 503, path
        detail = response.json()["detail"]
        assert detail.startswith("Metrics database unavailable") and "unreachable" in detail
        assert "server's log" in detail
        for secret in ("127.0.0.1", "5432", ":1", "metrics-user", "metricsdb", "s3cret-pw", "postgres"):
            assert secret not in detail, (secret, detail)
    # The administrator's details go to the API server's log instead (password masked by the store).
    logged = [r.getMessage() for r in caplog.records if r.name == "convmixer_metrics.app"]
    assert logged and "127.0.0.1" in logged[-1] and "s3cret-pw" not in logged[-1]


def test_database_without_the_table_names_the_fix(tmp_path, token):
    import sqlite3

    path = tmp_path / "unmigrated.db"
    sqlite3.connect(path).close()
    response = client_for(f"sqlite:///{path}", token).get("/api/runs")
    assert response.status_code == 503 and "metrics-upgrade" in response.json()["detail"]


# --- which database -----------------------------------------------------------------------------------------------


def test_db_url_comes_from_the_connection_then_env_then_setting_then_default(monkeypatch):
    from airflow.configuration import AIRFLOW_HOME
    from convmixer_metrics.source import metrics_db_url

    for name in (
        "AIRFLOW_CONN_CONVMIXER_METRICS",
        "CONVMIXER_METRICS_DB_URL",
        "AIRFLOW__CONVMIXER__METRICS_DB_URL",
        "AIRFLOW__CONVMIXER__METRICS_CONN_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    assert metrics_db_url() == f"sqlite:///{Path(AIRFLOW_HOME).absolute() / 'convmixer_metrics.db'}"

    monkeypatch.setenv("AIRFLOW__CONVMIXER__METRICS_DB_URL", "sqlite:////from/setting.db")
    assert metrics_db_url() == "sqlite:////from/setting.db"

    monkeypatch.setenv("CONVMIXER_METRICS_DB_URL", "sqlite:////from/env.db")
    assert metrics_db_url() == "sqlite:////from/env.db"

    monkeypatch.setenv("AIRFLOW_CONN_CONVMIXER_METRICS", '{"conn_type": "sqlite", "host": "/from/conn.db"}')
    assert metrics_db_url() == "sqlite:////from/conn.db"

    monkeypatch.setenv(
        "AIRFLOW_CONN_OTHER_METRICS",
        '{"conn_type": "postgres", "host": "db", "port": 5433, "login": "u", "password": "p@ss", "schema": "metrics"}',
    )
    monkeypatch.setenv("AIRFLOW__CONVMIXER__METRICS_CONN_ID", "other_metrics")
    assert metrics_db_url() == "postgresql+psycopg2://u:p%40ss@db:5433/metrics"


def test_unusable_connection_is_a_503_naming_the_fix(monkeypatch, token):
    from convmixer_metrics.app import create_app
    from fastapi.testclient import TestClient

    monkeypatch.delenv("AIRFLOW__CONVMIXER__METRICS_CONN_ID", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_CONVMIXER_METRICS", '{"conn_type": "sqlite"}')  # no file named
    response = TestClient(create_app()).get("/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503 and "`convmixer_metrics` Airflow Connection" in response.json()["detail"]


# --- what the page derives from rows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("top1", "throughput", "fired"),
    [(80.0, 100.0, ["top1"]), (81.37, 50.0, ["throughput"]), (80.0, 50.0, ["top1", "throughput"])],
)
def test_regressed_metric_is_read_from_the_gates_own_reasons(top1, throughput, fired):
    """If the gate's wording changes, this fails rather than the charts marking the wrong metric."""
    from convmixer_metrics import history

    from convmixer_tasks.verdict.gate import evaluate_gate

    decision = evaluate_gate(top1, throughput, 81.37, [100.0, 100.0, 100.0])
    row = {"status": decision.status, "gate_reasons": decision.reasons}
    assert history.regressed_on(row) == fired
    assert history.regressed_on({**row, "status": "ok"}) == []


def test_a_fidelity_regression_is_marked_on_neither_chart():
    """The rule that fired decides the marker, not a word in a line: "top1 ok …" and "throughput inconclusive …"
    mention the metrics without their rules firing."""
    from convmixer_metrics import history

    reasons = [
        "top1 ok: 81.300 >= 80.870 (baseline 81.370 - tolerance 0.5)",
        "throughput inconclusive: per-loop CV 234.8% > 10% after 3 measurements",
        "OM diverges from ONNX: min cosine 0.9812 < 0.999 (the artifact is not numerically the model)",
    ]
    row = {"status": "regressed", "gate_reasons": reasons, "throughput_check": "noisy"}
    assert history.regressed_on(row) == []
    from convmixer_tasks.metrics.rules import fired_rules

    assert fired_rules(row) == ("fidelity",)
    # The throughput rule's own record wins over its wording.
    assert history.regressed_on({**row, "throughput_check": "regressed"}) == ["throughput"]


def test_environment_fields_are_compared_per_model_and_backend_in_the_order_runs_ran():
    from convmixer_metrics import history

    def run(run_id, started, backend="ascend", **env):
        return {
            "run_id": run_id,
            "started_at": started,
            "model_variant": "m",
            "backend": backend,
            "device": "d1",
            "toolkit_version": "t1",
            **env,
        }

    rows = [
        run("c", "2026-11-03", toolkit_version="t2"),
        run("a", "2026-11-01"),
        run("b", "2026-11-02", backend="onnxruntime", toolkit_version="ort"),  # another backend: not compared
        run("d", "2026-11-04", toolkit_version="t2", device=None),  # unknown is not a change
        run("e", "2026-11-05", toolkit_version="t2", device="d2"),
    ]
    changes = history.environment_changes(rows)
    assert [(c["run_id"], c["fields"]) for c in changes] == [
        ("c", {"toolkit_version": ["t1", "t2"]}),
        ("e", {"device": ["d1", "d2"]}),
    ]


# --- run page -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evidence_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('evidence') / 'metrics.db'}"
    seed_with_evidence(url)
    return url


def row_id(url: str, run_id: str, batch_size: int, backend: str) -> int:
    from tests.stored import stored_run

    return stored_run(url, run_id, batch_size, backend)["id"]


def test_run_page_explains_the_regressed_run(evidence_url, auth_manager):
    regressed = row_id(evidence_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    previous = row_id(evidence_url, "manual__2026-11-03T12:00:00+00:00", 4, "ascend")
    body = client_for(evidence_url, mint(auth_manager, role="admin")).get(f"/api/runs/{regressed}").json()

    assert body["row"]["status"] == "regressed" and body["row"]["regressed_on"] == ["top1"]
    assert "samples_ms" not in body["row"]  # summarised, not sent
    outcomes = {line["outcome"] for line in body["reasons"] if line["text"].startswith(("top1 regressed", "OM "))}
    assert outcomes == {"fired"}
    assert any(line["outcome"] == "held" and line["text"].startswith("throughput ok") for line in body["reasons"])
    # The deciding lines first: what fired, then notes, then the rules that held.
    order = [line["outcome"] for line in body["reasons"]]
    assert order == sorted(order, key=["fired", "note", "held"].index) and order[0] == "fired"
    # The run before it in its series (model, backend, device, precision, batch size) and what changed since.
    assert body["previous"]["id"] == body["baseline"]["id"] == previous and body["next"] is None
    assert body["series"]["precision_mode"] == "force_fp16"
    assert body["fingerprint"]["vs_previous"] == ["toolkit_version: CANN 8.0.RC1 → CANN 8.0.RC2"]
    # Latency: a box per run of the series, oldest first, this one last, and this run's histogram.
    runs = body["latency"]["runs"]
    assert [run["id"] for run in runs] == [previous, regressed] and runs[-1]["this"]
    box = runs[-1]["box"]
    assert box["count"] == 40 and box["min"] <= box["q1"] <= box["median"] <= box["q3"] <= box["max"]
    assert sum(body["latency"]["histogram"]["counts"]) == 40
    # Accuracy evidence: fidelity against the ONNX (breached) and the flips against the previous ok run.
    evidence = body["evidence"]
    assert evidence["fidelity"]["breaches"] and evidence["fidelity"]["top1_agreement"] < 1
    flips = evidence["flips_previous"]
    assert flips["run_id"] == "manual__2026-11-03T12:00:00+00:00"
    assert flips["right_to_wrong"] > flips["wrong_to_right"] and flips["p_value"] < 0.05
    assert flips["p_value"] == evidence["flips_p_value"]
    assert flips["right_to_wrong_names"][0].startswith("ILSVRC2012_val_")
    assert evidence["flips_reference"]["run_id"].startswith("scheduled__")
    # No power readings: said, not left blank.
    assert body["energy"] == {
        "measured": False,
        "j_per_image": None,
        "throughput_per_watt": None,
        "details": {},
        "why": "no power reading was recorded for this run",
    }
    # Offered for acceptance (regressed, new toolkit), and this admin may.
    accept = body["accept"]
    assert accept["offered"] and accept["allowed"] and accept["why_not"] is None and accept["csrf_token"]
    # Top-1 and fidelity fired: accepting moves the throughput baseline but the row stays regressed.
    assert accept["status_after"] == "regressed" and accept["kept"] == ["top1", "fidelity"]


def test_run_page_says_why_energy_is_missing_or_shows_it(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'energy.db'}"
    metrics.upgrade(url)
    measured, unmeasured = demo_rows()[:2]
    ids = [
        metrics.record_run(
            url,
            {
                **measured,
                "energy_j_per_image": 0.21,
                "throughput_per_watt": 4.7,
                "energy": {"source": "rapl", "samples": 120, "mean_w": 6.4},
            },
        ),
        metrics.record_run(url, {**unmeasured, "energy": {"reason": "RAPL is not readable on this host"}}),
    ]
    api = client_for(url, token)
    shown = api.get(f"/api/runs/{ids[0]}").json()["energy"]
    assert shown["measured"] and shown["j_per_image"] == 0.21 and shown["details"]["source"] == "rapl"
    assert api.get(f"/api/runs/{ids[1]}").json()["energy"]["why"] == "RAPL is not readable on this host"


def test_viewer_sees_why_they_may_not_accept(evidence_url, token):
    regressed = row_id(evidence_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    accept = client_for(evidence_url, token).get(f"/api/runs/{regressed}").json()["accept"]
    assert accept["offered"] and not accept["allowed"] and accept["csrf_token"] is None
    assert "may view but not edit DAG convmixer_validation" in accept["why_not_allowed"]


@pytest.mark.parametrize("bad", ["abc", "0", "-1", str(2**31), "1 OR 1=1", "1.5"])
def test_row_ids_are_validated(api, bad):
    assert api.get(f"/api/runs/{bad}").status_code in (404, 422)
    assert api.get("/api/compare", params={"a": bad, "b": 1}).status_code == 422


def test_unknown_row_is_a_404(api):
    assert api.get("/api/runs/999999").status_code == 404
    response = api.get("/api/compare", params={"a": 1, "b": 999999})
    assert response.status_code == 404 and "999999" in response.json()["detail"]


# --- compare ------------------------------------------------------------------------------------------------------


def test_compare_two_runs_with_flips_and_significance(evidence_url, token):
    before = row_id(evidence_url, "manual__2026-11-03T12:00:00+00:00", 4, "ascend")
    after = row_id(evidence_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    body = client_for(evidence_url, token).get("/api/compare", params={"a": before, "b": after}).json()
    assert body["a"]["id"] == before and body["b"]["id"] == after and body["same_series"]
    assert body["fingerprint"]["differences"] == ["toolkit_version: CANN 8.0.RC1 → CANN 8.0.RC2"]
    metrics = {m["field"]: m for m in body["metrics"]}
    assert metrics["top1"]["delta"] == pytest.approx(80.41 - 81.35) and not metrics["top1"]["better"]
    assert metrics["throughput"]["delta_pct"] == pytest.approx((409 / 412 - 1) * 100)
    flips = body["flips"]
    assert flips["right_to_wrong"] >= 20 and flips["mcnemar_exact_p"] < 0.05 and flips["images"] == 500
    assert len(flips["right_to_wrong_names"]) == 10
    throughput = body["throughput"]
    assert 0 <= throughput["welch_p"] <= 1 and throughput["samples"] == [40, 40]
    low, high = throughput["interval_b"]
    assert low <= 409.0 * 1.05 and high >= 409.0 * 0.95


def test_compare_says_why_flips_are_missing(api):
    failed = next(row["id"] for row in api.get("/api/runs", params={"status": "failed"}).json()["rows"])
    body = api.get("/api/compare", params={"a": failed, "b": 1}).json()
    assert "no stored predictions" in body["flips"]["why"]
    assert "per-loop" in body["throughput"]["why"]
    assert api.get("/api/compare", params={"a": 1, "b": 1}).status_code == 422


def test_series_never_mix_precisions(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'precision.db'}"
    metrics.upgrade(url)
    ascend = next(row for row in demo_rows() if row["backend"] == "ascend" and row.get("top1") is not None)
    metrics.record_run(url, {**ascend, "precision_mode": "force_fp16"})
    metrics.record_run(url, {**ascend, "precision_mode": "allow_mix_precision", "throughput": 600.0})
    groups = client_for(url, token).get("/api/series").json()["series"]
    assert sorted(g["precision_mode"] for g in groups) == ["allow_mix_precision", "force_fp16"]
    assert all(len(g["points"]) == 1 for g in groups)


def test_unfiltered_chart_is_capped_and_says_so(tmp_path, token, monkeypatch):
    from convmixer_metrics import app as plugin_app

    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'capped.db'}"
    metrics.upgrade(url)
    for row in demo_rows():
        metrics.record_run(url, row)
    monkeypatch.setattr(plugin_app, "MAX_CHART_POINTS", 5)
    body = client_for(url, token).get("/api/series").json()
    assert (body["points"], body["total"], body["capped"]) == (5, len(demo_rows()), True)
    latest = sorted((row.get("started_at") or row["logical_date"]) for row in demo_rows())[-5:]
    assert body["since"] == latest[0].isoformat()
    assert sum(len(g["points"]) for g in body["series"]) == 5


# --- accept as baseline ---------------------------------------------------------------------------------------------


@pytest.fixture()
def accept_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'accept.db'}"
    seed_with_evidence(url)
    return url


def accept(client, row: int, reason="CANN 8.0.RC2 rolled out on purpose", **kwargs):
    return client.post(f"/api/runs/{row}/accept", json={"reason": reason}, **kwargs)


def stored(url: str, row: int) -> dict:
    from tests.stored import stored_row

    return stored_row(url, row)


def test_admin_accepts_a_regressed_run_and_history_shows_who_when_why(accept_url, auth_manager):
    """A throughput regression accepted: the run becomes its series' baseline and its verdict ok."""
    regressed = row_id(accept_url, THROUGHPUT_REGRESSED_RUN, 4, "onnxruntime")
    admin = client_for(accept_url, mint(auth_manager, role="admin", username="ada"))
    response = accept(admin, regressed)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"]["by"] == "ada"
    row = stored(accept_url, regressed)
    assert (row["status"], row["rebaselined_by"], row["rebaseline_reason"]) == (
        "ok",
        "ada",
        "CANN 8.0.RC2 rolled out on purpose",
    )
    assert "the throughput baseline starts here)" in row["gate_reasons"][-1]
    (listed,) = [r for r in admin.get("/api/runs", params={"limit": 50}).json()["rows"] if r["id"] == regressed]
    assert listed["rebaselined_by"] == "ada" and listed["rebaselined_at"] == row["rebaselined_at"]
    assert listed["rebaseline_reason"] == "CANN 8.0.RC2 rolled out on purpose"
    detail = admin.get(f"/api/runs/{regressed}").json()["accept"]
    assert detail["accepted"]["by"] == "ada" and detail["why_not"] == "already accepted as the baseline by ada"
    again = accept(admin, regressed)
    assert again.status_code == 409 and "already accepted as the baseline by ada" in again.json()["detail"]


def test_accepting_a_fidelity_regression_keeps_it_regressed(accept_url, auth_manager):
    """The Ascend run regressed on top-1 and fidelity ("OM diverges from ONNX"): accepted, it is the throughput
    baseline, but its badge stays red beside the red fidelity line, with who accepted it and why."""
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    admin = client_for(accept_url, mint(auth_manager, role="admin", username="ada"))
    assert accept(admin, regressed).status_code == 200
    row = stored(accept_url, regressed)
    assert (row["status"], row["rebaselined_by"]) == ("regressed", "ada")
    assert row["gate_reasons"][-1].endswith("still regressed on top1, fidelity)")
    detail = admin.get(f"/api/runs/{regressed}").json()
    assert detail["row"]["status"] == "regressed" and detail["accept"]["accepted"]["by"] == "ada"
    assert detail["evidence"]["fidelity"]["breaches"][0].startswith("OM diverges from ONNX")


def test_accept_refuses_what_the_gate_did_not_judge(accept_url, auth_manager):
    """An inconclusive row (spread too wide to judge) is not made the baseline through the API either."""
    from convmixer_tasks import metrics
    from convmixer_tasks.metrics.schema import STATUS_INCONCLUSIVE

    row = stored(accept_url, row_id(accept_url, THROUGHPUT_REGRESSED_RUN, 4, "onnxruntime"))
    metrics.update_status(
        accept_url,
        row["run_id"],
        4,
        "onnxruntime",
        STATUS_INCONCLUSIVE,
        ["throughput inconclusive: per-loop CV 234.8% > 10% after 3 measurements"],
    )
    admin = client_for(accept_url, mint(auth_manager, role="admin"))
    response = accept(admin, row["id"])
    assert response.status_code == 409 and "it is inconclusive" in response.json()["detail"]
    assert "rerun it on a quiet host" in response.json()["detail"]
    assert stored(accept_url, row["id"])["status"] == STATUS_INCONCLUSIVE
    offer = admin.get(f"/api/runs/{row['id']}").json()["accept"]
    assert offer["why_not"].startswith("it is inconclusive") and offer["status_after"] is None


def test_user_role_may_accept_with_a_session_cookie_and_the_pages_csrf_token(accept_url, auth_manager):
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    browser = client_for(accept_url)
    browser.cookies.set("_token", mint(auth_manager, role="user", username="una"))
    csrf = browser.get(f"/api/runs/{regressed}").json()["accept"]["csrf_token"]
    assert accept(browser, regressed, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert stored(accept_url, regressed)["rebaselined_by"] == "una"


def test_viewer_may_not_accept(accept_url, token):
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    response = accept(client_for(accept_url, token), regressed)
    assert response.status_code == 403 and "may view but not edit" in response.json()["detail"]
    assert stored(accept_url, regressed)["rebaselined_at"] is None


@pytest.mark.parametrize("credential", ["none", "forged", "unknown-role", "no-role"])
def test_accept_refuses_missing_and_bad_tokens(accept_url, auth_manager, credential):
    from airflow.api_fastapi.auth.tokens import JWTGenerator

    tokens = {
        "none": None,
        "forged": JWTGenerator(
            secret_key="not-the-server-secret-" + "y" * 48, valid_for=60, audience="apache-airflow", issuer=None
        ).generate({"sub": "mallory", "role": "admin"}),
        "unknown-role": mint(auth_manager, role="superhero"),
        "no-role": mint(auth_manager, role=None),
    }
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    assert accept(client_for(accept_url, tokens[credential]), regressed).status_code in (401, 403)
    assert stored(accept_url, regressed)["rebaselined_at"] is None


def test_cross_site_form_post_cannot_accept(accept_url, auth_manager):
    """What a page on another site can make a signed-in admin's browser send: the cookie, but no header it chose
    and no JSON body."""
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    browser = client_for(accept_url)
    browser.cookies.set("_token", mint(auth_manager, role="admin"))
    path = f"/api/runs/{regressed}/accept"
    form = browser.post(
        path, data={"reason": "pwned"}, headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    )
    assert form.status_code == 415
    plain = browser.post(path, content=b'{"reason": "pwned"}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    json_without_token = browser.post(path, json={"reason": "pwned"})
    assert json_without_token.status_code == 403 and "X-CSRF-Token" in json_without_token.json()["detail"]
    forged_token = browser.post(path, json={"reason": "pwned"}, headers={"X-CSRF-Token": "a.b.c"})
    assert forged_token.status_code == 403
    csrf = browser.get(f"/api/runs/{regressed}").json()["accept"]["csrf_token"]
    cross_site = browser.post(
        path, json={"reason": "pwned"}, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    # Another user's token does not fit this user's session.
    other = client_for(accept_url)
    other.cookies.set("_token", mint(auth_manager, role="admin", username="someone-else"))
    assert accept(other, regressed, headers={"X-CSRF-Token": csrf}).status_code == 403
    assert stored(accept_url, regressed)["rebaselined_at"] is None


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"reason": ""}, 422),
        ({"reason": "  "}, 422),
        ({}, 422),
        ({"reason": "ok", "by": "mallory"}, 422),
        ({"reason": "x" * 2001}, 422),
    ],
)
def test_accept_needs_a_reason_and_nothing_else(accept_url, auth_manager, body, status):
    regressed = row_id(accept_url, REGRESSED_ASCEND_RUN, 4, "ascend")
    admin = client_for(accept_url, mint(auth_manager, role="admin"))
    assert admin.post(f"/api/runs/{regressed}/accept", json=body).status_code == status
    assert stored(accept_url, regressed)["rebaselined_at"] is None


def test_accept_refuses_a_failed_run_and_bad_ids(accept_url, auth_manager):
    admin = client_for(accept_url, mint(auth_manager, role="admin"))
    failed = row_id(accept_url, "manual__2026-11-02T09:30:00+00:00", 1, "ascend")
    response = accept(admin, failed)
    assert response.status_code == 409 and "it is failed: it failed before its metrics" in response.json()["detail"]
    assert accept(admin, 999999).status_code == 404
    for bad in ("abc", "0", "1;DROP TABLE x"):
        assert admin.post(f"/api/runs/{bad}/accept", json={"reason": "why not"}).status_code in (404, 422)


REGRESSED_ON_TOP1 = ["top1 regressed: 80.410 < 80.870 (baseline 81.370 - tolerance 0.5)"]
REGRESSED_ON_THROUGHPUT = ["throughput regressed: 61.20 < 84.60 (median of the last 3 ok runs 94.00 - 10%)"]


@pytest.mark.parametrize(
    ("row", "changed", "offered", "why_not", "after"),
    [
        ({"status": "regressed", "throughput": 61.2, "gate_reasons": REGRESSED_ON_THROUGHPUT}, [], True, None, "ok"),
        ({"status": "regressed", "throughput": 61.2, "gate_reasons": REGRESSED_ON_TOP1}, [], True, None, "regressed"),
        (
            {
                "status": "regressed",
                "throughput": 61.2,
                "throughput_check": "ok",
                "evidence": {"fidelity": {"breaches": ["OM diverges from ONNX: min cosine 0.98 < 0.999"]}},
            },
            [],
            True,
            None,
            "regressed",
        ),
        ({"status": "ok", "throughput": 900.0}, ["toolkit_version: 8.0 → 8.1"], True, None, "ok"),  # a new environment
        ({"status": "ok", "throughput": 900.0}, [], False, "it is ok and its environment matches", None),
        ({"status": "inconclusive", "throughput": 900.0}, ["host_cpu: a → b"], True, "it is inconclusive: ", None),
        ({"status": "pending", "throughput": 900.0}, ["host_cpu: a → b"], True, "it is pending: it is not gated", None),
        ({"status": "failed", "throughput": None}, ["toolkit_version: 8.0 → 8.1"], True, "it is failed: ", None),
        (
            {
                "status": "regressed",
                "throughput": 61.2,
                "rebaselined_at": "2026-11-05T00:00:00+00:00",
                "rebaselined_by": "ada",
            },
            [],
            True,
            "already accepted as the baseline by ada",
            None,
        ),
    ],
)
def test_accept_is_offered_on_regressed_or_changed_runs_that_can_be_a_baseline(row, changed, offered, why_not, after):
    from convmixer_metrics import run_view

    offer = run_view.accept_offer(row, changed)
    assert offer["offered"] == offered and offer["status_after"] == after
    assert (offer["why_not"] or "").startswith(why_not or "") and (offer["why_not"] is None) == (why_not is None)
