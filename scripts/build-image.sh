#!/usr/bin/env bash
# Builds the `cascade:local` image with no registry at all: the release
# binaries, the shared libraries `ldd` names and the dynamic loader are copied
# at their own paths into a root filesystem, which a `FROM scratch` Dockerfile
# copies in whole. No base image, no pull, no system protoc (protox compiles
# the .proto files during the cargo build).
#
#   scripts/build-image.sh [TAG]        (default: cascade:local; $CASCADE_IMAGE also works)
#   SKIP_CARGO=1 scripts/build-image.sh (reuse target/release as it is)
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-${CASCADE_IMAGE:-cascade:local}}"
bins=(kinesis-frontend kinesis-backend cognito cloudwatch eventbridge lambda ecs cascade)

if [[ "${SKIP_CARGO:-0}" != 1 ]]; then
  cargo build --release --workspace --bins
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/cascade-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/scenarios"
chmod 1777 "$root/tmp"

# Copies $1 into the rootfs at the same path (following symlinks: the loader
# and libraries are often links; the copy keeps the name the binary asks for).
copy_at_path() {
  local src="$1"
  mkdir -p "$root$(dirname "$src")"
  cp -L "$src" "$root$src"
}

for b in "${bins[@]}"; do
  src="target/release/$b"
  [[ -x "$src" ]] || { echo "build-image: $src missing (cargo build --release --workspace --bins)" >&2; exit 1; }
  # Debug info is most of each binary's size; symbols stay for backtraces.
  objcopy --strip-debug "$src" "$root/bin/$b"
  # Every library ldd resolves (absolute paths), plus the loader itself.
  while read -r lib; do
    [[ -e "$root$lib" ]] || copy_at_path "$lib"
  done < <(ldd "$src" | grep -o '/[^ ]*' | sort -u)
done

# What a few libc calls expect to find; no shell, no package manager.
printf 'root:x:0:0:root:/:/bin/cascade\nnobody:x:65534:65534:nobody:/:/bin/cascade\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
cp scenarios/*.toml "$root/scenarios/"

cp docker/Dockerfile "$ctx/Dockerfile"
# The legacy builder needs nothing from a registry for FROM scratch.
if ! DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  exit 1
fi
size="$(docker image inspect --format '{{.Size}}' "$tag")"
echo "build-image: $tag built ($((size / 1024 / 1024)) MiB, FROM scratch: ${bins[*]})"
