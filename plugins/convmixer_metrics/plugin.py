"""Registers the metrics app with Airflow and puts the page in the UI's Browse menu (embedded at /plugin/<route>)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/convmixer-metrics"  # not one of Airflow's reserved prefixes (/api/v2, /ui, /execution, /auth, ...)
URL_ROUTE = "convmixer-metrics"  # the UI shows the page at /plugin/convmixer-metrics


def page_href() -> str:
    """The page's URL path, under ``[api] base_url``'s path when Airflow is served below a prefix."""
    base_path = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    # The trailing slash matters: the page loads its files and data with URLs relative to it.
    return f"{base_path}{URL_PREFIX}/"


class LazyMetricsApp:
    """ASGI app that builds the real FastAPI app (``app.create_app``) on its first request.

    Airflow imports every plugin in every task process too (to collect macros); deferring the FastAPI and auth
    imports keeps that at a few milliseconds instead of over a second per task.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:  # two first requests at once both build one; the second simply wins
            from .app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class ConvMixerMetricsPlugin(AirflowPlugin):
    name = "convmixer_metrics"
    fastapi_apps = [  # noqa: RUF012 - AirflowPlugin declares these as plain class attributes
        {"app": LazyMetricsApp(), "url_prefix": URL_PREFIX, "name": "ConvMixer metrics"}
    ]
    external_views = [  # noqa: RUF012 - as above
        {
            "name": "ConvMixer metrics",
            "href": page_href(),
            "url_route": URL_ROUTE,
            "category": "browse",
            "destination": "nav",
        }
    ]
