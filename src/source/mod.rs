//! The source: the Kafka consumer, and the record of which offsets may be committed.

mod back_pressure;
mod books;
mod buffered;
mod consumer;
mod context;
mod detach;
mod group_config;
pub(crate) mod kafka_log;
mod lag;
mod offsets;
mod partition_counts;

pub use books::{Books, Entry};
pub use buffered::Buffered;
pub(crate) use consumer::SourceParking;
pub use consumer::{Source, SourceError};
pub use lag::{Assigned, LagMonitor};
pub use offsets::{OffsetTracker, TopicPartition};

/// A librdkafka consumer configuration for `kafka`'s brokers with its pass-through
/// `options` (SASL, TLS...): the start of every consumer sluice makes — the source, the
/// lag monitor, the parking readers and ledger, the dlq tools.
pub(crate) fn client_config(kafka: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut client = rdkafka::ClientConfig::new();
    for (key, value) in &kafka.options {
        client.set(key, value);
    }
    client.set("bootstrap.servers", &kafka.brokers);
    client
}

/// The same for a producer or an admin client (which librdkafka makes a producer):
/// without the consumer-only options, which would draw a `CONFWARN` at every start.
pub(crate) fn producer_config(kafka: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
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

/// Where one event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its topic and partition.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
}

impl Raw {
    /// Its key and payload bytes.
    pub(crate) fn held_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// The message as it arrived, kept for the dead-letter topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    /// The Kafka key.
    pub key: Option<Vec<u8>>,
    /// The payload bytes.
    pub payload: Option<Vec<u8>>,
    /// How many times `sluice dlq redrive` has sent it back (0 for a fresh event).
    pub redrive_count: u32,
    /// Its `sluice.replay` header, when `sluice replay` wrote it (replayed traffic,
    /// told apart in dead letters and redrives).
    pub replay: Option<String>,
    /// When the event entered Kafka, unix µs: `sluice loadgen`'s scheduled send time
    /// (`sluice.due`) if present, else the record's timestamp; for the delivery
    /// latency (entered → accepted by the API).
    pub entered_us: Option<i64>,
    /// Where it was first written, `TOPIC:PARTITION:OFFSET` (see [`first_written`]).
    pub first_written: String,
}

/// Where a record was first written, `TOPIC:PARTITION:OFFSET`, which the ids of events
/// without a `messageId` derive from: what a parked copy, dead letter or redrive
/// carries (`sluice.first_written`), else the record a replay copied (`sluice.replay`,
/// `RUN:TOPIC:PARTITION:OFFSET`), else the record itself.
pub fn first_written(own: (&str, i32, i64), header: impl Fn(&str) -> Option<String>) -> String {
    use crate::dlq::headers;
    if let Some(first) = header(headers::FIRST_WRITTEN) {
        return first;
    }
    if let Some(replayed) = header(headers::REPLAY) {
        if let Some((_run, place)) = replayed.split_once(':') {
            return place.to_string();
        }
    }
    format!("{}:{}:{}", own.0, own.1, own.2)
}

#[cfg(test)]
mod tests {
    use super::first_written;
    use crate::dlq::headers;

    #[test]
    fn a_copy_keeps_the_place_its_event_was_first_written() {
        let none = |_: &str| None;
        assert_eq!(first_written(("t", 1, 7), none), "t:1:7");
        let replayed = |h: &str| (h == headers::REPLAY).then(|| "RUN1:src:3:42".to_string());
        assert_eq!(first_written(("copy", 0, 9), replayed), "src:3:42");
        // A parked copy or a redrive of a replayed event: what it carries wins.
        let carried = |h: &str| match h {
            headers::FIRST_WRITTEN => Some("src:3:42".to_string()),
            headers::REPLAY => Some("RUN1:other:0:1".to_string()),
            _ => None,
        };
        assert_eq!(first_written(("park", 5, 100), carried), "src:3:42");
    }

    proptest::proptest! {
        /// Hostile `sluice.first_written` and `sluice.replay` headers (any text,
        /// colons or none) never panic, and a record's own place is used when they
        /// say nothing usable.
        #[test]
        fn any_sluice_header_gives_a_first_written_place(
            first in proptest::option::of("\\PC{0,30}"),
            replay in proptest::option::of("\\PC{0,30}"),
            partition in proptest::prelude::any::<i32>(),
            offset in proptest::prelude::any::<i64>(),
        ) {
            let header = |h: &str| match h {
                crate::dlq::headers::FIRST_WRITTEN => first.clone(),
                crate::dlq::headers::REPLAY => replay.clone(),
                _ => None,
            };
            let place = first_written(("t", partition, offset), header);
            match (&first, replay.as_deref().and_then(|r| r.split_once(':'))) {
                (Some(f), _) => proptest::prop_assert_eq!(&place, f),
                (None, Some((_, p))) => proptest::prop_assert_eq!(place, p),
                (None, None) => proptest::prop_assert_eq!(place, format!("t:{partition}:{offset}")),
            }
        }
    }

    /// The capacity run's generator (a producer) was given the consumer's
    /// `fetch.wait.max.ms`: librdkafka warned at every start (CONFWARN), the first thing
    /// the README's first command showed a new user.
    #[test]
    fn a_producer_gets_the_shared_options_and_none_of_the_consumers_own() {
        use super::{client_config, producer_config};
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
}
