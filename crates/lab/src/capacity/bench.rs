//! What a capacity run runs on: the broker (librdkafka's mock cluster, or real brokers)
//! and the run's topic, and the embedded worker configuration.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::report::Environment;
use super::run_args::RunArgs;
use sluice_core::config::Config;

/// The API key the embedded worker sends (the embedded API accepts any).
const EMBEDDED_KEY: (&str, &str) = ("SLUICE_CAPACITY_API_KEY", "capacity-key");

/// The broker of a run.
pub(super) enum Broker {
    Embedded(MockCluster<'static, DefaultProducerContext>),
    Real(String),
}

impl Broker {
    pub(super) fn bootstrap(&self) -> String {
        match self {
            Broker::Embedded(c) => c.bootstrap_servers(),
            Broker::Real(b) => b.clone(),
        }
    }
}

/// The broker and topic of a run, with `config` pointed at them.
pub(super) struct Bench {
    pub broker: Broker,
    pub topic: String,
    /// Partitions created for the run (0: an existing topic, not counted).
    pub partitions: i32,
    /// The topic was created for this run (else only what it produces is read).
    pub fresh_topic: bool,
}

impl Bench {
    /// The embedded mock cluster, or `--brokers` (or the config's); the run's topic
    /// created unless `--topic` names one; the worker's `[kafka]` set to them.
    pub(super) async fn set_up(
        args: &RunArgs,
        run_id: &str,
        config: &mut Config,
    ) -> anyhow::Result<Bench> {
        let brokers = args
            .brokers
            .clone()
            .or_else(|| args.config.as_ref().map(|_| config.kafka.brokers.clone()));
        let broker = match brokers {
            Some(b) => Broker::Real(b),
            None => Broker::Embedded(MockCluster::new(1)?),
        };
        let fresh_topic = args.topic.is_none();
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| format!("sluice-capacity-{}", run_id.to_lowercase()));
        let partitions = match &broker {
            Broker::Embedded(c) => {
                c.create_topic(&topic, args.partitions, 1)?;
                c.create_topic(&format!("{topic}.dlq"), 1, 1)?;
                // The mock cluster has no admin API to create it with the source's
                // partitions; a real broker's is created by the worker.
                c.create_topic(&format!("{topic}.park"), args.partitions, 1)?;
                args.partitions
            }
            Broker::Real(b) if fresh_topic => {
                let mut client = sluice_core::kafka::producer_config(&config.kafka);
                client.set("bootstrap.servers", b);
                crate::broker::create_topics(&client, &topic, args.partitions).await?;
                args.partitions
            }
            Broker::Real(_) => 0,
        };
        config.kafka.brokers = broker.bootstrap();
        if matches!(broker, Broker::Embedded(_)) {
            // The mock cluster answers a fetch only when fetch.wait.max.ms runs out, not
            // when data arrives as a real broker does: keep that wait out of the latency.
            config
                .kafka
                .options
                .insert("fetch.wait.max.ms".into(), "5".into());
        }
        config.kafka.topics = vec![topic.clone()];
        config.kafka.dlq_topic = format!("{topic}.dlq");
        // The parking topic the worker derives, `<topic>.park`.
        config.kafka.park_topic = None;
        config.kafka.group_id = format!("sluice-capacity-{run_id}");
        if !fresh_topic {
            // An existing topic may hold old events: load only what this run produces.
            config.kafka.auto_offset_reset = sluice_core::config::OffsetReset::Latest;
        }
        Ok(Bench {
            broker,
            topic,
            partitions,
            fresh_topic,
        })
    }

    pub(super) fn embedded(&self) -> bool {
        matches!(self.broker, Broker::Embedded(_))
    }

    /// What the report says the run ran on.
    pub(super) fn environment(
        &self,
        args: &RunArgs,
        config: &Config,
        api_limit: u32,
        max_partition_backlog_bytes: Option<u64>,
    ) -> Environment {
        Environment {
            embedded_broker: self.embedded(),
            embedded_api: args.api_url.is_none(),
            brokers: if self.embedded() {
                "embedded (librdkafka mock cluster)".into()
            } else {
                self.broker.bootstrap()
            },
            api: args.api_url.clone().unwrap_or_else(|| {
                format!(
                    "embedded sluice mock-api (limit {api_limit} requests/s, latency {:?})",
                    args.api_latency
                )
            }),
            topic: self.topic.clone(),
            partitions: self.partitions,
            max_partition_backlog_bytes,
            in_flight_window: (config.lanes.max_in_flight * config.workspaces.len())
                .min(config.limits.max_in_flight_total) as f64,
            batch_max_events: config.batch.max_events,
            linger_ms: config.batch.linger_ms.ms(),
            max_in_flight: config.lanes.max_in_flight,
            workspaces: config.workspaces.iter().map(|w| w.id.clone()).collect(),
        }
    }
}

/// The worker configuration of an embedded run: the shipped defaults, one workspace
/// whose limit is the embedded API's (`0`: unlimited, so the worker's own limiter does
/// not stand in for the API's).
pub(super) fn embedded_config(limit_per_s: u32) -> anyhow::Result<Config> {
    let rate = match limit_per_s {
        0 => "rate_limit_per_s = 1000000\n".to_string(),
        n => format!("rate_limit_per_s = {n}\n"),
    };
    let text = format!(
        r#"[kafka]
brokers = "set-below"
group_id = "set-below"
topics = ["set-below"]
dlq_topic = "set-below.dlq"

[destination]
kind = "customerio"

[[workspaces]]
id = "local"
site_id = "capacity-site"
api_key_env = "{}"
{rate}
[server]
listen = "127.0.0.1:0"
"#,
        EMBEDDED_KEY.0
    );
    Ok(Config::from_toml(
        &text,
        "the embedded capacity config",
        [(EMBEDDED_KEY.0.to_string(), EMBEDDED_KEY.1.to_string())],
    )?)
}
