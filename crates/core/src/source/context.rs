//! The source consumer's context: what librdkafka calls back into. The rebalance
//! hooks (revoked partitions get their deadline, their finished work committed and the
//! rest let go; assigned ones their parking marks and this pod's share of the limit),
//! the broker's answers to commits, and librdkafka's log lines in sluice's terms.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::kafka_log::KafkaLog;
use super::partition_counts::PartitionCounts;
use super::staged::Staged;
use super::{Assigned, Books, OffsetTracker, TopicPartition};
use crate::lane::ParkingStep;
use crate::limit::Share;
use crate::metrics::Metrics;
use crate::park::ledger::Ledger;
use crate::park::table::{ParkedMarks, PartitionMarks};
use crate::server::Health;

/// How long reading a topic's partition count may take in a rebalance.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Rebalance hooks and the state they need.
pub(super) struct SourceContext {
    pub(super) tracker: OffsetTracker,
    pub(super) assigned: Assigned,
    /// Bumped on every change of `assigned`, so the reading loop re-reads it only then.
    pub(super) assignment_version: AtomicU64,
    pub(super) health: Health,
    pub(super) metrics: Metrics,
    pub(super) revoke_deadline: Duration,
    /// Partitions assigned while paused must be paused too.
    pub(super) paused: AtomicBool,
    /// Set once the worker is shutting down: revocations no longer wait.
    pub(super) closing: AtomicBool,
    /// This pod's share of every workspace's limit, kept by these hooks.
    pub(super) share: Arc<Share>,
    /// Partitions of each source topic, as last read from the brokers.
    pub(super) partition_counts: Mutex<PartitionCounts>,
    /// Set while the share waits for a partition count the brokers have not given
    /// (asked again on the source's recommit tick).
    pub(super) share_pending: AtomicBool,
    /// The source topics.
    pub(super) topics: Vec<String>,
    /// Parked workspaces per owned partition (the ledger keeps their floors).
    pub(super) marks: ParkedMarks,
    /// Where rebalances are reported to the lanes (revocations always; assignments,
    /// with their parking marks, when parking is on).
    pub(super) rebalances: mpsc::UnboundedSender<ParkingStep>,
    /// The parking ledger, when parking is on: where assigned partitions' marks are read.
    pub(super) ledger: Option<Arc<Ledger>>,
    /// The workspaces (for the safe assumption when marks cannot be read).
    pub(super) workspaces: Vec<String>,
    /// librdkafka's lines, in sluice's terms.
    pub(super) log: KafkaLog,
    /// The burst being read, not yet handed to the lanes.
    pub(super) staged: Staged,
    /// Where staged events of revoked partitions are let go.
    pub(super) books: Books,
}

impl SourceContext {
    /// Lets `revoked` go: their in-flight work gets the revoke deadline (when `wait`),
    /// what finished is committed, the rest is forgotten here (the lanes drop what they
    /// still queue of them) and redelivered to the new owner.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: Vec<TopicPartition>, wait: bool) {
        self.metrics.rebalance("revoke", revoked.len());
        // Read in the burst this poll is part of and never handed over: they cannot
        // finish while this waits, and the new owner reads them again.
        let unsent = self.staged.drop_partitions(&revoked);
        self.books.let_go(unsent.iter().map(|e| e.entry()));
        if !unsent.is_empty() {
            self.metrics.revoked_dropped(unsent.len());
        }
        if wait && !self.closing.load(Ordering::Acquire) {
            self.wait_for(&revoked, unsent.len());
        }
        let offsets = self.tracker.committable_for(&revoked);
        if let Err(e) = commit_offsets(consumer, &offsets, CommitMode::Sync) {
            tracing::warn!("commit of revoked partitions failed: {e}");
        }
        self.health.turned();
        // The rest is redelivered to the new owner, who reads the parking topic from
        // its floor; this pod's marks are no longer its to keep.
        self.tracker.forget(&revoked);
        {
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            for tp in &revoked {
                marks.remove(tp);
            }
        }
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        for tp in &revoked {
            assigned.remove(tp);
        }
        self.assignment_version.fetch_add(1, Ordering::AcqRel);
        // Shrunk before the partitions are handed over (to nothing while the count is
        // unknown: asked again shortly).
        match self.total_partitions(consumer, &assigned, false) {
            Some(total) => self.share.revoked(assigned.len(), total),
            None => {
                self.share.revoked(0, 1);
                self.share_pending.store(true, Ordering::Release);
            }
        }
        drop(assigned);
        // The lanes drop what they still queue of these partitions: the new
        // owner reads it again from the commit just made.
        let _ = self.rebalances.send(ParkingStep::Revoked(revoked));
    }

    /// The broker's answer to a commit: confirmed offsets are not asked for again;
    /// refused ones (NOT_COORDINATOR during a rebalance, a broker away) are, at the next
    /// commit, even on a partition with nothing new.
    pub(super) fn answered(&self, offsets: &[(TopicPartition, i64)], error: Option<&KafkaError>) {
        match error {
            None => {
                self.tracker.mark_committed(offsets);
                self.metrics.committed(offsets.len());
                self.log.ok();
            }
            Some(e) => {
                self.tracker.mark_failed(offsets);
                self.log.error(e, "offset commit refused; asked again");
            }
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::Fatal) {
            // E.g. a static member fenced by another with its group.instance.id.
            self.health.fatal(reason);
            return;
        }
        self.log.error(&error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The callback runs inside one turn of the consumer loop and may take its
        // bounded steps in turn (the revoke wait, a commit, metadata, the marks read):
        // each counts as the loop turning, so /healthz does not take it for a wedge.
        self.health.turned();
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if consumer.assignment_lost() {
                    // Evicted (no poll within max.poll.interval.ms) or its session lost.
                    self.health.evicted();
                }
                self.revoke(consumer, partitions(tpl), true)
            }
            Rebalance::Assign(tpl) => {
                self.metrics.rebalance("assign", tpl.count());
                let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                assigned.extend(partitions(tpl));
                self.assignment_version.fetch_add(1, Ordering::AcqRel);
                // Grown a window after they arrive.
                match self.total_partitions(consumer, &assigned, true) {
                    Some(total) => {
                        self.share_pending.store(false, Ordering::Release);
                        self.share
                            .assigned(assigned.len(), total, tokio::time::Instant::now())
                    }
                    None => {
                        tracing::warn!(
                            "source partition count unknown: this pod's share of the limit stays as it \
                             was until the brokers say"
                        );
                        self.share_pending.store(true, Ordering::Release);
                    }
                }
                drop(assigned);
                if let Some(ledger) = &self.ledger {
                    let inherited = self.inherit_marks(ledger, tpl);
                    let _ = self.rebalances.send(ParkingStep::Assigned(inherited));
                }
                self.health.joined();
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.health.turned();
        if let Rebalance::Error(_) = rebalance {
            // rust-rdkafka has just unassigned what the failed rebalance concerned
            // (all of it under the eager protocol): whatever sluice still counts as
            // its own but librdkafka no longer does is let go like a revocation
            // (without the wait: they are gone already), and the group hands it out.
            let now: BTreeSet<TopicPartition> = match consumer.assignment() {
                Ok(tpl) => partitions(&tpl).into_iter().collect(),
                Err(e) => {
                    // Unknown: keep what we have rather than drop partitions
                    // librdkafka may still be fetching.
                    tracing::warn!("assignment unknown after a rebalance error: {e}");
                    return;
                }
            };
            let lost: Vec<TopicPartition> = {
                let assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                assigned.difference(&now).cloned().collect()
            };
            if !lost.is_empty() {
                tracing::warn!(
                    partitions = lost.len(),
                    "released after the rebalance error"
                );
                self.revoke(consumer, lost, false);
            }
        }
        if let Rebalance::Assign(tpl) = rebalance {
            if self.paused.load(Ordering::Acquire) && tpl.count() > 0 {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!("pausing newly assigned partitions failed: {e}");
                }
            }
        }
    }
}

impl SourceContext {
    /// Reads the parking marks of newly assigned partitions from the parking topic and
    /// keeps them (the ledger keeps each partition's floor from them from now on), before
    /// any lane has taken them in. Returns them for the lanes.
    fn inherit_marks(
        &self,
        ledger: &Ledger,
        assigned: &TopicPartitionList,
    ) -> Vec<(TopicPartition, BTreeMap<String, i64>)> {
        let tps = partitions(assigned);
        let inherited = crate::park::blocking(|| ledger.inherit(&tps, &self.workspaces));
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, of_tp) in &inherited {
            marks.insert(tp.clone(), PartitionMarks::new(of_tp.clone()));
        }
        inherited
    }

    /// Partitions of all source topics: read from the brokers when `refresh` (an
    /// assignment), else as last read; `None` while unknown.
    fn total_partitions(
        &self,
        consumer: &impl Consumer<Self>,
        assigned: &BTreeSet<TopicPartition>,
        refresh: bool,
    ) -> Option<usize> {
        let mut counts = self
            .partition_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if refresh {
            for topic in &self.topics {
                match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                    Ok(metadata) => {
                        if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                            counts.learn(topic, t.partitions().len());
                        }
                    }
                    Err(e) => tracing::warn!(topic, "partition count unknown: {e}"),
                }
            }
        }
        counts.total(&self.topics, assigned)
    }

    /// When the share waits for the partition count (see `share_pending`): asks the
    /// brokers again and sets it. Blocks on the brokers (a metadata request).
    pub(super) fn settle_share(&self, consumer: &impl Consumer<Self>) {
        if !self.share_pending.load(Ordering::Acquire) {
            return;
        }
        let assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(total) = self.total_partitions(consumer, &assigned, true) {
            self.share_pending.store(false, Ordering::Release);
            self.share
                .assigned(assigned.len(), total, tokio::time::Instant::now());
            tracing::info!(
                total,
                "source partition count known: share of the limit set"
            );
        }
    }

    /// Gives in-flight work of revoked partitions a short deadline to finish (all but
    /// the `unsent` events let go from the burst, the latest read of them).
    fn wait_for(&self, revoked: &[TopicPartition], unsent: usize) {
        let wait = || {
            let deadline = Instant::now() + self.revoke_deadline;
            while self.tracker.pending_in(revoked) > unsent && Instant::now() < deadline {
                self.health.turned();
                std::thread::sleep(Duration::from_millis(10));
            }
            self.health.turned();
        };
        // The callback runs inside a poll on a runtime thread: hand that thread's other
        // tasks (the lanes doing the work) to another one while waiting. A
        // current-thread runtime cannot do that, so there the wait is skipped.
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            Ok(_) => {}
            Err(_) => wait(),
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// Commits `offsets` (plain offsets: the parking marks live in the parking ledger).
pub(super) fn commit_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    offsets: &[(TopicPartition, i64)],
    mode: CommitMode,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next))?;
    }
    consumer.commit(&tpl, mode)
}
