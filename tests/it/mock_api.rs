//! `sluice mock-api` answering as the real APIs document: auth, validation, limits.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_mock_api::{MockApi, MockApiConfig};

async fn post(
    api: &MockApi,
    method: &str,
    path: &str,
    user: &str,
    pass: &str,
    body: Value,
) -> (StatusCode, Option<String>) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", api.base_url());
    let request = match method {
        "PUT" => client.put(url),
        _ => client.post(url),
    };
    let response = request
        .basic_auth(user, Some(pass))
        .json(&body)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status(), retry_after)
}

#[tokio::test]
async fn endpoints_check_credentials_bodies_and_the_request_limit() {
    let api = MockApi::start(MockApiConfig {
        keys: vec!["site:key".into(), "write-key:".into()],
        limit_per_s: 2,
        retry_after_s: 2,
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let ulid = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let event = json!({"type":"person","identifiers":{"id":"u"},"action":"event","name":"x","id":ulid,"attributes":{"seq":1}});

    assert_eq!(
        post(
            &api,
            "POST",
            "/api/v2/entity",
            "site",
            "wrong",
            event.clone()
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&api, "POST", "/api/v2/entity", "site", "key", event.clone())
            .await
            .0,
        StatusCode::OK
    );
    let float = json!({"score": 1.5});
    assert_eq!(
        post(&api, "PUT", "/api/v1/customers/u", "site", "key", float)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // The third counted request of "site" within a second is over its limit of 2 (the
    // refused credentials above never reached the limiter).
    let (status, retry_after) = post(
        &api,
        "POST",
        "/api/v1/customers/u/events",
        "site",
        "key",
        json!({"name":"x"}),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("2"));

    let stats = api.stats();
    assert_eq!(stats.workspaces["site"].events_accepted, 1);
    assert_eq!(stats.workspaces["site"].throttled, 1);
    assert_eq!(stats.requests_by_status[&401], 1);
    api.stop().await;
}

#[tokio::test]
async fn segment_endpoints_check_write_keys_and_messages() {
    let api = MockApi::start(MockApiConfig {
        keys: vec!["write-key:".into()],
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    // Segment: write key with a blank password; each message needs a user, track an event.
    let good = json!({"batch":[{"type":"identify","userId":"a"},{"type":"track","anonymousId":"b","event":"e"}]});
    assert_eq!(
        post(&api, "POST", "/v1/batch", "write-key", "", good)
            .await
            .0,
        StatusCode::OK
    );
    // An invalid call: dropped behind a 200 (Segment, permissive Pipelines), refused
    // with a 400 under Pipelines' strict mode.
    let no_user = json!({"batch":[{"type":"track","event":"e"},{"type":"identify","userId":"c"}]});
    assert_eq!(
        post(&api, "POST", "/v1/batch", "write-key", "", no_user.clone())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(api.stats().workspaces["write-key"].events_accepted, 3);
    let strict = reqwest::Client::new()
        .post(format!("{}/v1/batch", api.base_url()))
        .basic_auth("write-key", Some(""))
        .header("X-Strict-Mode", "1")
        .json(&no_user)
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.stats().workspaces["write-key"].events_accepted, 3);
    let no_event = json!({"userId":"a"});
    assert_eq!(
        post(&api, "POST", "/v1/track", "write-key", "", no_event)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(
            &api,
            "POST",
            "/v1/identify",
            "write-key",
            "",
            json!({"userId":"a"})
        )
        .await
        .0,
        StatusCode::OK
    );

    assert_eq!(api.stats().workspaces["write-key"].events_accepted, 4);
    api.stop().await;
}

/// The controls a test turns mid-run: a refused site gets its status (its body echoing
/// the credentials, as a careless API's would), a throttled site its 429s and then
/// answers again, any site id passes with the `*` key, and what was accepted is kept
/// with each request's arrival.
#[tokio::test]
async fn controls_refuse_throttle_and_record_per_site() {
    let api = MockApi::start(MockApiConfig {
        keys: vec!["*:key".into()],
        record: true,
        ..MockApiConfig::default()
    })
    .await
    .unwrap();
    let item = |seq: u64| {
        json!({"batch":[{"type":"person","identifiers":{"id":"u"},"action":"event","name":"x",
            "id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","attributes":{"seq":seq}}]})
    };
    let send = |site: &'static str, pass: &'static str, seq: u64| {
        post(&api, "POST", "/api/v2/batch", site, pass, item(seq))
    };
    assert_eq!(
        send("any-site", "wrong", 0).await.0,
        StatusCode::UNAUTHORIZED
    );
    api.refuse_site("site-a", Some(400));
    api.throttle_site("site-b", 2, 7);
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v2/batch", api.base_url()))
        .basic_auth("site-a", Some("key"))
        .json(&item(1))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("site-a:key"));
    for _ in 0..2 {
        assert_eq!(
            send("site-b", "key", 2).await,
            (StatusCode::TOO_MANY_REQUESTS, Some("7".into()))
        );
    }
    assert_eq!(send("site-b", "key", 3).await.0, StatusCode::OK);
    api.refuse_site("site-a", None);
    assert_eq!(send("site-a", "key", 4).await.0, StatusCode::OK);

    let kept: Vec<(String, u64)> = api
        .received()
        .iter()
        .map(|r| {
            (
                r.site_id.clone(),
                r.item["attributes"]["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kept, vec![("site-b".into(), 3), ("site-a".into(), 4)]);
    let b: Vec<u16> = api.arrivals("site-b").iter().map(|a| a.refused).collect();
    assert_eq!(b, vec![429, 429, 0]);
    assert_eq!(api.started(), 6);
}
