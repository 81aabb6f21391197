//! When the next request of one workspace may go: GCRA against the ideal timeline,
//! plus a log of the sends of the last window. Pure state: callers pass the time in.
//!
//! Two rules, both needed:
//! - **Theoretical arrival time.** While requests keep coming, each send moves the TAT
//!   one interval on from where it *was*, not from "now": lateness of the timer that
//!   woke a waiter (up to the catch-up, two intervals but 5–20 ms) is won back, so
//!   nothing is lost to timer granularity. A request after a quiet spell starts from
//!   now (plus the burst tolerance), as plain GCRA does.
//! - **Window log.** Winning lateness back can put two sends closer than one interval.
//!   The log of the last `L` send instants guarantees that no window of `W / headroom`
//!   holds more than `L` sends, where `L` per `W` is the limit (100 per 1 s at 100/s;
//!   1 per 2 s at 0.5/s). So a strict sliding-window limiter on the API's side never
//!   sees one request too many, whatever the burst or the lateness.
//!
//! A send is logged when its token is handed out, then re-dated when its bytes leave
//! ([`Pacer::departed`]): the API counts arrivals, and between the token and the write
//! the request waits for the scheduler (milliseconds on a starved core). The window is
//! checked against the later of the two, so that wait cannot squeeze two sends closer
//! at the API than they were allowed to go.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Bounds of the lateness won back: two intervals, but at least the first and at
/// most the second.
pub(crate) const CATCH_UP: (Duration, Duration) =
    (Duration::from_millis(5), Duration::from_millis(20));

/// The pace one workspace is held to right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pace {
    /// Requests per second allowed (this pod's part of the workspace's limit). Zero
    /// means none may go.
    pub per_second: f64,
    /// Requests that may go back to back after a quiet spell.
    pub burst: u32,
    /// Share of the limit used (0 < headroom ≤ 1): the window the log checks is
    /// `W / headroom`, a guard against jitter between our clock and the API's.
    pub headroom: f64,
    /// Added to that window: how late this process has been running lately
    /// ([`super::lateness`]), so sends whose tokens were a window apart still arrive a
    /// window apart when the scheduler delays one of them by up to this much.
    pub jitter: Duration,
}

impl Pace {
    /// The limit as a count per window: `(L, W)`, e.g. (100, 1 s) or (1, 2 s).
    pub(crate) fn window(&self) -> (usize, Duration) {
        if self.per_second >= 1.0 {
            // A strict window admits whole requests only: 37.5/s allows 37 per second.
            (
                (self.per_second + 1e-9).floor() as usize,
                Duration::from_secs(1),
            )
        } else {
            // A rate so low its window overflows a Duration (or any clock) waits
            // the longest window instead: never a panic in the delivery path.
            let window = Duration::try_from_secs_f64(1.0 / self.per_second).unwrap_or(MAX_WINDOW);
            (1, window.min(MAX_WINDOW))
        }
    }

    /// The interval between two sends on the ideal timeline.
    pub(crate) fn interval(&self) -> Duration {
        self.timeline().2
    }

    /// The guarded window and the interval between two sends on the ideal timeline.
    fn timeline(&self) -> (usize, Duration, Duration) {
        let (count, window) = self.window();
        let guarded = window.div_f64(self.headroom.clamp(1e-3, 1.0)) + self.jitter;
        (count, guarded, guarded / count as u32)
    }
}

/// The longest a pace ever waits between two sends (a rate below one an hour,
/// e.g. a fleet share of an already tiny limit, waits this long).
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// One workspace's pacing state.
#[derive(Debug, Default, Clone)]
pub(crate) struct Pacer {
    /// Theoretical arrival time of the next request on the ideal timeline.
    tat: Option<Instant>,
    /// Send instants of (at least) the last guarded window, oldest first: when the
    /// token went, or later when the request's bytes left. Never decreasing.
    sent: VecDeque<Instant>,
    /// The [`Ticket`] of `sent`'s first entry.
    first: u64,
}

/// Names one logged send, to re-date it when its bytes leave.
pub(crate) type Ticket = u64;

impl Pacer {
    /// A pacer with no history.
    pub(crate) fn new() -> Self {
        Pacer::default()
    }

    /// Takes a send slot at `now` under `pace`, or says when to ask again (`None`:
    /// the pace allows nothing at all).
    pub(crate) fn try_take(&mut self, pace: Pace, now: Instant) -> Result<Ticket, Option<Instant>> {
        let earliest = self.ready_at(pace, now).ok_or(None)?;
        if earliest > now {
            return Err(Some(earliest));
        }
        let (count, window, interval) = pace.timeline();
        let catch_up = (interval * 2).clamp(CATCH_UP.0, CATCH_UP.1);
        // Busy if the last send was about one interval ago: then the timeline goes on
        // from the TAT (late wakes won back); after a quiet spell, from now.
        let busy = self
            .sent
            .back()
            .is_some_and(|last| now.saturating_duration_since(*last) <= interval + catch_up);
        while self.sent.len() >= count
            || self
                .sent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.pop();
        }
        let from = if busy { now - catch_up } else { now };
        let base = self.tat.map_or(from, |tat| tat.max(from));
        self.tat = Some(base + interval);
        Ok(self.push(now))
    }

    /// The earliest instant (`now` or later) a send may go under `pace`, without
    /// taking it; `None` while the pace allows nothing.
    pub(crate) fn ready_at(&self, pace: Pace, now: Instant) -> Option<Instant> {
        if !(pace.per_second > 0.0 && pace.per_second.is_finite()) {
            return None;
        }
        let (count, window, interval) = pace.timeline();
        let tolerance = interval * pace.burst.saturating_sub(1);
        let mut earliest = now;
        if let Some(tat) = self.tat {
            earliest = earliest.max(tat.checked_sub(tolerance).unwrap_or(tat));
        }
        if self.sent.len() >= count {
            earliest = earliest.max(self.sent[self.sent.len() - count] + window);
        }
        Some(earliest)
    }

    /// Records a send made on a slot granted elsewhere (the shared limiter), so the
    /// local window stays true if this pod falls back to pacing alone.
    pub(crate) fn record(&mut self, now: Instant) -> Ticket {
        if self.sent.len() >= 100_000 {
            self.pop();
        }
        self.push(now)
    }

    /// The send `ticket` left at `at`: its entry, and any later one dated before
    /// `at`, move to `at` (later entries only ever move later, so the log stays in
    /// order and no window is judged emptier than it was). A ticket already out of
    /// the log is ignored.
    pub(crate) fn departed(&mut self, ticket: Ticket, at: Instant) {
        let Some(from) = ticket.checked_sub(self.first) else {
            return;
        };
        for sent in self.sent.iter_mut().skip(from as usize) {
            if *sent >= at {
                break;
            }
            *sent = at;
        }
    }

    fn push(&mut self, now: Instant) -> Ticket {
        // In order even if `now` is older than a re-dated entry.
        let at = self.sent.back().map_or(now, |last| now.max(*last));
        self.sent.push_back(at);
        self.first + self.sent.len() as u64 - 1
    }

    fn pop(&mut self) {
        if self.sent.pop_front().is_some() {
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests;
