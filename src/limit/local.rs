//! Per-workspace token buckets (governor's GCRA) plus a global cap on requests in
//! flight. Waiting is async: a workspace out of tokens waits on its own bucket and never
//! holds up another.
//!
//! The buckets run on tokio's clock, so a paused test clock drives them exactly.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::adaptive::Aimd;

/// governor's clock, read from tokio's (pausable) time.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

#[derive(Debug)]
struct WorkspaceLimit {
    bucket: Bucket,
    clock: TokioClock,
    adaptive: Mutex<Aimd>,
}

/// Held for the duration of one HTTP attempt: a slot under the global in-flight cap.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

/// The limits of every workspace.
#[derive(Debug)]
pub struct Limiter {
    workspaces: HashMap<String, WorkspaceLimit>,
    in_flight: Arc<Semaphore>,
}

/// One workspace's limit.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Requests per second.
    pub per_second: f64,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
}

impl Limiter {
    /// Buckets for `workspaces` (id and rate) and a global in-flight cap.
    pub fn new(workspaces: impl IntoIterator<Item = (String, Rate)>, max_in_flight: usize) -> Self {
        let origin = tokio::time::Instant::now();
        let workspaces = workspaces
            .into_iter()
            .map(|(id, rate)| {
                let period = Duration::from_secs_f64(1.0 / rate.per_second.max(1e-3));
                let quota = Quota::with_period(period)
                    .expect("a positive rate has a non-zero period")
                    .allow_burst(NonZeroU32::new(rate.burst.max(1)).expect("at least 1"));
                let clock = TokioClock { origin };
                let limit = WorkspaceLimit {
                    bucket: RateLimiter::direct_with_clock(quota, clock.clone()),
                    clock,
                    adaptive: Mutex::new(Aimd::new(rate.per_second)),
                };
                (id, limit)
            })
            .collect();
        Limiter {
            workspaces,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Waits until `workspace` may send one request: past any 429 pause, at its
    /// (possibly lowered) pace, with a token from its bucket, then a global slot.
    /// Returns how long it waited and the permit to hold while the request runs.
    pub async fn acquire(&self, workspace: &str) -> (Duration, Permit) {
        let started = tokio::time::Instant::now();
        if let Some(limit) = self.workspaces.get(workspace) {
            loop {
                let slot = lock(&limit.adaptive).reserve(tokio::time::Instant::now());
                if let Some(slot) = slot {
                    tokio::time::sleep_until(slot).await;
                }
                while let Err(not_until) = limit.bucket.check() {
                    tokio::time::sleep(not_until.wait_time_from(limit.clock.now())).await;
                }
                // A 429 may have arrived while this one waited for its token.
                if !lock(&limit.adaptive).is_paused(tokio::time::Instant::now()) {
                    break;
                }
            }
        }
        let slot = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        (started.elapsed(), Permit { _slot: slot })
    }

    /// The API throttled `workspace` (429, or 503 with `Retry-After`).
    pub fn throttled(&self, workspace: &str, retry_after: Option<Duration>) {
        if let Some(limit) = self.workspaces.get(workspace) {
            lock(&limit.adaptive).on_throttle(tokio::time::Instant::now(), retry_after);
        }
    }

    /// A request of `workspace` succeeded.
    pub fn succeeded(&self, workspace: &str) {
        if let Some(limit) = self.workspaces.get(workspace) {
            lock(&limit.adaptive).on_success();
        }
    }

    /// The current effective rate of `workspace`, requests per second.
    pub fn effective_rate(&self, workspace: &str) -> Option<f64> {
        self.workspaces
            .get(workspace)
            .map(|l| lock(&l.adaptive).effective())
    }
}

fn lock(m: &Mutex<Aimd>) -> std::sync::MutexGuard<'_, Aimd> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Drives `tasks` concurrent senders for `seconds` of paused time; returns the
    /// instants (ms since start) at which each request went.
    async fn send_times(
        limiter: Arc<Limiter>,
        ws: &'static str,
        tasks: usize,
        seconds: u64,
    ) -> Vec<u64> {
        let start = tokio::time::Instant::now();
        let end = start + Duration::from_secs(seconds);
        let times = Arc::new(Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (limiter, times) = (limiter.clone(), times.clone());
            set.spawn(async move {
                loop {
                    let (_, permit) = limiter.acquire(ws).await;
                    let now = tokio::time::Instant::now();
                    if now >= end {
                        break;
                    }
                    times.lock().unwrap().push((now - start).as_millis() as u64);
                    drop(permit);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let mut t = times.lock().unwrap().clone();
        t.sort();
        t
    }

    fn max_in_any_second(times: &[u64]) -> usize {
        times
            .iter()
            .map(|&t| times.iter().filter(|&&u| u >= t && u < t + 1000).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_100_per_second_limit_is_used_fully_and_never_exceeded() {
        let limiter = Arc::new(Limiter::new(
            [(
                "acme".to_string(),
                Rate {
                    per_second: 100.0,
                    burst: 1,
                },
            )],
            64,
        ));
        let times = send_times(limiter, "acme", 8, 20).await;
        assert!(
            max_in_any_second(&times) <= 100,
            "{}",
            max_in_any_second(&times)
        );
        assert!(times.len() >= 1900, "used {} of 2000", times.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_workspace_waits_and_others_do_not() {
        let limiter = Arc::new(Limiter::new(
            [
                (
                    "slow".to_string(),
                    Rate {
                        per_second: 10.0,
                        burst: 1,
                    },
                ),
                (
                    "free".to_string(),
                    Rate {
                        per_second: 10.0,
                        burst: 1,
                    },
                ),
            ],
            64,
        ));
        let start = tokio::time::Instant::now();
        limiter.throttled("slow", Some(Duration::from_secs(2)));
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (limiter, done) = (limiter.clone(), done.clone());
            tokio::spawn(async move {
                limiter.acquire("slow").await;
                done.store(true, Ordering::SeqCst);
                tokio::time::Instant::now()
            })
        };
        let (waited, _) = limiter.acquire("free").await;
        assert_eq!(waited, Duration::ZERO, "the other workspace is not held up");
        tokio::time::sleep(Duration::from_millis(1900)).await;
        assert!(
            !done.load(Ordering::SeqCst),
            "no request within Retry-After"
        );
        let went = waiter.await.unwrap();
        assert!(went - start >= Duration::from_secs(2));
        assert_eq!(limiter.effective_rate("slow"), Some(5.0));
        assert_eq!(limiter.effective_rate("free"), Some(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_cap_bounds_requests_in_flight() {
        let limiter = Limiter::new(
            [(
                "a".to_string(),
                Rate {
                    per_second: 1000.0,
                    burst: 10,
                },
            )],
            2,
        );
        let (_, p1) = limiter.acquire("a").await;
        let (_, _p2) = limiter.acquire("a").await;
        let third = tokio::time::timeout(Duration::from_secs(1), limiter.acquire("a")).await;
        assert!(third.is_err(), "a third request waits for a slot");
        drop(p1);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), limiter.acquire("a"))
                .await
                .is_ok()
        );
    }
}
