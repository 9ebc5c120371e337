"""The metrics page's FastAPI app: the page shell, its static files and the JSON/CSV endpoints, all behind auth.

Airflow mounts plugin apps without any authentication, so every route here depends on ``requires_access_view``
(which first resolves the user from the UI's ``_token`` cookie or a Bearer token). The page shell holds no data;
the browser fetches the data from the JSON endpoints with the same credentials. The metrics database is read only
through ``convmixer_tasks.metrics``'s query API; the one write, "accept as baseline", goes through
``metrics.rebaseline`` and needs Airflow's permission to edit the run's DAG and a CSRF token (see ``_csrf_checked``).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import GetUserDep
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from convmixer_tasks import metrics as store
from convmixer_tasks.cli_output import csv_columns, rows_to_csv
from convmixer_tasks.errors import ConfigError, ConvMixerError

from . import digest_api, history, run_view
from .filters import Page, RunFilters, page, run_filters
from .source import metrics_db_url

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PAGE_FILE = STATIC_DIR / "index.html"
RUN_PAGE_FILE = STATIC_DIR / "run.html"
COMPARE_PAGE_FILE = STATIC_DIR / "compare.html"
# Every file the pages may load, fixed at import: the static route serves these names and nothing else.
STATIC_FILES = {
    path.relative_to(STATIC_DIR).as_posix(): path
    for path in STATIC_DIR.rglob("*")
    if path.is_file() and path.suffix in {".js", ".css", ".md"}
}
# The documented row columns, in the order the CSV gives them: the row id, then the metrics row's fields.
CSV_COLUMNS = csv_columns()
# The page loads only its own files and talks only to this server; Chart.js sets canvas sizes through the CSSOM,
# which style-src does not govern.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
STATIC_HEADERS = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}

FiltersDep = Annotated[RunFilters, Depends(run_filters)]
PageDep = Annotated[Page, Depends(page)]
# Row ids are the metrics table's integer primary key; anything else is refused before a query.
MAX_ROW_ID = 2**31 - 1
RowIdPath = Annotated[int, PathParam(ge=1, le=MAX_ROW_ID, description="metrics row id")]
RowIdQuery = Annotated[int, Query(ge=1, le=MAX_ROW_ID, description="metrics row id")]
# The unfiltered chart would draw every run ever recorded; it shows the latest ones and says so.
MAX_CHART_POINTS = 2000
# The CSRF token the page sends with "accept as baseline": signed with Airflow's [api] secret_key (the same on every
# API server, as Airflow requires), bound to the user and short-lived.
CSRF_HEADER = "X-CSRF-Token"
CSRF_SALT = "convmixer-metrics-accept-baseline"
CSRF_MAX_AGE_S = 8 * 3600


class AcceptBody(BaseModel):
    """What "accept as baseline" sends: why (kept on the row with who and when)."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=2000)]


# The store's rows are JSON-ready (to_dict: datetimes as ISO strings), so the large bodies skip jsonable_encoder,
# which took about a second for 10,000 rows.


class MetricsUnavailable(Exception):
    """The metrics database could not be read; the message is safe to show any signed-in user."""


# What the page says when the metrics DB cannot be read. The store's own message names the database (host, port,
# user, database name) and the driver's error; that goes to the API server's log only, never to the browser.
UNAVAILABLE_HINT = "An administrator finds the cause in the Airflow API server's log (logger {logger})."
UNAVAILABLE_WHY = {
    "table": "the metrics table does not exist yet; an administrator creates it with "
    "`convmixer-tasks metrics-upgrade --url <metrics DB URL>`.",
    "config": "the setting that names the metrics database is unusable (the `convmixer_metrics` Airflow "
    "Connection, $CONVMIXER_METRICS_DB_URL or [convmixer] metrics_db_url).",
    "db": "the metrics database is unreachable or unusable.",
}


def _unavailable(err: ConvMixerError) -> MetricsUnavailable:
    if isinstance(err, ConfigError):
        why = "config"
    elif "metrics-upgrade" in str(err):  # the store's "table is missing" message names this fix
        why = "table"
    else:
        why = "db"
    log.warning("ConvMixer metrics page cannot read the metrics database: %s", err)  # the store masks passwords
    return MetricsUnavailable(f"{UNAVAILABLE_WHY[why]} {UNAVAILABLE_HINT.format(logger=__name__)}")


def _sqlite_file_missing(url: str) -> bool:
    """True for a SQLite URL whose file does not exist yet: no run was ever recorded (the store creates it)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # the store names the bad URL
    database = parsed.database or ""
    return (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).exists()
    )


def _call_store(db_url: Callable[[], str], query: Callable[[str], Any], empty: Any) -> Any:
    """Run one read against the metrics DB; ``empty`` is the answer before the first run created the database.

    Checking first matters: opening a missing SQLite file would create an empty one, and the page never writes.
    """
    try:
        url = db_url()
        return empty if _sqlite_file_missing(url) else query(url)
    except ConvMixerError as err:
        raise _unavailable(err) from err


# What the charts read of each matching row: identity, when it ran, the charted metrics and the verdict.
SERIES_COLUMNS = (
    "id", "run_id", "dag_id", "model_variant", "backend", "device", "precision_mode", "batch_size", "ran_at", "top1",
    "throughput", "baseline_top1", "baseline_throughput", "status", "gate_reasons", "throughput_check",
)  # fmt: skip
# What environment changes are found from: one row per run of a model on a backend, newest first.
ENVIRONMENT_COLUMNS = ("ran_at", "run_id", "model_variant", "backend", *history.ENV_FIELDS)
# One chart series: never two precisions (or devices, backends, batch sizes) in one line.
SERIES_KEY_COLUMNS = history.SERIES_KEY
# Not sent with a table row: the packed per-loop samples (the run page summarises them).
TABLE_HIDDEN = ("samples_ms",)


def _environment_changes(url: str) -> list[dict]:
    """Every environment change in the whole history (a filter never hides the run a row is compared with)."""
    runs = store.history_rows(url, ENVIRONMENT_COLUMNS, distinct=True)
    return history.environment_changes(runs)


def _page(url: str, filters: RunFilters, paging: Page) -> tuple[list[dict], int, list[dict]]:
    """One page of whole rows (paged in the database, latest run first), the total matching, and the changes."""
    rows, total = store.query_runs(
        url, limit=paging.limit, offset=paging.offset, by_run_time=True, **filters.as_query()
    )
    shown = [{name: value for name, value in row.items() if name not in TABLE_HIDDEN} for row in rows]
    return shown, total, (_environment_changes(url) if rows else [])


def _series(url: str, filters: RunFilters) -> tuple[list[dict], int, list[dict], list[dict]]:
    """The charted fields of the latest ``MAX_CHART_POINTS`` matching rows, how many match in all, the changes,
    and every series key (for stable colours)."""
    rows = store.history_rows(url, SERIES_COLUMNS, limit=MAX_CHART_POINTS, **filters.as_query())
    if not rows:
        return [], 0, [], []
    total = len(rows) if len(rows) < MAX_CHART_POINTS else store.count_runs(url, **filters.as_query())
    keys = store.history_rows(url, SERIES_KEY_COLUMNS, distinct=True)
    return rows, total, _environment_changes(url), keys


def _signin_page(request: Request, exc: HTTPException) -> str:
    """A data-free page for a browser that opened the page without a valid Airflow session."""
    from airflow.api_fastapi.app import get_auth_manager

    login = get_auth_manager().get_url_login(next_url=str(request.url))
    what = (
        "Sign in to Airflow to view"
        if exc.status_code == status.HTTP_401_UNAUTHORIZED
        else "Your Airflow user may not view"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='color-scheme' content='light dark'>"
        "<title>ConvMixer metrics</title></head><body>"
        f"<p>{html.escape(what)} the ConvMixer metrics page ({html.escape(str(exc.detail))}).</p>"
        f"<p><a href='{html.escape(login, quote=True)}'>Go to the Airflow login page</a></p>"
        "</body></html>"
    )


def _may_view_plugins(user: GetUserDep) -> None:
    """Airflow's ``requires_access_view(AccessView.PLUGINS)``, except that a user the auth manager cannot place
    (SimpleAuthManager raises KeyError for a token whose role it does not know) is refused with 403, not a 500."""
    from airflow.api_fastapi.app import get_auth_manager

    try:
        allowed = get_auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user)
    except (LookupError, ValueError, TypeError):
        log.warning("ConvMixer metrics page: the auth manager cannot check user %r; refusing", user.get_name())
        allowed = False
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")


def _may_edit_dag(user: Any, dag_id: str | None) -> str | None:
    """None when Airflow's auth manager lets ``user`` edit DAG ``dag_id`` (what "accept as baseline" needs), else
    why not, in words for the page. A row recorded outside Airflow (no DAG) needs the right to edit every DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.configuration import conf

    team = None
    if dag_id and conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team = DagModel.get_team_name(dag_id)
    try:
        allowed = get_auth_manager().is_authorized_dag(
            method="PUT", details=DagDetails(id=dag_id, team_name=team), user=user
        )
    except (LookupError, ValueError, TypeError):
        allowed = False
    if allowed:
        return None
    what = f"DAG {dag_id}" if dag_id else "DAGs"
    return (
        f"your Airflow user {user.get_name()!r} may view but not edit {what}; only users who may edit it can "
        "accept a baseline"
    )


def _csrf_serializer() -> Any:
    from airflow.configuration import conf
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(conf.get("api", "secret_key"), salt=CSRF_SALT)


def csrf_token(user: Any) -> str:
    return _csrf_serializer().dumps(str(user.get_id()))


def _csrf_checked(request: Request, user: GetUserDep) -> Any:
    """Refuse a write a cross-site page could have made the browser send.

    A browser attaches Airflow's session cookie to any request to this host, so a write that the cookie alone
    authenticates must also carry this page's CSRF token in a header (which a form on another site cannot set,
    nor read from our responses). The body must be JSON, which a plain HTML form cannot send either; a browser
    that says the request is cross-site is refused outright. A caller that sends its token in the Authorization
    header (a script, the CLI) needs no CSRF token: no browser adds that header on its own.
    """
    from itsdangerous import BadData

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "send the request body as application/json")
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a request from another site may not change metrics")
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return user
    token = request.headers.get(CSRF_HEADER, "")
    try:
        valid = bool(token) and _csrf_serializer().loads(token, max_age=CSRF_MAX_AGE_S) == str(user.get_id())
    except BadData:
        valid = False
    if not valid:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"missing or expired {CSRF_HEADER} header; reload the page and try again"
        )
    return user


def create_app(db_url: Callable[[], str] = metrics_db_url) -> FastAPI:
    """The plugin app; ``db_url`` is asked for the metrics database URL on every request."""
    app = FastAPI(
        title="ConvMixer metrics",
        description="History of ConvMixer validation runs (table, series, CSV). Requires an Airflow login.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    authorised = [Depends(_may_view_plugins)]
    router = APIRouter(dependencies=authorised)

    @app.exception_handler(MetricsUnavailable)
    async def metrics_unavailable(request: Request, exc: MetricsUnavailable) -> JSONResponse:
        detail = f"Metrics database unavailable: {exc}"
        return JSONResponse({"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE, headers=DATA_HEADERS)

    @app.exception_handler(HTTPException)
    async def auth_refused(request: Request, exc: HTTPException) -> Response:
        wants_html = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if wants_html and exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            return HTMLResponse(_signin_page(request, exc), exc.status_code, headers=PAGE_HEADERS)
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:  # the page links its banner to Airflow's login
            from airflow.api_fastapi.app import get_auth_manager

            body = {"detail": exc.detail, "login_url": get_auth_manager().get_url_login()}
            return JSONResponse(body, exc.status_code, headers={**DATA_HEADERS, **(exc.headers or {})})
        return await http_exception_handler(request, exc)

    @router.get("/", include_in_schema=False)
    def page_shell() -> FileResponse:
        return FileResponse(PAGE_FILE, media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/run", include_in_schema=False)
    def run_page_shell() -> FileResponse:
        return FileResponse(RUN_PAGE_FILE, media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/compare", include_in_schema=False)
    def compare_page_shell() -> FileResponse:
        return FileResponse(COMPARE_PAGE_FILE, media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/static/{name:path}", include_in_schema=False)
    def static_file(name: str) -> FileResponse:
        path = STATIC_FILES.get(name)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"No static file {name!r}")
        return FileResponse(path, headers=STATIC_HEADERS)

    @router.get("/api/filters")
    def filter_values() -> JSONResponse:
        """Distinct models, backends, devices, batch sizes and statuses, for the filter menus."""
        no_values = {"models": [], "backends": [], "devices": [], "batch_sizes": [], "statuses": list(store.STATUSES)}
        values = _call_store(db_url, store.distinct_values, empty=no_values)
        return JSONResponse(jsonable_encoder(values), headers=DATA_HEADERS)

    @router.get("/api/runs")
    def runs(filters: FiltersDep, paging: PageDep) -> JSONResponse:
        """One page of runs, latest run first, with the total that match the filters; each row also says when it
        ran, which gate rules fired and which environment fields changed since the previous run."""

        page_rows, total, changes = _call_store(db_url, lambda url: _page(url, filters, paging), empty=([], 0, []))
        rows = history.annotate_all(page_rows, changes)
        body = {
            "rows": rows,
            "total": total,
            "limit": paging.limit,
            "offset": paging.offset,
            "env_fields": history.ENV_FIELDS,
        }
        return JSONResponse(body, headers=DATA_HEADERS)

    @router.get("/api/series")
    def series(filters: FiltersDep) -> JSONResponse:
        """Top-1 and throughput by when each run ran, one series per model × batch size × backend × device ×
        precision, over the latest ``MAX_CHART_POINTS`` matching runs, and the environment changes among them."""

        matching, total, changes, keys = _call_store(db_url, lambda url: _series(url, filters), empty=([], 0, [], []))
        shown = {(row["run_id"], row["model_variant"], row["backend"]) for row in matching}
        shown_changes = [c for c in changes if (c["run_id"], c["model_variant"], c["backend"]) in shown]
        rows = history.annotate_all(matching, shown_changes)
        body = {
            "series": history.chart_series(rows, keys),
            "changes": shown_changes,
            "env_fields": history.ENV_FIELDS,
            "points": len(rows),
            "total": total,
            "capped": total > len(rows),
            "since": rows[-1]["ran_at"] if rows else None,
        }
        return JSONResponse(body, headers=DATA_HEADERS)

    @router.get("/api/runs/{row_id}")
    def run_detail(row_id: RowIdPath, user: GetUserDep) -> JSONResponse:
        """Everything about one row: verdict and reasons, fingerprint and what differs from the previous run and
        the baseline, latency of the series' last runs, energy, accuracy evidence, and whether this user may
        accept it as the baseline."""
        detail = _call_store(db_url, lambda url: run_view.run_detail(url, row_id), empty=None)
        if detail is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no metrics row {row_id}")
        refused = _may_edit_dag(user, detail["row"].get("dag_id"))
        detail["accept"].update(
            allowed=refused is None, why_not_allowed=refused, csrf_token=None if refused else csrf_token(user)
        )
        detail["row"] = history.annotate(detail["row"], [])
        return JSONResponse(jsonable_encoder(detail), headers=DATA_HEADERS)

    @router.post("/api/runs/{row_id}/accept")
    def accept_baseline(row_id: RowIdPath, body: AcceptBody, user: Annotated[Any, Depends(_csrf_checked)]):
        """Make this run its fingerprint's new throughput baseline (``metrics.rebaseline``), recorded with the
        signed-in user's name, now, and the reason given."""
        from convmixer_tasks.metrics.rebaseline import NotAcceptable, rebaseline

        row = _call_store(db_url, lambda url: store.get_row(url, row_id), empty=None)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no metrics row {row_id}")
        refused = _may_edit_dag(user, row.get("dag_id"))
        if refused:
            raise HTTPException(status.HTTP_403_FORBIDDEN, refused)

        def accept(url: str) -> dict[str, Any] | NotAcceptable:
            try:  # the library's rule decides what may be accepted and what accepting means
                return rebaseline(url, row_id, body.reason, user.get_name())
            except NotAcceptable as exc:
                return exc

        updated = _call_store(db_url, accept, empty=None)
        if isinstance(updated, NotAcceptable):
            raise HTTPException(status.HTTP_409_CONFLICT, str(updated))
        log.info("ConvMixer metrics: %s accepted row %s as baseline: %s", user.get_name(), row_id, body.reason)
        accepted = {"row": run_view.summary(updated), "accepted": run_view.accept_offer(updated, [])["accepted"]}
        return JSONResponse(jsonable_encoder(accepted), headers=DATA_HEADERS)

    @router.get("/api/compare")
    def compare_rows(a: RowIdQuery, b: RowIdQuery) -> JSONResponse:
        """Two rows side by side: fingerprint differences, metric deltas with significance (McNemar on the stored
        predictions, Welch and bootstrap intervals on the per-loop times) and the images that flipped."""
        if a == b:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "pick two different rows to compare")
        view = _call_store(db_url, lambda url: run_view.compare_view(url, a, b), empty=None)
        if view is None or isinstance(view, str):
            raise HTTPException(status.HTTP_404_NOT_FOUND, view or "no runs recorded yet")
        return JSONResponse(jsonable_encoder(view), headers=DATA_HEADERS)

    @router.get("/api/runs.csv")
    def runs_csv(filters: FiltersDep) -> Response:
        """Every run the filters match (not just one page), as CSV, latest run first."""
        rows = _call_store(db_url, lambda url: store.history_rows(url, CSV_COLUMNS, **filters.as_query()), empty=[])
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = {**DATA_HEADERS, "Content-Disposition": f'attachment; filename="convmixer-metrics-{stamp}.csv"'}
        return Response(rows_to_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)

    digest_api.add_routes(router, db_url, _call_store, DATA_HEADERS)  # the digest section (its own module)
    app.include_router(router)
    return app
