#!/usr/bin/env bash
# shellcheck disable=SC2015  # "cond && ok … || fail …" is meant: ok and fail only print and count, never fail
# Smoke test of the whole deployment in REAL containers, on a machine without an NPU or a registry: the compose
# stack from docker/docker-compose.yaml with the local TEST STAND-IN bases (docker/standin/build-standin-bases.sh)
# and a FAKE NPU host (docker/standin/make-fake-npu-host.sh: the atc/npu-smi/ais_bench test doubles where the
# toolkit and driver would be, stand-in device nodes owned by a device group). It asserts:
#
#   1. the compose files pass `config` with docker-compose 1.29 (and Compose v2 when installed); 1.29 refuses the
#      v2-only docker-compose.ascend-build.yaml, as documented
#   2. the Airflow image builds through compose from the stand-in base; the NPU image builds from
#      docker/Dockerfile.ascend (ais_bench wheels from a source folder, content id checked and labelled)
#   3. a missing driver path stops the NPU worker from starting and leaves no empty folder on the host
#   4. the stack starts with every container as an arbitrary non-root uid (AIRFLOW_UID, gid 0); three NPU workers on
#      stand-in chips of two types (`[convmixer] chips` = 310P3,910B3,310B1; the fake npu-smi of two reports
#      310P3, of one 910B3) pass the preflight (user name, device access, ATC compile, one ais_bench run), and each
#      serves the queue of the chip its npu-smi reports (read by the entrypoint at preflight, not configured)
#   5. a run asking for 310B1, which no worker serves, fails in check_inputs within seconds, its log naming the chip
#   6. one DAG run over 310P3 and 910B3 with backend=ascend on a READ-ONLY dataset: compile/infer/benchmark of each
#      chip ran in its chip's NPU worker containers (their logs, the task instances' hosts, queues and pools), the
#      rest on the default worker; each ATC call on a chip's worker carried that chip's --soc_version (the atc
#      double's argv log); the two 310P3 infer shards ran on the two 310P3 workers at once (the benchmark waits for
#      the shards, so it cannot take the slot the second shard needs); one metrics row per chip landed `ok`; the
#      metrics page answers only with auth
#   7. `docker compose stop` of the NPU worker that runs a benchmark (its loop count sized from run 1's time per loop
#      to last ~3 min, whatever the load): Celery's warm shutdown begins while the benchmark runs; it then finishes
#      (success, every loop in its task log, its benchmark.json, run 2's metrics row) more than Docker's default
#      10 s after the SIGTERM and inside the grace period, and the worker exits 0
#
# Usage (as root, dockerd running, after scripts/setup.sh: the host side runs this checkout's library with
# .venv/bin/python — the demo set, the run folders' paths): DOCKER=/usr/bin/docker docker/smoke-test.sh
# Output goes to stdout; the stack is removed at the end unless SMOKE_KEEP=1. Settings: SMOKE_DIR (default
# /var/lib/convmixer-smoke), DOCKER, STANDIN_WORK, SMOKE_STOP_BENCH_S (step 6's benchmark length, default 180).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=$repo/.venv/bin/python
if [ ! -x "$python" ]; then
  echo "smoke-test.sh: $python is missing; run scripts/setup.sh first (the host side uses this checkout's library)" >&2
  exit 1
fi
docker_dir=$repo/docker
smoke=${SMOKE_DIR:-/var/lib/convmixer-smoke}
project=convmixer-smoke
export DOCKER=${DOCKER:-docker}
rev=$(git -C "$repo" rev-parse --short=12 HEAD)
api_port=18080
uid=4242  # an arbitrary uid no image knows
# NPU workers airflow-npu-worker, -1, -2 (profiles npu … npu2), one stand-in chip each, and the chip type each
# one's npu-smi double reports (NPU_SMI_DOUBLE_CHIP): two 310P3, so that a run's two 310P3 infer shards run at once
# (step 8), and one 910B3. [convmixer] chips also names 310B1, which nobody serves.
npu_services=(airflow-npu-worker airflow-npu-worker-1 airflow-npu-worker-2)
npu_profiles=(--profile npu --profile npu1 --profile npu2)
npu_chips=(310P3 310P3 910B3)
served_chips=(310P3 910B3)
unserved_chip=310B1
bench_chip=310P3  # the chip whose benchmark step 9 stops a worker under
npu_workers=${#npu_services[@]}
pool_slots=2  # each chip's pool: the most workers one chip has here (310P3)
stop_grace_period=60m  # step 9: what the NPU workers get here
device_ms_per_batch=200  # the stand-in chips' device time per batch (AIS_BENCH_DOUBLE_SLEEP_MS)
stop_bench_s=${SMOKE_STOP_BENCH_S:-180}  # step 9: how long the benchmark that is running during the stop should take
device_gid=1234
started=$SECONDS
failures=0

say() { printf '[%4ss] %s\n' "$((SECONDS - started))" "$*"; }
step() { printf '\n[%4ss] === %s\n' "$((SECONDS - started))" "$*"; }
ok() { say "PASS: $*"; }
fail() {
  say "FAIL: $*"
  failures=$((failures + 1))
}
die() {
  say "FAIL (fatal): $*"
  exit 1
}

# --- compose front ends: docker-compose 1.29 (always here) and Compose v2 (when installed) --------------------------
compose_v1=(docker-compose)
compose_v2=()
if "$DOCKER" compose version >/dev/null 2>&1; then compose_v2=("$DOCKER" compose); fi
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
# docker-compose 1.29 builds with the `docker` it finds on PATH: the same CLI as ours (a newer CLI without the buildx
# plugin refuses DOCKER_BUILDKIT=1; run as DOCKER=/usr/bin/docker with Debian's docker.io).
PATH="$(dirname "$(command -v "$DOCKER")"):$PATH"
# The stack plus the smoke test's own override ($smoke/docker-compose.chips.yaml, written in step 1): per NPU worker,
# the chip its npu-smi double reports and where its atc double logs each call's argv.
dc() { (cd "$docker_dir" && "${compose_v1[@]}" -p "$project" --env-file "$smoke/.env" -f docker-compose.yaml \
  -f "$smoke/docker-compose.chips.yaml" "$@"); }
cname() { echo "${project}_$1_1"; }

# shellcheck disable=SC2317,SC2329  # the EXIT trap calls it
cleanup() {
  if [[ -z ${SMOKE_KEEP:-} ]]; then
    dc "${npu_profiles[@]}" --profile flower down -v --remove-orphans >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "0. tools and stand-in bases"
say "$("$DOCKER" version --format 'docker engine {{.Server.Version}}, client {{.Client.Version}}')"
say "$("${compose_v1[@]}" version --short 2>/dev/null | sed 's/^/docker-compose /')"
((${#compose_v2[@]})) && say "Compose v2: $("${compose_v2[@]}" version --short)" || say "Compose v2: not installed here"
"$docker_dir/standin/build-standin-bases.sh" "${STANDIN_WORK:-/var/lib/convmixer-standin}"

step "1. a fake NPU host and the smoke settings ($smoke)"
rm -rf "$smoke"
mkdir -p "$smoke/work" "$smoke/data" "$smoke/atc-argv"
chmod 0777 "$smoke/atc-argv"  # written by the NPU workers' uid
"$docker_dir/standin/make-fake-npu-host.sh" "$smoke/npu-host" "$npu_workers" "$device_gid"
atc_argv_dir=/opt/convmixer-smoke-atc-argv  # in the NPU worker containers
{
  echo "# docker/smoke-test.sh: each stand-in NPU host's chip type (what its npu-smi double reports), atc argv log and"
  echo "# device time per batch (the ais_bench double's fixed wall time: step 9 sizes a benchmark from run 1's time"
  echo "# per loop, which the host's load alone would make vary 30-fold)"
  echo "services:"
  for index in "${!npu_services[@]}"; do
    printf '  %s:\n    environment:\n      NPU_SMI_DOUBLE_CHIP: "%s"\n      ATC_DOUBLE_ARGV_LOG: %s/%s.jsonl\n' \
      "${npu_services[index]}" "${npu_chips[index]}" "$atc_argv_dir" "${npu_services[index]}"
    printf '      AIS_BENCH_DOUBLE_SLEEP_MS: "%s"\n' "$device_ms_per_batch"
    printf '    volumes:\n      - %s:%s\n' "$smoke/atc-argv" "$atc_argv_dir"
  done
} >"$smoke/docker-compose.chips.yaml"
PYTHONPATH=$repo "$python" -m convmixer_tasks.cli demo-dataset --output "$smoke/data/demo" >/dev/null
chmod -R a+rX,a-w "$smoke/data"
# .env = .env.example + secrets + what this machine needs (stand-in images, the fake host, free loopback ports).
{
  cat "$docker_dir/.env.example"
  cat <<EOF
# --- docker/smoke-test.sh ---
AIRFLOW_UID=$uid
CONVMIXER_REVISION=$rev
CONVMIXER_IMAGE=convmixer-airflow
CONVMIXER_ASCEND_IMAGE=convmixer-airflow-ascend
AIRFLOW_BASE_IMAGE=convmixer-standin/airflow:3.3.2-python3.11
POSTGRES_IMAGE=convmixer-standin/postgres:15
REDIS_IMAGE=convmixer-standin/redis:7
POSTGRES_PASSWORD=smoke-pg-$RANDOM
REDIS_PASSWORD=smoke-redis-$RANDOM
AIRFLOW_FERNET_KEY=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
AIRFLOW_JWT_SECRET=smoke-jwt-$RANDOM$RANDOM
AIRFLOW_API_SECRET_KEY=smoke-api-$RANDOM$RANDOM
_AIRFLOW_WWW_USER_PASSWORD=smoke-admin-$RANDOM
AIRFLOW_API_PUBLISH=127.0.0.1:$api_port
POSTGRES_PUBLISH=127.0.0.1:15432
REDIS_PUBLISH=127.0.0.1:16379
FLOWER_PUBLISH=127.0.0.1:15555
AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=false
AIRFLOW__CONVMIXER__SCHEDULE=
AIRFLOW__CONVMIXER__DEFAULT_BACKEND=ascend
AIRFLOW__CONVMIXER__NPU_POOL_SLOTS=$pool_slots
AIRFLOW__CONVMIXER__CHIPS=$(IFS=,; echo "${served_chips[*]},$unserved_chip")
AIRFLOW__CONVMIXER__BATCH_SIZES=4
AIRFLOW__CONVMIXER__SHARDS=2
DEFAULT_WORKER_CONCURRENCY=2
CONVMIXER_WORK_HOST_DIR=$smoke/work
CONVMIXER_DATA_HOST_DIR=$smoke/data
ASCEND_DEV_HOST_DIR=$smoke/npu-host/dev
ASCEND_DRIVER_HOST_DIR=$smoke/npu-host/driver
ASCEND_INSTALL_INFO=$smoke/npu-host/ascend_install.info
CANN_HOST_DIR=$smoke/npu-host/toolkit
ASCEND_DEVICE_GID=$device_gid
NPU_WORKER_STOP_GRACE_PERIOD=$stop_grace_period
# This machine is shared and often loaded far beyond its cores: the health checks (Python + Airflow imports) need
# far longer than Airflow's 10 s there.
AIRFLOW_HEALTHCHECK_TIMEOUT=120s
AIRFLOW_HEALTHCHECK_START_PERIOD=300s
NPU_WORKER_HEALTHCHECK_START_PERIOD=900s
EOF
} >"$smoke/.env"
admin_password=$(sed -n 's/^_AIRFLOW_WWW_USER_PASSWORD=\(.\+\)$/\1/p' "$smoke/.env" | tail -n 1)
pg_password=$(sed -n 's/^POSTGRES_PASSWORD=\(.\+\)$/\1/p' "$smoke/.env" | tail -n 1)
# "CHIP QUEUE POOL SOC_VERSION" per chip, as the DAG names them: the library's settings read from this .env
chip_routes() {
  PYTHONPATH=$repo "$python" -c '
import sys
from convmixer_tasks.run.fleet import soc_version_of
from convmixer_tasks.run.settings import env_reader, load_scheduling_settings
lines = open(sys.argv[1]).read().splitlines()
env = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
settings = load_scheduling_settings(env_reader(env))
for chip in sys.argv[2:]:
    print(chip, settings.queue_for(chip), settings.pool_for(chip), soc_version_of(chip))' "$smoke/.env" "$@"
}
routes=$(chip_routes "${served_chips[@]}" "$unserved_chip")
route() { awk -v chip="$1" -v field="$2" '$1 == chip { print $field }' <<<"$routes"; }  # route CHIP 2|3|4
say "revision $rev, AIRFLOW_UID=$uid, device group $device_gid, $npu_workers stand-in chips: ${npu_chips[*]}"

step "2. compose files: config with docker-compose 1.29 and Compose v2"
for files in "docker-compose.yaml" "docker-compose.yaml docker-compose.npu-host.yaml" \
  "docker-compose.yaml docker-compose.edge.yaml"; do
  args=()
  for file in $files; do args+=(-f "$file"); done
  if (cd "$docker_dir" && NPU_HOST_NAME=npu-1.example.org "${compose_v1[@]}" --env-file "$smoke/.env" "${args[@]}" \
    "${npu_profiles[@]}" --profile flower config -q); then
    ok "docker-compose 1.29 accepts $files"
  else
    fail "docker-compose 1.29 rejects $files"
  fi
  if ((${#compose_v2[@]})); then
    if (cd "$docker_dir" && NPU_HOST_NAME=npu-1.example.org "${compose_v2[@]}" --env-file "$smoke/.env" "${args[@]}" config -q); then
      ok "Compose v2 accepts $files"
    else
      fail "Compose v2 rejects $files"
    fi
  fi
done
if out=$(cd "$docker_dir" && AIS_BENCH_SRC_DIR=/tmp AIS_BENCH_SOURCE_SHA256=x "${compose_v1[@]}" --env-file "$smoke/.env" \
  -f docker-compose.yaml -f docker-compose.ascend-build.yaml config -q 2>&1); then
  fail "docker-compose 1.29 accepted docker-compose.ascend-build.yaml (documented as v2-only)"
else
  ok "docker-compose 1.29 refuses the v2-only docker-compose.ascend-build.yaml: $(grep -o "unsupported option: '[a-z_]*'" <<<"$out" | head -n 1)"
fi
if ((${#compose_v2[@]})); then
  if (cd "$docker_dir" && AIS_BENCH_SRC_DIR=/tmp AIS_BENCH_SOURCE_SHA256=x "${compose_v2[@]}" --env-file "$smoke/.env" \
    -f docker-compose.yaml -f docker-compose.ascend-build.yaml --profile npu config -q); then
    ok "Compose v2 accepts docker-compose.yaml docker-compose.ascend-build.yaml"
  else
    fail "Compose v2 rejects docker-compose.yaml docker-compose.ascend-build.yaml"
  fi
fi

step "3. build: the Airflow image through compose, the NPU image from docker/Dockerfile.ascend"
dc build airflow-init 2>&1 | tail -n 3
"$DOCKER" image inspect "convmixer-airflow:$rev" >/dev/null || die "compose built no convmixer-airflow:$rev"
label=$("$DOCKER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "convmixer-airflow:$rev")
[[ $label == "$rev" ]] && ok "convmixer-airflow:$rev carries revision label $label" || fail "revision label is '$label'"
if "$DOCKER" run --rm --entrypoint python "convmixer-airflow:$rev" -c 'import pytest' >/dev/null 2>&1; then
  fail "the runtime image has pytest (dev requirements leaked in)"
else
  ok "the runtime image has no pytest (requirements.txt only)"
fi
# Builders without named build contexts (this Docker 20.10): the source and the toolkit come in as images.
printf 'FROM scratch\nCOPY . /\n' >"$smoke/npu-host/Dockerfile.src"
"$DOCKER" build -q -f "$smoke/npu-host/Dockerfile.src" -t convmixer-standin/ais-bench-src:smoke "$smoke/npu-host/ais_bench-src" >/dev/null
printf 'FROM scratch\nCOPY . /usr/local/Ascend/ascend-toolkit/\n' >"$smoke/npu-host/Dockerfile.cann"
"$DOCKER" build -q -f "$smoke/npu-host/Dockerfile.cann" -t convmixer-standin/cann:smoke "$smoke/npu-host/toolkit" >/dev/null
source_id=$("$docker_dir/ais-bench-source-id.sh" "$smoke/npu-host/ais_bench-src")
build_ascend() {
  (cd "$repo" && "$DOCKER" build -f docker/Dockerfile.ascend -t "convmixer-airflow-ascend:$rev" \
    --build-arg "CONVMIXER_IMAGE=convmixer-airflow:$rev" --build-arg "CONVMIXER_REVISION=$rev" \
    --build-arg AIS_BENCH_SRC_IMAGE=convmixer-standin/ais-bench-src:smoke \
    --build-arg CANN_IMAGE=convmixer-standin/cann:smoke --build-arg "AIS_BENCH_SOURCE_SHA256=$1" \
    --build-arg AIS_BENCH_SOURCE_COMMIT=smoke-test-double .)
}
if out=$(build_ascend "0000000000000000000000000000000000000000000000000000000000000000" 2>&1); then
  fail "Dockerfile.ascend accepted a wrong AIS_BENCH_SOURCE_SHA256"
else
  grep -q "pass --build-arg AIS_BENCH_SOURCE_SHA256=$source_id" <<<"$out" &&
    ok "Dockerfile.ascend refuses a wrong AIS_BENCH_SOURCE_SHA256 and names the right one" ||
    fail "wrong AIS_BENCH_SOURCE_SHA256 failed for another reason: $(tail -n 5 <<<"$out")"
fi
build_ascend "$source_id" 2>&1 | tail -n 3
labels=$("$DOCKER" image inspect -f '{{json .Config.Labels}}' "convmixer-airflow-ascend:$rev")
grep -q "\"org.convmixer.ais-bench.source-sha256\":\"$source_id\"" <<<"$labels" &&
  ok "convmixer-airflow-ascend:$rev labels the ais_bench source $source_id" || fail "labels: $labels"

step "4. infrastructure and airflow-init"
dc up -d postgres redis 2>&1 | tail -n 2
dc up airflow-init 2>&1 | tail -n 8
code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$(cname airflow-init)")
[[ $code == 0 ]] && ok "airflow-init exited 0" || die "airflow-init exited $code"

step "5. a missing driver path must not become an empty folder"
missing_root=$smoke/no-driver-here
sed "s#^ASCEND_DRIVER_HOST_DIR=.*#ASCEND_DRIVER_HOST_DIR=$missing_root#" "$smoke/.env" >"$smoke/.env.missing-driver"
if out=$(cd "$docker_dir" && "${compose_v1[@]}" -p "$project" --env-file "$smoke/.env.missing-driver" --profile npu \
  run --rm --no-deps airflow-npu-worker check 2>&1); then
  fail "the NPU worker started without the driver mounts"
else
  say "refused: $(grep -io 'bind source path does not exist[^"]*' <<<"$out" | head -n 1)"
  [[ ! -e $missing_root ]] && ok "no folder was created at $missing_root" || fail "$missing_root was created"
fi

step "6. the stack, with $npu_workers NPU workers (${npu_profiles[*]}) on chips ${npu_chips[*]}, every container as uid $uid"
dc "${npu_profiles[@]}" up -d 2>&1 | tail -n 14
wait_healthy() {  # wait_healthy SERVICE SECONDS
  local deadline=$((SECONDS + $2)) state
  while ((SECONDS < deadline)); do
    state=$("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$(cname "$1")" 2>/dev/null || echo missing)
    [[ $state == healthy ]] && return 0
    sleep 5
  done
  say "$1 is $state after $2 s; its log:"
  "$DOCKER" logs --tail 40 "$(cname "$1")" 2>&1 | sed 's/^/    /'
  return 1
}
for service in airflow-apiserver airflow-scheduler airflow-worker "${npu_services[@]}"; do
  wait_healthy "$service" 1200 && ok "$service healthy" || die "$service not healthy"
done
for service in "${npu_services[@]}"; do
  container=$(cname "$service")
  # shellcheck disable=SC2016  # expanded in the container
  who=$("$DOCKER" exec "$container" sh -c 'echo "$(id -u):$(id -g) $(id -un)"')
  [[ $who == "$uid:0 default" ]] && ok "$service runs as uid $uid, gid 0, named '$(cut -d' ' -f2 <<<"$who")'" ||
    fail "$service runs as '$who'"
  preflight=$("$DOCKER" logs "$container" 2>&1 | grep 'ascend-preflight: ok' | tail -n 1 || true)
  [[ -n $preflight ]] && ok "$service preflight: ${preflight#*ok: }" || fail "$service: no preflight line in its log"
done
# Nothing names a worker's chip in its settings (NPU_WORKER_CHIP and NPU_WORKER_QUEUES are empty): the entrypoint
# reads it from npu-smi at preflight and serves that chip's queue beside the untyped one.
for index in "${!npu_services[@]}"; do
  service=${npu_services[index]}
  chip=${npu_chips[index]}
  serving=$("$DOCKER" logs "$(cname "$service")" 2>&1 | grep -o 'ascend-entrypoint: chip .*: serving queues .*' | tail -n 1 || true)
  say "$service: ${serving:-no 'serving queues' line}"
  [[ ${serving#ascend-entrypoint: } == "chip $chip: serving queues "*",$(route "$chip" 2)" ]] &&
    ok "$service read chip $chip from its npu-smi and serves queue $(route "$chip" 2)" ||
    fail "$service does not serve $(route "$chip" 2) (its npu-smi reports $chip)"
done

step "7. a run for chip $unserved_chip, which no worker serves, fails in check_inputs within seconds"
api() {  # api METHOD PATH [JSON] -> body; status in $api_status
  local out
  out=$(python3 - "$@" <<'PY'
import json, os, sys, urllib.request, urllib.error
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
request = urllib.request.Request(f"http://127.0.0.1:{os.environ['API_PORT']}{path}", data=body, method=method)
request.add_header("Content-Type", "application/json")
if os.environ.get("API_TOKEN"):
    request.add_header("Authorization", "Bearer " + os.environ["API_TOKEN"])
try:
    with urllib.request.urlopen(request, timeout=60) as response:
        print(response.status); print(response.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
PY
  )
  api_status=$(head -n 1 <<<"$out")
  tail -n +2 <<<"$out"
}
export API_PORT=$api_port API_TOKEN=
token_json=$(api POST /auth/token "{\"username\": \"airflow\", \"password\": \"$admin_password\"}")
API_TOKEN=$(python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["access_token"])' <<<"$token_json") ||
  die "no token from /auth/token ($api_status): $token_json"
export API_TOKEN
for _ in $(seq 60); do
  api GET /api/v2/dags/convmixer_validation >/dev/null
  [[ $api_status == 200 ]] && break
  sleep 5
done
[[ $api_status == 200 ]] || die "the DAG did not appear in the api-server ($api_status)"
api PATCH /api/v2/dags/convmixer_validation '{"is_paused": false}' >/dev/null
trigger() {  # trigger CONF_JSON -> dag_run_id
  local body
  body=$(api POST /api/v2/dags/convmixer_validation/dagRuns "{\"logical_date\": null, \"conf\": $1}")
  [[ $api_status == 200 ]] || die "trigger failed ($api_status): $body"
  python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["dag_run_id"])' <<<"$body"
}
run_state() { api GET "/api/v2/dags/convmixer_validation/dagRuns/$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["state"])'; }
wait_run() {  # wait_run RUN_ID SECONDS -> final state
  local deadline=$((SECONDS + $2)) state=queued
  while ((SECONDS < deadline)); do
    state=$(run_state "$1")
    [[ $state == success || $state == failed ]] && break
    sleep 10
  done
  echo "$state"
}
task_instances() { api GET "/api/v2/dags/convmixer_validation/dagRuns/$1/taskInstances?limit=100"; }
# throughput_max_cv_pct at its maximum: on this shared machine the per-loop times of any benchmark scatter far beyond
# the default CV, and the gate would rightly call the throughput 'inconclusive' instead of recording an `ok` row.
conf='{"backend": "ascend", "batch_sizes": [4], "throughput_max_cv_pct": 1000, "dataset_dir": "/opt/airflow/convmixer-data/demo/images", "label_file": "/opt/airflow/convmixer-data/demo/val_label.txt"}'
with_chips() { python3 -c 'import json, sys; print(json.dumps({**json.loads(sys.argv[1]), "chips": sys.argv[2:]}))' "$@"; }
unserved_run=$(trigger "$(with_chips "$conf" "$unserved_chip")")
say "triggered $unserved_run (chips [$unserved_chip])"
state=$(wait_run "$unserved_run" 300)
check=$(task_instances "$unserved_run" | python3 -c 'import json, sys
from datetime import datetime
npu = {"compile_model", "infer", "benchmark"}
tis = json.load(sys.stdin)["task_instances"]
(check,) = [ti for ti in tis if ti["task_id"] == "check_inputs"]
took = (datetime.fromisoformat(check["end_date"]) - datetime.fromisoformat(check["start_date"])).total_seconds() if check["end_date"] else -1
ran = [ti["task_id"] for ti in tis if ti["task_id"].split(".")[-1] in npu and ti["state"] not in (None, "skipped", "upstream_failed", "removed")]
print(check["state"], round(took, 1), ",".join(ran) or "-")' || echo "unknown -1 ?")
read -r check_state check_s npu_ran <<<"$check"
say "run $unserved_run: $state; check_inputs $check_state after $check_s s; NPU tasks started: $npu_ran"
[[ $state == failed && $check_state == failed && $npu_ran == - ]] &&
  ok "the run for chip $unserved_chip failed in check_inputs, no NPU task started" ||
  fail "the run for chip $unserved_chip: run $state, check_inputs $check_state, NPU tasks started: $npu_ran"
python3 -c 'import sys; sys.exit(not 0 <= float(sys.argv[1]) < 30)' "$check_s" &&
  ok "check_inputs failed within seconds ($check_s s from its start; the Celery inspect waits 3 s)" ||
  fail "check_inputs took $check_s s"
check_log=$(api GET "/api/v2/dags/convmixer_validation/dagRuns/$unserved_run/taskInstances/check_inputs/logs/1?full_content=true")
named="no live worker serves chip $unserved_chip (queue '$(route "$unserved_chip" 2)')"
grep -qF "$named" <<<"$check_log" && ok "its log names the chip: '$named; start an NPU worker …'" ||
  fail "check_inputs' log ($api_status) lacks \"$named\": $(tail -c 600 <<<"$check_log")"

step "8. one DAG run over chips ${served_chips[*]} with backend=ascend, dataset read-only from the data folder"
# Each worker's atc argv log so far holds its preflight's compile: what this run adds is the run's.
declare -A atc_calls_before=()
for service in "${npu_services[@]}"; do
  atc_calls_before[$service]=$(wc -l 2>/dev/null <"$smoke/atc-argv/$service.jsonl" || echo 0)
done
run1=$(trigger "$(with_chips "$conf" "${served_chips[@]}")")
say "triggered $run1"
state=$(wait_run "$run1" 1500)
say "run $run1: $state"
tis=$(task_instances "$run1")
python3 - "$tis" <<'PY'
import json, sys
for ti in sorted(json.loads(sys.argv[1])["task_instances"], key=lambda t: (t["start_date"] or "", t["map_index"])):
    print(f"    {ti['task_id']:<28} map {ti['map_index']:>2}  {ti['state'] or '-':<14} host {ti['hostname'] or '-':<14} "
          f"queue {ti['queue']:<10} {ti['start_date'] or ''} -> {ti['end_date'] or ''}")
PY
[[ $state == success ]] && ok "run 1 succeeded" || fail "run 1 ended $state"

# "container-hostname chip" of the NPU workers; each chip's queue and pool are the library's names ($routes)
npu_hosts=$(for index in "${!npu_services[@]}"; do
  echo "$("$DOCKER" inspect -f '{{.Config.Hostname}}' "$(cname "${npu_services[index]}")") ${npu_chips[index]}"
done)
default_host=$("$DOCKER" inspect -f '{{.Config.Hostname}}' "$(cname airflow-worker)")
placement=$(python3 - "$tis" "$npu_hosts" "$default_host" "$routes" "${served_chips[*]}" "$bench_chip" <<'PY'
import json, sys
from datetime import datetime
tis = json.loads(sys.argv[1])["task_instances"]
chip_of_host = dict(line.split() for line in sys.argv[2].splitlines())
default_host = sys.argv[3]
routes = {line.split()[0]: line.split()[1:3] for line in sys.argv[4].splitlines()}
served, shard_chip = sys.argv[5].split(), sys.argv[6]
npu_tasks = {"compile_model", "infer", "benchmark"}
problems = []
npu_ran = {chip: [] for chip in served}
for ti in tis:
    if ti["state"] != "success":
        continue
    group, _, step = ti["task_id"].rpartition(".")
    name = f"{ti['task_id']}[{ti['map_index']}]"
    if step not in npu_tasks:
        if ti["hostname"] != default_host:
            problems.append(f"{name} ran on {ti['hostname']}")
        continue
    chip = group.removeprefix("chip_")
    if chip not in npu_ran:
        problems.append(f"{name} ran for chip {chip!r}, not one of {served}")
        continue
    npu_ran[chip].append(step)
    if chip_of_host.get(ti["hostname"]) != chip:
        problems.append(f"{name} ran on {ti['hostname']} (chip {chip_of_host.get(ti['hostname'])})")
    if [ti["queue"], ti["pool"]] != routes[chip]:
        problems.append(f"{name} had queue {ti['queue']}, pool {ti['pool']}")
for chip, steps in npu_ran.items():
    if sorted(steps) != ["benchmark", "compile_model", "infer", "infer"]:
        problems.append(f"chip {chip}: successful NPU tasks {sorted(steps)}")
print("placement " + ("ok" if not problems else "; ".join(problems)))
infers = [ti for ti in tis if ti["task_id"] == f"chip_{shard_chip}.infer" and ti["state"] == "success"]
if len(infers) == 2:
    a, b = (sorted((datetime.fromisoformat(t["start_date"]), datetime.fromisoformat(t["end_date"])) for t in infers))
    overlap = (min(a[1], b[1]) - max(a[0], b[0])).total_seconds()
    hosts = {t["hostname"] for t in infers}
    print(f"shards {len(hosts)} hosts overlap {overlap:.1f}")
else:
    print(f"shards {len(infers)} successful infer tasks")
PY
)
say "$placement"
grep -q "^placement ok$" <<<"$placement" &&
  ok "each chip's compile/infer/benchmark ran on that chip's NPU workers (its queue and pool), the rest on the default worker" ||
  fail "task placement: $placement"
if grep -Eq "^shards 2 hosts overlap [0-9]" <<<"$placement" && ! grep -q "overlap -" <<<"$placement"; then
  ok "the two $bench_chip infer shards ran on two NPU workers at the same time"
else
  fail "the two $bench_chip infer shards did not run at once on two workers: $(grep '^shards' <<<"$placement")"
fi
# Every ATC call on a chip's workers (the atc double's argv log) compiled for that chip, and the run compiled on each.
for chip in "${served_chips[@]}"; do
  soc=$(route "$chip" 4)
  calls=0 run_calls=0 wrong=0
  for index in "${!npu_services[@]}"; do
    [[ ${npu_chips[index]} == "$chip" ]] || continue
    service=${npu_services[index]}
    argv_log=$smoke/atc-argv/$service.jsonl
    [[ -f $argv_log ]] || continue
    count=$(wc -l <"$argv_log")
    calls=$((calls + count))
    run_calls=$((run_calls + count - ${atc_calls_before[$service]}))
    wrong=$((wrong + $(grep -vcF "\"--soc_version=$soc\"" "$argv_log" || true)))
  done
  say "chip $chip: $calls ATC calls on its workers ($run_calls by run 1), $wrong without --soc_version=$soc"
  ((calls > 0 && run_calls > 0 && wrong == 0)) && ok "each ATC call on the $chip workers carried --soc_version=$soc" ||
    fail "ATC on the $chip workers: $calls calls, $run_calls by run 1, $wrong without --soc_version=$soc"
done
for service in "${npu_services[@]}"; do
  seen=$("$DOCKER" logs "$(cname "$service")" 2>&1 | grep -oE "task_id='(compile_model|infer|benchmark)'|(compile_model|infer|benchmark)" | sort -u | paste -sd' ' || true)
  say "$service log mentions: ${seen:-nothing}"
done
npu_log_tasks=$(for service in "${npu_services[@]}"; do "$DOCKER" logs "$(cname "$service")" 2>&1; done |
  grep -oE "compile_model|infer|benchmark" | sort -u | paste -sd' ' || true)
[[ $npu_log_tasks == "benchmark compile_model infer" ]] && ok "the NPU workers' logs show compile_model, infer and benchmark" ||
  fail "the NPU workers' logs show only: '$npu_log_tasks'"
default_log=$("$DOCKER" logs "$(cname airflow-worker)" 2>&1 | grep -oE "compile_model|[.']infer'|benchmark" | sort -u | paste -sd' ' || true)
[[ -z $default_log ]] && ok "the default worker's log shows no NPU task" || fail "the default worker's log shows: $default_log"
metrics_sql() { "$DOCKER" exec -e PGPASSWORD="$pg_password" "$(cname postgres)" psql -h 127.0.0.1 -U airflow -d convmixer_metrics -tA -c "$1" 2>&1 || true; }
rows=$(metrics_sql "SELECT chip, device, backend, batch_size, status, top1 FROM convmixer_validation_runs WHERE run_id = '$run1' ORDER BY chip")
say "metrics rows of $run1: ${rows//$'\n'/; }"
expected_rows=$(for chip in "${served_chips[@]}"; do echo "$chip|$(route "$chip" 4)|ascend|4|ok"; done | sort)
[[ $(cut -d'|' -f1-5 <<<"$rows" | sort) == "$expected_rows" ]] && ok "one metrics row per chip landed ok: ${served_chips[*]}" ||
  fail "run 1's metrics rows are not one ok row per chip ${served_chips[*]}"
API_TOKEN='' api GET /convmixer-metrics/api/runs >/dev/null
anonymous=$api_status
api GET "/convmixer-metrics/api/runs" >"$smoke/metrics-api.json"
[[ $anonymous =~ ^40[13]$ && $api_status == 200 ]] && ok "metrics page API: $anonymous without a token, 200 with one" ||
  fail "metrics page API: $anonymous without a token, $api_status with one"
grep -q "$run1" "$smoke/metrics-api.json" && ok "the metrics API lists run 1" || fail "the metrics API does not list run 1"
writable=$(find "$smoke/data" -newer "$smoke/.env" | head -n 3)
[[ -z $writable ]] && ok "nothing was written into the read-only data folder" || fail "changed in the data folder: $writable"

step "9. docker compose stop lets a running NPU task finish"
# The benchmark must still be running when the SIGTERM comes and must end inside the grace period, whatever this
# machine's load: its loop count comes from run 1's measured time per loop here, aiming at stop_bench_s seconds, a
# twentieth of the grace period. Re-measuring is off so that it runs exactly once.
loop_ms=$(metrics_sql "SELECT latency_mean_ms FROM convmixer_validation_runs WHERE run_id = '$run1' AND backend = 'ascend' AND chip = '$bench_chip'")
[[ $loop_ms =~ ^[0-9.e+-]+$ ]] || die "no latency_mean_ms in run 1's metrics row: '$loop_ms'"
loops=$(python3 -c 'import math, sys; print(min(100000, max(500, math.ceil(float(sys.argv[1]) * 1000 / float(sys.argv[2])))))' \
  "$stop_bench_s" "$loop_ms")
say "run 1 measured $loop_ms ms per loop: benchmark_loop $loops for ~${stop_bench_s} s"
run2=$(trigger "$(python3 -c 'import json, sys; print(json.dumps({**json.loads(sys.argv[1]), "benchmark_loop": int(sys.argv[2]), "benchmark_remeasure": 0}))' "$(with_chips "$conf" "$bench_chip")" "$loops")")
say "triggered $run2 (chips [$bench_chip])"
bench_task=chip_$bench_chip.benchmark
benchmark_field() {  # benchmark_field FIELD -> the run-2 benchmark task instance's FIELD
  task_instances "$run2" | python3 -c 'import json, sys
for ti in json.load(sys.stdin)["task_instances"]:
    if ti["task_id"] == sys.argv[2]: print(ti[sys.argv[1]] or "-")' "$1" "$bench_task"
}
bench_host=
for _ in $(seq 240); do
  [[ $(benchmark_field state) == running ]] && bench_host=$(benchmark_field hostname) && break
  sleep 3
done
[[ -n $bench_host ]] || die "benchmark of run 2 never ran"
for service in "${npu_services[@]}"; do
  [[ $("$DOCKER" inspect -f '{{.Config.Hostname}}' "$(cname "$service")") == "$bench_host" ]] && bench_service=$service
done
bench_container=$(cname "$bench_service")
say "benchmark running on $bench_service ($bench_host); docker-compose stop $bench_service"
stop_started=$SECONDS
sigterm_epoch=$(date +%s.%N)
dc stop "$bench_service" >"$smoke/stop.log" 2>&1 &
stop_pid=$!
# Proof that the stop reached a worker that was busy: Celery logs its warm shutdown while the task is still running.
for _ in $(seq 60); do
  "$DOCKER" logs "$bench_container" 2>&1 | grep -q "Warm shutdown" && break
  sleep 2
done
state_at_shutdown=$(benchmark_field state)
say "$("$DOCKER" logs "$bench_container" 2>&1 | grep -m 1 -o "Warm shutdown.*" || echo "no warm shutdown logged")," \
  "benchmark $state_at_shutdown, container $("$DOCKER" inspect -f '{{.State.Status}}' "$bench_container")"
[[ $state_at_shutdown == running ]] && ok "Celery's warm shutdown began while the benchmark was running" ||
  fail "the benchmark was '$state_at_shutdown' when the warm shutdown began: the stop did not meet a running task"
wait "$stop_pid" || true
tail -n 1 "$smoke/stop.log"
say "stop returned after $((SECONDS - stop_started)) s"
bench_state=$(benchmark_field state)
bench_end=$(benchmark_field end_date)
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$bench_container")
[[ $bench_state == success ]] && ok "the benchmark that was running finished: $bench_state" ||
  fail "the benchmark that was running is '$bench_state' after stop"
[[ $exit_code == 0 ]] && ok "$bench_service exited 0 (warm shutdown)" || fail "$bench_service exited $exit_code"
after_term=$(python3 -c 'import sys; from datetime import datetime
print(round(datetime.fromisoformat(sys.argv[1]).timestamp() - float(sys.argv[2])))' "$bench_end" "$sigterm_epoch" 2>/dev/null ||
  echo "?")
[[ $after_term =~ ^[0-9]+$ ]] && ((after_term > 10)) &&
  ok "the benchmark ended $after_term s after the SIGTERM: beyond Docker's default 10 s, inside the $stop_grace_period grace period" ||
  fail "the benchmark ended $after_term s after the SIGTERM (end $bench_end): that does not show the grace period"
bench_log=$(api GET "/api/v2/dags/convmixer_validation/dagRuns/$run2/taskInstances/$bench_task/logs/1?map_index=0&full_content=true")
completed="ais_bench benchmark (batch 4): $loops/$loops batch runs (100%)"
grep -qF "$completed" <<<"$bench_log" && ok "its task log shows all loops done: '$completed'" ||
  fail "its task log ($api_status) lacks '$completed'"
# Where the run's folder is comes from the library (the chip's own folder under the work folder; the layout names the
# run slug and the effective precision mode).
chip_work=$(PYTHONPATH=$repo "$python" -c 'import sys; from convmixer_tasks.run.fleet import chip_work_dir; print(chip_work_dir(*sys.argv[1:]))' "$smoke/work" "$bench_chip")
bench_json=$(PYTHONPATH=$repo "$python" -m convmixer_tasks.run.workdir benchmark-json "$chip_work" "$run2" 4 ascend)
bench_loop=$(python3 -c 'import json, sys; b = json.load(open(sys.argv[1])); print(b["loop"], b["throughput"])' "$bench_json" 2>&1 || true)
[[ ${bench_loop%% *} == "$loops" ]] && ok "its output exists: $bench_json (loop ${bench_loop% *}, ${bench_loop#* } images/s)" ||
  fail "its output $bench_json: $bench_loop"
after_shutdown=$("$DOCKER" logs "$bench_container" 2>&1 | sed -n '/Warm shutdown/,$p' | grep -E "execute_workload\[.*\] (succeeded|failed|raised)" || true)
printf '    %s\n' "${after_shutdown//$'\n'/$'\n    '}"
grep -q "succeeded" <<<"$after_shutdown" && ok "Celery logged the task succeeded after its warm shutdown began" ||
  fail "no task succeeded in $bench_service's log after its warm shutdown"
# The rest of run 2 (evaluate, record_metrics, the gate) is the default worker's.
# (Its gate may fail: the doubles' throughput on a loaded machine is no steady history.) The row it records must
# carry the throughput of the benchmark that outlived the stop.
say "run $run2: $(wait_run "$run2" 900)"
rows2=$(metrics_sql "SELECT backend, batch_size, status, throughput FROM convmixer_validation_runs WHERE run_id = '$run2' AND chip = '$bench_chip'")
say "metrics rows of $run2: ${rows2//$'\n'/; }"
python3 -c 'import sys; backend, batch, status, value = sys.argv[1].split("|"); sys.exit(not (backend, batch) == ("ascend", "4")
    or status not in ("ok", "regressed") or abs(float(value) - float(sys.argv[2])) > 1e-6 * float(sys.argv[2]))' \
  "$rows2" "${bench_loop#* }" 2>/dev/null && ok "run 2's metrics row landed, gated, with that benchmark's throughput" ||
  fail "run 2's metrics row does not carry the benchmark's throughput ${bench_loop#* }"

step "done in $((SECONDS - started)) s: $failures failure(s)"
exit $((failures > 0))
