# Sourced by run_demo_dag.sh and standalone.sh: the embedded Airflow both of them use (this checkout's DAG and
# plugins, LocalExecutor, SQLite metadata DB in AIRFLOW_HOME), so the UI shows the runs the demo recorded.
# Each variable keeps a value the caller already exported.
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$REPO/airflow-home}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$REPO/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$REPO/plugins}
export AIRFLOW__CORE__EXECUTOR=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
# The default (32) starts 32 executor processes; this machine kind has 2 cores.
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
mkdir -p "$AIRFLOW_HOME"
