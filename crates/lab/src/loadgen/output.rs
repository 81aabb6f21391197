//! Where generated events go: a Kafka topic through a producer whose acknowledgements
//! are timed, or a record file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message as _};
use tokio_util::sync::CancellationToken;

use super::headroom::{PartitionBytes, RECORD_OVERHEAD};
use super::schedule::Schedule;
use crate::dump;

/// How long the end of a run waits for outstanding acknowledgements.
const FLUSH_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopped run waits for them.
const STOPPED_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// One event to send.
pub(super) struct Message<'a> {
    /// Kafka key.
    pub key: &'a str,
    /// Payload.
    pub value: &'a [u8],
    /// Workspace id (the `workspace` header).
    pub workspace: &'a str,
    /// Run id (the `sluice.run` header).
    pub run_id: &'a str,
    /// Scheduled send time, unix microseconds (`sluice.due`, and the timestamp).
    pub due_us: i64,
}

impl Message<'_> {
    /// Bytes it takes in a partition's log: key, value, headers and record framing.
    pub(super) fn record_bytes(&self) -> u64 {
        let headers = "workspace".len()
            + self.workspace.len()
            + super::RUN_HEADER.len()
            + self.run_id.len()
            + super::DUE_HEADER.len()
            + 16;
        (self.key.len() + self.value.len() + headers) as u64 + RECORD_OVERHEAD
    }
}

/// Bytes an acknowledged message takes in its partition's log (as
/// [`Message::record_bytes`]).
fn logged_bytes(m: &rdkafka::message::BorrowedMessage<'_>) -> u64 {
    let headers = m.headers().map_or(0, |h| {
        h.iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum::<usize>()
    });
    (m.key_len() + m.payload_len() + headers) as u64 + RECORD_OVERHEAD
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Handed to the producer (or written).
    Sent,
    /// Refused at once, with the reason.
    Failed(String),
}

/// The acknowledgements of a finished run.
#[derive(Debug)]
pub(super) struct Delivery {
    /// Events the broker acknowledged (or lines written).
    pub acked: u64,
    /// Events the broker refused, or never acknowledged.
    pub failed: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
    /// Send → acknowledgement, microseconds.
    pub ack_latency_us: Histogram<u64>,
    /// Acknowledgements by the stage running when they came.
    pub acked_by_stage: Vec<u64>,
}

/// A topic or a file.
pub(super) enum Output {
    /// A Kafka producer.
    Kafka {
        /// The producer (polled by its own thread).
        producer: ThreadedProducer<Acks>,
        /// Topic.
        topic: String,
    },
    /// A record file.
    File {
        /// The file.
        out: BufWriter<File>,
        /// Lines written.
        written: u64,
    },
}

impl Output {
    /// A producer to `topic`, holding at most `max_pending` unacknowledged events.
    pub(super) fn kafka(
        client: &ClientConfig,
        topic: &str,
        max_pending: usize,
        start: Instant,
        schedule: &Schedule,
        partition_bytes: Option<Arc<PartitionBytes>>,
    ) -> anyhow::Result<Output> {
        let stages = schedule.stages().len();
        let acks = Acks {
            start,
            schedule: schedule.clone(),
            acked: AtomicU64::new(0),
            partition_bytes,
            state: Mutex::new(AckState {
                latency: crate::latency::micros(),
                failed: 0,
                failures: BTreeMap::new(),
                by_stage: vec![0; stages],
            }),
        };
        let mut client = client.clone();
        client.set("queue.buffering.max.messages", max_pending.to_string());
        // Retries must not reorder a user's events (their seq is checked downstream),
        // and a mistyped topic must not be created.
        client.set("enable.idempotence", "true");
        client.set("allow.auto.create.topics", "false");
        if client.get("linger.ms").is_none() {
            client.set("linger.ms", "5");
        }
        let producer: ThreadedProducer<Acks> = client.create_with_context(acks)?;
        let partitions = crate::broker::partition_count(producer.client(), topic)?;
        anyhow::ensure!(
            partitions > 0,
            "topic {topic} does not exist (create it first)"
        );
        Ok(Output::Kafka {
            producer,
            topic: topic.to_string(),
        })
    }

    /// A record file at `path` (created or truncated).
    pub(super) fn file(path: &Path) -> anyhow::Result<Output> {
        let file = File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(Output::File {
            out: BufWriter::new(file),
            written: 0,
        })
    }

    /// Sends one event; with the producer's queue full, waits for room (that wait is
    /// the event's lateness) unless `stop` is cancelled.
    pub(super) fn send(&mut self, m: &Message<'_>, stop: &CancellationToken) -> Outcome {
        match self {
            Output::Kafka { producer, topic } => produce(producer, topic, m, stop),
            Output::File { out, written } => match dump_raw(m).write_line(out) {
                Ok(()) => {
                    *written += 1;
                    Outcome::Sent
                }
                Err(e) => Outcome::Failed(e.to_string()),
            },
        }
    }

    /// Events acknowledged so far.
    pub(super) fn acked(&self) -> u64 {
        match self {
            Output::Kafka { producer, .. } => producer.context().acked.load(Ordering::Relaxed),
            Output::File { written, .. } => *written,
        }
    }

    /// Waits for the outstanding acknowledgements (at most a minute, or until `stop`)
    /// and returns them; events still unacknowledged then count as failed.
    pub(super) fn finish(self, stop: &CancellationToken) -> anyhow::Result<Delivery> {
        match self {
            Output::Kafka { producer, .. } => {
                // A stopped run still waits a little for what is already in flight.
                let limit = if stop.is_cancelled() {
                    STOPPED_FLUSH_LIMIT
                } else {
                    FLUSH_LIMIT
                };
                let until = Instant::now() + limit;
                while producer.in_flight_count() > 0 && Instant::now() < until {
                    let _ = producer.flush(Duration::from_millis(200));
                }
                let pending = producer.in_flight_count().max(0) as u64;
                let acks = producer.context();
                let mut state = acks.state.lock().expect("not poisoned");
                if pending > 0 {
                    state.failed += pending;
                    *state
                        .failures
                        .entry("not acknowledged by the end of the run".into())
                        .or_default() += pending;
                }
                Ok(Delivery {
                    acked: acks.acked.load(Ordering::Relaxed),
                    failed: state.failed,
                    failures: std::mem::take(&mut state.failures),
                    ack_latency_us: state.latency.clone(),
                    acked_by_stage: std::mem::take(&mut state.by_stage),
                })
            }
            Output::File { mut out, written } => {
                out.flush()?;
                Ok(Delivery {
                    acked: written,
                    failed: 0,
                    failures: BTreeMap::new(),
                    ack_latency_us: crate::latency::micros(),
                    acked_by_stage: Vec::new(),
                })
            }
        }
    }
}

/// The producer's context: times each acknowledgement.
pub(super) struct Acks {
    start: Instant,
    schedule: Schedule,
    acked: AtomicU64,
    /// Bytes acknowledged per partition, for a [`super::Headroom`].
    partition_bytes: Option<Arc<PartitionBytes>>,
    state: Mutex<AckState>,
}

struct AckState {
    latency: Histogram<u64>,
    failed: u64,
    failures: BTreeMap<String, u64>,
    by_stage: Vec<u64>,
}

/// Distinct failure reasons kept (the rest are counted under "other").
const MAX_REASONS: usize = 20;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.start.elapsed();
        let mut state = self.state.lock().expect("not poisoned");
        match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = &self.partition_bytes {
                    p.record(m.partition(), logged_bytes(m));
                }
                let latency = now.saturating_sub(Duration::from_nanos(sent_ns as u64));
                state.latency.saturating_record(latency.as_micros() as u64);
                let stage = self.schedule.stage_at(now);
                if let Some(n) = state.by_stage.get_mut(stage) {
                    *n += 1;
                }
            }
            Err((e, _)) => {
                state.failed += 1;
                let mut reason = e.to_string();
                if state.failures.len() >= MAX_REASONS && !state.failures.contains_key(&reason) {
                    reason = "other".to_string();
                }
                *state.failures.entry(reason).or_default() += 1;
            }
        }
    }
}

/// Sends `m` to `topic`, waiting for room in the producer's queue unless `stop` is
/// cancelled.
fn produce(
    producer: &ThreadedProducer<Acks>,
    topic: &str,
    m: &Message<'_>,
    stop: &CancellationToken,
) -> Outcome {
    let due = m.due_us.to_string();
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "workspace",
            value: Some(m.workspace),
        })
        .insert(Header {
            key: super::RUN_HEADER,
            value: Some(m.run_id),
        })
        .insert(Header {
            key: super::DUE_HEADER,
            value: Some(&due),
        });
    let sent_ns = producer.context().start.elapsed().as_nanos() as usize;
    let mut record = BaseRecord::with_opaque_to(topic, sent_ns)
        .key(m.key)
        .payload(m.value)
        .headers(headers)
        .timestamp(m.due_us / 1000);
    loop {
        match producer.send(record) {
            Ok(()) => return Outcome::Sent,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if !stop.is_cancelled() =>
            {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
                // Ack latency counts from the send that got in, not from the wait for
                // room (that wait is lateness).
                record.delivery_opaque = producer.context().start.elapsed().as_nanos() as usize;
            }
            Err((e, _)) => return Outcome::Failed(e.to_string()),
        }
    }
}

/// `m` as a line of `sluice dump`'s format, with the headers a Kafka send carries.
fn dump_raw(m: &Message<'_>) -> dump::DumpedRecord {
    dump::DumpedRecord {
        timestamp: Some(m.due_us / 1000),
        key: Some(m.key.as_bytes().to_vec()),
        value: Some(m.value.to_vec()),
        headers: vec![
            ("workspace".into(), Some(m.workspace.as_bytes().to_vec())),
            (super::RUN_HEADER.into(), Some(m.run_id.as_bytes().to_vec())),
            (
                super::DUE_HEADER.into(),
                Some(m.due_us.to_string().into_bytes()),
            ),
        ],
        ..dump::DumpedRecord::default()
    }
}
