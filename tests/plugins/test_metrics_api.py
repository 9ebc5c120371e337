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
os.environ.setdefault("AIRFLOW__CORE__AUTH_MANAGER",
                      "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager")
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "convmixer-plugin-tests-" + "x" * 48)
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))  # what Airflow does for its plugins folder

from tests.plugins import BATCH_SIZES, DAG_ID, DAYS, DEVICE, NEW_NPU, NPU, demo_rows  # noqa: E402

ENDPOINTS = ["/", "/static/page.js", "/api/filters", "/api/runs", "/api/series", "/api/runs.csv"]


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
    from fastapi.testclient import TestClient

    from convmixer_metrics.app import create_app

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
    from fastapi.testclient import TestClient

    from convmixer_metrics.plugin import ConvMixerMetricsPlugin

    (entry,) = ConvMixerMetricsPlugin.fastapi_apps
    client = TestClient(entry["app"])
    assert client.get("/api/filters").status_code == 401
    assert client.get("/static/page.js", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_importing_the_plugin_stays_cheap_for_task_processes():
    """Every task process imports the plugins folder (for macros): no FastAPI app or auth imports at that point."""
    import subprocess

    code = ("import sys, convmixer_metrics_plugin; "
            "print(sorted(m for m in sys.modules if m.startswith(('convmixer_metrics.app', 'airflow.api_fastapi'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=PLUGINS_DIR, capture_output=True, text=True,
                            timeout=120, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
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

    forged = JWTGenerator(secret_key="not-the-server-secret-" + "y" * 48, valid_for=60, audience="apache-airflow",
                          issuer=None).generate({"sub": "mallory", "role": "admin"})
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


@pytest.mark.parametrize(("params", "expected"), [
    ({"batch_size": 4}, lambda r: r["batch_size"] == 4),
    ({"backend": "ascend"}, lambda r: r["backend"] == "ascend"),
    ({"device": DEVICE}, lambda r: r["device"] == DEVICE),
    ({"model": "convmixer_1536_20"}, lambda r: True),
    ({"status": "regressed"}, lambda r: r["status"] == "regressed"),
    ({"since": "2026-11-03"}, lambda r: r["logical_date"] >= "2026-11-03"),
    ({"until": "2026-11-02"}, lambda r: r["logical_date"] < "2026-11-03"),  # a bare date: the whole day
    ({"since": "2026-11-03T06:00:00Z", "until": "2026-11-03"},
     lambda r: "2026-11-03T06" <= r["logical_date"] < "2026-11-04"),
    ({"since": "2026-11-02T00:00:00Z", "until": "2026-11-03T06:00:00+00:00", "batch_size": 1},
     lambda r: r["batch_size"] == 1 and "2026-11-02" <= r["logical_date"] < "2026-11-03T06"),
])
def test_filters_select_matching_rows(api, params, expected):
    body = api.get("/api/runs", params={**params, "limit": 50}).json()
    wanted = [row for row in api.get("/api/runs", params={"limit": 50}).json()["rows"] if expected(row)]
    assert body["rows"] == wanted and body["total"] == len(wanted) > 0


def test_unknown_model_matches_nothing(api):
    body = api.get("/api/runs", params={"model": "convmixer_768_32"}).json()
    assert (body["rows"], body["total"], body["limit"], body["offset"]) == ([], 0, 25, 0)


def test_rows_say_when_they_ran_which_rule_fired_and_what_changed(api):
    rows = {(row["run_id"], row["batch_size"], row["backend"]): row
            for row in api.get("/api/runs", params={"limit": 50}).json()["rows"]}
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


@pytest.mark.parametrize(("params", "word"), [
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
])
def test_bad_inputs_get_422_naming_the_parameter(api, params, word):
    response = api.get("/api/runs", params=params)
    assert response.status_code == 422
    assert word in response.text


@pytest.mark.parametrize(("params", "message"), [
    ({"since": "last tuesday"}, "From (since) 'last tuesday' is not a date"),
    ({"until": "2026-13-45"}, "To (until) '2026-13-45' is not a date"),
    ({"since": "2026-11-04", "until": "2026-11-02"}, "From (2026-11-04) is after To (2026-11-02)"),
])
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
    everything = {(g["batch_size"], g["backend"], g["device"]): g["slot"] for g in api.get("/api/series").json()["series"]}
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
        assert (point["baseline_top1"], point["baseline_throughput"]) == (row["baseline_top1"],
                                                                          row["baseline_throughput"])
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
    points = [point for group in api.get("/api/series", params={"status": "pending"}).json()["series"]
              for point in group["points"]]
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
    assert [line[0] for line in table[1:]] == [row["run_id"] for row in expected]
    assert len(table) - 1 == len(expected) == DAYS * len(BATCH_SIZES)
    regressed = [dict(zip(table[0], line)) for line in table[1:] if line[table[0].index("status")] == "regressed"]
    assert len(regressed) == 1 and "throughput regressed" in regressed[0]["gate_reasons"]


def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'formula.db'}"
    metrics.upgrade(url)
    metrics.record_run(url, {**demo_rows()[0], "toolkit_version": "=HYPERLINK(\"http://x\")"})
    table = list(csv.reader(io.StringIO(client_for(url, token).get("/api/runs.csv").text)))
    assert dict(zip(table[0], table[1]))["toolkit_version"] == "'=HYPERLINK(\"http://x\")"


# --- empty and broken databases -----------------------------------------------------------------------------------

def test_empty_database_answers_empty(tmp_path, token):
    from convmixer_tasks import metrics

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    metrics.upgrade(url)
    api = client_for(url, token)
    assert api.get("/api/runs").json()["total"] == 0
    assert api.get("/api/series").json()["series"] == []
    assert api.get("/api/filters").json()["batch_sizes"] == []
    assert api.get("/api/runs.csv").text.strip().split(",")[0] == "run_id"


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

    for name in ("AIRFLOW_CONN_CONVMIXER_METRICS", "CONVMIXER_METRICS_DB_URL", "AIRFLOW__CONVMIXER__METRICS_DB_URL",
                 "AIRFLOW__CONVMIXER__METRICS_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert metrics_db_url() == f"sqlite:///{Path(AIRFLOW_HOME).absolute() / 'convmixer_metrics.db'}"

    monkeypatch.setenv("AIRFLOW__CONVMIXER__METRICS_DB_URL", "sqlite:////from/setting.db")
    assert metrics_db_url() == "sqlite:////from/setting.db"

    monkeypatch.setenv("CONVMIXER_METRICS_DB_URL", "sqlite:////from/env.db")
    assert metrics_db_url() == "sqlite:////from/env.db"

    monkeypatch.setenv("AIRFLOW_CONN_CONVMIXER_METRICS", '{"conn_type": "sqlite", "host": "/from/conn.db"}')
    assert metrics_db_url() == "sqlite:////from/conn.db"

    monkeypatch.setenv("AIRFLOW_CONN_OTHER_METRICS",
                       '{"conn_type": "postgres", "host": "db", "port": 5433, "login": "u", "password": "p@ss",'
                       ' "schema": "metrics"}')
    monkeypatch.setenv("AIRFLOW__CONVMIXER__METRICS_CONN_ID", "other_metrics")
    assert metrics_db_url() == "postgresql+psycopg2://u:p%40ss@db:5433/metrics"


def test_unusable_connection_is_a_503_naming_the_fix(monkeypatch, token):
    from fastapi.testclient import TestClient

    from convmixer_metrics.app import create_app

    monkeypatch.delenv("AIRFLOW__CONVMIXER__METRICS_CONN_ID", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_CONVMIXER_METRICS", '{"conn_type": "sqlite"}')  # no file named
    response = TestClient(create_app()).get("/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503 and "`convmixer_metrics` Airflow Connection" in response.json()["detail"]


# --- what the page derives from rows ------------------------------------------------------------------------------

@pytest.mark.parametrize(("top1", "throughput", "fired"), [
    (80.0, 100.0, ["top1"]),
    (81.37, 50.0, ["throughput"]),
    (80.0, 50.0, ["top1", "throughput"]),
])
def test_regressed_metric_is_read_from_the_gates_own_reasons(top1, throughput, fired):
    """If the gate's wording changes, this fails rather than the charts marking the wrong metric."""
    from convmixer_metrics import history
    from convmixer_tasks.gate import evaluate_gate

    decision = evaluate_gate(top1, throughput, 81.37, [100.0, 100.0, 100.0])
    row = {"status": decision.status, "gate_reasons": decision.reasons}
    assert history.regressed_on(row) == fired
    assert history.regressed_on({**row, "status": "ok"}) == []


def test_environment_fields_are_compared_per_model_and_backend_in_the_order_runs_ran():
    from convmixer_metrics import history

    def run(run_id, started, backend="ascend", **env):
        return {"run_id": run_id, "started_at": started, "model_variant": "m", "backend": backend,
                "device": "d1", "toolkit_version": "t1", **env}

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
