//! What one lane holds: its queues and the batches in flight, and how a batch is
//! formed, sent, answered, failed or taken back for parking.

use super::*;

/// A batch in flight, shared with its delivery task so that parking can take its
/// events back.
pub(super) type Batch = Arc<Vec<Envelope>>;
pub(super) type BatchResult = (u64, Vec<ItemOutcome>);

/// What a lane holds: queued events and batches in flight.
#[derive(Default)]
pub(super) struct Held {
    pub(super) queues: Queues,
    pub(super) in_flight: JoinSet<BatchResult>,
    pub(super) batches: HashMap<u64, Batch>,
    /// The batch each delivery task carries, to fail it if the task panics.
    pub(super) tasks: HashMap<tokio::task::Id, u64>,
    /// Each delivery task by its batch, to abandon it when its partition is revoked.
    pub(super) aborts: HashMap<u64, tokio::task::AbortHandle>,
    /// Batches whose task panicked and are being dead-lettered.
    pub(super) failed: std::collections::HashSet<u64>,
    pub(super) next_batch: u64,
    /// Bytes of the events held, queued or in flight (`Envelope::held_bytes`).
    pub(super) bytes: usize,
}

impl Held {
    /// Events held, queued or in flight.
    pub(super) fn events(&self) -> usize {
        self.queues.total + self.batches.values().map(|b| b.len()).sum::<usize>()
    }

    /// Takes an event into the queues.
    pub(super) fn push(&mut self, envelope: Envelope, ordering: Ordering) {
        self.bytes += envelope.held_bytes();
        self.queues.push(envelope, ordering);
    }

    /// Sends every batch that is due (full, lingered long enough, or draining) while
    /// the lane has room in flight.
    pub(super) fn send_ready(
        &mut self,
        workspace: &Arc<str>,
        services: &Arc<Services>,
        shape: BatchShape,
        draining: bool,
    ) {
        while self.in_flight.len() < services.max_in_flight && self.queues.runnable_events > 0 {
            let lingered = self
                .queues
                .oldest_runnable()
                .is_some_and(|t| t + shape.linger <= Instant::now());
            let ready = draining
                || lingered
                || self.queues.runnable_events >= shape.max_events
                || self.queues.runnable_bytes >= shape.max_bytes;
            if !ready {
                break;
            }
            let batch =
                self.queues
                    .take_batch(shape.max_events, shape.max_bytes, services.ordering);
            if batch.is_empty() {
                break;
            }
            let bytes = batch.iter().map(|e| e.encoded.len()).sum();
            services.metrics.batch(workspace, batch.len(), bytes);
            let batch: Batch = Arc::new(batch);
            let id = self.next_batch;
            self.next_batch += 1;
            self.batches.insert(id, batch.clone());
            let services = services.clone();
            let workspace = workspace.clone();
            let task = self.in_flight.spawn(async move {
                let items: Vec<Encoded> = batch.iter().map(|e| e.encoded.clone()).collect();
                let outcomes = services.destination.deliver(&workspace, &items).await;
                // Refused events complete only once their dead letters are acknowledged.
                let letters = batch.iter().zip(&outcomes).filter_map(|(e, o)| match o {
                    ItemOutcome::Rejected(failure) => {
                        Some(services.dead_letters.send(DeadLetter {
                            origin: &e.origin,
                            raw: &e.raw,
                            workspace: Some(&workspace),
                            failure,
                        }))
                    }
                    ItemOutcome::Delivered => None,
                });
                futures::future::join_all(letters).await;
                (id, outcomes)
            });
            self.tasks.insert(task.id(), id);
            self.aborts.insert(id, task);
        }
    }

    /// Batch `id`'s task (`task`) ended with `outcomes`: its events are done, or
    /// queued again where the outcomes say so.
    pub(super) fn answered(
        &mut self,
        workspace: &Arc<str>,
        services: &Arc<Services>,
        task: tokio::task::Id,
        id: u64,
        outcomes: Vec<ItemOutcome>,
    ) {
        self.tasks.remove(&task);
        self.failed.remove(&id);
        self.aborts.remove(&id);
        // A batch taken back (its partition revoked) as its answer came: what it
        // carried was queued again or left to the new owner (at least once).
        let Some(batch) = self.batches.remove(&id) else {
            return;
        };
        // Its task has ended, so this is the only handle left.
        let batch = Arc::unwrap_or_clone(batch);
        self.bytes = self
            .bytes
            .saturating_sub(batch.iter().map(Envelope::held_bytes).sum::<usize>());
        finish(workspace, services, &mut self.queues, batch, outcomes);
    }

    /// The drain deadline passed: in-flight requests are aborted and what is held is
    /// left uncommitted, for the partitions' next owner.
    pub(super) fn abandon(&mut self, workspace: &str) {
        self.in_flight.abort_all();
        tracing::warn!(
            workspace = %workspace, held = self.queues.total,
            "drain deadline passed: abandoning undelivered events (left uncommitted)"
        );
    }

    /// A delivery task panicked (a defect, never an answer from the API): its batch is
    /// dead-lettered with the panic as the reason, so its offsets complete and its users
    /// move on, rather than staying "in flight" for ever.
    pub(super) fn fail_batch(
        &mut self,
        workspace: &Arc<str>,
        services: &Arc<Services>,
        e: JoinError,
    ) {
        let Some(id) = self.tasks.remove(&e.id()) else {
            return;
        };
        self.aborts.remove(&id);
        let Some(batch) = self.batches.get(&id).cloned() else {
            return;
        };
        if !self.failed.insert(id) {
            // Dead-lettering it panicked too: nothing more can be done here without
            // losing it. Its offsets stay uncommitted (the partition's commit holds
            // there) and a restart delivers it again.
            tracing::error!(
                workspace = %workspace, events = batch.len(),
                "dead-lettering a failed batch panicked as well; its events stay \
                 uncommitted until the pod restarts"
            );
            return;
        }
        let panic = e.try_into_panic().map_or_else(
            |e| e.to_string(),
            |p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into())
            },
        );
        tracing::error!(
            workspace = %workspace, events = batch.len(),
            "delivery task panicked ({panic}); its events are dead-lettered (reason internal_error)"
        );
        let failure = Failure::without_request(
            crate::record::FailureReason::InternalError,
            format!("delivery task panicked: {panic}"),
        );
        let (services, workspace) = (services.clone(), workspace.clone());
        let task = self.in_flight.spawn(async move {
            let letters = batch.iter().map(|e| {
                services.dead_letters.send(DeadLetter {
                    origin: &e.origin,
                    raw: &e.raw,
                    workspace: Some(&workspace),
                    failure: &failure,
                })
            });
            futures::future::join_all(letters).await;
            let outcomes = vec![ItemOutcome::Rejected(failure.clone()); batch.len()];
            (id, outcomes)
        });
        self.tasks.insert(task.id(), id);
    }

    /// Source partitions `revoked` went to another pod: the batches in flight that carry
    /// their events are abandoned — the new owner sends those again, and a retry here
    /// (for up to `retry.max_elapsed_ms`) could land a user's older event after its
    /// newer ones. Their other events go back ahead of their users' queued ones.
    /// Returns the abandoned events of the revoked partitions.
    pub(super) fn revoke_in_flight(
        &mut self,
        revoked: &[TopicPartition],
        ordering: Ordering,
    ) -> Vec<Envelope> {
        let mut ids: Vec<u64> = self
            .batches
            .iter()
            .filter(|(id, batch)| {
                self.aborts.contains_key(*id) && batch.iter().any(|e| e.read_from(revoked))
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        let (mut gone, mut kept, mut users) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            if let Some(task) = self.aborts.remove(&id) {
                task.abort();
                self.tasks.remove(&task.id());
            }
            let batch = self.batches.remove(&id).expect("listed");
            for envelope in Arc::unwrap_or_clone(batch) {
                users.push(envelope.user.clone());
                if envelope.read_from(revoked) {
                    gone.push(envelope);
                } else {
                    kept.push(envelope);
                }
            }
        }
        self.bytes = self
            .bytes
            .saturating_sub(gone.iter().map(Envelope::held_bytes).sum::<usize>());
        self.queues.requeue_front(kept, users, ordering);
        gone
    }

    /// Takes every event back, in an order that keeps each user's: a user's batch in
    /// flight comes before its queued events. In-flight requests are abandoned (what
    /// they may have delivered is delivered again later: at least once).
    pub(super) async fn take_all(&mut self) -> Vec<Envelope> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.tasks.clear();
        self.aborts.clear();
        self.failed.clear();
        let mut ids: Vec<u64> = self.batches.keys().copied().collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            let batch = self.batches.remove(&id).expect("listed");
            out.extend(Arc::unwrap_or_clone(batch));
        }
        out.extend(std::mem::take(&mut self.queues).into_events());
        self.bytes = 0;
        out
    }
}
