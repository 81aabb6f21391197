//! The checks types cannot make: ranges, cross-field rules, and API keys read from
//! the environment. Every error names its key.

use std::collections::BTreeMap;

use super::{Config, ConfigError, Secret, CUSTOMERIO_MAX_BATCH_BYTES, SEGMENT_MAX_BATCH_EVENTS};

impl Config {
    /// Checks values that types cannot, and reads each workspace's API key from `env`.
    pub(super) fn validate(
        &mut self,
        env: &BTreeMap<String, String>,
        require_secrets: bool,
    ) -> Result<(), ConfigError> {
        self.check_kafka()?;
        self.check_batch()?;
        self.check_destination()?;
        self.check_limits()?;
        self.check_retry()?;
        self.check_workspaces(env, require_secrets)
    }

    /// `[kafka]`: brokers, group, topics, buffer bounds, the options sluice manages.
    fn check_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::key("kafka.brokers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(ConfigError::key("kafka.group_id", "must not be empty"));
        }
        self.check_kafka_topics()?;
        self.check_kafka_buffer()?;
        self.check_kafka_identity_and_options()
    }

    /// The source, dead-letter and parking topics: named, and each in its own role.
    fn check_kafka_topics(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::key(
                "kafka.topics",
                "needs at least one non-empty topic name",
            ));
        }
        if k.dlq_topic.trim().is_empty() {
            return Err(ConfigError::key("kafka.dlq_topic", "must not be empty"));
        }
        if k.topics.contains(&k.dlq_topic) {
            return Err(ConfigError::key(
                "kafka.dlq_topic",
                "must not be one of kafka.topics (dead letters would loop)",
            ));
        }
        if let Some(park) = self.parking_topic() {
            // The derived `<topic>.park` is checked too: it may be a source or the dlq.
            if park.trim().is_empty() || k.topics.contains(&park) || park == k.dlq_topic {
                return Err(ConfigError::key(
                    "kafka.park_topic",
                    "must be a topic of its own (not a source topic, not the dlq topic)",
                ));
            }
            if k.topics.len() != 1 {
                return Err(ConfigError::key(
                    "kafka.park_topic",
                    "works with exactly one source topic (parking partition n holds source partition n)",
                ));
            }
        }
        Ok(())
    }

    /// The in-process buffer's bounds, the commit and lag periods.
    fn check_kafka_buffer(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.max_buffered_events_per_workspace == Some(0) {
            return Err(ConfigError::key(
                "kafka.max_buffered_events_per_workspace",
                "must be greater than 0",
            ));
        }
        positive("kafka.commit_interval_ms", k.commit_interval_ms.ms())?;
        positive("kafka.lag_refresh_ms", k.lag_refresh_ms.ms())?;
        positive("kafka.max_buffered_events", k.max_buffered_events as u64)?;
        positive("kafka.park_readers", k.park_readers as u64)?;
        let least = 2 * self
            .batch_shapes()
            .map(|b| b.max_bytes)
            .max()
            .unwrap_or(self.batch.max_bytes);
        if k.max_buffered_bytes < least {
            return Err(ConfigError::key(
                "kafka.max_buffered_bytes",
                format!(
                    "must be at least twice the largest batch.max_bytes ({least}), so a full \
                     batch can form"
                ),
            ));
        }
        if k.resume_buffered() >= k.max_buffered_events {
            return Err(ConfigError::key(
                "kafka.resume_buffered_events",
                format!(
                    "must be below kafka.max_buffered_events ({})",
                    k.max_buffered_events
                ),
            ));
        }
        Ok(())
    }

    /// `kafka.group_instance_id`, and the librdkafka options sluice sets itself.
    fn check_kafka_identity_and_options(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if let Some(id) = &k.group_instance_id {
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if id.is_empty() || id.len() > 249 || !id.chars().all(valid) {
                return Err(ConfigError::key(
                    "kafka.group_instance_id",
                    "must be 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'",
                ));
            }
        }
        for key in [
            "enable.auto.offset.store",
            "enable.auto.commit",
            "group.id",
            "group.instance.id",
        ] {
            if k.options.contains_key(key) {
                let why = if key == "group.instance.id" {
                    "is set by kafka.group_instance_id"
                } else {
                    "is managed by sluice and cannot be overridden"
                };
                return Err(ConfigError::key(format!("kafka.options.\"{key}\""), why));
            }
        }
        Ok(())
    }

    /// `[destination]` and every `[destinations.NAME]`: the URL, timeouts, and what
    /// the kind allows.
    fn check_destination(&self) -> Result<(), ConfigError> {
        check_one_destination("destination", &self.destination, &self.batch)?;
        for (name, d) in &self.destinations {
            if name.trim().is_empty() {
                return Err(ConfigError::key(
                    "destinations",
                    "a destination needs a name",
                ));
            }
            check_one_destination(&format!("destinations.{name}"), d, &self.batch)?;
        }
        Ok(())
    }

    /// `[batch]`, and each destination's batch shape, against its API's request limit;
    /// the lanes' window.
    fn check_batch(&self) -> Result<(), ConfigError> {
        positive("lanes.max_in_flight", self.lanes.max_in_flight as u64)?;
        let named = self
            .destinations
            .iter()
            .map(|(name, d)| (format!("destinations.{name}"), d));
        for (at, d) in std::iter::once(("destination".to_string(), &self.destination)).chain(named)
        {
            // A key the destination's own table sets is named there, else in [batch].
            let key = |name: &str, own: bool| {
                if own {
                    format!("{at}.batch.{name}")
                } else {
                    format!("batch.{name}")
                }
            };
            let (own, b) = (&d.batch, d.batch.over(&self.batch));
            positive(
                &key("max_events", own.max_events.is_some()),
                b.max_events as u64,
            )?;
            // Customer.io's and Segment's request limit; any other API says its own.
            let most = match d.kind {
                super::DestinationKind::Http => usize::MAX,
                _ => CUSTOMERIO_MAX_BATCH_BYTES,
            };
            if b.max_bytes == 0 || b.max_bytes > most {
                return Err(ConfigError::key(
                    key("max_bytes", own.max_bytes.is_some()),
                    if most == usize::MAX {
                        "must be at least 1".to_string()
                    } else {
                        format!("must be between 1 and {most} (the API's request limit)")
                    },
                ));
            }
            if b.max_event_bytes == 0 || b.max_event_bytes > b.max_bytes {
                return Err(ConfigError::key(
                    key("max_event_bytes", own.max_event_bytes.is_some()),
                    format!(
                        "must be between 1 and {} ({})",
                        key("max_bytes", own.max_bytes.is_some()),
                        b.max_bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[limits]`: rates, burst, headroom and the Redis URL.
    fn check_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        rate(
            "limits.default_rate_limit_per_s",
            l.default_rate_limit_per_s,
        )?;
        positive("limits.default_burst", l.default_burst.into())?;
        if !(l.headroom > 0.0 && l.headroom <= 1.0) {
            return Err(ConfigError::key("limits.headroom", "must be in (0, 1]"));
        }
        positive("limits.max_in_flight_total", l.max_in_flight_total as u64)?;
        if l.redis_ca_file.is_some() && l.redis_url.is_none() {
            return Err(ConfigError::key(
                "limits.redis_ca_file",
                "is for a rediss:// limits.redis_url, and none is set",
            ));
        }
        match (&l.mode, &l.redis_url) {
            (super::LimitMode::Redis, None) => {
                return Err(ConfigError::key(
                    "limits.redis_url",
                    "is required with limits.mode = \"redis\"",
                ))
            }
            (_, Some(url)) => {
                let parsed = reqwest::Url::parse(url.expose())
                    .map_err(|e| ConfigError::key("limits.redis_url", e.to_string()))?;
                if !matches!(parsed.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
                    return Err(ConfigError::key(
                        "limits.redis_url",
                        "must be a redis://, rediss:// or unix:// URL",
                    ));
                }
                if let Some(ca) = &l.redis_ca_file {
                    if parsed.scheme() != "rediss" {
                        return Err(ConfigError::key(
                            "limits.redis_ca_file",
                            "is for a rediss:// (TLS) limits.redis_url",
                        ));
                    }
                    check_ca_file(ca)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `[retry]`: attempts and backoff bounds.
    fn check_retry(&self) -> Result<(), ConfigError> {
        let named = self
            .destinations
            .iter()
            .map(|(name, d)| (format!("destinations.{name}.retry"), d));
        let all = std::iter::once(("destination.retry".to_string(), &self.destination));
        for (at, d) in all.chain(named) {
            let r = d.retry.over(&self.retry);
            let own = &d.retry;
            let key = |name: &str, set: bool| {
                if set {
                    format!("{at}.{name}")
                } else {
                    format!("retry.{name}")
                }
            };
            positive(
                &key("max_attempts", own.max_attempts.is_some()),
                r.max_attempts.into(),
            )?;
            positive(
                &key("initial_backoff_ms", own.initial_backoff_ms.is_some()),
                r.initial_backoff_ms.ms(),
            )?;
            if r.max_backoff_ms < r.initial_backoff_ms {
                // Named where the table that broke the rule sets it.
                let named = if own.max_backoff_ms.is_some() || own.initial_backoff_ms.is_none() {
                    key("max_backoff_ms", own.max_backoff_ms.is_some())
                } else {
                    key("initial_backoff_ms", true)
                };
                return Err(ConfigError::key(
                    named,
                    "max_backoff_ms must be at least initial_backoff_ms",
                ));
            }
        }
        Ok(())
    }

    /// `[[workspaces]]`: ids and sites listed once, their limits, and each API key
    /// read from `env`.
    fn check_workspaces(
        &mut self,
        env: &BTreeMap<String, String>,
        require_secrets: bool,
    ) -> Result<(), ConfigError> {
        if self.workspaces.is_empty() {
            return Err(ConfigError::key(
                "workspaces",
                "needs at least one [[workspaces]] entry",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut sites = std::collections::HashMap::new();
        let destinations: Vec<_> = self
            .workspaces
            .iter()
            .enumerate()
            .map(|(i, ws)| match &ws.destination {
                None => Ok(self.destination.clone()),
                Some(name) => self.destinations.get(name).cloned().ok_or_else(|| {
                    ConfigError::key(
                        format!("workspaces[{i}].destination"),
                        format!("`{name}` is not one of the [destinations.NAME] tables"),
                    )
                }),
            })
            .collect::<Result<_, _>>()?;
        for ((i, ws), destination) in self.workspaces.iter_mut().enumerate().zip(destinations) {
            let kind = destination.kind;
            if ws.id.trim().is_empty() {
                return Err(ConfigError::key(
                    format!("workspaces[{i}].id"),
                    "must not be empty",
                ));
            }
            if !seen.insert(ws.id.clone()) {
                return Err(ConfigError::key(
                    format!("workspaces[{i}].id"),
                    format!("`{}` is listed twice", ws.id),
                ));
            }
            check_key_env(i, ws, &destination)?;
            let names_client = matches!(
                destination.auth,
                super::AuthMode::Basic | super::AuthMode::Oauth2
            );
            if kind == super::DestinationKind::Http && names_client && ws.site_id.trim().is_empty()
            {
                return Err(ConfigError::key(
                    format!("workspaces[{i}].site_id"),
                    "is the Basic user or OAuth2 client id of this workspace: required",
                ));
            }
            if ws.site_id.trim().is_empty() && kind != super::DestinationKind::Customerio {
                // The name its limit is kept under.
                ws.site_id = ws.id.clone();
            }
            if ws.site_id.trim().is_empty() {
                return Err(ConfigError::key(
                    format!("workspaces[{i}].site_id"),
                    "must not be empty",
                ));
            }
            if let Some(first) = sites.insert(ws.site_id.clone(), ws.id.clone()) {
                return Err(ConfigError::key(
                    format!("workspaces[{i}].site_id"),
                    format!(
                        "`{}` is also the site of workspace `{first}`: one API workspace has one \
                         limit, so list it once",
                        ws.site_id
                    ),
                ));
            }
            check_workspace(i, ws, env, require_secrets)?;
        }
        if let Some(default) = &self.lanes.default_workspace {
            if !seen.contains(default) {
                return Err(ConfigError::key(
                    "lanes.default_workspace",
                    format!("`{default}` is not one of the [[workspaces]] ids"),
                ));
            }
        }
        Ok(())
    }
}

/// One destination's settings, its keys under `at`.
fn check_one_destination(
    at: &str,
    d: &super::DestinationConfig,
    base: &super::BatchConfig,
) -> Result<(), ConfigError> {
    let batch = d.batch.over(base);
    if let Some(url) = &d.base_url {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ConfigError::key(format!("{at}.base_url"), e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                format!("{at}.base_url"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    positive(
        &format!("{at}.connect_timeout_ms"),
        d.connect_timeout_ms.ms(),
    )?;
    positive(
        &format!("{at}.request_timeout_ms"),
        d.request_timeout_ms.ms(),
    )?;
    if d.kind == super::DestinationKind::Http {
        if d.base_url.is_some() {
            return Err(ConfigError::key(
                format!("{at}.base_url"),
                "is not used by kind = \"http\", whose whole URL is `url`",
            ));
        }
        check_http(at, d)?;
    } else if d.url.is_some() {
        return Err(ConfigError::key(
            format!("{at}.url"),
            "is for kind = \"http\" (this kind's URL is base_url)",
        ));
    }
    if d.kind.is_segment_like() {
        if d.api != super::ApiMode::Batch {
            return Err(ConfigError::key(
                format!("{at}.api"),
                "is for kind = \"customerio\"; the Segment kinds always send /v1/batch",
            ));
        }
        if batch.max_events > SEGMENT_MAX_BATCH_EVENTS {
            let own = d.batch.max_events.is_some();
            return Err(ConfigError::key(
                if own {
                    format!("{at}.batch.max_events")
                } else {
                    "batch.max_events".to_string()
                },
                format!("must be at most {SEGMENT_MAX_BATCH_EVENTS} (a /v1/batch request's limit)"),
            ));
        }
    }
    Ok(())
}

/// kind = "http": a URL, templates that parse, a method, and what its auth needs.
fn check_http(at: &str, d: &super::DestinationConfig) -> Result<(), ConfigError> {
    let template = |key: String, text: &str| {
        minijinja::Environment::new()
            .template_from_str(text)
            .map(|_| ())
            .map_err(|e| ConfigError::key(key, format!("not a template: {e}")))
    };
    let Some(url) = &d.url else {
        return Err(ConfigError::key(
            format!("{at}.url"),
            "is required for kind = \"http\"",
        ));
    };
    template(format!("{at}.url"), url)?;
    // The scheme, host and port are written out, so that no event can send the
    // workspace's key elsewhere: templates only after the host's `/`.
    let origin = super::http_origin(url);
    let literal = origin.is_some_and(|o| !o.contains("{{") && !o.contains("{%"));
    let parses = origin
        .and_then(|o| reqwest::Url::parse(o).ok())
        .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
    if !literal || !parses {
        return Err(ConfigError::key(
            format!("{at}.url"),
            "must start with a written-out http:// or https:// host and a `/` \
             before any template (events never choose where credentials go)",
        ));
    }
    for (name, value) in &d.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::key(
                format!("{at}.headers"),
                format!("`{name}` is not a header name"),
            ));
        }
        template(format!("{at}.headers.{name}"), value)?;
    }
    if let Some(body) = &d.body {
        template(format!("{at}.body"), body)?;
    }
    if reqwest::Method::from_bytes(d.method.as_bytes()).is_err() {
        return Err(ConfigError::key(
            format!("{at}.method"),
            format!("`{}` is not an HTTP method", d.method),
        ));
    }
    if d.batch_field.is_empty() {
        return Err(ConfigError::key(
            format!("{at}.batch_field"),
            "must not be empty",
        ));
    }
    if let Some(pointer) = &d.item_errors {
        if !pointer.starts_with('/') || d.send != super::SendMode::Batch {
            return Err(ConfigError::key(
                format!("{at}.item_errors"),
                "is a JSON pointer (\"/errors\") into a batch's answer: send = \"batch\"",
            ));
        }
    }
    match (d.auth, &d.token_url) {
        (super::AuthMode::Oauth2, None) => Err(ConfigError::key(
            format!("{at}.token_url"),
            "is required with auth = \"oauth2\"",
        )),
        (super::AuthMode::Oauth2, Some(u))
            if !reqwest::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) =>
        {
            Err(ConfigError::key(
                format!("{at}.token_url"),
                "must be an http:// or https:// URL",
            ))
        }
        (super::AuthMode::Oauth2, Some(_)) | (_, None) => Ok(()),
        (_, Some(_)) => Err(ConfigError::key(
            format!("{at}.token_url"),
            "is for auth = \"oauth2\"",
        )),
    }
}

/// The key's environment variable the destination's kind needs: `api_key_env` for
/// Customer.io's Track API, `write_key_env` for the Segment kinds.
fn check_key_env(
    i: usize,
    ws: &super::WorkspaceConfig,
    destination: &super::DestinationConfig,
) -> Result<(), ConfigError> {
    let kind = destination.kind;
    let keyless = kind == super::DestinationKind::Http && destination.auth == super::AuthMode::None;
    if keyless && ws.api_key_env.is_empty() && ws.write_key_env.is_none() {
        return Ok(());
    }
    let (field, name, other) = if kind.is_segment_like() {
        (
            "write_key_env",
            ws.write_key_env.as_deref().unwrap_or(""),
            !ws.api_key_env.is_empty(),
        )
    } else {
        (
            "api_key_env",
            ws.api_key_env.as_str(),
            ws.write_key_env.is_some(),
        )
    };
    if name.trim().is_empty() {
        return Err(ConfigError::key(
            format!("workspaces[{i}].{field}"),
            "must name the environment variable holding this workspace's key",
        ));
    }
    if other {
        let unused = if kind.is_segment_like() {
            "api_key_env"
        } else {
            "write_key_env"
        };
        return Err(ConfigError::key(
            format!("workspaces[{i}].{unused}"),
            format!("is not used by this destination kind; it takes `{field}`"),
        ));
    }
    Ok(())
}

/// The key naming the workspace's key variable.
fn key_field(ws: &super::WorkspaceConfig) -> &'static str {
    if ws.write_key_env.is_some() {
        "write_key_env"
    } else {
        "api_key_env"
    }
}

/// One workspace's own settings: its limit, burst, and API key read from `env`.
fn check_workspace(
    i: usize,
    ws: &mut super::WorkspaceConfig,
    env: &BTreeMap<String, String>,
    require_secrets: bool,
) -> Result<(), ConfigError> {
    if let Some(r) = ws.rate_limit_per_s {
        rate(&format!("workspaces[{i}].rate_limit_per_s"), r)?;
    }
    if ws.burst == Some(0) {
        return Err(ConfigError::key(
            format!("workspaces[{i}].burst"),
            "must be at least 1",
        ));
    }
    let key_env = ws.key_env().to_string();
    if key_env.is_empty() {
        // A destination with no auth (check_key_env allowed no key).
        return Ok(());
    }
    match env.get(&key_env) {
        Some(key) if key.chars().any(char::is_control) => {
            return Err(ConfigError::key(
                format!("workspaces[{i}].{}", key_field(ws)),
                format!(
                    "the key in {key_env} holds a line break or another control character \
                     (a file's trailing newline?)"
                ),
            ))
        }
        Some(key) if !key.is_empty() => ws.api_key = Secret::new(key.clone()),
        _ if !require_secrets => {}
        _ => {
            let field = key_field(ws);
            return Err(ConfigError::key(
                format!("workspaces[{i}].{field}"),
                format!(
                    "environment variable {key_env} (API key of workspace `{}`) is not set",
                    ws.id
                ),
            ));
        }
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::key(key, "must be greater than 0"));
    }
    Ok(())
}

/// Fewest requests a second a limit may allow: one every ~17 minutes.
const MIN_RATE_PER_S: f64 = 0.001;
/// Most requests a second a limit may allow (no API grants more to one workspace).
const MAX_RATE_PER_S: f64 = 1_000_000.0;

fn rate(key: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (MIN_RATE_PER_S..=MAX_RATE_PER_S).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::key(
            key,
            format!("must be a number of requests a second between {MIN_RATE_PER_S} and {MAX_RATE_PER_S}"),
        ))
    }
}

/// `limits.redis_ca_file` holds at least one PEM certificate, every certificate in it
/// whole (read as rustls reads it; other PEM sections, such as a key, are skipped).
/// `sluice config check` reads it as the worker does at start, as it reads the keys.
fn check_ca_file(ca: &std::path::Path) -> Result<(), ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let at = |what: String| {
        ConfigError::key("limits.redis_ca_file", format!("{}: {what}", ca.display()))
    };
    let pem = std::fs::read(ca).map_err(|e| at(e.to_string()))?;
    let mut certificates = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|e| at(format!("not a readable PEM file ({e})")))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(at("no PEM certificate in it".into()));
    }
    Ok(())
}
