//! One request, sent until its answer is final: each attempt takes a token from the
//! workspace's bucket, transient failures wait out a jittered backoff (or the API's
//! `Retry-After`), and 401/403 keep retrying loudly instead of dead-lettering.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;

use super::auth::{Credentials, TokenFailure};
use super::dated_body::DatedBody;
use super::retry::{classify, is_throttle, retry_after, status_class, AnswerClass};
use super::retry_budget::{Again, RetryBudget};
use super::{Failure, FailureReason};
use crate::config::{DestinationConfig, RetryConfig};
use crate::limit::Limiter;
use crate::metrics::Metrics;

/// Longest part of an API answer kept in a failure's detail.
const EXCERPT_BYTES: usize = 300;

/// Most of an answer's body read: a 207's item errors for the largest batch fit
/// many times over; an API (or a proxy) that sends more is cut off there, so an
/// endless or huge body never holds memory or a lane.
pub(super) const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The final answer to one request.
#[derive(Debug)]
pub enum Answer {
    /// 2xx (but 207), with the body (an API may list refused items there too).
    Accepted(String),
    /// 207, with the body listing the refused items.
    Partial(String),
    /// 413: the caller should split the request.
    TooLarge(Failure),
    /// Refused for good, or retries exhausted.
    Rejected(Failure),
}

/// Sends requests through the shared client, the limiter and the retry policy.
#[derive(Debug)]
pub struct RetryingClient {
    client: reqwest::Client,
    limiter: Arc<Limiter>,
    retry: RetryConfig,
    metrics: Metrics,
}

impl RetryingClient {
    /// The one HTTP client a destination shares across all its lanes: keep-alive pool,
    /// connect and request timeouts, rustls TLS.
    pub fn new(
        config: &DestinationConfig,
        retry: RetryConfig,
        limiter: Arc<Limiter>,
        metrics: Metrics,
    ) -> reqwest::Result<Self> {
        Self::with_headers(config, retry, limiter, metrics, HeaderMap::new())
    }

    /// [`new`](Self::new), with `headers` sent on every request (e.g. Pipelines'
    /// `X-Strict-Mode`).
    pub fn with_headers(
        config: &DestinationConfig,
        retry: RetryConfig,
        limiter: Arc<Limiter>,
        metrics: Metrics,
        headers: HeaderMap,
    ) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout_ms.duration())
            .timeout(config.request_timeout_ms.duration())
            .pool_max_idle_per_host(config.pool_size)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(RetryingClient {
            client,
            limiter,
            retry,
            metrics,
        })
    }

    /// Sends one request for `workspace` until the answer is final: attempts, each
    /// judged by [`attempt`](Self::attempt), with the waits the [`RetryBudget`] sets.
    pub async fn send(
        &self,
        workspace: &str,
        credentials: &Credentials,
        method: Method,
        url: &str,
        body: Bytes,
    ) -> Answer {
        self.send_with(workspace, credentials, method, url, &[], body)
            .await
    }

    /// [`send`](Self::send) with `headers` of this request's own.
    pub async fn send_with(
        &self,
        workspace: &str,
        credentials: &Credentials,
        method: Method,
        url: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Answer {
        let request = Request {
            workspace,
            credentials,
            method,
            url,
            headers,
            body,
        };
        let mut refreshed = false;
        let mut budget = RetryBudget::new(&self.retry);
        let first_attempt = SystemTime::now();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let failure = |why: Why| Failure {
                reason: why.reason,
                detail: why.detail,
                status: why.status,
                attempts,
                first_attempt,
                last_attempt: SystemTime::now(),
            };
            let (outcome, renewed) = self.attempt(&request, attempts).await;
            let (again, why, took) = match outcome {
                Outcome::Accepted(text) => return Answer::Accepted(text),
                Outcome::Partial(text) => return Answer::Partial(text),
                Outcome::TooLarge(why) => return Answer::TooLarge(failure(why)),
                Outcome::Rejected(why) => return Answer::Rejected(failure(why)),
                Outcome::Again(again, why, took) => (again, why, took),
            };
            if again == Again::Auth {
                // An OAuth2 token refused: a new one is fetched and tried at once,
                // once per request; keys are tried again after the auth backoff.
                if why.status == Some(401) && !refreshed && renewed {
                    refreshed = true;
                    continue;
                }
                self.metrics
                    .auth_failure(workspace, why.status.unwrap_or_default());
            }
            let Some(wait) = budget.next_wait(again, took) else {
                let detail = format!("{attempts} attempts; last: {}: {}", why.reason, why.detail);
                return Answer::Rejected(failure(Why {
                    reason: FailureReason::RetriesExhausted,
                    detail,
                    status: why.status,
                }));
            };
            self.metrics.retry(workspace, why.reason, &why.detail);
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: a token from the workspace's bucket, the request, and its answer
    /// judged ([`Self::judge`]).
    /// Also says whether a refused (401) OAuth2 token was given up, so that the next
    /// attempt sends another.
    async fn attempt(&self, r: &Request<'_>, number: u32) -> (Outcome, bool) {
        let (waited, permit) = self.limiter.acquire(r.workspace).await;
        self.metrics.limiter_wait(r.workspace, waited);
        // After the limiter's wait, which can be long: a token taken before it could
        // expire on the way.
        let auth = match r.credentials.resolve(&self.client).await {
            Ok(auth) => auth,
            Err(failure) => {
                let (again, why) = match failure {
                    TokenFailure::Unreachable(d) => (
                        Again::Unreachable,
                        Why::new(FailureReason::Connect, d, None),
                    ),
                    TokenFailure::Transient(status, d) => (
                        Again::Transient { asked: None },
                        Why::new(
                            status.map_or(FailureReason::Network, FailureReason::Http),
                            d,
                            status,
                        ),
                    ),
                    TokenFailure::Refused(status, d) => (
                        Again::Auth,
                        Why::new(FailureReason::Http(status), d, Some(status)),
                    ),
                };
                return (Outcome::Again(again, why, Duration::ZERO), false);
            }
        };
        let mut request = self
            .client
            .request(r.method.clone(), r.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap(DatedBody::new(
                r.body.clone(),
                permit.departure(),
            )));
        if let Some(value) = &auth.header {
            let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in r.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if number > 1 {
            request = request.header("X-Retry-Count", (number - 1).to_string());
        }
        let sent = tokio::time::Instant::now();
        self.metrics.in_flight(true);
        // An answer whose body breaks off is no answer: a network failure.
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                read_capped(response)
                    .await
                    .map(|text| (status, headers, redact(&text, &auth.secrets)))
            }
            Err(e) => Err(e),
        };
        drop(permit);
        self.metrics.in_flight(false);
        let (status, headers, text) = match result {
            Err(e) => {
                self.metrics.request(r.workspace, "error", sent.elapsed());
                let (reason, again) = network_failure(&e);
                let why = Why::new(reason, e.to_string(), None);
                return (Outcome::Again(again, why, sent.elapsed()), false);
            }
            Ok(answer) => answer,
        };
        self.metrics
            .request(r.workspace, status_class(status), sent.elapsed());
        let renewed =
            status == reqwest::StatusCode::UNAUTHORIZED && r.credentials.refused(&auth).await;
        (
            self.judge(r.workspace, status, &headers, text, sent).await,
            renewed,
        )
    }

    /// An answer judged: final, or worth asking again and on what terms. A 429 (or a
    /// 503 with a `Retry-After`) also throttles the workspace's limiter.
    async fn judge(
        &self,
        workspace: &str,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        text: String,
        sent: tokio::time::Instant,
    ) -> Outcome {
        let code = status.as_u16();
        let why = || Why::new(FailureReason::Http(code), excerpt(&text), Some(code));
        match classify(status) {
            AnswerClass::Success => {
                self.succeeded(workspace);
                Outcome::Accepted(text)
            }
            AnswerClass::Partial => {
                self.succeeded(workspace);
                Outcome::Partial(text)
            }
            AnswerClass::Split => Outcome::TooLarge(why()),
            AnswerClass::Reject => Outcome::Rejected(why()),
            AnswerClass::RetryAuth => Outcome::Again(Again::Auth, why(), sent.elapsed()),
            AnswerClass::Retry => {
                let max = self.retry.max_retry_after_ms.duration();
                let asked = retry_after(headers, SystemTime::now()).map(|d| d.min(max));
                if is_throttle(status, asked) {
                    self.limiter.throttled(workspace, asked, sent).await;
                    self.metrics.throttled(workspace, asked);
                    self.report_rate(workspace);
                }
                Outcome::Again(Again::Transient { asked }, why(), sent.elapsed())
            }
        }
    }
}

/// Why a request got no answer, and whether to wait as for an unreachable API. A
/// connect that timed out is unreachable too (a host that drops SYNs), not a slow
/// answer.
fn network_failure(e: &reqwest::Error) -> (FailureReason, Again) {
    if e.is_connect() {
        (FailureReason::Connect, Again::Unreachable)
    } else if e.is_timeout() {
        (FailureReason::Timeout, Again::Transient { asked: None })
    } else {
        (FailureReason::Network, Again::Transient { asked: None })
    }
}

/// One request as the caller gave it, for each attempt to send again.
struct Request<'a> {
    workspace: &'a str,
    credentials: &'a Credentials,
    method: Method,
    url: &'a str,
    headers: &'a [(String, String)],
    body: Bytes,
}

/// What one attempt came to.
enum Outcome {
    /// 2xx, with its body.
    Accepted(String),
    /// 207, with its body.
    Partial(String),
    /// 413.
    TooLarge(Why),
    /// Refused for good.
    Rejected(Why),
    /// Worth asking again, on these terms; the attempt took this long.
    Again(Again, Why, Duration),
}

/// What went wrong in one attempt, as a failure and a log line name it.
struct Why {
    reason: FailureReason,
    detail: String,
    status: Option<u16>,
}

impl Why {
    fn new(reason: FailureReason, detail: String, status: Option<u16>) -> Self {
        Why {
            reason,
            detail,
            status,
        }
    }
}

impl RetryingClient {
    fn succeeded(&self, workspace: &str) {
        self.limiter.succeeded(workspace);
        self.report_rate(workspace);
    }

    fn report_rate(&self, workspace: &str) {
        if let Some(rate) = self.limiter.effective_rate(workspace) {
            self.metrics.set_effective_rate(workspace, rate);
        }
    }
}

/// An API answer with this request's secrets (keys, tokens, their Basic encodings)
/// masked, so an API that echoes them never puts them in a log line or a dead letter.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "****");
    }
    out
}

/// The answer's body up to [`MAX_RESPONSE_BYTES`] (the rest is never read: the
/// connection is dropped), as text with invalid UTF-8 replaced.
async fn read_capped(mut response: reqwest::Response) -> reqwest::Result<String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_RESPONSE_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The start of an API answer, on one line, never splitting a character.
pub fn excerpt(text: &str) -> String {
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
