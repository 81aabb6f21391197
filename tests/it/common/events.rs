//! Test events: Segment-style identify and track JSON, keyed by user, numbered by `seq`.

use serde_json::{json, Value};

/// One message to produce.
#[derive(Clone, Debug)]
pub struct Record {
    /// Kafka key (the user, so one user's events share a partition).
    pub key: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// A `workspace` header, if any (bytes: not always UTF-8).
    pub workspace_header: Option<Vec<u8>>,
}

impl Record {
    /// A JSON record keyed by `key`.
    pub fn json(key: &str, value: &Value) -> Self {
        Record {
            key: key.into(),
            payload: value.to_string().into_bytes(),
            workspace_header: None,
        }
    }
}

/// A track event with a sequence number in its properties.
pub fn track(workspace: &str, user: &str, seq: usize) -> Value {
    json!({
        "type": "track", "userId": user, "event": "Order Placed",
        "properties": {"seq": seq, "user": user},
        "messageId": format!("{workspace}-{user}-{seq}"),
        "timestamp": "2026-11-01T12:00:00Z",
        "workspace": workspace,
    })
}

/// Track events `seqs` of `workspace`, spread over `users` users named
/// `{user_prefix}{n}` and keyed by user.
pub fn tracks(
    workspace: &str,
    user_prefix: &str,
    users: usize,
    seqs: std::ops::Range<usize>,
) -> Vec<Record> {
    seqs.map(|i| {
        let user = format!("{user_prefix}{}", i % users);
        Record::json(&user, &track(workspace, &user, i))
    })
    .collect()
}

/// An identify event.
pub fn identify(workspace: &str, user: &str, seq: usize) -> Value {
    json!({
        "type": "identify", "userId": user,
        "traits": {"seq": seq, "user": user, "plan": "pro"},
        "messageId": format!("{workspace}-{user}-id-{seq}"),
        "workspace": workspace,
    })
}
