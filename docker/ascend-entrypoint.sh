#!/usr/bin/env bash
# Entrypoint of the Ascend NPU worker image (docker/Dockerfile.ascend).
#
# It proves the container can really drive the NPU *before* it takes work from Airflow — the CANN environment
# script, the device files, the driver tool and ais_bench — and then execs the worker inside that environment, so
# every task it runs (atc, ais_bench, npu-smi) inherits the variables set_env.sh exports. A worker that starts
# without these would accept NPU tasks and fail each of them; failing here puts the reason in one log line.
#
# Usage: ascend-entrypoint.sh [MODE | COMMAND ...]
#   celery   exec `airflow celery worker --queues <npu_queue> --concurrency N --celery-hostname <name>@%h`
#   edge     exec `airflow edge worker --queues <npu_queue> --concurrency N --edge-hostname <name>@<host>`
#            (Edge executor: the worker reaches only the api-server over HTTP; see docker/README.md)
#   check    the checks only; exit 0 when the NPU environment is usable
#   health   container health check of a running worker (no NPU checks: cheap, run every 30 s)
#   COMMAND  the checks, then exec COMMAND in the CANN environment (e.g. `bash`)
#   (no argument: $CONVMIXER_WORKER_MODE, default celery)
#
# Settings (environment):
#   AIRFLOW__CONVMIXER__CANN_SET_ENV   CANN's set_env.sh (default /usr/local/Ascend/ascend-toolkit/set_env.sh)
#   AIRFLOW__CONVMIXER__NPU_QUEUE      the Airflow queue this worker serves (default npu)
#   AIRFLOW__CONVMIXER__NPU_DEVICE_ID  the device the tasks use (default 0)
#   AIRFLOW__CONVMIXER__WORK_DIR       the shared work folder; checked for when set
#   CONVMIXER_NPU_DEVICES              davinci numbers mapped into this container (default: NPU_DEVICE_ID), e.g. "0,1"
#   CONVMIXER_WORKER_CONCURRENCY       tasks at once (default 1: one worker per device, see docker/README.md)
#   CONVMIXER_WORKER_NAME              worker name before @host (default npu)
#   ASCEND_DEV_ROOT                    where the device files are (default /dev; tests point it elsewhere)
set -euo pipefail

readonly PROG=ascend-entrypoint
readonly CELERY_APP=airflow.providers.celery.executors.celery_executor.app

set_env=${AIRFLOW__CONVMIXER__CANN_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}
queue=${AIRFLOW__CONVMIXER__NPU_QUEUE:-npu}
device_id=${AIRFLOW__CONVMIXER__NPU_DEVICE_ID:-0}
devices=${CONVMIXER_NPU_DEVICES:-$device_id}
concurrency=${CONVMIXER_WORKER_CONCURRENCY:-1}
worker_name=${CONVMIXER_WORKER_NAME:-npu}
dev_root=${ASCEND_DEV_ROOT:-/dev}

log() { echo "$PROG: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# All missing files are reported together: fixing one mount at a time across container restarts is slow.
check_files() {
  local -a missing=()
  local dev
  if [[ ! -f $set_env ]]; then
    missing+=("CANN environment script $set_env (AIRFLOW__CONVMIXER__CANN_SET_ENV):
    mount the host's toolkit (volume CANN_HOST_DIR:/usr/local/Ascend/ascend-toolkit:ro in
    docker/docker-compose.yaml), or build docker/Dockerfile.ascend with --build-arg CANN_SOURCE=bake;
    CANN >= 8.5 installs /usr/local/Ascend/cann/set_env.sh: set AIRFLOW__CONVMIXER__CANN_SET_ENV to it")
  fi
  for dev in ${devices//,/ }; do
    [[ $dev =~ ^[0-9]+$ ]] || die "CONVMIXER_NPU_DEVICES='$devices' must list device numbers, e.g. '0' or '0,1'"
    [[ -e $dev_root/davinci$dev ]] || missing+=("device $dev_root/davinci$dev: add
    '- /dev/davinci$dev:/dev/davinci$dev' under devices: of the NPU worker (NPU_DEVICE in docker/.env)")
  done
  for dev in davinci_manager devmm_svm hisi_hdc; do
    [[ -e $dev_root/$dev ]] || missing+=("device $dev_root/$dev: add '- /dev/$dev:/dev/$dev' under devices:
    of the NPU worker (docker/docker-compose.yaml lists all of them)")
  done
  if [[ -n ${AIRFLOW__CONVMIXER__WORK_DIR:-} && ! -d $AIRFLOW__CONVMIXER__WORK_DIR ]]; then
    missing+=("shared work folder $AIRFLOW__CONVMIXER__WORK_DIR (AIRFLOW__CONVMIXER__WORK_DIR): mount the
    work volume at this same path in every worker (CONVMIXER_WORK_HOST_DIR in docker/.env)")
  fi
  if ((${#missing[@]})); then
    log "ERROR: this container cannot drive the NPU; missing:"
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

source_cann_env() {
  # set_env.sh reads variables it may not set (LD_LIBRARY_PATH, PYTHONPATH): not under `set -u`.
  set +u
  # shellcheck disable=SC1090  # the path is a setting
  if ! source "$set_env"; then
    set -u
    die "sourcing $set_env failed (see the lines above); fix the CANN install or AIRFLOW__CONVMIXER__CANN_SET_ENV"
  fi
  set -u
  log "CANN environment from $set_env (ASCEND_TOOLKIT_HOME=${ASCEND_TOOLKIT_HOME:-unset})"
}

# The driver tool, the compiler and the inference tool must each run in this environment.
check_tools() {
  local out
  command -v npu-smi >/dev/null ||
    die "npu-smi is not on PATH: mount the driver tools (/usr/local/bin/npu-smi, /usr/local/dcmi,
    /usr/local/Ascend/driver/lib64/, /usr/local/Ascend/driver/version.info, /etc/ascend_install.info)"
  if ! out=$(npu-smi info 2>&1); then
    die "'npu-smi info' failed — the driver cannot reach the devices (driver mounts, device files, or a device
    held by another process):
$(tail -n 5 <<<"$out")"
  fi
  command -v atc >/dev/null ||
    die "atc is not on PATH after sourcing $set_env: the CANN toolkit there is incomplete; reinstall it"
  if ! out=$(python3 -m ais_bench --help 2>&1); then
    die "'python3 -m ais_bench --help' failed — the aclruntime/ais_bench wheels are missing or cannot load
    libascendcl.so (rebuild docker/Dockerfile.ascend with --build-context ais_bench_src=...; check the
    driver lib64 mount):
$(tail -n 5 <<<"$out")"
  fi
  log "npu-smi, atc and ais_bench work; devices ${devices} under $dev_root"
}

check_settings() {
  [[ $concurrency =~ ^[1-9][0-9]*$ ]] ||
    die "CONVMIXER_WORKER_CONCURRENCY='$concurrency' must be a positive integer (tasks at once on this worker)"
}

preflight() {
  check_settings
  check_files
  source_cann_env
  check_tools
}

health() {
  case "$1" in
    celery) exec celery --app "$CELERY_APP" inspect ping -d "${worker_name}@${HOSTNAME:-$(hostname)}" ;;
    edge) exec airflow edge status ;;
    *) die "health: unknown worker mode '$1' (celery or edge)" ;;
  esac
}

main() {
  local mode=${1:-${CONVMIXER_WORKER_MODE:-celery}}
  [[ $# -gt 0 ]] && shift
  case "$mode" in
    celery)
      preflight
      log "starting Celery worker ${worker_name}@%h on queue '$queue' (concurrency $concurrency)"
      exec airflow celery worker --queues "$queue" --concurrency "$concurrency" --celery-hostname "${worker_name}@%h"
      ;;
    edge)
      preflight
      log "starting Edge worker ${worker_name}@${HOSTNAME:-$(hostname)} on queue '$queue' (concurrency $concurrency)"
      exec airflow edge worker --queues "$queue" --concurrency "$concurrency" \
        --edge-hostname "${worker_name}@${HOSTNAME:-$(hostname)}"
      ;;
    check)
      preflight
      log "ready: this container can run the NPU tasks"
      ;;
    health) health "${CONVMIXER_WORKER_MODE:-celery}" ;;
    *)
      preflight
      exec "$mode" "$@"
      ;;
  esac
}

main "$@"
