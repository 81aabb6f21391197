//! What a lane asks of tenant isolation, and all it knows of it: a workspace's side of
//! the parking protocol ([`crate::park::LaneParking`] implements it) is called between
//! the lane's events, and the protocol's steps reach the lane in the same channel as
//! its events ([`ParkingStep`]). The lane never sees how parking is done.

use std::collections::BTreeMap;
use std::future::Future;

use super::Envelope;
use crate::record::TopicPartition;

/// A step of the parking protocol that reaches a lane between its events.
#[derive(Debug, Clone)]
pub(crate) enum ParkingStep {
    /// These partitions are this pod's now, with the workspaces that may have parked
    /// events of each waiting, and from which parking-topic offset.
    Assigned(Vec<(TopicPartition, BTreeMap<String, i64>)>),
    /// These partitions left.
    Revoked(Vec<TopicPartition>),
    /// The reader met this workspace's fence `epoch` of `tp`.
    FenceRead {
        /// The source partition.
        tp: TopicPartition,
        /// The fence's epoch.
        epoch: u64,
    },
    /// The reader committed past it.
    FenceCommitted {
        /// The source partition.
        tp: TopicPartition,
        /// The fence's epoch.
        epoch: u64,
    },
}

/// A workspace's side of isolation, run by its lane.
pub(crate) trait Isolation: Send + 'static {
    /// A new event: returned if it goes straight into the lane; kept aside (parked or
    /// held) if not.
    fn on_event(&mut self, envelope: Envelope) -> Option<Envelope>;

    /// Whether the lane, holding `events` of `bytes`, should be emptied into the side
    /// path now.
    fn should_park(&self, events: usize, bytes: usize) -> bool;

    /// Takes `taken` (everything the lane held, in per-user order) aside; returns what
    /// stays in the lane.
    fn park(&mut self, taken: Vec<Envelope>) -> Vec<Envelope>;

    /// A parked event read back: returned if it is for the lane (not a leftover of a
    /// reader that stepped aside).
    fn read_back(&mut self, envelope: Envelope) -> Option<Envelope>;

    /// Whether the side path wants the lane's events back now, to hand its reading on
    /// (to another workspace, or to a reader of its own that it can trust).
    fn should_step_aside(&self) -> bool;

    /// Hands the reading on; `taken` is everything the lane held, in per-user order.
    /// Returns what stays in the lane.
    fn step_aside(&mut self, taken: Vec<Envelope>) -> impl Future<Output = Vec<Envelope>> + Send;

    /// A look, every 100 ms, at whether the workspace may come back to the direct path.
    fn maybe_return(&mut self, events: usize, bytes: usize);

    /// A step of the protocol; returns events now due in the lane, in order.
    fn on_control(&mut self, control: ParkingStep) -> impl Future<Output = Vec<Envelope>> + Send;

    /// The source is done: nothing more comes back from the side path.
    fn stop_reading(&mut self) -> impl Future<Output = ()> + Send;

    /// The lane ends.
    fn close(self) -> impl Future<Output = ()> + Send;
}
