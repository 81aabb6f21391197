//! The Kafka consumer: reads messages, hands them to the [`intake`](crate::intake)
//! for their lanes, stops reading when too much is buffered (see
//! [`back_pressure`](super::back_pressure)), and commits the offsets the tracker says are
//! complete.
//!
//! Offsets are never stored automatically: a commit names explicit offsets taken from
//! the [`OffsetTracker`], so nothing past an undelivered event is ever committed.

use hashbrown::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use super::back_pressure::{BackPressure, Change};
use super::context::{commit_offsets, SourceContext};
use super::detach::detach;
use super::group_config::group_client_config;
use super::kafka_log::KafkaLog;
use super::staged::Staged;
use super::{Assigned, OffsetTracker, TopicPartition};
use super::{Books, Buffered};
use crate::config::Config;
use crate::intake::{Admission, ForLane, Intake, Received};
use crate::lane::ParkingStep;
use crate::lane::{Envelope, Router, Services};
use crate::limit::Share;
use crate::metrics::Metrics;
use crate::park::table::ParkedMarks;
use crate::server::Health;
use tokio::sync::mpsc;

/// How often the loop wakes while nothing arrives, so a paused consumer still polls
/// (librdkafka evicts a member that stops polling for `max.poll.interval.ms`).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Most messages read in one burst before they are handed to the lanes.
const BURST: usize = 256;

/// How often commits the broker refused or never answered are asked for again.
const RECOMMIT_EVERY: Duration = Duration::from_secs(1);

/// The consumer could not be built or could not commit.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or the subscription.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// The Kafka side of the pipeline.
pub struct Source {
    /// Shared with the commit running on a blocking thread.
    consumer: Arc<StreamConsumer<SourceContext>>,
    /// Set while a commit is on its way (one at a time; the next asks for the rest).
    committing: Arc<AtomicBool>,
    /// Judges each record for its lane, or dead-letters it.
    intake: Arc<Intake>,
    tracker: OffsetTracker,
    metrics: Metrics,
    buffered: Arc<Buffered>,
    /// Where each event read is taken in, and let go if its lane is closed.
    books: Books,
    /// Whether to read on, hold or pause, from the buffered count.
    back_pressure: BackPressure,
    commit_interval: Duration,
    topics: HashMap<String, Arc<str>>,
    /// Rebalances for the lanes, forwarded before the next message.
    rebalances: mpsc::UnboundedReceiver<ParkingStep>,
    /// The assignment as of a version of it (see [`Source::owns`]).
    owned: (u64, HashSet<TopicPartition>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

/// What the source keeps of parking: the marks of the partitions it owns, and the
/// ledger where a newly assigned partition's marks are read (`None`: parking is off).
#[derive(Debug)]
pub(crate) struct SourceParking {
    /// Parked workspaces per owned partition.
    pub(crate) marks: ParkedMarks,
    /// The parking ledger.
    pub(crate) ledger: Option<Arc<crate::park::ledger::Ledger>>,
}

impl Source {
    /// Builds the consumer for `config` and subscribes to its topics. `services` is what
    /// the lanes share (tracker, metrics, buffered count); `intake` judges each record.
    pub(crate) fn new(
        config: &Config,
        services: &Services,
        intake: Arc<Intake>,
        assigned: Assigned,
        health: Health,
        share: Arc<Share>,
        parking: SourceParking,
    ) -> Result<Self, SourceError> {
        let SourceParking { marks, ledger } = parking;
        let books = services.books.clone();
        let tracker = books.tracker().clone();
        let metrics = services.metrics.clone();
        let buffered = books.buffered().clone();
        let k = &config.kafka;
        let client = group_client_config(k);
        let (rebalance_tx, rebalance_rx) = mpsc::unbounded_channel();
        let context = SourceContext {
            tracker: tracker.clone(),
            assigned,
            assignment_version: AtomicU64::new(0),
            health,
            metrics: metrics.clone(),
            revoke_deadline: k.revoke_deadline_ms.duration(),
            paused: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            share,
            partition_counts: Mutex::default(),
            share_pending: AtomicBool::new(false),
            topics: k.topics.clone(),
            marks,
            rebalances: rebalance_tx,
            ledger,
            workspaces: config.workspaces.iter().map(|w| w.id.clone()).collect(),
            log: KafkaLog::new(metrics.clone()),
            staged: Staged::default(),
            books: books.clone(),
        };
        let consumer: StreamConsumer<SourceContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = k.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Source {
            consumer: Arc::new(consumer),
            committing: Arc::default(),
            intake,
            tracker,
            metrics,
            buffered,
            books,
            back_pressure: BackPressure::for_kafka(k),
            commit_interval: config.commit_interval(),
            topics: HashMap::new(),
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
        // Likewise the timer that turns a long hold into a pause, re-armed as one starts.
        let pause_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause_timer);
        let buffered = self.buffered.clone();
        let mut due = false;
        let mut next_allowed = tokio::time::Instant::now();
        loop {
            self.consumer.context().health.turned();
            self.apply_back_pressure();
            let polling = self.back_pressure.polling();
            let pause_at = self.back_pressure.pause_at();
            if let Some(at) = pause_at.filter(|at| *at != pause_timer.deadline()) {
                pause_timer.as_mut().reset(at);
            }
            let released = buffered.released();
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
                received = self.consumer.recv(), if polling => {
                    let read = detached(received, &mut self.topics);
                    self.take(read, router);
                    self.take_the_burst(router);
                },
                _ = recommit.tick() => {
                    self.commit_now();
                    let consumer = &*self.consumer;
                    crate::park::blocking(|| consumer.context().settle_share(consumer));
                }
                _ = idle_tick.tick() => self.forward_rebalances(router),
                // Back-pressure: look again as the lanes let events go, and when a
                // hold has lasted long enough to become a pause.
                _ = released, if self.back_pressure.held_back() => {}
                _ = &mut pause_timer, if pause_at.is_some() => {}
            }
        }
    }

    /// One read: its message judged and staged for its lane, or its error logged.
    fn take(&mut self, read: KafkaResult<Received>, router: &Router) {
        match read {
            Ok(message) => {
                self.metrics.kafka_ok();
                self.dispatch(message, router);
            }
            Err(e) => self.read_failed(&e),
        }
    }

    /// What the consumer has ready behind the message just read (up to [`BURST`],
    /// within the buffer's bounds, as per message), then the burst handed to the
    /// lanes: one message to each lane concerned (see [`staged`](super::staged)).
    fn take_the_burst(&mut self, router: &Router) {
        // Its own handle: a read borrows the consumer while `take` needs the source.
        let consumer = self.consumer.clone();
        for _ in 1..BURST {
            self.apply_back_pressure();
            if !self.back_pressure.polling() {
                break;
            }
            let Some(received) = consumer.recv().now_or_never() else {
                break;
            };
            let read = detached(received, &mut self.topics);
            self.take(read, router);
        }
        self.hand_over(router);
    }

    /// Hands what is staged to the lanes.
    fn hand_over(&self, router: &Router) {
        for (workspace, events) in self.consumer.context().staged.take() {
            if let Err(events) = router.route_all(&workspace, events) {
                // Only possible while shutting down: leave them uncommitted.
                self.books.let_go(events.iter().map(Envelope::entry));
                tracing::warn!(
                    workspace = %workspace,
                    events = events.len(),
                    "lane closed; events left for redelivery"
                );
            }
        }
    }

    /// A failed read: logged; an eviction clears readiness, a fatal error liveness.
    fn read_failed(&self, e: &KafkaError) {
        let context = self.consumer.context();
        match e {
            KafkaError::MessageConsumptionFatal(code) => {
                let why = self
                    .consumer
                    .client()
                    .fatal_error()
                    .map_or_else(|| code.to_string(), |(_, why)| why);
                context.health.fatal(&why);
            }
            KafkaError::MessageConsumption(RDKafkaErrorCode::PollExceeded) => {
                context.health.evicted();
                context.log.error(e, "reading");
            }
            _ => context.log.error(e, "reading"),
        }
    }

    /// Tells the lanes of rebalances before any message of the partitions concerned,
    /// and after every message read before them (what is staged goes first).
    fn forward_rebalances(&mut self, router: &Router) {
        let mut handed_over = false;
        while let Ok(change) = self.rebalances.try_recv() {
            if !handed_over {
                self.hand_over(router);
                handed_over = true;
            }
            router.broadcast(|| change.clone());
        }
    }

    /// Holds, reads on, pauses or resumes as the buffered count calls for.
    fn apply_back_pressure(&mut self) {
        let buffered = (self.buffered.events(), self.buffered.bytes());
        let Some(change) = self.back_pressure.step(buffered, tokio::time::Instant::now) else {
            return;
        };
        let result = match change {
            Change::Hold | Change::Read => Ok(()),
            Change::Pause => self
                .consumer
                .assignment()
                .and_then(|assigned| self.consumer.pause(&assigned)),
            Change::Resume => self
                .consumer
                .assignment()
                .and_then(|assigned| self.consumer.resume(&assigned)),
        };
        match result {
            Ok(()) => {
                if matches!(change, Change::Pause | Change::Resume) {
                    // Partitions assigned from now on must follow (see the context).
                    let paused = change == Change::Pause;
                    self.consumer
                        .context()
                        .paused
                        .store(paused, Ordering::Release);
                }
                self.metrics.set_held_back(
                    matches!(change, Change::Hold | Change::Pause),
                    matches!(change, Change::Pause | Change::Resume),
                    buffered.0,
                );
            }
            Err(e) => {
                tracing::warn!("pause/resume failed: {e}");
                self.back_pressure.failed(change);
            }
        }
    }

    fn dispatch(&mut self, message: Received, router: &Router) {
        self.forward_rebalances(router);
        if !self.owns(&message.origin.tp) {
            // Fetched before its partition was revoked: the new owner reads it again
            // from the commit made at the revocation.
            self.metrics.stale_after_revoke();
            return;
        }
        self.metrics.consumed();
        match self.intake.judge(message) {
            Admission::Lane(ForLane {
                workspace,
                envelope,
            }) => {
                self.books.taken_in(envelope.entry());
                self.consumer.context().staged.stage(workspace, envelope);
            }
            Admission::Refused(refused) => {
                self.books.taken_in(refused.entry());
                self.intake.dead_letter(refused);
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
            let result = commit_offsets(&*self.consumer, &offsets, mode);
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
        let (consumer, committing) = (self.consumer.clone(), self.committing.clone());
        tokio::task::spawn_blocking(move || {
            let result = commit_offsets(&*consumer, &offsets, CommitMode::Sync);
            consumer.context().answered(&offsets, result.as_ref().err());
            committing.store(false, Ordering::Release);
        });
        Ok(n)
    }

    /// Final commit and leaving the group: revocations from here on do not wait.
    pub(crate) fn close(self) {
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

/// A read with its message copied out of librdkafka's buffer (which it then frees).
fn detached(
    received: KafkaResult<BorrowedMessage<'_>>,
    topics: &mut HashMap<String, Arc<str>>,
) -> KafkaResult<Received> {
    received.map(|message| detach(&message, topics))
}
