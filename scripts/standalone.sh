#!/usr/bin/env bash
# The Airflow UI for the demo: `airflow standalone` (scheduler, dag-processor, triggerer, API server) in the
# background on the embedded setup of run_demo_dag.sh, and a stop that takes everything it started with it.
#
#   scripts/standalone.sh start     # log: $AIRFLOW_HOME/standalone.log; the UI on http://localhost:8080 (its port:
#                                   # [api] port, AIRFLOW__API__PORT)
#   scripts/standalone.sh status
#   scripts/standalone.sh stop      # SIGINT to standalone (its own clean shutdown); what is still there
#                                   # STANDALONE_STOP_TIMEOUT s (60) later gets SIGTERM, and as long after SIGKILL
#
# Why a script: `airflow standalone` (Airflow 3.3) stops cleanly only when SIGINT reaches the standalone process
# alone; it then stops its components with SIGTERM. A plain `kill` (SIGTERM) ends the standalone process alone and
# leaves the scheduler, API server and workers running; Ctrl-C in a terminal signals the whole process group, and
# the scheduler then waits forever on LocalExecutor workers that ignore SIGINT; and a command started with `&` from
# a script ignores SIGINT (bash does that without job control). start therefore runs it in a session of its own
# with SIGINT restored, stop sends SIGINT to it alone, and what is left then is found by session: the task
# processes Airflow puts in process groups of their own are in it too.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$REPO/scripts/airflow-env.sh"
PID_FILE=$AIRFLOW_HOME/standalone.pid  # the session id: the pid of `airflow standalone`, which leads the session
LOG=$AIRFLOW_HOME/standalone.log
STOP_TIMEOUT=${STANDALONE_STOP_TIMEOUT:-60}
ME="standalone.sh"

die() {
  echo "$ME: $*" >&2
  exit 1
}

command -v ps >/dev/null 2>&1 || die "'ps' is missing (it lists the processes to stop); install procps"

session_pids() {  # session id; every process still running in it (task process groups included; not zombies)
  ps -e -o pid=,sid=,stat= | awk -v sid="$1" '$2 == sid && $3 !~ /^Z/ { print $1 }'
}

# The session recorded in the pid file, if it is one of ours still running: some process of it runs airflow (a pid
# file from before a reboot may name a session id now reused by something else).
recorded_session() {
  [ -f "$PID_FILE" ] || return 0
  local sid pids commands
  sid=$(cat "$PID_FILE")
  [[ $sid =~ ^[0-9]+$ ]] || return 0
  pids=$(session_pids "$sid")
  [ -n "$pids" ] || return 0
  commands=$(ps -o args= -p "$(echo "$pids" | paste -sd, -)" || true)
  if [[ $commands == *airflow* ]]; then
    echo "$sid"
  fi
}

wait_until_gone() {  # session id, seconds; true when the session has ended within them
  local deadline=$((SECONDS + $2))
  while [ -n "$(session_pids "$1")" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

signal_session() {  # session id, signal name
  local pids
  pids=$(session_pids "$1")
  [ -z "$pids" ] || kill -s "$2" $pids 2>/dev/null || true
}

start() {
  local sid
  sid=$(recorded_session)
  [ -z "$sid" ] || die "airflow standalone is already running (session $sid); stop it first: $0 stop"
  command -v airflow >/dev/null 2>&1 || die "'airflow' is not on PATH; run scripts/setup.sh, then: source $REPO/.venv/bin/activate"
  # New session (its pid = its session id, kept across exec), SIGINT back to the default so Python turns it into
  # the KeyboardInterrupt on which standalone shuts its components down.
  python3 -c 'import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.setsid(); os.execvp("airflow", ["airflow", "standalone"])' \
    >"$LOG" 2>&1 </dev/null &
  sid=$!
  echo "$sid" >"$PID_FILE"
  local deadline=$((SECONDS + 10))
  until [ -n "$(recorded_session)" ]; do  # the session exists once setsid ran and airflow was exec'd
    kill -0 "$sid" 2>/dev/null || die "airflow standalone exited at once; see $LOG"
    [ "$SECONDS" -lt "$deadline" ] || die "airflow standalone did not start a session within 10 s; see $LOG"
    sleep 0.2
  done
  echo "airflow standalone started (session $sid; log $LOG); the UI is on" \
    "http://localhost:${AIRFLOW__API__PORT:-8080} once the log says it is ready"
  echo "stop it with: $0 stop"
}

stop() {
  local sid
  sid=$(recorded_session)
  if [ -z "$sid" ]; then
    rm -f "$PID_FILE"
    echo "airflow standalone is not running"
    return 0
  fi
  # standalone alone, not its group: it then stops its components with SIGTERM, which they handle (6-25 s here). A
  # SIGINT to the group as well (what Ctrl-C in a terminal sends) leaves the scheduler waiting forever on its
  # LocalExecutor workers, which ignore SIGINT (Airflow 3.3).
  if session_pids "$sid" | grep -x "$sid" >/dev/null && kill -s INT "$sid" 2>/dev/null; then  # not a zombie
    if wait_until_gone "$sid" "$STOP_TIMEOUT"; then
      rm -f "$PID_FILE"
      echo "airflow standalone stopped (session $sid)"
      return 0
    fi
    echo "$ME: airflow standalone still running ${STOP_TIMEOUT}s after SIGINT: sending SIGTERM" >&2
  else  # someone killed standalone itself: what it started is still there, with no one to stop it
    echo "$ME: airflow standalone had exited and left $(session_pids "$sid" | wc -l) processes: sending SIGTERM" >&2
  fi
  signal_session "$sid" TERM
  wait_until_gone "$sid" "$STOP_TIMEOUT" || { signal_session "$sid" KILL; wait_until_gone "$sid" 5 || true; }
  [ -z "$(session_pids "$sid")" ] || die "session $sid still has processes after SIGKILL: $(session_pids "$sid" | paste -sd' ' -)"
  rm -f "$PID_FILE"
  echo "airflow standalone stopped (session $sid), forcibly: see the end of $LOG for what hung"
}

status() {
  local sid
  sid=$(recorded_session)
  if [ -n "$sid" ]; then
    echo "airflow standalone is running (session $sid, $(session_pids "$sid" | wc -l) processes; log $LOG)"
  else
    echo "airflow standalone is not running"
  fi
}

case "${1:-}" in
  start | stop | status) "$1" ;;
  *) die "usage: $0 start|stop|status" ;;
esac
