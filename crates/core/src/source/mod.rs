//! The source: the Kafka consumer, and the record of which offsets may be committed.

mod back_pressure;
mod consumer;
mod context;
mod detach;
mod group_config;
mod lag;
mod partition_counts;
mod staged;

pub(crate) use consumer::SourceParking;
pub use consumer::{Source, SourceError};
pub use lag::{Assigned, LagMonitor};

// What the source's files share from below (children see their parent's imports).
use crate::books::{Books, Buffered, OffsetTracker};
use crate::kafka::client_config;
use crate::kafka::log as kafka_log;
use crate::record::{Origin, Raw, TopicPartition};
