#!/usr/bin/env bash
# The largest fleet this node runs in swarm mode (docs/swarm.md, "Measured"):
# on a single-node swarm it creates and leaves, deploy deploy/stack.yml with
# every front-end's pids limit (and --thread-limit) set to L, then add
# capacity step by step up to the host cap, and at each size wait (polling
# against a deadline) until every front-end's shard map is ready and the
# fleet holds N*(N-1) peer threads: a full mesh, under Swarm pids limits.
# Prints the largest N whose mesh formed, and the time and stack memory at
# each size. Not part of CI (it takes several minutes and both cores).
#
#   scripts/swarm-largest.sh [SIZES...]    (default: 16 32 64 96 126; L = last size + 4)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "swarm-largest: $*"; }

docker info >/dev/null 2>&1 || { say "no usable Docker engine"; exit 1; }
[[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" == inactive ]] ||
  { say "this machine is already in a swarm; this script only uses one it creates"; exit 1; }
sizes=("${@:-16 32 64 96 126}")
read -r -a sizes <<<"${sizes[*]}"
limit=$(( sizes[${#sizes[@]} - 1] + 4 ))
step_deadline_s="${STEP_DEADLINE_S:-300}"
stack="cascade-largest-$$"
export CASCADE_IMAGE="${CASCADE_IMAGE:-cascade:local}" CASCADE_PLAY=none
CASCADE_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export CASCADE_TOKEN
cascade=./target/release/cascade
networks_before="$(docker network ls --format '{{.Name}}' | sort)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cascade-largest.XXXXXX")"

cleanup() {
  local rc=$?
  docker stack rm "$stack" >/dev/null 2>&1 || true
  local until_s=$(( $(date +%s) + 120 ))
  while [[ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")$(docker network ls -q --filter "name=^${stack}_")" ]] &&
    (( $(date +%s) < until_s )); do sleep 1; done
  docker swarm leave --force >/dev/null 2>&1 || true
  grep -qx docker_gwbridge <<<"$networks_before" || docker network rm docker_gwbridge >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

docker image inspect "$CASCADE_IMAGE" >/dev/null 2>&1 || scripts/build-image.sh "$CASCADE_IMAGE"
# The stack with limit L, and the metadata-store bootstrap (a peer-bootstrap
# fleet this large booting at once never settles: BENCHMARKS.md).
sed -e "s/pids: 16/pids: $limit/" -e "s/--thread-limit=16/--thread-limit=$limit/" \
  -e "s/CASCADE_BOOTSTRAP: peers/CASCADE_BOOTSTRAP: metadata-store/" \
  -e 's/"--seed=1125",/"--seed=1125", "--bootstrap=metadata-store",/' \
  deploy/stack.yml >"$work/stack.yml"
grep -q "pids: $limit" "$work/stack.yml" && grep -q -- "--bootstrap=metadata-store" "$work/stack.yml" ||
  { say "could not derive the stack with limit $limit"; exit 1; }

docker swarm init --advertise-addr 127.0.0.1 >/dev/null
read -r CASCADE_CONTROL_PORT CASCADE_KINESIS_AWS_PORT CASCADE_DASHBOARD_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
export CASCADE_CONTROL_PORT CASCADE_KINESIS_AWS_PORT CASCADE_DASHBOARD_PORT
export CASCADE_CONTROL="127.0.0.1:$CASCADE_CONTROL_PORT"
docker stack deploy --resolve-image never -c "$work/stack.yml" "$stack" >/dev/null

ready() { # N: exit 0 once N front-ends all have a ready map and N*(N-1) peer threads
  "$cascade" status --json 2>/dev/null | python3 -c 'import json, sys
s = json.load(sys.stdin); fe = s["frontends"]; n = int(sys.argv[1])
ok = len(fe) == n and all(f["shard_map"] == "ready" for f in fe) and sum(f["peer_threads"] for f in fe) == n * (n - 1)
print("%d front-ends, %d ready, peer threads %d" % (len(fe), sum(f["shard_map"] == "ready" for f in fe), sum(f["peer_threads"] for f in fe)), file=sys.stderr)
sys.exit(0 if ok else 1)' "$1" 2>"$work/last"
}
memory() {
  docker stats --no-stream --format '{{.MemUsage}}' $(docker ps -q --filter "label=com.docker.stack.namespace=$stack") | awk '{
    v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
    f = (u == "GiB") ? 1024 : (u == "MiB") ? 1 : (u == "KiB") ? 1 / 1024 : 1 / 1048576
    s += v * f; n++ } END { printf "%.0f MiB in %d containers", s, n }'
}

fleet=8
largest=0
for n in 8 "${sizes[@]}"; do
  t0=$(date +%s)
  if (( n > fleet )); then
    if ! "$cascade" add-capacity $((n - fleet)) >"$work/add" 2>&1; then
      say "add-capacity to $n refused or failed: $(tail -n 3 "$work/add")"
      break
    fi
    fleet=$n
  fi
  until_s=$(( t0 + step_deadline_s ))
  until ready "$n"; do
    if (( $(date +%s) > until_s )); then
      say "N=$n: no full mesh within ${step_deadline_s} s; last: $(cat "$work/last")"
      break 2
    fi
    sleep 2
  done
  largest=$n
  say "N=$n: full mesh ($(cat "$work/last")) $(( $(date +%s) - t0 )) s after the step; stack memory $(memory)"
done
say "largest fleet with a full mesh in swarm mode on this node: $largest front-ends (pids limit $limit each)"
