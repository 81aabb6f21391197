//! Delivery: encoding events for the destination, sending them over a pooled HTTP
//! client, classifying each answer and trying again when that can help.
//!
//! A lane hands [`Destination::deliver`] a batch; it comes back with one
//! [`ItemOutcome`] per event once every event is either accepted or refused for good.

mod customerio;
mod retry;

pub use customerio::{CustomerIo, Encoded};
pub use retry::{classify, Verdict};

/// What finally happened to one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// The API accepted it.
    Delivered,
    /// The API refused it and asking again will not help.
    Rejected {
        /// Bounded reason code (`http_400`, `invalid_item`...).
        reason: String,
        /// The API's own words, shortened.
        detail: String,
    },
}

/// Builds the one HTTP client a destination shares across all its lanes: keep-alive
/// pool, connect and request timeouts, rustls TLS.
pub fn http_client(config: &crate::config::DestinationConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_millis(config.connect_timeout_ms))
        .timeout(std::time::Duration::from_millis(config.request_timeout_ms))
        .pool_max_idle_per_host(config.pool_size)
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
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
