#!/usr/bin/env bash
# The airflow-init service of docker/docker-compose.yaml: creates what every other service expects to exist.
# Runs as root (like Airflow's official compose) so it can hand the shared folders to the airflow user, and is
# idempotent: it runs on every `docker compose up`, and docker/.env stays the source of truth.
#
#   1. shared folders: the work folder (AIRFLOW__CONVMIXER__WORK_DIR), logs, the auth folder
#   2. airflow db migrate
#   3. the metrics database (CONVMIXER_METRICS_DB_URL) and its schema: convmixer-tasks metrics-upgrade
#   4. the metrics Connection (AIRFLOW__CONVMIXER__METRICS_CONN_ID), re-created from CONVMIXER_METRICS_DB_URL
#   5. the NPU pool (AIRFLOW__CONVMIXER__NPU_POOL) with AIRFLOW__CONVMIXER__NPU_POOL_SLOTS slots (= NPU devices),
#      and one such pool per chip type of AIRFLOW__CONVMIXER__CHIPS (AIRFLOW__CONVMIXER__NPU_POOL_TEMPLATE: npu.310P3)
#   6. the admin user (_AIRFLOW_WWW_USER_USERNAME / _AIRFLOW_WWW_USER_PASSWORD); under the Edge executor also the
#      Connection convmixer_airflow_api as that user, unless it exists (check_inputs asks the Edge worker registry
#      with it; docker/README.md, "Edge executor")
set -euo pipefail

log() { echo "airflow-init: $*"; }
die() {
  echo "airflow-init: ERROR: $*" >&2
  exit 1
}

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
python=${PYTHON:-python}
uid=${AIRFLOW_UID:-50000}
airflow_home=${AIRFLOW_HOME:-/opt/airflow}
work_dir=${AIRFLOW__CONVMIXER__WORK_DIR:-$airflow_home/convmixer-work}
pool=${AIRFLOW__CONVMIXER__NPU_POOL:-npu}
slots=${AIRFLOW__CONVMIXER__NPU_POOL_SLOTS:-1}
conn_id=${AIRFLOW__CONVMIXER__METRICS_CONN_ID:-convmixer_metrics}
metrics_url=${CONVMIXER_METRICS_DB_URL:-}
if [[ -z $metrics_url && -n ${POSTGRES_PASSWORD:-} ]]; then
  # The default: database convmixer_metrics on the deployment's PostgreSQL (built here, not in the compose file:
  # docker-compose 1.29 does not expand nested ${...} defaults).
  metrics_url="postgresql+psycopg2://${POSTGRES_USER:-airflow}:${POSTGRES_PASSWORD}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}/convmixer_metrics"
fi
auth_manager=${AIRFLOW__CORE__AUTH_MANAGER:-SimpleAuthManager}
passwords_file=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$airflow_home/simple_auth_manager_passwords.json.generated}
admin_user=${_AIRFLOW_WWW_USER_USERNAME:-airflow}

[[ -n $metrics_url ]] || die "CONVMIXER_METRICS_DB_URL and POSTGRES_PASSWORD are both empty; docker/docker-compose.yaml sets them from docker/.env"
[[ $slots =~ ^[1-9][0-9]*$ ]] ||
  die "AIRFLOW__CONVMIXER__NPU_POOL_SLOTS='$slots' must be a positive integer (the number of NPU devices)"
[[ $uid =~ ^[0-9]+$ ]] || die "AIRFLOW_UID='$uid' must be a numeric user id (set AIRFLOW_UID in docker/.env to \$(id -u))"

log "1/6 shared folders: $work_dir, $airflow_home/logs, $(dirname "$passwords_file")"
# logs/ascend is where the NPU workers put the CANN plog files (ASCEND_PROCESS_LOG_PATH). It also keeps the logs
# volume from being empty: Docker copies the image folder's owner (50000) onto an EMPTY named volume each time a
# container mounts it, which would undo the chown below for any other AIRFLOW_UID (seen in docker/smoke-test.sh).
mkdir -p "$work_dir" "$airflow_home/logs/ascend" "$(dirname "$passwords_file")"

log "2/6 airflow db migrate"
airflow db migrate

log "3/6 metrics database and schema"
"$python" "$here/convmixer_init.py" create-database "$metrics_url"
convmixer-tasks metrics-upgrade --url "$metrics_url"

log "4/6 connection '$conn_id' (re-created from CONVMIXER_METRICS_DB_URL)"
conn_json=$("$python" "$here/convmixer_init.py" connection-json "$metrics_url")
airflow connections delete "$conn_id" >/dev/null 2>&1 || true
airflow connections add "$conn_id" --conn-json "$conn_json"

npu_pools=$("$python" "$here/convmixer_init.py" npu-pools) || die "the NPU pools' settings are wrong (line above)"
while read -r pool slots; do
  log "5/6 pool '$pool' with $slots slot(s)"
  airflow pools set "$pool" "$slots" "Ascend NPU devices: one slot per device, so two NPU tasks never share one"
done <<<"$npu_pools"

log "6/6 admin user '$admin_user'"
case "$auth_manager" in
  *SimpleAuthManager*)
    "$python" "$here/convmixer_init.py" write-password "$passwords_file" "$admin_user"
    ;;
  *FabAuthManager*)
    airflow users create --role Admin --username "$admin_user" --password "${_AIRFLOW_WWW_USER_PASSWORD:?}" \
      --email "${_AIRFLOW_WWW_USER_EMAIL:-admin@example.org}" --firstname Admin --lastname User ||
      log "user '$admin_user' exists already"
    ;;
  *) log "auth manager $auth_manager: create the admin user with its own tools" ;;
esac
if [[ ${AIRFLOW__CORE__EXECUTOR:-} == *EdgeExecutor* && -n ${_AIRFLOW_WWW_USER_PASSWORD:-} ]]; then
  api_url=${AIRFLOW__EDGE__API_URL:-http://airflow-apiserver:8080/edge_worker/v1/rpcapi}
  api_url=${api_url%/edge_worker/v1/rpcapi}
  if airflow connections get convmixer_airflow_api >/dev/null 2>&1; then
    log "6/6 connection 'convmixer_airflow_api' exists: kept"
  else
    log "6/6 connection 'convmixer_airflow_api' ($api_url as '$admin_user': the chip check reads the Edge workers)"
    api_conn_json=$("$python" -c 'import json, sys
print(json.dumps({"conn_type": "http", "host": sys.argv[1], "login": sys.argv[2], "password": sys.argv[3]}))' \
      "$api_url" "$admin_user" "$_AIRFLOW_WWW_USER_PASSWORD")
    airflow connections add convmixer_airflow_api --conn-json "$api_conn_json"
  fi
fi

# Last, so that whatever the steps above created as root is the airflow user's too. An NFS work folder with
# root_squash refuses chown: then its owner must be set on the NFS server (see docker/README.md).
for path in "$work_dir" "$airflow_home/logs" "$(dirname "$passwords_file")"; do
  chown -R "$uid:0" "$path" 2>/dev/null || log "WARNING: cannot chown $path to $uid:0; make it writable by uid $uid"
done
log "done"
