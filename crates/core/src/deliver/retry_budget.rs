//! One request's retry budget: after each failed attempt, how long to wait before the
//! next, or that it is time to give up. Pure policy on tokio's clock, so it is tested
//! on a paused one; the HTTP side only says what kind of failure it met.

use std::time::Duration;

use tokio::time::Instant;

use super::retry::Backoff;
use crate::config::RetryConfig;

/// Longest wait between two attempts to reach an API that refuses connections.
pub(super) const OUTAGE_PROBE: Duration = Duration::from_secs(5);

/// Why an attempt is worth making again, which decides what it costs the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Again {
    /// The API could not be reached at all (connection refused, or no answer to the
    /// connect): it never saw the events. An outage to wait out, like a broker away,
    /// not a reason to give up on them: probed every few seconds, and neither the
    /// attempt nor its time counts.
    Unreachable,
    /// A failure the API saw or caused (5xx, 408, 429, a timeout, a reset): it counts,
    /// and the wait is at least what the API asked for.
    Transient {
        /// The API's `Retry-After` (or rate-limit reset), already capped.
        asked: Option<Duration>,
    },
    /// The credentials were refused (401/403): a configuration problem, not bad events.
    /// Waits the longest backoff and never gives up.
    Auth,
}

/// The retry budget of one request: `max_attempts` attempts that reached the API and
/// `max_elapsed_ms` of the time it was reachable.
#[derive(Debug)]
pub(super) struct RetryBudget {
    backoff: Backoff,
    max_attempts: u32,
    max_elapsed: Duration,
    started: Instant,
    /// Time spent on unreachable attempts and the waits after them.
    away: Duration,
    counted: u32,
}

impl RetryBudget {
    /// A fresh budget from the `[retry]` settings, its clock started now.
    pub(super) fn new(config: &RetryConfig) -> Self {
        RetryBudget {
            backoff: Backoff::new(config),
            max_attempts: config.max_attempts,
            max_elapsed: config.max_elapsed_ms.duration(),
            started: Instant::now(),
            away: Duration::ZERO,
            counted: 0,
        }
    }

    /// After an attempt that took `took` and failed as `again`: the wait before the
    /// next attempt, or `None` when the budget is spent.
    pub(super) fn next_wait(&mut self, again: Again, took: Duration) -> Option<Duration> {
        match again {
            Again::Unreachable => {
                self.away += took;
                let wait = self.backoff.next_delay().min(OUTAGE_PROBE);
                self.away += wait;
                Some(wait)
            }
            Again::Auth => {
                self.counted += 1;
                Some(self.backoff.max())
            }
            Again::Transient { asked } => {
                self.counted += 1;
                let spent = self.started.elapsed().saturating_sub(self.away);
                if self.counted >= self.max_attempts || spent >= self.max_elapsed {
                    return None;
                }
                Some(self.backoff.next_delay().max(asked.unwrap_or_default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_attempts: u32, max_elapsed_ms: u64) -> RetryConfig {
        RetryConfig {
            max_attempts,
            max_elapsed_ms: crate::config::Millis::new(max_elapsed_ms),
            initial_backoff_ms: crate::config::Millis::new(100),
            max_backoff_ms: crate::config::Millis::new(2_000),
            ..RetryConfig::default()
        }
    }

    /// Plays `script` (each attempt's failure and how long it took) through a budget on
    /// tokio's paused clock, sleeping each wait: the waits, and whether it gave up.
    async fn play(budget: &mut RetryBudget, script: &[(Again, u64)]) -> (Vec<Duration>, bool) {
        let mut waits = Vec::new();
        for &(again, took_ms) in script {
            let took = Duration::from_millis(took_ms);
            tokio::time::advance(took).await;
            match budget.next_wait(again, took) {
                Some(wait) => {
                    tokio::time::sleep(wait).await;
                    waits.push(wait);
                }
                None => return (waits, true),
            }
        }
        (waits, false)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_give_up_after_max_attempts() {
        let mut budget = RetryBudget::new(&config(3, 600_000));
        let fail = (Again::Transient { asked: None }, 10);
        let (waits, gave_up) = play(&mut budget, &[fail, fail, fail]).await;
        assert_eq!(waits.len(), 2, "two waits between three attempts");
        assert!(gave_up, "the third failure spends the budget");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_give_up_after_max_elapsed() {
        let mut budget = RetryBudget::new(&config(100, 5_000));
        // Slow attempts (2 s each): the third ends past 5 s of a reachable API's time.
        let slow = (Again::Transient { asked: None }, 2_000);
        let (waits, gave_up) = play(&mut budget, &[slow, slow, slow, slow]).await;
        assert!(gave_up);
        assert_eq!(waits.len(), 2, "gave up at the third attempt: {waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_apis_retry_after_is_the_least_wait() {
        // Above the backoff's ceiling: the API's wait.
        let mut budget = RetryBudget::new(&config(10, 600_000));
        let asked = Some(Duration::from_secs(7));
        let (waits, _) = play(&mut budget, &[(Again::Transient { asked }, 5)]).await;
        assert_eq!(waits, [Duration::from_secs(7)]);
        // Below it: never less than asked, but the jittered backoff when that is longer.
        let asked = Duration::from_millis(20);
        let mut longer = 0;
        for _ in 0..200 {
            let mut budget = RetryBudget::new(&config(10, 600_000));
            let again = Again::Transient { asked: Some(asked) };
            let (waits, _) = play(&mut budget, &[(again, 5), (again, 5), (again, 5)]).await;
            assert!(waits.iter().all(|w| *w >= asked), "{waits:?}");
            longer += waits.iter().filter(|w| **w > asked).count();
        }
        assert!(longer > 0, "the backoff still applies above the API's wait");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_api_costs_nothing_and_is_probed_every_few_seconds() {
        let mut config = config(3, 600_000);
        // A backoff that would grow to a minute: an outage is still probed every 5 s.
        config.max_backoff_ms = crate::config::Millis::new(60_000);
        let mut budget = RetryBudget::new(&config);
        // An hour of refused connections (connect timeouts of 1 s each)...
        let refused = (Again::Unreachable, 1_000);
        let mut outage = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3600) {
            let (waits, gave_up) = play(&mut budget, &[refused]).await;
            assert!(!gave_up, "an outage never spends the budget");
            outage.extend(waits);
        }
        assert!(
            outage.iter().all(|w| *w <= OUTAGE_PROBE),
            "probed every ≤5 s"
        );
        assert!(
            outage.iter().any(|w| *w > Duration::from_secs(2)),
            "the cap, not the backoff, bounds the probes"
        );
        // ...then the API answers with failures: the full budget is still there.
        let fail = (Again::Transient { asked: None }, 10);
        let (waits, gave_up) = play(&mut budget, &[fail, fail]).await;
        assert_eq!((waits.len(), gave_up), (2, false));
        let (_, gave_up) = play(&mut budget, &[fail]).await;
        assert!(gave_up, "the third counted attempt spends it");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_count_as_attempts() {
        let mut budget = RetryBudget::new(&config(3, 600_000));
        let (_, gave_up) = play(&mut budget, &[(Again::Auth, 5), (Again::Auth, 5)]).await;
        assert!(!gave_up);
        let (_, gave_up) = play(&mut budget, &[(Again::Transient { asked: None }, 5)]).await;
        assert!(gave_up, "two refusals and one failure are three attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_wait_the_longest_backoff_and_never_give_up() {
        let mut budget = RetryBudget::new(&config(2, 1_000));
        let script = vec![(Again::Auth, 50); 20];
        let (waits, gave_up) = play(&mut budget, &script).await;
        assert!(!gave_up);
        assert!(
            waits.iter().all(|w| *w == Duration::from_secs(2)),
            "{waits:?}"
        );
    }
}
