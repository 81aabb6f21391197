//! `sluice mock-api`: an emulator of Customer.io's Track API (v1 and v2) and Segment's
//! HTTP API (`/v1/batch`, `/v1/identify`, `/v1/track`) for tests, local runs and capacity
//! work.
//!
//! It checks Basic auth and the documented size limits (400/413), answers 207 for
//! invalid batch items, enforces a per-workspace request limit over a sliding one-second
//! window (429 with `Retry-After`, or — `--silent-throttle` — Customer.io's way: a 200
//! that drops the events), injects latency and faults (5xx, hangs past the client's
//! timeout, connection resets), and reports what it saw on `GET /stats`.

mod stats;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use stats::{Accepted, Stats};
pub use stats::{Snapshot, WorkspaceSnapshot};
use validate::ItemError;

/// Customer.io's and Segment's limit on a batch request body, in bytes.
pub const MAX_BATCH_BYTES: usize = 500_000;
/// Segment's limit on events per `/v1/batch`.
pub const MAX_SEGMENT_BATCH_EVENTS: usize = 2_500;

/// How the emulator behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct MockApiConfig {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Requests per second each workspace may send, over a sliding one-second window;
    /// 0 means unlimited.
    #[arg(long, default_value_t = 100)]
    pub limit_per_s: u32,
    /// Over the limit, answer 200 and drop the events (Customer.io documents no 429)
    /// instead of 429 with Retry-After.
    #[arg(long)]
    pub silent_throttle: bool,
    /// Seconds named in Retry-After (and X-RateLimit-Reset) on a 429.
    #[arg(long, default_value_t = 1)]
    pub retry_after_s: u64,
    /// Added latency per request: `fixed:MS`, `uniform:MIN-MAX` or `exp:MEAN` (ms).
    #[arg(long, default_value = "fixed:0")]
    pub latency: Latency,
    /// Share of requests (0..1) that meet a fault instead of an answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Which faults to inject: any of 5xx, timeout, reset.
    #[arg(long, value_delimiter = ',', default_value = "5xx,timeout,reset")]
    pub faults: Vec<Fault>,
    /// How long a `timeout` fault holds the request before answering 504, in ms (set it
    /// above the client's timeout).
    #[arg(long, default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Largest accepted batch body, in bytes (larger ones get 413).
    #[arg(long, default_value_t = MAX_BATCH_BYTES)]
    pub max_batch_bytes: usize,
    /// Accepted credentials as `USER:PASSWORD` (site id and API key, or a Segment write
    /// key with an empty password); repeatable. None given: any non-empty user passes.
    #[arg(long = "key")]
    pub keys: Vec<String>,
}

impl Default for MockApiConfig {
    fn default() -> Self {
        MockApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limit_per_s: 0,
            silent_throttle: false,
            retry_after_s: 1,
            latency: Latency::Fixed(0),
            fault_rate: 0.0,
            faults: vec![Fault::ServerError, Fault::Timeout, Fault::Reset],
            hang_ms: 30_000,
            max_batch_bytes: MAX_BATCH_BYTES,
            keys: Vec::new(),
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(u64),
    /// Uniform between the two.
    Uniform(u64, u64),
    /// Exponential with this mean (capped at ten times the mean).
    Exponential(u64),
}

impl Latency {
    fn sample(&self) -> Duration {
        let ms = match *self {
            Latency::Fixed(ms) => ms,
            Latency::Uniform(lo, hi) => fastrand::u64(lo..=hi.max(lo)),
            Latency::Exponential(mean) => {
                let u = fastrand::f64().max(f64::MIN_POSITIVE);
                ((-u.ln()) * mean as f64).min(mean as f64 * 10.0) as u64
            }
        };
        Duration::from_millis(ms)
    }
}

impl FromStr for Latency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("latency {s:?}: expected fixed:MS, uniform:MIN-MAX or exp:MEAN");
        let (kind, value) = s.split_once(':').ok_or_else(bad)?;
        let num = |v: &str| v.trim().parse::<u64>().map_err(|_| bad());
        match kind {
            "fixed" => Ok(Latency::Fixed(num(value)?)),
            "exp" => Ok(Latency::Exponential(num(value)?)),
            "uniform" => {
                let (lo, hi) = value.split_once('-').ok_or_else(bad)?;
                let (lo, hi) = (num(lo)?, num(hi)?);
                if lo > hi {
                    return Err(bad());
                }
                Ok(Latency::Uniform(lo, hi))
            }
            _ => Err(bad()),
        }
    }
}

/// An injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// 500, 502 or 503.
    #[value(name = "5xx")]
    ServerError,
    /// Hold the request past the client's timeout.
    Timeout,
    /// Start answering, then break the connection.
    Reset,
}

struct AppState {
    config: MockApiConfig,
    keys: HashMap<String, String>,
    stats: Stats,
}

/// A running emulator.
#[derive(Debug)]
pub struct MockApi {
    addr: SocketAddr,
    state: Arc<AppStateHandle>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Keeps the state's Debug impl out of the public type.
struct AppStateHandle(Arc<AppState>);

impl std::fmt::Debug for AppStateHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockApiState")
    }
}

impl MockApi {
    /// Binds `config.listen` and serves in the background.
    pub async fn start(config: MockApiConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            keys: config
                .keys
                .iter()
                .filter_map(|k| k.split_once(':'))
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            config,
            stats: Stats::default(),
        });
        let stop = CancellationToken::new();
        let app = router(state.clone());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!("mock API failed: {e}");
                }
            }
        });
        Ok(MockApi {
            addr,
            state: Arc::new(AppStateHandle(state)),
            stop,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for `destination.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it saw so far.
    pub fn stats(&self) -> Snapshot {
        self.state.0.stats.snapshot()
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        // Hung `timeout` faults would hold a graceful shutdown: do not wait for them.
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Runs the emulator until `shutdown` is cancelled (the `sluice mock-api` command).
pub async fn run(config: MockApiConfig, shutdown: CancellationToken) -> std::io::Result<()> {
    let api = MockApi::start(config).await?;
    tracing::info!(addr = %api.addr(), "mock API listening; GET /stats for what it saw");
    shutdown.cancelled().await;
    api.stop().await;
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v2/batch", post(v2_batch))
        .route("/api/v2/entity", post(v2_entity))
        .route("/api/v1/customers/{id}", put(v1_identify))
        .route("/api/v1/customers/{id}/events", post(v1_event))
        .route("/api/v1/events", post(v1_anonymous_event))
        .route("/v1/batch", post(segment_batch))
        .route("/v1/identify", post(segment_identify))
        .route("/v1/track", post(segment_track))
        .route(
            "/stats",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.stats.snapshot()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// What the gate decided for a request that may go on.
struct Admitted {
    workspace: String,
    /// Over the limit under `--silent-throttle`: answer 200, keep nothing.
    dropped: bool,
}

/// Auth, rate limit, latency and faults: everything before the route's own work.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<Admitted, Response> {
    let Some(workspace) = authorize(state, headers) else {
        state.stats.answered("", 401);
        return Err(answer(
            StatusCode::UNAUTHORIZED,
            json!({"meta":{"error":"unauthorized"}}),
        ));
    };
    let in_window = state.stats.arrive(&workspace, Instant::now());
    let config = &state.config;
    let over = config.limit_per_s > 0 && in_window > config.limit_per_s as usize;
    if over && !config.silent_throttle {
        state.stats.answered(&workspace, 429);
        let seconds = config.retry_after_s.to_string();
        let mut response = answer(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error":"rate limited"}),
        );
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, seconds.parse().expect("digits"));
        h.insert("x-ratelimit-reset", seconds.parse().expect("digits"));
        return Err(response);
    }
    let delay = config.latency.sample();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if config.fault_rate > 0.0 && fastrand::f64() < config.fault_rate && !config.faults.is_empty() {
        let fault = config.faults[fastrand::usize(..config.faults.len())];
        return Err(inject(state, &workspace, fault).await);
    }
    Ok(Admitted {
        workspace,
        dropped: over,
    })
}

async fn inject(state: &AppState, workspace: &str, fault: Fault) -> Response {
    match fault {
        Fault::ServerError => {
            let status = [500, 502, 503][fastrand::usize(..3)];
            state.stats.answered(workspace, status);
            answer(
                StatusCode::from_u16(status).expect("valid"),
                json!({"error":"injected fault"}),
            )
        }
        Fault::Timeout => {
            tokio::time::sleep(Duration::from_millis(state.config.hang_ms)).await;
            state.stats.answered(workspace, 504);
            answer(
                StatusCode::GATEWAY_TIMEOUT,
                json!({"error":"injected timeout"}),
            )
        }
        Fault::Reset => {
            state.stats.answered(workspace, 0);
            let broken = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                ))
            });
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from_stream(broken))
                .expect("valid response")
        }
    }
}

/// The Basic-auth user, if the credentials are accepted.
fn authorize(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    if user.is_empty() {
        return None;
    }
    if state.keys.is_empty() || state.keys.get(user).is_some_and(|p| p == password) {
        Some(user.to_string())
    } else {
        None
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn finish(state: &AppState, workspace: &str, status: StatusCode, body: Value) -> Response {
    state.stats.answered(workspace, status.as_u16());
    answer(status, body)
}

fn parse(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

fn seq_of(item: &Value) -> Option<i64> {
    ["attributes", "properties", "traits", "data"]
        .iter()
        .find_map(|f| item[f]["seq"].as_i64())
}

fn v2_user(item: &Value) -> Option<&str> {
    item["identifiers"].as_object()?.values().next()?.as_str()
}

fn errors_json(errors: &[(usize, ItemError)]) -> Value {
    let list: Vec<Value> = errors
        .iter()
        .map(|(i, e)| json!({"batch_index": i, "reason": e.reason, "field": e.field, "message": e.message}))
        .collect();
    json!({ "errors": list })
}

async fn v2_batch(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    if body.len() > state.config.max_batch_bytes {
        return finish(
            &state,
            ws,
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"errors":[{"message":"request too large"}]}),
        );
    }
    let Some(items) = parse(&body).and_then(|v| v.get("batch").and_then(Value::as_array).cloned())
    else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"errors":[{"message":"body must be {\"batch\":[...]}"}]}),
        );
    };
    if validate::rejects_request(&items) {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"errors":[{"message":"request refused (test hook)"}]}),
        );
    }
    let mut errors = Vec::new();
    let mut accepted = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match validate::v2_item(item) {
            Ok(()) => accepted.push(item),
            Err(e) => errors.push((i, e)),
        }
    }
    if !admitted.dropped {
        state.stats.accept(
            ws,
            accepted.iter().map(|item| Accepted {
                user: v2_user(item),
                event_id: item["id"].as_str(),
                seq: seq_of(item),
            }),
        );
    }
    if errors.is_empty() {
        finish(&state, ws, StatusCode::OK, json!({}))
    } else {
        finish(&state, ws, StatusCode::MULTI_STATUS, errors_json(&errors))
    }
}

async fn v2_entity(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    let Some(item) = parse(&body) else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"errors":[{"message":"bad JSON"}]}),
        );
    };
    if let Err(e) = validate::v2_item(&item) {
        return finish(&state, ws, StatusCode::BAD_REQUEST, errors_json(&[(0, e)]));
    }
    if !admitted.dropped {
        let event = Accepted {
            user: v2_user(&item),
            event_id: item["id"].as_str(),
            seq: seq_of(&item),
        };
        state.stats.accept(ws, [event]);
    }
    finish(&state, ws, StatusCode::OK, json!({}))
}

fn v1_error(e: ItemError) -> Value {
    json!({"meta": {"errors": [format!("{}: {}", e.field, e.message)]}})
}

async fn v1_identify(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    let Some(Value::Object(attributes)) = parse(&body) else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"meta":{"errors":["body must be an object"]}}),
        );
    };
    if let Err(e) = validate::v1_identify(&attributes) {
        return finish(&state, ws, StatusCode::BAD_REQUEST, v1_error(e));
    }
    if !admitted.dropped {
        let seq = attributes.get("seq").and_then(Value::as_i64);
        state.stats.accept(
            ws,
            [Accepted {
                user: Some(&id),
                event_id: None,
                seq,
            }],
        );
    }
    finish(&state, ws, StatusCode::OK, json!({}))
}

async fn v1_event_common(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    user: Option<String>,
) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    let Some(event) = parse(&body) else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"meta":{"errors":["bad JSON"]}}),
        );
    };
    if let Err(e) = validate::v1_event(&event, user.is_none()) {
        return finish(&state, ws, StatusCode::BAD_REQUEST, v1_error(e));
    }
    if !admitted.dropped {
        let user = user.as_deref().or_else(|| event["anonymous_id"].as_str());
        state.stats.accept(
            ws,
            [Accepted {
                user,
                event_id: event["id"].as_str(),
                seq: seq_of(&event),
            }],
        );
    }
    finish(&state, ws, StatusCode::OK, json!({}))
}

async fn v1_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v1_event_common(state, headers, body, Some(id)).await
}

async fn v1_anonymous_event(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v1_event_common(state, headers, body, None).await
}

fn segment_user(message: &Value) -> Option<&str> {
    message["userId"]
        .as_str()
        .or_else(|| message["anonymousId"].as_str())
}

async fn segment_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    if body.len() > state.config.max_batch_bytes {
        return finish(
            &state,
            ws,
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error":"batch too large"}),
        );
    }
    let Some(items) = parse(&body).and_then(|v| v.get("batch").and_then(Value::as_array).cloned())
    else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"error":"body must be {\"batch\":[...]}"}),
        );
    };
    if items.len() > MAX_SEGMENT_BATCH_EVENTS {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"error":"more than 2500 events"}),
        );
    }
    if let Some((i, e)) = items
        .iter()
        .enumerate()
        .find_map(|(i, m)| validate::segment_message(m, None).err().map(|e| (i, e)))
    {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"error": format!("batch[{i}].{}: {}", e.field, e.message)}),
        );
    }
    if !admitted.dropped {
        state.stats.accept(
            ws,
            items.iter().map(|m| Accepted {
                user: segment_user(m),
                event_id: m["messageId"].as_str(),
                seq: seq_of(m),
            }),
        );
    }
    finish(&state, ws, StatusCode::OK, json!({"success": true}))
}

async fn segment_single(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Bytes,
    kind: &str,
) -> Response {
    let admitted = match admit(&state, &headers).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let ws = admitted.workspace.as_str();
    let Some(message) = parse(&body) else {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"error":"bad JSON"}),
        );
    };
    if let Err(e) = validate::segment_message(&message, Some(kind)) {
        return finish(
            &state,
            ws,
            StatusCode::BAD_REQUEST,
            json!({"error": format!("{}: {}", e.field, e.message)}),
        );
    }
    if !admitted.dropped {
        let event = Accepted {
            user: segment_user(&message),
            event_id: message["messageId"].as_str(),
            seq: seq_of(&message),
        };
        state.stats.accept(ws, [event]);
    }
    finish(&state, ws, StatusCode::OK, json!({"success": true}))
}

async fn segment_identify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    segment_single(state, headers, body, "identify").await
}

async fn segment_track(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    segment_single(state, headers, body, "track").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_specs_parse() {
        assert_eq!("fixed:20".parse(), Ok(Latency::Fixed(20)));
        assert_eq!("uniform:5-50".parse(), Ok(Latency::Uniform(5, 50)));
        assert_eq!("exp:30".parse(), Ok(Latency::Exponential(30)));
        assert!("uniform:50-5".parse::<Latency>().is_err());
        assert!("gauss:3".parse::<Latency>().is_err());
    }
}
