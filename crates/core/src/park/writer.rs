//! Writes parked events and fences to the parking topic, in the order the source hands
//! them over: each record is enqueued at once (never from a spawned task) and the
//! producer is idempotent with no delivery timeout, so librdkafka keeps a partition's
//! records in order through every retry. While the topic is unavailable the writes
//! simply pend; they count as buffered events, so the consumer pauses as it would
//! without parking.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};

use crate::kafka::log::KafkaLog;
use crate::kafka::producer::{Delivery, Outgoing, PolledProducer};
use crate::metrics::Metrics;

use crate::config::Config;
use crate::record::headers;
use crate::record::{Origin, Raw, TopicPartition};

/// Header naming a fence record's epoch (a fence carries no payload).
pub(crate) const FENCE: &str = "sluice.fence";
/// Header with the workspace a parked record (or a fence) belongs to.
pub(crate) const WORKSPACE: &str = headers::WORKSPACE;

/// How long reading the parking topic's end offset may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an end offset read serves workspaces parked after it.
const END_FRESH: Duration = Duration::from_secs(1);

/// The parking topic's producer.
pub(crate) struct Parker {
    producer: PolledProducer,
    /// Each parking partition's end offset as last read.
    ends: Mutex<HashMap<i32, End>>,
}

/// A parking partition's end offset as last read.
#[derive(Debug)]
struct End {
    offset: i64,
    /// When it was read.
    read: Instant,
    /// Whether a caller is reading it again now.
    reading: bool,
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("topic", &self.producer.topic())
            .finish_non_exhaustive()
    }
}

impl Parker {
    /// A producer for parking topic `topic` on the source's brokers.
    pub(crate) fn new(config: &Config, topic: &str, metrics: &Metrics) -> Result<Self, KafkaError> {
        let k = &config.kafka;
        let mut client = crate::kafka::producer_config(k);
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Never give up on a record: giving up and retrying would reorder.
            .set("message.timeout.ms", "0")
            .set(
                "queue.buffering.max.messages",
                (k.max_buffered_events * 2 + 10_000).to_string(),
            );
        Ok(Parker {
            producer: PolledProducer::new(&client, topic, KafkaLog::new(metrics.clone()))?,
            ends: Mutex::default(),
        })
    }

    /// The parking topic.
    pub(crate) fn topic(&self) -> &str {
        self.producer.topic()
    }

    /// Enqueues one event of `workspace` read from `origin`, to the parking partition
    /// with the source partition's number.
    pub(crate) fn park(
        &self,
        workspace: &str,
        origin: &Origin,
        raw: &Raw,
    ) -> Result<Delivery, KafkaError> {
        let mut pairs = vec![
            ("workspace", workspace.to_string()),
            (WORKSPACE, workspace.to_string()),
            (headers::TOPIC, origin.tp.topic.to_string()),
            (headers::PARTITION, origin.tp.partition.to_string()),
            (headers::OFFSET, origin.offset.to_string()),
        ];
        if raw.redrive_count > 0 {
            pairs.push((headers::REDRIVE_COUNT, raw.redrive_count.to_string()));
        }
        if let Some(replay) = &raw.replay {
            pairs.push((headers::REPLAY, replay.clone()));
        }
        pairs.push((headers::FIRST_WRITTEN, raw.first_written.clone()));
        if let Some(entered) = raw.entered_us {
            pairs.push((headers::DUE, entered.to_string()));
        }
        self.producer.send(Outgoing {
            partition: Some(origin.tp.partition),
            key: raw.key.as_deref(),
            payload: raw.payload.as_deref(),
            headers: Some(to_headers(&pairs)),
        })
    }

    /// Enqueues fence `epoch` of (`workspace`, `tp`) behind everything parked for it.
    pub(crate) fn fence(
        &self,
        workspace: &str,
        tp: &TopicPartition,
        epoch: u64,
    ) -> Result<Delivery, KafkaError> {
        let pairs = [
            (WORKSPACE, workspace.to_string()),
            (headers::TOPIC, tp.topic.to_string()),
            (headers::PARTITION, tp.partition.to_string()),
            (FENCE, epoch.to_string()),
        ];
        self.producer.send(Outgoing {
            partition: Some(tp.partition),
            key: Some(b"sluice-fence"),
            payload: None,
            headers: Some(to_headers(&pairs)),
        })
    }

    /// Where a workspace parked now will find its events in `partition`: the
    /// partition's end offset, as read at most [`END_FRESH`] ago (or the last read, if
    /// the broker cannot be asked). An end read before serves because an end grows
    /// between reads, and a start below a workspace's first parked event costs its
    /// reader a few records skipped; one caller at a time reads it again and the others
    /// go on with the last (thousands of workspaces parked at once each made their own
    /// blocking call, on hundreds of threads). The exception is an end that goes back
    /// (an unclean leader election): within `END_FRESH` of such a read, a start can sit
    /// above the new end, and its reader skip what is written up to it.
    pub(crate) fn start_offset(&self, partition: i32) -> Result<i64, KafkaError> {
        let known = {
            let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
            match ends.get_mut(&partition) {
                Some(end) if end.read.elapsed() < END_FRESH || end.reading => return Ok(end.offset),
                Some(end) => {
                    end.reading = true;
                    Some(end.offset)
                }
                None => None,
            }
        };
        let read = super::blocking(|| {
            self.producer.client().fetch_watermarks(
                self.producer.topic(),
                partition,
                WATERMARK_TIMEOUT,
            )
        });
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        match (read, known) {
            // As read, even below an earlier figure (a partition's end can go back, as
            // after an unclean leader election): a start above it would skip events.
            (Ok((_, high)), _) => {
                let end = End {
                    offset: high,
                    read: Instant::now(),
                    reading: false,
                };
                ends.insert(partition, end);
                Ok(high)
            }
            // The broker away: the last end read still serves.
            (Err(_), Some(offset)) => {
                if let Some(end) = ends.get_mut(&partition) {
                    end.reading = false;
                }
                Ok(offset)
            }
            (Err(e), None) => Err(e),
        }
    }
}

fn to_headers(pairs: &[(&str, String)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    })
}

/// What [`Parker`] wrote, read back: a parked copy (at `offset`, with headers `hs`) as the record it stands for: its
/// key and payload, and what the parking wrote down of the source record it came from
/// (`source`, `headers::OFFSET`) and of its history (redrives, replay, due time).
pub(super) fn parked_raw(
    source: &TopicPartition,
    offset: i64,
    hs: &std::collections::BTreeMap<String, String>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
) -> Raw {
    Raw {
        key,
        payload,
        redrive_count: hs
            .get(headers::REDRIVE_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        replay: hs.get(headers::REPLAY).cloned(),
        entered_us: hs.get(headers::DUE).and_then(|d| d.parse().ok()),
        // Parked before copies carried it: the source record it was parked from.
        first_written: crate::record::first_written(
            (
                &*source.topic,
                source.partition,
                hs.get(headers::OFFSET)
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(offset),
            ),
            |h| hs.get(h).cloned(),
        ),
    }
}
