//! Unit tests of [`super`].

use super::{client_config, producer_config};

/// The capacity run's generator (a producer) was given the consumer's
/// `fetch.wait.max.ms`: librdkafka warned at every start (CONFWARN), the first thing
/// the README's first command showed a new user.
#[test]
fn a_producer_gets_the_shared_options_and_none_of_the_consumers_own() {
    let mut kafka: crate::config::KafkaConfig = toml::from_str(
        "brokers = \"b:9092\"\ntopics = [\"t\"]\ngroup_id = \"g\"\ndlq_topic = \"d\"\n",
    )
    .unwrap();
    let shared = [
        "security.protocol",
        "sasl.mechanism",
        "socket.timeout.ms",
        "linger.ms",
    ];
    for key in [
        "session.timeout.ms",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "isolation.level",
        "partition.assignment.strategy",
    ]
    .into_iter()
    .chain(shared)
    {
        kafka.options.insert(key.into(), "1".into());
    }
    let (consumer, producer) = (client_config(&kafka), producer_config(&kafka));
    for key in kafka.options.keys() {
        assert!(consumer.get(key).is_some(), "the consumer lacks {key}");
        let is_shared = shared.contains(&key.as_str());
        assert_eq!(producer.get(key).is_some(), is_shared, "{key}");
    }
    assert_eq!(producer.get("bootstrap.servers"), Some("b:9092"));
}
