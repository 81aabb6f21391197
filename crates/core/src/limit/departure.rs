//! When a request's bytes left: the moment the API will count it. The pacer logs a
//! send when it hands out the token; the request then waits for the scheduler (its
//! task, then its connection's) before the bytes go, and on a starved core that wait
//! varies by milliseconds. The delivery code wraps the request body so that the
//! connection's first read of it — just before the write — re-dates the send in the
//! pacer's log ([`super::pacer::Pacer::departed`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::pacer::Ticket;

/// A log a departure is reported to (the workspace's pacer, under its lock).
pub(crate) trait SendLog: Send + Sync + std::fmt::Debug {
    /// The send `ticket`, due at `due` (its token or its slot), left at `at`.
    fn departed(&self, ticket: Ticket, due: Instant, at: Instant);
}

/// One request's departure, reported once: by the body when the connection first
/// reads it, or when its permit is dropped if it never was (a refused connection, an
/// answer before the body): then "now" is a time the API had it by, if ever.
#[derive(Debug, Clone)]
pub(crate) struct Departure(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    log: Arc<dyn SendLog>,
    ticket: Ticket,
    /// When the send was due: its token, or its slot on the fleet's timeline.
    due: Instant,
    reported: AtomicBool,
}

impl Departure {
    pub(crate) fn new(log: Arc<dyn SendLog>, ticket: Ticket, due: Instant) -> Self {
        Departure(Arc::new(Inner {
            log,
            ticket,
            due,
            reported: AtomicBool::new(false),
        }))
    }

    /// The request's bytes are leaving now. Only the first call counts.
    pub(crate) fn now(&self) {
        if !self.0.reported.swap(true, Ordering::AcqRel) {
            self.0
                .log
                .departed(self.0.ticket, self.0.due, Instant::now());
        }
    }
}
