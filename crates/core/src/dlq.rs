//! The dead-letter topic: events that can never be delivered, kept with the original
//! key and bytes and headers saying why, so nothing is ever dropped.
//!
//! [`DeadLetters::send`] returns only once the broker acknowledged the write; the
//! source offset completes after that. While the topic is unavailable it keeps trying
//! (and logs it), so the worker stops committing past the event and waits.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::ClientConfig;

use crate::kafka::log::KafkaLog;
use crate::kafka::producer::{Outgoing, PolledProducer};

use crate::config::Config;
use crate::deliver::Failure;
use crate::metrics::Metrics;
use crate::record::{headers, Origin, Raw};

/// A message's headers as text (a dead letter's, for reading them back).
pub fn header_map(message: &impl rdkafka::Message) -> std::collections::BTreeMap<String, String> {
    use rdkafka::message::Headers;
    message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_string(), value.unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How long one produce may take before it is tried again.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between failed writes.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two tries of one letter.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(10);

/// Whether a dead-letter write failing with `code` waits for an operator (rights, a
/// missing topic, a record the topic refuses) rather than for the brokers to return.
fn needs_operator(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        Some(
            C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::UnknownTopic
                | C::UnknownTopicOrPartition
                | C::InvalidTopic
                | C::InvalidRecord
                | C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::PolicyViolation
        )
    )
}

/// One event on its way to the dead-letter topic.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// Where it came from.
    pub origin: &'a Origin,
    /// The original key and bytes.
    pub raw: &'a Raw,
    /// Its workspace, if it got that far.
    pub workspace: Option<&'a str>,
    /// Why it is here.
    pub failure: &'a Failure,
}

/// Producer for the dead-letter topic.
pub struct DeadLetters {
    /// Replaced when it fails fatally (an idempotent producer that lost its sequence
    /// can never send again: librdkafka requires a new one).
    producer: RwLock<Arc<PolledProducer>>,
    /// How to build it again.
    client: ClientConfig,
    topic: String,
    metrics: Metrics,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// A producer on the same brokers (and security options) as the source.
    pub fn new(config: &Config, metrics: Metrics) -> rdkafka::error::KafkaResult<Self> {
        let k = &config.kafka;
        let mut client = crate::kafka::producer_config(k);
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            );
        Ok(DeadLetters {
            producer: RwLock::new(Arc::new(PolledProducer::new(
                &client,
                &k.dlq_topic,
                KafkaLog::new(metrics.clone()),
            )?)),
            client,
            topic: k.dlq_topic.clone(),
            metrics,
        })
    }

    /// The producer in use now (a new one after a fatal error).
    pub fn producer(&self) -> Arc<PolledProducer> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failed send on `used`: if it failed fatally, puts a new producer in its
    /// place (once, however many sends saw it fail). What it had in flight is sent
    /// again on the new one by the callers' retries.
    fn replace_if_fatal(&self, used: &Arc<PolledProducer>) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, used) {
            return;
        }
        match PolledProducer::new(
            &self.client,
            &self.topic,
            KafkaLog::new(self.metrics.clone()),
        ) {
            Ok(fresh) => {
                tracing::error!(
                    topic = %self.topic,
                    "dead-letter producer failed fatally ({code:?}: {reason}); replaced by a new one"
                );
                *slot = Arc::new(fresh);
            }
            Err(e) => tracing::error!(
                topic = %self.topic,
                "dead-letter producer failed fatally ({code:?}: {reason}) and a new one \
                 could not be made ({e}); trying again"
            ),
        }
    }

    /// Writes one dead letter and returns once the broker acknowledged it, trying again
    /// for as long as it takes.
    pub async fn send(&self, letter: DeadLetter<'_>) {
        let mut headers = letter_headers(&letter);
        let mut payload = letter.raw.payload.as_deref();
        let mut key = letter.raw.key.as_deref();
        let mut pause = RETRY_PAUSE;
        loop {
            let producer = self.producer();
            let record = Outgoing {
                partition: None,
                key,
                payload,
                headers: Some(headers.clone()),
            };
            match producer.send_within(record, PRODUCE_TIMEOUT).await {
                Ok(_) => {
                    self.metrics.kafka_ok();
                    self.metrics.dead_lettered(
                        letter.workspace,
                        letter.origin,
                        letter.failure.reason,
                        &letter.failure.detail,
                    );
                    return;
                }
                Err(error)
                    if payload.is_some()
                        && error.rdkafka_error_code()
                            == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
                {
                    // Retrying cannot help: keep the reason and where the original is.
                    let size = payload.map_or(0, <[u8]>::len);
                    tracing::error!(
                        size,
                        offset = letter.origin.offset,
                        "dead letter too large for the DLQ topic: sending it without its payload"
                    );
                    headers = headers.insert(Header {
                        key: headers::PAYLOAD_OMITTED,
                        value: Some(size.to_string().as_bytes()),
                    });
                    payload = None;
                }
                Err(error)
                    if key.is_some()
                        && error.rdkafka_error_code()
                            == Some(RDKafkaErrorCode::MessageSizeTooLarge) =>
                {
                    // Still too large without the payload: the key is what is left.
                    let size = key.map_or(0, <[u8]>::len);
                    tracing::error!(
                        size,
                        offset = letter.origin.offset,
                        "dead letter still too large without its payload: sending it without its key"
                    );
                    headers = headers.insert(Header {
                        key: headers::KEY_OMITTED,
                        value: Some(size.to_string().as_bytes()),
                    });
                    key = None;
                }
                Err(error) => {
                    // Nothing may be lost: the letter is tried again whatever the error.
                    // One that only an operator can fix says so, and is tried less often.
                    let needs_operator = needs_operator(error.rdkafka_error_code());
                    self.metrics
                        .dlq_error(letter.origin, &error, needs_operator);
                    self.replace_if_fatal(&producer);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn letter_headers(letter: &DeadLetter<'_>) -> OwnedHeaders {
    let f = letter.failure;
    let mut pairs: Vec<(&str, String)> = vec![
        (headers::REASON, f.reason.to_string()),
        (headers::MESSAGE, message(f)),
        (headers::ATTEMPTS, f.attempts.to_string()),
        (headers::FIRST_ATTEMPT, rfc3339(f.first_attempt)),
        (headers::LAST_ATTEMPT, rfc3339(f.last_attempt)),
        (headers::TOPIC, letter.origin.tp.topic.to_string()),
        (headers::PARTITION, letter.origin.tp.partition.to_string()),
        (headers::OFFSET, letter.origin.offset.to_string()),
    ];
    if let Some(status) = f.status {
        pairs.push((headers::HTTP_STATUS, status.to_string()));
        pairs.push((headers::RESPONSE, f.detail.clone()));
    }
    if let Some(ws) = letter.workspace {
        pairs.push((headers::WORKSPACE, ws.to_string()));
    }
    if letter.raw.redrive_count > 0 {
        pairs.push((headers::REDRIVE_COUNT, letter.raw.redrive_count.to_string()));
    }
    if let Some(replay) = &letter.raw.replay {
        pairs.push((headers::REPLAY, replay.clone()));
    }
    pairs.push((headers::FIRST_WRITTEN, letter.raw.first_written.clone()));
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

/// A sentence for people reading the dead letter.
fn message(f: &Failure) -> String {
    match f.status {
        Some(status) => format!("the API answered {status} ({}): {}", f.reason, f.detail),
        None => format!("{}: {}", f.reason, f.detail),
    }
}
