//! Quiet failure: a dependency that stops answering — the brokers, a workspace's API —
//! is logged once when it starts (what, where, the error), reminded at most every
//! [`REMINDER`] while it lasts, and logged once more when it recovers; its state and
//! failures are counted in `sluice_dependency_down` and
//! `sluice_dependency_failures_total`. A process whose broker is away otherwise writes
//! hundreds of lines a minute and buries everything else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::time::Instant;

/// Least time between two reminders that an outage goes on.
pub(crate) const REMINDER: Duration = Duration::from_secs(30);

/// One dependency down.
#[derive(Debug)]
struct Down {
    since: Instant,
    failures: u64,
    reminded: Instant,
    first_error: String,
    last_error: String,
}

/// Outages of one kind of dependency (`kafka`, `api`), by target (the brokers, a
/// workspace).
#[derive(Debug)]
pub(crate) struct Outages {
    dependency: &'static str,
    down: Mutex<HashMap<String, Down>>,
    /// How many targets are down: recoveries are checked on every success, so the
    /// common case (none) must not take the lock.
    count: AtomicUsize,
    gauge: IntGaugeVec,
    failures: IntCounterVec,
}

/// What [`Outages::failed`] did, for callers and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    /// The first failure: logged.
    Started,
    /// A reminder: logged.
    Reminded,
    /// Counted only.
    Quiet,
}

impl Outages {
    /// Outages of `dependency`, counted in `gauge` and `failures` (labels
    /// `dependency`, `target`).
    pub(crate) fn new(
        dependency: &'static str,
        gauge: IntGaugeVec,
        failures: IntCounterVec,
    ) -> Self {
        Outages {
            dependency,
            down: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
            gauge,
            failures,
        }
    }

    /// `target` failed with `error`.
    pub(crate) fn failed(&self, target: &str, error: &str) -> Logged {
        let dependency = self.dependency;
        self.failures.with_label_values(&[dependency, target]).inc();
        let now = Instant::now();
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match down.get_mut(target) {
            None => {
                down.insert(
                    target.to_string(),
                    Down {
                        since: now,
                        failures: 1,
                        reminded: now,
                        first_error: error.to_string(),
                        last_error: error.to_string(),
                    },
                );
                self.count.fetch_add(1, Ordering::AcqRel);
                // Under the lock, so a recovery racing this cannot leave it at 1.
                self.gauge.with_label_values(&[dependency, target]).set(1);
                drop(down);
                tracing::warn!(dependency, target, "{dependency} unreachable: {error}");
                Logged::Started
            }
            Some(d) => {
                d.failures += 1;
                if d.last_error != error {
                    d.last_error = error.to_string();
                }
                if now.duration_since(d.reminded) < REMINDER {
                    return Logged::Quiet;
                }
                d.reminded = now;
                let (secs, failures) = (now.duration_since(d.since).as_secs(), d.failures);
                drop(down);
                tracing::warn!(
                    dependency,
                    target,
                    failures,
                    "{dependency} still unreachable after {secs} s; last error: {error}"
                );
                Logged::Reminded
            }
        }
    }

    /// `target` answered: the end of its outage, if it had one.
    pub(crate) fn recovered(&self, target: &str) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let Some(d) = down.remove(target) else {
            return false;
        };
        self.count.fetch_sub(1, Ordering::AcqRel);
        let dependency = self.dependency;
        self.gauge.with_label_values(&[dependency, target]).set(0);
        drop(down);
        tracing::info!(
            dependency,
            target,
            failures = d.failures,
            "{dependency} reachable again after {} s",
            d.since.elapsed().as_secs()
        );
        true
    }

    /// `target`'s outage now, said for a person: for how long, how many failures, the
    /// last error.
    pub(crate) fn describe(&self, target: &str) -> Option<String> {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        let d = down.get(target)?;
        let last = if d.last_error == d.first_error {
            String::new()
        } else {
            format!("; last: {}", d.last_error)
        };
        Some(format!(
            "{} unreachable for {} s ({} failures): {}{last}",
            self.dependency,
            d.since.elapsed().as_secs(),
            d.failures,
            d.first_error
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn outages() -> Outages {
        Outages::new(
            "api",
            IntGaugeVec::new(Opts::new("d", "d"), &["dependency", "target"]).unwrap(),
            IntCounterVec::new(Opts::new("f", "f"), &["dependency", "target"]).unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_when_it_starts_a_reminder_every_30_s_one_when_it_ends() {
        let o = outages();
        let mut logged = Vec::new();
        // A failure every 50 ms for 65 s.
        for _ in 0..1300 {
            logged.push(o.failed("acme", "connection refused"));
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        let lines = logged.iter().filter(|l| **l != Logged::Quiet).count();
        assert_eq!(logged[0], Logged::Started);
        assert_eq!(lines, 3, "start + reminders at 30 s and 60 s");
        assert_eq!(o.failures.with_label_values(&["api", "acme"]).get(), 1300);
        assert_eq!(o.gauge.with_label_values(&["api", "acme"]).get(), 1);
        assert!(o.describe("acme").is_some() && o.describe("other").is_none());
        assert!(o.recovered("acme"));
        assert!(!o.recovered("acme"), "only once");
        assert_eq!(o.gauge.with_label_values(&["api", "acme"]).get(), 0);
        assert_eq!(o.failed("acme", "again"), Logged::Started, "a new outage");
    }
}
