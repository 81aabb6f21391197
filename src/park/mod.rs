//! Tenant isolation: a workspace that cannot keep up is *parked* — its newly read events
//! go to the parking topic (`kafka.park_topic`) instead of the in-process buffer, so the
//! source partitions keep moving for every other workspace — and comes back once it has
//! caught up. Nothing is lost and one user's events stay in order in both directions.
//!
//! # The protocol
//!
//! Each workspace's lane runs the protocol for its workspace: events, rebalances and
//! fences reach it through one FIFO channel, so every step happens exactly between the
//! events it must come between. State is kept per (workspace W, source partition p) on
//! the pod that owns p:
//! **direct**, **parked**, **returning** (a fence is out, new events are held) or
//! **draining** (direct again, the fence not yet committed past).
//!
//! 1. *Park.* When W's events in process (queued or in flight in its lane, or held)
//!    reach its budget (`kafka.max_buffered_events_per_workspace`), W is parked on every
//!    partition the pod owns. For each, the parking partition with p's number has its
//!    end offset read first: W's parked events of p will all be found from there
//!    (`start`). The lane then takes back everything it holds — requests in flight are
//!    abandoned — and parks those events first, a user's in-flight events before its
//!    queued ones, so their source offsets complete and the source's commits move on.
//!    (Events read back from the parking topic earlier stay in the lane: they are older
//!    than anything parked now.)
//! 2. *While parked*, each new event of W from p is written to parking partition p, in
//!    the order read (enqueued at once; idempotent producer, no delivery timeout, so
//!    retries never reorder). Its source offset completes when the write is
//!    acknowledged.
//! 3. *Marks.* Every source offset commit of p carries, in its metadata, the workspaces
//!    that may have parked events of p waiting and their `start`. A parked event's source
//!    offset is committed only after it was acknowledged, in a commit that carries W's
//!    mark; the mark leaves only after W's reader has committed past W's fence.
//! 4. *Read.* W's reader (consumer group `{group}.park.{W}`, partitions assigned by
//!    hand) reads parking partition p from `max(its committed offset, start)` and hands
//!    W's records of p to W's lane — only while the lane is under budget — skipping the
//!    rest. Its offsets complete as the lane delivers them.
//! 5. *Return.* When W's lane is nearly empty and the reader nearly caught up, the pod
//!    writes a fence (W, p, epoch) to parking partition p — behind every parked event of
//!    W from p — and from then on *holds* W's new events from p. When the reader reads
//!    the fence, every event parked before it is in the lane: the held events follow,
//!    in order, and W is direct on p. Once the reader's commit passes the fence, the mark
//!    goes. If the held events reach the budget first, they are parked (behind the
//!    fence, in order) and W is parked again; the fence is then stale and ignored.
//! 6. *Rebalance.* A revoked partition's states and held events are dropped: held
//!    events were never completed, so the new owner reads them again. A newly assigned
//!    partition whose committed metadata marks W starts W as *returning* — a fence,
//!    held events — so W's parked events there come first.
//! 7. *Crash.* Everything in process is uncommitted and read again; parked events whose
//!    source offsets were committed are in the parking topic behind a mark; the next
//!    owner reads them first (step 6). Duplicates are possible (at-least-once), gaps
//!    and reorders are not.
//!
//! If the parking topic is unavailable its writes pend; they count as buffered events,
//! so the consumer pauses, as it does without parking.

mod lane;
pub mod reader;
pub mod table;
pub mod writer;

pub use lane::{LaneParking, MIN_PARKED};

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::{Config, KafkaConfig};
use crate::intake::Intake;
use crate::source::TopicPartition;
use table::ParkedMarks;
use writer::Parker;

/// A step of the protocol that reaches a lane between its events.
#[derive(Debug, Clone)]
pub enum Control {
    /// These partitions are this pod's now, with the marks their commits carried.
    Assigned(Vec<(TopicPartition, BTreeMap<String, i64>)>),
    /// These partitions left.
    Revoked(Vec<TopicPartition>),
    /// The reader met this workspace's fence `epoch` of `tp`.
    FenceRead {
        /// The source partition.
        tp: TopicPartition,
        /// The fence's epoch.
        epoch: u64,
    },
    /// The reader committed past it.
    FenceCommitted {
        /// The source partition.
        tp: TopicPartition,
        /// The fence's epoch.
        epoch: u64,
    },
}

/// What every lane's parking side shares.
#[derive(Debug, Clone)]
pub struct ParkingSetup {
    parker: Arc<Parker>,
    marks: ParkedMarks,
    kafka: KafkaConfig,
    budget: usize,
    /// The workspace's share of `kafka.max_buffered_bytes`: a lane of large events
    /// parks on bytes before the whole buffer fills and pauses everyone.
    byte_budget: usize,
    intake: Arc<Intake>,
    writes: TaskTracker,
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
