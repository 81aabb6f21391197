//! sluice's core: a queue-buffered, rate-limited event delivery worker.
//!
//! It consumes identify/track events from Kafka, batches them per workspace and
//! delivers them to Customer.io's Track API, committing an offset only once every
//! event at or below it has a final answer.
//!
//! ```text
//!  Kafka ──► source ──► decode ──► lanes (one per workspace) ──► batch ──► deliver
//!    ▲         │ pause/resume        per-user order              (pooled HTTP, retry)
//!    │         ▼ (back-pressure)                                        │
//!    └─ commit ◄── offset tracker (highest contiguous) ◄── outcome ◄────┘
//! ```
//!
//! # Layout
//! - [`config`] — the TOML file, environment overrides, validation.
//! - [`event`] — decoding and validating Segment-style messages.
//! - [`record`] — the vocabulary every stage shares: where a record came from, what it
//!   was, the `sluice.*` header names, failure reasons.
//! - `kafka` — what every Kafka client starts from: options and log lines.
//! - [`books`] — where each event read ends (done or let go): the offset tracker and
//!   the buffer's count.
//! - [`source`] — the Kafka consumer: assignments, back-pressure, commits, lag.
//! - [`intake`] — each record judged: decoded, validated, encoded for its lane, or
//!   dead-lettered with its reason.
//! - [`lane`] — per-workspace lanes, batching and per-user ordering.
//! - [`park`] — parking a workspace that cannot keep up, so the others keep moving.
//! - [`limit`] — one limit per workspace for the whole fleet, learned from 429s.
//! - [`deliver`] — encoding for Customer.io, the HTTP client, retry classification.
//! - [`dlq`] — the dead-letter topic.
//! - [`metrics`] — counters, logged and counted in one call.
//! - [`server`] — `/metrics`, `/healthz`, `/readyz`.
//! - [`pipeline`] — wiring the stages together and draining on shutdown.
//! - [`shutdown`] — the stop: signals, the drain deadline, services last.
//! - [`tools`] — the operator commands that read the worker's wire format:
//!   `sluice dlq inspect|redrive` and `sluice park inspect`.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub mod books;
pub mod config;
pub mod deliver;
pub mod dlq;
pub mod event;
pub(crate) mod intake;
pub mod kafka;
pub mod lane;
pub mod limit;
pub mod metrics;
pub(crate) mod park;
pub mod pipeline;
pub(crate) mod printable;
pub mod record;
pub(crate) mod server;
pub mod shutdown;
pub mod source;
pub mod tools;
