#!/usr/bin/env bash
# Sets up a Vector binary of your own as the worker sluice is compared with:
# Kafka (Segment-spec JSON: type, userId, traits / event, properties, messageId) →
# Customer.io's /api/v2/batch, 100 items a request, Basic auth, offsets committed only
# after the request succeeded (end-to-end acknowledgements).
#
#   VECTOR_BIN=/path/to/vector scripts/peers/vector.sh BROKERS TOPIC GROUP API_BASE SITE_ID API_KEY
#
# It needs a Vector built with the kafka source, the remap transform and the http sink
# (the official release builds have them). Settings from the environment:
#   VECTOR_BIN          the binary (default: `vector` on PATH)
#   VECTOR_RATE         requests per 1 s window (Vector's fixed window; default 1000000, none)
#   VECTOR_CONCURRENCY  "adaptive" (Vector's default) or a number; 1 keeps per-user order
#   VECTOR_THREADS      worker threads (default: Vector's, all cores)
# As a bench-peers peer:
#   scripts/bench-peers.sh --peer 'vector=scripts/peers/vector.sh {brokers} {topic} {group} {api} {site} {key}'
set -euo pipefail
if [ $# -ne 6 ]; then
  echo "usage: VECTOR_BIN=… $0 BROKERS TOPIC GROUP API_BASE SITE_ID API_KEY" >&2
  exit 2
fi
brokers=$1 topic=$2 group=$3 api=${4%/} site=$5 key=$6
bin=${VECTOR_BIN:-vector}
if ! command -v "$bin" >/dev/null; then
  echo "no Vector binary: set VECTOR_BIN to one (got '$bin')" >&2
  exit 2
fi
rate=${VECTOR_RATE:-1000000}
concurrency=${VECTOR_CONCURRENCY:-adaptive}
[[ $concurrency =~ ^[0-9]+$ ]] || concurrency="\"$concurrency\""

work=$(mktemp -d --suffix=.sluice-peer-vector)
# Vector reads `$NAME` in its config as an environment variable: the config below has
# none, and every value is written in literally.
cat >"$work/vector.toml" <<EOF
data_dir = "$work"

[sources.events]
type = "kafka"
bootstrap_servers = "$brokers"
topics = ["$topic"]
group_id = "$group"
auto_offset_reset = "earliest"
session_timeout_ms = 6000
decoding.codec = "bytes"

# Segment-spec event → one Customer.io v2 batch item; anything else is dropped.
[transforms.items]
type = "remap"
inputs = ["events"]
drop_on_error = true
drop_on_abort = true
reroute_dropped = false
source = '''
e = object!(parse_json!(string!(.message)))
person = {"id": e.userId}
if e.type == "identify" {
  . = {"type": "person", "action": "identify", "identifiers": person, "attributes": e.traits}
} else if e.type == "track" {
  out = {"type": "person", "action": "event", "identifiers": person, "name": e.event, "attributes": e.properties}
  # Customer.io accepts an event id only when it is a ULID.
  id = to_string(e.messageId) ?? ""
  if strlen(id) == 26 && match(id, r'^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]+') {
    out.id = id
  }
  . = out
} else {
  abort
}
'''

[sinks.customerio]
type = "http"
inputs = ["items"]
uri = "$api/api/v2/batch"
method = "post"
compression = "none"
healthcheck.enabled = false
# the json codec with this framing writes the items as one JSON array: [a,b,…]
encoding.codec = "json"
framing.method = "character_delimited"
framing.character_delimited.delimiter = ","
payload_prefix = '{"batch":'
payload_suffix = '}'
auth.strategy = "basic"
auth.user = "$site"
auth.password = "$key"
batch.max_events = 100
batch.timeout_secs = 1
request.rate_limit_num = $rate
request.rate_limit_duration_secs = 1
request.concurrency = $concurrency
request.timeout_secs = 10
request.retry_initial_backoff_secs = 1
request.retry_max_duration_secs = 10
acknowledgements.enabled = true
EOF
args=(--config "$work/vector.toml" --quiet)
[ -n "${VECTOR_THREADS:-}" ] && args+=(--threads "$VECTOR_THREADS")
export VECTOR_LOG=${VECTOR_LOG:-warn}
exec "$bin" "${args[@]}"
