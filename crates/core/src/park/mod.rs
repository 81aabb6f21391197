//! Tenant isolation: a workspace that cannot keep up is *parked* — its newly read events
//! go to the parking topic (`kafka.park_topic`, by default `<topic>.park`, created at
//! start) instead of the in-process buffer, so the source partitions keep moving for
//! every other workspace — and comes back once it has caught up. Nothing is lost and one user's events stay in order in both directions.
//! (This file runs a little over 400 lines because the protocol is described here, beside
//! the code that runs each of its steps.)
//!
//! # The protocol
//!
//! Each workspace's lane runs the protocol for its workspace: events, rebalances and
//! fences reach it through one FIFO channel, so every step happens exactly between the
//! events it must come between. State is kept per (workspace W, source partition p) on
//! the pod that owns p:
//! **direct**, **parked**, **returning** (a fence is out, new events are held) or
//! **draining** (direct again, the fence not yet committed past).
//!
//! 1. *Park.* When W's events in process (queued or in flight in its lane, or held)
//!    reach its share (`kafka.max_buffered_events_per_workspace`), W is parked on every
//!    partition the pod owns. For each, the parking partition with p's number has its
//!    end offset read first: W's parked events of p will all be found from there
//!    (`start`). The lane then takes back everything it holds — requests in flight are
//!    abandoned — and parks those events first, a user's in-flight events before its
//!    queued ones, so their source offsets complete and the source's commits move on.
//!    (Even a lane still delivering gives them back: kept in the lane, they would stay
//!    uncommitted below events already parked, and after a crash the next owner would
//!    read them again from the source and deliver them after those: a reorder.)
//!    (Events read back from the parking topic earlier stay in the lane: they are older
//!    than anything parked now.)
//! 2. *While parked*, each new event of W from p is written to parking partition p, in
//!    the order read (enqueued at once; idempotent producer, no delivery timeout, so
//!    retries never reorder). Its source offset completes when the write is
//!    acknowledged.
//! 3. *Marks.* The pod keeps, per owned p, the workspaces that may have parked events
//!    of p waiting and their `start` (a mark, set before the first event is parked).
//!    The parking ledger (`ledger.rs`) commits, for parking partition p, a *floor* at or
//!    below every mark's `start` (offsets only, so every broker keeps it); a mark leaves
//!    only after W's reader has committed past W's fence.
//! 4. *Read.* W's reader (consumer group `{group}.park.{W}`, partitions assigned by
//!    hand) reads parking partition p from `max(its committed offset, start)` and hands
//!    W's records of p to W's lane — only while the lane is under share — skipping the
//!    rest. Its offsets complete as the lane delivers them. A pod runs at most
//!    `kafka.park_readers` readers (`turns.rs`): W waits for a turn, in the order asked,
//!    and while another waits, W hands its reader on after its turn if it is parked
//!    everywhere (no return under way): the reader commits what was delivered and
//!    stops; the lane lets go of what it read back and has not delivered, which W's
//!    next reader reads again from the committed offset (under a new tracker name,
//!    so a leftover of the old reader is told apart and let go of too).
//! 5. *Return.* When W's lane is nearly empty and the reader nearly caught up, the pod
//!    writes a fence (W, p, epoch) to parking partition p — behind every parked event of
//!    W from p — and from then on *holds* W's new events from p. When the reader reads
//!    the fence, every event parked before it is in the lane: the held events follow,
//!    in order, and W is direct on p. Once the reader's commit passes the fence, the mark
//!    goes. If the held events reach the share first, they are parked (behind the
//!    fence, in order) and W is parked again; the fence is then stale and ignored.
//! 6. *Rebalance.* A revoked partition's states and held events are dropped: held
//!    events were never completed, so the new owner reads them again. A newly assigned
//!    partition is read in the parking topic from its floor to its end: each workspace
//!    with a parked record of p there starts *returning* — a fence, held events — so
//!    its parked events come first.
//! 7. *Crash.* Everything in process is uncommitted and read again; parked events whose
//!    source offsets were committed are in the parking topic above the floor; the next
//!    owner reads them first (step 6). Duplicates are possible (at-least-once), gaps
//!    and reorders are not.
//!
//! If the parking topic is unavailable its writes pend; they count as buffered events,
//! so the consumer pauses, as it does without parking.

pub(crate) mod ledger;
pub(crate) mod reader;
mod reading;
mod setup;
pub(crate) mod table;
mod topic;
pub(crate) mod turns;
pub(crate) mod writer;

pub(crate) use setup::blocking;
pub(crate) use setup::ParkingSetup;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::deliver::Failure;
use crate::dlq::DeadLetter;
use crate::lane::{Envelope, Isolation, LaneMsg, ParkingStep, Services};
use crate::record::TopicPartition;
use reader::{ReaderCommand, ReaderHandle};
use table::{ParkTable, Route};
use turns::Asking;

/// One workspace's side of the protocol, run by its lane.
#[derive(Debug)]
pub(crate) struct LaneParking {
    setup: ParkingSetup,
    workspace: String,
    lane: mpsc::UnboundedSender<LaneMsg>,
    services: Arc<Services>,
    table: ParkTable,
    reader: Option<ReaderHandle>,
    /// Its place in the queue for a reader, while it waits for one.
    asking: Option<Asking>,
    /// Readers it has had: each keeps its offsets under a name of its own.
    readers_had: u64,
    /// Its reader was reading a partition since revoked while the workspace stays
    /// parked elsewhere: what that reader hands over, fences included, may be older
    /// than what the lane let go of at the revocation. Nothing of it is taken, and the
    /// lane hands the reading on to a new reader, which reads again from the commits.
    reader_stale: bool,
    owned: BTreeSet<TopicPartition>,
    /// Partitions where parking failed (the parking topic unavailable), and until when
    /// they are not tried again: the lane keeps their events meanwhile.
    unparkable: HashMap<TopicPartition, tokio::time::Instant>,
    /// The tracker's name for the parking offsets of its reader (the latest one).
    synthetic: Arc<str>,
    /// When the workspace was last parked: it stays so for at least [`MIN_PARKED`].
    parked_at: Option<tokio::time::Instant>,
}

/// How long a partition whose parking failed is left unparked before it is tried again.
const PARK_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest a return may hold new events while its reader has not met the fence.
const RETURN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Parking-topic records behind its reader (any workspace's) that still count as
/// caught up: read (most skipped as others') in milliseconds. A small share's quarter
/// would otherwise ask for none at all, which readers of other workspaces writing
/// their fences rarely leave.
const NEARLY_CAUGHT_UP: usize = 500;

/// The shortest parking episode: a workspace does not flap between the two paths.
pub(crate) const MIN_PARKED: std::time::Duration = std::time::Duration::from_secs(1);

impl LaneParking {
    /// The parking side of `workspace`'s lane (`lane` is the lane's own sender, for
    /// its reader).
    pub(crate) fn new(
        setup: &ParkingSetup,
        workspace: &str,
        lane: mpsc::UnboundedSender<LaneMsg>,
        services: &Arc<Services>,
    ) -> Self {
        LaneParking {
            table: ParkTable::new(setup.marks.clone()),
            synthetic: reader::synthetic_topic(setup.parker.topic(), workspace, 0).into(),
            setup: setup.clone(),
            workspace: workspace.to_string(),
            lane,
            services: services.clone(),
            reader: None,
            asking: None,
            readers_had: 0,
            reader_stale: false,
            owned: BTreeSet::new(),
            unparkable: HashMap::new(),
            parked_at: None,
        }
    }

    /// Whether `tp` is direct and could be parked now: it has a parking partition, and
    /// parking it has not failed lately.
    fn parkable(&self, tp: &TopicPartition) -> bool {
        self.table.route(&self.workspace, tp) == Route::Lane
            && self.setup.ledger.covers(tp)
            && self
                .unparkable
                .get(tp)
                .is_none_or(|until| *until <= tokio::time::Instant::now())
    }

    fn fence(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Err(e) = self.setup.parker.fence(&self.workspace, tp, epoch) {
            tracing::warn!(workspace = %self.workspace, "fence not written, staying parked: {e}");
            for held in self.table.abort_return(&self.workspace, tp) {
                self.write(held);
            }
        }
    }

    /// Parks again, behind their stale fences, the events held by returns that did not
    /// meet their fence within [`RETURN_LIMIT`]: they hold their partitions' commits.
    fn give_up_overdue_returns(&mut self) {
        let overdue = self.table.overdue(&self.workspace, RETURN_LIMIT);
        if overdue.is_empty() {
            return;
        }
        tracing::info!(
            workspace = %self.workspace,
            partitions = overdue.len(),
            "return not done within {}s (its parked events are not read back yet): parked again",
            RETURN_LIMIT.as_secs()
        );
        for tp in overdue {
            for held in self.table.abort_return(&self.workspace, &tp) {
                self.write(held);
            }
        }
        self.parked_at = Some(tokio::time::Instant::now());
    }

    /// Writes one event to the parking topic; its offset completes on the ack.
    fn write(&self, envelope: Envelope) {
        let services = self.services.clone();
        let workspace = self.workspace.clone();
        let delivery = self
            .setup
            .parker
            .park(&workspace, &envelope.origin, &envelope.raw);
        self.setup.writes.spawn(async move {
            let result = match delivery {
                Ok(delivery) => tokio::select! {
                    r = delivery => r.map_err(|_| "the producer was dropped".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    _ = services.hard_stop.cancelled() => return,
                },
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => services.metrics.parked_written(&workspace),
                Err(e) => {
                    // Only a permanent error gets here (no delivery timeout): the event
                    // cannot be parked, so it is dead-lettered rather than lost.
                    let failure =
                        Failure::without_request(crate::record::FailureReason::ParkFailed, e);
                    let letter = DeadLetter {
                        origin: &envelope.origin,
                        raw: &envelope.raw,
                        workspace: Some(&workspace),
                        failure: &failure,
                    };
                    tokio::select! {
                        _ = services.dead_letters.send(letter) => {}
                        _ = services.hard_stop.cancelled() => return,
                    }
                }
            }
            services.books.done([envelope.entry()]);
        });
    }
}

impl Isolation for LaneParking {
    /// A new event: returned if it goes straight into the lane; parked or held if not.
    fn on_event(&mut self, envelope: Envelope) -> Option<Envelope> {
        let tp = envelope.origin.tp.clone();
        match self.table.route(&self.workspace, &tp) {
            Route::Lane => Some(envelope),
            Route::Park => {
                self.write(envelope);
                None
            }
            Route::Hold => {
                self.table.hold(&self.workspace, &tp, envelope);
                if self.table.held(&self.workspace) >= self.setup.share {
                    // Returning takes too long (the workspace is behind again): park.
                    for tp in self.table.returning(&self.workspace) {
                        for held in self.table.abort_return(&self.workspace, &tp) {
                            self.write(held);
                        }
                    }
                }
                None
            }
        }
    }

    /// Whether the lane, holding `events` of `bytes`, is over share (in events or in
    /// bytes) with partitions it can park: a lane that cannot park any keeps its events
    /// (the source's back-pressure bounds them) instead of taking them all back for
    /// nothing at every new one.
    fn should_park(&self, events: usize, bytes: usize) -> bool {
        self.setup.isolating
            && (events + self.table.held(&self.workspace) >= self.setup.share
                || bytes >= self.setup.byte_share)
            && self.owned.iter().any(|tp| self.parkable(tp))
    }

    /// Parks the workspace on every partition it is direct on, then parks `taken` (all
    /// the lane held, in per-user order). Returns what stays in the lane: events read
    /// back from the parking topic, and those of partitions that could not be parked.
    fn park(&mut self, taken: Vec<Envelope>) -> Vec<Envelope> {
        let mut parked_any = false;
        for tp in self.owned.clone() {
            if !self.parkable(&tp) {
                continue;
            }
            match self.setup.parker.start_offset(tp.partition) {
                Ok(start) => {
                    self.unparkable.remove(&tp);
                    self.table.park(&self.workspace, &tp, start);
                    self.reader_send(ReaderCommand::Assign(tp, start));
                    parked_any = true;
                }
                Err(e) => {
                    tracing::warn!(
                        workspace = %self.workspace,
                        partition = tp.partition,
                        "cannot park (parking topic unavailable), tried again in {}s: {e}",
                        PARK_RETRY.as_secs()
                    );
                    self.unparkable
                        .insert(tp, tokio::time::Instant::now() + PARK_RETRY);
                }
            }
        }
        if parked_any {
            self.parked_at = Some(tokio::time::Instant::now());
            self.services
                .metrics
                .workspace_parked(&self.workspace, self.setup.share);
        }
        let mut stay = Vec::new();
        for envelope in taken {
            if !envelope.from_park
                && self.table.route(&self.workspace, &envelope.origin.tp) == Route::Park
            {
                self.write(envelope);
            } else {
                stay.push(envelope);
            }
        }
        stay
    }

    /// A parked event read back: for the lane if its reader is the current one and its
    /// partition still this pod's; let go of if not: an earlier reader handed it over
    /// before it stepped aside (the next one reads it again, in order), or its
    /// partition was revoked meanwhile (its new owner reads it).
    fn read_back(&mut self, envelope: Envelope) -> Option<Envelope> {
        let p = envelope.origin.tp.partition;
        if !self.reader_stale
            && *envelope.origin.tp.topic == *self.synthetic
            && self.owned.iter().any(|tp| tp.partition == p)
        {
            return Some(envelope);
        }
        self.services.books.let_go([envelope.entry()]);
        None
    }

    /// Whether its reader has had its turn while another workspace waits for one, or
    /// read a partition since revoked.
    fn should_step_aside(&self) -> bool {
        self.reader_stale
            || (self.reader.as_ref().is_some_and(ReaderHandle::turn_is_over)
                && self.setup.turns.anyone_waiting()
                && self.table.is_parked(&self.workspace))
    }

    /// Hands its reader on. The workspace is parked again wherever it is off the
    /// direct path ([`ParkTable::park_all`]: returns given up, a draining partition
    /// parked again), the reader stops (a last commit of what was delivered) under a
    /// name no reader has, and of `taken` (all the lane held, in per-user order) the
    /// events read back are let go of (uncommitted: the next reader reads them again,
    /// before anything newer) and those of partitions now parked are parked, behind
    /// them. Asks for another turn; returns what stays in the lane.
    async fn step_aside(&mut self, taken: Vec<Envelope>) -> Vec<Envelope> {
        let held = self.table.park_all(&self.workspace);
        self.retire_reader().await;
        let stale = std::mem::take(&mut self.reader_stale);
        let mut stay = Vec::new();
        let mut let_go = 0;
        for envelope in taken {
            if envelope.from_park {
                self.services.books.let_go([envelope.entry()]);
                let_go += 1;
            } else if self.table.route(&self.workspace, &envelope.origin.tp) == Route::Park {
                self.write(envelope);
            } else {
                stay.push(envelope);
            }
        }
        for envelope in held {
            self.write(envelope);
        }
        tracing::debug!(
            workspace = %self.workspace,
            let_go,
            "{}",
            if stale {
                "reader of a partition revoked meanwhile replaced"
            } else {
                "reader handed on to a workspace waiting for one"
            }
        );
        self.parked_at = Some(tokio::time::Instant::now());
        if !stale {
            self.services.metrics.reader_handed_on(&self.workspace);
        }
        self.ask_for_reader();
        stay
    }

    /// Stops the reader (the lane is draining: nothing more is read back).
    async fn stop_reading(&mut self) {
        self.asking = None;
        if let Some(reader) = self.reader.take() {
            reader.stop().await;
        }
    }

    /// Starts returning when the lane is nearly empty and the reader nearly caught up;
    /// restarts a reader that could not start before.
    fn maybe_return(&mut self, events: usize, bytes: usize) {
        self.take_turn();
        self.give_up_overdue_returns();
        let parked = self.table.parked(&self.workspace);
        let settled = self
            .parked_at
            .is_none_or(|at| at + MIN_PARKED <= tokio::time::Instant::now());
        if parked.is_empty() || !settled {
            return;
        }
        // No return without a reader to meet the fence.
        let Some(reader) = &self.reader else {
            return;
        };
        let low = self.setup.share / 4;
        let behind = reader.lag.load(Ordering::Acquire).max(0) as usize;
        if events > low || behind > low.max(NEARLY_CAUGHT_UP) || bytes > self.setup.byte_share / 4 {
            return;
        }
        for tp in parked {
            if let Some(epoch) = self.table.begin_return(&self.workspace, &tp) {
                self.fence(&tp, epoch);
            }
        }
    }

    /// A rebalance or a fence; returns events now due in the lane, in order.
    async fn on_control(&mut self, control: ParkingStep) -> Vec<Envelope> {
        match control {
            // A stale reader's fence: the events before it were let go of.
            ParkingStep::FenceRead { .. } | ParkingStep::FenceCommitted { .. }
                if self.reader_stale =>
            {
                Vec::new()
            }
            ParkingStep::FenceRead { tp, epoch } => self
                .table
                .fence_read(&self.workspace, &tp, epoch)
                .map(Vec::from)
                .unwrap_or_default(),
            ParkingStep::FenceCommitted { tp, epoch } => {
                if self.table.fence_committed(&self.workspace, &tp, epoch) {
                    if let Some(reader) = &self.reader {
                        reader.send(ReaderCommand::Unassign(tp));
                    }
                    if !self.table.is_parked(&self.workspace) {
                        self.retire_reader().await;
                        self.services.metrics.workspace_returned(&self.workspace);
                    }
                }
                Vec::new()
            }
            ParkingStep::Revoked(tps) => {
                let read = self.table.off_direct(&self.workspace);
                let reads_revoked =
                    self.reader.is_some() && read.iter().any(|(tp, _)| tps.contains(tp));
                let dropped = self.table.revoked(&tps);
                self.services
                    .books
                    .let_go(dropped.iter().map(Envelope::entry));
                for tp in tps {
                    self.owned.remove(&tp);
                    self.unparkable.remove(&tp);
                    if let Some(r) = &self.reader {
                        r.send(ReaderCommand::Unassign(tp));
                    }
                }
                // Off the direct path nowhere on this pod now: its reader and its turn go.
                if !self.table.is_parked(&self.workspace) {
                    self.asking = None;
                    self.retire_reader().await;
                    self.reader_stale = false;
                } else if reads_revoked {
                    // The partition may come back to this pod before the reader hears.
                    self.reader_stale = true;
                }
                Vec::new()
            }
            ParkingStep::Assigned(assigned) => {
                for (tp, marks) in assigned {
                    self.owned.insert(tp.clone());
                    if let Some(start) = marks.get(&self.workspace) {
                        // Parked events of ours may wait there: they come first.
                        let epoch = self.table.inherit(&self.workspace, &tp, *start);
                        self.reader_send(ReaderCommand::Assign(tp.clone(), *start));
                        self.fence(&tp, epoch);
                        self.services
                            .metrics
                            .workspace_parked(&self.workspace, self.setup.share);
                    }
                }
                Vec::new()
            }
        }
    }

    /// Stops the reader (it holds a sender of this lane: the lane drains once it is gone).
    async fn close(mut self) {
        self.asking = None;
        if let Some(reader) = self.reader.take() {
            reader.stop().await;
        }
    }
}

#[cfg(test)]
mod tests;
