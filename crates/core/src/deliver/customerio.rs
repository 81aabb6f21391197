//! Customer.io Track API: events encoded as v2 batch items (`POST /api/v2/batch`) or
//! as v1 calls (`PUT /api/v1/customers/{id}`, `POST /api/v1/customers/{id}/events`,
//! `POST /api/v1/events`), sent with Basic auth `site_id:api_key`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use futures::future::BoxFuture;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::http::{excerpt, Answer, RetryingClient};
use super::{Credentials, Destination, Failure, FailureReason, ItemOutcome};
use crate::config::{ApiMode, Config, Region};
use crate::event::{Action, Event, Fields, InvalidEvent, Person, MAX_EVENT_DATA_BYTES};
use crate::limit::Limiter;
use crate::metrics::Metrics;

/// Characters left as they are in a path segment (RFC 3986 unreserved).
pub(super) const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One event, encoded for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// One item of a v2 batch body.
    BatchItem(Vec<u8>),
    /// One v1 call.
    Request {
        /// `PUT` for identify, `POST` for events.
        method: Method,
        /// Path with percent-encoded identifiers.
        path: String,
        /// JSON body.
        body: Vec<u8>,
    },
    /// One event for a JSON API (kind "http"): its rendered URL and headers, and its
    /// body (a request's, or one item of a batch's).
    Call {
        /// The full URL.
        url: String,
        /// Rendered headers.
        headers: Vec<(String, String)>,
        /// JSON body.
        body: Vec<u8>,
    },
}

impl Encoded {
    /// Bytes this event adds to a request body.
    pub fn len(&self) -> usize {
        match self {
            Encoded::BatchItem(b)
            | Encoded::Request { body: b, .. }
            | Encoded::Call { body: b, .. } => b.len(),
        }
    }

    /// Whether the encoding is empty (it never is for a real event).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One item of a v2 batch body. Fields in the order of serde_json's own (sorted) maps,
/// so the bytes are the same as those of the item built as a `Value`.
#[derive(Serialize)]
struct BatchItem<'a> {
    action: &'static str,
    attributes: &'a Fields,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    identifiers: Identifiers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// A v2 item's bytes besides its fields, ids and name: its keys, quotes and a
/// timestamp, with room for a few escapes.
const ITEM_OVERHEAD: usize = 128;

/// Who a v2 item is about.
#[derive(Serialize)]
struct Identifiers<'a> {
    id: &'a str,
}

/// Customer.io Track API client shared by every lane.
#[derive(Debug)]
pub struct CustomerIo {
    sender: RetryingClient,
    base_url: String,
    api: ApiMode,
    credentials: HashMap<String, Credentials>,
    max_item_bytes: usize,
}

impl CustomerIo {
    /// Builds the client for `config`'s destination and workspaces.
    pub fn new(config: &Config, limiter: Arc<Limiter>, metrics: Metrics) -> reqwest::Result<Self> {
        let d = &config.destination;
        let base_url = match (&d.base_url, d.region) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Region::Us) => "https://track.customer.io".into(),
            (None, Region::Eu) => "https://track-eu.customer.io".into(),
        };
        Ok(CustomerIo {
            sender: RetryingClient::new(d, config.retry.clone(), limiter, metrics)?,
            base_url,
            api: d.api,
            credentials: config
                .workspaces
                .iter()
                .map(|w| {
                    let basic = Credentials::Basic {
                        user: w.site_id.clone(),
                        password: w.api_key.clone(),
                    };
                    (w.id.clone(), basic)
                })
                .collect(),
            max_item_bytes: config.batch.max_event_bytes,
        })
    }

    /// One v2 batch item's JSON, written straight from the event's fields (its
    /// attributes are borrowed, never copied into a new value).
    fn encode_v2(event: &Event) -> Result<Vec<u8>, InvalidEvent> {
        let Person::Id(id) = &event.person else {
            return Err(InvalidEvent::Unsupported(
                "anonymous events need destination.api = \"single\" (v1 /api/v1/events)",
            ));
        };
        // Sized once for what it will hold (the fields' text, the ids, the name and the
        // item's own keys), not grown as it is written.
        let size = match &event.action {
            Action::Identify { attributes } => attributes.json().len(),
            Action::Track { name, data } => data.json().len() + name.len(),
        } + id.len()
            + event.dedup_id.len()
            + ITEM_OVERHEAD;
        let item = match &event.action {
            Action::Identify { attributes } => BatchItem {
                action: "identify",
                attributes,
                id: None,
                identifiers: Identifiers { id },
                name: None,
                timestamp: event.timestamp,
                kind: "person",
            },
            Action::Track { name, data } => BatchItem {
                action: "event",
                attributes: data,
                id: Some(&event.dedup_id),
                identifiers: Identifiers { id },
                name: Some(name),
                timestamp: event.timestamp,
                kind: "person",
            },
        };
        let mut out = Vec::with_capacity(size);
        serde_json::to_writer(&mut out, &item).expect("an event's JSON serializes");
        Ok(out)
    }

    fn encode_v1(event: &Event) -> Result<(Method, String, Value), InvalidEvent> {
        match (&event.action, &event.person) {
            (Action::Identify { attributes }, Person::Id(id)) => Ok((
                Method::PUT,
                format!("/api/v1/customers/{}", segment(id)),
                Value::Object(v1_attributes(&read(attributes)?)),
            )),
            (Action::Identify { .. }, Person::Anonymous(_)) => Err(InvalidEvent::MissingUserId),
            (Action::Track { name, data }, person) => {
                // Its compact size, as the limit is documented (the text may be spaced).
                let data = read(data)?;
                let data_len = serde_json::to_vec(&data).map_or(0, |d| d.len());
                if data_len > MAX_EVENT_DATA_BYTES {
                    return Err(InvalidEvent::OverLimit {
                        field: "properties",
                        detail: format!("{data_len} bytes, limit {MAX_EVENT_DATA_BYTES}"),
                    });
                }
                let mut body = json!({"name": name, "id": event.dedup_id, "data": data});
                if let Some(ts) = event.timestamp {
                    body["timestamp"] = ts.into();
                }
                let path = match person {
                    Person::Id(id) => format!("/api/v1/customers/{}/events", segment(id)),
                    Person::Anonymous(anon) => {
                        body["anonymous_id"] = anon.as_str().into();
                        "/api/v1/events".to_string()
                    }
                };
                Ok((Method::POST, path, body))
            }
        }
    }

    /// Sends `items` as one v2 batch; a 413 splits it and sends the halves in order.
    fn send_batch<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            let Some(credentials) = self.credentials.get(workspace) else {
                return unknown_workspace(workspace, items.len());
            };
            let mut body = Vec::with_capacity(items.iter().map(Encoded::len).sum::<usize>() + 16);
            body.extend_from_slice(b"{\"batch\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                if let Encoded::BatchItem(bytes) = item {
                    body.extend_from_slice(bytes);
                }
            }
            body.extend_from_slice(b"]}");
            let url = format!("{}/api/v2/batch", self.base_url);
            let answer = self
                .sender
                .send(workspace, credentials, Method::POST, &url, body.into())
                .await;
            match answer {
                Answer::Accepted(text) => accepted_outcomes(&text, items.len()),
                Answer::Partial(text) => partial_outcomes(&text, items.len()),
                Answer::Rejected(failure) => vec![ItemOutcome::Rejected(failure); items.len()],
                Answer::TooLarge(failure) if items.len() == 1 => {
                    vec![ItemOutcome::Rejected(Failure {
                        reason: FailureReason::TooLarge,
                        ..failure
                    })]
                }
                Answer::TooLarge(_) => {
                    let (left, right) = items.split_at(items.len() / 2);
                    let mut outcomes = self.send_batch(workspace, left).await;
                    outcomes.extend(self.send_batch(workspace, right).await);
                    outcomes
                }
            }
        })
    }

    async fn send_single(&self, workspace: &str, items: &[Encoded]) -> Vec<ItemOutcome> {
        let Some(credentials) = self.credentials.get(workspace) else {
            return unknown_workspace(workspace, items.len());
        };
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let Encoded::Request { method, path, body } = item else {
                outcomes.push(ItemOutcome::Rejected(Failure::without_request(
                    FailureReason::InternalError,
                    "batch item sent to the v1 API",
                )));
                continue;
            };
            let url = format!("{}{}", self.base_url, path);
            let answer = self
                .sender
                .send(
                    workspace,
                    credentials,
                    method.clone(),
                    &url,
                    Bytes::copy_from_slice(body),
                )
                .await;
            outcomes.push(match answer {
                Answer::Accepted(_) | Answer::Partial(_) => ItemOutcome::Delivered,
                Answer::Rejected(failure) => ItemOutcome::Rejected(failure),
                Answer::TooLarge(failure) => ItemOutcome::Rejected(Failure {
                    reason: FailureReason::TooLarge,
                    ..failure
                }),
            });
        }
        outcomes
    }
}

pub(super) fn unknown_workspace(workspace: &str, count: usize) -> Vec<ItemOutcome> {
    let failure = Failure::without_request(
        FailureReason::UnknownWorkspace,
        format!("no credentials for workspace {workspace}"),
    );
    vec![ItemOutcome::Rejected(failure); count]
}

/// The per-item error list Customer.io sends with a 207 (and may send with a 200).
#[derive(Deserialize)]
struct ItemErrors {
    errors: Vec<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    batch_index: usize,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The items of a batch of `count` that `text` lists as refused, with why; `None` when
/// `text` holds no readable `errors` list naming at least one of them.
fn listed_errors(text: &str, status: u16, count: usize) -> Option<Vec<(usize, Failure)>> {
    let body = serde_json::from_str::<ItemErrors>(text).ok()?;
    let listed: Vec<(usize, Failure)> = body
        .errors
        .into_iter()
        .filter(|e| e.batch_index < count)
        .map(|e| {
            let detail = [
                e.reason.as_deref(),
                e.field.as_deref(),
                e.message.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
            let failure = Failure {
                status: Some(status),
                ..Failure::without_request(FailureReason::InvalidItem, excerpt(&detail))
            };
            (e.batch_index, failure)
        })
        .collect();
    (!listed.is_empty()).then_some(listed)
}

/// Maps a 207 body to per-item outcomes: listed items are refused, the rest accepted.
/// A 207 says some items were refused; without a list naming them (no `errors`, an
/// empty one, only indexes outside the batch, not JSON) accepted cannot be told from
/// refused, so every item is refused: nothing counts as delivered that may not be.
pub(super) fn partial_outcomes(text: &str, count: usize) -> Vec<ItemOutcome> {
    match listed_errors(text, 207, count) {
        Some(listed) => {
            let mut outcomes = vec![ItemOutcome::Delivered; count];
            for (index, failure) in listed {
                outcomes[index] = ItemOutcome::Rejected(failure);
            }
            outcomes
        }
        None => vec![
            ItemOutcome::Rejected(Failure {
                status: Some(207),
                ..Failure::without_request(FailureReason::Unreadable207, excerpt(text))
            });
            count
        ],
    }
}

/// Maps a 200 body to per-item outcomes: every item is accepted unless the body lists
/// refused ones in an `errors` list, as a 207 does (an API that reports per-item errors
/// on a 200 is believed).
fn accepted_outcomes(text: &str, count: usize) -> Vec<ItemOutcome> {
    let mut outcomes = vec![ItemOutcome::Delivered; count];
    for (index, failure) in listed_errors(text, 200, count).unwrap_or_default() {
        outcomes[index] = ItemOutcome::Rejected(failure);
    }
    outcomes
}

/// `fields` as a map, for the v1 bodies (which change or measure its values).
fn read(fields: &Fields) -> Result<Map<String, Value>, InvalidEvent> {
    fields
        .to_map()
        .map_err(|e| InvalidEvent::Malformed(e.to_string()))
}

fn segment(id: &str) -> String {
    utf8_percent_encode(id, PATH_SEGMENT).to_string()
}

/// The v1 identify body: its schema takes strings, integers and booleans only, so
/// floats, arrays and objects are sent as their JSON text and nulls are left out.
fn v1_attributes(attributes: &Map<String, Value>) -> Map<String, Value> {
    attributes
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                Value::String(_) | Value::Bool(_) => v.clone(),
                Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
                other => Value::String(other.to_string()),
            };
            (k.clone(), v)
        })
        .collect()
}

impl Destination for CustomerIo {
    fn encode(&self, event: &Event) -> Result<Encoded, InvalidEvent> {
        let encoded = match self.api {
            ApiMode::Batch => Encoded::BatchItem(Self::encode_v2(event)?),
            ApiMode::Single => {
                let (method, path, body) = Self::encode_v1(event)?;
                Encoded::Request {
                    method,
                    path,
                    body: serde_json::to_vec(&body).expect("JSON values serialize"),
                }
            }
        };
        if encoded.len() > self.max_item_bytes {
            return Err(InvalidEvent::TooLarge {
                size: encoded.len(),
                limit: self.max_item_bytes,
            });
        }
        Ok(encoded)
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            match self.api {
                ApiMode::Batch => self.send_batch(workspace, items).await,
                ApiMode::Single => self.send_single(workspace, items).await,
            }
        })
    }
}

#[cfg(test)]
mod tests;
