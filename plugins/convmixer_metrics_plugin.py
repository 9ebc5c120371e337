"""Entry file for Airflow's plugin loader: registers the ConvMixer metrics page (see convmixer_metrics/).

Airflow puts the plugins folder on sys.path and imports each .py file here; the package itself is hidden from the
loader by ``convmixer_metrics/.airflowignore`` so it is imported exactly once, as a package.
"""

from convmixer_metrics.plugin import ConvMixerMetricsPlugin

__all__ = ["ConvMixerMetricsPlugin"]
