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
if ! .venv/bin/python -m pip install -q -r requirements-dev.txt >/tmp/convmixer-pip.log 2>&1; then
  cat /tmp/convmixer-pip.log >&2
  exit 1
fi
.venv/bin/python -m pip install -q --no-deps -e . >/dev/null 2>&1 || .venv/bin/python -m pip install --no-deps -e .
