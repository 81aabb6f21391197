//! What the process holds of the source: events read from Kafka and not yet done with
//! (delivered, dead-lettered or parked), counted in events and in bytes. The consumer
//! stops reading when either bound is reached (`kafka.max_buffered_events`,
//! `kafka.max_buffered_bytes`), so neither many small events nor a few large ones can
//! outgrow the pod. One type owns both counts and their gauges, so every place that
//! takes an event in or lets one go says so in one call.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Events and bytes held, with their gauges.
#[derive(Debug)]
pub struct Buffered {
    events: AtomicUsize,
    bytes: AtomicUsize,
    /// Told of every release, for a consumer waiting to read again.
    let_go: Notify,
    /// Events released since start: the rate the pod gets through its work.
    finished: std::sync::atomic::AtomicU64,
    metrics: Metrics,
}

impl Buffered {
    /// Nothing held yet.
    pub fn new(metrics: Metrics) -> Self {
        Buffered {
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            let_go: Notify::new(),
            finished: Default::default(),
            metrics,
        }
    }

    /// One event of `bytes` taken in.
    pub fn add(&self, bytes: usize) {
        let events = self.events.fetch_add(1, Ordering::AcqRel) + 1;
        let bytes = self.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.metrics.set_buffered(events, bytes);
    }

    /// `events` events of `bytes` in all finished (delivered, dead-lettered or
    /// parked): released, and counted in [`finished`](Self::finished).
    pub fn finish(&self, events: usize, bytes: usize) {
        self.finished.fetch_add(events as u64, Ordering::Relaxed);
        self.release(events, bytes);
    }

    /// `events` events of `bytes` in all let go (each with the size it was added with);
    /// unfinished, they are not counted in [`finished`](Self::finished).
    pub fn release(&self, events: usize, bytes: usize) {
        if events == 0 && bytes == 0 {
            return;
        }
        let events = self.events.fetch_sub(events, Ordering::AcqRel) - events;
        let bytes = self.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.metrics.set_buffered(events, bytes);
        self.let_go.notify_one();
    }

    /// Events finished since start (delivered, dead-lettered or parked; not those let
    /// go, which another reader delivers).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Completes at the next release (or at once if one came since the last wait).
    pub fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.let_go.notified()
    }

    /// Events held.
    pub fn events(&self) -> usize {
        self.events.load(Ordering::Acquire)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_gauges_follow_what_is_taken_in_and_let_go() {
        let metrics = Metrics::new();
        let held = Buffered::new(metrics.clone());
        held.add(100);
        held.add(300);
        held.release(1, 100);
        assert_eq!((held.events(), held.bytes()), (1, 300));
        assert_eq!((metrics.buffered(), metrics.buffered_bytes()), (1, 300));
        held.release(1, 300);
        assert_eq!((held.events(), held.bytes()), (0, 0));
    }
}
