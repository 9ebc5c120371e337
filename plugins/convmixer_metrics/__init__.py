"""The ConvMixer metrics page in the Airflow UI: JSON/CSV endpoints and a page with charts and a table of runs.

``plugin.py`` registers it with Airflow, ``app.py`` is the FastAPI app, ``source.py`` finds the metrics database,
``filters.py`` validates what the page may ask for, ``static/`` holds the page and the vendored chart library.
"""
