//! Header names on every dead letter (and the redrive counter `sluice dlq redrive`
//! adds to what it sends back).

/// Bounded reason code (`malformed_json`, `http_400`, `invalid_item`...).
pub const REASON: &str = "sluice.reason";
/// Human-readable explanation.
pub const MESSAGE: &str = "sluice.message";
/// Last HTTP status, if the API answered.
pub const HTTP_STATUS: &str = "sluice.http_status";
/// The start of the API's answer.
pub const RESPONSE: &str = "sluice.response";
/// Attempts made.
pub const ATTEMPTS: &str = "sluice.attempts";
/// First attempt, RFC 3339.
pub const FIRST_ATTEMPT: &str = "sluice.first_attempt";
/// Last attempt, RFC 3339.
pub const LAST_ATTEMPT: &str = "sluice.last_attempt";
/// Source topic.
pub const TOPIC: &str = "sluice.topic";
/// Source partition.
pub const PARTITION: &str = "sluice.partition";
/// Source offset.
pub const OFFSET: &str = "sluice.offset";
/// Workspace, when known.
pub const WORKSPACE: &str = "sluice.workspace";
/// How many times this event has been redriven (present once redriven).
pub const REDRIVE_COUNT: &str = "sluice.redrive_count";
/// Set by `sluice replay` on what it writes (`RUN:TOPIC:PARTITION:OFFSET`), and
/// kept on dead letters and redrives: replayed traffic, not fresh.
pub const REPLAY: &str = "sluice.replay";
/// Where the record was first written (`TOPIC:PARTITION:OFFSET`), which the ids of
/// events without a `messageId` derive from: kept on parked copies, dead letters and
/// redrives, so a copy keeps its event's id.
pub const FIRST_WRITTEN: &str = "sluice.first_written";
/// When the event was meant to enter Kafka, unix µs: set by `sluice loadgen` (its
/// scheduled send time) and kept through parking, for the delivery latency.
pub const DUE: &str = "sluice.due";
/// Set (to the original size in bytes) when the broker refused the payload as too
/// large for the dead-letter topic: the letter then carries no payload, and the
/// original stays at `sluice.topic/partition/offset` until retention removes it.
pub const PAYLOAD_OMITTED: &str = "sluice.payload_omitted";
/// Set (to the original key's size in bytes) when the letter was still too large
/// without its payload: it then carries no key either.
pub const KEY_OMITTED: &str = "sluice.key_omitted";
