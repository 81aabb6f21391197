//! A parked workspace's reader: reads the parking partitions of the source partitions
//! where its workspace is off the direct path, hands the workspace's records to its
//! lane at the lane's pace, and commits its own offsets (group `{group}.park.{id}`).
//!
//! It never joins a group (partitions are assigned by hand, following the source's
//! ownership), so a rebalance of the source moves the reading with the partition.
//! Other workspaces' records and other partitions' fences complete at once; its own
//! fences are reported to the source when read and again once committed past.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::blocking;
use super::turns::Turn;
use super::writer::{parked_raw, FENCE, WORKSPACE};
use crate::books::Entry;
use crate::dlq::header_map;
use crate::intake::{Admission, ForLane, Intake, Received, WorkspaceHeader};
use crate::kafka::client_config;
use crate::kafka::log::KafkaLog;
use crate::lane::{LaneLoad, LaneMsg, ParkingStep, Services};
use crate::record::headers;
use crate::record::{Origin, TopicPartition};

/// How long a committed-offset or watermark query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the source asks of a reader.
#[derive(Debug)]
pub(crate) enum ReaderCommand {
    /// Read the parking partition of this source partition, from at least this offset.
    Assign(TopicPartition, i64),
    /// Stop reading it (revoked, or direct again).
    Unassign(TopicPartition),
}

/// The tracker's name for the parking offsets of `workspace`'s reader number `turn`:
/// its own, apart from the source's, other workspaces' and its earlier readers' (what an
/// earlier reader handed over and its lane had not yet taken in is told apart by it).
pub(crate) fn synthetic_topic(park_topic: &str, workspace: &str, turn: u64) -> String {
    format!("{park_topic}#{workspace}#{turn}")
}

/// The source's handle on one workspace's reader.
#[derive(Debug)]
pub(crate) struct ReaderHandle {
    ctrl: mpsc::UnboundedSender<ReaderCommand>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Its turn at reading: given back when it stops.
    turn: Turn,
    /// Parking-topic records (any workspace's) behind this reader, last measured;
    /// `i64::MAX` until first measured.
    pub lag: Arc<AtomicI64>,
}

impl ReaderHandle {
    /// Tells the reader.
    pub(crate) fn send(&self, ctrl: ReaderCommand) {
        let _ = self.ctrl.send(ctrl);
    }

    /// Stops the reader after a last commit, and gives its turn back.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Whether it has read for a whole turn.
    pub(crate) fn turn_is_over(&self) -> bool {
        self.turn.is_over()
    }
}

/// Everything a reader needs.
#[derive(Debug)]
pub(crate) struct ReaderSetup {
    /// The workspace.
    pub workspace: String,
    /// The tracker's name for its offsets ([`synthetic_topic`]).
    pub synthetic: Arc<str>,
    /// Its reader's consumer group.
    pub group: String,
    /// The parking topic.
    pub topic: String,
    /// Its librdkafka prefetch (`queued.max.messages.kbytes`), see
    /// [`prefetch_kbytes`].
    pub prefetch_kbytes: usize,
    /// The workspace's lane: parked events and fences go there, in order.
    pub lane: mpsc::UnboundedSender<LaneMsg>,
    /// What the workspace's lane holds.
    pub in_lane: Arc<LaneLoad>,
    /// The workspace's buffer share, in events.
    pub share: usize,
    /// Its share of `kafka.max_buffered_bytes`: parked events read back are held to it
    /// as fresh ones are (25 000 of 64 KB would otherwise be 1.6 GB).
    pub byte_share: usize,
    /// What lanes share (tracker, buffered count, destination, dead letters, metrics).
    pub services: Arc<Services>,
    /// Judges parked payloads as the source judges fresh ones.
    pub intake: Arc<Intake>,
}

/// A reader's librdkafka prefetch, in KiB, when `active` readers run (this one among
/// them): librdkafka's default is 64 MiB a consumer, and a reader scans the whole
/// parking partition (mostly others' records), so 16 readers held hundreds of MB. They
/// share a quarter of `kafka.max_buffered_bytes` (16 MiB at the default), each between
/// 1 and 4 MiB, the source's own: 1 MiB alone cost a workspace read back beside a
/// refused one a fifth of its rate.
pub(crate) fn prefetch_kbytes(max_buffered_bytes: usize, active: usize) -> usize {
    (max_buffered_bytes / 4 / active.max(1) / 1024).clamp(1024, 4096)
}

/// Whether `m` has header `key` with exactly `value`.
fn header_is(m: &impl Message, key: &str, value: &str) -> bool {
    use rdkafka::message::Headers;
    m.headers().is_some_and(|hs| {
        hs.iter()
            .any(|h| h.key == key && h.value == Some(value.as_bytes()))
    })
}

struct Part {
    source: TopicPartition,
    next: i64,
}

/// One partition's change of a reader's assignment.
enum Change {
    /// Read it from this offset.
    Add(i64),
    /// Stop reading it.
    Remove,
}

struct Reader {
    setup: ReaderSetup,
    /// Shared with the reading loop, whose borrowed messages outlive a `&mut self`.
    consumer: Arc<StreamConsumer<KafkaLog>>,
    parts: HashMap<i32, Part>,
    /// Fences read and not yet committed past: (parking partition, offset, epoch).
    fences: Vec<(i32, i64, u64)>,
    paused: bool,
    lag: Arc<AtomicI64>,
    /// Whether a lag measure is under way.
    measuring: Arc<AtomicBool>,
    /// Changes of its assignment so far: a lag measured for an earlier one is dropped.
    assignments: Arc<AtomicU64>,
}

/// Starts a reader for `setup.workspace`, for its `turn`.
pub(crate) fn start(
    kafka: &crate::config::KafkaConfig,
    setup: ReaderSetup,
    turn: Turn,
) -> rdkafka::error::KafkaResult<ReaderHandle> {
    let mut client = client_config(kafka);
    client
        .set("group.id", &setup.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    if !kafka.options.contains_key("queued.max.messages.kbytes") {
        client.set(
            "queued.max.messages.kbytes",
            setup.prefetch_kbytes.to_string(),
        );
    }
    if !kafka.options.contains_key("fetch.queue.backoff.ms") {
        // As the source's: a small prefetch is often full, and librdkafka's default
        // waits a second before it fetches again (a workspace beside a refused one
        // then read back its own events at three quarters of its rate).
        client.set("fetch.queue.backoff.ms", "20");
    }
    let consumer: StreamConsumer<KafkaLog> =
        client.create_with_context(KafkaLog::new(setup.services.metrics.clone()))?;
    let (ctrl, rx) = mpsc::unbounded_channel();
    let lag = Arc::new(AtomicI64::new(i64::MAX));
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = Reader {
        setup,
        consumer: Arc::new(consumer),
        parts: HashMap::new(),
        fences: Vec::new(),
        paused: false,
        lag: lag.clone(),
        measuring: Arc::default(),
        assignments: Arc::default(),
    };
    let task = tokio::spawn(reader.run(rx, stop.clone()));
    Ok(ReaderHandle {
        ctrl,
        stop,
        task,
        turn,
        lag,
    })
}

impl Reader {
    async fn run(
        mut self,
        mut ctrl: mpsc::UnboundedReceiver<ReaderCommand>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut lag_tick = tokio::time::interval(Duration::from_secs(1));
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                c = ctrl.recv() => match c {
                    Some(ReaderCommand::Assign(tp, start)) => self.assign(tp, start),
                    Some(ReaderCommand::Unassign(tp)) => self.unassign(&tp),
                    None => break,
                },
                m = consumer.recv(), if !self.parts.is_empty() && !self.paused => match m {
                    Ok(m) => self.handle(&m),
                    Err(e) => tracing::warn!(workspace = %self.setup.workspace, "parking topic: {e}"),
                },
                _ = tick.tick() => {
                    self.commit(CommitMode::Async);
                    self.pace();
                }
                _ = lag_tick.tick() => self.measure_lag(),
            }
        }
        blocking(|| self.commit(CommitMode::Sync));
        // A measure under way is for a reader that is gone.
        self.lag_unknown();
        // What is still in process of this reader's is let go of: a later reader
        // reads it again from the committed offset, under a name of its own.
        let tps: Vec<TopicPartition> = self.parts.keys().map(|p| self.synthetic(*p)).collect();
        self.setup.services.books.tracker().forget(&tps);
        // librdkafka's destroy waits for the client's threads to wind down, 1.5-2 s
        // measured: not on a runtime thread (readers stopping one after another held
        // both of them, and every lane with them).
        drop(consumer);
        let Reader { consumer, .. } = self;
        tokio::task::spawn_blocking(move || drop(consumer));
    }

    fn synthetic(&self, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: self.setup.synthetic.clone(),
            partition,
        }
    }

    fn assign(&mut self, source: TopicPartition, start: i64) {
        let p = source.partition;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.setup.topic, p);
        let committed = blocking(|| self.consumer.committed_offsets(tpl, QUERY_TIMEOUT))
            .ok()
            .and_then(|c| c.elements().first().map(|e| e.offset()));
        let from = match committed {
            Some(Offset::Offset(c)) => c.max(start),
            _ => start,
        };
        let again = self.parts.insert(p, Part { source, next: from }).is_some();
        // Unknown until measured: no return decision on an old figure.
        self.lag_unknown();
        if again {
            self.change_assignment(p, Change::Remove);
        }
        self.change_assignment(p, Change::Add(from));
        self.resume_all();
    }

    fn unassign(&mut self, source: &TopicPartition) {
        let p = source.partition;
        if self
            .parts
            .get(&p)
            .is_some_and(|part| &part.source == source)
        {
            self.commit(CommitMode::Async);
            self.parts.remove(&p);
            self.fences.retain(|(fp, _, _)| *fp != p);
            self.setup
                .services
                .books
                .tracker()
                .forget(&[self.synthetic(p)]);
            self.change_assignment(p, Change::Remove);
            self.resume_all();
        }
    }

    /// Adds partition `p` (read from an offset) to the reader's assignment, or removes
    /// it — one partition at a time. (Replacing the whole assignment at each change,
    /// as this did, stops every partition and starts it again; two replacements close
    /// together hit librdkafka's duplicate FETCH_STOP race, confluentinc/librdkafka
    /// #5573, fixed after the 2.12 this links: an assertion that aborts the process.)
    fn change_assignment(&mut self, p: i32, change: Change) {
        let mut one = TopicPartitionList::new();
        let result = match change {
            Change::Add(from) => {
                let _ = one.add_partition_offset(&self.setup.topic, p, Offset::Offset(from));
                self.consumer.incremental_assign(&one)
            }
            Change::Remove => {
                one.add_partition(&self.setup.topic, p);
                self.consumer.incremental_unassign(&one)
            }
        };
        if let Err(e) = result {
            tracing::warn!(workspace = %self.setup.workspace, partition = p, "parking topic assignment failed: {e}");
        }
    }

    fn resume_all(&mut self) {
        let mut tpl = TopicPartitionList::new();
        for (p, part) in &self.parts {
            let _ = tpl.add_partition_offset(&self.setup.topic, *p, Offset::Offset(part.next));
        }
        // A partition paused before keeps its pause through a new assignment: resume
        // them all, and let the pacing pause again if the lane is full.
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(workspace = %self.setup.workspace, "parking topic resume failed: {e}");
        }
        self.paused = false;
        self.pace();
    }

    /// Moves partition `p`'s reading past `offset`: the source partition it stands
    /// for, or `None` if `p` is not read any more. A gap before it is said and counted.
    fn advance(&mut self, p: i32, offset: i64) -> Option<TopicPartition> {
        let part = self.parts.get_mut(&p)?;
        if offset > part.next {
            // The parking topic is written without transactions or compaction: a gap
            // is records deleted before they were read back (its retention).
            let gone = offset - part.next;
            tracing::error!(
                workspace = %self.setup.workspace,
                partition = p,
                "{gone} parked records (offsets {} to {}) were deleted from the parking \
                 topic before they were read back, by its retention: their events are not \
                 delivered",
                part.next,
                offset - 1
            );
            self.setup
                .services
                .metrics
                .parked_expired(&self.setup.workspace, gone as u64);
        }
        part.next = offset + 1;
        Some(part.source.clone())
    }

    /// One record of the parking topic: this workspace's parked event or fence of the
    /// partition it reads for, or another's (completed at once, without a copy).
    fn handle(&mut self, m: &impl Message) {
        let (p, offset) = (m.partition(), m.offset());
        let Some(source) = self.advance(p, offset) else {
            return;
        };
        let tp = self.synthetic(p);
        let books = &self.setup.services.books;
        let origin = Origin { tp, offset };
        // Not in the buffer's count: the workspace's share bounds what is read back.
        let entry = Entry {
            origin: &origin,
            bytes: 0,
            counted: false,
        };
        books.taken_in(entry);
        // Most records of a busy parking partition are other workspaces': looked at
        // by their workspace header alone.
        if !header_is(m, WORKSPACE, &self.setup.workspace) {
            books.done([entry]);
            return;
        }
        let hs = header_map(m);
        let ours = hs.get(headers::TOPIC).map(String::as_str) == Some(&*source.topic)
            && hs.get(headers::PARTITION) == Some(&source.partition.to_string());
        if !ours {
            books.done([entry]);
            return;
        }
        if let Some(epoch) = hs.get(FENCE).and_then(|e| e.parse::<u64>().ok()) {
            books.done([entry]);
            self.fences.push((p, offset, epoch));
            let _ = self
                .setup
                .lane
                .send(LaneMsg::Park(ParkingStep::FenceRead { tp: source, epoch }));
            return;
        }
        let key = m.key().map(<[u8]>::to_vec);
        let payload = m.payload().map(<[u8]>::to_vec);
        let raw = parked_raw(&source, offset, &hs, key, payload);
        self.hand_over(Received {
            origin,
            raw,
            workspace: WorkspaceHeader::Named(self.setup.workspace.clone()),
            from_park: true,
        });
    }

    /// One of this workspace's parked events, read back: to its lane (the reader
    /// pauses when the lane reaches its share), or a dead letter if it no longer
    /// decodes.
    fn hand_over(&mut self, record: Received) {
        match self.setup.intake.judge(record) {
            Admission::Lane(ForLane { envelope, .. }) => {
                // Counted at once, so pacing sees it before the lane does.
                let events = self.setup.in_lane.events.fetch_add(1, Ordering::AcqRel) + 1;
                let size = envelope.held_bytes();
                let bytes = self.setup.in_lane.bytes.fetch_add(size, Ordering::AcqRel) + size;
                self.setup
                    .services
                    .metrics
                    .parked_drained(&self.setup.workspace);
                // Shutting down if the lane is gone: left uncommitted, read again later.
                let _ = self.setup.lane.send(LaneMsg::FromPark(Box::new(envelope)));
                if events >= self.setup.share || bytes >= self.setup.byte_share {
                    self.pace();
                }
            }
            // It was valid when parked; a later version may decode differently.
            Admission::Refused(refused) => self.setup.intake.dead_letter(refused),
        }
    }

    fn commit(&mut self, mode: CommitMode) {
        let tps: Vec<TopicPartition> = self.parts.keys().map(|p| self.synthetic(*p)).collect();
        let offsets = self.setup.services.books.tracker().committable_for(&tps);
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in &offsets {
            let _ =
                tpl.add_partition_offset(&self.setup.topic, tp.partition, Offset::Offset(*next));
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            tracing::warn!(workspace = %self.setup.workspace, "parking offsets commit failed: {e}");
            return;
        }
        self.setup.services.books.tracker().mark_committed(&offsets);
        let committed: HashMap<i32, i64> =
            offsets.iter().map(|(tp, n)| (tp.partition, *n)).collect();
        let parts = &self.parts;
        let lane = &self.setup.lane;
        self.fences.retain(|(p, offset, epoch)| {
            let past = committed.get(p).is_some_and(|next| next > offset);
            if past {
                if let Some(part) = parts.get(p) {
                    let _ = lane.send(LaneMsg::Park(ParkingStep::FenceCommitted {
                        tp: part.source.clone(),
                        epoch: *epoch,
                    }));
                }
            }
            !past
        });
    }

    /// Reads only while the workspace's lane is under its share.
    fn pace(&mut self) {
        let held = (
            self.setup.in_lane.events.load(Ordering::Acquire),
            self.setup.in_lane.bytes.load(Ordering::Acquire),
        );
        let share = (self.setup.share, self.setup.byte_share);
        let Some(pause) = pacing(self.paused, held, share) else {
            return;
        };
        let Ok(assigned) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assigned)
        } else {
            self.consumer.resume(&assigned)
        };
        drop(assigned);
        if result.is_ok() {
            self.paused = pause;
        }
    }

    /// Measures how far the reader is behind, off its loop: a watermark query takes
    /// a round trip a partition (0.5-1.3 s for four on Tansu), during which the loop
    /// would neither read nor hear that it is to stop. One at a time; a figure for an
    /// assignment that has changed since is not kept.
    fn measure_lag(&mut self) {
        if self.measuring.swap(true, Ordering::AcqRel) {
            return;
        }
        let reading: Vec<(i32, i64)> = self.parts.iter().map(|(p, part)| (*p, part.next)).collect();
        let job = LagJob {
            consumer: self.consumer.clone(),
            topic: self.setup.topic.clone(),
            reading,
            lag: self.lag.clone(),
            measuring: self.measuring.clone(),
            assignments: self.assignments.clone(),
            assignment: self.assignments.load(Ordering::Acquire),
            services: self.setup.services.clone(),
            workspace: self.setup.workspace.clone(),
        };
        tokio::task::spawn_blocking(move || job.run());
    }

    /// The assignment changed: the lag is unknown until measured again.
    fn lag_unknown(&self) {
        self.assignments.fetch_add(1, Ordering::AcqRel);
        self.lag.store(i64::MAX, Ordering::Release);
    }
}

/// One measure of a reader's lag, on a blocking thread.
struct LagJob {
    consumer: Arc<StreamConsumer<KafkaLog>>,
    topic: String,
    /// (parking partition, next offset to read) when it began.
    reading: Vec<(i32, i64)>,
    lag: Arc<AtomicI64>,
    measuring: Arc<AtomicBool>,
    assignments: Arc<AtomicU64>,
    /// The assignment it measures.
    assignment: u64,
    services: Arc<Services>,
    workspace: String,
}

impl LagJob {
    fn run(self) {
        if self.reading.is_empty() {
            // Nothing assigned yet: unknown, not caught up.
            self.measuring.store(false, Ordering::Release);
            return;
        }
        let mut lag = 0i64;
        for (p, next) in &self.reading {
            match self
                .consumer
                .fetch_watermarks(&self.topic, *p, QUERY_TIMEOUT)
            {
                Ok((_, high)) => lag += (high - next).max(0),
                // Unknown, not nothing: a workspace must not start returning on it.
                Err(_) => {
                    lag = i64::MAX;
                    break;
                }
            }
        }
        let current = || self.assignments.load(Ordering::Acquire) == self.assignment;
        if current() {
            self.lag.store(lag, Ordering::Release);
            // Changed meanwhile: unknown again (the change said so, and may have been
            // overwritten just now).
            if !current() {
                self.lag.store(i64::MAX, Ordering::Release);
            } else if lag != i64::MAX {
                self.services
                    .metrics
                    .set_parked_waiting(&self.workspace, lag);
            }
        }
        self.measuring.store(false, Ordering::Release);
    }
}

/// Whether a reader, `paused` or not, whose lane holds `held` (events, bytes) against
/// `share` (events, bytes) should now pause (`Some(true)`) or resume (`Some(false)`):
/// it pauses at either share and resumes below three quarters of both.
fn pacing(paused: bool, held: (usize, usize), share: (usize, usize)) -> Option<bool> {
    let over = held.0 >= share.0 || held.1 >= share.1;
    let low = held.0 <= share.0 * 3 / 4 && held.1 <= share.1 * 3 / 4;
    match paused {
        false if over => Some(true),
        true if low => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{pacing, prefetch_kbytes};

    #[test]
    fn readers_share_a_quarter_of_the_buffer_as_prefetch() {
        let buffer = 64 << 20;
        assert_eq!(prefetch_kbytes(buffer, 1), 4096);
        assert_eq!(prefetch_kbytes(buffer, 4), 4096);
        assert_eq!(prefetch_kbytes(buffer, 8), 2048);
        assert_eq!(prefetch_kbytes(buffer, 16), 1024);
        assert_eq!(
            prefetch_kbytes(buffer, 64),
            1024,
            "at least a fetch's worth"
        );
    }

    #[test]
    fn parked_events_read_back_are_held_to_the_byte_share_too() {
        // 64 KB events against 4 MB (64 MB / 16 workspaces) and 1 562 events.
        let share = (1_562, 4 << 20);
        let event = 64 << 10;
        // 64 of them fill the bytes long before the count.
        assert_eq!(pacing(false, (63, 63 * event), share), None);
        assert_eq!(pacing(false, (64, 64 * event), share), Some(true));
        assert_eq!(pacing(true, (60, 60 * event), share), None);
        assert_eq!(pacing(true, (48, 48 * event), share), Some(false));
        // Small events: the count, as before.
        assert_eq!(pacing(false, (1_562, 1_562 * 200), share), Some(true));
        assert_eq!(pacing(true, (1_171, 1_171 * 200), share), Some(false));
    }
}
