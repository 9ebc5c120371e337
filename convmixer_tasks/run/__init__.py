"""The run as Airflow and the CLI drive it: params, records, one step per DAG task, local run, settings."""
