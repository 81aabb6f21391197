//! Destinations beside Customer.io's Track API: Segment's HTTP Tracking API and
//! Customer.io Data Pipelines, end to end on the mock cluster against `sluice mock-api`.

use std::time::Duration;

use serde_json::json;
use sluice_core::config::DestinationKind;
use sluice_mock_api::MockApiConfig;

use crate::common::*;

/// `setup` turned to `kind`: each workspace sends with the tests' key as its write key.
fn segment_kind(setup: &mut Setup, kind: DestinationKind) {
    setup.worker.destination.kind = kind;
    for ws in &mut setup.worker.workspaces {
        ws.api_key_env = String::new();
        ws.write_key_env = Some(API_KEY_ENV.into());
    }
}

/// The emulator accepting only the tests' key as a write key (blank password).
fn write_key_api() -> MockApiConfig {
    MockApiConfig {
        keys: vec![format!("{API_KEY}:")],
        record: true,
        ..MockApiConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_destination_gets_every_event_as_a_spec_call_in_per_user_order() {
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme"])
        .api(write_key_api())
        .start()
        .await
        .into_parts();
    segment_kind(&mut setup, DestinationKind::Segment);
    let mut records = tracks("acme", "u", 5, 0..200);
    records.push(Record::json("u1", &identify("acme", "u1", 200)));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    wait_until("every event arrived", Duration::from_secs(60), || {
        api.received().len() >= 201
    })
    .await;
    setup.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    let ws = &stats.workspaces[API_KEY];
    assert_eq!(ws.events_accepted, 201);
    assert_eq!(ws.duplicate_event_ids, 0);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 201);
    let received = api.received();
    let track = received
        .iter()
        .find(|r| r.item["type"] == "track")
        .expect("a track call");
    assert_eq!(track.item["event"], "Order Placed");
    assert!(track.item["userId"].as_str().unwrap().starts_with('u'));
    assert_eq!(track.item["timestamp"], "2026-11-01T12:00:00Z");
    assert!(track.item["messageId"].is_string());
    let identify = received
        .iter()
        .find(|r| r.item["type"] == "identify")
        .expect("an identify call");
    assert_eq!(identify.item["traits"]["plan"], "pro");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_strict_mode_dead_letters_only_the_call_it_refuses() {
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["acme"])
        .api(write_key_api())
        .dlq()
        .start()
        .await
        .into_parts();
    segment_kind(&mut setup, DestinationKind::CustomerioPipelines);
    // One user, so the 40 events go in order in batches of 20: the 13th is refused by
    // the API (its test hook), which fails its whole batch under strict mode.
    let mut records = tracks("acme", "u", 1, 0..40);
    let mut bad = track("acme", "u0", 13);
    bad["properties"]["mock_reject"] = json!("invalid_value");
    records[13] = Record::json("u0", &bad);
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 1).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    assert_eq!(stats.workspaces[API_KEY].events_accepted, 39);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 39);
    assert_eq!(metrics.dead_lettered_total(), 1);
    assert!(
        api.received()
            .iter()
            .all(|r| r.item["properties"]["seq"] != 13),
        "the refused call was never accepted"
    );
    api.stop().await;
}
