//! A consumed message copied out of librdkafka's buffer into what the pipeline keeps:
//! its origin, its key and payload, and the `sluice.*` and `workspace` headers read in
//! one pass.

use hashbrown::HashMap;
use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers, Message};

use super::{Origin, Raw, TopicPartition};
use crate::intake::{Received, WorkspaceHeader};
use crate::record::headers;

/// The parts of a message the pipeline keeps, copied out of librdkafka's buffer.
pub(super) fn detach(
    message: &BorrowedMessage<'_>,
    topics: &mut HashMap<String, Arc<str>>,
) -> Received {
    // (librdkafka's name is a C string: each `topic()` measures and checks it again.)
    let name = message.topic();
    let topic = match topics.get(name) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = name.into();
            topics.insert(name.to_string(), t.clone());
            t
        }
    };
    let (read, workspace) = read_headers(message);
    // Borrowed from librdkafka's buffer: copied only where kept.
    let header = |name: &str| {
        READ_HEADERS
            .iter()
            .position(|k| *k == name)
            .and_then(|i| read[i])
    };
    let redrive_count = header(headers::REDRIVE_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let replay = header(headers::REPLAY).map(str::to_string);
    let first_written =
        crate::record::first_written((name, message.partition(), message.offset()), |name| {
            header(name).map(str::to_string)
        });
    let entered_us = header(headers::DUE)
        .and_then(|d| d.parse().ok())
        .or_else(|| message.timestamp().to_millis().map(|ms| ms * 1000));
    Received {
        origin: Origin {
            tp: TopicPartition {
                topic,
                partition: message.partition(),
            },
            offset: message.offset(),
        },
        raw: Raw {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            redrive_count,
            replay,
            entered_us,
            first_written,
        },
        workspace,
        from_park: false,
    }
}

/// The `sluice.*` headers a consumed event may carry, read in one pass.
const READ_HEADERS: [&str; 4] = [
    headers::REDRIVE_COUNT,
    headers::REPLAY,
    headers::FIRST_WRITTEN,
    headers::DUE,
];

/// The value of each of [`READ_HEADERS`] in `message` (the first header of that name;
/// `None` when absent, null or not UTF-8) and its `workspace` header: one pass over
/// its headers, where a lookup per name cost a scan each (and a header's name is a C
/// string, measured and checked each time it is read), on the consumer's thread that
/// every event crosses.
fn read_headers<'a>(message: &'a BorrowedMessage<'_>) -> ([Option<&'a str>; 4], WorkspaceHeader) {
    let mut found = [None; 4];
    let mut seen = [false; 4];
    // The first `workspace` header with a value.
    let mut workspace = None;
    for h in message.headers().into_iter().flat_map(|hs| hs.iter()) {
        if h.key == "workspace" {
            workspace = workspace.or(h.value);
            continue;
        }
        if !h.key.starts_with("sluice.") {
            continue;
        }
        if let Some(i) = READ_HEADERS.iter().position(|k| *k == h.key) {
            if !seen[i] {
                seen[i] = true;
                found[i] = h.value.and_then(|v| std::str::from_utf8(v).ok());
            }
        }
    }
    let workspace = match workspace.map(std::str::from_utf8) {
        None => WorkspaceHeader::Absent,
        Some(Ok(name)) => WorkspaceHeader::Named(name.to_string()),
        Some(Err(_)) => WorkspaceHeader::Unreadable,
    };
    (found, workspace)
}
