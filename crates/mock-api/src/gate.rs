//! The gate every emulated request passes before its route's own work: dated as its
//! head arrives, then auth, the per-workspace window (429 with `Retry-After`, or a
//! silent drop), the controls' refusals, latency and injected faults; and the answer
//! counted in the statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Value};

use super::{AppState, Fault};

/// What the gate decided for a request that may go on.
pub(super) struct Admitted {
    pub(super) workspace: String,
    /// Over the limit under `--silent-throttle`: answer 200, keep nothing.
    pub(super) dropped: bool,
    /// The request asked for strict validation (`X-Strict-Mode: 1`, Customer.io
    /// Pipelines): an invalid call is refused, not dropped behind a 200.
    pub(super) strict: bool,
}

/// When a request's head came in: the instant it is counted at, as an API's front
/// door counts it, before the body is read (a large body read on a busy core would
/// otherwise date it late, and two requests a second apart could count as one second).
#[derive(Debug, Clone, Copy)]
struct Arrived(Instant);

/// Dates each request as it comes in, before any extractor reads its body.
pub(super) async fn date_arrival(mut request: axum::extract::Request, next: Next) -> Response {
    request.extensions_mut().insert(Arrived(Instant::now()));
    next.run(request).await
}

/// A request's headers and when it arrived.
pub(super) struct Head {
    headers: HeaderMap,
    arrived: Instant,
    /// A `/json/…` route (any JSON API): Bearer keys and tokens, or no auth, are
    /// accepted there; Customer.io's and Segment's routes take Basic only.
    json: bool,
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
            json: parts.uri.path().starts_with("/json/"),
        })
    }
}

/// Auth, rate limit, latency and faults: everything before the route's own work.
async fn admit(state: &AppState, head: &Head) -> Result<Admitted, Response> {
    let headers = &head.headers;
    state.controls.started();
    let Some(workspace) = authorize(state, headers, head.json) else {
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
        strict: headers.get("x-strict-mode").is_some_and(|v| v == "1"),
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

/// Who sends, if the credentials are accepted: the Basic user; on `/json/…` routes,
/// for a Bearer, the
/// client an issued, unexpired token belongs to, or the user whose password the key is
/// (any key, as `bearer`, when no keys are configured); with no `Authorization` at
/// all, `anonymous` when no keys are configured.
fn authorize(state: &AppState, headers: &HeaderMap, json: bool) -> Option<String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        // A JSON API without auth: only when no keys are configured.
        return (json && state.keys.is_empty()).then(|| "anonymous".to_string());
    };
    let value = value.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ").filter(|_| json) {
        if let Some(issued) = state.tokens.get(token) {
            let (client, until) = issued.value();
            return (Instant::now() < *until).then(|| client.clone());
        }
        if state.keys.is_empty() {
            return (!token.is_empty()).then(|| "bearer".to_string());
        }
        return state
            .keys
            .iter()
            .find(|(_, p)| p.as_str() == token)
            .map(|(u, _)| u.clone());
    }
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

pub(super) fn answer(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn finish(state: &AppState, workspace: &str, status: StatusCode, body: Value) -> Response {
    state.stats.answered(workspace, status.as_u16());
    answer(status, body)
}

/// A handler's answer: the status and the JSON body.
pub(super) type Reply = (StatusCode, Value);

/// The gate, then `handle` on the admitted request, then the answer counted in the
/// statistics. Handlers only decide; early refusals are `Err` replies.
pub(super) async fn gated(
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
