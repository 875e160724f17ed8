#!/usr/bin/env bash
# Swarm smoke test (swarm mode): on a single-node swarm this script creates
# (`docker swarm init --advertise-addr 127.0.0.1`) and leaves afterwards,
# deploy deploy/stack.yml, add capacity past the limit from the host, wait
# (polling against a deadline) until every front-end's shard-map is unusable
# with EAGAIN under its Swarm pids limit, check it through `cascade status
# --json` and the Engine API, then remove the orchestrator's service (its
# teardown must remove the services it created), `docker stack rm` the
# rest, and check that no service,
# container or network of the stack is left and that the swarm state is back
# to what it was.
#
# Skips, saying so, when there is no Docker engine, and when this machine is
# already part of a swarm (it only runs on a swarm it creates and leaves).
# Prints the figures: time from `stack deploy` to first impairment, memory of
# the stack at rest and in the cascade.
#
#   scripts/swarm-smoke.sh               (SKIP_IMAGE=1: reuse cascade:local if it exists)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "swarm-smoke: $*"; }

if ! docker info >/dev/null 2>&1; then
  say "skipped: no usable Docker engine (docker info failed)"
  exit 0
fi
swarm_before="$(docker info --format '{{.Swarm.LocalNodeState}}')"
if [[ "$swarm_before" != inactive ]]; then
  say "skipped: this machine is already in a swarm (state: $swarm_before); the test only runs on a single-node swarm it creates and leaves, and will not touch an existing one"
  exit 0
fi
if ! docker stack --help >/dev/null 2>&1; then
  say "skipped: this docker CLI has no \`docker stack\`"
  exit 0
fi

stack="cascade-swarm-$$"
export CASCADE_IMAGE="${CASCADE_IMAGE:-cascade:local}"
export CASCADE_PLAY=none               # capacity is added from the host below
CASCADE_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export CASCADE_TOKEN                   # the host's CLI sends it with add-capacity
cascade=./target/release/cascade
deadline_s="${SMOKE_DEADLINE_S:-300}"
initial=8                              # front-end services in deploy/stack.yml
limit=16                               # their deploy.resources.limits.pids
add=6                                  # 4 base + 13 peers = 17 > 16 once learned
networks_before="$(docker network ls --format '{{.Name}}' | sort)"
logs="$(mktemp -d "${TMPDIR:-/tmp}/cascade-swarm.XXXXXX")"
initialised=0

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
    docker service ls -q --filter "label=com.docker.stack.namespace=$stack" 2>/dev/null
    docker ps -aq --filter "label=com.docker.stack.namespace=$stack"
    docker network ls -q --filter "label=com.docker.stack.namespace=$stack"
    docker network ls -q --filter "name=^${stack}_"
  } | sort -u
}

# Polls (1 s) until nothing of the stack is left, or $1 seconds pass.
wait_gone() {
  local until_s=$(( $(date +%s) + $1 ))
  while [[ -n "$(leftovers)" ]]; do
    (( $(date +%s) > until_s )) && return 1
    sleep 1
  done
}

# Memory of the stack's containers, from `docker stats`.
stack_memory() {
  local ids
  ids="$(docker ps -q --filter "label=com.docker.stack.namespace=$stack")"
  [[ -n "$ids" ]] || { echo "0 MiB in 0 containers"; return; }
  # shellcheck disable=SC2086
  docker stats --no-stream --format '{{.MemUsage}}' $ids | awk '{
    v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
    f = (u == "GiB") ? 1024 : (u == "MiB") ? 1 : (u == "KiB") ? 1 / 1024 : 1 / 1048576
    s += v * f; n++ } END { printf "%.0f MiB in %d containers", s, n }'
}

orchestrator_log() {
  docker service logs --no-task-ids --raw "${stack}_orchestrator" >"$logs/orchestrator.log" 2>&1 || true
}

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    say "FAILED; orchestrator log tail:"
    docker service inspect "${stack}_orchestrator" >/dev/null 2>&1 && orchestrator_log
    tail -n 40 "$logs/orchestrator.log" 2>/dev/null || true
  fi
  if [[ $initialised == 1 ]]; then
    if [[ -n "$(leftovers)" ]]; then
      docker stack rm "$stack" >/dev/null 2>&1 || true
      # The orchestrator's created services carry the stack label, so
      # `stack rm` removes them too; wait for their tasks to go.
      wait_gone 60 || { docker service rm $(docker service ls -q --filter "label=com.docker.stack.namespace=$stack") >/dev/null 2>&1 || true; wait_gone 30 || true; }
    fi
    docker swarm leave --force >/dev/null 2>&1 || true
    # `swarm init` makes docker_gwbridge, and `swarm leave` keeps it.
    if ! grep -qx docker_gwbridge <<<"$networks_before"; then
      docker network rm docker_gwbridge >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$logs"
  exit "$rc"
}
trap cleanup EXIT

# SKIP_IMAGE=1 reuses the image when it exists (.ci/run: compose-smoke.sh has
# just built it), else it is built here.
if [[ "${SKIP_IMAGE:-0}" != 1 ]] || ! docker image inspect "$CASCADE_IMAGE" >/dev/null 2>&1; then
  scripts/build-image.sh "$CASCADE_IMAGE"
fi

say "docker swarm init --advertise-addr 127.0.0.1 (this machine was in no swarm)"
initialised=1
docker swarm init --advertise-addr 127.0.0.1 >"$logs/init.log" 2>&1 || { cat "$logs/init.log"; exit 1; }

# Free loopback ports for the orchestrator's host-mode ports.
read -r CASCADE_CONTROL_PORT CASCADE_KINESIS_AWS_PORT CASCADE_DASHBOARD_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export CASCADE_CONTROL_PORT CASCADE_KINESIS_AWS_PORT CASCADE_DASHBOARD_PORT
export CASCADE_CONTROL="127.0.0.1:$CASCADE_CONTROL_PORT"

say "stack $stack: deploy (control port $CASCADE_CONTROL)"
t0=$(date +%s.%N)
docker stack deploy --resolve-image never -c deploy/stack.yml "$stack" >"$logs/deploy.log" 2>&1 ||
  { cat "$logs/deploy.log"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Polls `cascade status --json` until EXPR holds; prints $2 and fails at the deadline.
status=""
first_impaired=""
wait_for() {
  local expr="$1" what="$2" until_s=$(( $(date +%s) + deadline_s ))
  while :; do
    if status="$("$cascade" status --json 2>/dev/null)"; then
      if [[ -z "$first_impaired" ]] &&
        check 'any(x["name"] == "kinesis" and x["health"] != "serving" for x in s["services"]) or any(f["shard_map"] == "unusable" for f in fe)'; then
        first_impaired="$(elapsed)"
        say "first impairment ${first_impaired} s after \`stack deploy\`"
      fi
      check "$expr" && return 0
    fi
    if (( $(date +%s) > until_s )); then
      say "no $what within ${deadline_s} s; last status:"
      [[ -n "$status" ]] && check '"\n".join("%s node %s threads %s/%s peers %s %s %s" % (f["name"], f.get("node"), f["threads"], f["thread_limit"], f["peers_known"], f["shard_map"], f["detail"]) for f in fe)' || true
      docker service ls --filter "label=com.docker.stack.namespace=$stack" || true
      return 1
    fi
    sleep 1
  done
}

wait_for "len(fe) == $initial and all(f['shard_map'] == 'ready' for f in fe)" "ready fleet of $initial front-ends"
say "fleet of $initial ready $(elapsed) s after deploy"
check 's["mode"] == "swarm" and s["thread_limit"] == {"limit": '$limit', "enforcement": "swarm"}' ||
  { say "status is not swarm mode with limit $limit enforced by swarm: $(check 's["mode"], s["thread_limit"]')"; exit 1; }
check 'all(f.get("node") for f in fe)' || { say "a front-end has no node in status"; exit 1; }
mem_rest="$(stack_memory)"

say "add-capacity $add (fleet $((initial + add)): 4 base threads + $((initial + add - 1)) peers > $limit)"
"$cascade" add-capacity "$add" >"$logs/add.log" 2>&1 || { cat "$logs/add.log"; exit 1; }
wait_for "len(fe) == $((initial + add)) and all(f['shard_map'] == 'unusable' for f in fe)" "cascade (every shard-map unusable)"
say "every shard-map unusable $(elapsed) s after deploy"

# The contract: swarm mode, enforced by each service's Swarm pids limit, the
# kernel refusing threads (EAGAIN, os error 11) in every front-end.
check 'all(f["thread_limit"] == '$limit' and f["spawn_failures"] > 0 and "os error 11" in f["last_spawn_error"] for f in fe)' ||
  { say "not every front-end was refused a thread (EAGAIN) under its limit of $limit"; exit 1; }
check 'all(f.get("node") for f in fe)' || { say "a front-end has no node in status"; exit 1; }
# Every front-end is a Swarm service with that pids limit, and its task's
# container has it as PidsLimit (the cgroup's pids.max).
fleet=0
for name in $(check '" ".join(f["name"] for f in fe)'); do
  svc="${stack}_${name}"
  pids="$(docker service inspect --format '{{.Spec.TaskTemplate.Resources.Limits.Pids}}' "$svc")" ||
    { say "$name is not a Swarm service ($svc)"; exit 1; }
  [[ "$pids" == "$limit" ]] || { say "$svc has Swarm pids limit $pids, not $limit"; exit 1; }
  cid="$(docker ps -q --filter "label=com.docker.swarm.service.name=$svc" | head -n 1)"
  [[ -n "$cid" ]] || { say "$svc has no running container"; exit 1; }
  [[ "$(docker inspect --format '{{.HostConfig.PidsLimit}}' "$cid")" == "$limit" ]] ||
    { say "$svc's container has PidsLimit $(docker inspect --format '{{.HostConfig.PidsLimit}}' "$cid")"; exit 1; }
  fleet=$((fleet + 1))
done
created="$(docker service ls -q --filter "label=io.cascade.created-by=$stack" | wc -l)"
(( created == add )) || { say "$created services created by the orchestrator, expected $add"; exit 1; }
mem_cascade="$(stack_memory)"

# The thread-limit fault in swarm mode is `docker service update` of the
# Swarm pids limit (a new task under it); clearing it restores the limit.
fe_limit() { # SERVICE: "<service pids limit> <running container's PidsLimit>"
  local cid
  cid="$(docker ps -q --filter "label=com.docker.swarm.service.name=$1" | head -n 1)"
  echo "$(docker service inspect --format '{{.Spec.TaskTemplate.Resources.Limits.Pids}}' "$1") $(docker inspect --format '{{.HostConfig.PidsLimit}}' "$cid" 2>/dev/null)"
}
# Polls (1 s, 60 s) until SERVICE's limits read WANT.
wait_limit() {
  local until_s=$(( $(date +%s) + 60 ))
  until [[ "$(fe_limit "$1")" == "$2" ]]; do
    (( $(date +%s) > until_s )) && { say "$1: limits $(fe_limit "$1"), expected $2"; return 1; }
    sleep 1
  done
}
"$cascade" inject thread-limit --target kinesis-frontend-3 --limit 20 >"$logs/inject.log" 2>&1 ||
  { cat "$logs/inject.log"; exit 1; }
wait_limit "${stack}_kinesis-frontend-3" "20 20"
"$cascade" clear >>"$logs/inject.log" 2>&1 || { cat "$logs/inject.log"; exit 1; }
wait_limit "${stack}_kinesis-frontend-3" "$limit $limit"
say "thread-limit fault: Swarm pids limit of kinesis-frontend-3 set to 20 (a new task under it) and restored to $limit"
say "cascade observed: $fleet front-end services ($created created by the orchestrator through the Engine API), every shard-map unusable (EAGAIN under Swarm pids limit $limit)"

# The orchestrator's own teardown first: removing its service sends it
# SIGTERM, and it must remove every service it created (not `stack rm`).
orchestrator_log
say "docker service rm ${stack}_orchestrator (its teardown removes the services it created)"
docker service rm "${stack}_orchestrator" >/dev/null
until_s=$(( $(date +%s) + 60 ))
while [[ -n "$(docker service ls -q --filter "label=io.cascade.created-by=$stack")" ]]; do
  if (( $(date +%s) > until_s )); then
    say "the orchestrator left its created services behind 60 s after SIGTERM:"
    docker service ls --filter "label=io.cascade.created-by=$stack"
    exit 1
  fi
  sleep 1
done
say "docker stack rm $stack"
docker stack rm "$stack" >"$logs/rm.log" 2>&1 || { cat "$logs/rm.log"; exit 1; }
if ! wait_gone 90; then
  say "left behind 90 s after stack rm:"
  leftovers
  exit 1
fi
say "docker swarm leave --force"
docker swarm leave --force >"$logs/leave.log" 2>&1 || { cat "$logs/leave.log"; exit 1; }
if ! grep -qx docker_gwbridge <<<"$networks_before"; then
  docker network rm docker_gwbridge >/dev/null 2>&1 || true
fi
initialised=0
state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
[[ "$state" == "$swarm_before" ]] || { say "swarm state is $state, was $swarm_before"; exit 1; }
networks_after="$(docker network ls --format '{{.Name}}' | sort)"
[[ "$networks_after" == "$networks_before" ]] ||
  { say "networks differ: before [$networks_before] after [$networks_after]"; exit 1; }
say "figures: first impairment ${first_impaired:-?} s after stack deploy; stack memory at rest ${mem_rest}, in the cascade ${mem_cascade}"
say "passed"
