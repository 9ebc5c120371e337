#!/usr/bin/env bash
# README command one: install everything, then run the validation DAG once on the embedded default
# (SQLite metadata DB, LocalExecutor, generated demo set, committed demo model, ONNX Runtime backend).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source .venv/bin/activate
exec scripts/run_demo_dag.sh "$@"
