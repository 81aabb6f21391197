//! Delivery: encoding events for the destination, sending them over a pooled HTTP
//! client through the limiter, classifying each answer and trying again when that can
//! help.
//!
//! A lane hands [`Destination::deliver`] a batch; it comes back with one
//! [`ItemOutcome`] per event once every event is either accepted or refused for good.

mod auth;
mod customerio;
mod dated_body;
mod http;
mod json_api;
mod retry;
mod retry_budget;
mod routes;
mod segment;

use std::time::SystemTime;

use crate::record::FailureReason;
pub use auth::{ClientCredentials, Credentials};
pub use customerio::{CustomerIo, Encoded};
pub use http::{excerpt, Answer, RetryingClient};
pub use json_api::{JsonApi, JsonApiError};
pub use retry::{classify, retry_after, AnswerClass, Backoff};
pub use routes::Routes;
pub use segment::SegmentBatch;

/// Why an event could not be delivered, with what a dead letter needs to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why, as a bounded code (`http_400`, `invalid_item`, `retries_exhausted`...).
    pub reason: FailureReason,
    /// The API's own words (shortened) or the error.
    pub detail: String,
    /// The last HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// When the first attempt started.
    pub first_attempt: SystemTime,
    /// When the last attempt ended.
    pub last_attempt: SystemTime,
}

impl Failure {
    /// A failure decided without any request (e.g. the encoder's).
    pub fn without_request(reason: FailureReason, detail: impl Into<String>) -> Self {
        let now = SystemTime::now();
        Failure {
            reason,
            detail: detail.into(),
            status: None,
            attempts: 0,
            first_attempt: now,
            last_attempt: now,
        }
    }
}

/// What finally happened to one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// The API accepted it.
    Delivered,
    /// The API refused it and asking again will not help: it is dead-lettered.
    Rejected(Failure),
}

/// The destination a lane delivers to. One implementation per API.
pub trait Destination: Send + Sync + 'static {
    /// Encodes one event for this API, or says why it cannot be sent.
    fn encode(&self, event: &crate::event::Event) -> Result<Encoded, crate::event::InvalidEvent>;

    /// Sends `items` (all of workspace `workspace`) until each is accepted or refused
    /// for good, retrying transient failures. Returns one outcome per item, in order.
    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> futures::future::BoxFuture<'a, Vec<ItemOutcome>>;
}
