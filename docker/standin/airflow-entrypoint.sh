#!/usr/bin/env bash
# TEST STAND-IN for the official apache/airflow image's /entrypoint (docker/standin/build-standin-bases.sh puts it
# there). It reproduces only what this project's images rely on: an arbitrary uid (run with gid 0) gets a passwd
# entry and HOME, as the official entrypoint does for OpenShift-style uids; "bash" and "python" run as themselves;
# anything else is an `airflow` sub-command. Not a production entrypoint.
set -euo pipefail
if ! whoami >/dev/null 2>&1; then
  if [[ -w /etc/passwd ]]; then
    echo "${USER_NAME:-default}:x:$(id -u):0:${USER_NAME:-default} user:${AIRFLOW_USER_HOME_DIR:-/home/airflow}:/sbin/nologin" >>/etc/passwd
  fi
  export HOME=${AIRFLOW_USER_HOME_DIR:-/home/airflow}
fi
case "${1:-}" in
  bash) shift; exec /bin/bash "$@" ;;
  python) shift; exec python "$@" ;;
  airflow) shift; exec airflow "$@" ;;
  *) exec airflow "$@" ;;
esac
