#!/usr/bin/env bash
# Run the whole test suite (slow tests included). Needs PostgreSQL and Redis on 127.0.0.1 (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The browser test drives Debian's Chromium; no browser is downloaded at test time.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser test" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi
# The tool doubles (tests/doubles) run `python3`: the venv's, which has numpy and onnx.
export PATH="$PWD/.venv/bin:$PATH"
# Lint, format and type checks first: cheap, and a finding fails the run like a failing test.
.venv/bin/ruff check convmixer_tasks dags plugins tests bench
.venv/bin/ruff format --check convmixer_tasks dags plugins tests bench
.venv/bin/mypy  # pyproject's [tool.mypy] files: the library, dags, plugins, tests and bench
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
