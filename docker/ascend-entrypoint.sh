#!/usr/bin/env bash
# Entrypoint of the Ascend NPU worker image (docker/Dockerfile.ascend).
#
# It proves the container can really drive the NPU *before* it takes work from Airflow, and then execs the worker
# inside the CANN environment, so every task it runs (atc, ais_bench, npu-smi) inherits what set_env.sh exports.
# A worker that started without these would accept NPU tasks and fail each of them; failing here puts the reason in
# one log line. The preflight, in order:
#   1. the user: an arbitrary uid (AIRFLOW_UID=$(id -u), run with gid 0) gets a passwd entry and HOME, as the
#      official Airflow image's /entrypoint does (this script replaces that entrypoint, see below)
#   2. files: set_env.sh, every device file (and that this uid can read AND write it: the device's group is
#      printed when not), the work folder
#   3. the driver libraries on LD_LIBRARY_PATH (driver lib64/driver and lib64/common, beside set_env.sh's own)
#   4. tools: npu-smi info, atc on PATH, python3 -m ais_bench --help
#   5. ascend_preflight.py: the task user resolves to a name, libascend_hal.so is found, ATC compiles a
#      one-operator ONNX for the chip, ais_bench runs it once on the device (opens it)
#
# Why not the official /entrypoint in front of this one: it would re-read our first argument as an `airflow`
# sub-command and wait for the metadata database, which an Edge NPU host cannot reach. Step 1 is what of it the
# worker needs.
#
# Usage: ascend-entrypoint.sh [MODE | COMMAND ...]
#   celery   exec `airflow celery worker --queues <queues> --concurrency N --celery-hostname <name>@%h`
#   edge     exec `airflow edge worker --queues <queues> --concurrency N --edge-hostname <name>.<host>`
#            (Edge executor: the worker reaches only the api-server over HTTP; see docker/README.md)
#   check    the preflight only; exit 0 when this container can run the NPU tasks
#   health   container health check of a running worker (no NPU checks: cheap, run every 30 s)
#   COMMAND  the checks, then exec COMMAND in the CANN environment (e.g. `bash`)
#   (no argument: $CONVMIXER_WORKER_MODE, default celery)
#
# Settings (environment):
#   AIRFLOW__CONVMIXER__CANN_SET_ENV   CANN's set_env.sh (default /usr/local/Ascend/ascend-toolkit/set_env.sh)
#   AIRFLOW__CONVMIXER__NPU_QUEUE      the untyped NPU queue (default npu); the worker serves it and its chip's
#   AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE  its chip's queue (default {queue}.{chip}: npu.310P3), the chip read from
#                                      npu-smi after the preflight — adding a 910B host is starting this image there
#   CONVMIXER_WORKER_CHIP              the chip type instead of npu-smi's (e.g. 910B3)
#   CONVMIXER_WORKER_QUEUES            the queues served instead of the two above (comma list)
#   AIRFLOW__CONVMIXER__NPU_DEVICE_ID  the device the tasks use (default 0)
#   AIRFLOW__CONVMIXER__WORK_DIR       the shared work folder; checked for when set
#   CONVMIXER_NPU_DEVICES              davinci numbers mapped into this container (default: NPU_DEVICE_ID), e.g. "0,1"
#   CONVMIXER_WORKER_CONCURRENCY       tasks at once (default 1: one worker per device, see docker/README.md)
#   CONVMIXER_WORKER_NAME              worker name before @host (default npu)
#   ASCEND_DEV_ROOT                    where the device files are (default /dev; tests point it elsewhere)
#   ASCEND_DRIVER_HOME                 the mounted driver (default /usr/local/Ascend/driver)
#   CONVMIXER_PREFLIGHT_PY             the Python preflight (default: ascend_preflight.py beside this script)
#   USER_NAME, AIRFLOW_USER_HOME_DIR   name and HOME given to an unknown uid (as the official image: default, /home/airflow)
set -euo pipefail

readonly PROG=ascend-entrypoint
readonly CELERY_APP=airflow.providers.celery.executors.celery_executor.app

set_env=${AIRFLOW__CONVMIXER__CANN_SET_ENV:-/usr/local/Ascend/ascend-toolkit/set_env.sh}
queue=${AIRFLOW__CONVMIXER__NPU_QUEUE:-npu}
queue_template=${AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE:-'{queue}.{chip}'}
queues=${CONVMIXER_WORKER_QUEUES:-}
device_id=${AIRFLOW__CONVMIXER__NPU_DEVICE_ID:-0}
devices=${CONVMIXER_NPU_DEVICES:-$device_id}
concurrency=${CONVMIXER_WORKER_CONCURRENCY:-1}
worker_name=${CONVMIXER_WORKER_NAME:-npu}
dev_root=${ASCEND_DEV_ROOT:-/dev}
driver_home=${ASCEND_DRIVER_HOME:-/usr/local/Ascend/driver}
preflight_py=${CONVMIXER_PREFLIGHT_PY:-$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/ascend_preflight.py}

log() { echo "$PROG: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# The Task SDK calls getpass.getuser() as each task starts: a uid with no name fails every task. Same remedy as the
# official image's entrypoint: a passwd entry (its /etc/passwd is group-writable for gid 0) and HOME; when the file
# cannot be written, USER/LOGNAME (which getuser() reads first) still give the name.
ensure_user() {
  local name=${USER_NAME:-default} home=${AIRFLOW_USER_HOME_DIR:-/home/airflow}
  id -un >/dev/null 2>&1 && return 0
  if [[ -w /etc/passwd ]]; then
    echo "$name:x:$(id -u):$(id -g):$name user:$home:/sbin/nologin" >>/etc/passwd
    log "uid $(id -u) had no user name: added '$name' (HOME $home) to /etc/passwd"
  else
    log "uid $(id -u) has no user name and /etc/passwd is not writable: USER=$name for this worker"
    export USER=$name LOGNAME=$name
  fi
  export HOME=$home
}

# Ascend's own CANN images put the driver's libraries on the loader path separately from set_env.sh (which adds
# only its own lib64 and, on some versions, the driver's top folder): without lib64/driver, libascend_hal.so
# does not load at the first inference.
driver_library_path() {
  local folder
  for folder in "$driver_home/lib64/common" "$driver_home/lib64/driver"; do
    case ":${LD_LIBRARY_PATH:-}:" in
      *":$folder:"*) ;;
      *) LD_LIBRARY_PATH=$folder${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;;
    esac
  done
  export LD_LIBRARY_PATH
}

# A device file that exists but that this uid cannot open fails only at the first ACL call: test it now and say
# which group owns it (the gid to put in ASCEND_DEVICE_GID).
check_device_access() {
  local -a denied=()
  local dev path
  for dev in "$@"; do
    path=$dev_root/$dev
    [[ -e $path ]] || continue
    if [[ ! -r $path || ! -w $path ]]; then
      denied+=("$path: owner $(stat -c '%u:%g (%U:%G), mode %a' "$path"); this worker is uid $(id -u), groups $(id -G)")
    fi
  done
  if ((${#denied[@]})); then
    log "ERROR: this worker cannot read and write the NPU device files:"
    printf '  - %s\n' "${denied[@]}" >&2
    log "fix: set ASCEND_DEVICE_GID in docker/.env to the owning gid above (on the host: stat -c %g /dev/davinci0)"
    log "     and recreate the worker; a driver that admits only root: user \"0:0\" (docker/README.md)"
    exit 1
  fi
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
  local -a names=()
  for dev in ${devices//,/ }; do names+=("davinci$dev"); done
  check_device_access "${names[@]}" davinci_manager devmm_svm hisi_hdc
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

# The part a file test cannot prove: compile with ATC and run on the device (docker/ascend_preflight.py).
check_device_run() {
  [[ -f $preflight_py ]] || die "the Python preflight $preflight_py is missing from the image (CONVMIXER_PREFLIGHT_PY)"
  if [[ -n ${ASCEND_PROCESS_LOG_PATH:-} ]]; then
    mkdir -p "$ASCEND_PROCESS_LOG_PATH" 2>/dev/null ||
      die "cannot create ASCEND_PROCESS_LOG_PATH=$ASCEND_PROCESS_LOG_PATH as uid $(id -u) (is the logs volume owned by AIRFLOW_UID?)"
  fi
  python3 "$preflight_py" --device "$device_id" --cann-set-env "$set_env" ||
    die "the NPU preflight failed (the line above names the step); this worker takes no task"
}

check_settings() {
  [[ $concurrency =~ ^[1-9][0-9]*$ ]] ||
    die "CONVMIXER_WORKER_CONCURRENCY='$concurrency' must be a positive integer (tasks at once on this worker)"
}

# The queues this worker serves: the untyped one (DAGs without [convmixer] chips route there) and its chip's, so one
# image serves any host; the chip is the one the preflight compiled for (npu-smi's Name), unless given.
worker_queues() {
  local chip chip_queue
  if [[ -n $queues ]]; then
    log "serving the queues CONVMIXER_WORKER_QUEUES names: $queues"
    return 0
  fi
  if [[ -n ${CONVMIXER_WORKER_CHIP:-} ]]; then
    chip=$CONVMIXER_WORKER_CHIP
  else
    chip=$(python3 "$preflight_py" --chip --device "$device_id" --cann-set-env "$set_env") ||
      die "the chip type could not be read (the line above says why); set CONVMIXER_WORKER_CHIP (e.g. 310P3)"
  fi
  [[ $chip =~ ^[0-9]{3}[A-Za-z0-9_-]*$ ]] ||
    die "chip type '$chip' is not npu-smi's Name of a chip (e.g. 310P3, 910B3); fix CONVMIXER_WORKER_CHIP"
  [[ $queue_template == *'{chip}'* ]] ||
    die "AIRFLOW__CONVMIXER__NPU_QUEUE_TEMPLATE='$queue_template' must contain {chip} (default {queue}.{chip})"
  chip_queue=${queue_template//'{queue}'/$queue}
  chip_queue=${chip_queue//'{chip}'/$chip}
  queues="$queue,$chip_queue"
  log "chip $chip: serving queues $queues"
}

preflight() {
  check_settings
  ensure_user
  check_files
  driver_library_path
  source_cann_env
  driver_library_path  # again: set_env.sh may have replaced LD_LIBRARY_PATH
  check_tools
  check_device_run
  worker_queues
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
      log "starting Celery worker ${worker_name}@%h on queues '$queues' (concurrency $concurrency)"
      exec airflow celery worker --queues "$queues" --concurrency "$concurrency" --celery-hostname "${worker_name}@%h"
      ;;
    edge)
      preflight
      # <name>.<host>, not Celery's <name>@<host>: edge3 5.1 signs the URL-quoted /worker/<name> path and checks the
      # plain one, so a name that quoting changes (an @) is refused with 403 at registration
      log "starting Edge worker ${worker_name}.${HOSTNAME:-$(hostname)} on queues '$queues' (concurrency $concurrency)"
      exec airflow edge worker --queues "$queues" --concurrency "$concurrency" \
        --edge-hostname "${worker_name}.${HOSTNAME:-$(hostname)}"
      ;;
    check)
      preflight
      log "ready: this container can run the NPU tasks"
      ;;
    health)
      ensure_user
      health "${CONVMIXER_WORKER_MODE:-celery}"
      ;;
    *)
      preflight
      exec "$mode" "$@"
      ;;
  esac
}

main "$@"
