//! Additive-increase, multiplicative-decrease of a workspace's effective rate, and the
//! pause a 429 asks for. Pure state: callers pass the time in.

use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the rate kept after a throttling answer.
pub const DECREASE_FACTOR: f64 = 0.5;
/// Share of the configured rate won back per successful request.
pub const INCREASE_SHARE: f64 = 0.02;
/// The effective rate never drops below this share of the configured rate.
pub const FLOOR_SHARE: f64 = 0.05;
/// Pause after a 429 that names no `Retry-After`.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// One workspace's adaptive state.
#[derive(Debug, Clone)]
pub struct Aimd {
    configured: f64,
    effective: f64,
    paused_until: Option<Instant>,
    /// When the next request may start under the lowered rate (pacing slot).
    next_slot: Option<Instant>,
}

impl Aimd {
    /// Starts at the configured rate (requests per second).
    pub fn new(configured: f64) -> Self {
        Aimd {
            configured,
            effective: configured,
            paused_until: None,
            next_slot: None,
        }
    }

    /// The current effective rate, requests per second.
    pub fn effective(&self) -> f64 {
        self.effective
    }

    /// Whether the effective rate is below the configured one.
    pub fn is_lowered(&self) -> bool {
        self.effective < self.configured
    }

    /// Whether a 429's pause still holds at `now`.
    pub fn is_paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|p| p > now)
    }

    /// The API said "too many requests": pause until `retry_after` from `now` (or a
    /// default) and halve the rate.
    pub fn on_throttle(&mut self, now: Instant, retry_after: Option<Duration>) {
        let until = now + retry_after.unwrap_or(DEFAULT_PAUSE);
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.effective = (self.effective * DECREASE_FACTOR).max(self.configured * FLOOR_SHARE);
        self.next_slot = None;
    }

    /// A request succeeded: win back a little rate, never above the configured one.
    pub fn on_success(&mut self) {
        self.effective = (self.effective + self.configured * INCREASE_SHARE).min(self.configured);
    }

    /// Reserves the moment the next request may start: after any pause, and — while the
    /// rate is lowered — one lowered interval after the previous reservation. Returns
    /// `None` when nothing holds the request back beyond the token bucket.
    pub fn reserve(&mut self, now: Instant) -> Option<Instant> {
        let paused = self.paused_until.filter(|p| *p > now);
        if paused.is_none() {
            self.paused_until = None;
        }
        if !self.is_lowered() {
            self.next_slot = None;
            return paused;
        }
        let earliest = paused.unwrap_or(now);
        let slot = self.next_slot.map_or(earliest, |s| s.max(earliest));
        self.next_slot = Some(slot + Duration::from_secs_f64(1.0 / self.effective));
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn throttling_pauses_halves_and_success_recovers_additively() {
        let now = Instant::now();
        let mut a = Aimd::new(100.0);
        assert_eq!(a.reserve(now), None);

        a.on_throttle(now, Some(Duration::from_secs(2)));
        assert_eq!(a.effective(), 50.0);
        // The first request waits out the pause; the next is spaced at the lowered rate.
        assert_eq!(a.reserve(now), Some(now + Duration::from_secs(2)));
        assert_eq!(a.reserve(now), Some(now + Duration::from_millis(2020)));

        a.on_throttle(now, None);
        assert_eq!(a.effective(), 25.0);
        for _ in 0..10 {
            a.on_throttle(now, None);
        }
        assert_eq!(a.effective(), 5.0, "never below the floor");

        for _ in 0..20 {
            a.on_success();
        }
        assert!((a.effective() - 45.0).abs() < 1e-9, "{}", a.effective());
        for _ in 0..100 {
            a.on_success();
        }
        assert_eq!(a.effective(), 100.0, "never above the configured rate");
        assert!(!a.is_lowered());
        let later = now + Duration::from_secs(10);
        assert_eq!(a.reserve(later), None);
    }
}
