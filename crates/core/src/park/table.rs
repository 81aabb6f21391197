//! Where each (workspace, source partition) stands in the parking protocol, and the
//! events held while it returns. Pure state, no I/O: the source drives it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lane::Envelope;
use crate::record::TopicPartition;

/// What to do with a workspace's next event from a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Straight to the workspace's lane.
    Lane,
    /// To the parking topic.
    Park,
    /// Keep it here until the parked events before it are back in the lane.
    Hold,
}

/// One (workspace, partition) off the direct path.
#[derive(Debug)]
enum Phase {
    /// New events go to the parking topic.
    Parked,
    /// A fence was written; new events wait here until the reader meets it.
    Returning {
        epoch: u64,
        held: VecDeque<Envelope>,
        /// When it began holding events (the fence was written, or its first event
        /// held since): a return that holds them too long is given up.
        since: tokio::time::Instant,
    },
    /// Back on the direct path; the reader's commit has not yet passed the fence, so
    /// the source's commits keep saying that parked events may wait.
    Draining { epoch: u64 },
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    /// Parking-topic offset from which this workspace's parked events of this
    /// partition may be found.
    start: i64,
    /// The assignment of the partition whose marks it was written to (`None`: the
    /// partition was not this pod's then): only that assignment's mark is its to take
    /// away. A lane a rebalance behind must not take away the mark a new assignment of
    /// the same partition read back.
    assignment: Option<u64>,
}

/// Per source partition this pod owns: the workspaces that may have parked events
/// waiting, and the parking-topic offset to read them from. A partition has an entry
/// (empty or not) from the moment its marks were inherited on assignment until it is
/// revoked, and only then: the parking ledger keeps the partition's floor from it (see
/// [`super::ledger`]), so a table never creates one (a lane that has not yet heard of a
/// revocation must not bring a partition back).
pub(crate) type ParkedMarks = Arc<Mutex<HashMap<TopicPartition, PartitionMarks>>>;

/// One owned partition's marks: the workspaces that may have parked events of it
/// waiting, from which parking-topic offset, for one assignment of it to this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionMarks {
    /// Which assignment of the partition to this pod they belong to (each has its own).
    pub(crate) assignment: u64,
    /// Workspace → the parking-topic offset its parked events may be found from.
    pub(crate) starts: BTreeMap<String, i64>,
}

impl PartitionMarks {
    /// The marks of a new assignment of a partition, starting with `starts`.
    pub(crate) fn new(starts: BTreeMap<String, i64>) -> Self {
        static ASSIGNMENTS: AtomicU64 = AtomicU64::new(1);
        PartitionMarks {
            assignment: ASSIGNMENTS.fetch_add(1, Ordering::Relaxed),
            starts,
        }
    }
}

/// The parking state of every (workspace, partition) this pod owns.
#[derive(Debug, Default)]
pub(crate) struct ParkTable {
    entries: HashMap<(String, TopicPartition), Entry>,
    next_epoch: u64,
    marks: ParkedMarks,
}

impl ParkTable {
    /// An empty table sharing `marks` with the commit paths.
    pub(crate) fn new(marks: ParkedMarks) -> Self {
        ParkTable {
            marks,
            ..ParkTable::default()
        }
    }

    /// Where `workspace`'s next event from `tp` goes.
    pub(crate) fn route(&self, workspace: &str, tp: &TopicPartition) -> Route {
        match self.entries.get(&(workspace.to_string(), tp.clone())) {
            None
            | Some(Entry {
                phase: Phase::Draining { .. },
                ..
            }) => Route::Lane,
            Some(Entry {
                phase: Phase::Parked,
                ..
            }) => Route::Park,
            Some(Entry {
                phase: Phase::Returning { .. },
                ..
            }) => Route::Hold,
        }
    }

    /// Keeps an event of a returning (workspace, partition).
    pub(crate) fn hold(&mut self, workspace: &str, tp: &TopicPartition, envelope: Envelope) {
        if let Some(Entry {
            phase: Phase::Returning { held, since, .. },
            ..
        }) = self.entries.get_mut(&(workspace.to_string(), tp.clone()))
        {
            if held.is_empty() {
                // What a return costs is how long it holds events: from the first.
                *since = tokio::time::Instant::now();
            }
            held.push_back(envelope);
        }
    }

    /// Events held for `workspace`, over its partitions.
    pub(crate) fn held(&self, workspace: &str) -> usize {
        self.entries
            .iter()
            .filter(|((w, _), _)| w == workspace)
            .map(|(_, e)| match &e.phase {
                Phase::Returning { held, .. } => held.len(),
                _ => 0,
            })
            .sum()
    }

    /// Whether `workspace` is off the direct path on any partition.
    pub(crate) fn is_parked(&self, workspace: &str) -> bool {
        self.entries.keys().any(|(w, _)| w == workspace)
    }

    /// Partitions where `workspace` is in the given state.
    fn partitions_where(&self, workspace: &str, f: impl Fn(&Phase) -> bool) -> Vec<TopicPartition> {
        self.entries
            .iter()
            .filter(|((w, _), e)| w == workspace && f(&e.phase))
            .map(|((_, tp), _)| tp.clone())
            .collect()
    }

    /// Parks `workspace` again wherever it is off the direct path, to do without its
    /// reader for a while: returns under way are given up (their fences go stale, and
    /// a fence its reader read but has not reported yet is ignored when it comes), and
    /// a partition draining (its fence read, direct again) is parked again at its old
    /// start. Returns the events returns held, in order, to be parked behind their
    /// fences; the lane's own events of those partitions are to be parked too.
    pub(crate) fn park_all(&mut self, workspace: &str) -> Vec<Envelope> {
        let mut held_all = Vec::new();
        let mine = self.entries.iter_mut().filter(|((w, _), _)| w == workspace);
        for (_, entry) in mine {
            if let Phase::Returning { held, .. } =
                std::mem::replace(&mut entry.phase, Phase::Parked)
            {
                held_all.extend(held);
            }
        }
        held_all
    }

    /// Parks `workspace` on `tp` (it was direct): its parked events will be found from
    /// parking-topic offset `start`.
    pub(crate) fn park(&mut self, workspace: &str, tp: &TopicPartition, start: i64) {
        let key = (workspace.to_string(), tp.clone());
        match self.entries.get_mut(&key) {
            Some(entry) => {
                // Draining still: parked events from before wait at the old start.
                entry.phase = Phase::Parked;
                let start = entry.start;
                self.mark(workspace, tp, start);
            }
            None => {
                let assignment = self.mark(workspace, tp, start);
                self.entries.insert(
                    key,
                    Entry {
                        phase: Phase::Parked,
                        start,
                        assignment,
                    },
                );
            }
        }
    }

    /// A newly assigned partition's commit said `workspace` may have parked events
    /// there from `start`: it returns at once (fence, hold) so they come first.
    pub(crate) fn inherit(&mut self, workspace: &str, tp: &TopicPartition, start: i64) -> u64 {
        let epoch = self.epoch();
        let assignment = self.mark(workspace, tp, start);
        self.entries.insert(
            (workspace.to_string(), tp.clone()),
            Entry {
                phase: Phase::Returning {
                    epoch,
                    held: VecDeque::new(),
                    since: tokio::time::Instant::now(),
                },
                start,
                assignment,
            },
        );
        epoch
    }

    /// Parked partitions of `workspace` (to return, or to park held events of).
    pub(crate) fn parked(&self, workspace: &str) -> Vec<TopicPartition> {
        self.partitions_where(workspace, |p| matches!(p, Phase::Parked))
    }

    /// Partitions of `workspace` off the direct path, with their start offsets.
    pub(crate) fn off_direct(&self, workspace: &str) -> Vec<(TopicPartition, i64)> {
        self.entries
            .iter()
            .filter(|((w, _), _)| w == workspace)
            .map(|((_, tp), e)| (tp.clone(), e.start))
            .collect()
    }

    /// Starts returning `workspace` on parked `tp`: returns the fence's epoch.
    pub(crate) fn begin_return(&mut self, workspace: &str, tp: &TopicPartition) -> Option<u64> {
        let epoch = self.epoch();
        let entry = self.entries.get_mut(&(workspace.to_string(), tp.clone()))?;
        if !matches!(entry.phase, Phase::Parked) {
            return None;
        }
        entry.phase = Phase::Returning {
            epoch,
            held: VecDeque::new(),
            since: tokio::time::Instant::now(),
        };
        Some(epoch)
    }

    /// Gives up returning `workspace` on `tp` (too much held): back to parked; the held
    /// events, in order, are to be parked behind the (now stale) fence.
    pub(crate) fn abort_return(
        &mut self,
        workspace: &str,
        tp: &TopicPartition,
    ) -> VecDeque<Envelope> {
        let Some(entry) = self.entries.get_mut(&(workspace.to_string(), tp.clone())) else {
            return VecDeque::new();
        };
        match std::mem::replace(&mut entry.phase, Phase::Parked) {
            Phase::Returning { held, .. } => held,
            other => {
                entry.phase = other;
                VecDeque::new()
            }
        }
    }

    /// Partitions where `workspace` is returning (holding new events).
    pub(crate) fn returning(&self, workspace: &str) -> Vec<TopicPartition> {
        self.partitions_where(workspace, |p| matches!(p, Phase::Returning { .. }))
    }

    /// Partitions where `workspace` has been returning for `limit` or longer and holds
    /// events: their source offsets wait on a reader that has not met the fence (its
    /// lane not taking more, the parking topic away), so the return is to be given up.
    pub(crate) fn overdue(
        &self,
        workspace: &str,
        limit: std::time::Duration,
    ) -> Vec<TopicPartition> {
        let now = tokio::time::Instant::now();
        self.partitions_where(workspace, |p| {
            matches!(p, Phase::Returning { held, since, .. } if !held.is_empty() && *since + limit <= now)
        })
    }

    /// The reader met fence `epoch` of (`workspace`, `tp`): every event parked before it
    /// is in the lane. Returns the held events, in order, for the lane behind them.
    pub(crate) fn fence_read(
        &mut self,
        workspace: &str,
        tp: &TopicPartition,
        epoch: u64,
    ) -> Option<VecDeque<Envelope>> {
        let entry = self.entries.get_mut(&(workspace.to_string(), tp.clone()))?;
        match &mut entry.phase {
            Phase::Returning { epoch: e, held, .. } if *e == epoch => {
                let held = std::mem::take(held);
                entry.phase = Phase::Draining { epoch };
                Some(held)
            }
            _ => None,
        }
    }

    /// The reader committed past fence `epoch`: (`workspace`, `tp`) is direct again.
    /// Returns whether it was.
    pub(crate) fn fence_committed(
        &mut self,
        workspace: &str,
        tp: &TopicPartition,
        epoch: u64,
    ) -> bool {
        let key = (workspace.to_string(), tp.clone());
        let done = matches!(
            self.entries.get(&key),
            Some(Entry { phase: Phase::Draining { epoch: e }, .. }) if *e == epoch
        );
        if done {
            if let Some(entry) = self.entries.remove(&key) {
                self.unmark(workspace, tp, entry.assignment);
            }
        }
        done
    }

    /// Partitions were revoked: forgets them; returns the events held for them (never
    /// completed, so redelivered to the new owner). Their marks are the revocation's to
    /// clear (after its last commit), not this table's: by the time a lane hears of the
    /// revocation the partition may be this pod's again, with marks just read back.
    pub(crate) fn revoked(&mut self, tps: &[TopicPartition]) -> Vec<Envelope> {
        let mut dropped = Vec::new();
        self.entries.retain(|(_, tp), entry| {
            if !tps.contains(tp) {
                return true;
            }
            if let Phase::Returning { held, .. } = &mut entry.phase {
                dropped.extend(held.drain(..));
            }
            false
        });
        dropped
    }

    /// A fence epoch no other fence in the parking topic has: fences outlive the pod
    /// that wrote them, and one left by a crashed pod must never be taken for this
    /// one's (that would release held events ahead of parked ones, and stop reading
    /// before them).
    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (nanos ^ fastrand::u64(..))
            .wrapping_add(self.next_epoch)
            .max(1)
    }

    /// Marks `workspace` on `tp` from `start` in the shared marks (other workspaces'
    /// tables keep theirs in the same map), if `tp` is this pod's; returns the
    /// assignment marked.
    fn mark(&self, workspace: &str, tp: &TopicPartition, start: i64) -> Option<u64> {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let of_tp = marks.get_mut(tp)?;
        of_tp.starts.insert(workspace.to_string(), start);
        Some(of_tp.assignment)
    }

    /// Takes `workspace`'s mark on `tp` away, if `tp` is still this pod's under the
    /// assignment it was marked in.
    fn unmark(&self, workspace: &str, tp: &TopicPartition, assignment: Option<u64>) {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(of_tp) = marks.get_mut(tp) {
            if Some(of_tp.assignment) == assignment {
                of_tp.starts.remove(workspace);
            }
        }
    }
}

#[cfg(test)]
mod tests;
