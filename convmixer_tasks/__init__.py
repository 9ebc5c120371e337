"""ConvMixer validation stages as plain functions: dataset → preprocess → export → compile → infer → eval → metrics.

Nothing here imports Airflow; the DAG in ``dags/`` and the ``convmixer-tasks`` CLI call the same functions.
"""

__version__ = "0.1.0"
