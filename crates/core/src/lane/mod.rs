//! Lanes: one task per workspace that batches its events and keeps several requests in
//! flight, so a slow workspace never holds up another.
//!
//! Events wait in per-user queues. A user is *runnable* when it has events and none of
//! them is in flight; a batch takes runnable users' events in order, and with
//! `ordering = "per-user"` each user whose events went out waits until that request's
//! final answer (retries included) before its next events may go. That is how one
//! user's events reach the API in produced order with many requests in flight.
//!
//! A batch goes when it is full (count or bytes), when its oldest runnable event has
//! lingered long enough, or at once while draining. When the lane's sender is dropped
//! it drains what it holds and ends; the hard-stop token abandons in-flight requests
//! (their offsets simply stay uncommitted).

use hashbrown::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::books::{Books, Entry};
use crate::config::{Config, Ordering};
use crate::deliver::{Destination, Encoded, Failure, ItemOutcome};
use crate::dlq::{DeadLetter, DeadLetters};
use crate::metrics::Metrics;
use crate::record::{Origin, Raw, TopicPartition};

mod held;
mod isolation;
mod queues;

use held::Held;

pub(crate) use isolation::{Isolation, ParkingStep};
pub use queues::Queues;

/// One event on its way to the API.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Where it came from, to complete its offset.
    pub origin: Origin,
    /// The original key and bytes, for a dead letter.
    pub raw: Raw,
    /// The user it is about: the ordering key.
    pub user: String,
    /// The event's own timestamp (unix seconds), for end-to-end latency.
    pub event_time: Option<i64>,
    /// The encoded event.
    pub encoded: Encoded,
    /// When it entered the lane, for the linger timer.
    pub arrived: Instant,
    /// Read back from the parking topic: not counted in `buffered` (the source's
    /// back-pressure is not about it; the workspace's share bounds it).
    pub from_park: bool,
}

impl Envelope {
    /// Whether it was read from one of source partitions `tps`: from the partition
    /// itself, or back from the parking partition of its number (which holds it).
    pub(crate) fn read_from(&self, tps: &[TopicPartition]) -> bool {
        if self.from_park {
            tps.iter()
                .any(|tp| tp.partition == self.origin.tp.partition)
        } else {
            tps.contains(&self.origin.tp)
        }
    }

    /// What it holds in memory, as counted against `kafka.max_buffered_bytes`: the
    /// bytes as read (key and payload) and as encoded for the API.
    pub(crate) fn held_bytes(&self) -> usize {
        self.raw.held_bytes() + self.encoded.len()
    }

    /// It as the books know it.
    pub(crate) fn entry(&self) -> Entry<'_> {
        Entry {
            origin: &self.origin,
            bytes: self.held_bytes(),
            counted: !self.from_park,
        }
    }
}

/// What a lane receives, in one FIFO channel: its order is the order of events and of
/// the parking protocol's steps alike.
#[derive(Debug)]
pub(crate) enum LaneMsg {
    /// New events from the source, one burst of its reads, in the order read. (Every
    /// variant is small: a lane's channel keeps blocks of 32 messages allocated, and
    /// 10 000 lanes of 300-byte messages held hundreds of MB.)
    Events(Vec<Envelope>),
    /// A parked event read back from the parking topic.
    FromPark(Box<Envelope>),
    /// A step of the parking protocol (rebalances, fences).
    Park(ParkingStep),
}

/// What a workspace's lane holds, in events and bytes (as read plus encoded): what
/// its parked-events reader paces itself by.
#[derive(Debug, Default)]
pub struct LaneLoad {
    /// Events queued or in flight.
    pub events: AtomicUsize,
    /// Their bytes.
    pub bytes: AtomicUsize,
}

/// When a lane sends what it holds: a workspace's destination's batch shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// Most events per request.
    pub max_events: usize,
    /// Most bytes per request body.
    pub max_bytes: usize,
    /// How long a partial batch waits.
    pub linger: Duration,
}

impl BatchShape {
    /// The lane's part of a batch table.
    pub fn of(batch: &crate::config::BatchConfig) -> Self {
        BatchShape {
            max_events: batch.max_events,
            max_bytes: batch.max_bytes,
            linger: batch.linger_ms.duration(),
        }
    }
}

/// What the lanes (and the source, for dead letters and back-pressure) share.
pub struct Services {
    /// The API.
    pub destination: Arc<dyn Destination>,
    /// Where refused events go.
    pub dead_letters: Arc<DeadLetters>,
    /// Where every event ends: done (its offset completes) or let go.
    pub books: Books,
    /// Counts and logs outcomes.
    pub metrics: Metrics,
    /// What each workspace's lane holds (its part of the buffer, held to its share).
    pub in_lane: HashMap<String, Arc<LaneLoad>>,
    /// Cancelled when the drain deadline passes: in-flight requests are abandoned.
    pub hard_stop: CancellationToken,
    /// Each workspace's batch shape (its destination's).
    pub shapes: HashMap<String, BatchShape>,
    /// The shape of `[batch]`, for a workspace `shapes` does not list.
    pub default_shape: BatchShape,
    /// Requests in flight per lane.
    pub max_in_flight: usize,
    /// Whether one user's events are kept in order.
    pub ordering: Ordering,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("default_shape", &self.default_shape)
            .field("max_in_flight", &self.max_in_flight)
            .field("ordering", &self.ordering)
            .finish_non_exhaustive()
    }
}

impl Services {
    /// `workspace`'s batch shape.
    pub fn shape(&self, workspace: &str) -> BatchShape {
        self.shapes
            .get(workspace)
            .copied()
            .unwrap_or(self.default_shape)
    }

    /// Lane settings from the configuration.
    pub(crate) fn from_config(
        config: &Config,
        destination: Arc<dyn Destination>,
        dead_letters: Arc<DeadLetters>,
        books: Books,
        metrics: Metrics,
        hard_stop: CancellationToken,
    ) -> Self {
        Services {
            destination,
            dead_letters,
            books,
            metrics,
            in_lane: config
                .workspaces
                .iter()
                .map(|w| (w.id.clone(), Arc::default()))
                .collect(),
            hard_stop,
            shapes: config
                .workspaces
                .iter()
                .map(|w| (w.id.clone(), BatchShape::of(&config.batch_of(w))))
                .collect(),
            default_shape: BatchShape::of(&config.batch),
            max_in_flight: config.lanes.max_in_flight,
            ordering: config.lanes.ordering,
        }
    }
}

/// Sends each event to its workspace's lane.
#[derive(Debug, Default)]
pub struct Router {
    lanes: HashMap<String, mpsc::UnboundedSender<LaneMsg>>,
    /// Cancelled when the router is dropped: the lanes drain.
    closed: CancellationToken,
}

impl Drop for Router {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Router {
    /// Starts one lane per workspace on `tasks`, each with the isolation `isolation`
    /// makes for it (given the workspace and its lane's sender), if any.
    pub(crate) fn start<P: Isolation>(
        workspaces: impl IntoIterator<Item = String>,
        services: Arc<Services>,
        isolation: impl Fn(&str, mpsc::UnboundedSender<LaneMsg>) -> Option<P>,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let mut lanes = HashMap::new();
        let closed = CancellationToken::new();
        for workspace in workspaces {
            // Unbounded on purpose: the consumer must never block (it has to keep
            // polling); the bound is the buffered-events count, enforced by pausing.
            let (tx, rx) = mpsc::unbounded_channel();
            let park = isolation(&workspace, tx.clone());
            tasks.spawn(run_lane(
                workspace.clone(),
                rx,
                services.clone(),
                park,
                closed.clone(),
            ));
            lanes.insert(workspace, tx);
        }
        Router { lanes, closed }
    }

    /// Hands `events` (in the order read) to their workspace's lane; if there is no
    /// such lane (or it has closed), returns them so the caller can leave them
    /// uncommitted.
    pub(crate) fn route_all(
        &self,
        workspace: &str,
        events: Vec<Envelope>,
    ) -> Result<(), Vec<Envelope>> {
        match self.lanes.get(workspace) {
            Some(lane) => lane.send(LaneMsg::Events(events)).map_err(|e| match e.0 {
                LaneMsg::Events(events) => events,
                _ => unreachable!("sent events"),
            }),
            None => Err(events),
        }
    }

    /// Tells every lane a step of the parking protocol (a rebalance).
    pub(crate) fn broadcast(&self, control: impl Fn() -> ParkingStep) {
        for lane in self.lanes.values() {
            let _ = lane.send(LaneMsg::Park(control()));
        }
    }
}

/// Most messages a lane takes in before it looks again at what is due to send.
const TAKE_AT_ONCE: usize = 1024;

/// Runs one workspace's lane until its sender is dropped and everything it held has a
/// final answer, or until the hard stop. With `parking`, the lane also runs its
/// workspace's side of the parking protocol (see [`Isolation`]).
pub(crate) async fn run_lane<P: Isolation>(
    workspace: String,
    mut rx: mpsc::UnboundedReceiver<LaneMsg>,
    services: Arc<Services>,
    mut parking: Option<P>,
    closed: CancellationToken,
) {
    let workspace: Arc<str> = workspace.into();
    // Looked up once: it does not change while the lane runs.
    let shape = services.shape(&workspace);
    let mut held = Held::default();
    let mut draining = false;
    let mut park_tick = tokio::time::interval(Duration::from_millis(100));
    park_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        held.send_ready(&workspace, &services, shape, draining);
        if let Some(load) = services.in_lane.get(&*workspace) {
            load.events.store(held.events(), AtomicOrdering::Release);
            load.bytes.store(held.bytes, AtomicOrdering::Release);
        }

        if draining && held.queues.total == 0 && held.in_flight.is_empty() {
            break;
        }
        let linger_deadline = (held.in_flight.len() < services.max_in_flight && !draining)
            .then(|| held.queues.oldest_runnable().map(|t| t + shape.linger))
            .flatten();

        tokio::select! {
            biased;
            _ = services.hard_stop.cancelled() => {
                held.abandon(&workspace);
                break;
            }
            Some(joined) = held.in_flight.join_next_with_id(), if !held.in_flight.is_empty() => match joined {
                Ok((task, (id, outcomes))) => held.answered(&workspace, &services, task, id, outcomes),
                Err(e) if e.is_cancelled() => {
                    held.tasks.remove(&e.id());
                }
                Err(e) => held.fail_batch(&workspace, &services, e),
            },
            received = rx.recv(), if !draining => match received {
                Some(msg) => take_in_waiting(msg, &mut rx, &mut held, &mut parking, &services).await,
                None => draining = true,
            },
            _ = closed.cancelled(), if !draining => {
                take_in_the_rest(&mut rx, &mut held, &mut parking, &services).await;
                draining = true;
            }
            _ = park_tick.tick(), if parking.is_some() && !draining => {
                if let Some(p) = &mut parking {
                    on_park_tick(&mut held, p, &services).await;
                }
            }
            _ = sleep_until(linger_deadline), if linger_deadline.is_some() => {}
        }
    }
    if let Some(p) = parking {
        p.close().await;
    }
}

/// `msg` and what else is waiting behind it, in order (up to [`TAKE_AT_ONCE`]): one
/// pass of the lane's loop per burst the consumer hands over, not one per event.
async fn take_in_waiting<P: Isolation>(
    msg: LaneMsg,
    rx: &mut mpsc::UnboundedReceiver<LaneMsg>,
    held: &mut Held,
    parking: &mut Option<P>,
    services: &Arc<Services>,
) {
    take_in(msg, held, parking, services).await;
    for _ in 1..TAKE_AT_ONCE {
        let Ok(msg) = rx.try_recv() else { break };
        take_in(msg, held, parking, services).await;
    }
}

/// The source is done (the router is gone). The parking side holds senders of this
/// lane too, so the channel alone would never say so: stops the reader and takes in
/// what was sent, before the lane drains.
async fn take_in_the_rest<P: Isolation>(
    rx: &mut mpsc::UnboundedReceiver<LaneMsg>,
    held: &mut Held,
    parking: &mut Option<P>,
    services: &Arc<Services>,
) {
    if let Some(p) = parking {
        p.stop_reading().await;
    }
    while let Ok(msg) = rx.try_recv() {
        take_in(msg, held, parking, services).await;
    }
}

/// One message into the lane: an event (direct, parked or held), an event read back
/// from the parking topic, or a step of the parking protocol.
async fn take_in<P: Isolation>(
    msg: LaneMsg,
    held: &mut Held,
    parking: &mut Option<P>,
    services: &Services,
) {
    match msg {
        LaneMsg::Events(events) => {
            for envelope in events {
                take_in_new(envelope, held, parking, services).await;
            }
        }
        LaneMsg::FromPark(envelope) => {
            if let Some(envelope) = parking.as_mut().and_then(|p| p.read_back(*envelope)) {
                held.push(envelope, services.ordering);
            }
        }
        LaneMsg::Park(control) => {
            if let ParkingStep::Revoked(revoked) = &control {
                let mut dropped = held.queues.drop_partitions(revoked, services.ordering);
                dropped.extend(held.revoke_in_flight(revoked, services.ordering));
                let bytes = dropped.iter().map(Envelope::held_bytes).sum::<usize>();
                held.bytes = held.bytes.saturating_sub(bytes);
                services.books.let_go(dropped.iter().map(Envelope::entry));
                let dropped = dropped.len();
                if dropped > 0 {
                    services.metrics.revoked_dropped(dropped);
                    tracing::debug!(
                        dropped,
                        "queued events of revoked partitions left to their new owner"
                    );
                }
            }
            if let Some(p) = parking {
                for direct in p.on_control(control).await {
                    held.push(direct, services.ordering);
                }
                // At once after a rebalance: a reader of a revoked partition is replaced
                // before it hands over anything more.
                step_aside_if_due(held, p, services).await;
            }
        }
    }
}

/// A new event from the source: into the lane, or parked or held.
async fn take_in_new<P: Isolation>(
    envelope: Envelope,
    held: &mut Held,
    parking: &mut Option<P>,
    services: &Services,
) {
    match parking {
        Some(p) => {
            if let Some(direct) = p.on_event(envelope) {
                held.push(direct, services.ordering);
            }
            park_if_over_share(held, p, services).await;
        }
        None => held.push(envelope, services.ordering),
    }
}

/// The parking side's look every 100 ms: park (also here, not only when an event
/// arrives: a workspace that could not be parked may hold the whole buffer, the source
/// paused), hand the reading on to a workspace waiting for a reader, or come back.
async fn on_park_tick<P: Isolation>(held: &mut Held, parking: &mut P, services: &Services) {
    park_if_over_share(held, parking, services).await;
    step_aside_if_due(held, parking, services).await;
    parking.maybe_return(held.events(), held.bytes);
}

/// Hands the reading on if the parking side asks: takes back everything the lane holds
/// and keeps what stays.
async fn step_aside_if_due<P: Isolation>(held: &mut Held, parking: &mut P, services: &Services) {
    if parking.should_step_aside() {
        let taken = held.take_all().await;
        for stays in parking.step_aside(taken).await {
            held.push(stays, services.ordering);
        }
    }
}

/// Parks the workspace if its lane is over share and it has partitions it can park:
/// takes back everything the lane holds and keeps what cannot be parked.
async fn park_if_over_share<P: Isolation>(held: &mut Held, parking: &mut P, services: &Services) {
    if parking.should_park(held.events(), held.bytes) {
        let taken = held.take_all().await;
        for stays in parking.park(taken) {
            held.push(stays, services.ordering);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Records a batch's final answer: counts, completes offsets, releases its users.
fn finish(
    workspace: &str,
    services: &Services,
    queues: &mut Queues,
    batch: Vec<Envelope>,
    outcomes: Vec<ItemOutcome>,
) {
    let accepted = || {
        batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == ItemOutcome::Delivered)
            .map(|(envelope, _)| envelope)
    };
    let now = std::time::SystemTime::now();
    let metrics = &services.metrics;
    metrics.end_to_end(accepted().filter_map(|e| e.event_time), now);
    metrics.delivery_latency(accepted().filter_map(|e| e.raw.entered_us), now);
    metrics.delivered(workspace, accepted().count());
    services.books.done(batch.iter().map(Envelope::entry));
    if services.ordering == Ordering::PerUser {
        queues.release(batch.into_iter().map(|e| e.user));
    }
}

#[cfg(test)]
mod tests;
