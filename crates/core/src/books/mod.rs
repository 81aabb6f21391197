//! Where every event read ends, in one of two ways, and nowhere else:
//!
//! - **done** — delivered, dead-lettered or parked: its offset completes (the source
//!   may commit past it) and it leaves the buffer;
//! - **let go** — its partition revoked, or its lane closed: it leaves the buffer and
//!   its offset stays uncommitted, for the next reader.
//!
//! Every path (the source, the lanes, parking, the parked-events readers, dead letters)
//! says which of the two in one call, so "completed but still counted" and "released
//! but never completed" cannot be written. Events read back from the parking topic
//! were never in the buffer's count (their workspace's share bounds them):
//! [`Entry::counted`] says which an event is.

use std::sync::Arc;

use crate::record::Origin;

mod buffered;
mod offsets;
mod pending;

pub use buffered::Buffered;
pub use offsets::OffsetTracker;

/// The books of everything in process: offsets in flight and the buffer's count.
#[derive(Debug, Clone)]
pub struct Books {
    tracker: OffsetTracker,
    buffered: Arc<Buffered>,
}

/// One event as the books know it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Where it was read.
    pub origin: &'a Origin,
    /// What it holds in memory (`kafka.max_buffered_bytes` counts it).
    pub bytes: usize,
    /// Whether it is in the buffer's count: read from the source (not back from the
    /// parking topic).
    pub counted: bool,
}

impl Books {
    /// Books over `tracker` and `buffered`.
    pub fn new(tracker: OffsetTracker, buffered: Arc<Buffered>) -> Self {
        Books { tracker, buffered }
    }

    /// `entry` was read: its offset is in process until done, and it is counted if
    /// it says so.
    pub(crate) fn taken_in(&self, entry: Entry<'_>) {
        self.tracker.track(&entry.origin.tp, entry.origin.offset);
        if entry.counted {
            self.buffered.add(entry.bytes);
        }
    }

    /// These are finished (delivered, dead-lettered or parked): their offsets complete
    /// and the counted ones leave the buffer (one pass, no copy: a batch's answer is
    /// on the delivery path).
    pub(crate) fn done<'a>(&self, entries: impl IntoIterator<Item = Entry<'a>>) {
        let (mut events, mut bytes) = (0, 0);
        self.tracker.complete(entries.into_iter().map(|e| {
            if e.counted {
                (events, bytes) = (events + 1, bytes + e.bytes);
            }
            (&e.origin.tp, e.origin.offset)
        }));
        self.buffered.finish(events, bytes);
    }

    /// These leave the process unfinished (their partition revoked, their lane
    /// closed): the counted ones leave the buffer, their offsets stay uncommitted.
    pub(crate) fn let_go<'a>(&self, entries: impl IntoIterator<Item = Entry<'a>>) {
        let (events, bytes) = entries
            .into_iter()
            .filter(|e| e.counted)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes));
        self.buffered.release(events, bytes);
    }

    /// The offsets in process (what the source commits by).
    pub fn tracker(&self) -> &OffsetTracker {
        &self.tracker
    }

    /// The buffer's count (what the source pauses by).
    pub fn buffered(&self) -> &Arc<Buffered> {
        &self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicPartition;

    fn origin(offset: i64) -> Origin {
        Origin {
            tp: TopicPartition::new("t", 0),
            offset,
        }
    }

    fn books() -> Books {
        let metrics = crate::metrics::Metrics::new();
        Books::new(OffsetTracker::new(), Arc::new(Buffered::new(metrics)))
    }

    #[test]
    fn a_done_event_commits_past_and_leaves_the_buffer_a_let_go_one_only_leaves() {
        let books = books();
        let (a, b) = (origin(0), origin(1));
        let entry = |origin, counted| Entry {
            origin,
            bytes: 10,
            counted,
        };
        books.taken_in(entry(&a, true));
        books.taken_in(entry(&b, true));
        assert_eq!(books.buffered().events(), 2);
        books.let_go([entry(&a, true)]);
        books.done([entry(&b, true)]);
        assert_eq!(books.buffered().events(), 0);
        assert_eq!(books.buffered().bytes(), 0);
        // a was let go: the commit stays at it, for the next reader.
        assert_eq!(
            books.tracker().committable(),
            vec![(TopicPartition::new("t", 0), 0)]
        );
    }

    #[test]
    fn events_let_go_do_not_count_in_the_finished_rate_the_scaling_signal_reads() {
        let books = books();
        let (a, b, c) = (origin(0), origin(1), origin(2));
        let entry = |origin| Entry {
            origin,
            bytes: 10,
            counted: true,
        };
        for o in [&a, &b, &c] {
            books.taken_in(entry(o));
        }
        // A revoke lets two go (the next owner delivers them); one was delivered.
        books.let_go([entry(&a), entry(&b)]);
        books.done([entry(&c)]);
        assert_eq!(books.buffered().finished(), 1);
        assert_eq!(books.buffered().events(), 0);
    }

    #[test]
    fn an_event_read_back_from_parking_never_touches_the_buffer() {
        let books = books();
        let a = origin(5);
        let entry = Entry {
            origin: &a,
            bytes: 10,
            counted: false,
        };
        books.taken_in(entry);
        assert_eq!(books.buffered().events(), 0);
        books.done([entry]);
        assert_eq!(books.buffered().events(), 0);
        assert_eq!(
            books.tracker().committable(),
            vec![(TopicPartition::new("t", 0), 6)]
        );
    }
}
