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
}
