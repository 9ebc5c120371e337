#!/usr/bin/env bash
# Create .venv with the pinned development set (requirements-dev.txt = the runtime set of requirements.txt + the test
# and lint tools) and this package (idempotent; a second call takes seconds). The docker images install the runtime
# set only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# The requirements files pin everything (Airflow has no reachable constraints file here); torch==2.13.0 resolves to
# the CPU wheel on this machine kind instead of a multi-GB CUDA build.
# The log lives in this checkout's .venv: two checkouts installing at once never share (or clobber) one file.
LOG=.venv/pip-install.log
echo "setup.sh: installing the pinned requirements into .venv (the first time takes a few minutes; log: $LOG)" >&2
if ! .venv/bin/python -m pip install -q -r requirements-dev.txt >"$LOG" 2>&1; then
  cat "$LOG" >&2
  exit 1
fi
.venv/bin/python -m pip install -q --no-deps -e . >/dev/null 2>&1 || .venv/bin/python -m pip install --no-deps -e .
# `source .venv/bin/activate` also sets this checkout's embedded Airflow (AIRFLOW_HOME=<checkout>/airflow-home, its
# DAG and plugins): the airflow CLI and `convmixer-tasks metrics-show` then find what the demo wrote.
if ! grep -q "scripts/airflow-env.sh" .venv/bin/activate; then
  cat >>.venv/bin/activate <<'EOF'

# convmixer-tasks (added by scripts/setup.sh): this checkout's embedded Airflow, by the one rule in
# scripts/airflow-env.sh (AIRFLOW_HOME=<checkout>/airflow-home unless already set). `deactivate` leaves it set.
CONVMIXER_REPO=$(cd "$(dirname "$VIRTUAL_ENV")" && pwd)
. "$CONVMIXER_REPO/scripts/airflow-env.sh"
EOF
fi
