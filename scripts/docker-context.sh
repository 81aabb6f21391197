#!/usr/bin/env bash
# Checks the Dockerfile's build stage without a Docker engine: copies exactly what its
# COPY lines name into an empty folder and runs its cargo command there (as `cargo
# check`, sharing this checkout's target/ so only sluice itself is checked again). A
# file the manifest or the code needs and the Dockerfile forgets fails here.
# Usage: scripts/docker-context.sh   (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# The COPY lines of the first stage (up to the second FROM), without --from copies.
copies=$(awk '/^FROM /{n++} n==1 && /^COPY / && !/--from/' Dockerfile)
[ -n "$copies" ] || { echo "no COPY in the Dockerfile's build stage"; exit 1; }
while read -r _ args; do
  read -ra parts <<<"$args"
  dest=${parts[-1]}
  for src in "${parts[@]:0:${#parts[@]}-1}"; do
    case "$dest" in
      ./|.) mkdir -p "$context" && cp -r "$root/$src" "$context/" ;;
      *) mkdir -p "$(dirname "$context/$dest")" && cp -r "$root/$src" "$context/$dest" ;;
    esac
  done
done <<<"$copies"
build=$(awk '/^FROM /{n++} n==1 && /^RUN cargo build/' Dockerfile)
[ -n "$build" ] || { echo "no cargo build in the Dockerfile's build stage"; exit 1; }
# The same arguments, checked rather than built (a release build of librdkafka takes
# minutes; a missing file fails `check` just the same).
args=${build#RUN cargo build}
args=${args//--release/}
echo "the image's build stage, from what it copies: cargo check$args"
(cd "$context" && CARGO_TARGET_DIR="$root/target" cargo check --quiet $args)
