//! The source: the Kafka consumer, and the record of which offsets may be committed.

mod consumer;
mod offsets;

pub use consumer::{Source, SourceError};
pub use offsets::{OffsetTracker, TopicPartition};

/// Where one event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its topic and partition.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
}
