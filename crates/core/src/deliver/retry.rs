//! Which answers are worth asking again for, how long to wait, and what the API asked
//! for: the split every retrying client needs, kept in one place so delivery code only
//! branches on the [`AnswerClass`].

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::config::RetryConfig;

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerClass {
    /// Everything was accepted.
    Success,
    /// Some items were refused (Customer.io's 207); the rest were accepted.
    Partial,
    /// A transient problem: try again (connection errors, timeouts, 408, 429, 5xx but
    /// 501).
    Retry,
    /// The credentials were refused (401/403). A configuration problem, not bad events:
    /// keep retrying at the longest backoff rather than dead-letter the whole stream.
    RetryAuth,
    /// The request is too large (413): split the batch and send the halves.
    Split,
    /// The request can never succeed as it is.
    Reject,
}

/// Classifies an HTTP status.
pub fn classify(status: StatusCode) -> AnswerClass {
    match status.as_u16() {
        207 => AnswerClass::Partial,
        s if (200..300).contains(&s) => AnswerClass::Success,
        401 | 403 => AnswerClass::RetryAuth,
        408 | 429 => AnswerClass::Retry,
        413 => AnswerClass::Split,
        501 => AnswerClass::Reject,
        s if s >= 500 => AnswerClass::Retry,
        _ => AnswerClass::Reject,
    }
}

/// Whether this answer throttles the workspace (pause + lower its rate): a 429, or a
/// 503 that says when to come back.
pub(super) fn is_throttle(status: StatusCode, retry_after: Option<Duration>) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_some())
}

/// The longest wait an API's headers are believed for: past it (`Retry-After:
/// 99999999999`, `X-RateLimit-Reset: 1e20`) they are ignored and the backoff policy
/// decides, as without them. Every header value is hostile input.
pub(super) const MAX_ASKED_WAIT: Duration = Duration::from_secs(3600);

/// How long the API asked us to wait: `Retry-After` (delta-seconds or HTTP-date), else
/// `X-RateLimit-Reset` (seconds to wait; a unix time in seconds, or in milliseconds,
/// when it is that large). `None` when neither says, or says more than
/// [`MAX_ASKED_WAIT`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    asked_wait(headers, now).filter(|d| *d <= MAX_ASKED_WAIT)
}

fn asked_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = text("retry-after") {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    let reset = text("x-ratelimit-reset")?.parse::<f64>().ok()?;
    if !reset.is_finite() || reset < 0.0 {
        return None;
    }
    // Unix times in seconds are > 10^9 (until 2286), in milliseconds > 10^12 (since
    // 2001); smaller values are seconds to wait.
    if reset > 1e9 {
        let seconds = if reset > 1e11 { reset / 1000.0 } else { reset };
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)?;
        return Some(at.duration_since(now).unwrap_or_default());
    }
    Duration::try_from_secs_f64(reset).ok()
}

/// `2xx`, `4xx`... for metrics.
pub(crate) fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[0, min(max, initial · 2ⁿ)]`. (Owned here: the few lines the `backoff` crate gave
/// are not worth an unmaintained dependency, RUSTSEC-2025-0012.)
#[derive(Debug)]
pub struct Backoff {
    /// The next wait's ceiling.
    ceiling: Duration,
    max: Duration,
}

impl Backoff {
    /// A fresh policy from the `[retry]` settings.
    pub fn new(config: &RetryConfig) -> Self {
        let max = config.max_backoff_ms.duration();
        Backoff {
            ceiling: config.initial_backoff_ms.duration().min(max),
            max,
        }
    }

    /// The next wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = ceiling.saturating_mul(2).min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }

    /// The longest wait (used between 401/403 retries).
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_classified_as_documented() {
        let cases = [
            (200, AnswerClass::Success),
            (204, AnswerClass::Success),
            (207, AnswerClass::Partial),
            (400, AnswerClass::Reject),
            (404, AnswerClass::Reject),
            (413, AnswerClass::Split),
            (401, AnswerClass::RetryAuth),
            (403, AnswerClass::RetryAuth),
            (408, AnswerClass::Retry),
            (429, AnswerClass::Retry),
            (500, AnswerClass::Retry),
            (501, AnswerClass::Reject),
            (503, AnswerClass::Retry),
        ];
        for (code, verdict) in cases {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                verdict,
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_rate_limit_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(2)));

        let date = httpdate::fmt_http_date(now + Duration::from_secs(5));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(5)));

        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1700000007"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        // The same instant in milliseconds is 7 s away, not 300 years.
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("1700000007500"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(7500)));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    proptest::proptest! {
        /// Every header value is hostile input: whatever `Retry-After` and
        /// `X-RateLimit-Reset` say, reading them never panics and never asks for more
        /// than [`MAX_ASKED_WAIT`].
        #[test]
        fn any_wait_header_is_read_without_panic_and_within_the_cap(
            retry in "\\PC{0,40}|[0-9]{1,25}|-?[0-9.e+]{1,30}",
            reset in "\\PC{0,40}|[0-9]{1,25}|-?[0-9.eE+-]{1,30}|NaN|inf",
            now_s in 0u64..=4_102_444_800,
        ) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_s);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&retry) {
                h.insert("retry-after", v);
            }
            if let Ok(v) = HeaderValue::from_str(&reset) {
                h.insert("x-ratelimit-reset", v);
            }
            if let Some(wait) = retry_after(&h, now) {
                proptest::prop_assert!(wait <= MAX_ASKED_WAIT);
            }
        }
    }

    #[test]
    fn absurd_waits_are_not_believed_and_never_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (name, value) in [
            ("x-ratelimit-reset", "1e20"),
            ("x-ratelimit-reset", "1e300"),
            (
                "x-ratelimit-reset",
                "179769313486231570000000000000000000000000",
            ),
            ("x-ratelimit-reset", "NaN"),
            ("x-ratelimit-reset", "-5"),
            ("x-ratelimit-reset", "99999999999"),
            ("retry-after", "18446744073709551615"),
            ("retry-after", "99999999999999999999999"),
            ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
            ("retry-after", "-1"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(value).unwrap());
            assert_eq!(retry_after(&h, now), None, "{name}: {value}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3600"));
        assert_eq!(
            retry_after(&h, now),
            Some(MAX_ASKED_WAIT),
            "an hour is believed"
        );
    }

    #[test]
    fn backoff_has_full_jitter_under_a_doubling_ceiling() {
        let config = RetryConfig {
            initial_backoff_ms: crate::config::Millis::new(100),
            max_backoff_ms: crate::config::Millis::new(1_000),
            ..RetryConfig::default()
        };
        let mut b = Backoff::new(&config);
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(ceiling), "{d:?} > {ceiling}ms");
        }
        let mut spread = Backoff::new(&config);
        let samples: Vec<Duration> = (0..50).map(|_| spread.next_delay()).collect();
        assert!(
            samples.iter().any(|d| *d < Duration::from_millis(500)),
            "jitter reaches low"
        );
        assert_eq!(b.max(), Duration::from_secs(1));
    }
}
