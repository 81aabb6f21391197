//! What every Kafka client sluice makes starts from: the brokers and pass-through
//! options of `[kafka]`, each client given only its own kind's properties, and the
//! context that turns librdkafka's log lines into sluice's ([`log::KafkaLog`]).

pub(crate) mod log;
pub mod producer;

/// A librdkafka consumer configuration for `kafka`'s brokers with its pass-through
/// `options` (SASL, TLS...): the start of every consumer sluice makes — the source, the
/// lag monitor, the parking readers and ledger, the dlq tools.
pub fn client_config(kafka: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut client = rdkafka::ClientConfig::new();
    for (key, value) in &kafka.options {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &kafka.brokers);
    client
}

/// Queued client events (errors, lines) served per [`serve_queued`] call.
const SERVED: usize = 64;

/// Serves the events queued on `consumer`, a client that is never assigned anything
/// to read while this runs (so no message is taken): its errors and lines reach its
/// context (e.g. [`log::KafkaLog`], one outage, counted) as they come, instead of
/// piling up through an outage and coming out all at once when it is dropped. One
/// poll serves one event: up to 64 a call.
pub(crate) fn serve_queued<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
) {
    for _ in 0..SERVED {
        let _ = consumer.poll(std::time::Duration::ZERO);
    }
}

/// The same for a producer or an admin client (which librdkafka makes a producer):
/// without the consumer-only options, which would draw a `CONFWARN` at every start.
pub fn producer_config(kafka: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut client = client_config(kafka);
    for key in kafka.options.keys().filter(|key| is_consumer_only(key)) {
        client.remove(key);
    }
    client
}

/// Whether librdkafka's property `key` applies to consumers only (its CONFIGURATION.md
/// marks it `C`).
fn is_consumer_only(key: &str) -> bool {
    [
        "session.",
        "heartbeat.",
        "max.poll.",
        "fetch.",
        "group.",
        "queued.",
        "enable.auto.",
        "auto.commit.",
        "coordinator.",
        "max.partition.fetch.",
        "consume.callback.",
    ]
    .iter()
    .any(|p| key.starts_with(p))
        || [
            "partition.assignment.strategy",
            "auto.offset.reset",
            "enable.partition.eof",
            "check.crcs",
            "isolation.level",
            "offset.store.method",
        ]
        .contains(&key)
}

#[cfg(test)]
mod tests;
