# The one rule for this checkout's embedded Airflow (this checkout's DAG and plugins, LocalExecutor, SQLite metadata
# DB in AIRFLOW_HOME = <checkout>/airflow-home), so the UI, the airflow CLI and `convmixer-tasks metrics-show` all
# see the runs the demo recorded. Sourced by run_demo_dag.sh and standalone.sh, and by .venv/bin/activate (setup.sh
# adds the line), so `source .venv/bin/activate` is all a shell needs. Each variable keeps a value already exported.
CONVMIXER_REPO=${CONVMIXER_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$CONVMIXER_REPO/airflow-home}
export AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
export AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$CONVMIXER_REPO/dags}
export AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$CONVMIXER_REPO/plugins}
export AIRFLOW__CORE__EXECUTOR=${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}
# The default (32) starts 32 executor processes; this machine kind has 2 cores.
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
# A local demo: the API server (the UI) listens on this machine only, and the simple auth manager then does not warn
# that the setup "looks like production".
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
mkdir -p "$AIRFLOW_HOME"
