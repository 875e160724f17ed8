#!/usr/bin/env bash
# Benchmark smoke: runs every benchmark in its --smoke mode (small N, a few
# seconds each) against the debug binaries CI has just built, and checks that
# each wrote well-formed JSON to target/bench/<name>.json naming itself as a
# smoke run. A benchmark can then no longer break unnoticed. It reports no
# figure: smoke numbers are taken at toy sizes on a debug build.
#
# `--profile dev` makes `cargo bench` build the bench targets like tests (no
# release build), so they find the binaries in target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."

# aws_throughput's smoke installs its baseline, ferrokinesis, with `cargo
# install` into target/bench-tools the first time (a release build of
# ferrokinesis: several minutes on 2 cores; reused after).
benches=(fleet_scale peer_memory incident_phase dataplane_throughput cascade_impact soak aws_throughput)
out=target/bench

check_json() { # file bench-name
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$1" "$2" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
with open(path) as f:
    d = json.load(f)
if d.get("bench") != name or d.get("smoke") is not True or "machine" not in d:
    sys.exit(f"{path}: not a smoke report of {name}: bench={d.get('bench')!r} smoke={d.get('smoke')!r}")
PY
  elif command -v jq >/dev/null 2>&1; then
    jq -e --arg n "$2" '.bench == $n and .smoke == true and has("machine")' "$1" >/dev/null \
      || { echo "$1: not a smoke report of $2" >&2; return 1; }
  else
    echo "bench-smoke: need python3 or jq to check the JSON" >&2
    return 1
  fi
}

start=$(date +%s)
cargo bench --profile dev -p cascade-tests --no-run
for b in "${benches[@]}"; do
  rm -f "$out/$b.json"
  t0=$(date +%s)
  cargo bench --profile dev -p cascade-tests --bench "$b" -- --smoke
  check_json "$out/$b.json" "$b"
  echo "bench-smoke: $b ok ($(( $(date +%s) - t0 )) s), $out/$b.json well-formed"
done
for svg in cost_growth phase_diagram; do
  grep -q "<svg" "$out/$svg.svg" || { echo "bench-smoke: $out/$svg.svg is not an SVG" >&2; exit 1; }
done
echo "bench-smoke: all ${#benches[@]} benchmarks ran in $(( $(date +%s) - start )) s"
