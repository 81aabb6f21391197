//! Configuration: what the user wrote (TOML plus `SLUICE__SECTION__KEY` environment
//! overrides), checked once at start so that every later stage can trust it.
//!
//! Loading is two steps: [`Config::load`] reads and overrides the file, deserializes it
//! with unknown keys refused, and [`Config::validate`] checks values and resolves the
//! API keys from the environment. Every error names the key it is about, on one line.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Customer.io's limit on a whole v2 batch request body, in bytes.
pub(crate) const CUSTOMERIO_MAX_BATCH_BYTES: usize = 500_000;
/// Customer.io's limit on one v2 batch item, in bytes.
pub(crate) const CUSTOMERIO_MAX_ITEM_BYTES: usize = 32_000;
/// Most calls in one Segment `/v1/batch` request (Customer.io Pipelines: the same).
pub(crate) const SEGMENT_MAX_BATCH_EVENTS: usize = 2_500;
/// Prefix of the environment variables that override configuration keys.
pub(crate) const ENV_PREFIX: &str = "SLUICE__";

/// A configuration problem, always naming the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given on the command line.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The path given on the command line.
        path: String,
        /// The parser's message, flattened to one line.
        message: String,
    },
    /// A key is unknown, missing, or of the wrong type.
    #[error("config key `{key}`: {message}")]
    Key {
        /// Dotted path of the key, e.g. `kafka.brokers`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn key(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where events come from and where offsets are committed.
    pub kafka: KafkaConfig,
    /// The API events are delivered to (every workspace's that names no other).
    pub destination: DestinationConfig,
    /// More APIs by name (`[destinations.NAME]`, the keys of `[destination]`): a
    /// workspace sends to one with `destination = "NAME"`. Each has its own client,
    /// connection pool and retry classes. Default: none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub destinations: std::collections::BTreeMap<String, DestinationConfig>,
    /// How events are grouped into requests.
    #[serde(default)]
    pub batch: BatchConfig,
    /// How each workspace's lane schedules requests.
    #[serde(default)]
    pub lanes: LaneConfig,
    /// Rate limits shared by all workspaces.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// When and how failed requests are tried again.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The destination accounts events are routed to.
    pub workspaces: Vec<WorkspaceConfig>,
    /// The HTTP listener for metrics and health.
    #[serde(default)]
    pub server: ServerConfig,
    /// How the worker stops.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

mod millis;
mod overrides;
mod secret;
mod sections;
mod validate;

pub use millis::Millis;
pub use secret::{Secret, SecretUrl};
pub use sections::*;

/// `scheme://host[:port]` of `url`: everything before the first `/` after `://`
/// (the whole text when there is none); `None` without `://`.
pub fn http_origin(url: &str) -> Option<&str> {
    let rest = url.find("://")? + 3;
    Some(url[rest..].find('/').map_or(url, |i| &url[..rest + i]))
}

impl Config {
    /// Reads `path`, applies `SLUICE__…` overrides from the process environment,
    /// deserializes and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string(), std::env::vars())
    }

    /// Like [`load`](Self::load) but without reading API keys: for tools that only
    /// touch Kafka (`sluice dlq …`).
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string(), std::env::vars(), false)
    }

    /// Parses TOML `text` with the given environment (overrides and API keys), then
    /// validates. `origin` names the source in errors.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::parse(text, origin, env, true)
    }

    fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        require_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_string(),
                    message: syntax_message(text, &e),
                })?;
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let mut overrides = env
            .iter()
            .filter_map(|(name, value)| overrides::Override::from_env(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = loop {
            let mut table = table.clone();
            for o in &overrides {
                o.apply(&mut table)?;
            }
            let e = match serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table)) {
                Ok(config) => break config,
                Err(e) => e,
            };
            let key = e.path().to_string();
            // A typed reading of an override the key does not take: retry it as
            // the string it was (each override at most once, so this ends).
            if let Some(o) = overrides
                .iter_mut()
                .find(|o| o.typed() && o.dotted() == key)
            {
                o.literal = true;
                continue;
            }
            let message = if is_secret_option(&key) {
                "invalid value (not shown: a credential)".to_string()
            } else {
                one_line(&e.into_inner().to_string())
            };
            let key = if key == "." {
                "(top level)".into()
            } else {
                key
            };
            return Err(ConfigError::key(key, message));
        };
        config.validate(&env, require_secrets)?;
        Ok(config)
    }

    /// The effective configuration as TOML, with credentials masked: what
    /// `sluice config check` prints.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        // The value in effect, where the default is derived from another.
        shown.kafka.resume_buffered_events = Some(shown.kafka.resume_buffered());
        for (key, value) in shown.kafka.options.iter_mut() {
            if is_secret_option(key) {
                *value = "****".into();
            }
        }
        if let Some(url) = &mut shown.limits.redis_url {
            *url = SecretUrl::new(url.masked());
        }
        // kind = "http" headers may carry a key (X-Api-Key…), and a token URL a password.
        for d in std::iter::once(&mut shown.destination).chain(shown.destinations.values_mut()) {
            for value in d.headers.values_mut() {
                *value = "****".into();
            }
            if let Some(url) = &mut d.token_url {
                *url = SecretUrl::new(url.clone()).masked();
            }
        }
        let mut out = toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# {e}\n"));
        out.push_str("\n# API keys (read from the environment)\n");
        for ws in &self.workspaces {
            out.push_str(&format!(
                "# workspace {}: {} is set (****)\n",
                ws.id,
                ws.key_env()
            ));
        }
        out
    }

    /// The destination `ws` sends to: its named one, else `[destination]`.
    pub fn destination_of(&self, ws: &WorkspaceConfig) -> &DestinationConfig {
        ws.destination
            .as_ref()
            .and_then(|name| self.destinations.get(name))
            .unwrap_or(&self.destination)
    }

    /// This configuration as one destination's client sees it: `name`'s settings (or
    /// `[destination]`'s for `None`) as `destination`, its batch shape and retries as
    /// `batch` and `retry`, and only the workspaces that send to it.
    pub fn for_destination(&self, name: Option<&str>) -> Config {
        let mut view = self.clone();
        if let Some(name) = name {
            view.destination = self.destinations[name].clone();
        }
        view.batch = view.destination.batch.over(&self.batch);
        view.retry = view.destination.retry.over(&self.retry);
        view.destinations.clear();
        view.workspaces.retain(|w| w.destination.as_deref() == name);
        view
    }

    /// The batch shape of `ws`'s requests: its destination's `batch` table over
    /// `[batch]`.
    pub fn batch_of(&self, ws: &WorkspaceConfig) -> BatchConfig {
        self.destination_of(ws).batch.over(&self.batch)
    }

    /// Every batch shape in use: `[batch]` and each destination's own.
    pub fn batch_shapes(&self) -> impl Iterator<Item = BatchConfig> + '_ {
        std::iter::once(&self.destination)
            .chain(self.destinations.values())
            .map(|d| d.batch.over(&self.batch))
    }

    /// Looks up a workspace by id.
    pub fn workspace(&self, id: &str) -> Option<&WorkspaceConfig> {
        self.workspaces.iter().find(|w| w.id == id)
    }

    /// Each workspace's limit as the limiter takes it: its site, rate and burst.
    pub fn workspace_rates(&self) -> Vec<(String, crate::limit::Rate)> {
        self.workspaces
            .iter()
            .map(|w| {
                let rate = crate::limit::Rate {
                    site: w.site_id.clone(),
                    per_second: w
                        .rate_limit_per_s
                        .unwrap_or(self.limits.default_rate_limit_per_s),
                    burst: w.burst.unwrap_or(self.limits.default_burst),
                };
                (w.id.clone(), rate)
            })
            .collect()
    }

    /// The most events one workspace may hold in process.
    pub(crate) fn workspace_share(&self) -> usize {
        self.kafka
            .max_buffered_events_per_workspace
            .unwrap_or_else(|| {
                (self.kafka.max_buffered_events / self.workspaces.len().max(1)).max(1)
            })
    }

    /// The parking topic in effect: `kafka.park_topic`, or `<source topic>.park` when it
    /// is unset and there is one source topic; `None` when parking is off (`""`, or
    /// several source topics and no name).
    pub fn parking_topic(&self) -> Option<String> {
        match (&self.kafka.park_topic, self.kafka.topics.as_slice()) {
            (Some(topic), _) if topic.is_empty() => None,
            (Some(topic), _) => Some(topic.clone()),
            (None, [source]) => Some(format!("{source}.park")),
            (None, _) => None,
        }
    }

    /// How often completed offsets are committed.
    pub(crate) fn commit_interval(&self) -> Duration {
        self.kafka.commit_interval_ms.duration()
    }
}

/// librdkafka properties whose values are credentials.
pub(crate) fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with(".key")
        || k.ends_with(".key.pem")
        || k.contains("token")
        || k.contains("sasl.oauthbearer.config")
        || k.contains("credentials")
}

/// A TOML syntax error as its place and what is wrong, never the text around it: the
/// line may hold a credential (`sasl.password = "…`).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
