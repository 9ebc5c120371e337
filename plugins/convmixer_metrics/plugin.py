"""Registers the metrics app with Airflow and puts the page in the UI's Browse menu (embedded at /plugin/<route>)."""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from .app import create_app

URL_PREFIX = "/convmixer-metrics"  # not one of Airflow's reserved prefixes (/api/v2, /ui, /execution, /auth, ...)
URL_ROUTE = "convmixer-metrics"  # the UI shows the page at /plugin/convmixer-metrics


def page_href() -> str:
    """The page's URL path, under ``[api] base_url``'s path when Airflow is served below a prefix."""
    base_path = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    # The trailing slash matters: the page loads its files and data with URLs relative to it.
    return f"{base_path}{URL_PREFIX}/"


class ConvMixerMetricsPlugin(AirflowPlugin):
    name = "convmixer_metrics"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ConvMixer metrics"}]
    external_views = [
        {
            "name": "ConvMixer metrics",
            "href": page_href(),
            "url_route": URL_ROUTE,
            "category": "browse",
            "destination": "nav",
        }
    ]
