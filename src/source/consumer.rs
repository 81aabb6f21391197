//! The Kafka consumer: reads messages, decodes and encodes them, hands them to their
//! lanes, pauses its partitions when too much is buffered, and commits the offsets the
//! tracker says are complete.
//!
//! Offsets are never stored automatically: a commit names explicit offsets taken from
//! the [`OffsetTracker`], so nothing past an undelivered event is ever committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::kafka_log::KafkaLog;
use super::Buffered;
use super::{Assigned, OffsetTracker, Origin, Raw, TopicPartition};
use crate::config::{Config, OffsetReset};
use crate::deliver::Failure;
use crate::dlq::{headers, Letter};
use crate::event::{Decoder, InvalidEvent};
use crate::lane::{Envelope, LaneShared, Router};
use crate::limit::Share;
use crate::metrics::Metrics;
use crate::park::table::{marks_metadata, metadata_marks, ParkedMarks};
use crate::park::Control;
use crate::server::Health;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// How often the loop wakes while nothing arrives, so a paused consumer still polls
/// (librdkafka evicts a member that stops polling for `max.poll.interval.ms`).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// How often commits the broker refused or never answered are asked for again.
const RECOMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long reading a topic's partition count may take in a rebalance.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer could not be built or could not commit.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or the subscription.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Rebalance hooks and the state they need.
struct SourceContext {
    tracker: OffsetTracker,
    assigned: Assigned,
    /// Bumped on every change of `assigned`, so the reading loop re-reads it only then.
    assignment_version: AtomicU64,
    health: Health,
    metrics: Metrics,
    revoke_deadline: Duration,
    /// Partitions assigned while paused must be paused too.
    paused: AtomicBool,
    /// Set once the worker is shutting down: revocations no longer wait.
    closing: AtomicBool,
    /// This pod's share of every workspace's limit, kept by these hooks.
    share: Arc<Share>,
    /// Partitions of each source topic, as last read from the brokers.
    partition_counts: Mutex<HashMap<String, usize>>,
    /// The source topics.
    topics: Vec<String>,
    /// Parked workspaces per partition, carried in every commit's metadata.
    marks: ParkedMarks,
    /// Where rebalances are reported to the lanes (revocations always; assignments,
    /// with their parking marks, when parking is on).
    rebalances: mpsc::UnboundedSender<Control>,
    /// Whether `kafka.park_topic` is set.
    parking_on: bool,
    /// The workspaces (for the safe assumption when marks cannot be read).
    workspaces: Vec<String>,
    /// librdkafka's lines, in sluice's terms.
    log: KafkaLog,
}

impl SourceContext {
    /// Lets `revoked` go: their in-flight work gets the revoke deadline (when `wait`),
    /// what finished is committed, the rest is forgotten here (the lanes drop what they
    /// still queue of them) and redelivered to the new owner.
    fn revoke(&self, consumer: &BaseConsumer<Self>, revoked: Vec<TopicPartition>, wait: bool) {
        self.metrics.rebalance("revoke", revoked.len());
        if wait && !self.closing.load(Ordering::Acquire) {
            self.wait_for(&revoked);
        }
        let offsets = self.tracker.committable_for(&revoked);
        if let Err(e) = commit_offsets(consumer, &offsets, CommitMode::Sync, &self.marks) {
            tracing::warn!("commit of revoked partitions failed: {e}");
        }
        // The rest is redelivered to the new owner, who reads the marks just
        // committed; this pod's are no longer its to write.
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
        // Shrunk before the partitions are handed over.
        let total = self.total_partitions(consumer, &assigned, false);
        self.share.revoked(assigned.len(), total);
        drop(assigned);
        // The lanes drop what they still queue of these partitions: the new
        // owner reads it again from the commit just made.
        let _ = self.rebalances.send(Control::Revoked(revoked));
    }

    /// The broker's answer to a commit: confirmed offsets are not asked for again;
    /// refused ones (NOT_COORDINATOR during a rebalance, a broker away) are, at the next
    /// commit, even on a partition with nothing new.
    fn answered(&self, offsets: &[(TopicPartition, i64)], error: Option<&KafkaError>) {
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
        self.log.error(&error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, partitions(tpl), true),
            Rebalance::Assign(tpl) => {
                self.metrics.rebalance("assign", tpl.count());
                let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                assigned.extend(partitions(tpl));
                self.assignment_version.fetch_add(1, Ordering::AcqRel);
                // Grown a window after they arrive.
                let total = self.total_partitions(consumer, &assigned, true);
                self.share
                    .assigned(assigned.len(), total, tokio::time::Instant::now());
                drop(assigned);
                if self.parking_on {
                    let inherited = self.inherit_marks(consumer, tpl);
                    let _ = self.rebalances.send(Control::Assigned(inherited));
                }
                self.health.joined();
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
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
    /// Reads the parking marks of newly assigned partitions and puts them in the commits
    /// from now on, before any lane has taken them in: a commit without them would
    /// orphan the parked events they point at. Returns them for the lanes.
    fn inherit_marks(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &TopicPartitionList,
    ) -> Vec<(TopicPartition, BTreeMap<String, i64>)> {
        let inherited = parked_marks(consumer, assigned, &self.workspaces);
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        for (tp, of_tp) in &inherited {
            if of_tp.is_empty() {
                marks.remove(tp);
            } else {
                marks.insert(tp.clone(), of_tp.clone());
            }
        }
        inherited
    }

    /// Partitions of all source topics: read from the brokers when `refresh` (an
    /// assignment), else as last read. Never less than what the assignment shows.
    fn total_partitions(
        &self,
        consumer: &BaseConsumer<Self>,
        assigned: &BTreeSet<TopicPartition>,
        refresh: bool,
    ) -> usize {
        let mut counts = self
            .partition_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if refresh {
            for topic in &self.topics {
                match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                    Ok(metadata) => {
                        if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                            if !t.partitions().is_empty() {
                                counts.insert(topic.clone(), t.partitions().len());
                            }
                        }
                    }
                    Err(e) => tracing::warn!(topic, "partition count unknown: {e}"),
                }
            }
        }
        for tp in assigned {
            let seen = tp.partition.max(0) as usize + 1;
            let count = counts.entry(tp.topic.to_string()).or_insert(seen);
            *count = (*count).max(seen);
        }
        self.topics
            .iter()
            .map(|t| counts.get(t).copied().unwrap_or(0))
            .sum()
    }

    /// Gives in-flight work of revoked partitions a short deadline to finish.
    fn wait_for(&self, revoked: &[TopicPartition]) {
        let wait = || {
            let deadline = Instant::now() + self.revoke_deadline;
            while self.tracker.pending_in(revoked) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
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

/// Commits `offsets`, each with the parking marks of its partition as metadata (so the
/// partition's next owner knows which workspaces may have parked events waiting).
fn commit_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    offsets: &[(TopicPartition, i64)],
    mode: CommitMode,
    marks: &ParkedMarks,
) -> Result<(), KafkaError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let marks = marks.lock().unwrap_or_else(|e| e.into_inner());
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next))?;
        if let Some(parked) = marks.get(tp) {
            if let Some(mut elem) = tpl.find_partition(&tp.topic, tp.partition) {
                elem.set_metadata(marks_metadata(parked));
            }
        }
    }
    drop(marks);
    consumer.commit(&tpl, mode)
}

/// The parking marks the committed offsets of newly assigned partitions carry. If they
/// cannot be read (three tries), every workspace is assumed to have parked events
/// waiting from the start of the parking partition: duplicates at worst, never a loss.
fn parked_marks(
    consumer: &BaseConsumer<SourceContext>,
    assigned: &TopicPartitionList,
    workspaces: &[String],
) -> Vec<(TopicPartition, BTreeMap<String, i64>)> {
    let tps = partitions(assigned);
    let mut out: Vec<(TopicPartition, BTreeMap<String, i64>)> =
        tps.iter().map(|tp| (tp.clone(), BTreeMap::new())).collect();
    for attempt in 1..=3 {
        match consumer.committed_offsets(assigned.clone(), METADATA_TIMEOUT) {
            Ok(committed) => {
                // Plain data at once: a live list can hold up dropping the consumer.
                let found: Vec<(TopicPartition, String)> = committed
                    .elements()
                    .iter()
                    .map(|e| {
                        let tp = TopicPartition::new(e.topic(), e.partition());
                        (tp, e.metadata().to_string())
                    })
                    .collect();
                drop(committed);
                for (tp, metadata) in found {
                    if let Some(slot) = out.iter_mut().find(|(t, _)| *t == tp) {
                        slot.1 = metadata_marks(&metadata);
                    }
                }
                return out;
            }
            Err(e) => {
                tracing::warn!(
                    attempt,
                    "committed offsets of the new partitions unknown: {e}"
                )
            }
        }
    }
    tracing::error!("parking marks unreadable: assuming every workspace may have parked events");
    for (_, marks) in &mut out {
        *marks = workspaces.iter().map(|w| (w.clone(), 0)).collect();
    }
    out
}

/// The Kafka side of the pipeline.
pub struct Source {
    /// Shared with the commit running on a blocking thread.
    consumer: Arc<StreamConsumer<SourceContext>>,
    /// Set while a commit is on its way (one at a time; the next asks for the rest).
    committing: Arc<AtomicBool>,
    decoder: Decoder,
    shared: Arc<LaneShared>,
    /// Dead letters of invalid events being written.
    dead_letter_tasks: TaskTracker,
    tracker: OffsetTracker,
    metrics: Metrics,
    buffered: Arc<Buffered>,
    /// Pause at either bound: events, bytes.
    max_buffered: (usize, usize),
    /// Resume below both: events, bytes.
    resume_buffered: (usize, usize),
    commit_interval: Duration,
    topics: HashMap<String, Arc<str>>,
    marks: ParkedMarks,
    /// Rebalances for the lanes, forwarded before the next message.
    rebalances: mpsc::UnboundedReceiver<Control>,
    /// The assignment as of a version of it (see [`Source::owns`]).
    owned: (u64, HashSet<TopicPartition>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Source {
    /// Builds the consumer for `config` and subscribes to its topics. `shared` is what
    /// the lanes share (destination, dead letters, tracker, metrics, buffered count);
    /// dead letters of invalid events are written on `dead_letter_tasks`.
    pub fn new(
        config: &Config,
        shared: Arc<LaneShared>,
        dead_letter_tasks: TaskTracker,
        assigned: Assigned,
        health: Health,
        share: Arc<Share>,
        marks: ParkedMarks,
    ) -> Result<Self, SourceError> {
        let tracker = shared.tracker.clone();
        let metrics = shared.metrics.clone();
        let buffered = shared.buffered.clone();
        let k = &config.kafka;
        let mut client = super::client_config(k);
        client
            .set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match k.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        if let Some(id) = &k.group_instance_id {
            // Only the group's consumer: the lag monitor and park reader assign, never join.
            client.set("group.instance.id", id);
        }
        if !k.options.contains_key("queued.max.messages.kbytes") {
            // librdkafka's prefetch, outside the buffer's count: a quarter of its bytes.
            let kbytes = (k.max_buffered_bytes / 4 / 1024).clamp(1, 2_097_151);
            client.set("queued.max.messages.kbytes", kbytes.to_string());
        }
        if !k.options.contains_key("partition.assignment.strategy") {
            client.set("partition.assignment.strategy", "cooperative-sticky");
        }
        let (rebalance_tx, rebalance_rx) = mpsc::unbounded_channel();
        let parking_on = k.park_topic.is_some();
        let context = SourceContext {
            tracker: tracker.clone(),
            assigned,
            assignment_version: AtomicU64::new(0),
            health,
            metrics: metrics.clone(),
            revoke_deadline: Duration::from_millis(k.revoke_deadline_ms),
            paused: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            share,
            partition_counts: Mutex::new(HashMap::new()),
            topics: k.topics.clone(),
            marks: marks.clone(),
            rebalances: rebalance_tx,
            parking_on,
            workspaces: config.workspaces.iter().map(|w| w.id.clone()).collect(),
            log: KafkaLog::new(metrics.clone()),
        };
        let consumer: StreamConsumer<SourceContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Source {
            consumer: Arc::new(consumer),
            committing: Arc::default(),
            decoder: Decoder::for_config(config),
            shared,
            dead_letter_tasks,
            tracker,
            metrics,
            buffered,
            max_buffered: (k.max_buffered_events, k.max_buffered_bytes),
            resume_buffered: (k.resume_buffered_events, k.max_buffered_bytes / 2),
            commit_interval: config.commit_interval(),
            topics: HashMap::new(),
            marks,
            rebalances: rebalance_rx,
            owned: (u64::MAX, HashSet::new()),
        })
    }

    /// Consumes until `stop` is cancelled, committing completed offsets as they advance.
    ///
    /// A commit follows each advance of a partition's contiguous offset, at most one
    /// per `kafka.commit_interval_ms`, so a crash re-delivers at most about
    /// rate × (interval + a commit's round trip) delivered events. A slower tick asks
    /// again for commits the broker refused or never answered.
    pub async fn run(&mut self, router: &Router, stop: &CancellationToken) {
        let advanced = self.tracker.advances();
        let mut recommit = tokio::time::interval(self.commit_interval.max(RECOMMIT_EVERY));
        recommit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_tick = tokio::time::interval(IDLE_POLL);
        // Built once and re-armed, never per message: a timer registered per message
        // costs a driver wake-up each, a third of the CPU of an event.
        let commit_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(commit_timer);
        let wake = advanced.notified();
        tokio::pin!(wake);
        let mut due = false;
        let mut next_allowed = tokio::time::Instant::now();
        loop {
            self.apply_back_pressure();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = &mut commit_timer, if due => {
                    due = false;
                    next_allowed = tokio::time::Instant::now() + self.commit_interval;
                    self.commit_now();
                }
                _ = &mut wake, if !due => {
                    wake.set(advanced.notified());
                    due = true;
                    let at = next_allowed.max(tokio::time::Instant::now());
                    commit_timer.as_mut().reset(at);
                }
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        let detached = detach(&message, &mut self.topics);
                        drop(message);
                        self.metrics.kafka_ok();
                        self.dispatch(detached, router);
                    }
                    Err(e) => self.consumer.context().log.error(&e, "reading"),
                },
                _ = recommit.tick() => self.commit_now(),
                _ = idle_tick.tick() => self.forward_rebalances(router),
            }
        }
    }

    /// Tells the lanes of rebalances before any message of the partitions concerned.
    fn forward_rebalances(&mut self, router: &Router) {
        while let Ok(change) = self.rebalances.try_recv() {
            router.broadcast(|| change.clone());
        }
    }

    /// Pauses the assigned partitions above the high-water mark, resumes them below the
    /// low-water mark.
    fn apply_back_pressure(&self) {
        let (buffered, bytes) = (self.buffered.events(), self.buffered.bytes());
        let paused = self.consumer.context().paused.load(Ordering::Acquire);
        let full = buffered >= self.max_buffered.0 || bytes >= self.max_buffered.1;
        let drained = buffered <= self.resume_buffered.0 && bytes <= self.resume_buffered.1;
        let change = if !paused && full {
            Some(true)
        } else if paused && drained {
            Some(false)
        } else {
            None
        };
        let Some(pause) = change else { return };
        let result = self.consumer.assignment().and_then(|assigned| {
            if pause {
                self.consumer.pause(&assigned)
            } else {
                self.consumer.resume(&assigned)
            }
        });
        match result {
            Ok(()) => {
                self.consumer
                    .context()
                    .paused
                    .store(pause, Ordering::Release);
                self.metrics.set_paused(pause, buffered);
            }
            Err(e) => tracing::warn!("pause/resume failed: {e}"),
        }
    }

    fn dispatch(&mut self, message: Detached, router: &Router) {
        self.forward_rebalances(router);
        if !self.owns(&message.origin.tp) {
            // Fetched before its partition was revoked: the new owner reads it again
            // from the commit made at the revocation.
            self.metrics.stale_after_revoke();
            return;
        }
        self.metrics.consumed();
        let origin = message.origin;
        self.tracker.track(&origin.tp, origin.offset);
        let decoded = match &message.raw.payload {
            _ if message.workspace_unreadable => Err(InvalidEvent::UnknownWorkspace(
                "(the workspace header is not UTF-8)".into(),
            )),
            None => Err(InvalidEvent::Malformed("empty message".into())),
            Some(payload) => self
                .decoder
                .decode_record(
                    payload,
                    message.workspace.as_deref(),
                    Some(&message.raw.first_written),
                )
                .and_then(|event| Ok((self.shared.destination.encode(&event)?, event))),
        };
        match decoded {
            Ok((encoded, event)) => {
                let envelope = Envelope {
                    origin,
                    raw: message.raw,
                    user: event.person.as_str().to_string(),
                    event_time: event.timestamp,
                    encoded,
                    arrived: tokio::time::Instant::now(),
                    from_park: false,
                };
                let bytes = envelope.held_bytes();
                self.buffered.add(bytes);
                if let Err(origin) = router.route(&event.workspace, envelope) {
                    // Only possible while shutting down: leave it uncommitted.
                    self.buffered.release(1, bytes);
                    tracing::warn!(
                        offset = origin.offset,
                        "lane closed; event left for redelivery"
                    );
                }
            }
            Err(invalid) => {
                self.metrics.invalid(&origin, invalid.reason(), &invalid);
                let failure = Failure::without_request(invalid.reason(), invalid.to_string());
                let workspace = match invalid {
                    InvalidEvent::UnknownWorkspace(_) => None,
                    _ => message.workspace,
                };
                let bytes = message.raw.held_bytes();
                self.buffered.add(bytes);
                let shared = self.shared.clone();
                // Written off the consumer's path: it must keep polling meanwhile.
                self.dead_letter_tasks.spawn(async move {
                    let letter = Letter {
                        origin: &origin,
                        raw: &message.raw,
                        workspace: workspace.as_deref(),
                        failure: &failure,
                    };
                    tokio::select! {
                        _ = shared.dead_letters.send(letter) => {
                            shared.tracker.complete([(&origin.tp, origin.offset)]);
                            shared.buffered.release(1, bytes);
                        }
                        // Past the drain deadline: left uncommitted, redelivered later.
                        _ = shared.hard_stop.cancelled() => {}
                    }
                });
            }
        }
    }

    /// Whether `tp` is assigned to this pod now.
    fn owns(&mut self, tp: &TopicPartition) -> bool {
        let version = self
            .consumer
            .context()
            .assignment_version
            .load(Ordering::Acquire);
        if self.owned.0 != version {
            let assigned = self.consumer.context().assigned.lock();
            let assigned = assigned.unwrap_or_else(|e| e.into_inner());
            self.owned = (version, assigned.iter().cloned().collect());
        }
        self.owned.1.contains(tp)
    }

    fn commit_now(&self) {
        if let Err(SourceError::Kafka(e)) = self.commit(CommitMode::Async) {
            self.consumer
                .context()
                .log
                .error(&e, "offset commit failed");
        }
    }

    /// Commits every partition's highest contiguous completed offset that changed
    /// since the last commit. Returns how many partitions were committed.
    pub fn commit(&self, mode: CommitMode) -> Result<usize, SourceError> {
        let offsets = self.tracker.committable();
        if offsets.is_empty() {
            return Ok(0);
        }
        // Only the source's partitions: parked-events readers commit their own.
        let offsets: Vec<(TopicPartition, i64)> = offsets
            .into_iter()
            .filter(|(tp, _)| self.topics.contains_key(&*tp.topic))
            .collect();
        if offsets.is_empty() {
            return Ok(0);
        }
        let n = offsets.len();
        if matches!(mode, CommitMode::Sync) {
            let result = commit_offsets(&*self.consumer, &offsets, mode, &self.marks);
            self.consumer
                .context()
                .answered(&offsets, result.as_ref().err());
            result?;
            return Ok(n);
        }
        // librdkafka reports a manual asynchronous commit's result to nobody (only
        // auto-commits and an `offset_commit_cb` get it), so "asynchronous" here is a
        // synchronous commit on a blocking thread: its answer is known, one at a time.
        if self.committing.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        self.tracker.mark_requested(&offsets);
        let (consumer, marks, committing) = (
            self.consumer.clone(),
            self.marks.clone(),
            self.committing.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let result = commit_offsets(&*consumer, &offsets, CommitMode::Sync, &marks);
            consumer.context().answered(&offsets, result.as_ref().err());
            committing.store(false, Ordering::Release);
        });
        Ok(n)
    }

    /// Final commit and leaving the group: revocations from here on do not wait.
    pub fn close(self) {
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        if let Err(e) = self.commit(CommitMode::Sync) {
            tracing::warn!("final offset commit failed: {e}");
        }
        self.consumer.unsubscribe();
        drop(self.consumer);
    }
}

/// The parts of a message the pipeline keeps, copied out of librdkafka's buffer.
struct Detached {
    origin: Origin,
    raw: Raw,
    workspace: Option<String>,
    /// A `workspace` header was there but not UTF-8: never guessed (the default
    /// workspace would be another tenant's lane), dead-lettered.
    workspace_unreadable: bool,
}

fn detach(message: &BorrowedMessage<'_>, topics: &mut HashMap<String, Arc<str>>) -> Detached {
    let topic = match topics.get(message.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = message.topic().into();
            topics.insert(message.topic().to_string(), t.clone());
            t
        }
    };
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        })
    };
    let workspace = header("workspace");
    let workspace_unreadable = workspace.is_none()
        && message.headers().is_some_and(|headers| {
            headers.iter().any(|h| {
                h.key == "workspace" && h.value.is_some_and(|v| std::str::from_utf8(v).is_err())
            })
        });
    let redrive_count = header(headers::REDRIVE_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let replay = header(headers::REPLAY);
    let first_written = super::first_written(
        (message.topic(), message.partition(), message.offset()),
        header,
    );
    let entered_us = header(headers::DUE)
        .and_then(|d| d.parse().ok())
        .or_else(|| message.timestamp().to_millis().map(|ms| ms * 1000));
    Detached {
        origin: Origin {
            tp: TopicPartition {
                topic,
                partition: message.partition(),
            },
            offset: message.offset(),
        },
        raw: Raw {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            redrive_count,
            replay,
            entered_us,
            first_written,
        },
        workspace,
        workspace_unreadable,
    }
}
