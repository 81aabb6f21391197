//! A consumed message copied out of librdkafka's buffer into what the pipeline keeps:
//! its origin, its key and payload, and the `sluice.*` and `workspace` headers read in
//! one pass.

use std::collections::HashMap;
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
    let topic = match topics.get(message.topic()) {
        Some(t) => t.clone(),
        None => {
            let t: Arc<str> = message.topic().into();
            topics.insert(message.topic().to_string(), t.clone());
            t
        }
    };
    let read = sluice_headers(message);
    let header = |name: &str| {
        READ_HEADERS
            .iter()
            .position(|k| *k == name)
            .and_then(|i| read[i])
            .map(str::to_string)
    };
    let workspace = workspace_header(message);
    let redrive_count = header(headers::REDRIVE_COUNT)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let replay = header(headers::REPLAY);
    let first_written = crate::record::first_written(
        (message.topic(), message.partition(), message.offset()),
        header,
    );
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
/// `None` when absent, null or not UTF-8): one pass over its headers, where a lookup
/// per name cost a scan each, on the consumer's thread that every event crosses.
fn sluice_headers<'a>(message: &'a BorrowedMessage<'_>) -> [Option<&'a str>; 4] {
    let mut found = [None; 4];
    let mut seen = [false; 4];
    for h in message.headers().into_iter().flat_map(|hs| hs.iter()) {
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
    found
}

/// The record's `workspace` header: named, absent, or there but not UTF-8.
fn workspace_header(message: &BorrowedMessage<'_>) -> WorkspaceHeader {
    let Some(headers) = message.headers() else {
        return WorkspaceHeader::Absent;
    };
    let mut values = headers.iter().filter(|h| h.key == "workspace");
    let Some(value) = values.find_map(|h| h.value) else {
        return WorkspaceHeader::Absent;
    };
    match std::str::from_utf8(value) {
        Ok(name) => WorkspaceHeader::Named(name.to_string()),
        Err(_) => WorkspaceHeader::Unreadable,
    }
}
