//! The group consumer's librdkafka settings: what sluice needs of them (offsets it
//! commits itself, static membership) and the prefetch defaults its throughput rests on.

use crate::config::{KafkaConfig, OffsetReset};

/// librdkafka's prefetch is `kafka.max_buffered_bytes` ÷ this, unless set.
const PREFETCH_SHARE: usize = 16;

/// How long librdkafka waits to fetch again for a partition whose prefetch was full.
const FETCH_QUEUE_BACKOFF_MS: u64 = 20;

/// A static member's session, unless set: how long the partitions of a member that
/// stopped for good (a pod replaced under a new name: it does not leave the group) stay
/// idle before the group hands them on. A member restarted under its name rejoins at
/// once whatever its session. (librdkafka's default, 45 s, is for dynamic members,
/// which leave the group when they stop.)
const STATIC_SESSION_MS: u64 = 10_000;

/// The group consumer's librdkafka settings: the shared ones, the group, offsets
/// committed by sluice only, and the prefetch and assignment defaults.
pub(super) fn group_client_config(k: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut client = super::client_config(k);
    client
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            match k.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            },
        );
    if let Some(id) = &k.group_instance_id {
        // Only the group's consumer: the lag monitor and park reader assign, never join.
        client.set("group.instance.id", id);
        if !k.options.contains_key("session.timeout.ms") {
            client.set("session.timeout.ms", STATIC_SESSION_MS.to_string());
        }
    }
    if !k.options.contains_key("queued.max.messages.kbytes") {
        // librdkafka's prefetch, outside the buffer's count: a sixteenth of its bytes
        // (4 MiB at the default), enough for a fetch round trip at 100 000+ events/s.
        // librdkafka holds ~4× this in fetch buffers and per-message overhead, so a
        // quarter (as before) cost ~60 MB of resident memory and bought no speed.
        let kbytes = (k.max_buffered_bytes / PREFETCH_SHARE / 1024).clamp(1, 2_097_151);
        client.set("queued.max.messages.kbytes", kbytes.to_string());
    }
    if !k.options.contains_key("fetch.queue.backoff.ms") {
        // librdkafka's default (1 s) idles a partition whose prefetch queue was full
        // for a whole second after it drains: at 80 000 events/s a 16 MiB prefetch
        // empties in half that, and the worker waits (scripts/bench-peers.sh:
        // ~80 000 → ~110 000 events/s with 20 ms).
        client.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string());
    }
    if !k.options.contains_key("partition.assignment.strategy") {
        client.set("partition.assignment.strategy", "cooperative-sticky");
    }
    client
}

#[cfg(test)]
mod tests {
    use super::group_client_config;
    use crate::config::Config;

    fn kafka(extra: &str) -> crate::config::KafkaConfig {
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
             dlq_topic = \"t.dlq\"\n{extra}\n[destination]\nkind = \"customerio\"\n\
             [[workspaces]]\nid = \"w\"\nsite_id = \"s\"\napi_key_env = \"K\"\n"
        );
        let env = [("K".to_string(), "k".to_string())];
        Config::from_toml(&text, "t", env).unwrap().kafka
    }

    #[test]
    fn the_prefetch_is_small_and_refilled_soon_after_it_was_full() {
        let client = group_client_config(&kafka(""));
        // 64 MiB of buffer: a 4 MiB prefetch, fetched again 20 ms after it was full.
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        let sized = group_client_config(&kafka("max_buffered_bytes = 16777216\n"));
        assert_eq!(sized.get("queued.max.messages.kbytes"), Some("1024"));
    }

    #[test]
    fn a_static_member_gets_a_short_session_unless_the_operator_sets_one() {
        let dynamic = group_client_config(&kafka(""));
        assert_eq!(dynamic.get("group.instance.id"), None);
        assert_eq!(dynamic.get("session.timeout.ms"), None, "librdkafka's 45 s");
        let named = group_client_config(&kafka("group_instance_id = \"sluice-0\"\n"));
        assert_eq!(named.get("group.instance.id"), Some("sluice-0"));
        assert_eq!(named.get("session.timeout.ms"), Some("10000"));
        let set = group_client_config(&kafka(
            "group_instance_id = \"sluice-0\"\n[kafka.options]\n\"session.timeout.ms\" = \"30000\"\n",
        ));
        assert_eq!(set.get("session.timeout.ms"), Some("30000"));
    }

    #[test]
    fn the_operators_own_librdkafka_settings_win() {
        let k = kafka(
            "[kafka.options]\n\"queued.max.messages.kbytes\" = \"65536\"\n\
             \"fetch.queue.backoff.ms\" = \"1000\"\n",
        );
        let client = group_client_config(&k);
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("65536"));
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("1000"));
    }
}
