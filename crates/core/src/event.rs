//! The event model: a Kafka message decoded from the Segment spec (or its snake_case
//! cousin) into an identify or a track, checked against Customer.io's documented limits.
//!
//! Decoding never panics: anything that cannot become a deliverable event is an
//! [`InvalidEvent`] whose [`reason`](InvalidEvent::reason) is a short, bounded code for
//! logs and metrics.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::FailureReason;

mod fields;
mod limits;

pub use fields::Fields;

use limits::{check_attributes, check_len};
pub use limits::{
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_NAME_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_EVENT_DATA_BYTES,
    MAX_EVENT_NAME_BYTES, MAX_IDENTIFIER_BYTES,
};

/// Why a message cannot be delivered. Each variant maps to one stable reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// The payload is not JSON, or not a JSON object of the expected shape.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// `type` is missing or is not identify/track.
    #[error("unknown event type {0:?} (expected identify or track)")]
    UnknownType(String),
    /// Neither `userId` nor `anonymousId` is present (identify needs `userId`).
    #[error("missing userId")]
    MissingUserId,
    /// A track without `event`.
    #[error("track event without an event name")]
    MissingEventName,
    /// The message is larger than the destination accepts.
    #[error("event is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Size of the message or encoded item.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// A field is over one of Customer.io's documented limits.
    #[error("{field} is over Customer.io's limit: {detail}")]
    OverLimit {
        /// The offending field.
        field: &'static str,
        /// Size and limit.
        detail: String,
    },
    /// `timestamp` is neither RFC 3339 nor unix seconds.
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    /// The event names a workspace that is not configured (or names none and there is
    /// no default).
    #[error("unknown workspace {0:?}")]
    UnknownWorkspace(String),
    /// The event cannot be expressed in the configured API (e.g. an anonymous track on
    /// the v2 batch API).
    #[error("not supported by the destination: {0}")]
    Unsupported(&'static str),
    /// The destination's template failed for this event (kind "http").
    #[error("the destination's template failed: {0}")]
    Template(String),
}

impl InvalidEvent {
    /// Stable, bounded reason code for metrics, logs and dead-letter headers.
    pub fn reason(&self) -> FailureReason {
        match self {
            InvalidEvent::Malformed(_) => FailureReason::MalformedJson,
            InvalidEvent::UnknownType(_) => FailureReason::UnknownType,
            InvalidEvent::MissingUserId => FailureReason::MissingUserId,
            InvalidEvent::MissingEventName => FailureReason::MissingEventName,
            InvalidEvent::TooLarge { .. } => FailureReason::TooLarge,
            InvalidEvent::OverLimit { .. } => FailureReason::OverLimit,
            InvalidEvent::BadTimestamp(_) => FailureReason::BadTimestamp,
            InvalidEvent::UnknownWorkspace(_) => FailureReason::UnknownWorkspace,
            InvalidEvent::Unsupported(_) | InvalidEvent::Template(_) => FailureReason::Unsupported,
        }
    }
}

/// Who an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Person {
    /// A known user (`userId`).
    Id(String),
    /// Not yet identified (`anonymousId`).
    Anonymous(String),
}

impl Person {
    /// The identifier text, whichever kind it is.
    pub fn as_str(&self) -> &str {
        match self {
            Person::Id(s) | Person::Anonymous(s) => s,
        }
    }

    /// The identifier text, whichever kind it is, taken.
    pub fn into_string(self) -> String {
        match self {
            Person::Id(s) | Person::Anonymous(s) => s,
        }
    }

    /// (user id, anonymous id): the one this person has.
    pub fn ids(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Person::Id(id) => (Some(id), None),
            Person::Anonymous(anon) => (None, Some(anon)),
        }
    }
}

/// What the event does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create or update a person's attributes.
    Identify {
        /// The person's attributes (`traits`).
        attributes: Fields,
    },
    /// Record something a person did.
    Track {
        /// Event name (`event`).
        name: String,
        /// Event properties (`properties`).
        data: Fields,
    },
}

impl Action {
    /// Its Segment-spec type (`identify`, `track`), and the event name, traits and
    /// properties it has.
    pub fn parts(&self) -> (&'static str, Option<&str>, Option<&Fields>, Option<&Fields>) {
        match self {
            Action::Identify { attributes } => ("identify", None, Some(attributes), None),
            Action::Track { name, data } => ("track", Some(name), None, Some(data)),
        }
    }
}

/// A decoded, valid event, ready to be encoded for the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The workspace it is delivered to.
    pub workspace: String,
    /// Who it is about.
    pub person: Person,
    /// Identify or track.
    pub action: Action,
    /// When it happened, unix seconds, if the producer said.
    pub timestamp: Option<i64>,
    /// Customer.io's dedup key: a ULID, the producer's `messageId` if it is one, else
    /// derived from it (or from the payload) so a redelivered event gets the same id.
    pub dedup_id: String,
}

/// The message as producers write it; both the Segment camelCase and the snake_case
/// spellings are accepted.
#[derive(Deserialize)]
struct Wire<'a> {
    // Borrowed from the payload unless escaped: no copy of what is only compared.
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "userId", alias = "user_id")]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId", alias = "anonymous_id")]
    anonymous_id: Option<Value>,
    #[serde(alias = "attributes", borrow)]
    traits: Option<&'a RawValue>,
    #[serde(alias = "name")]
    event: Option<Value>,
    #[serde(alias = "data", borrow)]
    properties: Option<&'a RawValue>,
    #[serde(rename = "messageId", alias = "message_id", alias = "event_id")]
    message_id: Option<Value>,
    timestamp: Option<Value>,
    #[serde(borrow)]
    workspace: Option<Cow<'a, str>>,
}

/// Turns message payloads into [`Event`]s for one configuration.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Configured workspace ids.
    workspaces: hashbrown::HashSet<String>,
    /// Workspace for events that name none.
    default_workspace: Option<String>,
    /// Largest accepted payload, in bytes.
    max_event_bytes: usize,
}

impl Decoder {
    /// The decoder for `config`'s workspaces, default workspace and size limit (the
    /// largest of its destinations').
    pub fn for_config(config: &crate::config::Config) -> Self {
        Decoder::new(
            config.workspaces.iter().map(|w| w.id.clone()),
            config.lanes.default_workspace.clone(),
            // The largest any destination takes: each destination's encode holds its own.
            config
                .batch_shapes()
                .map(|b| b.max_event_bytes)
                .max()
                .unwrap_or(config.batch.max_event_bytes),
        )
    }

    /// A decoder accepting `workspaces`, falling back to `default_workspace`, and
    /// refusing payloads over `max_event_bytes`.
    pub fn new(
        workspaces: impl IntoIterator<Item = String>,
        default_workspace: Option<String>,
        max_event_bytes: usize,
    ) -> Self {
        Decoder {
            workspaces: workspaces.into_iter().collect(),
            default_workspace,
            max_event_bytes,
        }
    }

    /// Whether `workspace` is one of the configured workspaces.
    pub(crate) fn knows(&self, workspace: &str) -> bool {
        self.workspaces.contains(workspace)
    }

    /// Decodes and validates one message; `header_workspace` is its `workspace` Kafka
    /// header, if any.
    pub fn decode(
        &self,
        payload: &[u8],
        header_workspace: Option<&str>,
    ) -> Result<Event, InvalidEvent> {
        self.decode_record(payload, header_workspace, None)
    }

    /// [`decode`](Self::decode) for a record at `record` (`TOPIC:PARTITION:OFFSET` of
    /// where it was first written): an event without a `messageId` gets an id from its
    /// bytes *and* that place, so two byte-identical events stay two events for the
    /// API, while a redelivered copy keeps its id.
    pub(crate) fn decode_record(
        &self,
        payload: &[u8],
        header_workspace: Option<&str>,
        record: Option<&str>,
    ) -> Result<Event, InvalidEvent> {
        if payload.len() > self.max_event_bytes {
            return Err(InvalidEvent::TooLarge {
                size: payload.len(),
                limit: self.max_event_bytes,
            });
        }
        decode_at(
            payload,
            header_workspace,
            self.default_workspace.as_deref(),
            |w| self.workspaces.contains(w),
            record,
        )
    }
}

/// Decodes and validates one message. `header_workspace` is the `workspace` Kafka
/// header, if any; `default_workspace` the configured fallback; `known` says whether a
/// workspace id is configured.
#[cfg(test)]
fn decode(
    payload: &[u8],
    header_workspace: Option<&str>,
    default_workspace: Option<&str>,
    known: impl Fn(&str) -> bool,
) -> Result<Event, InvalidEvent> {
    decode_at(payload, header_workspace, default_workspace, known, None)
}

/// [`decode`], for a record at `record` (see [`Decoder::decode_record`]).
fn decode_at(
    payload: &[u8],
    header_workspace: Option<&str>,
    default_workspace: Option<&str>,
    known: impl Fn(&str) -> bool,
    record: Option<&str>,
) -> Result<Event, InvalidEvent> {
    if payload.trim_ascii_start().first() != Some(&b'{') {
        return Err(InvalidEvent::Malformed("not a JSON object".into()));
    }
    // UTF-8 checked once for the whole payload, with SIMD (serde_json over bytes
    // checks each string and raw value again); where it fails, std says where.
    let text = match simdutf8::basic::from_utf8(payload) {
        Ok(text) => text,
        Err(_) => {
            let at = std::str::from_utf8(payload)
                .err()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(InvalidEvent::Malformed(format!("not UTF-8{at}")));
        }
    };
    let wire: Wire<'_> =
        serde_json::from_str(text).map_err(|e| InvalidEvent::Malformed(e.to_string()))?;

    let workspace = wire
        .workspace
        .as_deref()
        .or(header_workspace)
        .or(default_workspace)
        .ok_or_else(|| InvalidEvent::UnknownWorkspace(String::new()))?;
    if !known(workspace) {
        return Err(InvalidEvent::UnknownWorkspace(workspace.to_string()));
    }

    let person = match (id_text(wire.user_id), id_text(wire.anonymous_id)) {
        (Some(id), _) => Person::Id(id),
        (None, Some(anon)) => Person::Anonymous(anon),
        (None, None) => return Err(InvalidEvent::MissingUserId),
    };
    check_len("userId", person.as_str(), MAX_IDENTIFIER_BYTES)?;

    let kind = wire.kind.unwrap_or_default();
    let action = action(&kind, &person, wire.traits, wire.event, wire.properties)?;

    let timestamp = wire.timestamp.map(parse_timestamp).transpose()?;
    let message_id = id_text(wire.message_id);
    let dedup_id = record_dedup_id(message_id.as_deref(), record, payload, timestamp);

    Ok(Event {
        workspace: workspace.to_string(),
        person,
        action,
        timestamp,
        dedup_id,
    })
}

/// What an event of type `kind` does: an identify's attributes (for a known user
/// only) or a track's name and data.
fn action(
    kind: &str,
    person: &Person,
    traits: Option<&RawValue>,
    event: Option<Value>,
    properties: Option<&RawValue>,
) -> Result<Action, InvalidEvent> {
    match kind {
        "identify" => {
            if matches!(person, Person::Anonymous(_)) {
                return Err(InvalidEvent::MissingUserId);
            }
            // Read as a map for the checks: what is sent is the text, unless a key is
            // repeated, where the map (the last of each) is sent, as it was checked.
            let (mut attributes, map, keys) = match traits {
                None => (Fields::empty(), serde_json::Map::new(), 0),
                Some(raw) => {
                    is_object(raw, "traits")?;
                    Fields::object_map(raw)
                        .map_err(|e| InvalidEvent::Malformed(format!("traits: {e}")))?
                }
            };
            check_attributes(&map)?;
            if keys != map.len() {
                attributes = Fields::from_map(&map);
            }
            Ok(Action::Identify { attributes })
        }
        "track" => {
            let name = match event {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => return Err(InvalidEvent::MissingEventName),
            };
            check_len("event", &name, MAX_EVENT_NAME_BYTES)?;
            let data = match properties {
                None => Fields::empty(),
                Some(raw) => {
                    is_object(raw, "properties")?;
                    Fields::checked(raw)
                        .map_err(|e| InvalidEvent::Malformed(format!("properties: {e}")))?
                }
            };
            Ok(Action::Track { name, data })
        }
        other => Err(InvalidEvent::UnknownType(other.to_string())),
    }
}

/// The dedup id: from the message id, else from the payload — keyed by the record it
/// was read at, when known, so byte-identical events at two records keep two ids.
fn record_dedup_id(
    message_id: Option<&str>,
    record: Option<&str>,
    payload: &[u8],
    timestamp: Option<i64>,
) -> String {
    match (message_id, record) {
        (None, Some(record)) => {
            let mut keyed = Vec::with_capacity(record.len() + 1 + payload.len());
            keyed.extend_from_slice(record.as_bytes());
            keyed.push(0);
            keyed.extend_from_slice(payload);
            dedup_id(None, &keyed, timestamp)
        }
        (id, _) => dedup_id(id, payload, timestamp),
    }
}

/// Identifiers may be strings or numbers in the wild; both become text.
fn id_text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `raw` is an object (serde gives `None` for a `null`: the caller's `{}`).
fn is_object(raw: &RawValue, field: &str) -> Result<(), InvalidEvent> {
    if raw.get().starts_with('{') {
        Ok(())
    } else {
        Err(InvalidEvent::Malformed(format!(
            "{field} must be an object"
        )))
    }
}

/// RFC 3339 text or unix seconds (integer or fractional) → unix seconds.
fn parse_timestamp(value: Value) -> Result<i64, InvalidEvent> {
    match &value {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|e| InvalidEvent::BadTimestamp(format!("{s:?}: {e}"))),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .filter(|s| *s >= 0)
            .ok_or_else(|| InvalidEvent::BadTimestamp(n.to_string())),
        other => Err(InvalidEvent::BadTimestamp(other.to_string())),
    }
}

/// The Customer.io event id: `message_id` itself when it is a ULID; otherwise a ULID
/// whose time part is the event time and whose random part is taken from a SHA-256 of
/// the message id (or of the whole payload when there is none). The same message always
/// gets the same id, so the API drops a redelivered copy.
pub fn dedup_id(message_id: Option<&str>, payload: &[u8], timestamp: Option<i64>) -> String {
    if let Some(id) = message_id {
        if let Ok(ulid) = ulid::Ulid::from_string(id) {
            return ulid.to_string();
        }
    }
    let digest = match message_id {
        Some(id) => Sha256::digest(id.as_bytes()),
        None => Sha256::digest(payload),
    };
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    let random = u128::from_be_bytes(random);
    let millis = timestamp
        .and_then(|s| u64::try_from(s).ok())
        .map_or(0, |s| s.saturating_mul(1000))
        .min((1 << 48) - 1);
    ulid::Ulid::from_parts(millis, random).to_string()
}

#[cfg(test)]
mod tests;
