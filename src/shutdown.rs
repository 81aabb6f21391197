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
            while lanes.join_next().await.is_some() {}
            self.dead_letters.wait().await;
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
    async fn a_quick_drain_never_cancels_the_hard_stop() {
        let shutdown = Shutdown::new();
        let hard = shutdown.hard_stop();
        let mut lanes = JoinSet::new();
        lanes.spawn(tokio::time::sleep(Duration::from_secs(1)));
        shutdown.drain(&mut lanes, Duration::from_secs(10)).await;
        assert!(!hard.is_cancelled());
    }
}
