//! The Kafka side of a test: a broker (librdkafka's mock cluster, or a real broker named
//! by `SLUICE_TEST_BROKERS`), producing records, reading topics back and checking
//! committed offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::Record;

/// A Kafka broker for one test.
pub enum Broker {
    /// librdkafka's in-process mock cluster.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A real broker (Tansu in CI).
    Real(String),
}

impl Broker {
    /// A fresh mock cluster.
    pub fn mock() -> Self {
        Broker::Mock(MockCluster::new(1).expect("mock cluster starts"))
    }

    /// The broker named by `SLUICE_TEST_BROKERS` (the real-broker suite).
    pub fn real() -> Self {
        let brokers = std::env::var("SLUICE_TEST_BROKERS").expect(
            "SLUICE_TEST_BROKERS must name a running broker (scripts/test.sh starts Tansu)",
        );
        Broker::Real(brokers)
    }

    /// Bootstrap servers.
    pub fn brokers(&self) -> String {
        match self {
            Broker::Mock(cluster) => cluster.bootstrap_servers(),
            Broker::Real(brokers) => brokers.clone(),
        }
    }

    /// A new topic named `prefix-…` (see [`unique`]) of `partitions`.
    pub async fn fresh_topic(&self, prefix: &str, partitions: i32) -> String {
        let topic = unique(prefix);
        self.create_topic(&topic, partitions).await;
        topic
    }

    /// As [`fresh_topic`](Self::fresh_topic), with its `<topic>.dlq` of one partition.
    pub async fn fresh_topic_with_dlq(&self, prefix: &str, partitions: i32) -> String {
        let topic = self.fresh_topic(prefix, partitions).await;
        self.create_topic(&format!("{topic}.dlq"), 1).await;
        topic
    }

    /// Creates a topic with `partitions` partitions. On the mock cluster, a source
    /// topic comes with its `<topic>.park` of as many partitions: the mock has no admin
    /// API for the worker to create it with (on a real broker the worker does).
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Mock(cluster) => {
                cluster.create_topic(topic, partitions, 1).unwrap();
                if !topic.ends_with(".dlq") && !topic.ends_with(".park") {
                    let park = format!("{topic}.park");
                    cluster.create_topic(&park, partitions, 1).unwrap();
                }
            }
            Broker::Real(brokers) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .create()
                    .unwrap();
                let topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
                let results = admin
                    .create_topics([&topic], &AdminOptions::new())
                    .await
                    .unwrap();
                for r in results {
                    r.expect("topic created");
                }
            }
        }
    }
}

/// A unique name for topics and groups, so tests sharing a real broker never meet.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u64(..))
}

/// Produces `records` to `topic`; returns each one's (partition, offset), in order.
pub async fn produce(brokers: &str, topic: &str, records: &[Record]) -> Vec<(i32, i64)> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "2000000")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends = records.iter().map(|r| {
        let mut record = FutureRecord::to(topic).key(&r.key).payload(&r.payload);
        if let Some(ws) = &r.workspace_header {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "workspace",
                value: Some(&ws[..]),
            }));
        }
        producer.send(record, Duration::from_secs(10))
    });
    futures::future::join_all(sends)
        .await
        .into_iter()
        .map(|r| {
            let d = r.map_err(|(e, _)| e).expect("produced");
            (d.partition, d.offset)
        })
        .collect()
}

/// Committed offsets of `group` on `topic`, by partition (`None`: nothing committed).
pub fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, Option<i64>> {
    committed_with_metadata(brokers, group, topic, partitions)
        .into_iter()
        .map(|(p, (offset, _))| (p, offset))
        .collect()
}

fn committed_with_metadata(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, (Option<i64>, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let result = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    // Turn the list into a plain map at once (rdkafka 0.39 can hang dropping a
    // consumer while such a list lives).
    let map = result
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), (offset, e.metadata().to_string()))
        })
        .collect();
    drop(result);
    map
}

/// End (high-water) offsets of `topic`, by partition.
pub fn end_offsets(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, Some(high))
        })
        .collect()
}

/// The end offset (one past the last record) of each partition that `produce`
/// reported writing to. Computed from the producer's acknowledgements rather than the
/// broker's watermarks: Tansu 0.6 reports a high watermark that is not the true end.
pub fn produced_ends(positions: &[(i32, i64)], partitions: i32) -> BTreeMap<i32, i64> {
    let mut ends: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    for (p, offset) in positions {
        let end = ends.entry(*p).or_default();
        *end = (*end).max(offset + 1);
    }
    ends
}

/// Polls until the group's committed offsets equal `ends` (a partition that never held
/// a message has nothing committed: that counts as 0).
pub async fn wait_committed_to_end(
    brokers: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) {
    let partitions = ends.len() as i32;
    let start = std::time::Instant::now();
    loop {
        let now = committed(brokers, group, topic, partitions);
        if now.iter().all(|(p, c)| c.unwrap_or(0) == ends[p]) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "committed offsets {now:?} never reached the end {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Read {
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Option<Vec<u8>>,
    /// Its headers (UTF-8 values).
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `count` messages arrived (or 30 s passed).
pub fn read_topic(brokers: &str, topic: &str, count: usize) -> Vec<Read> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while out.len() < count && start.elapsed() < Duration::from_secs(30) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let headers = sluice_core::dlq::header_map(&m);
        out.push(Read {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}
