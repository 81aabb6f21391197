//! librdkafka's own log lines and errors in sluice's terms: a broker that cannot be
//! reached is one outage (logged when it starts, every 30 s while it lasts, and when
//! it ends — see [`crate::metrics::outage`]); anything else is logged at the matching
//! level, each distinct line at most once a [`REPEAT`]. Without this, a stopped broker
//! drew two lines every 50 ms, each with the build machine's source path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Least time between two copies of the same librdkafka line.
pub(crate) const REPEAT: Duration = Duration::from_secs(30);

/// Lines remembered for de-duplication; past this the oldest are forgotten.
const REMEMBERED: usize = 256;

/// Where librdkafka's lines go; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct KafkaLog {
    metrics: Metrics,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
}

/// librdkafka's codes for a broker that cannot be reached.
fn is_transport(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | Resolve
            | BrokerNotAvailable
            | NetworkException
            | OperationTimedOut
    )
}

/// Whether a librdkafka log line says a broker could not be reached.
fn is_transport_line(fac: &str, message: &str) -> bool {
    fac == "FAIL"
        || [
            "Connection refused",
            "Connect to",
            "Disconnected",
            "timed out",
            "Failed to resolve",
        ]
        .iter()
        .any(|m| message.contains(m))
}

/// `message` with its timings left out: librdkafka's lines carry them ("after 3044ms
/// in state UP"), which made every copy of a line look new. Other figures (a
/// partition, an offset, a broker) stay: they tell lines apart.
fn without_figures(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let digits = rest[start..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - start);
        let after = &rest[start + digits..];
        if !after.starts_with("ms") {
            out.push_str(&rest[start..start + digits]);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl KafkaLog {
    /// Lines counted and logged through `metrics`.
    pub(crate) fn new(metrics: Metrics) -> Self {
        KafkaLog {
            metrics,
            seen: Arc::default(),
        }
    }

    /// Whether this line was logged less than [`REPEAT`] ago (and if not, remembers it).
    fn repeated(&self, key: String) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < REPEAT)
        {
            return true;
        }
        if seen.len() >= REMEMBERED {
            seen.retain(|_, at| now.duration_since(*at) < REPEAT);
            if seen.len() >= REMEMBERED {
                // A burst of distinct lines: forget them rather than scan on every one.
                seen.clear();
            }
        }
        seen.insert(key, now);
        false
    }

    /// One of librdkafka's log lines.
    pub(crate) fn line(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if is_transport_line(fac, message) {
            if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
                self.metrics.kafka_failed(message);
            } else {
                // A connection closed and opened again (by the broker's idle reaper, or
                // each client's on the way into an outage, which is logged once as such).
                tracing::debug!(facility = fac, "kafka: {message}");
            }
            return;
        }
        if self.repeated(format!("{fac} {}", without_figures(message))) {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "kafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "kafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility = fac, "kafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "kafka: {message}"),
        }
    }

    /// A global librdkafka error.
    pub(crate) fn error(&self, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code().is_some_and(is_transport) {
            self.metrics.kafka_failed(&format!("{reason}: {error}"));
            return;
        }
        if !self.repeated(format!("error {error} {reason}")) {
            tracing::error!("kafka: {error}: {reason}");
        }
    }

    /// The brokers answered.
    pub(crate) fn ok(&self) {
        self.metrics.kafka_ok();
    }
}

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        KafkaLog::error(self, &error, reason);
    }
}

impl ConsumerContext for KafkaLog {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_broker_away_is_one_outage_and_other_lines_are_not_repeated() {
        let metrics = Metrics::new();
        let log = KafkaLog::new(metrics.clone());
        for _ in 0..400 {
            log.line(
                RDKafkaLogLevel::Error,
                "FAIL",
                "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused",
            );
            log.error(
                &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                "1/1 brokers are down",
            );
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"sluice_dependency_down{dependency="kafka",target="brokers"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"sluice_dependency_failures_total{dependency="kafka",target="brokers"} 800"#
        ));
        log.ok();
        assert!(metrics
            .render()
            .contains(r#"sluice_dependency_down{dependency="kafka",target="brokers"} 0"#));
        assert!(!log.repeated("x".into()));
        assert!(log.repeated("x".into()));
        let disconnected = |ms: u32| {
            format!(
                "FAIL {}",
                without_figures(&format!(
                "127.0.0.1:1/1: Disconnected: connection closed by peer (after {ms}ms in state UP)"
            ))
            )
        };
        assert!(!log.repeated(disconnected(3044)));
        assert!(
            log.repeated(disconnected(3093)),
            "the same line with other timings"
        );
        assert_eq!(
            without_figures("partition 3 offset 42 reset after 17ms"),
            "partition 3 offset 42 reset after ms"
        );
        tokio::time::advance(REPEAT).await;
        assert!(!log.repeated("x".into()), "again after REPEAT");
    }
}
