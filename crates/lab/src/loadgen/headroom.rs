//! Holds the generator back while the broker would lose what it has not delivered.
//!
//! librdkafka's mock cluster keeps the last ~5 MiB of each partition and drops the
//! oldest message sets past that, read or not; a consumer whose position falls behind
//! them gets "offset out of range" and the events between are gone. So `sluice capacity
//! run` on it bounds the bytes any one partition holds unread. Only `done()` (delivered
//! or dead-lettered) is known, not how far the worker has read each partition, so the
//! bound is on `undone events × the hottest partition's bytes per acknowledged event`:
//! the worker pauses and resumes all its partitions together, so what it has not read
//! is spread like what was produced. Key skew (a Zipf user on one partition) and event
//! size are therefore measured, not assumed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bytes a record takes in a v2 record batch beyond its key, value and header strings
/// (length, attributes, timestamp and offset deltas, the varints of key, value and
/// three headers), rounded up.
pub(super) const RECORD_OVERHEAD: u64 = 24;

/// Bytes the producer got acknowledged, per partition.
#[derive(Debug)]
pub struct PartitionBytes {
    bytes: Vec<AtomicU64>,
    events: AtomicU64,
}

impl PartitionBytes {
    /// Counters for a topic of `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        PartitionBytes {
            bytes: (0..partitions.max(1)).map(|_| AtomicU64::new(0)).collect(),
            events: AtomicU64::new(0),
        }
    }

    /// One event of `bytes` was acknowledged on `partition`.
    pub(super) fn record(&self, partition: i32, bytes: u64) {
        let i = usize::try_from(partition).unwrap_or(0) % self.bytes.len();
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// Events acknowledged and the bytes of the partition that got the most.
    fn hottest(&self) -> (u64, u64) {
        let hot = self
            .bytes
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        (self.events.load(Ordering::Relaxed), hot)
    }
}

/// Bounds the backlog: before each send, waits while the hottest partition would hold
/// more than `max_partition_bytes` of events sent and not yet `done()`. The waits are
/// counted; they are lateness in the run.
#[derive(Clone)]
pub struct Headroom {
    /// Events done downstream (delivered or dead-lettered).
    pub done: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Most bytes of undone events one partition may hold.
    pub max_partition_bytes: u64,
    /// What the producer got acknowledged, per partition (filled by the sink).
    pub acked: Arc<PartitionBytes>,
    /// Sends that had to wait for the backlog to shrink.
    pub waited: Arc<AtomicU64>,
    /// `done()` when last read: it only grows, so a send within the bound of this
    /// reading needs no new one (reading it gathers metrics, too dear per event).
    last_done: Arc<AtomicU64>,
    /// The events-undone bound computed at that reading.
    last_bound: Arc<AtomicU64>,
}

impl std::fmt::Debug for Headroom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Headroom")
            .field("max_partition_bytes", &self.max_partition_bytes)
            .finish()
    }
}

/// Before this many acknowledgements the partitions' shares are not known yet.
const MIN_ACKED: u64 = 100;

impl Headroom {
    /// A headroom over a topic of `partitions` partitions.
    pub fn new(
        done: Arc<dyn Fn() -> u64 + Send + Sync>,
        max_partition_bytes: u64,
        partitions: usize,
    ) -> Self {
        Headroom {
            done,
            max_partition_bytes,
            acked: Arc::new(PartitionBytes::new(partitions)),
            waited: Arc::new(AtomicU64::new(0)),
            last_done: Arc::new(AtomicU64::new(0)),
            last_bound: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Most undone events allowed now: the byte budget over the hottest partition's
    /// bytes per acknowledged event. Until enough acks have come, every event is
    /// assumed to land on one partition at `first_bytes` each.
    fn bound(&self, first_bytes: u64) -> u64 {
        let (events, hot) = self.acked.hottest();
        if events < MIN_ACKED || hot == 0 {
            return self.max_partition_bytes / first_bytes.max(1);
        }
        (self.max_partition_bytes as u128 * events as u128 / hot as u128) as u64
    }

    /// Reads `done()` and the bound again; whether `sent` is within it.
    fn refresh(&self, sent: u64, first_bytes: u64) -> bool {
        let done = (self.done)();
        let bound = self.bound(first_bytes);
        self.last_done.store(done, Ordering::Relaxed);
        self.last_bound.store(bound, Ordering::Relaxed);
        sent.saturating_sub(done) <= bound
    }

    /// Waits while sending one more event (of `bytes`) after `sent` would put the
    /// hottest partition over its budget (or until `stop`), counting the send held
    /// back.
    pub(super) fn wait(&self, sent: u64, bytes: u64, stop: &CancellationToken) {
        let last = self.last_done.load(Ordering::Relaxed);
        if sent.saturating_sub(last) < self.last_bound.load(Ordering::Relaxed) {
            return;
        }
        if self.refresh(sent + 1, bytes) {
            return;
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        while !self.refresh(sent + 1, bytes) && !stop.is_cancelled() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headroom(done: Arc<AtomicU64>, budget: u64, partitions: usize) -> Headroom {
        Headroom::new(
            Arc::new(move || done.load(Ordering::Relaxed)),
            budget,
            partitions,
        )
    }

    #[test]
    fn before_acks_every_event_counts_against_one_partition() {
        let g = headroom(Arc::new(AtomicU64::new(0)), 10_000, 4);
        assert_eq!(g.bound(100), 100);
    }

    #[test]
    fn the_hottest_partition_sets_the_bound() {
        let g = headroom(Arc::new(AtomicU64::new(0)), 1_000_000, 4);
        // 1 000 events of 100 bytes: 700 on partition 0, 100 on each of the others.
        for i in 0..1_000 {
            g.acked.record(if i < 700 { 0 } else { 1 + i % 3 }, 100);
        }
        // The hot partition gets 70 bytes per event sent: 1 MB holds 14 285 undone.
        assert_eq!(g.bound(100), 14_285);
        // Spread evenly, four partitions hold four times as many as one would.
        let even = headroom(Arc::new(AtomicU64::new(0)), 1_000_000, 4);
        for i in 0..1_000 {
            even.acked.record(i % 4, 100);
        }
        assert_eq!(even.bound(100), 40_000);
    }

    #[test]
    fn a_send_past_the_bound_waits_for_the_worker() {
        let done = Arc::new(AtomicU64::new(0));
        let g = headroom(done.clone(), 1_000, 1);
        let go = CancellationToken::new();
        // 10 events of 100 bytes fill the budget without waiting.
        for sent in 0..10 {
            g.wait(sent, 100, &go);
        }
        assert_eq!(g.waited.load(Ordering::Relaxed), 0);
        // The eleventh waits (until the stop here: nothing gets done).
        let stopped = CancellationToken::new();
        stopped.cancel();
        g.wait(10, 100, &stopped);
        assert_eq!(g.waited.load(Ordering::Relaxed), 1);
        // Five done: five more go without waiting, the sixth would wait again.
        done.store(5, Ordering::Relaxed);
        for sent in 10..15 {
            g.wait(sent, 100, &go);
        }
        assert_eq!(g.waited.load(Ordering::Relaxed), 1);
        g.wait(15, 100, &stopped);
        assert_eq!(g.waited.load(Ordering::Relaxed), 2);
    }
}
