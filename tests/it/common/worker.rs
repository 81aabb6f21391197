//! A worker running in the test's process, waiting for a condition, and reading a
//! worker's `/metrics`.

use std::time::Duration;

use sluice_core::config::Config;
use sluice_core::metrics::Metrics;
use sluice_lab::capacity::scrapes::Scrape;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// With `SLUICE_TEST_LOG=FILTER` (e.g. `sluice=debug`), the in-process workers' log
/// lines go to the test's output: the way to see why a scenario stalled.
fn log_if_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
        ONCE.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        });
    }
}

/// A worker running in this process.
pub struct Worker {
    /// Its metrics.
    pub metrics: Metrics,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    /// Starts `sluice_core::pipeline::run` with `config` (its endpoints on `server.listen`).
    pub fn start(config: Config) -> Self {
        Self::launch(|metrics, stop| sluice_core::pipeline::run(config, metrics, stop))
    }

    /// Starts the worker with its HTTP endpoints on a free loopback port; returns the
    /// worker and `http://ADDR`.
    pub async fn start_serving(config: Config) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let worker = Self::launch(|metrics, stop| {
            sluice_core::pipeline::run_on(listener, config, metrics, stop)
        });
        (worker, url)
    }

    fn launch<F>(run: impl FnOnce(Metrics, CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = Result<(), sluice_core::pipeline::WorkerError>>
            + Send
            + 'static,
    {
        log_if_asked();
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let running = run(metrics.clone(), stop.clone());
        let task = tokio::spawn(async move { running.await.expect("worker runs") });
        Worker {
            metrics,
            stop,
            task,
        }
    }

    /// Sends the shutdown signal without waiting for the drain.
    pub fn signal_stop(&self) {
        self.stop.cancel();
    }

    /// Sends the shutdown signal and waits until the worker has drained and left.
    pub async fn stop(self) -> sluice_core::metrics::Metrics {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("worker stops within a minute")
            .expect("worker task did not panic");
        self.metrics
    }
}

/// Polls `condition` every 50 ms until it holds, panicking with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET {url}/metrics`, parsed as `sluice capacity review` parses it (prometheus-parse).
pub async fn scrape(url: &str) -> Scrape {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    check_exposition(&text);
    Scrape::parse(&text, 0.0).expect("the exposition format")
}

/// Fails on a line of `text` that is not Prometheus text format: a comment other than
/// HELP/TYPE, a bad metric name, unclosed labels or a value that is not a number
/// (prometheus-parse skips such lines; the tests must not).
fn check_exposition(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        assert!(
            name_end == series.len() || series.ends_with('}'),
            "unclosed labels in {line}"
        );
        assert!(
            matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok(),
            "bad value in {line}"
        );
    }
}
