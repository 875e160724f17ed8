#!/usr/bin/env bash
# The outage in one command: bring the whole topology up (Kinesis, Cognito,
# CloudWatch, Lambda, EventBridge, ECS), add a little capacity, watch every
# front-end's shard-map fail when the kernel refuses a peer thread and the
# failure spread to every service, then recover by removing capacity and
# restarting the fleet.
# Uses only `cascade` commands; everything is taken down on exit or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

FRONTENDS=${FRONTENDS:-8}
LIMIT=${LIMIT:-16}
ADD=${ADD:-6}
export CASCADE_HOME=${CASCADE_HOME:-$PWD/.cascade}

echo "== building (release) =="
cargo build --release --workspace --bins --quiet
C=./target/release/cascade
trap '$C down >/dev/null 2>&1 || true' EXIT

# Poll `cascade status --json` until a jq-free Python predicate holds.
wait_for() { # description, python expression over `s` (the status dict), timeout seconds
  local what=$1 expr=$2 deadline=$((SECONDS + $3))
  while (( SECONDS < deadline )); do
    if $C status --json | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($expr) else 1)"; then
      return 0
    fi
    sleep 0.5
  done
  echo "timed out waiting for: $what"; $C status; return 1
}

echo "== 1. a healthy fleet: $FRONTENDS front-ends, kernel thread limit $LIMIT each =="
$C up --frontends "$FRONTENDS" --thread-limit "$LIMIT" --detach
wait_for "every shard-map ready" "all(f['shard_map']=='ready' and f['peers_known']==f['peers_total'] for f in s['frontends'])" 60
$C kinesis create-stream --stream-name orders --shard-count 4
$C kinesis put-record --stream-name orders --partition-key customer-1 --data "before the outage"
$C status

echo "== 2. 02:44: add $ADD front-ends (a relatively small addition of capacity) =="
$C add-capacity "$ADD"
echo "   ... existing members learn of the new ones within one incident hour (10 s at the default time scale)"
wait_for "every shard-map unusable" "all(f['shard_map']=='unusable' for f in s['frontends'])" 60
$C status
echo "== 3. the data plane is down: PutRecord answers UNAVAILABLE =="
$C kinesis put-record --stream-name orders --partition-key customer-1 --data "during the outage" || true
echo "   ... and the failure spreads (customer traffic is the judge)"
wait_for "Cognito, CloudWatch, EventBridge, Lambda and ECS impaired" \
  "all(x['health']!='serving' for x in s['services'] if x['name'] in ('cognito','cloudwatch','lambda','eventbridge','ecs'))" 90
$C status
echo "== the Service Health Dashboard: the primary tool signs in through Cognito =="
$C shd post "We are investigating increased error rates" || true
$C shd post --backup "We are investigating increased error rates"

echo "== 4. recovery: remove the added capacity, then restart the fleet =="
$C remove-capacity "$ADD"
$C restart-frontends --batch 4
wait_for "every shard-map ready again" "all(f['shard_map']=='ready' for f in s['frontends'])" 60
wait_for "every service serving again" "all(x['health']=='serving' for x in s['services'])" 90
$C kinesis put-record --stream-name orders --partition-key customer-1 --data "after recovery"
$C kinesis get-records --stream-name orders --shard-id "$($C kinesis put-record --stream-name orders --partition-key customer-1 --data again | python3 -c 'import json,sys; print(json.load(sys.stdin)["ShardId"])')"
$C status
echo "== done: taking everything down =="
