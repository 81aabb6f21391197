//! One burst of the consumer — the message it waited for and what it had ready behind
//! it — staged per workspace and handed to the lanes together: one channel message and
//! one wake-up per lane per burst instead of one per event (the wake-ups of a
//! per-event hand-off took about a fifth of the worker's CPU).
//!
//! Every poll of the consumer can serve a rebalance, and a revocation waits for the
//! revoked partitions' events in process to finish — which staged events cannot do
//! until the poll returns. So the revocation first takes out what is staged of its
//! partitions and lets it go (never handed over, uncommitted: the new owner reads it
//! again), and waits only for the rest. The source hands over what is staged before it
//! tells the lanes of any rebalance, so a lane sees an event before a revocation of its
//! partition and after the assignment it was read under.

use std::collections::HashMap;
use std::sync::Mutex;

use super::TopicPartition;
use crate::lane::Envelope;

/// Events read and judged for a lane, not yet handed to it, per workspace in the order
/// read.
#[derive(Debug, Default)]
pub(super) struct Staged {
    by_workspace: Mutex<HashMap<String, Vec<Envelope>>>,
}

impl Staged {
    /// `envelope` for `workspace`'s lane, behind what is staged for it.
    pub(super) fn stage(&self, workspace: String, envelope: Envelope) {
        self.lock().entry(workspace).or_default().push(envelope);
    }

    /// Everything staged, per workspace, in the order read; nothing stays.
    pub(super) fn take(&self) -> Vec<(String, Vec<Envelope>)> {
        let mut staged = self.lock();
        if staged.is_empty() {
            return Vec::new();
        }
        staged.drain().collect()
    }

    /// Takes out what is staged of `revoked`: those events are not handed over.
    pub(super) fn drop_partitions(&self, revoked: &[TopicPartition]) -> Vec<Envelope> {
        let mut dropped = Vec::new();
        let mut staged = self.lock();
        for events in staged.values_mut() {
            let (gone, stay): (Vec<Envelope>, Vec<Envelope>) = std::mem::take(events)
                .into_iter()
                .partition(|e| revoked.contains(&e.origin.tp));
            *events = stay;
            dropped.extend(gone);
        }
        staged.retain(|_, events| !events.is_empty());
        dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Envelope>>> {
        self.by_workspace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::Encoded;
    use crate::record::{Origin, Raw};

    fn event(partition: i32, offset: i64) -> Envelope {
        Envelope {
            origin: Origin {
                tp: TopicPartition::new("t", partition),
                offset,
            },
            raw: Raw::default(),
            user: "u".into(),
            event_time: None,
            encoded: Encoded::BatchItem(Vec::new()),
            arrived: tokio::time::Instant::now(),
            from_park: false,
        }
    }

    fn offsets(events: &[Envelope]) -> Vec<(i32, i64)> {
        events
            .iter()
            .map(|e| (e.origin.tp.partition, e.origin.offset))
            .collect()
    }

    #[test]
    fn a_burst_is_handed_over_per_workspace_in_the_order_read_and_nothing_stays() {
        let staged = Staged::default();
        for (ws, p, o) in [("a", 0, 1), ("b", 1, 1), ("a", 1, 2), ("a", 0, 3)] {
            staged.stage(ws.into(), event(p, o));
        }
        let mut burst = staged.take();
        burst.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(burst.len(), 2);
        assert_eq!(offsets(&burst[0].1), vec![(0, 1), (1, 2), (0, 3)]);
        assert_eq!(offsets(&burst[1].1), vec![(1, 1)]);
        assert!(staged.take().is_empty());
    }

    #[test]
    fn a_revocation_takes_out_only_the_revoked_partitions_events() {
        let staged = Staged::default();
        for (ws, p, o) in [("a", 0, 1), ("b", 1, 1), ("a", 1, 2), ("b", 1, 3)] {
            staged.stage(ws.into(), event(p, o));
        }
        let dropped = staged.drop_partitions(&[TopicPartition::new("t", 1)]);
        assert_eq!(offsets(&dropped).len(), 3);
        let burst = staged.take();
        assert_eq!(burst.len(), 1, "b had nothing else staged");
        assert_eq!(burst[0].0, "a");
        assert_eq!(offsets(&burst[0].1), vec![(0, 1)]);
    }
}
