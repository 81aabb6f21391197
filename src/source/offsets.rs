//! Which offsets may be committed: per partition, the highest *contiguous* completed
//! offset. Batches complete out of order, so a completed offset above a pending one
//! must wait until the gap below it closes.
//!
//! Kafka commits the *next* offset to read, so the committable value of a partition is
//! its lowest pending offset, or one past the highest offset seen when nothing is
//! pending.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A topic and a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Names a partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets handed downstream and not yet delivered or dead-lettered.
    pending: BTreeSet<i64>,
    /// The highest offset handed downstream.
    highest_seen: Option<i64>,
    /// The last value committed (or `None` before the first commit).
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            Some(&lowest) => Some(lowest),
            None => self.highest_seen.map(|h| h + 1),
        }
    }
}

/// Shared record of in-process offsets for every assigned partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    inner: Arc<Mutex<HashMap<TopicPartition, PartitionState>>>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `tp` has been handed downstream.
    pub fn track(&self, tp: &TopicPartition, offset: i64) {
        let mut map = self.lock();
        let state = map.entry(tp.clone()).or_default();
        state.pending.insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
    }

    /// Records that these offsets are delivered or dead-lettered. Offsets of partitions
    /// no longer assigned are ignored.
    pub fn complete<'a>(&self, done: impl IntoIterator<Item = (&'a TopicPartition, i64)>) {
        let mut map = self.lock();
        for (tp, offset) in done {
            if let Some(state) = map.get_mut(tp) {
                state.pending.remove(&offset);
            }
        }
    }

    /// Offsets (next offset to read) that can be committed and differ from the last
    /// commit. Call [`mark_committed`](Self::mark_committed) once the commit succeeded.
    pub fn committable(&self) -> Vec<(TopicPartition, i64)> {
        let map = self.lock();
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(tp, s)| {
                let next = s.committable()?;
                (s.committed != Some(next)).then(|| (tp.clone(), next))
            })
            .collect();
        out.sort();
        out
    }

    /// Committable offsets of just these partitions, whether or not already committed.
    pub fn committable_for(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let map = self.lock();
        tps.iter()
            .filter_map(|tp| Some((tp.clone(), map.get(tp)?.committable()?)))
            .collect()
    }

    /// Remembers a successful commit so it is not repeated.
    pub fn mark_committed(&self, offsets: &[(TopicPartition, i64)]) {
        let mut map = self.lock();
        for (tp, next) in offsets {
            if let Some(state) = map.get_mut(tp) {
                state.committed = Some(*next);
            }
        }
    }

    /// Events of these partitions still pending.
    pub fn pending_in(&self, tps: &[TopicPartition]) -> usize {
        let map = self.lock();
        tps.iter()
            .filter_map(|tp| map.get(tp))
            .map(|s| s.pending.len())
            .sum()
    }

    /// Forgets revoked partitions; their late completions are ignored from now on.
    pub fn forget(&self, tps: &[TopicPartition]) {
        let mut map = self.lock();
        for tp in tps {
            map.remove(tp);
        }
    }

    /// The next offset to read in `tp` (one past the highest seen), if any was seen.
    pub fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.lock().get(tp)?.highest_seen.map(|h| h + 1)
    }

    /// Events handed downstream and not yet completed, over all partitions.
    pub fn pending(&self) -> usize {
        self.lock().values().map(|s| s.pending.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, PartitionState>> {
        // A panic while holding this lock would leave plain data in a valid state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn out_of_order_completion_never_commits_past_a_gap() {
        let t = OffsetTracker::new();
        for o in 10..15 {
            t.track(&tp(0), o);
        }
        // Nothing done: commit would be 10, the first pending (re-read from there).
        assert_eq!(t.committable(), vec![(tp(0), 10)]);
        t.mark_committed(&[(tp(0), 10)]);

        // 12, 13 and 14 finish first: 10 is still a gap, nothing new to commit.
        t.complete([(&tp(0), 12), (&tp(0), 14), (&tp(0), 13)]);
        assert_eq!(t.committable(), vec![]);

        // 10 finishes: 11 is now the first pending.
        t.complete([(&tp(0), 10)]);
        assert_eq!(t.committable(), vec![(tp(0), 11)]);

        // 11 finishes: all done, commit the next offset to read, one past 14.
        t.complete([(&tp(0), 11)]);
        assert_eq!(t.committable(), vec![(tp(0), 15)]);
        t.mark_committed(&[(tp(0), 15)]);
        assert_eq!(t.committable(), vec![]);
    }

    #[test]
    fn partitions_are_independent_and_forgotten_ones_ignore_completions() {
        let t = OffsetTracker::new();
        t.track(&tp(0), 0);
        t.track(&tp(1), 7);
        t.complete([(&tp(1), 7)]);
        assert_eq!(t.committable(), vec![(tp(0), 0), (tp(1), 8)]);
        assert_eq!(t.pending_in(&[tp(0), tp(1)]), 1);

        t.forget(&[tp(0)]);
        t.complete([(&tp(0), 0)]);
        assert_eq!(t.committable(), vec![(tp(1), 8)]);
        assert_eq!(t.pending(), 0);
    }
}
