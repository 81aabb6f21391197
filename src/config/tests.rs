//! Loading, overrides, validation and masking, as a user meets them.

use super::*;

const MINIMAL: &str = r#"
[kafka]
brokers = "localhost:9092"
group_id = "sluice"
topics = ["events"]
dlq_topic = "events.dlq"

[destination]
kind = "customerio"

[[workspaces]]
id = "acme"
site_id = "site-1"
api_key_env = "ACME_KEY"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::from_toml(MINIMAL, "t", env(&[("ACME_KEY", "k")])).unwrap();
    assert_eq!(c.batch.max_events, 100);
    assert_eq!(c.batch.max_bytes, 500_000);
    assert_eq!(c.lanes.ordering, Ordering::PerUser);
    assert_eq!(c.destination.api, ApiMode::Batch);
    assert_eq!(c.workspaces[0].api_key.expose(), "k");
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("group_id", "groupid = \"x\"\ngroup_id");
    let err = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("kafka") && msg.contains("groupid"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn missing_api_key_variable_is_named() {
    let err = Config::from_toml(MINIMAL, "t", env(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("workspaces[0].api_key_env") && msg.contains("ACME_KEY"),
        "{msg}"
    );
}

#[test]
fn env_overrides_scalars_lists_and_array_entries() {
    let c = Config::from_toml(
        MINIMAL,
        "t",
        env(&[
            ("ACME_KEY", "k"),
            ("SLUICE__KAFKA__BROKERS", "b1:9092,b2:9092"),
            ("SLUICE__KAFKA__TOPICS", "a, b"),
            ("SLUICE__BATCH__MAX_EVENTS", "7"),
            ("SLUICE__WORKSPACES__0__SITE_ID", "site-2"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.brokers, "b1:9092,b2:9092");
    assert_eq!(c.kafka.topics, vec!["a", "b"]);
    assert_eq!(c.batch.max_events, 7);
    assert_eq!(c.workspaces[0].site_id, "site-2");
}

#[test]
fn impossible_values_are_refused() {
    let text = format!("{MINIMAL}\n[batch]\nmax_bytes = 600000\n");
    let err = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    assert!(err.to_string().contains("batch.max_bytes"), "{err}");

    let err = Config::from_toml(
        MINIMAL,
        "t",
        env(&[("ACME_KEY", "k"), ("SLUICE__BATCH__MAX_EVENTS", "lots")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("batch.max_events"), "{err}");
}

#[test]
fn masked_output_hides_credentials() {
    let text = MINIMAL.replace(
        "[destination]",
        "[kafka.options]\n\"sasl.password\" = \"hunter2\"\n\n[destination]",
    );
    let c = Config::from_toml(&text, "t", env(&[("ACME_KEY", "topsecret")])).unwrap();
    let shown = c.to_masked_toml();
    assert!(
        !shown.contains("hunter2") && !shown.contains("topsecret"),
        "{shown}"
    );
    assert!(shown.contains("sasl.password"));
    assert!(!format!("{c:?}").contains("topsecret"));
}

#[test]
fn the_limit_is_shared_by_partitions_unless_told_otherwise() {
    let c = Config::from_toml(MINIMAL, "t", env(&[("ACME_KEY", "k")])).unwrap();
    assert_eq!(c.limits.mode, LimitMode::PartitionShare);
    let redis = format!("{MINIMAL}\n[limits]\nmode = \"redis\"\n");
    let err = Config::from_toml(&redis, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    assert!(err.to_string().contains("limits.redis_url"), "{err}");
    let bad = format!("{MINIMAL}\n[limits]\nmode = \"redis\"\nredis_url = \"http://x\"\n");
    let err = Config::from_toml(&bad, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    assert!(err.to_string().contains("redis://"), "{err}");
    let ok = format!("{MINIMAL}\n[limits]\nmode = \"redis\"\nredis_url = \"redis://r:6379/0\"\n");
    let c = Config::from_toml(&ok, "t", env(&[("ACME_KEY", "k")])).unwrap();
    assert_eq!(c.limits.mode, LimitMode::Redis);
}

#[test]
fn one_site_listed_twice_is_refused() {
    let text = format!(
        "{MINIMAL}\n[[workspaces]]\nid = \"acme-eu\"\nsite_id = \"site-1\"\napi_key_env = \"ACME_KEY\"\n"
    );
    let err = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("workspaces[1].site_id") && msg.contains("acme"),
        "{msg}"
    );
}
