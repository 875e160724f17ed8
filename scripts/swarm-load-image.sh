#!/usr/bin/env bash
# Ships the Cascade image to the other nodes of a swarm without a registry:
# `docker save TAG | ssh NODE docker load`, one node after the other. Run it
# on the node where scripts/build-image.sh built the image, before `docker
# stack deploy --resolve-image never` (docs/swarm.md). On a single-node
# swarm there is nothing to ship: the local image is used.
#
#   scripts/swarm-load-image.sh [--tag TAG] [NODE...]
#
# NODE is anything ssh accepts (user@host, a Host of ~/.ssh/config); with
# none, every other node of the swarm by its address (`docker node ls`, run
# on a manager), as root. The remote user must be able to run `docker load`.
set -euo pipefail

tag="${CASCADE_IMAGE:-cascade:local}"
nodes=()
while (( $# )); do
  case "$1" in
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --tag=*) tag="${1#--tag=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "swarm-load-image: unknown option $1 (see --help)" >&2; exit 64 ;;
    *) nodes+=("$1"); shift ;;
  esac
done

docker image inspect "$tag" >/dev/null 2>&1 ||
  { echo "swarm-load-image: no image $tag here; build it with scripts/build-image.sh $tag" >&2; exit 1; }

if (( ${#nodes[@]} == 0 )); then
  self="$(docker info --format '{{.Swarm.NodeID}}')"
  [[ -n "$self" ]] || { echo "swarm-load-image: this machine is in no swarm; name the nodes" >&2; exit 64; }
  while read -r id; do
    [[ "$id" == "$self" ]] && continue
    nodes+=("root@$(docker node inspect --format '{{.Status.Addr}}' "$id")")
  done < <(docker node ls -q)
fi
if (( ${#nodes[@]} == 0 )); then
  echo "swarm-load-image: a single-node swarm: nothing to ship ($tag is used from this node)"
  exit 0
fi

id="$(docker image inspect --format '{{.Id}}' "$tag")"
for node in "${nodes[@]}"; do
  echo "swarm-load-image: $tag -> $node"
  docker save "$tag" | ssh -o BatchMode=yes "$node" docker load
  # The same image id on the node, or the stack would run something else.
  got="$(ssh -o BatchMode=yes "$node" docker image inspect --format '{{.Id}}' "$tag")"
  [[ "$got" == "$id" ]] || { echo "swarm-load-image: $node has $tag as $got, not $id" >&2; exit 1; }
done
echo "swarm-load-image: $tag ($id) on ${#nodes[@]} node(s)"
