//! How a request proves who sends it: Basic (Customer.io's `site_id:api_key`, or
//! Segment's write key as the user), a Bearer key, nothing, or an OAuth2 access token
//! from the client-credentials grant — fetched from the token URL, cached, refreshed
//! before it expires and after a 401, never logged.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::Secret;

/// A token is fetched again this long before the expiry its endpoint gave.
const REFRESH_EARLY: Duration = Duration::from_secs(30);
/// A token whose endpoint gave no `expires_in` is fetched again after this long.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The shortest a token is kept, whatever `expires_in` says (0 would fetch one per
/// request).
const MIN_LIFETIME: Duration = Duration::from_secs(5);
/// The most of a token endpoint's answer read.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// After a failed fetch the endpoint is left alone this long: the attempts that waited
/// on that fetch take its failure as their answer, and an attempt that comes later
/// waits out the rest of this before it asks again (its answer then is a fetch of its
/// own, so a retry budget counts only real answers).
const FAILURE_HOLD: Duration = Duration::from_secs(1);

/// Why no token could be had, and so how to wait before the next attempt.
#[derive(Debug, Clone)]
pub(super) enum TokenFailure {
    /// The endpoint could not be reached.
    Unreachable(String),
    /// It failed in a way that may pass (timeout, 5xx, 429, an unreadable answer).
    Transient(Option<u16>, String),
    /// It refused the client (4xx): a configuration problem.
    Refused(u16, String),
}

/// One workspace's credentials for its destination.
#[derive(Debug)]
pub enum Credentials {
    /// `Authorization: Basic user:password`.
    Basic {
        /// Not a secret (Customer.io's site id).
        user: String,
        /// The secret.
        password: Secret,
    },
    /// Basic with the secret as the user and a blank password (Segment's write key).
    KeyAsUser(Secret),
    /// `Authorization: Bearer <key>`.
    Bearer(Secret),
    /// An OAuth2 client-credentials token as the Bearer.
    OAuth2(ClientCredentials),
    /// No `Authorization` header.
    None,
}

/// What one attempt sends: the header's value, and every secret an answer must not
/// repeat.
pub(super) struct Resolved {
    /// `Authorization`'s value, if any.
    pub(super) header: Option<Secret>,
    /// The texts to mask in an answer (keys, tokens, their Basic encodings).
    pub(super) secrets: Vec<String>,
    /// The OAuth2 token sent, if that is the auth.
    pub(super) token: Option<Secret>,
}

impl Credentials {
    /// The header for the next attempt: an OAuth2 token is fetched if none is cached
    /// or it is about to expire. Err: the token endpoint's failure, in words.
    pub(super) async fn resolve(&self, client: &reqwest::Client) -> Result<Resolved, TokenFailure> {
        use base64::Engine;
        let basic = |user: &str, password: &str| {
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        };
        Ok(match self {
            Credentials::Basic { user, password } => {
                let token = basic(user, password.expose());
                Resolved {
                    header: Some(Secret::new(format!("Basic {token}"))),
                    secrets: vec![token, password.expose().to_string()],
                    token: None,
                }
            }
            Credentials::KeyAsUser(key) => {
                let token = basic(key.expose(), "");
                Resolved {
                    header: Some(Secret::new(format!("Basic {token}"))),
                    secrets: vec![token, key.expose().to_string()],
                    token: None,
                }
            }
            Credentials::Bearer(key) => Resolved {
                header: Some(Secret::new(format!("Bearer {}", key.expose()))),
                secrets: vec![key.expose().to_string()],
                token: None,
            },
            Credentials::OAuth2(grant) => {
                let token = grant.token(client).await?;
                Resolved {
                    header: Some(Secret::new(format!("Bearer {}", token.expose()))),
                    secrets: vec![
                        token.expose().to_string(),
                        grant.secret.expose().to_string(),
                    ],
                    token: Some(token),
                }
            }
            Credentials::None => Resolved {
                header: None,
                secrets: Vec::new(),
                token: None,
            },
        })
    }

    /// A 401 for an attempt that sent `sent`: an OAuth2 token still cached is dropped
    /// so the next attempt fetches a new one. True when the next attempt will send
    /// another token (this one dropped, or already replaced by a concurrent request's
    /// refresh); false for keys, which a retry will not change.
    pub(super) async fn refused(&self, sent: &Resolved) -> bool {
        let (Credentials::OAuth2(grant), Some(sent)) = (self, &sent.token) else {
            return false;
        };
        let mut cached = grant.cached.lock().await;
        if cached.as_ref().is_some_and(|(token, _)| token == sent) {
            *cached = None;
        }
        true
    }
}

/// The client-credentials grant of one workspace: `POST token_url` with
/// `grant_type=client_credentials`, the client id and secret; the answer's
/// `access_token` is the Bearer until `expires_in` seconds (less a margin).
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    secret: Secret,
    cached: Mutex<Option<(Secret, Instant)>>,
    /// The last fetch's failure, and when it came (see [`FAILURE_HOLD`]); read and
    /// written under `cached`'s lock.
    failed: std::sync::Mutex<Option<(TokenFailure, Instant)>>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl ClientCredentials {
    /// The grant for `client_id` and `secret` at `token_url`.
    pub fn new(token_url: impl Into<String>, client_id: impl Into<String>, secret: Secret) -> Self {
        ClientCredentials {
            token_url: token_url.into(),
            client_id: client_id.into(),
            secret,
            cached: Mutex::new(None),
            failed: std::sync::Mutex::new(None),
        }
    }

    /// The cached token, or a new one. One fetch at a time: attempts that need a token
    /// while one is fetched wait for it and share its answer; after a failure the
    /// endpoint is asked again only [`FAILURE_HOLD`] later.
    async fn token(&self, client: &reqwest::Client) -> Result<Secret, TokenFailure> {
        let asked = Instant::now();
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        match self.last_failure() {
            // The fetch this attempt waited on failed: that is its answer too.
            Some((failure, came)) if came >= asked => return Err(failure),
            // An older failure: the endpoint is left alone until the hold is over (the
            // lock held: who waits meanwhile shares the next answer).
            Some((_, came)) => tokio::time::sleep_until(came + FAILURE_HOLD).await,
            None => {}
        }
        let fetched = self.fetch(client).await;
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        match &fetched {
            Ok((token, until)) => {
                *cached = Some((token.clone(), *until));
                *failed = None;
            }
            Err(failure) => *failed = Some((failure.clone(), Instant::now())),
        }
        fetched.map(|(token, _)| token)
    }

    /// The last fetch's failure and when it came, if the last fetch failed.
    fn last_failure(&self) -> Option<(TokenFailure, Instant)> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One `POST token_url`: a token and until when to use it.
    async fn fetch(&self, client: &reqwest::Client) -> Result<(Secret, Instant), TokenFailure> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose()),
        ];
        let mut answer = client
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                let detail = format!("token endpoint: {}", without_url(&e));
                if e.is_connect() {
                    TokenFailure::Unreachable(detail)
                } else {
                    TokenFailure::Transient(None, detail)
                }
            })?;
        let status = answer.status();
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(|e| {
            TokenFailure::Transient(None, format!("token endpoint: {}", without_url(&e)))
        })? {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_TOKEN_ANSWER_BYTES - body.len())]);
            if body.len() == MAX_TOKEN_ANSWER_BYTES {
                break;
            }
        }
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let mut text = text.into_owned();
            for secret in [
                self.secret.expose().to_string(),
                form_encoded(self.secret.expose()),
            ] {
                if !secret.is_empty() {
                    text = text.replace(&secret, "****");
                }
            }
            let short: String = text.chars().take(200).collect();
            let detail = format!(
                "token endpoint answered {status}: {}",
                short.replace(['\n', '\r'], " ")
            );
            let code = status.as_u16();
            return Err(if status.is_client_error() && code != 408 && code != 429 {
                TokenFailure::Refused(code, detail)
            } else {
                TokenFailure::Transient(Some(code), detail)
            });
        }
        let parsed: TokenAnswer = serde_json::from_str(&text).map_err(|_| {
            TokenFailure::Transient(None, "token endpoint: no access_token in its answer".into())
        })?;
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs)
            .max(MIN_LIFETIME);
        let until = Instant::now() + lifetime.saturating_sub(REFRESH_EARLY.min(lifetime / 2));
        Ok((Secret::new(parsed.access_token), until))
    }
}

/// `text` as an `application/x-www-form-urlencoded` value.
fn form_encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%20", "+")
}

/// A client error in words, the URL left out (it may carry a query).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the token URL");
    }
    text
}
