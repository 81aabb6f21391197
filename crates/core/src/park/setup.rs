//! What every lane's parking side shares, made ready at start: the parking topic
//! (created or grown), its producer and its ledger.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::ledger::Ledger;
use super::table::ParkedMarks;
use super::topic::{self, TopicError};
use super::turns::ReaderTurns;
use super::writer::Parker;
use crate::config::{Config, KafkaConfig};
use crate::intake::Intake;

/// What every lane's parking side shares.
#[derive(Debug, Clone)]
pub(crate) struct ParkingSetup {
    pub(super) parker: Arc<Parker>,
    pub(crate) ledger: Arc<Ledger>,
    pub(super) marks: ParkedMarks,
    pub(super) kafka: KafkaConfig,
    pub(super) share: usize,
    /// The workspace's share of `kafka.max_buffered_bytes`: a lane of large events
    /// parks on bytes before the whole buffer fills and pauses everyone.
    pub(super) byte_share: usize,
    pub(super) intake: Arc<Intake>,
    pub(super) writes: TaskTracker,
    /// Whether there is another workspace to protect: a lone workspace is never parked
    /// (the source's back-pressure holds it, and its lag is what the autoscaler sees);
    /// events parked earlier are still read back.
    pub(super) isolating: bool,
    /// The pod's turns at reading parked events back (`kafka.park_readers`).
    pub(super) turns: ReaderTurns,
}

/// Parking could not be made ready, and the worker must not run without it.
#[derive(Debug, thiserror::Error)]
#[error("{0} (parked events may wait there; not starting without them)")]
pub(crate) struct ParkingError(String);

impl ParkingSetup {
    /// The parking side for `config`: `None` when parking is off, or when its topic
    /// does not exist and cannot be created (said at start in one line; nothing can be
    /// waiting in a topic that does not exist). `marks` is shared with the source;
    /// parking writes run on `writes`; parked events read back are judged by `intake`.
    pub(crate) async fn new(
        config: &Config,
        intake: Arc<Intake>,
        marks: ParkedMarks,
        writes: TaskTracker,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<Self>, ParkingError> {
        let Some(topic) = config.parking_topic() else {
            tracing::warn!(
                "parking is off (kafka.park_topic = \"\", or several source topics): a \
                 workspace that cannot keep up fills the buffer and pauses every partition"
            );
            return Ok(None);
        };
        let source = &config.kafka.topics[0];
        let coverage = match topic::ensure(&config.kafka, source, &topic).await {
            Ok(coverage) => coverage,
            Err(e @ TopicError::Missing { .. }) => {
                tracing::error!(
                    "parking is off ({e}): a workspace that cannot keep up fills the \
                     buffer and pauses every partition; create it, or set kafka.park_topic"
                );
                return Ok(None);
            }
            Err(e) => return Err(ParkingError(e.to_string())),
        };
        let isolating = config.workspaces.len() > 1;
        tracing::info!(
            topic,
            partitions = coverage.parking,
            source_partitions = coverage.source,
            "{}",
            if isolating {
                "parking on: a workspace that cannot keep up is parked there"
            } else {
                "parking on for events parked earlier (one workspace: nothing to isolate it from)"
            }
        );
        let parker =
            Parker::new(config, &topic, metrics).map_err(|e| ParkingError(e.to_string()))?;
        // Each partition's end read once now: workspaces parked at once later go on
        // from it rather than each asking the broker (see `Parker::start_offset`).
        for partition in 0..coverage.parking as i32 {
            let _ = parker.start_offset(partition);
        }
        let ledger = Ledger::new(&config.kafka, &topic, coverage.parking, metrics)
            .map_err(|e| ParkingError(e.to_string()))?;
        Ok(Some(ParkingSetup {
            parker: Arc::new(parker),
            ledger: Arc::new(ledger),
            marks,
            kafka: config.kafka.clone(),
            share: config.workspace_share(),
            byte_share: (config.kafka.max_buffered_bytes / config.workspaces.len().max(1)).max(1),
            intake,
            writes,
            isolating,
            turns: ReaderTurns::new(config.kafka.park_readers),
        }))
    }
}

/// Runs a blocking broker call without stalling the runtime's other tasks.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
