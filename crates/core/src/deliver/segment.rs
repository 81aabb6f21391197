//! Segment's HTTP Tracking API and Customer.io Data Pipelines, which takes the same
//! calls: events encoded as Segment-spec `identify` / `track` calls and sent in
//! `POST {base}/v1/batch` as `{"batch":[…]}`, with the workspace's write key as the
//! Basic user and a blank password. Pipelines gets `X-Strict-Mode: 1`, so that an invalid
//! call is refused with a 400 instead of being logged on its side behind a 200.
//!
//! Neither API says which call of a refused batch was wrong, so a 400 on a batch of
//! several calls is split in halves and each half sent again, down to the call that
//! is refused alone: only it is dead-lettered (a batch of n costs at most 2n − 1
//! requests, all through the limiter).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde::Serialize;

use super::customerio::{partial_outcomes, unknown_workspace};
use super::http::{Answer, RetryingClient};
use super::{Credentials, Destination, Encoded, Failure, FailureReason, ItemOutcome};
use crate::config::{Config, DestinationKind, Region};
use crate::event::{Event, Fields, InvalidEvent};
use crate::limit::Limiter;
use crate::metrics::Metrics;

/// Segment's (and Pipelines') limit on one call, in bytes.
const SEGMENT_MAX_CALL_BYTES: usize = 32_000;

/// One Segment-spec call. Only the fields the event has are written.
#[derive(Serialize)]
struct Call<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(rename = "anonymousId", skip_serializing_if = "Option::is_none")]
    anonymous_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traits: Option<&'a Fields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<&'a Fields>,
    /// The dedup key (Segment keeps ~24 h of them): the event's stable id, so a
    /// redelivered event is recognised.
    #[serde(rename = "messageId")]
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
}

/// A Segment-spec batch API: Segment's or Customer.io Pipelines'.
#[derive(Debug)]
pub struct SegmentBatch {
    sender: RetryingClient,
    url: String,
    write_keys: HashMap<String, Credentials>,
    max_item_bytes: usize,
}

impl SegmentBatch {
    /// Builds the client for `config`'s destination (kind `segment` or
    /// `customerio_pipelines`) and its workspaces' write keys.
    pub fn new(config: &Config, limiter: Arc<Limiter>, metrics: Metrics) -> reqwest::Result<Self> {
        let d = &config.destination;
        let base = match (&d.base_url, d.kind, d.region) {
            (Some(url), _, _) => url.trim_end_matches('/').to_string(),
            (None, DestinationKind::CustomerioPipelines, Region::Us) => {
                "https://cdp.customer.io".into()
            }
            (None, DestinationKind::CustomerioPipelines, Region::Eu) => {
                "https://cdp-eu.customer.io".into()
            }
            (None, _, Region::Us) => "https://api.segment.io".into(),
            (None, _, Region::Eu) => "https://events.eu1.segmentapis.com".into(),
        };
        let mut headers = HeaderMap::new();
        if d.kind == DestinationKind::CustomerioPipelines {
            headers.insert("x-strict-mode", HeaderValue::from_static("1"));
        }
        Ok(SegmentBatch {
            sender: RetryingClient::with_headers(
                d,
                config.retry.clone(),
                limiter,
                metrics,
                headers,
            )?,
            url: format!("{base}/v1/batch"),
            write_keys: config
                .workspaces
                .iter()
                .map(|w| (w.id.clone(), Credentials::KeyAsUser(w.api_key.clone())))
                .collect(),
            // Segment drops a call over 32 KB behind a 200: never send one.
            max_item_bytes: config.batch.max_event_bytes.min(SEGMENT_MAX_CALL_BYTES),
        })
    }

    /// One call's JSON, written from the event's fields (traits and properties
    /// borrowed, never copied).
    fn encode_call(event: &Event) -> Vec<u8> {
        let (user_id, anonymous_id) = event.person.ids();
        let (kind, event_name, traits, properties) = event.action.parts();
        let call = Call {
            kind,
            user_id,
            anonymous_id,
            event: event_name,
            traits,
            properties,
            message_id: &event.dedup_id,
            timestamp: event.timestamp.and_then(iso8601),
        };
        serde_json::to_vec(&call).expect("an event's JSON serializes")
    }

    /// Sends `items` as one batch; a 413, or a 400 on several calls, splits it and
    /// sends the halves in order.
    fn send_batch<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            let Some(key) = self.write_keys.get(workspace) else {
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
            let answer = self
                .sender
                .send(workspace, key, Method::POST, &self.url, body.into())
                .await;
            let halves = || items.split_at(items.len() / 2);
            match answer {
                // Neither API lists refused calls on a success: all were taken.
                Answer::Accepted(_) => vec![ItemOutcome::Delivered; items.len()],
                Answer::Partial(text) => partial_outcomes(&text, items.len()),
                Answer::TooLarge(_) if items.len() > 1 => {
                    let (left, right) = halves();
                    self.send_halves(workspace, left, right).await
                }
                Answer::Rejected(failure) if items.len() > 1 && is_client_error(&failure) => {
                    let (left, right) = halves();
                    self.send_halves(workspace, left, right).await
                }
                Answer::TooLarge(failure) => vec![ItemOutcome::Rejected(Failure {
                    reason: FailureReason::TooLarge,
                    ..failure
                })],
                Answer::Rejected(failure) => vec![ItemOutcome::Rejected(failure); items.len()],
            }
        })
    }
}

impl SegmentBatch {
    /// Sends two halves of a batch, one after the other (order kept).
    async fn send_halves(
        &self,
        workspace: &str,
        left: &[Encoded],
        right: &[Encoded],
    ) -> Vec<ItemOutcome> {
        let mut outcomes = self.send_batch(workspace, left).await;
        outcomes.extend(self.send_batch(workspace, right).await);
        outcomes
    }
}

/// A refusal of the request as sent (400, 409, 422…): one of its events may be the
/// cause, so a batch of several is worth splitting.
pub(super) fn is_client_error(failure: &Failure) -> bool {
    failure.status.is_some_and(|s| (400..500).contains(&s))
}

/// Unix seconds as the ISO 8601 text Segment's `timestamp` takes.
fn iso8601(seconds: i64) -> Option<String> {
    DateTime::from_timestamp(seconds, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

impl Destination for SegmentBatch {
    fn encode(&self, event: &Event) -> Result<Encoded, InvalidEvent> {
        let encoded = Encoded::BatchItem(Self::encode_call(event));
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
        self.send_batch(workspace, items)
    }
}

#[cfg(test)]
mod tests;
