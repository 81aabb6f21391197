//! The emulator's routes: one handler per emulated endpoint, each behind the
//! [`gate`](super::gate).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::gate::{date_arrival, gated, Admitted, Head, Reply};
use super::stats::Accepted;
use super::validate::{self, ItemError};
use super::{AppState, MAX_SEGMENT_BATCH_EVENTS};

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
        .route("/auth/token", post(token))
        .route("/json/{*path}", post(json_api).put(json_api))
        .route(
            "/stats",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.stats.snapshot()) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn(date_arrival))
        .with_state(state)
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
        // Strict (Pipelines' `X-Strict-Mode: 1`): one invalid call refuses the request.
        // Otherwise as Segment and permissive Pipelines do: 200, the invalid calls
        // dropped on the API's side (logged there, never delivered).
        let mut valid = Vec::with_capacity(items.len());
        for (i, message) in items.iter().enumerate() {
            match validate::segment_message(message, None) {
                Ok(()) => valid.push(message),
                Err(e) if admitted.strict => {
                    return Err(bad(segment_refusal(&format!(
                        "batch[{i}].{}: {}",
                        e.field, e.message
                    ))))
                }
                Err(_) => {}
            }
        }
        state.stats.accept(
            &admitted.workspace,
            admitted.dropped,
            valid.iter().copied().map(segment_event),
        );
        keep(state, admitted, valid.iter().copied());
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

/// `POST /auth/token`: the OAuth2 client-credentials grant (form or JSON
/// `client_id`/`client_secret`, checked against the keys as `USER:PASSWORD`; any pair
/// when none are configured): a new access token that lives `--token-ttl-s`.
async fn token(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> =
        serde_json::from_slice::<serde_json::Map<String, Value>>(&body)
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                    .collect()
            })
            .unwrap_or_else(|_| url_pairs(&String::from_utf8_lossy(&body)));
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(id), Some(secret)) = (field("client_id"), field("client_secret")) else {
        return super::gate::answer(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
    };
    let known = state.keys.is_empty() || state.keys.get(id).is_some_and(|p| p == secret);
    if !known {
        state.stats.token_refused();
        return super::gate::answer(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
    }
    let access = ulid::Ulid::new().to_string();
    let ttl = std::time::Duration::from_secs(state.config.token_ttl_s);
    state.tokens.insert(
        access.clone(),
        (id.to_string(), std::time::Instant::now() + ttl),
    );
    state.stats.token_issued();
    super::gate::answer(
        StatusCode::OK,
        json!({"access_token": access, "token_type": "Bearer", "expires_in": state.config.token_ttl_s}),
    )
}

/// `a=b&c=d`, percent-decoded (`+` as a space).
fn url_pairs(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match (bytes[i], bytes.get(i + 1..i + 3)) {
                (b'%', Some(hex)) => match u8::from_str_radix(&String::from_utf8_lossy(hex), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                },
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// `POST|PUT /json/{path}`: any JSON API. The body is one event (an object), or a batch:
/// an object whose only field is an array of them. An event whose properties or
/// traits hold `mock_reject` is refused: a single event with a 400, an event of a
/// batch listed in a 200's `{"errors": [{"index", "reason"}]}`.
async fn json_api(State(state): State<Arc<AppState>>, head: Head, body: Bytes) -> Response {
    gated(state, head, body, |state, admitted, body| {
        if body.len() > state.config.max_batch_bytes {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "request too large"}),
            ));
        }
        let value = parse(body).ok_or_else(|| bad(json!({"error": "bad JSON"})))?;
        let batch = value
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.values().next())
            .and_then(Value::as_array);
        let (items, single): (Vec<&Value>, bool) = match batch {
            Some(items) => (items.iter().collect(), false),
            None => (vec![&value], true),
        };
        let mut errors = Vec::new();
        let mut accepted = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let rejected = ["properties", "traits"]
                .iter()
                .find_map(|f| item[f]["mock_reject"].as_str());
            match (rejected, item.is_object()) {
                (None, true) => accepted.push(*item),
                (reason, _) => {
                    let reason = reason.unwrap_or("not a JSON object");
                    if single {
                        return Err(bad(json!({"error": reason})));
                    }
                    errors.push(json!({"index": i, "reason": reason}));
                }
            }
        }
        let events = accepted.iter().map(|item| Accepted {
            user: item["user_id"]
                .as_str()
                .or_else(|| item["userId"].as_str())
                .or_else(|| item["anonymous_id"].as_str()),
            event_id: item["message_id"]
                .as_str()
                .or_else(|| item["messageId"].as_str()),
            seq: seq_of(item),
        });
        state
            .stats
            .accept(&admitted.workspace, admitted.dropped, events);
        keep(state, admitted, accepted.iter().copied());
        Ok((StatusCode::OK, json!({"errors": errors})))
    })
    .await
}
