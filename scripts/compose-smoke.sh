#!/usr/bin/env bash
# Compose smoke test (live mode): build the image offline, `compose up` with a
# project name unique to this run, wait (polling against a deadline) until
# the orchestrator has started new front-end containers and every front-end's
# shard-map is unusable, check it through `cascade status --json` from the
# host, then `compose down` and check that no container, network or volume of
# the project is left. Skips, with a message, when there is no Docker engine.
# Prints the figures: image size, time from `up` to first impairment, memory.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "compose-smoke: skipped: no usable Docker engine (docker info failed)"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  echo "compose-smoke: skipped: neither \`docker compose\` nor docker-compose is installed"
  exit 0
fi

project="cascade-smoke-$$-$(date +%s)"
export COMPOSE_PROJECT_NAME="$project"
export CASCADE_CONTROL_PORT=""          # any free loopback port
export CASCADE_KINESIS_AWS_PORT=""      # (the AWS endpoint and the dashboard too)
export CASCADE_DASHBOARD_PORT=""
export CASCADE_IMAGE="${CASCADE_IMAGE:-cascade:local}"
cascade=./target/release/cascade
deadline_s="${SMOKE_DEADLINE_S:-240}"
logs="$(mktemp -d "${TMPDIR:-/tmp}/cascade-smoke.XXXXXX")"

# check EXPR: exit 0 when the Python expression EXPR holds for the status
# document `s` (and front-ends `fe`) in $status.
check() {
  python3 -c 'import json, sys
s = json.loads(sys.stdin.read()); fe = s["frontends"]
v = eval(sys.argv[1])
if isinstance(v, bool): sys.exit(0 if v else 1)
print(v)' "$1" <<<"$status"
}

leftovers() {
  {
    docker ps -aq --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "label=com.docker.compose.project=$project"
    docker network ls -q --filter "name=^${project}_"
    docker volume ls -q --filter "label=com.docker.compose.project=$project"
  } | sort -u
}

cleanup() {
  local rc=$?
  if [[ -n "$(leftovers)" ]]; then
    "${compose[@]}" down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
  fi
  if [[ $rc -ne 0 ]]; then
    echo "compose-smoke: FAILED; orchestrator log tail:"
    tail -n 40 "$logs/orchestrator.log" 2>/dev/null || true
  fi
  rm -rf "$logs"
}
trap cleanup EXIT

scripts/build-image.sh "$CASCADE_IMAGE"
image_mib=$(( $(docker image inspect --format '{{.Size}}' "$CASCADE_IMAGE") / 1024 / 1024 ))

echo "compose-smoke: project $project: up"
t0=$(date +%s.%N)
"${compose[@]}" up -d >"$logs/up.log" 2>&1 || { cat "$logs/up.log"; exit 1; }
port="$("${compose[@]}" port orchestrator 7700 | tail -n 1)"
export CASCADE_CONTROL="$port"
echo "compose-smoke: orchestrator control port $CASCADE_CONTROL"

first_impaired=""
status=""
until_s=$(( $(date +%s) + deadline_s ))
while :; do
  if status="$("$cascade" status --json 2>/dev/null)"; then
    now=$(date +%s.%N)
    if [[ -z "$first_impaired" ]] &&
      check 'any(x["name"] == "kinesis" and x["health"] != "serving" for x in s["services"])'; then
      first_impaired=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
      echo "compose-smoke: Kinesis impaired ${first_impaired} s after \`up\`"
    fi
    if check 'len(fe) > 8 and all(f["shard_map"] == "unusable" for f in fe)'; then
      break
    fi
  fi
  if (( $(date +%s) > until_s )); then
    echo "compose-smoke: no cascade within ${deadline_s} s; last status:"
    check '"\n".join("%s threads %s/%s peers %s %s" % (f["name"], f["threads"], f["thread_limit"], f["peers_known"], f["shard_map"]) for f in fe)' || true
    "${compose[@]}" logs --no-color orchestrator >"$logs/orchestrator.log" 2>&1 || true
    exit 1
  fi
  sleep 1
done
"${compose[@]}" logs --no-color orchestrator >"$logs/orchestrator.log" 2>&1 || true

# The contract: docker mode, enforced by the containers' pids_limit, the
# kernel refusing threads, and front-ends that are real containers.
check 's["mode"] == "docker" and s["thread_limit"] == {"limit": 16, "enforcement": "docker"}' ||
  { echo "compose-smoke: status is not docker mode with limit 16 enforced by docker"; exit 1; }
check 'all(f["thread_limit"] == 16 and f["spawn_failures"] > 0 and "os error 11" in f["last_spawn_error"] for f in fe)' ||
  { echo "compose-smoke: not every front-end was refused a thread (EAGAIN) under its limit of 16"; exit 1; }
fleet=$(check 'len(fe)')
added=$(docker ps -q --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.service=kinesis-frontend-added" | wc -l)
if (( added < fleet - 8 )); then
  echo "compose-smoke: $fleet front-ends in status, but only $added added containers"
  exit 1
fi
mem_mib=$(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' |
  awk -v p="$project" 'index($1, p) == 1 {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
    f = (u == "GiB") ? 1024 : (u == "MiB") ? 1 : (u == "KiB") ? 1 / 1024 : 1 / 1048576
    s += v * f; n++ } END { printf "%.0f MiB in %d containers", s, n }')
echo "compose-smoke: cascade observed: $fleet front-ends ($added started by the orchestrator through the Docker API), every shard-map unusable (EAGAIN under pids_limit 16)"

echo "compose-smoke: down"
"${compose[@]}" down --timeout 30 >"$logs/down.log" 2>&1 || { cat "$logs/down.log"; exit 1; }
left="$(leftovers)"
if [[ -n "$left" ]]; then
  echo "compose-smoke: left behind after down:"
  echo "$left"
  exit 1
fi
echo "compose-smoke: figures: image ${image_mib} MiB; first impairment ${first_impaired:-?} s after up; topology memory ${mem_mib}"
echo "compose-smoke: passed"
