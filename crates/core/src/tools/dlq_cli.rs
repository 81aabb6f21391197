//! `sluice dlq inspect` and `sluice dlq redrive`: summarise the dead-letter topic and
//! send chosen dead letters back to be delivered again.
//!
//! Redriven messages carry `sluice.redrive_count` (one more than before), and a letter
//! that comes back keeps it, so a loop shows in `inspect`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::kafka::client_config;
use crate::printable::{printable, printable_bytes};
use crate::record::headers;

/// How long reading waits for more letters before deciding it reached the end.
const IDLE_END: Duration = Duration::from_secs(3);

/// Which dead letters a command is about.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only letters with this reason (e.g. `http_400`, `invalid_item`, `malformed_json`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only letters of this workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only letters whose last attempt was at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only letters whose last attempt was before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::FixedOffset>>,
}

/// One record of the dead-letter (or parking) topic, read back.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Partition of the dead-letter topic.
    pub partition: i32,
    /// Offset in the dead-letter topic.
    pub offset: i64,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// The original bytes.
    pub payload: Option<Vec<u8>>,
    /// The headers sluice wrote.
    pub headers: BTreeMap<String, String>,
}

impl StoredRecord {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The reason code.
    pub fn reason(&self) -> &str {
        self.header(headers::REASON).unwrap_or("unknown")
    }

    /// The workspace, or `-`.
    pub fn workspace(&self) -> &str {
        self.header(headers::WORKSPACE).unwrap_or("-")
    }

    /// Times redriven so far.
    pub fn redrive_count(&self) -> u32 {
        self.header(headers::REDRIVE_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    fn matches(&self, filter: &Filter) -> bool {
        let last = self
            .header(headers::LAST_ATTEMPT)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        filter.reason.as_deref().is_none_or(|r| r == self.reason())
            && filter
                .workspace
                .as_deref()
                .is_none_or(|w| w == self.workspace())
            && filter.since.is_none_or(|s| last.is_some_and(|t| t >= s))
            && filter.until.is_none_or(|u| last.is_some_and(|t| t < u))
    }
}

/// Reaching the end of a partition is how reading stops, not an error worth a log line.
#[derive(Debug, Clone, Copy)]
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// Reads the whole dead-letter topic (from the start to its current end) and returns
/// the letters matching `filter`.
pub fn read(kafka: &KafkaConfig, filter: &Filter) -> anyhow::Result<Vec<StoredRecord>> {
    read_topic(kafka, &kafka.dlq_topic, filter)
}

/// Reads all of `topic` (a dead-letter or parking topic, whose records carry sluice's
/// headers) from the start to its current end; returns the records matching `filter`.
pub fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    filter: &Filter,
) -> anyhow::Result<Vec<StoredRecord>> {
    let consumer: BaseConsumer<QuietEof> = client_config(kafka)
        .set("group.id", "sluice-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(QuietEof)?;
    let partitions = partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    drop(tpl);

    let mut at_end = std::collections::HashSet::new();
    let mut letters = Vec::new();
    let mut last_progress = Instant::now();
    while at_end.len() < partitions.len() && last_progress.elapsed() < IDLE_END {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let headers = crate::dlq::header_map(&m);
                let letter = StoredRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                };
                if letter.matches(filter) {
                    letters.push(letter);
                }
            }
        }
    }
    Ok(letters)
}

/// The partition ids of `topic`.
pub fn partitions_of<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The `inspect` report: counts by reason and workspace, redrive loops, samples.
pub fn report(letters: &[StoredRecord], samples: usize) -> String {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut redriven, mut replayed) = (0, 0);
    for l in letters {
        *counts.entry((l.reason(), l.workspace())).or_default() += 1;
        if l.redrive_count() > 0 {
            redriven += 1;
        }
        if l.header(headers::REPLAY).is_some() {
            replayed += 1;
        }
    }
    let mut out = format!("{} dead letters\n\n", letters.len());
    out.push_str(&format!(
        "{:<24} {:<20} {:>8}\n",
        "REASON", "WORKSPACE", "COUNT"
    ));
    for ((reason, workspace), count) in &counts {
        let (reason, workspace) = (printable(reason), printable(workspace));
        out.push_str(&format!("{reason:<24} {workspace:<20} {count:>8}\n"));
    }
    if redriven > 0 {
        out.push_str(&format!(
            "\n{redriven} of them were redriven before and failed again (sluice.redrive_count > 0)\n"
        ));
    }
    if replayed > 0 {
        out.push_str(&format!(
            "\n{replayed} of them are replayed traffic (sluice.replay), not fresh events\n"
        ));
    }
    if samples > 0 {
        out.push_str("\nSamples:\n");
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for l in letters {
            let n = shown.entry(l.reason()).or_default();
            if *n >= samples {
                continue;
            }
            *n += 1;
            let payload = l
                .payload
                .as_deref()
                .map(|p| printable_bytes(&p[..p.len().min(160)]))
                .unwrap_or_default();
            let header = |name| printable(l.header(name).unwrap_or("?"));
            out.push_str(&format!(
                "- [{}] {}/{}@{} (dlq {}@{}): {}\n    {}\n",
                printable(l.reason()),
                header(headers::TOPIC),
                header(headers::PARTITION),
                header(headers::OFFSET),
                l.partition,
                l.offset,
                printable(l.header(headers::MESSAGE).unwrap_or("")),
                payload
            ));
        }
    }
    out
}

/// What a redrive did.
#[derive(Debug, Default)]
pub struct Redriven {
    /// Letters sent back.
    pub sent: usize,
    /// Letters left where they are because they carry no payload (it was too large
    /// for the dead-letter topic): `topic/partition@offset` of each original, which is
    /// where the event still is until retention removes it.
    pub without_payload: Vec<String>,
}

/// The headers of `l` sent back: its redrive count plus one, and what it carried that
/// the worker reads again.
fn redrive_headers(l: &StoredRecord) -> OwnedHeaders {
    let count = (l.redrive_count() + 1).to_string();
    let mut h = OwnedHeaders::new().insert(Header {
        key: headers::REDRIVE_COUNT,
        value: Some(count.as_bytes()),
    });
    if let Some(replay) = l.header(headers::REPLAY) {
        h = h.insert(Header {
            key: headers::REPLAY,
            value: Some(replay.as_bytes()),
        });
    }
    // The event keeps its id (events without a messageId derive it from here).
    if let Some(first) = l.header(headers::FIRST_WRITTEN) {
        h = h.insert(Header {
            key: headers::FIRST_WRITTEN,
            value: Some(first.as_bytes()),
        });
    }
    // The workspace header routes it again as the first time.
    if let Some(ws) = l.header(headers::WORKSPACE) {
        h = h.insert(Header {
            key: "workspace",
            value: Some(ws.as_bytes()),
        });
    }
    h
}

/// Sends `letters` back: to `to`, or each to the topic it came from. A letter whose
/// payload was omitted is never sent (it would arrive as an empty event); it is listed
/// in [`Redriven::without_payload`] instead.
pub async fn redrive(
    kafka: &KafkaConfig,
    letters: &[StoredRecord],
    to: Option<&str>,
) -> anyhow::Result<Redriven> {
    let producer: FutureProducer = crate::kafka::producer_config(kafka)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "100000000")
        .create()?;
    let mut done = Redriven::default();
    for l in letters {
        if l.payload.is_none() || l.header(headers::PAYLOAD_OMITTED).is_some() {
            done.without_payload.push(format!(
                "{}/{}@{}",
                l.header(headers::TOPIC).unwrap_or("?"),
                l.header(headers::PARTITION).unwrap_or("?"),
                l.header(headers::OFFSET).unwrap_or("?"),
            ));
            continue;
        }
        let topic = match (to, l.header(headers::TOPIC)) {
            (Some(t), _) | (None, Some(t)) => t,
            (None, None) => {
                anyhow::bail!("dead letter at offset {} names no source topic", l.offset)
            }
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(redrive_headers(l));
        if let Some(key) = &l.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &l.payload {
            record = record.payload(payload.as_slice());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("redrive of dlq offset {}: {e}", l.offset))?;
        done.sent += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests;
