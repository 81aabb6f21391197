//! The source: the Kafka consumer, and the record of which offsets may be committed.

mod consumer;
mod lag;
mod offsets;

pub use consumer::{Source, SourceError};
pub use lag::{Assigned, LagMonitor};
pub use offsets::{OffsetTracker, TopicPartition};

/// A librdkafka client configuration for `kafka`'s brokers with its pass-through
/// `options` (SASL, TLS...): the start of every client sluice makes — consumer,
/// dead-letter producer, lag monitor, dlq tools.
pub fn client_config(kafka: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut client = rdkafka::ClientConfig::new();
    for (key, value) in &kafka.options {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &kafka.brokers);
    client
}

/// Where one event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its topic and partition.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
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
}
