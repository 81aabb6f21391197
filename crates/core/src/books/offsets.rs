//! Which offsets may be committed: per partition, the highest *contiguous* completed
//! offset. Batches complete out of order, so a completed offset above a pending one
//! must wait until the gap below it closes.
//!
//! Kafka commits the *next* offset to read, so the committable value of a partition is
//! its lowest pending offset, or one past the highest offset seen when nothing is
//! pending.

use std::sync::{Arc, Mutex};

use hashbrown::HashMap;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::pending::Pending;
use crate::record::TopicPartition;

/// A commit asked for and not yet confirmed is asked for again after this long.
const UNCONFIRMED_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets handed downstream and not yet delivered or dead-lettered.
    pending: Pending,
    /// The highest offset handed downstream.
    highest_seen: Option<i64>,
    /// The last value the broker confirmed committed (or `None` before the first).
    committed: Option<i64>,
    /// The last value asked for and when, while unconfirmed.
    requested: Option<(i64, Instant)>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            Some(lowest) => Some(lowest),
            None => self.highest_seen.map(|h| h + 1),
        }
    }
}

/// Shared record of in-process offsets for every assigned partition.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    /// hashbrown's map, hashed with foldhash (std's SipHash cost more than the set).
    inner: Arc<Mutex<HashMap<TopicPartition, PartitionState>>>,
    /// Woken when a partition's committable offset advances.
    advanced: Arc<Notify>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `tp` has been handed downstream.
    pub fn track(&self, tp: &TopicPartition, offset: i64) {
        let mut map = self.lock();
        // A key is made only for a partition new to the map.
        let state = map.entry_ref(tp).or_default();
        state.pending.insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
    }

    /// Records that these offsets are delivered, dead-lettered or parked. Offsets of
    /// partitions no longer assigned are ignored. Every completion is a final outcome of
    /// that very record, so one that arrives after its partition was revoked and
    /// assigned here again (a request answered as it was being abandoned) marks an
    /// offset that is indeed finished: committing past it loses nothing.
    pub fn complete<'a>(&self, done: impl IntoIterator<Item = (&'a TopicPartition, i64)>) {
        let mut map = self.lock();
        let mut advanced = false;
        for (tp, offset) in done {
            if let Some(state) = map.get_mut(tp) {
                advanced |= state.pending.first() == Some(offset);
                state.pending.remove(offset);
            }
        }
        drop(map);
        if advanced {
            self.advanced.notify_one();
        }
    }

    /// Notified (`notify_one`) when some partition's committable offset advances; an
    /// advance while nobody waits is remembered for the next wait.
    pub(crate) fn advances(&self) -> Arc<Notify> {
        self.advanced.clone()
    }

    /// Offsets (next offset to read) that can be committed and differ from the last
    /// confirmed commit, leaving out those asked for moments ago and not yet answered.
    /// Call [`mark_requested`](Self::mark_requested) when asking the broker and
    /// [`mark_committed`](Self::mark_committed) once it confirms.
    pub fn committable(&self) -> Vec<(TopicPartition, i64)> {
        let map = self.lock();
        let now = Instant::now();
        let mut out: Vec<_> = map
            .iter()
            .filter_map(|(tp, s)| {
                let next = s.committable()?;
                let asked = s
                    .requested
                    .is_some_and(|(r, at)| r == next && now < at + UNCONFIRMED_AFTER);
                (s.committed != Some(next) && !asked).then(|| (tp.clone(), next))
            })
            .collect();
        out.sort();
        out
    }

    /// Remembers that these commits were asked for (an asynchronous commit on its way).
    pub(crate) fn mark_requested(&self, offsets: &[(TopicPartition, i64)]) {
        let mut map = self.lock();
        let now = Instant::now();
        for (tp, next) in offsets {
            if let Some(state) = map.get_mut(tp) {
                state.requested = Some((*next, now));
            }
        }
    }

    /// Forgets that these commits were asked for (the broker refused them), so the next
    /// commit asks again.
    pub(crate) fn mark_failed(&self, offsets: &[(TopicPartition, i64)]) {
        let mut map = self.lock();
        for (tp, next) in offsets {
            if let Some(state) = map.get_mut(tp) {
                if state.requested.is_some_and(|(r, _)| r == *next) {
                    state.requested = None;
                }
            }
        }
    }

    /// Committable offsets of just these partitions, whether or not already committed.
    pub(crate) fn committable_for(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        let map = self.lock();
        tps.iter()
            .filter_map(|tp| Some((tp.clone(), map.get(tp)?.committable()?)))
            .collect()
    }

    /// Remembers a commit the broker confirmed so it is not repeated.
    pub(crate) fn mark_committed(&self, offsets: &[(TopicPartition, i64)]) {
        let mut map = self.lock();
        for (tp, next) in offsets {
            if let Some(state) = map.get_mut(tp) {
                // Confirmations may arrive out of order: keep the highest.
                state.committed = Some(state.committed.map_or(*next, |c| c.max(*next)));
                if state.requested.is_some_and(|(r, _)| r <= *next) {
                    state.requested = None;
                }
            }
        }
    }

    /// Events of these partitions still pending.
    pub(crate) fn pending_in(&self, tps: &[TopicPartition]) -> usize {
        let map = self.lock();
        tps.iter()
            .filter_map(|tp| map.get(tp))
            .map(|s| s.pending.len())
            .sum()
    }

    /// Forgets revoked partitions; their late completions are ignored from now on.
    pub(crate) fn forget(&self, tps: &[TopicPartition]) {
        let mut map = self.lock();
        for tp in tps {
            map.remove(tp);
        }
    }

    /// The next offset to read in `tp` (one past the highest seen), if any was seen.
    pub(crate) fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
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

    #[tokio::test(start_paused = true)]
    async fn a_commit_is_asked_for_once_and_again_when_refused_or_unanswered() {
        let t = OffsetTracker::new();
        for o in 0..3 {
            t.track(&tp(0), o);
        }
        t.complete([(&tp(0), 0), (&tp(0), 1), (&tp(0), 2)]);
        assert_eq!(t.committable(), vec![(tp(0), 3)]);
        t.mark_requested(&[(tp(0), 3)]);
        assert_eq!(t.committable(), vec![], "on its way: not asked twice");
        t.mark_failed(&[(tp(0), 3)]);
        assert_eq!(t.committable(), vec![(tp(0), 3)], "refused: asked again");
        t.mark_requested(&[(tp(0), 3)]);
        tokio::time::advance(UNCONFIRMED_AFTER).await;
        assert_eq!(t.committable(), vec![(tp(0), 3)], "unanswered: asked again");
        t.mark_committed(&[(tp(0), 3)]);
        assert_eq!(t.committable(), vec![]);
        // A late confirmation of an older commit does not move it back.
        t.mark_committed(&[(tp(0), 1)]);
        assert_eq!(t.committable(), vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_advance_of_the_contiguous_offset_wakes_the_committer() {
        let t = OffsetTracker::new();
        for o in 0..3 {
            t.track(&tp(0), o);
        }
        let quick = std::time::Duration::from_millis(1);
        let advances = t.advances();
        t.complete([(&tp(0), 2)]);
        let waited = tokio::time::timeout(quick, advances.notified()).await;
        assert!(waited.is_err(), "a gap below");
        t.complete([(&tp(0), 0)]);
        let waited = tokio::time::timeout(quick, advances.notified()).await;
        assert!(waited.is_ok(), "remembered");
    }

    use proptest::prelude::*;

    proptest! {
        /// Any completion order of any set of offsets: what may be committed is always
        /// the first offset not completed (one past the highest when all are), never
        /// beyond.
        #[test]
        fn any_completion_order_commits_exactly_the_contiguous_prefix(
            (offsets, order) in proptest::collection::btree_set(0i64..500, 1..60)
                .prop_flat_map(|set| {
                    let offsets: Vec<i64> = set.into_iter().collect();
                    let n = offsets.len();
                    (
                        Just(offsets),
                        proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n)
                            .prop_shuffle(),
                    )
                })
        ) {
            let t = OffsetTracker::new();
            for &o in &offsets {
                t.track(&tp(0), o);
            }
            let mut done = std::collections::BTreeSet::new();
            for i in order {
                t.complete([(&tp(0), offsets[i])]);
                done.insert(offsets[i]);
                let expected = offsets
                    .iter()
                    .find(|o| !done.contains(o))
                    .copied()
                    .unwrap_or(offsets[offsets.len() - 1] + 1);
                prop_assert_eq!(t.committable(), vec![(tp(0), expected)]);
            }
        }
    }
}
