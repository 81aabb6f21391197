//! The emulator's routes: the gate every request passes (auth, the per-workspace
//! window, latency, faults) and one handler per emulated endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use super::stats::Accepted;
use super::validate::{self, ItemError};
use super::{AppState, Fault, MAX_SEGMENT_BATCH_EVENTS};

pub(super) fn router(state: Arc<AppState>) -> Router {
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
        .layer(middleware::from_fn(date_arrival))
        .with_state(state)
}

/// What the gate decided for a request that may go on.
struct Admitted {
    workspace: String,
    /// Over the limit under `--silent-throttle`: answer 200, keep nothing.
    dropped: bool,
}

/// When a request's head came in: the instant it is counted at, as an API's front
/// door counts it, before the body is read (a large body read on a busy core would
/// otherwise date it late, and two requests a second apart could count as one second).
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

/// Dates each request as it comes in, before any extractor reads its body.
async fn date_arrival(mut request: axum::extract::Request, next: Next) -> Response {
    request.extensions_mut().insert(Arrived(Instant::now()));
    next.run(request).await
}

/// A request's headers and when it arrived.
struct Head {
    headers: HeaderMap,
    arrived: Instant,
}

impl<S: Send + Sync> FromRequestParts<S> for Head {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let arrived = parts
            .extensions
            .get::<Arrived>()
            .map_or_else(Instant::now, |a| a.0);
        Ok(Head {
            headers: std::mem::take(&mut parts.headers),
            arrived,
        })
    }
}

/// Auth, rate limit, latency and faults: everything before the route's own work.
async fn admit(state: &AppState, head: &Head) -> Result<Admitted, Response> {
    let headers = &head.headers;
    state.controls.started();
    let Some(workspace) = authorize(state, headers) else {
        state.stats.answered("", 401);
        return Err(answer(
            StatusCode::UNAUTHORIZED,
            json!({"meta":{"error":"unauthorized"}}),
        ));
    };
    let in_window = state.stats.arrive(&workspace, head.arrived);
    if let Some((status, retry_after)) = state.controls.refusal(&workspace) {
        state.controls.arrived(&workspace, head.arrived, status);
        return Err(refused(state, &workspace, headers, status, retry_after));
    }
    let config = &state.config;
    let over = config.limit_per_s > 0 && in_window > config.limit_per_s as usize;
    if over && !config.silent_throttle {
        state.controls.arrived(&workspace, head.arrived, 429);
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
    state.controls.arrived(&workspace, head.arrived, 0);
    let delay = state.controls.delay(&workspace, config.latency);
    state.controls.hold(delay).await;
    if config.fault_rate > 0.0 && fastrand::f64() < config.fault_rate && !config.faults.is_empty() {
        let fault = config.faults[fastrand::usize(..config.faults.len())];
        return Err(inject(state, &workspace, fault).await);
    }
    Ok(Admitted {
        workspace,
        dropped: over,
    })
}

/// A refusal a control asked for. Its body echoes the caller's credentials, as a
/// careless API's would: what the worker logs or dead-letters must not repeat them.
fn refused(
    state: &AppState,
    workspace: &str,
    headers: &HeaderMap,
    status: u16,
    retry_after: Option<u64>,
) -> Response {
    state.stats.answered(workspace, status);
    let echoed = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let decoded = echoed
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut response = answer(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({"errors":[{"message": format!("refused; you sent {echoed} ({decoded})")}]}),
    );
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            seconds.to_string().parse().expect("digits"),
        );
    }
    response
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
    let accepted = |u: &str| state.keys.get(u).is_some_and(|p| p == password);
    if state.keys.is_empty() || accepted(user) || accepted("*") {
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

/// A handler's answer: the status and the JSON body.
type Reply = (StatusCode, Value);

/// The gate, then `handle` on the admitted request, then the answer counted in the
/// statistics. Handlers only decide; early refusals are `Err` replies.
async fn gated(
    state: Arc<AppState>,
    head: Head,
    body: Bytes,
    handle: impl FnOnce(&AppState, &Admitted, &Bytes) -> Result<Reply, Reply>,
) -> Response {
    let admitted = match admit(&state, &head).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let (status, reply) = handle(&state, &admitted, &body).unwrap_or_else(|refusal| refusal);
    finish(&state, &admitted.workspace, status, reply)
}

fn bad(body: Value) -> Reply {
    (StatusCode::BAD_REQUEST, body)
}

/// The `batch` array of a batch body, refusing bodies over the size limit.
fn batch_items(
    state: &AppState,
    body: &Bytes,
    refusal: impl Fn(&str) -> Value,
) -> Result<Vec<Value>, Reply> {
    if body.len() > state.config.max_batch_bytes {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, refusal("request too large")));
    }
    parse(body)
        .and_then(|v| v.get("batch").and_then(Value::as_array).cloned())
        .ok_or_else(|| bad(refusal("body must be {\"batch\":[...]}")))
}

fn cio_refusal(message: &str) -> Value {
    json!({"errors": [{"message": message}]})
}

fn v1_refusal(message: &str) -> Value {
    json!({"meta": {"errors": [message]}})
}

fn segment_refusal(message: &str) -> Value {
    json!({"error": message})
}

async fn v2_batch(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let items = batch_items(state, body, cio_refusal)?;
        if validate::rejects_request(&items) {
            return Err(bad(cio_refusal("request refused (test hook)")));
        }
        let mut errors = Vec::new();
        let mut accepted = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match validate::v2_item(item) {
                Ok(()) => accepted.push(item),
                Err(e) => errors.push((i, e)),
            }
        }
        let events = accepted.iter().map(|item| Accepted {
            user: v2_user(item),
            event_id: item["id"].as_str(),
            seq: seq_of(item),
        });
        state
            .stats
            .accept(&admitted.workspace, admitted.dropped, events);
        keep(state, admitted, accepted.iter().copied());
        if errors.is_empty() {
            Ok((StatusCode::OK, json!({})))
        } else {
            Ok((StatusCode::MULTI_STATUS, errors_json(&errors)))
        }
    })
    .await
}

async fn v2_entity(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let item = parse(body).ok_or_else(|| bad(cio_refusal("bad JSON")))?;
        validate::v2_item(&item).map_err(|e| bad(errors_json(&[(0, e)])))?;
        let event = Accepted {
            user: v2_user(&item),
            event_id: item["id"].as_str(),
            seq: seq_of(&item),
        };
        state
            .stats
            .accept(&admitted.workspace, admitted.dropped, [event]);
        keep(state, admitted, [&item]);
        Ok((StatusCode::OK, json!({})))
    })
    .await
}

/// Keeps what was accepted, when recording (nothing of a silently dropped request).
fn keep<'a>(state: &AppState, admitted: &Admitted, items: impl IntoIterator<Item = &'a Value>) {
    if !admitted.dropped {
        state.controls.accepted(&admitted.workspace, items);
    }
}

/// A v1 call as recorded: `{"v1": "METHOD ID", "body": …}`.
fn v1_call(method: &str, id: Option<&str>, body: Value) -> Value {
    let call = match id {
        Some(id) => format!("{method} {id}"),
        None => method.to_string(),
    };
    json!({"v1": call, "body": body})
}

fn v1_error(e: ItemError) -> Value {
    v1_refusal(&format!("{}: {}", e.field, e.message))
}

async fn v1_identify(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: Head,
    body: Bytes,
) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let Some(Value::Object(attributes)) = parse(body) else {
            return Err(bad(v1_refusal("body must be an object")));
        };
        validate::v1_identify(&attributes).map_err(|e| bad(v1_error(e)))?;
        let event = Accepted {
            user: Some(&id),
            event_id: None,
            seq: attributes.get("seq").and_then(Value::as_i64),
        };
        state
            .stats
            .accept(&admitted.workspace, admitted.dropped, [event]);
        keep(
            state,
            admitted,
            [&v1_call("PUT", Some(&id), Value::Object(attributes))],
        );
        Ok((StatusCode::OK, json!({})))
    })
    .await
}

/// `POST /api/v1/customers/{id}/events` (`user` is the id) and `POST /api/v1/events`.
async fn v1_event_common(
    state: Arc<AppState>,
    head: Head,
    body: Bytes,
    user: Option<String>,
) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let event = parse(body).ok_or_else(|| bad(v1_refusal("bad JSON")))?;
        validate::v1_event(&event, user.is_none()).map_err(|e| bad(v1_error(e)))?;
        let accepted = Accepted {
            user: user.as_deref().or_else(|| event["anonymous_id"].as_str()),
            event_id: event["id"].as_str(),
            seq: seq_of(&event),
        };
        state
            .stats
            .accept(&admitted.workspace, admitted.dropped, [accepted]);
        keep(
            state,
            admitted,
            [&v1_call("POST", user.as_deref(), event.clone())],
        );
        Ok((StatusCode::OK, json!({})))
    })
    .await
}

async fn v1_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    head: Head,
    body: Bytes,
) -> Response {
    v1_event_common(state, head, body, Some(id)).await
}

async fn v1_anonymous_event(
    State(state): State<Arc<AppState>>,
    head: Head,
    body: Bytes,
) -> Response {
    v1_event_common(state, head, body, None).await
}

fn segment_user(message: &Value) -> Option<&str> {
    message["userId"]
        .as_str()
        .or_else(|| message["anonymousId"].as_str())
}

fn segment_event(message: &Value) -> Accepted<'_> {
    Accepted {
        user: segment_user(message),
        event_id: message["messageId"].as_str(),
        seq: seq_of(message),
    }
}

async fn segment_batch(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let items = batch_items(state, body, segment_refusal)?;
        if items.len() > MAX_SEGMENT_BATCH_EVENTS {
            return Err(bad(segment_refusal("more than 2500 events")));
        }
        for (i, message) in items.iter().enumerate() {
            validate::segment_message(message, None).map_err(|e| {
                bad(segment_refusal(&format!(
                    "batch[{i}].{}: {}",
                    e.field, e.message
                )))
            })?;
        }
        state.stats.accept(
            &admitted.workspace,
            admitted.dropped,
            items.iter().map(segment_event),
        );
        keep(state, admitted, &items);
        Ok((StatusCode::OK, json!({"success": true})))
    })
    .await
}

/// `POST /v1/identify` and `POST /v1/track`.
async fn segment_single(state: Arc<AppState>, head: Head, body: Bytes, kind: &str) -> Response {
    gated(state, head, body, |state, admitted, body| {
        let message = parse(body).ok_or_else(|| bad(segment_refusal("bad JSON")))?;
        validate::segment_message(&message, Some(kind))
            .map_err(|e| bad(segment_refusal(&format!("{}: {}", e.field, e.message))))?;
        state.stats.accept(
            &admitted.workspace,
            admitted.dropped,
            [segment_event(&message)],
        );
        keep(state, admitted, [&message]);
        Ok((StatusCode::OK, json!({"success": true})))
    })
    .await
}

async fn segment_identify(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    segment_single(state, head, body, "identify").await
}

async fn segment_track(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    segment_single(state, head, body, "track").await
}
