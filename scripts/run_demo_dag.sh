#!/usr/bin/env bash
# Run the convmixer_validation DAG once, on this machine, in Airflow's embedded mode: SQLite metadata DB,
# LocalExecutor, the generated demo set, the committed demo model, the ONNX Runtime backend. Then print the
# metrics rows and how to open the UI.
#
#   source .venv/bin/activate            # after scripts/setup.sh
#   scripts/run_demo_dag.sh              # or: scripts/run_demo_dag.sh '{"batch_size": 4}'
#
# AIRFLOW_HOME defaults to <repo>/airflow-home (git-ignored); everything else comes from the DAG's settings
# ([convmixer] in $AIRFLOW_HOME/airflow.cfg or AIRFLOW__CONVMIXER__* variables), read by convmixer_tasks.run.settings.
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
from convmixer_tasks.run.settings import airflow_conf_reader, load_scheduling_settings, load_worker_settings
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
# The log in a few ordered lines: each task once (mapped ones with their count), the run's outcome, and each of
# our warnings once (the log has every line).
python - "$LOG" <<'EOF'
import re, sys

ended, failures, warnings, outcome = {}, [], {}, None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    if match := re.search(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)", line):
        ended.setdefault(match[1], set()).add(int(match[2]))
    elif match := re.search(r"Marking run <DagRun [^>]*?(\w+__\S+?), state:.*> (successful|failed)", line):
        outcome = (match[1], "succeeded" if match[2] == "successful" else "FAILED")
    elif "failed with exception" in line:
        failures.append(re.sub(r"^\S+ +|\s+\[[\w.]+\] loc=.*$", "", line.strip()))
    elif match := re.match(r"^\S+ \[warning\s*\] (.*) \[convmixer_tasks[\w.]*\] loc=", line.strip()):
        warnings.setdefault(re.sub(r"[0-9a-f]{16}", "…", match[1]), match[1])  # ours; libraries' notes stay in the log
for task, maps in ended.items():
    print(f"  {task:<18} done" + ("" if maps == {-1} else f" ({len(maps)} mapped instances)"))
for line in failures:
    print(f"  {line}")
if outcome:
    print(f"  DAG run {outcome[0]}: {outcome[1]}")
for text in warnings.values():
    print(f"  warning: {text[:400]}")
EOF
if [ "$status" -ne 0 ]; then
  echo "== the DAG run failed (exit $status); last lines of $LOG:" >&2
  tail -n 30 "$LOG" >&2
fi

echo "== metrics rows (newest first; --output json or csv for the full rows)"
convmixer-tasks metrics-show --limit 10 --url "$METRICS_URL" || echo "(could not read the metrics DB)" >&2

cat <<EOF

== open the UI (DAG graph, task logs, Browse -> ConvMixer metrics), as in the README:
  source .venv/bin/activate           # also sets AIRFLOW_HOME=$AIRFLOW_HOME (scripts/airflow-env.sh)
  convmixer-tasks metrics-show        # the rows above again
  scripts/standalone.sh start         # airflow standalone in the background: this DAG and plugins
  open http://127.0.0.1:8080 (user admin, password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated);
    the metrics page: http://127.0.0.1:8080/plugin/convmixer-metrics (Browse -> ConvMixer metrics)
  airflow dags unpause convmixer_validation   # once, before triggering runs there (the DAG is created paused)
  scripts/standalone.sh stop          # its scheduler, workers and tasks too
  (metrics DB: Airflow connection '$METRICS_CONN_ID' if defined, else \$CONVMIXER_METRICS_DB_URL, else
   \$AIRFLOW_HOME/convmixer_metrics.db = $METRICS_URL)
EOF
exit "$status"
