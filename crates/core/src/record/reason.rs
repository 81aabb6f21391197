//! Why an event was dead-lettered, or an attempt to deliver it failed: one bounded set
//! of stable codes for dead-letter headers (`sluice.reason`), metric labels and log
//! lines. docs/operations.md lists them all (a test checks it does).

use std::borrow::Cow;
use std::fmt;

/// A failure's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// Not JSON, not UTF-8, not an object, or nested past the decoder's depth limit.
    MalformedJson,
    /// `type` is neither `identify` nor `track`.
    UnknownType,
    /// No `userId` where the destination needs one.
    MissingUserId,
    /// A track without `event`.
    MissingEventName,
    /// The message, or its encoding, is larger than the destination accepts.
    TooLarge,
    /// A field over one of Customer.io's documented limits.
    OverLimit,
    /// `timestamp` neither RFC 3339 nor unix seconds.
    BadTimestamp,
    /// The event names a workspace that is not configured.
    UnknownWorkspace,
    /// The event cannot be expressed in the configured API.
    Unsupported,
    /// The API refused this item of a batch (a 207 listing it, or a kind = "http"
    /// answer's `item_errors`).
    InvalidItem,
    /// A 207 whose body does not say which items were refused: all are refused.
    Unreadable207,
    /// The API refused the request with this status, for good (most 4xx, 501).
    Http(u16),
    /// Retries ran out (`retry.max_attempts` or `retry.max_elapsed_ms`).
    RetriesExhausted,
    /// An attempt could not connect (refused, or no answer to the connect).
    Connect,
    /// An attempt got no answer within `destination.request_timeout_ms`.
    Timeout,
    /// An attempt's connection broke (reset, or an answer cut short).
    Network,
    /// The event could not be written to the parking topic.
    ParkFailed,
    /// The task delivering it panicked (a defect in sluice).
    InternalError,
}

impl FailureReason {
    /// Every code but the per-status `http_NNN`, as docs/operations.md lists them.
    pub const FIXED: [FailureReason; 17] = [
        FailureReason::MalformedJson,
        FailureReason::UnknownType,
        FailureReason::MissingUserId,
        FailureReason::MissingEventName,
        FailureReason::TooLarge,
        FailureReason::OverLimit,
        FailureReason::BadTimestamp,
        FailureReason::UnknownWorkspace,
        FailureReason::Unsupported,
        FailureReason::InvalidItem,
        FailureReason::Unreadable207,
        FailureReason::RetriesExhausted,
        FailureReason::Connect,
        FailureReason::Timeout,
        FailureReason::Network,
        FailureReason::ParkFailed,
        FailureReason::InternalError,
    ];

    /// The stable code: `malformed_json`, `http_400`, `retries_exhausted`...
    pub fn code(&self) -> Cow<'static, str> {
        let fixed = match self {
            FailureReason::MalformedJson => "malformed_json",
            FailureReason::UnknownType => "unknown_type",
            FailureReason::MissingUserId => "missing_user_id",
            FailureReason::MissingEventName => "missing_event_name",
            FailureReason::TooLarge => "too_large",
            FailureReason::OverLimit => "over_limit",
            FailureReason::BadTimestamp => "bad_timestamp",
            FailureReason::UnknownWorkspace => "unknown_workspace",
            FailureReason::Unsupported => "unsupported",
            FailureReason::InvalidItem => "invalid_item",
            FailureReason::Unreadable207 => "unreadable_207",
            FailureReason::RetriesExhausted => "retries_exhausted",
            FailureReason::Connect => "connect",
            FailureReason::Timeout => "timeout",
            FailureReason::Network => "network",
            FailureReason::ParkFailed => "park_failed",
            FailureReason::InternalError => "internal_error",
            // An HTTP status is three digits (100-999): a bounded label set.
            FailureReason::Http(status) => return Cow::Owned(format!("http_{status}")),
        };
        Cow::Borrowed(fixed)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

impl PartialEq<&str> for FailureReason {
    fn eq(&self, code: &&str) -> bool {
        self.code() == *code
    }
}

#[cfg(test)]
mod tests {
    use super::FailureReason;

    #[test]
    fn codes_are_distinct_snake_case_and_listed_for_operators() {
        let docs = include_str!("../../../../docs/operations.md");
        let mut seen = std::collections::HashSet::new();
        for reason in FailureReason::FIXED {
            let code = reason.code();
            assert!(seen.insert(code.clone()), "{code} twice");
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{code}"
            );
            assert!(
                docs.contains(&format!("`{code}`")),
                "docs/operations.md does not list `{code}`"
            );
        }
        assert!(docs.contains("`http_NNN`"));
        assert_eq!(FailureReason::Http(429).code(), "http_429");
    }
}
