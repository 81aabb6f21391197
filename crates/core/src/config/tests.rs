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
fn a_section_given_in_part_keeps_the_defaults_of_the_rest() {
    let text = format!(
        "{MINIMAL}\n[batch]\nmax_events = 7\n[retry]\nmax_attempts = 3\n[limits]\nheadroom = 0.9\n[shutdown]\n"
    );
    let c = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap();
    assert_eq!(c.batch.max_events, 7);
    assert_eq!(c.batch.linger_ms, BatchConfig::default().linger_ms);
    assert_eq!(c.batch.max_bytes, BatchConfig::default().max_bytes);
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(
        c.retry.max_backoff_ms,
        RetryConfig::default().max_backoff_ms
    );
    assert_eq!(c.limits.headroom, 0.9);
    assert_eq!(
        c.limits.default_burst,
        LimitsConfig::default().default_burst
    );
    assert_eq!(
        c.shutdown.drain_deadline_ms,
        ShutdownConfig::default().drain_deadline_ms
    );
    assert_eq!(c.server.listen, ServerConfig::default().listen);
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::from_toml(MINIMAL, "t", env(&[("ACME_KEY", "k")])).unwrap();
    assert_eq!(c.batch.max_events, 500);
    assert_eq!(c.batch.max_bytes, 500_000);
    assert_eq!(c.lanes.max_in_flight, 8);
    assert_eq!(
        (c.kafka.max_buffered_events, c.kafka.resume_buffered()),
        (25_000, 12_500)
    );
    assert_eq!(c.kafka.max_buffered_bytes, 64 << 20);
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
fn env_override_values_keep_the_type_the_key_wants() {
    let c = Config::from_toml(
        MINIMAL,
        "t",
        env(&[
            ("ACME_KEY", "k"),
            // Digits for a string key stay a string; quotes are kept.
            ("SLUICE__KAFKA__GROUP_ID", "12345"),
            ("SLUICE__KAFKA__DLQ_TOPIC", "\"quoted\""),
            ("SLUICE__KAFKA__OPTIONS__SASL__PASSWORD", "0042"),
            ("SLUICE__KAFKA__OPTIONS__SASL.USERNAME", "true"),
            // Numbers and booleans still set the keys that take them.
            ("SLUICE__BATCH__MAX_EVENTS", "7"),
            ("SLUICE__WORKSPACES__0__RATE_LIMIT_PER_S", "12.5"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.group_id, "12345");
    assert_eq!(c.kafka.dlq_topic, "\"quoted\"");
    assert_eq!(c.kafka.options["sasl.password"], "0042");
    assert_eq!(c.kafka.options["sasl.username"], "true");
    assert_eq!(c.batch.max_events, 7);
    assert_eq!(c.workspaces[0].rate_limit_per_s, Some(12.5));
}

#[test]
fn credentials_are_masked_by_name() {
    for key in [
        "sasl.password",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.key",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
    ] {
        assert!(is_secret_option(key), "{key} is a credential");
    }
    for key in ["bootstrap.servers", "ssl.ca.location", "security.protocol"] {
        assert!(!is_secret_option(key), "{key} is not a credential");
    }
}

#[test]
fn rates_the_limiter_cannot_pace_are_refused() {
    for (key, value) in [
        ("SLUICE__LIMITS__DEFAULT_RATE_LIMIT_PER_S", "1e-300"),
        ("SLUICE__LIMITS__DEFAULT_RATE_LIMIT_PER_S", "0"),
        ("SLUICE__LIMITS__DEFAULT_RATE_LIMIT_PER_S", "1e20"),
        ("SLUICE__WORKSPACES__0__RATE_LIMIT_PER_S", "-1"),
        ("SLUICE__WORKSPACES__0__RATE_LIMIT_PER_S", "nan"),
    ] {
        let err = Config::from_toml(MINIMAL, "t", env(&[("ACME_KEY", "k"), (key, value)]))
            .expect_err(value);
        assert!(
            err.to_string().contains("requests a second between"),
            "{err}"
        );
    }
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
fn a_redis_ca_file_must_be_a_readable_pem_for_a_rediss_url() {
    let with = |url: &str, ca: &str| {
        format!("{MINIMAL}\n[limits]\nmode = \"redis\"\nredis_url = \"{url}\"\nredis_ca_file = \"{ca}\"\n")
    };
    let check = |text: String| Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")]));
    let dir = tempfile::tempdir().unwrap();
    let (pem, junk) = (dir.path().join("ca.pem"), dir.path().join("junk"));
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(&junk, "not a certificate").unwrap();
    // Cut short (no END line), or only a key: the marker is there, no certificate is.
    let truncated = dir.path().join("truncated.pem");
    std::fs::write(&truncated, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let key_only = dir.path().join("key.pem");
    std::fs::write(
        &key_only,
        "# -----BEGIN CERTIFICATE----- goes below\n-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (truncated, key_only) = (
        truncated.display().to_string(),
        key_only.display().to_string(),
    );
    let (pem, junk) = (pem.display().to_string(), junk.display().to_string());
    assert!(check(with("rediss://r:6380/0", &pem)).is_ok());
    for (url, ca, says) in [
        ("redis://r:6379/0", pem.as_str(), "rediss://"),
        ("rediss://r:6380/0", junk.as_str(), "no PEM certificate"),
        ("rediss://r:6380/0", truncated.as_str(), "PEM"),
        ("rediss://r:6380/0", key_only.as_str(), "no PEM certificate"),
        (
            "rediss://r:6380/0",
            "/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
    ] {
        let err = check(with(url, ca)).unwrap_err().to_string();
        assert!(
            err.contains("limits.redis_ca_file") && err.contains(says),
            "{err}"
        );
    }
    let without_url = format!("{MINIMAL}\n[limits]\nredis_ca_file = \"{pem}\"\n");
    let err = check(without_url).unwrap_err().to_string();
    assert!(
        err.contains("limits.redis_ca_file") && err.contains("none is set"),
        "{err}"
    );
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

#[test]
fn every_setting_is_documented_in_the_shipped_example() {
    // config/sluice.toml is the reference users copy: every key the worker reads must
    // appear there (set, or commented out) in its section. (Keys unset by default, the
    // `Option`s, serialize to nothing and are not checked here.)
    let text = include_str!("../../../../config/sluice.toml");
    let keys = [("SLUICE_ACME_API_KEY", "k"), ("SLUICE_GLOBEX_API_KEY", "k")];
    let c = Config::from_toml(text, "sluice.toml", env(&keys)).expect("the example parses");
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let bare = line.trim_start_matches('#').trim();
        let header = bare.strip_prefix('[').map(|b| b.trim_matches(['[', ']']));
        match header {
            Some(name) if !name.is_empty() && !name.contains([' ', ',']) => {
                current = name.to_string()
            }
            _ => sections
                .entry(current.clone())
                .or_default()
                .push(bare.to_string()),
        }
    }
    let documented = |section: &str, key: &str| {
        sections
            .get(section)
            .is_some_and(|lines| lines.iter().any(|l| l.starts_with(&format!("{key} ="))))
    };
    let mut missing = Vec::new();
    for (section, body) in toml::Value::try_from(&c).unwrap().as_table().unwrap() {
        let tables: Vec<&toml::Table> = match body {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(items) => items.iter().filter_map(|i| i.as_table()).collect(),
            _ => continue,
        };
        for table in tables {
            // Sub-tables (kafka.options) hold librdkafka's own properties.
            for (key, _) in table.iter().filter(|(_, v)| !v.is_table()) {
                if !documented(section, key) {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
    }
    missing.dedup();
    assert!(missing.is_empty(), "not in config/sluice.toml: {missing:?}");
}

#[test]
fn a_stable_replica_name_turns_on_static_membership() {
    let c = Config::from_toml(
        MINIMAL,
        "t",
        env(&[
            ("ACME_KEY", "k"),
            ("SLUICE__KAFKA__GROUP_INSTANCE_ID", "sluice-0"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka.group_instance_id.as_deref(), Some("sluice-0"));
    assert_eq!(
        Config::from_toml(MINIMAL, "t", env(&[("ACME_KEY", "k")]))
            .unwrap()
            .kafka
            .group_instance_id,
        None
    );

    for bad in ["", "pod/0", "pod 0"] {
        let err = Config::from_toml(
            MINIMAL,
            "t",
            env(&[("ACME_KEY", "k"), ("SLUICE__KAFKA__GROUP_INSTANCE_ID", bad)]),
        )
        .expect_err(bad);
        assert!(err.to_string().contains("kafka.group_instance_id"), "{err}");
    }
    let text = MINIMAL.replace(
        "\n[destination]",
        "\n[kafka.options]\n\"group.instance.id\" = \"a\"\n\n[destination]",
    );
    let err = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
    assert!(err.to_string().contains("kafka.group_instance_id"), "{err}");
}

#[test]
fn durations_take_milliseconds_or_a_unit_and_print_as_milliseconds() {
    let text = format!(
        "{MINIMAL}\n[batch]\nlinger_ms = \"1s 500ms\"\n[retry]\ninitial_backoff_ms = 250\nmax_backoff_ms = \"2m\"\n"
    );
    let c = Config::from_toml(
        &text,
        "t",
        env(&[
            ("ACME_KEY", "k"),
            ("SLUICE__SHUTDOWN__DRAIN_DEADLINE_MS", "30s"),
        ]),
    )
    .unwrap();
    assert_eq!(c.batch.linger_ms.duration(), Duration::from_millis(1_500));
    assert_eq!(c.retry.initial_backoff_ms.ms(), 250);
    assert_eq!(c.retry.max_backoff_ms.duration(), Duration::from_secs(120));
    assert_eq!(
        c.shutdown.drain_deadline_ms.duration(),
        Duration::from_secs(30)
    );
    let shown = c.to_masked_toml();
    assert!(shown.contains("linger_ms = 1500\n"), "{shown}");
    assert!(shown.contains("drain_deadline_ms = 30000\n"), "{shown}");
}

#[test]
fn a_duration_that_is_not_one_is_named_with_an_example() {
    for bad in ["\"soon\"", "-5", "\"5 parsecs\"", "\"1500us\""] {
        let text = format!("{MINIMAL}\n[batch]\nlinger_ms = {bad}\n");
        let err = Config::from_toml(&text, "t", env(&[("ACME_KEY", "k")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("batch.linger_ms"), "{bad}: {msg}");
        assert!(
            msg.contains("\"5s\"") || msg.contains("negative") || msg.contains("whole"),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn parking_is_on_by_default_beside_the_source_topic() {
    let keys = env(&[("ACME_KEY", "k")]);
    let minimal = Config::from_toml(MINIMAL, "t", keys.clone()).unwrap();
    assert_eq!(minimal.parking_topic().as_deref(), Some("events.park"));
    let named = MINIMAL.replace("dlq_topic", "park_topic = \"waiting\"\ndlq_topic");
    let named = Config::from_toml(&named, "t", keys.clone()).unwrap();
    assert_eq!(named.parking_topic().as_deref(), Some("waiting"));
    let off = MINIMAL.replace("dlq_topic", "park_topic = \"\"\ndlq_topic");
    let off = Config::from_toml(&off, "t", keys.clone()).unwrap();
    assert_eq!(off.parking_topic(), None);
    // Two source topics would share one parking partition per number: name it or none.
    let two = MINIMAL.replace(r#"topics = ["events"]"#, r#"topics = ["events", "more"]"#);
    let two = Config::from_toml(&two, "t", keys.clone()).unwrap();
    assert_eq!(two.parking_topic(), None);
    // The parking topic must not be a source topic (events would loop).
    let looped = MINIMAL.replace("dlq_topic", "park_topic = \"events\"\ndlq_topic");
    let err = Config::from_toml(&looped, "t", keys)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kafka.park_topic"), "{err}");
}

proptest::proptest! {
    /// A config file is input too: any text, or the minimal config with any line
    /// replaced by anything, is loaded or refused with an error naming the problem —
    /// never a panic — and a secret on a broken line never appears in the error.
    #[test]
    fn any_config_text_is_loaded_or_refused_without_panic_or_secret(
        text in "\\PC{0,200}",
        line in 0usize..20,
        replacement in "\\PC{0,60}|[a-z_.]{1,20} = .{0,30}|\\[[a-z_]{1,12}\\]",
    ) {
        let env = || env(&[("ACME_KEY", "k")]);
        let _ = Config::from_toml(&text, "t", env());
        let mut lines: Vec<String> = MINIMAL.lines().map(str::to_string).collect();
        let at = line % lines.len();
        lines[at] = replacement.clone();
        lines.push("[kafka.options]".into());
        lines.push("\"sasl.password\" = \"SEKRIT-MARKER\" x".into());
        let broken = lines.join("\n");
        if let Err(e) = Config::from_toml(&broken, "t", env()) {
            proptest::prop_assert!(!e.to_string().contains("SEKRIT-MARKER"), "{}", e);
        }
    }
}

const SEGMENT: &str = r#"
[kafka]
brokers = "localhost:9092"
group_id = "sluice"
topics = ["events"]
dlq_topic = "events.dlq"

[destination]
kind = "segment"

[[workspaces]]
id = "acme"
write_key_env = "ACME_WRITE_KEY"
"#;

#[test]
fn a_segment_workspace_needs_only_its_write_key_and_is_limited_under_its_id() {
    let c = Config::from_toml(SEGMENT, "t", env(&[("ACME_WRITE_KEY", "wk")])).unwrap();
    assert_eq!(c.destination.kind, DestinationKind::Segment);
    assert_eq!(c.workspaces[0].site_id, "acme");
    assert_eq!(c.workspaces[0].api_key.expose(), "wk");
    let pipelines = SEGMENT.replace("\"segment\"", "\"customerio_pipelines\"");
    let c = Config::from_toml(&pipelines, "t", env(&[("ACME_WRITE_KEY", "wk")])).unwrap();
    assert_eq!(c.destination.kind, DestinationKind::CustomerioPipelines);
}

#[test]
fn each_kind_names_the_key_it_is_missing_or_does_not_use() {
    let err = |text: &str| {
        Config::from_toml(
            text,
            "t",
            env(&[("ACME_KEY", "k"), ("ACME_WRITE_KEY", "wk")]),
        )
        .unwrap_err()
        .to_string()
    };
    // Unset, or set but empty in the environment.
    let e = Config::from_toml(SEGMENT, "t", env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("workspaces[0].write_key_env") && e.contains("ACME_WRITE_KEY"),
        "{e}"
    );
    let no_key = SEGMENT.replace("write_key_env = \"ACME_WRITE_KEY\"\n", "");
    assert!(
        err(&no_key).contains("workspaces[0].write_key_env"),
        "{}",
        err(&no_key)
    );
    let both = SEGMENT.replace("write_key_env", "api_key_env = \"ACME_KEY\"\nwrite_key_env");
    let e = err(&both);
    assert!(
        e.contains("workspaces[0].api_key_env") && e.contains("is not used"),
        "{e}"
    );
    let cio_with_write_key = MINIMAL.replace("api_key_env", "write_key_env = \"W\"\napi_key_env");
    let e = err(&cio_with_write_key);
    assert!(
        e.contains("workspaces[0].write_key_env") && e.contains("is not used"),
        "{e}"
    );
    let cio_without_key = MINIMAL.replace("api_key_env = \"ACME_KEY\"\n", "");
    assert!(err(&cio_without_key).contains("workspaces[0].api_key_env"));
}

#[test]
fn segment_batches_are_held_to_its_limits() {
    let e = |extra: &str| {
        Config::from_toml(
            &format!("{SEGMENT}{extra}"),
            "t",
            env(&[("ACME_WRITE_KEY", "wk")]),
        )
        .unwrap_err()
        .to_string()
    };
    assert!(e("\n[batch]\nmax_events = 2501\n").contains("batch.max_events"));
    let single = SEGMENT.replace("kind = \"segment\"", "kind = \"segment\"\napi = \"single\"");
    let err = Config::from_toml(&single, "t", env(&[("ACME_WRITE_KEY", "wk")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("destination.api"), "{err}");
}

#[test]
fn a_workspace_sends_to_the_destination_it_names_with_that_kinds_key() {
    let text = format!(
        "{MINIMAL}\n[destinations.events]\nkind = \"segment\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [[workspaces]]\nid = \"shop\"\ndestination = \"events\"\nwrite_key_env = \"SHOP_WRITE_KEY\"\n"
    );
    let c = Config::from_toml(
        &text,
        "t",
        env(&[("ACME_KEY", "k"), ("SHOP_WRITE_KEY", "wk")]),
    )
    .unwrap();
    assert_eq!(
        c.destination_of(&c.workspaces[0]).kind,
        DestinationKind::Customerio
    );
    assert_eq!(
        c.destination_of(&c.workspaces[1]).kind,
        DestinationKind::Segment
    );
    let view = c.for_destination(Some("events"));
    assert_eq!(view.destination.kind, DestinationKind::Segment);
    assert_eq!(view.workspaces.len(), 1);
    assert_eq!(view.workspaces[0].id, "shop");
    assert_eq!(c.for_destination(None).workspaces[0].id, "acme");

    // The Track API's key variable on a Segment destination's workspace is named.
    let wrong_key = text.replace(
        "write_key_env = \"SHOP_WRITE_KEY\"",
        "api_key_env = \"SHOP_KEY\"",
    );
    let e = Config::from_toml(
        &wrong_key,
        "t",
        env(&[("ACME_KEY", "k"), ("SHOP_KEY", "k")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("workspaces[1].write_key_env"), "{e}");
    // A destination no table defines.
    let unknown = text.replace("destination = \"events\"", "destination = \"evnts\"");
    let e = Config::from_toml(
        &unknown,
        "t",
        env(&[("ACME_KEY", "k"), ("SHOP_WRITE_KEY", "wk")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("workspaces[1].destination") && e.contains("evnts"),
        "{e}"
    );
    // A named destination's own settings are checked under its name.
    let bad_url = text.replace("http://127.0.0.1:9", "ftp://x");
    let e = Config::from_toml(
        &bad_url,
        "t",
        env(&[("ACME_KEY", "k"), ("SHOP_WRITE_KEY", "wk")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("destinations.events.base_url"), "{e}");
}

#[test]
fn a_destination_has_its_own_batch_shape_and_retries_over_the_shared_ones() {
    let text = format!(
        "{MINIMAL}\n[batch]\nmax_events = 100\nlinger_ms = 50\n[retry]\nmax_attempts = 4\n\
         [destinations.events]\nkind = \"segment\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [destinations.events.batch]\nmax_events = 7\nmax_event_bytes = 1000\n\
         [destinations.events.retry]\nmax_attempts = 2\n\
         [[workspaces]]\nid = \"shop\"\ndestination = \"events\"\nwrite_key_env = \"SHOP_WRITE_KEY\"\n"
    );
    let keys = env(&[("ACME_KEY", "k"), ("SHOP_WRITE_KEY", "wk")]);
    let c = Config::from_toml(&text, "t", keys.clone()).unwrap();
    let (acme, shop) = (c.batch_of(&c.workspaces[0]), c.batch_of(&c.workspaces[1]));
    assert_eq!((acme.max_events, acme.max_event_bytes), (100, 32_000));
    // Its own keys, and [batch]'s where it sets none.
    assert_eq!((shop.max_events, shop.max_event_bytes), (7, 1000));
    assert_eq!(shop.linger_ms.ms(), 50);
    let view = c.for_destination(Some("events"));
    assert_eq!((view.batch.max_events, view.retry.max_attempts), (7, 2));
    let view = c.for_destination(None);
    assert_eq!((view.batch.max_events, view.retry.max_attempts), (100, 4));
    // `config check` prints the tables back, and they read the same.
    let again = Config::from_toml(&c.to_masked_toml(), "t", keys.clone());
    assert_eq!(again.unwrap().batch_of(&c.workspaces[1]).max_events, 7);

    // Checked under the destination's name where it sets the key.
    let check = |from: &str, to: &str| {
        Config::from_toml(&text.replace(from, to), "t", keys.clone())
            .unwrap_err()
            .to_string()
    };
    let e = check("max_event_bytes = 1000", "max_event_bytes = 0");
    assert!(
        e.contains("destinations.events.batch.max_event_bytes"),
        "{e}"
    );
    let e = check("max_events = 7", "max_events = 5000");
    assert!(e.contains("destinations.events.batch.max_events"), "{e}");
    let e = check("max_attempts = 2", "max_attempts = 0");
    assert!(e.contains("destinations.events.retry.max_attempts"), "{e}");
    let e = check("max_events = 7", "max_evnts = 7");
    assert!(e.contains("max_evnts"), "{e}");
}

#[test]
fn an_http_destination_is_checked_before_it_sends_anything() {
    let http = |destination: &str, workspace: &str| {
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\ndlq_topic = \"t.dlq\"\n\
             [destination]\nkind = \"http\"\n{destination}\n[[workspaces]]\nid = \"acme\"\n{workspace}\n"
        );
        Config::from_toml(&text, "t", env(&[("K", "k")])).map_err(|e| e.to_string())
    };
    let key = "api_key_env = \"K\"";
    let ok = http("url = \"https://x.example/{{ user_id | segment }}\"", key).unwrap();
    assert_eq!(ok.destination.auth, AuthMode::Bearer);
    assert_eq!(
        ok.workspaces[0].site_id, "acme",
        "the limit is kept under the id"
    );
    let err = |d: &str, w: &str| http(d, w).unwrap_err();
    assert!(err("", key).contains("destination.url"));
    // Events never choose the host the key goes to.
    assert!(err("url = \"https://{{ workspace }}.example/\"", key).contains("written-out"));
    assert!(err("url = \"https://api.example{{ properties.p }}\"", key).contains("written-out"));
    assert!(err("url = \"ftp://api.example/x\"", key).contains("written-out"));
    assert!(err("url = \"https://x/{{ user_id \"", key).contains("not a template"));
    assert!(err("url = \"https://x\"\nbody = '{% if %}'", key).contains("destination.body"));
    assert!(err("url = \"https://x\"\nmethod = \"GE T\"", key).contains("destination.method"));
    assert!(err("url = \"https://x\"\nauth = \"oauth2\"", key).contains("destination.token_url"));
    assert!(err("url = \"https://x\"\nitem_errors = \"/errors\"", key)
        .contains("destination.item_errors"));
    // OAuth2 names its client.
    let oauth = "url = \"https://x/\"\nauth = \"oauth2\"\ntoken_url = \"https://x/token\"";
    assert!(err(oauth, key).contains("workspaces[0].site_id"));
    assert!(http(oauth, &format!("{key}\nsite_id = \"client-1\"")).is_ok());
    // A key with a trailing newline is named, never sent.
    let text = "[kafka]\nbrokers = \"b:9092\"\ngroup_id = \"g\"\ntopics = [\"t\"]\ndlq_topic = \"t.dlq\"\n\
                [destination]\nkind = \"http\"\nurl = \"https://x/\"\n[[workspaces]]\nid = \"acme\"\napi_key_env = \"K\"\n";
    let e = Config::from_toml(text, "t", env(&[("K", "secret-key\n")]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("control character") && !e.contains("secret-key"),
        "{e}"
    );
    // Bearer needs a key; no auth needs none.
    assert!(err("url = \"https://x\"", "").contains("workspaces[0].api_key_env"));
    assert!(http("url = \"https://x\"\nauth = \"none\"", "").is_ok());
    // url is for this kind only.
    let e = Config::from_toml(
        &MINIMAL.replace(
            "kind = \"customerio\"",
            "kind = \"customerio\"\nurl = \"https://x\"",
        ),
        "t",
        env(&[("ACME_KEY", "k")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("destination.url"), "{e}");
}
