//! A Kafka producer whose sends answer with a future (the parking topic's and the
//! dead-letter topic's), served by a thread that sleeps while there is nothing to serve.
//!
//! rust-rdkafka's `FutureProducer` serves its delivery reports from a thread that polls
//! in 100 ms windows and asks librdkafka to wait for what is left of a window in whole
//! milliseconds, rounded down: for the last millisecond of every window it asks for a
//! 0 ms wait, again and again, and spins. Measured per thread (`/proc/PID/task/*/stat`)
//! while `scripts/bench_peers.py` ran the worker, the two idle producers' threads took
//! 0.48 s of the worker's 3.0 s of CPU for 400 000 events. This one polls in windows of
//! [`POLL_WINDOW`], so the same rounding costs a thousandth of a thread, not a
//! hundredth or more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::Client;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use tokio::sync::oneshot;

use super::log::KafkaLog;

/// How long one poll of the delivery reports may wait: also how long the serving thread
/// outlives its producer.
const POLL_WINDOW: Duration = Duration::from_secs(1);

/// How long [`PolledProducer::send_within`] waits before asking again while the
/// producer's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

/// What became of one record: written, or why not.
pub(crate) type Delivered = Result<(), KafkaError>;

/// A record's outcome, once the broker has answered (an error if the producer went away
/// first).
pub(crate) type Delivery = oneshot::Receiver<Delivered>;

/// One record to write.
#[derive(Debug, Default)]
pub(crate) struct Outgoing<'a> {
    /// Its partition; `None`: librdkafka's partitioner picks by key.
    pub(crate) partition: Option<i32>,
    /// Its key.
    pub(crate) key: Option<&'a [u8]>,
    /// Its value.
    pub(crate) payload: Option<&'a [u8]>,
    /// Its headers.
    pub(crate) headers: Option<OwnedHeaders>,
}

/// A producer to one topic whose writes answer with a [`Delivery`].
pub struct PolledProducer {
    producer: Arc<BaseProducer<Reporting>>,
    topic: String,
    /// Tells the serving thread to end (with the producer).
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PolledProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// librdkafka's lines and errors through [`KafkaLog`], and each delivery report to the
/// future of its record.
#[derive(Debug)]
pub struct Reporting(KafkaLog);

impl ClientContext for Reporting {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
}

impl ProducerContext for Reporting {
    type DeliveryOpaque = Box<oneshot::Sender<Delivered>>;

    fn delivery(&self, result: &DeliveryResult<'_>, answer: Self::DeliveryOpaque) {
        let delivered = match result {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(error.clone()),
        };
        // Refused only if the sender stopped waiting.
        let _ = answer.send(delivered);
    }
}

impl PolledProducer {
    /// A producer to `topic` with `config`, its lines through `log`.
    pub(crate) fn new(config: &ClientConfig, topic: &str, log: KafkaLog) -> KafkaResult<Self> {
        let producer: BaseProducer<Reporting> = config.create_with_context(Reporting(log))?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let (serving, stopped) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sluice-produce".into())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    serving.poll(POLL_WINDOW);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("producer thread: {e}")))?;
        Ok(PolledProducer {
            producer,
            topic: topic.to_string(),
            stop,
        })
    }

    /// The topic it writes to.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues `record`; its [`Delivery`] answers once the broker has. Err: not
    /// enqueued (e.g. the queue is full).
    pub(crate) fn send(&self, record: Outgoing<'_>) -> Result<Delivery, KafkaError> {
        let (answer, delivery) = oneshot::channel();
        let mut base: BaseRecord<'_, [u8], [u8], _> =
            BaseRecord::with_opaque_to(&self.topic, Box::new(answer));
        if let Some(partition) = record.partition {
            base = base.partition(partition);
        }
        if let Some(key) = record.key {
            base = base.key(key);
        }
        if let Some(payload) = record.payload {
            base = base.payload(payload);
        }
        if let Some(headers) = record.headers {
            base = base.headers(headers);
        }
        self.producer
            .send(base)
            .map(|()| delivery)
            .map_err(|(e, _)| e)
    }

    /// Writes `record` and waits for the broker's answer; while the producer's queue is
    /// full, asks again for up to `within` (as rust-rdkafka's `FutureProducer` does
    /// with its queue timeout).
    pub(crate) async fn send_within(
        &self,
        record: Outgoing<'_>,
        within: Duration,
    ) -> Result<(), KafkaError> {
        let started = tokio::time::Instant::now();
        let delivery = loop {
            let attempt = Outgoing {
                headers: record.headers.clone(),
                ..record
            };
            match self.send(attempt) {
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
                    if started.elapsed() < within =>
                {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                other => break other?,
            }
        };
        delivery.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// The librdkafka client (metadata, watermarks, fatal errors).
    pub fn client(&self) -> &Client<Reporting> {
        rdkafka::producer::Producer::client(&*self.producer)
    }
}

impl Drop for PolledProducer {
    /// The serving thread ends within [`POLL_WINDOW`], and the producer with it
    /// (librdkafka's destroy runs there; a process that exits sooner skips it: what was
    /// still queued was purged, not flushed, as `FutureProducer`'s drop does too).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
