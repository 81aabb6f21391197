//! Which answers are worth asking again for: the split every retrying client needs,
//! kept in one place so delivery code only branches on the [`Verdict`].

use reqwest::StatusCode;

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Everything was accepted.
    Success,
    /// Some items were refused (Customer.io's 207); the rest were accepted.
    Partial,
    /// A transient problem: try again (connection errors, timeouts, 408, 429, 5xx but
    /// 501). 401/403 are retried too: a bad key is a configuration problem, not bad
    /// events, and dead-lettering the whole stream would be worse than waiting.
    Retry,
    /// The request can never succeed as it is.
    Reject,
}

/// Classifies an HTTP status.
pub fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        207 => Verdict::Partial,
        s if (200..300).contains(&s) => Verdict::Success,
        401 | 403 | 408 | 429 => Verdict::Retry,
        501 => Verdict::Reject,
        s if s >= 500 => Verdict::Retry,
        _ => Verdict::Reject,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_documented() {
        let cases = [
            (200, Verdict::Success),
            (204, Verdict::Success),
            (207, Verdict::Partial),
            (400, Verdict::Reject),
            (404, Verdict::Reject),
            (413, Verdict::Reject),
            (401, Verdict::Retry),
            (403, Verdict::Retry),
            (408, Verdict::Retry),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (501, Verdict::Reject),
            (503, Verdict::Retry),
        ];
        for (code, verdict) in cases {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                verdict,
                "{code}"
            );
        }
    }
}
