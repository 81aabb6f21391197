//! `kind = "http"`: any JSON API. The URL, the headers and each event's body are
//! templates over the event (Jinja syntax through minijinja: `{{ user_id | segment }}`,
//! `{{ properties | tojson }}`; an unknown name is an error, not an empty string); a
//! request carries one event, or one batch `{"<batch_field>": [bodies…]}`; auth is a
//! Bearer key, Basic, an OAuth2 client-credentials token or none; and a batch's answer
//! may list refused events (`item_errors`, a JSON pointer), so a partial failure
//! dead-letters only what failed.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use minijinja::{Environment, UndefinedBehavior};
use reqwest::Method;
use serde_json::Value;

mod body_check;
mod context;

use body_check::BodyError;
use context::Context;

use super::customerio::unknown_workspace;
use super::http::{excerpt, Answer, RetryingClient};
use super::segment::is_client_error;
use super::{
    ClientCredentials, Credentials, Destination, Encoded, Failure, FailureReason, ItemOutcome,
};
use crate::config::{AuthMode, Config, SendMode};
use crate::event::{Event, InvalidEvent};
use crate::limit::Limiter;
use crate::metrics::Metrics;

const URL: &str = "url";
const BODY: &str = "body";

/// A JSON API as `[destination]` (kind "http") describes it.
pub struct JsonApi {
    sender: RetryingClient,
    templates: Environment<'static>,
    /// The URL's template.
    url: Template,
    /// The headers' templates, in the order the config lists them.
    headers: Vec<Template>,
    has_body: bool,
    /// Whether any template (body, URL, a header) renders per event.
    renders: bool,
    method: Method,
    send: SendMode,
    batch_field: String,
    item_errors: Option<String>,
    credentials: HashMap<String, Credentials>,
    max_item_bytes: usize,
    /// `scheme://host[:port]` as the config writes it: every rendered URL is it, or
    /// starts with it and a `/`.
    origin: String,
}

/// One templated text of a request: its name in the environment and, when it has no
/// template syntax, the text itself (which may be a key: no `Debug`).
struct Template {
    name: String,
    /// The header it fills (empty for the URL).
    header: String,
    fixed: Option<String>,
}

impl Template {
    fn new(name: String, header: &str, text: &str) -> Self {
        let templated = ["{{", "{%", "{#"].iter().any(|m| text.contains(m));
        // As minijinja renders it: without one trailing newline.
        let fixed = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        Template {
            name,
            header: header.to_string(),
            fixed: (!templated).then(|| fixed.to_string()),
        }
    }
}

impl std::fmt::Debug for JsonApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonApi")
            .field("method", &self.method)
            .field("send", &self.send)
            .field(
                "headers",
                &self.headers.iter().map(|h| &h.header).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Why the destination could not be built from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum JsonApiError {
    /// The HTTP client (TLS set-up).
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// A template that does not compile.
    #[error("destination template: {0}")]
    Template(#[from] minijinja::Error),
}

impl JsonApi {
    /// Builds the client for `config`'s destination (kind "http") and its workspaces.
    pub fn new(
        config: &Config,
        limiter: Arc<Limiter>,
        metrics: Metrics,
    ) -> Result<Self, JsonApiError> {
        let d = &config.destination;
        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Strict);
        // `{{ user_id | segment }}`: one URL path segment (`/`, `?`, `#` and the rest
        // percent-encoded; urlencode keeps `/`).
        templates.add_filter("tojson", context::tojson);
        templates.add_filter("segment", |text: String| -> String {
            percent_encoding::utf8_percent_encode(&text, super::customerio::PATH_SEGMENT)
                .to_string()
        });
        let url = d.url.clone().unwrap_or_default();
        templates.add_template_owned(URL, url.clone())?;
        let url = Template::new(URL.into(), "", &url);
        if let Some(body) = &d.body {
            templates.add_template_owned(BODY, body.clone())?;
        }
        let mut headers = Vec::new();
        for (name, value) in &d.headers {
            let key = format!("header:{name}");
            templates.add_template_owned(key.clone(), value.clone())?;
            headers.push(Template::new(key, name, value));
        }
        let credentials = config
            .workspaces
            .iter()
            .map(|w| {
                let key = w.api_key.clone();
                let c = match d.auth {
                    AuthMode::Bearer => Credentials::Bearer(key),
                    AuthMode::Basic => Credentials::Basic {
                        user: w.site_id.clone(),
                        password: key,
                    },
                    AuthMode::Oauth2 => Credentials::OAuth2(ClientCredentials::new(
                        d.token_url.clone().unwrap_or_default(),
                        w.site_id.clone(),
                        key,
                    )),
                    AuthMode::None => Credentials::None,
                };
                (w.id.clone(), c)
            })
            .collect();
        let renders =
            d.body.is_some() || url.fixed.is_none() || headers.iter().any(|h| h.fixed.is_none());
        Ok(JsonApi {
            sender: RetryingClient::new(d, config.retry.clone(), limiter, metrics)?,
            templates,
            url,
            headers,
            has_body: d.body.is_some(),
            renders,
            method: Method::from_bytes(d.method.as_bytes()).unwrap_or(Method::POST),
            send: d.send,
            batch_field: d.batch_field.clone(),
            item_errors: d.item_errors.clone(),
            credentials,
            max_item_bytes: config.batch.max_event_bytes,
            origin: crate::config::http_origin(d.url.as_deref().unwrap_or_default())
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// `name`'s template rendered from the event's `context`.
    fn render(&self, name: &str, context: &minijinja::Value) -> Result<String, InvalidEvent> {
        self.templates
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| InvalidEvent::Template(format!("{name}: {e}")))
    }

    /// `template` rendered, or its text when it has no template syntax (a fixed URL or
    /// header renders nothing per event).
    fn render_or_fixed(
        &self,
        template: &Template,
        context: &minijinja::Value,
    ) -> Result<String, InvalidEvent> {
        match &template.fixed {
            Some(text) => Ok(text.clone()),
            None => self.render(&template.name, context),
        }
    }

    /// Sends one request per event, in order.
    async fn send_each(
        &self,
        workspace: &str,
        credentials: &Credentials,
        items: &[Encoded],
    ) -> Vec<ItemOutcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let Encoded::Call { url, headers, body } = item else {
                outcomes.push(internal("an item not encoded for this destination"));
                continue;
            };
            let answer = self
                .sender
                .send_with(
                    workspace,
                    credentials,
                    self.method.clone(),
                    url,
                    headers,
                    Bytes::copy_from_slice(body),
                )
                .await;
            outcomes.push(match answer {
                Answer::Accepted(_) | Answer::Partial(_) => ItemOutcome::Delivered,
                Answer::Rejected(failure) => ItemOutcome::Rejected(failure),
                Answer::TooLarge(failure) => ItemOutcome::Rejected(Failure {
                    reason: FailureReason::TooLarge,
                    ..failure
                }),
            });
        }
        outcomes
    }

    /// Sends `items` as one batch (the first event's URL and headers); a 413, or a 400
    /// on several events, splits it and sends the halves in order.
    fn send_batch<'a>(
        &'a self,
        workspace: &'a str,
        credentials: &'a Credentials,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            let Some(Encoded::Call { url, headers, .. }) = items.first() else {
                return vec![internal("an item not encoded for this destination"); items.len()];
            };
            // One request goes to one URL with one set of headers: a batch whose events
            // render others is sent as runs of equal ones, in order.
            let run = items
                .iter()
                .take_while(|i| matches!(i, Encoded::Call { url: u, headers: h, .. } if u == url && h == headers))
                .count();
            if run < items.len() {
                let (first, rest) = items.split_at(run.max(1));
                let mut outcomes = self.send_batch(workspace, credentials, first).await;
                outcomes.extend(self.send_batch(workspace, credentials, rest).await);
                return outcomes;
            }
            let field = serde_json::to_string(&self.batch_field).expect("a string serializes");
            let mut body = Vec::with_capacity(items.iter().map(Encoded::len).sum::<usize>() + 16);
            body.push(b'{');
            body.extend_from_slice(field.as_bytes());
            body.extend_from_slice(b":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                if let Encoded::Call { body: b, .. } = item {
                    body.extend_from_slice(b);
                }
            }
            body.extend_from_slice(b"]}");
            let answer = self
                .sender
                .send_with(
                    workspace,
                    credentials,
                    self.method.clone(),
                    url,
                    headers,
                    body.into(),
                )
                .await;
            match answer {
                Answer::Accepted(text) => self.item_outcomes(&text, 200, items.len()),
                Answer::Partial(text) => self.item_outcomes(&text, 207, items.len()),
                Answer::TooLarge(_) if items.len() > 1 => {
                    self.halves(workspace, credentials, items).await
                }
                Answer::Rejected(f) if items.len() > 1 && is_client_error(&f) => {
                    self.halves(workspace, credentials, items).await
                }
                Answer::TooLarge(failure) => vec![ItemOutcome::Rejected(Failure {
                    reason: FailureReason::TooLarge,
                    ..failure
                })],
                Answer::Rejected(failure) => vec![ItemOutcome::Rejected(failure); items.len()],
            }
        })
    }

    async fn halves(
        &self,
        workspace: &str,
        credentials: &Credentials,
        items: &[Encoded],
    ) -> Vec<ItemOutcome> {
        let (left, right) = items.split_at(items.len() / 2);
        let mut outcomes = self.send_batch(workspace, credentials, left).await;
        outcomes.extend(self.send_batch(workspace, credentials, right).await);
        outcomes
    }

    /// A batch's 2xx answer as one outcome per event: the events `item_errors` lists
    /// are refused, the rest delivered. A 207 says some were refused: without a
    /// readable list naming them every event is refused (nothing counts as delivered
    /// that may not be), as is any batch whose list holds an entry without a valid
    /// `index`.
    fn item_outcomes(&self, text: &str, status: u16, count: usize) -> Vec<ItemOutcome> {
        let unreadable = || {
            let failure = Failure {
                status: Some(status),
                ..Failure::without_request(FailureReason::Unreadable207, excerpt(text))
            };
            vec![ItemOutcome::Rejected(failure); count]
        };
        let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let listed = self
            .item_errors
            .as_deref()
            .and_then(|pointer| answer.pointer(pointer))
            .and_then(Value::as_array);
        let Some(listed) = listed else {
            return if status == 207 {
                unreadable()
            } else {
                vec![ItemOutcome::Delivered; count]
            };
        };
        let mut outcomes = vec![ItemOutcome::Delivered; count];
        for entry in listed {
            let Some(index) = entry["index"]
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < count)
            else {
                return unreadable();
            };
            let why = ["reason", "message", "error"]
                .iter()
                .find_map(|k| entry[k].as_str())
                .unwrap_or("listed as refused");
            outcomes[index] = ItemOutcome::Rejected(Failure {
                status: Some(status),
                ..Failure::without_request(FailureReason::InvalidItem, excerpt(why))
            });
        }
        if status == 207 && listed.is_empty() {
            return unreadable();
        }
        outcomes
    }
}

fn internal(detail: &str) -> ItemOutcome {
    ItemOutcome::Rejected(Failure::without_request(
        FailureReason::InternalError,
        detail,
    ))
}

impl Destination for JsonApi {
    fn encode(&self, event: &Event) -> Result<Encoded, InvalidEvent> {
        let fields = Context::of(event);
        // Converted for the templates once, and only when one renders.
        let context = if self.renders {
            fields.template_value()
        } else {
            minijinja::Value::UNDEFINED
        };
        let body = if self.has_body {
            self.templates
                .get_template(BODY)
                .map_err(BodyError::Render)
                .and_then(|t| body_check::render_json(&t, &context))
                .map_err(|e| match e {
                    BodyError::Render(e) => InvalidEvent::Template(format!("{BODY}: {e}")),
                    BodyError::NotJson(e) => {
                        InvalidEvent::Template(format!("body is not JSON: {e}"))
                    }
                })?
                .into_bytes()
        } else {
            serde_json::to_vec(&fields).expect("JSON values serialize")
        };
        if body.len() > self.max_item_bytes {
            return Err(InvalidEvent::TooLarge {
                size: body.len(),
                limit: self.max_item_bytes,
            });
        }
        let url = self.render_or_fixed(&self.url, &context)?;
        let at_origin = url
            .strip_prefix(&self.origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !at_origin {
            return Err(InvalidEvent::Template(format!(
                "url renders outside {}",
                self.origin
            )));
        }
        let headers = self
            .headers
            .iter()
            .map(|h| Ok((h.header.clone(), self.render_or_fixed(h, &context)?)))
            .collect::<Result<_, InvalidEvent>>()?;
        Ok(Encoded::Call { url, headers, body })
    }

    fn deliver<'a>(
        &'a self,
        workspace: &'a str,
        items: &'a [Encoded],
    ) -> BoxFuture<'a, Vec<ItemOutcome>> {
        Box::pin(async move {
            let Some(credentials) = self.credentials.get(workspace) else {
                return unknown_workspace(workspace, items.len());
            };
            match self.send {
                SendMode::Event => self.send_each(workspace, credentials, items).await,
                SendMode::Batch => self.send_batch(workspace, credentials, items).await,
            }
        })
    }
}

#[cfg(test)]
mod tests;
