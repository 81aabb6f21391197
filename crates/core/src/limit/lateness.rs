//! How late this process runs lately: the worst delay between a timer's deadline and
//! the moment its task ran again, over the last few seconds.
//!
//! The pacer dates each send when it hands out the token, but the API dates it when
//! the request arrives. Between the two the request waits for the scheduler (a task
//! hop to the connection, a write), and on a starved core that wait varies by
//! milliseconds: two requests a window apart at the token can land less than a window
//! apart at the API. A late wake is the same wait, measured where we can see it, so the
//! pacer widens its window by twice the recent worst of it (see
//! [`pacer::Pace::jitter`] and [`Lateness::margin`]).
//!
//! [`pacer::Pace::jitter`]: super::pacer::Pace::jitter

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long a late wake is remembered: at least this, at most twice this.
pub(crate) const MEMORY: Duration = Duration::from_secs(5);

/// Task hops between a token and the request's bytes leaving (see [`Lateness::margin`]).
const HOPS: u32 = 2;

/// The largest margin a late wake may add to a window (a tenth of a one-second
/// window): a process stalled for longer is not paced by widening windows.
pub(crate) const MAX_JITTER: Duration = Duration::from_millis(100);

/// The worst lateness of the current and the previous [`MEMORY`] period.
#[derive(Debug)]
pub(crate) struct Lateness {
    state: Mutex<Periods>,
}

#[derive(Debug)]
struct Periods {
    started: Instant,
    current: Duration,
    previous: Duration,
}

impl Lateness {
    /// No lateness seen yet; periods counted from `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Lateness {
            state: Mutex::new(Periods {
                started: now,
                current: Duration::ZERO,
                previous: Duration::ZERO,
            }),
        }
    }

    /// A wake at `now` of a timer due at `due`.
    pub(crate) fn woke(&self, due: Instant, now: Instant) {
        let late = now.saturating_duration_since(due).min(MAX_JITTER);
        let mut p = self.lock(now);
        p.current = p.current.max(late);
    }

    /// The worst lateness of the last [`MEMORY`] (or up to twice that) before `now`.
    pub(crate) fn recent(&self, now: Instant) -> Duration {
        let p = self.lock(now);
        p.current.max(p.previous)
    }

    /// The margin a window needs at `now`: twice the recent worst, since a request
    /// crosses two tasks after its token (the sender's, then its connection's) and
    /// each may wait that long for the core; at most [`MAX_JITTER`].
    pub(crate) fn margin(&self, now: Instant) -> Duration {
        (self.recent(now) * HOPS).min(MAX_JITTER)
    }

    fn lock(&self, now: Instant) -> std::sync::MutexGuard<'_, Periods> {
        let mut p = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let age = now.saturating_duration_since(p.started);
        if age >= MEMORY * 2 {
            p.previous = Duration::ZERO;
            p.current = Duration::ZERO;
            p.started = now;
        } else if age >= MEMORY {
            p.previous = p.current;
            p.current = Duration::ZERO;
            p.started += MEMORY;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_late_wake_is_remembered_for_a_while_then_forgotten() {
        let start = Instant::now();
        let l = Lateness::new(start);
        assert_eq!(l.recent(start), Duration::ZERO);
        l.woke(start, start + Duration::from_millis(12));
        l.woke(start, start + Duration::from_millis(3));
        assert_eq!(
            l.recent(start + Duration::from_secs(1)),
            Duration::from_millis(12)
        );
        // Still remembered in the next period…
        let later = start + MEMORY + Duration::from_secs(1);
        assert_eq!(l.recent(later), Duration::from_millis(12));
        // …and gone once a whole period has passed without it.
        assert_eq!(l.recent(start + MEMORY * 2), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_adds_at_most_the_cap() {
        let start = Instant::now();
        let l = Lateness::new(start);
        l.woke(start, start + Duration::from_secs(3));
        assert_eq!(l.recent(start + Duration::from_secs(3)), MAX_JITTER);
        assert_eq!(l.margin(start + Duration::from_secs(3)), MAX_JITTER);
    }

    #[tokio::test(start_paused = true)]
    async fn the_margin_covers_a_late_wake_on_each_hop() {
        let start = Instant::now();
        let l = Lateness::new(start);
        l.woke(start, start + Duration::from_millis(6));
        assert_eq!(l.margin(start), Duration::from_millis(12));
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_wake_is_no_lateness() {
        let start = Instant::now() + Duration::from_secs(1);
        let l = Lateness::new(start);
        l.woke(start + Duration::from_millis(5), start);
        assert_eq!(l.recent(start), Duration::ZERO);
    }
}
