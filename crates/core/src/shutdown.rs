//! How the worker stops, as one idea: a signal asks for it; the pipeline stops
//! reading; the lanes flush and in-flight requests finish within the drain deadline,
//! past which they are abandoned (left uncommitted, redelivered later); then the final
//! commit; and only then the services around the pipeline — `/metrics` and the health
//! endpoints, the lag monitor, the limit reporter — which must keep answering during
//! the drain.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long past the drain deadline the hard stop is waited for before the rest is
/// abandoned (the shipped 45 s grace period holds the 10 s drain deadline, this and
/// the final commit).
const GIVE_UP: Duration = Duration::from_secs(5);

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

/// The worker's stop, in the order a drain needs.
///
/// One root token, cancelled last, for the services; the hard stop is its child, so
/// it is cancelled at the drain deadline or at the very end, whichever comes first.
#[derive(Debug)]
pub(crate) struct Shutdown {
    /// Cancelled once the pipeline has drained and committed: the services stop.
    root: CancellationToken,
    /// Cancelled at the drain deadline: in-flight requests are abandoned.
    hard: CancellationToken,
    /// The services, waited for at the end.
    services: TaskTracker,
    /// Dead letters being written, part of the drain.
    dead_letters: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// Nothing stopped yet.
    pub(crate) fn new() -> Self {
        let root = CancellationToken::new();
        Shutdown {
            hard: root.child_token(),
            root,
            services: TaskTracker::new(),
            dead_letters: TaskTracker::new(),
        }
    }

    /// The token cancelled at the drain deadline (what in-flight work selects on).
    pub(crate) fn hard_stop(&self) -> CancellationToken {
        self.hard.clone()
    }

    /// Where dead letters are written: the drain waits for them like for the lanes.
    pub(crate) fn dead_letter_tasks(&self) -> TaskTracker {
        self.dead_letters.clone()
    }

    /// Runs a service until the pipeline has stopped: `service` gets the token that
    /// tells it to end.
    pub(crate) fn spawn_service<F>(&self, service: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.services.spawn(service(self.root.child_token()));
    }

    /// Waits for the lanes and the dead letters being written; past `deadline`,
    /// cancels the hard stop and waits for them to give up.
    pub(crate) async fn drain(&self, lanes: &mut JoinSet<()>, deadline: Duration) {
        tracing::info!(?deadline, "shutting down: draining lanes");
        self.dead_letters.close();
        let everything = async {
            while lanes.join_next().await.is_some() {}
            self.dead_letters.wait().await;
        };
        if tokio::time::timeout(deadline, everything).await.is_err() {
            self.hard.cancel();
            let gave_up = async {
                while lanes.join_next().await.is_some() {}
                self.dead_letters.wait().await;
            };
            if tokio::time::timeout(GIVE_UP, gave_up).await.is_err() {
                // Something did not heed the hard stop (a blocking broker call): what it
                // held is uncommitted and read again after the restart; nothing is lost.
                tracing::error!(
                    lanes = lanes.len(),
                    "{}s past the drain deadline, still not stopped: abandoned",
                    GIVE_UP.as_secs()
                );
                lanes.abort_all();
            }
        }
    }

    /// Runs `pipeline` until it returns. A lane ends only once the pipeline has let go
    /// of it, so one that ends before is a failure (a panic: a bug): it is logged, the
    /// worker is stopped through `stop` (its partitions would never commit again while
    /// `/readyz` said ready) and why is returned, for the exit status.
    pub(crate) async fn run_watching_lanes(
        pipeline: impl Future<Output = ()>,
        lanes: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) -> Option<String> {
        tokio::pin!(pipeline);
        let mut failed = None;
        loop {
            tokio::select! {
                _ = &mut pipeline => return failed,
                Some(ended) = lanes.join_next(), if failed.is_none() => {
                    let why = match ended {
                        Err(e) if e.is_panic() => {
                            let payload = e.into_panic();
                            let text = payload
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| payload.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "a panic".into());
                            format!("panicked: {text}")
                        }
                        Err(e) => e.to_string(),
                        Ok(()) => "ended".into(),
                    };
                    tracing::error!(
                        "a lane stopped unexpectedly ({why}): stopping the worker, to be \
                         restarted; what it held is uncommitted and read again"
                    );
                    failed = Some(why);
                    stop.cancel();
                }
            }
        }
    }

    /// Stops the services and waits for them.
    pub(crate) async fn stop_services(self) {
        self.root.cancel();
        self.services.close();
        self.services.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lane_past_the_deadline_is_stopped_hard_and_services_stop_last() {
        let shutdown = Shutdown::new();
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = stopped.clone();
        shutdown.spawn_service(|stop| async move {
            stop.cancelled().await;
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let hard = shutdown.hard_stop();
        let mut lanes = JoinSet::new();
        // A lane that would run for an hour unless stopped hard.
        lanes.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = hard.cancelled() => {}
            }
        });
        let started = tokio::time::Instant::now();
        shutdown.drain(&mut lanes, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(
            !stopped.load(std::sync::atomic::Ordering::SeqCst),
            "services outlive the drain"
        );
        shutdown.stop_services().await;
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_that_ignores_the_hard_stop_is_abandoned_within_a_bound() {
        let shutdown = Shutdown::new();
        let mut lanes = JoinSet::new();
        // A lane stuck in something that does not heed the hard stop.
        lanes.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        // And a dead letter that never gets written.
        shutdown
            .dead_letter_tasks()
            .spawn(tokio::time::sleep(Duration::from_secs(3600)));
        let started = tokio::time::Instant::now();
        shutdown.drain(&mut lanes, Duration::from_secs(10)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10) + GIVE_UP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_that_panics_stops_the_worker_at_once() {
        let stop = CancellationToken::new();
        let mut lanes = JoinSet::new();
        lanes.spawn(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            panic!("lane bug");
        });
        lanes.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        // The pipeline: runs until stopped.
        let pipeline = {
            let stop = stop.clone();
            async move { stop.cancelled().await }
        };
        let started = tokio::time::Instant::now();
        let failed = Shutdown::run_watching_lanes(pipeline, &mut lanes, &stop).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(failed.as_deref(), Some("panicked: lane bug"));
        assert!(stop.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_drain_never_cancels_the_hard_stop() {
        let shutdown = Shutdown::new();
        let hard = shutdown.hard_stop();
        let mut lanes = JoinSet::new();
        lanes.spawn(tokio::time::sleep(Duration::from_secs(1)));
        shutdown.drain(&mut lanes, Duration::from_secs(10)).await;
        assert!(!hard.is_cancelled());
    }
}
