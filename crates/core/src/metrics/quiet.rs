//! Lines that would repeat — a retry per failed request, 5xx after 5xx — said at most
//! once per [`REMINDER`](super::outage::REMINDER) per condition, each saying how many
//! like it were held back since; the counters keep every one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// When each condition was last said, and how many times it happened since.
#[derive(Debug)]
pub(crate) struct Quiet {
    every: Duration,
    said: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Quiet {
    /// At most one line per condition per `every`.
    pub(crate) fn new(every: Duration) -> Self {
        Quiet {
            every,
            said: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last line)` when a line about `condition` may be
    /// written now; `None` when it is too soon (the occurrence is counted).
    pub(crate) fn allow(&self, condition: &str) -> Option<u64> {
        let now = Instant::now();
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        match said.get_mut(condition) {
            Some((at, held)) if now.duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let before = *held;
                (*at, *held) = (now, 0);
                Some(before)
            }
            None => {
                said.insert(condition.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_condition_per_interval_with_the_count_held_back() {
        let quiet = Quiet::new(Duration::from_secs(30));
        assert_eq!(quiet.allow("w/http_503"), Some(0));
        for _ in 0..99 {
            assert_eq!(quiet.allow("w/http_503"), None);
        }
        assert_eq!(quiet.allow("w/http_500"), Some(0), "another condition");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(quiet.allow("w/http_503"), Some(99));
        assert_eq!(quiet.allow("w/http_503"), None);
    }

    /// A shared buffer a test's log lines are written to.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn a_hundred_thousand_bad_records_write_a_handful_of_lines_and_count_every_one() {
        use crate::metrics::Metrics;
        use crate::record::FailureReason;
        use crate::record::{Origin, TopicPartition};
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_ansi(false)
            .finish();
        let metrics = Metrics::new();
        let reasons = [
            FailureReason::MalformedJson,
            FailureReason::UnknownWorkspace,
        ];
        tracing::subscriber::with_default(subscriber, || {
            for offset in 0..100_000 {
                let origin = Origin {
                    tp: TopicPartition::new("t", 0),
                    offset,
                };
                let reason = reasons[offset as usize % 2];
                metrics.invalid(&origin, reason, &"bad");
                metrics.dead_lettered(None, &origin, reason, "bad");
                metrics.auth_failure("w", 401);
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        // The first of each: two reasons invalid, two dead-lettered, one refused key.
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("offset=0") && text.contains("reason=malformed_json"));
        let dead = metrics.dead_lettered_total();
        assert_eq!(dead, 100_000, "the counters keep every one");
    }
}
