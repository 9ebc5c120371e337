#!/usr/bin/env bash
# Print the content id of an ais_bench source folder: sha256 over the sorted "sha256  path" lines of its files
# (.git, build outputs and Python caches left out). Every upstream build calls itself ais_bench 0.0.2, so this,
# not the version, says which source an image was built from. docker/Dockerfile.ascend computes the same id in
# its build, refuses a mismatch with the AIS_BENCH_SOURCE_SHA256 it was given, and records it as an image label.
#
#   docker/ais-bench-source-id.sh /path/to/ais_bench
set -euo pipefail
src=${1:?usage: ais-bench-source-id.sh <ais_bench source folder>}
[[ -f $src/setup.py && -f $src/backend/setup.py ]] ||
  { echo "ais-bench-source-id: $src has no setup.py and backend/setup.py: not an ais_bench source folder" >&2; exit 1; }
cd "$src"
find . \( -name .git -o -name build -o -name dist -o -name '*.egg-info' -o -name __pycache__ \) -prune -o -type f -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
