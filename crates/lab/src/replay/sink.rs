//! Where a replay writes: a topic (an idempotent producer, each record's partition
//! kept unless `--repartition`, a `sluice.replay` header on each) or a record file, and
//! the acknowledgement count at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use tokio_util::sync::CancellationToken;

use super::{Refused, ReplayArgs, REPLAY_HEADER};
use crate::dump::DumpedRecord;

pub(super) enum Sink {
    Topic {
        producer: ThreadedProducer<Written>,
        topic: String,
        repartition: bool,
    },
    File(BufWriter<File>, u64),
}

impl Sink {
    /// Opens `--to-topic` (through `client`; refused if it has fewer partitions than
    /// `highest_partition` needs) or `--to-file`; with the destination's display name.
    pub(super) fn open(
        args: &ReplayArgs,
        highest_partition: Option<i32>,
        client: impl Fn() -> anyhow::Result<ClientConfig>,
    ) -> anyhow::Result<(Sink, String)> {
        match (&args.to_topic, &args.to_file) {
            (Some(topic), _) => {
                let mut client = client()?;
                client.set("queue.buffering.max.messages", "20000");
                // Retries must not reorder a partition; a mistyped topic is not created.
                client.set("enable.idempotence", "true");
                client.set("allow.auto.create.topics", "false");
                args.kafka.set_producer_options(&mut client);
                let producer: ThreadedProducer<Written> =
                    client.create_with_context(Written::default())?;
                let partitions = crate::broker::partition_count(producer.client(), topic)?;
                anyhow::ensure!(
                    partitions > 0,
                    "the destination topic {topic} does not exist"
                );
                if let (false, Some(highest)) = (args.repartition, highest_partition) {
                    if highest as usize >= partitions {
                        return Err(Refused::Partitions {
                            topic: topic.clone(),
                            partitions,
                            highest,
                        }
                        .into());
                    }
                }
                let sink = Sink::Topic {
                    producer,
                    topic: topic.clone(),
                    repartition: args.repartition,
                };
                Ok((sink, topic.clone()))
            }
            (None, Some(path)) => {
                let file = File::create(path)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                Ok((
                    Sink::File(BufWriter::new(file), 0),
                    path.display().to_string(),
                ))
            }
            (None, None) => anyhow::bail!("give --to-topic or --to-file"),
        }
    }

    /// Writes one record; an `Err` names why it could not be.
    pub(super) fn write(
        &mut self,
        raw: &mut DumpedRecord,
        run_id: &str,
        source: &str,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        match self {
            Sink::File(out, written) => {
                raw.write_line(out).map_err(|e| e.to_string())?;
                *written += 1;
                Ok(())
            }
            Sink::Topic {
                producer,
                topic,
                repartition,
            } => {
                let headers = replay_headers(raw, run_id, source);
                let mut record: BaseRecord<'_, [u8], [u8], ()> =
                    BaseRecord::to(topic).headers(headers);
                if let Some(key) = &raw.key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &raw.value {
                    record = record.payload(value.as_slice());
                }
                if let Some(ts) = raw.timestamp {
                    record = record.timestamp(ts);
                }
                if let (false, Some(p)) = (*repartition, raw.partition) {
                    record = record.partition(p);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => return Ok(()),
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                            if !stop.is_cancelled() =>
                        {
                            record = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err((e, _)) => return Err(e.to_string()),
                    }
                }
            }
        }
    }

    /// Waits for what is in flight (10 s if stopped, else 60 s) and returns
    /// `(written, failed)`; `refused` (sends that failed at once) count as failed, and
    /// the producer's failures and what was never acknowledged join `failures`.
    pub(super) fn finish(
        self,
        stop: &CancellationToken,
        refused: u64,
        failures: &mut BTreeMap<String, u64>,
    ) -> anyhow::Result<(u64, u64)> {
        match self {
            Sink::Topic { producer, .. } => {
                // A stopped replay still waits a little for what is in flight.
                let limit = Duration::from_secs(if stop.is_cancelled() { 10 } else { 60 });
                let until = Instant::now() + limit;
                while producer.in_flight_count() > 0 && Instant::now() < until {
                    let _ = producer.flush(Duration::from_millis(200));
                }
                let pending = producer.in_flight_count().max(0) as u64;
                let ctx = producer.context();
                for (reason, n) in ctx.failures.lock().expect("not poisoned").iter() {
                    *failures.entry(reason.clone()).or_default() += n;
                }
                if pending > 0 {
                    *failures
                        .entry("not acknowledged by the end of the replay".into())
                        .or_default() += pending;
                }
                let failed = refused + ctx.failed.load(Ordering::Relaxed) + pending;
                Ok((ctx.acked.load(Ordering::Relaxed), failed))
            }
            Sink::File(mut out, written) => {
                out.flush()?;
                Ok((written, refused))
            }
        }
    }
}

/// One warning line when kept timestamps are older than the destination's retention
/// (the broker may delete them at once). Best effort: brokers that do not describe
/// configs are not asked twice.
pub(super) fn warn_if_older_than_retention(client: &ClientConfig, topic: &str, ts_ms: i64) {
    let Some(retention_ms) = topic_retention_ms(client, topic) else {
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if retention_ms >= 0 && ts_ms < now_ms - retention_ms {
        eprintln!(
            "warning: the first record's timestamp is {}s old, beyond {topic}'s retention ({}s): \
             the broker may delete replayed records at once; use --timestamps now or shift",
            (now_ms - ts_ms) / 1000,
            retention_ms / 1000
        );
    }
}

fn topic_retention_ms(client: &ClientConfig, topic: &str) -> Option<i64> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client.create().ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let results = runtime
        .block_on(admin.describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(2))),
        ))
        .ok()?;
    let config = results.into_iter().next()?.ok()?;
    config.get("retention.ms")?.value.as_deref()?.parse().ok()
}

/// The destination producer's context: counts acknowledgements and failures.
#[derive(Debug, Default)]
pub(super) struct Written {
    acked: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
}

impl ClientContext for Written {}

impl ProducerContext for Written {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut failures = self.failures.lock().expect("not poisoned");
                if failures.len() < 20 || failures.contains_key(&e.to_string()) {
                    *failures.entry(e.to_string()).or_default() += 1;
                }
            }
        }
    }
}

/// `raw`'s own headers and its `sluice.replay` header, `RUN:TOPIC:PARTITION:OFFSET` of
/// the record it copies (one it already carried is replaced).
fn replay_headers(raw: &DumpedRecord, run_id: &str, source: &str) -> OwnedHeaders {
    let origin = format!(
        "{run_id}:{}:{}:{}",
        raw.topic.as_deref().unwrap_or(source),
        raw.partition.map_or("-".into(), |p| p.to_string()),
        raw.offset.map_or("-".into(), |o| o.to_string()),
    );
    let mut headers = OwnedHeaders::new_with_capacity(raw.headers.len() + 1);
    for (name, value) in raw.headers.iter().filter(|(n, _)| n != REPLAY_HEADER) {
        headers = headers.insert(Header {
            key: name,
            value: value.as_deref(),
        });
    }
    headers.insert(Header {
        key: REPLAY_HEADER,
        value: Some(&origin),
    })
}
