//! Shared test set-up: a Kafka broker (librdkafka's mock cluster, or a real broker named
//! by `SLUICE_TEST_BROKERS`), a producer, committed-offset checks, a worker handle, and
//! `sluice mock-api` in-process, recording what it is sent.

pub mod fleet;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use sluice::config::Config;
use sluice::metrics::Metrics;
pub use sluice::tools::capacity::scrapes::Snapshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The API key every test workspace uses.
pub const API_KEY: &str = "test-api-key-5f2c";
/// Environment variable name the test configs point at (passed explicitly, never set
/// in the process environment).
pub const API_KEY_ENV: &str = "SLUICE_TEST_API_KEY";

/// `sluice mock-api` in-process on a free loopback port: unlimited, recording every
/// item and arrival, accepting any site id with [`API_KEY`].
pub async fn recording_api() -> sluice::tools::mock_api::MockApi {
    sluice::tools::mock_api::MockApi::start(sluice::tools::mock_api::MockApiConfig {
        keys: vec![format!("*:{API_KEY}")],
        record: true,
        ..Default::default()
    })
    .await
    .expect("the mock API starts")
}

/// What most tests start from: the mock cluster, a recording `sluice mock-api`, a
/// fresh topic and a worker set-up for some workspaces (site id `site-<id>`).
pub struct TestEnv {
    /// librdkafka's mock cluster.
    pub broker: Broker,
    /// The API, recording what it accepts.
    pub api: sluice::tools::mock_api::MockApi,
    /// The source topic, created with the partitions asked for.
    pub topic: String,
    /// The worker's settings, pointing at all of the above.
    pub setup: Setup,
}

impl TestEnv {
    /// A topic named `events-…` of `partitions`, for `workspaces`.
    pub async fn mock(partitions: i32, workspaces: &[&str]) -> Self {
        Self::build(partitions, workspaces).start().await
    }

    /// The same start with more choices: another API, a real broker, a parking or
    /// dead-letter topic. Nothing starts before [`TestEnvBuilder::start`].
    pub fn build(partitions: i32, workspaces: &[&str]) -> TestEnvBuilder {
        TestEnvBuilder {
            partitions,
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
            prefix: "events".into(),
            api: None,
            broker: None,
            park: false,
            dlq: false,
        }
    }

    /// (broker, api, topic, setup), for a test's own names.
    pub fn into_parts(self) -> (Broker, sluice::tools::mock_api::MockApi, String, Setup) {
        (self.broker, self.api, self.topic, self.setup)
    }
}

/// A [`TestEnv`] to be started; see [`TestEnv::build`].
pub struct TestEnvBuilder {
    partitions: i32,
    workspaces: Vec<String>,
    prefix: String,
    api: Option<sluice::tools::mock_api::MockApiConfig>,
    broker: Option<Broker>,
    park: bool,
    dlq: bool,
}

impl TestEnvBuilder {
    /// The source topic is named `prefix-…`.
    pub fn named(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `sluice mock-api` with these settings instead of [`recording_api`].
    pub fn api(mut self, config: sluice::tools::mock_api::MockApiConfig) -> Self {
        self.api = Some(config);
        self
    }

    /// This broker (e.g. [`Broker::real`]) instead of a fresh mock cluster.
    pub fn on(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Creates `<topic>.park` with as many partitions as the source and sets it as
    /// `kafka.park_topic` (in `setup.kafka`, which a test then extends).
    pub fn parking(mut self) -> Self {
        self.park = true;
        self
    }

    /// Creates `<topic>.dlq` (one partition) before the worker does.
    pub fn dlq(mut self) -> Self {
        self.dlq = true;
        self
    }

    /// Starts the broker and the API and creates the topics.
    pub async fn start(self) -> TestEnv {
        let broker = self.broker.unwrap_or_else(Broker::mock);
        let api = match self.api {
            Some(config) => sluice::tools::mock_api::MockApi::start(config)
                .await
                .expect("the mock API starts"),
            None => recording_api().await,
        };
        let topic = broker.fresh_topic(&self.prefix, self.partitions).await;
        let workspaces: Vec<&str> = self.workspaces.iter().map(String::as_str).collect();
        let mut setup = Setup::new(&broker.brokers(), &topic, &api.base_url(), &workspaces);
        if self.park {
            broker
                .create_topic(&format!("{topic}.park"), self.partitions)
                .await;
            setup.kafka = format!("park_topic = \"{topic}.park\"\n");
        }
        if self.dlq {
            broker.create_topic(&format!("{topic}.dlq"), 1).await;
        }
        TestEnv {
            broker,
            api,
            topic,
            setup,
        }
    }
}

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

    /// Creates a topic with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        match self {
            Broker::Mock(cluster) => cluster.create_topic(topic, partitions, 1).unwrap(),
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

/// One message to produce.
#[derive(Clone, Debug)]
pub struct Record {
    /// Kafka key (the user, so one user's events share a partition).
    pub key: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// A `workspace` header, if any (bytes: not always UTF-8).
    pub workspace_header: Option<Vec<u8>>,
}

impl Record {
    /// A JSON record keyed by `key`.
    pub fn json(key: &str, value: &Value) -> Self {
        Record {
            key: key.into(),
            payload: value.to_string().into_bytes(),
            workspace_header: None,
        }
    }
}

/// A track event with a sequence number in its properties.
pub fn track(workspace: &str, user: &str, seq: usize) -> Value {
    json!({
        "type": "track", "userId": user, "event": "Order Placed",
        "properties": {"seq": seq, "user": user},
        "messageId": format!("{workspace}-{user}-{seq}"),
        "timestamp": "2026-11-01T12:00:00Z",
        "workspace": workspace,
    })
}

/// Track events `seqs` of `workspace`, spread over `users` users named
/// `{user_prefix}{n}` and keyed by user.
pub fn tracks(
    workspace: &str,
    user_prefix: &str,
    users: usize,
    seqs: std::ops::Range<usize>,
) -> Vec<Record> {
    seqs.map(|i| {
        let user = format!("{user_prefix}{}", i % users);
        Record::json(&user, &track(workspace, &user, i))
    })
    .collect()
}

/// An identify event.
pub fn identify(workspace: &str, user: &str, seq: usize) -> Value {
    json!({
        "type": "identify", "userId": user,
        "traits": {"seq": seq, "user": user, "plan": "pro"},
        "messageId": format!("{workspace}-{user}-id-{seq}"),
        "workspace": workspace,
    })
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

/// The metadata of `group`'s committed offsets on `topic`, by partition.
pub fn committed_metadata(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, String> {
    committed_with_metadata(brokers, group, topic, partitions)
        .into_iter()
        .map(|(p, (_, metadata))| (p, metadata))
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

/// Settings a test may change from the defaults below.
#[derive(Clone)]
pub struct Setup {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group.
    pub group: String,
    /// Source topic.
    pub topic: String,
    /// The mock API's base URL.
    pub base_url: String,
    /// Workspace ids (site id = `site-<id>`).
    pub workspaces: Vec<String>,
    /// Extra TOML appended to the generated file (sections not generated below).
    pub extra: String,
    /// `[batch]` body.
    pub batch: String,
    /// `[lanes]` body.
    pub lanes: String,
    /// Extra `[kafka]` keys.
    pub kafka: String,
    /// Extra `[kafka.options]` keys.
    pub kafka_options: String,
    /// `[destination]` extra keys.
    pub destination: String,
    /// `[shutdown] drain_deadline_ms`.
    pub drain_deadline_ms: u64,
    /// `[limits]` body.
    pub limits: String,
    /// `[retry]` body.
    pub retry: String,
}

impl Setup {
    /// Defaults for a fast test.
    pub fn new(brokers: &str, topic: &str, base_url: &str, workspaces: &[&str]) -> Self {
        Setup {
            brokers: brokers.into(),
            group: unique("group"),
            topic: topic.into(),
            base_url: base_url.into(),
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
            extra: String::new(),
            batch: "max_events = 20\nlinger_ms = 20\n".into(),
            lanes: "max_in_flight = 4\n".into(),
            kafka: String::new(),
            kafka_options: String::new(),
            destination: "request_timeout_ms = 30000\n".into(),
            limits: "default_rate_limit_per_s = 1000\ndefault_burst = 20\n".into(),
            retry: "initial_backoff_ms = 20\nmax_backoff_ms = 200\n".into(),
            drain_deadline_ms: 5000,
        }
    }

    /// One event per request, sent at once: the backlog becomes that many requests.
    pub fn one_event_per_request(&mut self) {
        self.batch = "max_events = 1\nlinger_ms = 0\n".into();
    }

    /// The TOML text of this configuration.
    pub fn toml(&self) -> String {
        let mut text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
dlq_topic = "{topic}.dlq"
commit_interval_ms = 200
lag_refresh_ms = 300
{kafka}

[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
{kafka_options}

[destination]
kind = "customerio"
base_url = "{base_url}"
{destination}

[batch]
{batch}

[lanes]
{lanes}

[limits]
{limits}

[retry]
{retry}

[server]
listen = "127.0.0.1:0"

[shutdown]
drain_deadline_ms = {drain}

{extra}
"#,
            brokers = self.brokers,
            group = self.group,
            topic = self.topic,
            base_url = self.base_url,
            kafka = self.kafka,
            kafka_options = self.kafka_options,
            destination = self.destination,
            batch = self.batch,
            lanes = self.lanes,
            extra = self.extra,
            drain = self.drain_deadline_ms,
            limits = self.limits,
            retry = self.retry,
        );
        for ws in &self.workspaces {
            text.push_str(&format!(
                "\n[[workspaces]]\nid = \"{ws}\"\nsite_id = \"site-{ws}\"\napi_key_env = \"{API_KEY_ENV}\"\n"
            ));
        }
        text
    }

    /// Waits until this setup's group has committed up to the end of what `produce`
    /// reported writing (`positions`) on its topic's `partitions`.
    pub async fn wait_committed(&self, positions: &[(i32, i64)], partitions: i32) {
        let ends = produced_ends(positions, partitions);
        wait_committed_to_end(&self.brokers, &self.group, &self.topic, &ends).await;
    }

    /// The validated configuration.
    pub fn config(&self) -> Config {
        Config::from_toml(
            &self.toml(),
            "test",
            [(API_KEY_ENV.to_string(), API_KEY.to_string())],
        )
        .expect("test config is valid")
    }
}

/// A worker running in this process.
pub struct Worker {
    /// Its metrics.
    pub metrics: Metrics,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    /// Starts `sluice::pipeline::run` with `config` (its endpoints on `server.listen`).
    pub fn start(config: Config) -> Self {
        Self::launch(|metrics, stop| sluice::pipeline::run(config, metrics, stop))
    }

    /// Starts the worker with its HTTP endpoints on a free loopback port; returns the
    /// worker and `http://ADDR`.
    pub async fn start_serving(config: Config) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let worker =
            Self::launch(|metrics, stop| sluice::pipeline::run_on(listener, config, metrics, stop));
        (worker, url)
    }

    fn launch<F>(run: impl FnOnce(Metrics, CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = Result<(), sluice::pipeline::WorkerError>> + Send + 'static,
    {
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let running = run(metrics.clone(), stop.clone());
        let task = tokio::spawn(async move { running.await.expect("worker runs") });
        Worker {
            metrics,
            stop,
            task,
        }
    }

    /// Sends the shutdown signal without waiting for the drain.
    pub fn signal_stop(&self) {
        self.stop.cancel();
    }

    /// Sends the shutdown signal and waits until the worker has drained and left.
    pub async fn stop(self) -> sluice::metrics::Metrics {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("worker stops within a minute")
            .expect("worker task did not panic");
        self.metrics
    }
}

/// Polls `condition` every 50 ms until it holds, panicking with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        let headers = sluice::dlq::header_map(&m);
        out.push(Read {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// `GET {url}/metrics`, parsed as `sluice capacity report` parses it (prometheus-parse).
pub async fn scrape(url: &str) -> Snapshot {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Snapshot::parse(&text, 0.0).expect("the exposition format")
}
