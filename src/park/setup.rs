//! What every lane's parking side shares, and the start-up check that the brokers can
//! carry the protocol's marks.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::table::ParkedMarks;
use super::writer::Parker;
use crate::config::{Config, KafkaConfig};
use crate::intake::Intake;

/// What every lane's parking side shares.
#[derive(Debug, Clone)]
pub struct ParkingSetup {
    pub(super) parker: Arc<Parker>,
    pub(super) marks: ParkedMarks,
    pub(super) kafka: KafkaConfig,
    pub(super) budget: usize,
    /// The workspace's share of `kafka.max_buffered_bytes`: a lane of large events
    /// parks on bytes before the whole buffer fills and pauses everyone.
    pub(super) byte_budget: usize,
    pub(super) intake: Arc<Intake>,
    pub(super) writes: TaskTracker,
}

impl ParkingSetup {
    /// The parking side for `config`, or `None` without `kafka.park_topic`. `marks` is
    /// shared with the source's commits; parking writes run on `writes`; parked events
    /// read back are judged by `intake`.
    pub fn new(
        config: &Config,
        intake: Arc<Intake>,
        marks: ParkedMarks,
        writes: TaskTracker,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<Self>, rdkafka::error::KafkaError> {
        let Some(parker) = Parker::new(config, metrics)? else {
            return Ok(None);
        };
        if let Err(why) = blocking(|| keeps_commit_metadata(config, parker.topic())) {
            tracing::error!(
                "parking disabled ({why}): without it, a workspace that cannot keep up \
                 pauses every partition once the buffer is full"
            );
            return Ok(None);
        }
        Ok(Some(ParkingSetup {
            parker: Arc::new(parker),
            marks,
            kafka: config.kafka.clone(),
            budget: config.workspace_budget(),
            byte_budget: (config.kafka.max_buffered_bytes / config.workspaces.len().max(1)).max(1),
            intake,
            writes,
        }))
    }
}

/// Whether the brokers keep offset-commit metadata, which the marks live in (Kafka
/// does; Tansu 0.6 drops it): a probe commit on the parking topic, read back.
fn keeps_commit_metadata(config: &Config, topic: &str) -> Result<(), String> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    const PROBE: &str = "sluice-parking-probe";
    let timeout = std::time::Duration::from_secs(10);
    let consumer: BaseConsumer = crate::source::client_config(&config.kafka)
        .set("group.id", format!("{}.park.probe", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(0))
        .map_err(|e| e.to_string())?;
    if let Some(mut elem) = tpl.find_partition(topic, 0) {
        elem.set_metadata(PROBE);
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| format!("cannot commit on the parking topic {topic}: {e}"))?;
    drop(tpl);
    let mut ask = TopicPartitionList::new();
    ask.add_partition(topic, 0);
    let committed = consumer
        .committed_offsets(ask, timeout)
        .map_err(|e| e.to_string())?;
    let kept = committed
        .elements()
        .first()
        .is_some_and(|e| e.metadata() == PROBE);
    drop(committed);
    if kept {
        Ok(())
    } else {
        Err("the brokers do not keep offset-commit metadata".into())
    }
}

/// Runs a blocking broker call without stalling the runtime's other tasks.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
