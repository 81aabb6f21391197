//! The broker side of the load tools: `KEY=VALUE` options, the Kafka client from
//! `--brokers` or `--config`, a topic's partition count, and creating a topic with its
//! dead-letter topic.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::client::Client;
use rdkafka::ClientContext;

use sluice_core::config::Config;

/// Parses a `KEY=VALUE` command-line value (librdkafka properties).
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

/// Where a load tool connects: `--brokers`, or a worker config's `[kafka]`.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, `HOST:PORT,…` (default: `--config`'s `kafka.brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// A worker configuration file: its `[kafka]` brokers and options (SASL, TLS…) are
    /// used (API keys are not read).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// A librdkafka producer property, `KEY=VALUE` (repeatable), e.g.
    /// `--producer-option compression.type=lz4`.
    #[arg(long = "producer-option", value_parser = parse_key_value)]
    pub producer_options: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The worker config `--config` names, if any.
    pub(crate) fn load_config(&self) -> anyhow::Result<Option<Config>> {
        Ok(self
            .config
            .as_deref()
            .map(Config::load_without_secrets)
            .transpose()?)
    }

    /// The Kafka client settings: `config`'s `[kafka]` if given, on `--brokers`
    /// (default: the config's).
    pub fn client(&self, config: Option<&Config>) -> anyhow::Result<rdkafka::ClientConfig> {
        let mut client = match config {
            Some(c) => sluice_core::kafka::client_config(&c.kafka),
            None => rdkafka::ClientConfig::new(),
        };
        let brokers = self
            .brokers
            .clone()
            .or_else(|| config.map(|c| c.kafka.brokers.clone()))
            .ok_or_else(|| anyhow::anyhow!("give --brokers (or --config)"))?;
        client.set("bootstrap.servers", brokers);
        Ok(client)
    }

    /// Sets the `--producer-option`s on a producer's `client` (over whatever it
    /// already holds; settings a tool makes afterwards win).
    pub(crate) fn set_producer_options(&self, client: &mut rdkafka::ClientConfig) {
        for (k, v) in &self.producer_options {
            client.set(k, v);
        }
    }
}

/// The partitions of `topic` (0 when it does not exist).
pub(crate) fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> anyhow::Result<usize> {
    Ok(client
        .fetch_metadata(Some(topic), Duration::from_secs(15))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()))
}

/// Creates `topic` with `partitions` partitions and `TOPIC.dlq` with one, on the
/// brokers `client` names; topics that exist already are left as they are.
pub(crate) async fn create_topics(
    client: &rdkafka::ClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client.create()?;
    let dlq = format!("{topic}.dlq");
    let topics = [
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        NewTopic::new(&dlq, 1, TopicReplication::Fixed(1)),
    ];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("creating {t}: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_values_parse_and_bad_ones_are_refused() {
        assert_eq!(
            super::parse_key_value("compression.type = lz4").unwrap(),
            ("compression.type".into(), "lz4".into())
        );
        assert!(super::parse_key_value("nokey").is_err());
        assert!(super::parse_key_value("=v").is_err());
    }
}
