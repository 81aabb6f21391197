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

/// What sluice sends to Customer.io Pipelines, as the emulator received it, against
/// the `batch` request schema of Customer.io's own OpenAPI 3.1 document for the
/// Pipelines API (its path in `SLUICE_TEST_PIPELINES_OPENAPI`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Customer.io's Pipelines OpenAPI document (SLUICE_TEST_PIPELINES_OPENAPI; .ci/run hands it in)"]
async fn what_sluice_sends_to_pipelines_conforms_to_its_openapi_schema() {
    let path = std::env::var("SLUICE_TEST_PIPELINES_OPENAPI")
        .expect("SLUICE_TEST_PIPELINES_OPENAPI names the Pipelines API's OpenAPI document");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // One reading of the document's own: its Track call is `oneOf` a known-user and an
    // anonymous branch, but the anonymous one does not forbid `userId`, so every
    // known-user track matches both and no track with a `userId` could pass `oneOf`.
    // The intent is either branch: `anyOf`.
    for call in spec["components"]["schemas"]["batch"]["properties"]["batch"]["items"]["anyOf"]
        .as_array_mut()
        .expect("the batch items' anyOf")
    {
        if call["title"] == "Track" {
            let branches = call["oneOf"].take();
            call["anyOf"] = branches;
            call.as_object_mut().unwrap().remove("oneOf");
        }
    }
    // The request body's schema, its references resolved inside the document.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/components/schemas/batch",
        "components": spec["components"],
    });
    let schema = jsonschema::validator_for(&root).expect("the document's schemas compile");

    let (broker, api, topic, mut setup) = TestEnv::build(2, &["acme"])
        .api(write_key_api())
        .start()
        .await
        .into_parts();
    segment_kind(&mut setup, DestinationKind::CustomerioPipelines);
    let mut records = tracks("acme", "u", 4, 0..20);
    records.extend((0..4).map(|i| {
        Record::json(
            &format!("u{i}"),
            &identify("acme", &format!("u{i}"), 20 + i),
        )
    }));
    // An anonymous track, and one without a timestamp.
    records.push(Record::json(
        "anon",
        &json!({"type": "track", "anonymousId": "anon-1", "event": "Viewed", "properties": {}, "workspace": "acme"}),
    ));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 2).await;
    worker.stop().await;

    let calls: Vec<serde_json::Value> = api.received().into_iter().map(|r| r.item).collect();
    assert_eq!(calls.len(), records.len());
    // One call at a time, so a failure names it.
    for call in &calls {
        let body = json!({ "batch": [call] });
        let errors: Vec<String> = schema.iter_errors(&body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{call} does not conform: {errors:?}");
    }
    // And a control: a call the schema must refuse (a track with no event name).
    let bad = json!({"batch": [{"type": "track", "userId": "u"}]});
    assert!(
        !schema.is_valid(&bad),
        "the schema refuses a track without its event"
    );
    api.stop().await;
}

/// Two destinations in one worker: `acme` sends to `[destination]` (Customer.io's Track
/// API), `shop` to `[destinations.events]` (Segment), each emulated on its own. Every
/// event reaches its workspace's API and no other, in per-user order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workspace_is_delivered_to_the_destination_it_names() {
    let (broker, track_api, topic, mut setup) =
        TestEnv::mock(2, &["acme", "shop"]).await.into_parts();
    let segment_api = sluice_mock_api::MockApi::start(write_key_api())
        .await
        .unwrap();
    let mut events = setup.worker.destination.clone();
    events.kind = DestinationKind::Segment;
    events.base_url = Some(segment_api.base_url());
    // Its own batch shape: 7 events a request where [batch] says 20.
    events.batch.max_events = Some(7);
    setup.worker.destinations.insert("events".into(), events);
    let shop = &mut setup.worker.workspaces[1];
    shop.destination = Some("events".into());
    shop.api_key_env = String::new();
    shop.write_key_env = Some(API_KEY_ENV.into());
    let mut records = tracks("acme", "a", 4, 0..100);
    records.extend(tracks("shop", "s", 4, 0..150));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;

    let track = track_api.stats();
    let segment = segment_api.stats();
    assert_eq!(track.workspaces["site-acme"].events_accepted, 100);
    assert!(!track.workspaces.contains_key("site-shop"));
    assert_eq!(segment.workspaces[API_KEY].events_accepted, 150);
    assert_eq!(
        segment.workspaces.len(),
        1,
        "{:?}",
        segment.workspaces.keys()
    );
    assert_eq!(track.order_violations + segment.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 250);
    // Each by its own batch shape: 150 events in requests of at most 7 take at least
    // 22; the Track API's 100, in requests of up to 20, about 5 (fewer than 15).
    let (shop_requests, acme_requests) = (
        segment.workspaces[API_KEY].requests,
        track.workspaces["site-acme"].requests,
    );
    assert!(shop_requests >= 22, "{shop_requests} Segment requests");
    assert!(acme_requests <= 14, "{acme_requests} Track requests");
    assert!(segment_api
        .received()
        .iter()
        .all(|r| r.item["type"] == "track" && r.item["userId"].as_str().unwrap().starts_with('s')));
    track_api.stop().await;
    segment_api.stop().await;
}

/// `setup`'s destination turned to a JSON API at `path` of `api`, with `extra` keys.
fn http_kind(setup: &mut Setup, api: &sluice_mock_api::MockApi, path: &str, extra: &str) {
    let text = format!(
        "kind = \"http\"\nurl = \"{}{path}\"\nrequest_timeout_ms = 30000\n{extra}",
        api.base_url()
    );
    setup.worker.destination = toml::from_str(&text).expect("a destination table");
}

/// Clay-style: a Bearer key, one `POST` per event, the body from a template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_api_gets_one_templated_request_per_event_in_per_user_order() {
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["clay"])
        .api(MockApiConfig {
            keys: vec![format!("clay-site:{API_KEY}")],
            record: true,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    http_kind(
        &mut setup,
        &api,
        "/json/v1/resource",
        r#"body = '{"user_id": {{ user_id | tojson }}, "action": {{ event | tojson }}, "properties": {{ properties | tojson }}, "message_id": {{ message_id | tojson }}}'"#,
    );
    setup.worker.workspaces[0].site_id = "clay-site".into();
    let records = tracks("clay", "u", 3, 0..60);
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    // The Bearer key is the password of user `clay-site`: the emulator counts it there.
    let ws = &stats.workspaces["clay-site"];
    assert_eq!(ws.events_accepted, 60);
    assert_eq!(ws.requests, 60, "one request per event");
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 60);
    let first = &api.received()[0].item;
    assert_eq!(first["action"], "Order Placed");
    assert!(first["user_id"].as_str().unwrap().starts_with('u'));
    assert!(
        first.get("type").is_none(),
        "the template's fields only: {first}"
    );
    api.stop().await;
}

/// A batch API that answers 200 with the refused events listed: only those are
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_api_with_per_item_results_dead_letters_only_what_it_refused() {
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["acme"])
        .api(MockApiConfig {
            record: true,
            ..MockApiConfig::default()
        })
        .dlq()
        .start()
        .await
        .into_parts();
    http_kind(
        &mut setup,
        &api,
        "/json/v1/valuations",
        "send = \"batch\"\nbatch_field = \"items\"\nitem_errors = \"/errors\"\nauth = \"none\"\n",
    );
    setup.worker.workspaces[0].api_key_env = String::new();
    let mut records = tracks("acme", "u", 1, 0..40);
    let mut bad = track("acme", "u0", 13);
    bad["properties"]["mock_reject"] = json!("no such product");
    records[13] = Record::json("u0", &bad);
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 1).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    assert_eq!(stats.events_accepted, 39);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 39);
    assert_eq!(metrics.dead_lettered_count("invalid_item"), 1);
    assert!(
        stats.workspaces["anonymous"].requests <= 3,
        "batches of 20: {}",
        stats.workspaces["anonymous"].requests
    );
    api.stop().await;
}

/// The orders API behind client credentials (client `orders-client`, secret the test
/// key; `record`: the emulator keeps what it accepted), one workspace `orders` sending
/// `kind = "http"` to it with `auth = "oauth2"`.
async fn orders_api(
    record: bool,
) -> (
    crate::common::Broker,
    sluice_mock_api::MockApi,
    String,
    Setup,
) {
    let (broker, api, topic, mut setup) = TestEnv::build(1, &["orders"])
        .api(MockApiConfig {
            keys: vec![format!("orders-client:{API_KEY}")],
            record,
            ..MockApiConfig::default()
        })
        .start()
        .await
        .into_parts();
    let token_url = format!("{}/auth/token", api.base_url());
    http_kind(
        &mut setup,
        &api,
        "/json/api/v1/orders",
        &format!("auth = \"oauth2\"\ntoken_url = \"{token_url}\"\n"),
    );
    (broker, api, topic, setup)
}

/// The orders API: a token from `POST /auth/token` (client credentials), used as the
/// Bearer, fetched again once the API refuses it (401), and nothing lost or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_oauth2_token_is_refreshed_once_and_nothing_is_lost_or_sent_twice() {
    let (broker, api, topic, mut setup) = orders_api(true).await;
    setup.worker.workspaces[0].site_id = "orders-client".into();
    // 50 requests/s, one event each: ~2 s for 100, time to expire the token midway.
    setup.worker.workspaces[0].rate_limit_per_s = Some(50.0);
    let records = tracks("orders", "u", 4, 0..100);
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    wait_until("a third delivered", Duration::from_secs(60), || {
        api.stats().events_accepted >= 30
    })
    .await;
    api.expire_tokens();
    setup.wait_committed(&positions, 1).await;
    let metrics = worker.stop().await;

    let stats = api.stats();
    assert_eq!(stats.tokens_issued, 2, "one token, and one after the 401s");
    // Each request in flight with the expired token (at most lanes.max_in_flight, 4)
    // meets one 401, and then the new token.
    let refused = stats.requests_by_status.get(&401).copied().unwrap_or(0);
    assert!((1..=4).contains(&refused), "{:?}", stats.requests_by_status);
    assert_eq!(
        stats.requests_by_status.get(&200),
        Some(&100),
        "no request sent twice"
    );
    assert_eq!(stats.workspaces["orders-client"].events_accepted, 100);
    assert_eq!(stats.duplicate_event_ids, 0);
    assert_eq!(stats.order_violations, 0);
    assert_eq!(metrics.delivered_count(), 100);
    api.stop().await;
}

/// A token endpoint that refuses the client (a wrong secret) is asked once for all the
/// requests waiting on it, and again only after a pause: not once per waiting request,
/// each after the other; the events wait (nothing delivered, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_token_endpoint_is_asked_once_for_every_request_waiting_on_it() {
    let (broker, api, topic, mut setup) = orders_api(false).await;
    // A client the endpoint does not know; four requests of one event in flight.
    setup.worker.workspaces[0].site_id = "other-client".into();
    setup.one_event_per_request();
    produce(&broker.brokers(), &topic, &tracks("orders", "u", 8, 0..40)).await;
    let worker = Worker::start(setup.config());
    wait_until("the endpoint asked", Duration::from_secs(30), || {
        api.stats().tokens_refused > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = api.stats().tokens_refused;
    // Every attempt refused so far (each one counted against its request's retries).
    let refused_attempts: u64 = worker
        .metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sluice_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    worker.stop().await;
    let stats = api.stats();
    println!(
        "token endpoint refusing: asked {asked} times in the first ~2 s, {refused_attempts} \
         attempts refused, {} events accepted",
        stats.events_accepted
    );
    // Once at first, then at most once a second (140 times before, a second time by
    // each waiting request and retry).
    assert!(asked <= 4, "{asked}");
    // Each refused attempt is the answer of a fetch it waited on (at most the four
    // requests in flight share one), not a remembered failure handed to retries that
    // came after it, which would spend their retry budget without asking.
    assert!(
        refused_attempts <= 4 * (asked + 1),
        "{refused_attempts} refused attempts for {asked} token requests"
    );
    assert_eq!(stats.events_accepted, 0);
    api.stop().await;
}

/// Two destinations, each with a workspace limited on its own: each API sees its own
/// limit held (its busiest one-second window), and the faster is not held to the
/// slower's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_destinations_with_different_limits_each_hold_their_own() {
    let (broker, track_api, topic, mut setup) =
        TestEnv::mock(2, &["slow", "fast"]).await.into_parts();
    let other_api = sluice_mock_api::MockApi::start(MockApiConfig {
        record: true,
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    // One event per request at both, so requests are events.
    setup.worker.destination.batch.max_events = Some(1);
    let mut other = setup.worker.destination.clone();
    other.base_url = Some(other_api.base_url());
    setup.worker.destinations.insert("other".into(), other);
    let limits = [("slow", 10.0), ("fast", 40.0)];
    for (id, per_s) in limits {
        let ws = setup.workspace(id);
        ws.rate_limit_per_s = Some(per_s);
        ws.burst = Some(1);
    }
    setup.workspace("fast").destination = Some("other".into());
    // About 8 s of each at its limit.
    let mut records = tracks("slow", "s", 4, 0..80);
    records.extend(tracks("fast", "f", 4, 0..320));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    setup.wait_committed(&positions, 2).await;
    let metrics = worker.stop().await;

    let (slow, fast) = (track_api.stats(), other_api.stats());
    let (slow, fast) = (&slow.workspaces["site-slow"], &fast.workspaces["site-fast"]);
    println!(
        "two destinations: slow {} events, busiest second {} (limit 10); fast {} events, \
         busiest second {} (limit 40)",
        slow.events_accepted,
        slow.max_requests_per_second,
        fast.events_accepted,
        fast.max_requests_per_second
    );
    assert_eq!((slow.events_accepted, fast.events_accepted), (80, 320));
    assert_eq!(metrics.delivered_count(), 400);
    assert!(
        slow.max_requests_per_second <= 10,
        "{}",
        slow.max_requests_per_second
    );
    assert!(
        fast.max_requests_per_second <= 40,
        "{}",
        fast.max_requests_per_second
    );
    assert!(
        fast.max_requests_per_second >= 20,
        "fast kept its own pace: {}",
        fast.max_requests_per_second
    );
    assert_eq!(slow.throttled + fast.throttled, 0);
    track_api.stop().await;
    other_api.stop().await;
}

/// A destination that is down (nothing listens at its address) parks the workspaces
/// that send to it, at the minimal config's defaults plus a small buffer: the others
/// keep delivering, nothing is dead-lettered, and once it is up every parked event
/// arrives once, in per-user order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_parks_only_its_workspaces_and_all_arrive_when_it_is_up() {
    destination_down_parks_only_its_workspaces(Broker::mock()).await;
}

/// [`a_destination_that_is_down_parks_only_its_workspaces_and_all_arrive_when_it_is_up`]
/// on `broker` (the real-broker suite runs it on Tansu).
pub(crate) async fn destination_down_parks_only_its_workspaces(broker: Broker) {
    const N: usize = 3_000;
    let (broker, api, topic, mut setup) = TestEnv::build(2, &["ok", "away"])
        .on(broker)
        .start()
        .await
        .into_parts();
    // A small buffer (1 000 events a workspace) so the wait is short.
    setup.worker.kafka.max_buffered_events = 2_000;
    setup.worker.kafka.resume_buffered_events = Some(1_000);
    let port = crate::common::fleet::free_port();
    let mut down = setup.worker.destination.clone();
    down.base_url = Some(format!("http://127.0.0.1:{port}"));
    setup.worker.destinations.insert("down".into(), down);
    setup.workspace("away").destination = Some("down".into());
    let mut records = tracks("ok", "u", 50, 0..N);
    records.extend(tracks("away", "v", 50, 0..N));
    let positions = produce(&broker.brokers(), &topic, &records).await;
    let worker = Worker::start(setup.config());
    wait_until("every ok event", Duration::from_secs(60), || {
        api.stats()
            .workspaces
            .get("site-ok")
            .is_some_and(|w| w.events_accepted >= N as u64)
    })
    .await;
    wait_until("away parked", Duration::from_secs(30), || {
        worker.metrics.parked_count("away", "written") > 0
    })
    .await;

    let back = sluice_mock_api::MockApi::start(MockApiConfig {
        listen: ([127, 0, 0, 1], port).into(),
        record: true,
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    setup.wait_committed(&positions, 2).await;
    wait_until("every away event", Duration::from_secs(120), || {
        back.stats()
            .workspaces
            .get("site-away")
            .is_some_and(|w| w.events_accepted >= N as u64)
    })
    .await;
    let metrics = worker.stop().await;
    let (ok, away) = (api.stats(), back.stats());
    println!(
        "a destination down: ok {} of {N} while it was down; away parked {}, then {} of \
         {N} delivered ({} duplicates, {} order violations)",
        ok.workspaces["site-ok"].events_accepted,
        metrics.parked_count("away", "written"),
        away.workspaces["site-away"].events_accepted,
        away.workspaces["site-away"].duplicate_event_ids,
        away.order_violations
    );
    assert_eq!(metrics.dead_lettered_total(), 0);
    assert_eq!(ok.workspaces["site-ok"].events_accepted, N as u64);
    assert!(!ok.workspaces.contains_key("site-away"));
    assert_eq!(away.workspaces["site-away"].events_accepted, N as u64);
    assert_eq!(away.workspaces["site-away"].duplicate_event_ids, 0);
    assert_eq!(away.order_violations, 0);
    api.stop().await;
    back.stop().await;
}
