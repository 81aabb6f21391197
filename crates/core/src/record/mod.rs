//! The vocabulary every stage shares, at the bottom of the house: where a record came
//! from ([`Origin`], [`TopicPartition`]), what it was ([`Raw`]), the `sluice.*` header
//! names on what sluice writes ([`headers`]) and why an event failed
//! ([`FailureReason`]). It imports nothing of sluice.

pub mod headers;
mod partition;
mod reason;

pub use partition::TopicPartition;
pub use reason::FailureReason;

/// Where one event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its topic and partition.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
}

impl Raw {
    /// Its key and payload bytes.
    pub(crate) fn held_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// The message as it arrived, kept for the dead-letter topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    /// The Kafka key.
    pub key: Option<Vec<u8>>,
    /// The payload bytes.
    pub payload: Option<Vec<u8>>,
    /// How many times `sluice dlq redrive` has sent it back (0 for a fresh event).
    pub redrive_count: u32,
    /// Its `sluice.replay` header, when `sluice replay` wrote it (replayed traffic,
    /// told apart in dead letters and redrives).
    pub replay: Option<String>,
    /// When the event entered Kafka, unix µs: `sluice loadgen`'s scheduled send time
    /// (`sluice.due`) if present, else the record's timestamp; for the delivery
    /// latency (entered → accepted by the API).
    pub entered_us: Option<i64>,
    /// Where it was first written, `TOPIC:PARTITION:OFFSET` (see [`first_written`]).
    pub first_written: String,
}

/// Where a record was first written, `TOPIC:PARTITION:OFFSET`, which the ids of events
/// without a `messageId` derive from: what a parked copy, dead letter or redrive
/// carries (`sluice.first_written`), else the record a replay copied (`sluice.replay`,
/// `RUN:TOPIC:PARTITION:OFFSET`), else the record itself.
pub fn first_written(own: (&str, i32, i64), header: impl Fn(&str) -> Option<String>) -> String {
    if let Some(first) = header(headers::FIRST_WRITTEN) {
        return first;
    }
    if let Some(replayed) = header(headers::REPLAY) {
        if let Some((_run, place)) = replayed.split_once(':') {
            return place.to_string();
        }
    }
    format!("{}:{}:{}", own.0, own.1, own.2)
}

#[cfg(test)]
mod tests;
