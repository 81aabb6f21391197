//! Rate limits: every HTTP attempt, retries included, takes a slot under the global
//! in-flight cap and then a token from its workspace's one budget — the budget of the
//! API workspace, shared by the whole fleet of pods.
//!
//! - [`pacer`]: when the next request may go — GCRA against the ideal timeline, so
//!   timer lateness is won back, and a log of the last window's sends, so a strict
//!   sliding-window limiter never sees one too many.
//! - [`departure`]: when a request's bytes left, reported by its body to re-date the
//!   send in the pacer's log.
//! - [`lateness`]: how late this process's timers fire lately; the pacer widens its
//!   window by it so a starved core's delayed sends still arrive within the limit.
//! - [`adaptive`]: what a 429 teaches — pause until `Retry-After`, set the rate just
//!   below what the API accepted, hold, probe upward slowly.
//! - [`share`]: `partition-share` — this pod's part of each limit is its share of the
//!   partitions, shrunk before a partition leaves and grown after one arrives.
//! - [`fleet_store`]: `redis` — one GCRA per workspace in Redis, handed out in short leases;
//!   falls back to partition-share while Redis is away.
//! - [`limiter`]: the one type the delivery code calls, combining them.

pub(crate) mod adaptive;
pub(crate) mod departure;
pub mod fleet_store;
pub(crate) mod lateness;
pub(crate) mod limiter;
pub(crate) mod pacer;
pub(crate) mod share;

pub use fleet_store::Fleet;
pub use limiter::{Limiter, Permit, Rate};
pub use share::Share;
