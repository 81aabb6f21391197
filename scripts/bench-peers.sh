#!/usr/bin/env bash
# Side-by-side throughput of sluice (shipped defaults) and peers; see scripts/bench_peers.py.
#   scripts/bench-peers.sh --peer 'vector=scripts/peers/vector.sh {brokers} {topic} {group} {api} {site} {key}'
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/release/sluice ] || cargo build --release --quiet
exec python3 scripts/bench_peers.py "$@"
