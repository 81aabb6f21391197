//! A local Customer.io-compatible Track API on 127.0.0.1:0 that checks Basic auth,
//! records every item it answers, and can be made slow (per workspace, or randomly) or
//! stalled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::API_KEY;

/// One item the API answered 200 for.
#[derive(Clone, Debug)]
pub struct Received {
    /// The Basic-auth user (site id).
    pub site_id: String,
    /// The item (v2) or `{"v1": "METHOD path", "body": …}` (v1).
    pub item: Value,
}

#[derive(Default)]
struct Behaviour {
    /// Answer every request of a site with this status.
    refuse: HashMap<String, u16>,
    /// Answer this many more requests of a site 429 with `Retry-After` seconds.
    throttle: HashMap<String, (usize, u64)>,
    /// Fixed latency per site id.
    slow_sites: HashMap<String, Duration>,
    /// Random latency range for every request, in milliseconds.
    random_ms: Option<(u64, u64)>,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    /// (site, arrival, status answered: 0 until known) per request.
    arrivals: Mutex<Vec<(String, std::time::Instant, u16)>>,
    started: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    unauthorized: AtomicUsize,
    behaviour: Mutex<Behaviour>,
    stalled: watch::Sender<bool>,
}

/// Handle on a running test API.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    shared: Arc<Shared>,
}

impl Api {
    /// Starts the API on a free loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            started: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            unauthorized: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour::default()),
            stalled: watch::channel(false).0,
        });
        let app = Router::new()
            .route("/api/v2/batch", post(batch))
            .route("/api/v1/customers/{id}", put(v1))
            .route("/api/v1/customers/{id}/events", post(v1))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Api { base_url, shared }
    }

    /// Every request of `site_id` takes `latency`.
    pub fn slow_site(&self, site_id: &str, latency: Duration) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .slow_sites
            .insert(site_id.into(), latency);
    }

    /// Every request takes a random latency in `min_ms..=max_ms`.
    pub fn random_latency(&self, min_ms: u64, max_ms: u64) {
        self.shared.behaviour.lock().unwrap().random_ms = Some((min_ms, max_ms));
    }

    /// Answers every request of `site_id` with `status` (None: back to normal).
    pub fn refuse_site(&self, site_id: &str, status: Option<u16>) {
        let mut b = self.shared.behaviour.lock().unwrap();
        match status {
            Some(s) => b.refuse.insert(site_id.into(), s),
            None => b.refuse.remove(site_id),
        };
    }

    /// Answers the next `count` requests of `site_id` 429 with `Retry-After`.
    pub fn throttle_site(&self, site_id: &str, count: usize, retry_after_s: u64) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .throttle
            .insert(site_id.into(), (count, retry_after_s));
    }

    /// (arrival, status) of every request of `site_id`, in arrival order.
    pub fn arrivals(&self, site_id: &str) -> Vec<(std::time::Instant, u16)> {
        self.shared
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == site_id)
            .map(|(_, t, status)| (*t, *status))
            .collect()
    }

    /// While stalled, requests are held unanswered.
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.send_replace(stalled);
    }

    /// Items answered so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Number of items answered so far.
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Requests that arrived (answered or not).
    pub fn started(&self) -> usize {
        self.shared.started.load(Ordering::SeqCst)
    }

    /// The most requests that were ever being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests refused for bad credentials.
    pub fn unauthorized(&self) -> usize {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }
}

/// The site id, if the Basic credentials carry the test API key.
fn authorize(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (site, key) = text.split_once(':')?;
    (key == API_KEY).then(|| site.to_string())
}

/// Applies the configured refusals, throttling, latency and stall; returns the site id
/// or the error answer.
async fn admit(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    shared.started.fetch_add(1, Ordering::SeqCst);
    let Some(site) = authorize(headers) else {
        shared.unauthorized.fetch_add(1, Ordering::SeqCst);
        return Err((StatusCode::UNAUTHORIZED, "{}").into_response());
    };
    let decided = {
        let mut b = shared.behaviour.lock().unwrap();
        if let Some(status) = b.refuse.get(&site) {
            Some((*status, None))
        } else if let Some((left, seconds)) = b.throttle.get_mut(&site).filter(|(n, _)| *n > 0) {
            *left -= 1;
            Some((429, Some(*seconds)))
        } else {
            None
        }
    };
    let status = decided.map_or(0, |(s, _)| s);
    shared
        .arrivals
        .lock()
        .unwrap()
        .push((site.clone(), std::time::Instant::now(), status));
    if let Some((status, retry_after)) = decided {
        // A careless API that echoes the caller's credentials back.
        let echoed = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let body = json!({"errors":[{"message": format!(
            "refused by the test; you sent {echoed} (key {API_KEY})"
        )}]});
        let mut response =
            (StatusCode::from_u16(status).unwrap(), body.to_string()).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return Err(response);
    }
    let delay = {
        let b = shared.behaviour.lock().unwrap();
        let fixed = b.slow_sites.get(&site).copied().unwrap_or_default();
        let random = b
            .random_ms
            .map(|(lo, hi)| Duration::from_millis(fastrand::u64(lo..=hi)))
            .unwrap_or_default();
        fixed + random
    };
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(delay).await;
    let mut stalled = shared.stalled.subscribe();
    let _ = stalled.wait_for(|s| !*s).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(site)
}

async fn batch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let site = match admit(&shared, &headers).await {
        Ok(site) => site,
        Err(response) => return response,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"errors":[{"message":"bad json"}]}"#,
        )
            .into_response();
    };
    let Some(items) = parsed["batch"].as_array() else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"errors":[{"message":"no batch"}]}"#,
        )
            .into_response();
    };
    let mut received = shared.received.lock().unwrap();
    for item in items {
        received.push(Received {
            site_id: site.clone(),
            item: item.clone(),
        });
    }
    (StatusCode::OK, "{}").into_response()
}

async fn v1(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let site = match admit(&shared, &headers).await {
        Ok(site) => site,
        Err(response) => return response,
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"meta":{"errors":["bad json"]}}"#,
        )
            .into_response();
    };
    shared.received.lock().unwrap().push(Received {
        site_id: site,
        item: json!({"v1": format!("{method} {id}"), "body": parsed}),
    });
    (StatusCode::OK, "{}").into_response()
}
