#!/usr/bin/env bash
# Run the convmixer_validation DAG once, on this machine, in Airflow's embedded mode: SQLite metadata DB,
# LocalExecutor, the generated demo set, the committed demo model, the ONNX Runtime backend. Then print the
# metrics rows and how to open the UI.
#
#   source .venv/bin/activate            # after scripts/setup.sh
#   scripts/run_demo_dag.sh              # or: scripts/run_demo_dag.sh '{"batch_size": 4}'
#
# AIRFLOW_HOME defaults to <repo>/airflow-home (git-ignored); everything else comes from the DAG's settings
# ([convmixer] in $AIRFLOW_HOME/airflow.cfg or AIRFLOW__CONVMIXER__* variables), read by convmixer_tasks.settings.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONF=${1:-"{}"}

if ! command -v airflow >/dev/null 2>&1; then
  echo "run_demo_dag.sh: 'airflow' is not on PATH; run scripts/setup.sh, then: source $REPO/.venv/bin/activate" >&2
  exit 1
fi

source "$REPO/scripts/airflow-env.sh"

# The settings the DAG uses, from the library that resolves them (airflow.cfg / AIRFLOW__CONVMIXER__*), one per line.
# The metrics URL follows the same rule as the DAG, so the rows shown are the ones written.
mapfile -t SETTINGS < <(python - <<'EOF'
from airflow.configuration import conf
from convmixer_tasks.settings import airflow_conf_reader, load_scheduling_settings, load_worker_settings
scheduling = load_scheduling_settings(airflow_conf_reader(conf))
worker = load_worker_settings(airflow_conf_reader(conf))
for value in (scheduling.npu_pool, scheduling.npu_pool_slots, worker.metrics_conn_id, worker.metrics_url(None)):
    print(value)
EOF
)
if [ "${#SETTINGS[@]}" -ne 4 ]; then
  echo "run_demo_dag.sh: could not read the [convmixer] settings (see the error above); fix airflow.cfg" >&2
  exit 1
fi
NPU_POOL=${SETTINGS[0]}; NPU_POOL_SLOTS=${SETTINGS[1]}; METRICS_CONN_ID=${SETTINGS[2]}; METRICS_URL=${SETTINGS[3]}

echo "== Airflow metadata DB (SQLite in $AIRFLOW_HOME)"
airflow db migrate >/dev/null
# `dags test` ignores pools, but the scheduler of `airflow standalone` needs this one to run the NPU steps.
airflow pools set "$NPU_POOL" "$NPU_POOL_SLOTS" "ConvMixer NPU steps: one slot per device" >/dev/null

# The DAG's check_inputs step generates the demo set into the work folder on the first run.

LOG="$AIRFLOW_HOME/logs/run_demo_dag.log"
mkdir -p "$(dirname "$LOG")"
echo "== airflow dags test convmixer_validation -c '$CONF'   (log: $LOG)"
status=0
airflow dags test convmixer_validation -c "$CONF" >"$LOG" 2>&1 || status=$?
grep -E "\[DAG TEST\] end task|Marking run|failed with exception" "$LOG" \
  | sed -E 's/^[^ ]+ +//; s/ +\[[a-z._]+\].*$//' || true
if [ "$status" -ne 0 ]; then
  echo "== the DAG run failed (exit $status); last lines of $LOG:" >&2
  tail -n 30 "$LOG" >&2
fi

echo "== metrics rows (newest first; --output json or csv for the full rows)"
convmixer-tasks metrics-show --limit 10 --url "$METRICS_URL" || echo "(could not read the metrics DB)" >&2

cat <<EOF

== open the UI (DAG graph, task logs, Browse -> ConvMixer metrics):
  AIRFLOW_HOME=$AIRFLOW_HOME $REPO/scripts/standalone.sh start    # airflow standalone in the background, this DAG and plugins
  then open http://localhost:8080 (Browse -> ConvMixer metrics for the history) ; user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
  before triggering runs there: airflow dags unpause convmixer_validation   (the DAG is created paused)
  stop it with: AIRFLOW_HOME=$AIRFLOW_HOME $REPO/scripts/standalone.sh stop   (its scheduler, workers and tasks too)
  (metrics DB: Airflow connection '$METRICS_CONN_ID' if defined, else \$CONVMIXER_METRICS_DB_URL, else
   $AIRFLOW_HOME/convmixer_metrics.db)
EOF
exit "$status"
