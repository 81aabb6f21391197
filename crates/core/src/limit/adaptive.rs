//! Learning a workspace's real limit from the API's 429s, and the pause a 429 asks for.
//! Pure state: callers pass the time in, as a [`Duration`] since an epoch they choose
//! (the limiter's start for one pod, Redis' clock when the fleet shares the state).
//!
//! A 429 is a measurement, not just a signal: the requests the API accepted over the
//! last second are what it allows. So one congestion event sets the rate just below
//! that (never cutting by more than half or less than [`MIN_CUT`]), holds it, then
//! probes upward slowly ([`PROBE_PER_S`] a second). Meeting the same ceiling again
//! doubles the hold (up to [`MAX_HOLD`]), so a steady real limit costs fewer and fewer
//! 429s; once the rate passes the last ceiling without a 429 it grows faster again.
//! Several 429s for requests sent before the cut are one congestion event: they pause,
//! but cut once.

use std::time::Duration;

/// Share of the measured ceiling the rate is set to after a 429.
pub(crate) const BELOW_CEILING: f64 = 0.95;
/// The smallest cut of one congestion event (the rate keeps at most 95%).
pub(crate) const MIN_CUT: f64 = 0.95;
/// The largest cut of one congestion event (the rate keeps at least half).
pub(crate) const MAX_CUT: f64 = 0.5;
/// The effective rate never drops below this share of the configured rate.
pub(crate) const FLOOR_SHARE: f64 = 0.05;
/// How long a newly learned rate is held before probing, the first time.
pub(crate) const FIRST_HOLD: Duration = Duration::from_secs(5);
/// The longest hold, reached when the same ceiling is met again and again.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(60);
/// Growth per second while probing near the last ceiling.
pub(crate) const PROBE_PER_S: f64 = 0.01;
/// Growth per second once well past the last ceiling (the limit was raised).
pub(crate) const RECOVER_PER_S: f64 = 0.10;
/// Pause after a 429 that names no `Retry-After`.
pub(crate) const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// What one workspace has learned about its limit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Learned {
    /// The configured limit, requests per second: never exceeded.
    pub configured: f64,
    /// The rate set by the last cut.
    pub base: f64,
    /// When the last cut happened; `None` while nothing has been learned.
    pub cut_at: Option<Duration>,
    /// How long `base` holds before probing.
    pub hold: Duration,
    /// The accepted rate measured at the last cut.
    pub ceiling: f64,
    /// Until when a 429 asked the workspace to stay away.
    pub paused_until: Option<Duration>,
}

impl Learned {
    /// Nothing learned yet: the configured rate.
    pub(crate) fn new(configured: f64) -> Self {
        Learned {
            configured,
            base: configured,
            cut_at: None,
            hold: FIRST_HOLD,
            ceiling: configured,
            paused_until: None,
        }
    }

    /// The workspace's whole (fleet-wide) rate at `now`, requests per second.
    pub(crate) fn rate(&self, now: Duration) -> f64 {
        let Some(cut_at) = self.cut_at else {
            return self.configured;
        };
        let probing = now.saturating_sub(cut_at + self.hold).as_secs_f64();
        if probing <= 0.0 {
            return self.base;
        }
        // Slow near the ceiling, faster once past it by 5% without a 429.
        let near = (self.ceiling * 1.05).max(self.base);
        let to_near = (near / self.base).ln() / (1.0 + PROBE_PER_S).ln();
        let rate = if probing <= to_near {
            self.base * (1.0 + PROBE_PER_S).powf(probing)
        } else {
            near * (1.0 + RECOVER_PER_S).powf(probing - to_near)
        };
        rate.min(self.configured)
    }

    /// Whether a 429's pause still holds at `now`; when it ends if so.
    pub(crate) fn paused(&self, now: Duration) -> Option<Duration> {
        self.paused_until.filter(|p| *p > now)
    }

    /// The API throttled a request sent at `sent_at`, answering at `now`; it had
    /// accepted `accepted_per_s` requests per second of this workspace (fleet-wide)
    /// over the last second. Pauses until `retry_after`, and cuts the rate once per
    /// congestion event. Returns whether the rate was cut.
    pub(crate) fn throttled(
        &mut self,
        now: Duration,
        sent_at: Duration,
        retry_after: Option<Duration>,
        accepted_per_s: f64,
    ) -> bool {
        let until = now + retry_after.unwrap_or(DEFAULT_PAUSE);
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        if self.cut_at.is_some_and(|cut| sent_at < cut) {
            return false;
        }
        let current = self.rate(now);
        let measured = accepted_per_s * BELOW_CEILING;
        let rate = measured
            .max(current * MAX_CUT)
            .min(current * MIN_CUT)
            .max(self.configured * FLOOR_SHARE);
        let ceiling = if accepted_per_s > 0.0 {
            accepted_per_s
        } else {
            rate
        };
        let same_ceiling =
            self.cut_at.is_some() && (ceiling - self.ceiling).abs() <= 0.1 * self.ceiling;
        self.hold = if same_ceiling {
            (self.hold * 2).min(MAX_HOLD)
        } else {
            FIRST_HOLD
        };
        self.ceiling = ceiling;
        self.base = rate;
        self.cut_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_429_sets_the_rate_below_what_was_accepted_and_holds_it() {
        let mut l = Learned::new(100.0);
        assert_eq!(l.rate(S), 100.0);
        // Sent at 100/s, the API accepted 50 in the last second.
        assert!(l.throttled(S, S, Some(S), 50.0));
        assert_eq!(l.rate(S), 50.0, "never more than halved at once");
        assert_eq!(l.paused(S), Some(2 * S));
        assert_eq!(l.paused(2 * S), None);
        // Held, then probed up by 1% a second.
        assert_eq!(l.rate(S + FIRST_HOLD), 50.0);
        let probed = l.rate(S + FIRST_HOLD + 2 * S);
        assert!((probed - 50.0 * 1.01f64.powi(2)).abs() < 1e-9, "{probed}");
        // At the same ceiling again: just below it, and held twice as long.
        let t = 10 * S;
        assert!(l.throttled(t, t, Some(S), 50.0));
        assert!((l.rate(t) - 47.5).abs() < 1e-9, "{}", l.rate(t));
        assert_eq!(l.hold, 2 * FIRST_HOLD);
        assert_eq!(l.rate(t + 2 * FIRST_HOLD), l.rate(t));
    }

    #[test]
    fn concurrent_429s_are_one_congestion_event() {
        let mut l = Learned::new(100.0);
        let t = 3 * S;
        assert!(l.throttled(t, t - S / 10, None, 50.0));
        // Three more answers for requests sent before the cut: paused, not cut again.
        for i in 1..=3 {
            assert!(!l.throttled(t + S / 100 * i, t - S / 20, Some(2 * S), 50.0));
        }
        assert_eq!(l.rate(t), 50.0);
        assert_eq!(l.paused(t + S), Some(t + S / 100 * 3 + 2 * S));
        // A request sent after the cut that is refused is a new event.
        assert!(l.throttled(t + 2 * S, t + S, None, 50.0));
        assert!(l.rate(t + 2 * S) < 50.0);
    }

    #[test]
    fn the_rate_stays_between_the_floor_and_the_configured_limit() {
        let mut l = Learned::new(100.0);
        for i in 0..40 {
            let t = S * i;
            l.throttled(t, t, None, 0.0);
        }
        assert_eq!(l.rate(40 * S), 5.0, "never below 5% of the configured rate");
        // Past the old ceiling it recovers quickly, and never above the configured rate.
        let much_later = 40 * S + MAX_HOLD + 120 * S;
        assert_eq!(l.rate(much_later), 100.0);
    }
}
