//! The offsets of one partition handed downstream and not yet finished, in the order a
//! partition hands them out: a sorted run where each offset is marked finished in
//! place. The run's front is always unfinished, so the lowest pending offset is its
//! first entry; finished entries are dropped from the front as it closes, and all at
//! once when they outnumber the unfinished ones, so the run never holds more than
//! twice what is pending.
//!
//! A partition is read in order, so an offset is almost always tracked above every
//! other (an append), and its offsets are mostly consecutive, so one is found at its
//! distance from the front or the back of the run (a binary search where a gap lies
//! between), where an ordered set allocated and rebalanced its nodes for each.

use std::collections::VecDeque;

/// Entries below which finished ones are not swept out (a sweep is a pass over all).
const SWEEP_FROM: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// (offset, finished), ascending by offset, the front unfinished.
    run: VecDeque<(i64, bool)>,
    /// Unfinished entries.
    count: usize,
}

impl Pending {
    /// Tracks `offset` (again, if it was finished).
    pub(super) fn insert(&mut self, offset: i64) {
        if self.run.back().is_none_or(|&(last, _)| last < offset) {
            self.run.push_back((offset, false));
            self.count += 1;
            return;
        }
        match self.find(offset) {
            Ok(i) => {
                if std::mem::replace(&mut self.run[i].1, false) {
                    self.count += 1;
                }
            }
            Err(i) => {
                self.run.insert(i, (offset, false));
                self.count += 1;
            }
        }
    }

    /// Marks `offset` finished; whether it was pending.
    pub(super) fn remove(&mut self, offset: i64) -> bool {
        let Ok(i) = self.find(offset) else {
            return false;
        };
        if std::mem::replace(&mut self.run[i].1, true) {
            return false;
        }
        self.count -= 1;
        while self.run.front().is_some_and(|&(_, finished)| finished) {
            self.run.pop_front();
        }
        if self.run.len() >= SWEEP_FROM && self.count * 2 < self.run.len() {
            self.run.retain(|&(_, finished)| !finished);
        }
        // Memory a burst took is given back once the run is a quarter of it.
        if self.run.capacity() > 4 * SWEEP_FROM && self.run.len() * 4 < self.run.capacity() {
            self.run.shrink_to(self.run.len() * 2);
        }
        true
    }

    /// The lowest pending offset.
    pub(super) fn first(&self) -> Option<i64> {
        self.run.front().map(|&(offset, _)| offset)
    }

    /// How many are pending.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    fn find(&self, offset: i64) -> Result<usize, usize> {
        let (Some(&(first, _)), Some(&(last, _))) = (self.run.front(), self.run.back()) else {
            return Err(0);
        };
        // A partition's offsets are mostly consecutive (a gap is a compacted record, a
        // transaction marker or a sweep): where the run has none between `offset` and
        // its front, or its back, the place is the distance from there.
        let from_front = offset
            .checked_sub(first)
            .and_then(|d| usize::try_from(d).ok());
        let from_back = last
            .checked_sub(offset)
            .and_then(|d| usize::try_from(d).ok())
            .and_then(|d| (self.run.len() - 1).checked_sub(d));
        for guess in [from_front, from_back].into_iter().flatten() {
            if self.run.get(guess).is_some_and(|&(o, _)| o == offset) {
                return Ok(guess);
            }
        }
        self.run.binary_search_by_key(&offset, |&(o, _)| o)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Track(i64),
        Finish(i64),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        // Mostly ascending tracks (a partition read in order), some going back (a
        // partition read again after a seek), finishes in any order, some of offsets
        // never tracked or finished twice.
        let op = prop_oneof![
            4 => (0i64..8).prop_map(Op::Track),
            1 => (-300i64..0).prop_map(Op::Track),
            4 => (-300i64..300).prop_map(Op::Finish),
        ];
        proptest::collection::vec(op, 0..600)
    }

    proptest! {
        #[test]
        fn pending_offsets_answer_as_an_ordered_set_of_them_would(ops in ops()) {
            let mut pending = Pending::default();
            let mut model = BTreeSet::new();
            let mut next = 0i64;
            for op in ops {
                match op {
                    Op::Track(step) if step >= 0 => {
                        next += step;
                        pending.insert(next);
                        model.insert(next);
                    }
                    Op::Track(back) => {
                        let offset = (next + back).max(0);
                        pending.insert(offset);
                        model.insert(offset);
                    }
                    Op::Finish(delta) => {
                        let offset = (next + delta).max(0);
                        prop_assert_eq!(pending.remove(offset), model.remove(&offset));
                    }
                }
                prop_assert_eq!(pending.first(), model.first().copied());
                prop_assert_eq!(pending.len(), model.len());
                prop_assert!(pending.run.len() <= (2 * model.len()).max(SWEEP_FROM));
            }
        }
    }

    #[test]
    fn a_stuck_front_keeps_at_most_twice_the_pending_entries() {
        let mut pending = Pending::default();
        pending.insert(0);
        for offset in 1..100_000 {
            pending.insert(offset);
            pending.remove(offset);
        }
        assert_eq!(pending.first(), Some(0));
        assert_eq!(pending.len(), 1);
        assert!(
            pending.run.len() <= SWEEP_FROM,
            "{} entries",
            pending.run.len()
        );
    }

    #[test]
    fn the_memory_of_a_burst_is_given_back_as_it_finishes() {
        let mut pending = Pending::default();
        for offset in 0..100_000 {
            pending.insert(offset);
        }
        for offset in 0..99_990 {
            pending.remove(offset);
        }
        assert_eq!(pending.first(), Some(99_990));
        assert!(
            pending.run.capacity() <= 4 * SWEEP_FROM,
            "{} slots kept for {} pending",
            pending.run.capacity(),
            pending.len()
        );
    }
}
