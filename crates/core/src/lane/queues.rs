//! A lane's per-user queues: which users may send now, and the next batch in order.
//! Under `ordering = "per-user"` a user whose events went out waits, with its later
//! events, until that batch's final answer; the rest of the lane goes on.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap, HashSet};

use tokio::time::Instant;

use super::Envelope;
use crate::config::Ordering;
use crate::record::TopicPartition;

/// Bytes of a v2 batch body around its items (`{"batch":[` … `]}`), plus one comma per
/// item counted with the item.
pub(super) const BATCH_OVERHEAD: usize = 12;

#[derive(Debug, Default)]
struct UserQueue {
    events: VecDeque<Envelope>,
    bytes: usize,
    in_flight: bool,
}

/// The events a lane holds, per user, and which users may send now.
#[derive(Debug, Default)]
pub struct Queues {
    /// hashbrown's, hashed with foldhash seeded per map: std's SipHash was a sixth of
    /// a lane's work.
    users: HashMap<Arc<str>, UserQueue>,
    /// Users with events and nothing in flight, roughly oldest first.
    runnable: VecDeque<Arc<str>>,
    pub(super) runnable_events: usize,
    pub(super) runnable_bytes: usize,
    pub(super) total: usize,
}

impl Queues {
    /// Every event still queued, users in no particular order.
    pub(crate) fn into_events(self) -> impl Iterator<Item = Envelope> {
        self.users.into_values().flat_map(|queue| queue.events)
    }

    /// Queues `envelope` behind its user's earlier events.
    pub fn push(&mut self, envelope: Envelope, ordering: Ordering) {
        let size = envelope.encoded.len() + 1;
        self.total += 1;
        // The user's name is copied only for a user new to the queues, and shared with
        // the runnable list.
        let entry = match self.users.entry_ref(user_key(&envelope, ordering)) {
            EntryRef::Occupied(entry) => entry,
            EntryRef::Vacant(entry) => entry.insert_entry(UserQueue::default()),
        };
        let in_flight = entry.get().in_flight;
        let runnable_key =
            (!in_flight && entry.get().events.is_empty()).then(|| entry.key().clone());
        let queue = entry.into_mut();
        queue.events.push_back(envelope);
        queue.bytes += size;
        if !in_flight {
            if let Some(key) = runnable_key {
                self.runnable.push_back(key);
            }
            self.runnable_events += 1;
            self.runnable_bytes += size;
        }
    }

    /// When the oldest event that could go now arrived (the linger timer's start).
    pub(crate) fn oldest_runnable(&self) -> Option<Instant> {
        let user = self.runnable.front()?;
        self.users.get(user)?.events.front().map(|e| e.arrived)
    }

    /// Takes the next batch in order; under per-user ordering the users taken become
    /// in flight.
    pub fn take_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
        ordering: Ordering,
    ) -> Vec<Envelope> {
        // Sized once: grown an event at a time, a batch was copied over several times.
        let mut batch = Vec::with_capacity(max_events.min(self.runnable_events));
        let mut bytes = BATCH_OVERHEAD;
        // Taken off the front, and put back if it stays there (no copy of its name).
        while let Some(user) = self.runnable.pop_front() {
            let queue = self
                .users
                .get_mut(&user)
                .expect("runnable users have queues");
            let mut full = false;
            while let Some(next) = queue.events.front() {
                let size = next.encoded.len() + 1;
                if batch.len() == max_events || (!batch.is_empty() && bytes + size > max_bytes) {
                    full = true;
                    break;
                }
                let envelope = queue.events.pop_front().expect("front exists");
                queue.bytes -= size;
                bytes += size;
                self.runnable_events -= 1;
                self.runnable_bytes -= size;
                self.total -= 1;
                batch.push(envelope);
            }
            let took_any = batch
                .last()
                .is_some_and(|e| user_key(e, ordering) == &*user);
            if ordering == Ordering::PerUser && took_any {
                // The rest of this user's events wait for the batch's final answer.
                queue.in_flight = true;
                self.runnable_events -= queue.events.len();
                self.runnable_bytes -= queue.bytes;
            } else if queue.events.is_empty() {
                self.users.remove(&user);
            } else {
                self.runnable.push_front(user);
            }
            if full {
                break;
            }
        }
        if batch.capacity() > 2 * batch.len() {
            // Cut short by bytes: a batch in flight keeps no room for events it lacks.
            batch.shrink_to_fit();
        }
        batch
    }

    /// Drops the queued events read from `revoked` partitions and returns them: the
    /// partitions' new owner reads them again from the last commit, so delivering them
    /// here too would only duplicate them, and, were a partition to come back, send a
    /// user's older copies after newer ones. Batches in flight are left to the caller;
    /// a user in flight stays so (its later events still wait for that answer).
    pub(crate) fn drop_partitions(
        &mut self,
        revoked: &[TopicPartition],
        ordering: Ordering,
    ) -> Vec<Envelope> {
        let gone = |e: &Envelope| e.read_from(revoked);
        if !self.users.values().any(|q| q.events.iter().any(gone)) {
            return Vec::new();
        }
        let mut dropped = Vec::new();
        for (key, queue) in self.take_users() {
            if queue.in_flight {
                self.users.insert(
                    key,
                    UserQueue {
                        in_flight: true,
                        ..UserQueue::default()
                    },
                );
            }
            for envelope in queue.events {
                if gone(&envelope) {
                    dropped.push(envelope);
                } else {
                    self.push(envelope, ordering);
                }
            }
        }
        dropped
    }

    /// Batches carrying `users` were taken back: `events` (theirs, in batch order) go
    /// back ahead of those users' queued events, and the users may send again. Users
    /// still in flight with other batches stay so.
    pub(crate) fn requeue_front(
        &mut self,
        events: Vec<Envelope>,
        users: impl IntoIterator<Item = String>,
        ordering: Ordering,
    ) {
        let released: HashSet<String> = users.into_iter().collect();
        let old = self.take_users();
        for envelope in events {
            self.push(envelope, ordering);
        }
        for (key, queue) in old {
            if queue.in_flight && !released.contains(&*key) {
                self.users.entry(key).or_default().in_flight = true;
            }
            for envelope in queue.events {
                self.push(envelope, ordering);
            }
        }
    }

    /// Empties the queues and returns every user's queue in the order a rebuild pushes
    /// them back: runnable users first, in their order, then the users in flight.
    fn take_users(&mut self) -> Vec<(Arc<str>, UserQueue)> {
        let mut old = std::mem::take(self);
        let mut order: Vec<Arc<str>> = old.runnable.drain(..).collect();
        order.extend(
            old.users
                .iter()
                .filter(|(_, q)| q.in_flight)
                .map(|(k, _)| k.clone()),
        );
        order
            .into_iter()
            .filter_map(|key| {
                let queue = old.users.remove(&key)?;
                Some((key, queue))
            })
            .collect()
    }

    /// A batch carrying these users has its final answer: they may send again.
    pub fn release(&mut self, users: impl IntoIterator<Item = String>) {
        for user in users {
            let Some((key, queue)) = self.users.get_key_value_mut(user.as_str()) else {
                continue;
            };
            if !queue.in_flight {
                continue;
            }
            queue.in_flight = false;
            if queue.events.is_empty() {
                self.users.remove(user.as_str());
            } else {
                self.runnable_events += queue.events.len();
                self.runnable_bytes += queue.bytes;
                // Its events waited longest: let them go first.
                let key = key.clone();
                self.runnable.push_front(key);
            }
        }
    }
}

fn user_key(envelope: &Envelope, ordering: Ordering) -> &str {
    match ordering {
        Ordering::PerUser => &envelope.user,
        Ordering::None => "",
    }
}
