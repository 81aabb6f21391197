//! The settings, section by section: one struct per `[section]` of the TOML file, a
//! doc line on every field (config/sluice.toml repeats them for users), and each
//! default written once.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{Millis, Secret, SecretUrl, CUSTOMERIO_MAX_BATCH_BYTES, CUSTOMERIO_MAX_ITEM_BYTES};

/// `[kafka]`: the source topics and the consumer group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of bootstrap brokers.
    pub brokers: String,
    /// Consumer group id; replicas sharing it split the partitions between them.
    pub group_id: String,
    /// Topics to consume identify/track events from.
    pub topics: Vec<String>,
    /// Topic for dead letters (events that can never be delivered, with the reason in
    /// their headers). Required: nothing is ever dropped.
    pub dlq_topic: String,
    /// Static group membership (Kafka's `group.instance.id`): a name for this replica
    /// that survives its restarts, e.g. the pod's name (`metadata.name`). A replica
    /// restarted under the same name gets its partitions back at once instead of
    /// waiting `session.timeout.ms` for its old self to expire and the group to
    /// rebalance. A static member does not leave the group when it stops, so a replica
    /// replaced under a new name leaves its partitions idle until its session expires
    /// (10 s for a static member unless `session.timeout.ms` is set). The shipped
    /// Deployment sets it to the pod's name. Unset: dynamic membership.
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Least time between two commits, in milliseconds: completed offsets are committed
    /// as they advance, at most this often, so a crash re-delivers at most about
    /// rate × (this + a commit's round trip) events already delivered.
    #[serde(default = "defaults::commit_interval_ms")]
    pub commit_interval_ms: Millis,
    /// Events held in process (consumed, not yet delivered) above which the consumer
    /// stops reading (and pauses its partitions if that lasts 2 s).
    #[serde(default = "defaults::max_buffered_events")]
    pub max_buffered_events: usize,
    /// Most events one workspace may hold in process (in its lane, or held while it
    /// returns from the parking topic); unset: `max_buffered_events` ÷ the number of
    /// workspaces. Over it the workspace is parked (unless parking is off).
    #[serde(default)]
    pub max_buffered_events_per_workspace: Option<usize>,
    /// Topic for the events of a workspace that cannot keep up (API refusing, down,
    /// retrying, or limited below its inflow): written there instead of held in
    /// process, so the source keeps moving for the other workspaces, and read back at
    /// the workspace's pace. Unset: `<source topic>.park`. Created at start when
    /// missing, and grown to the source topic's partitions when it has fewer. `""`
    /// turns parking off (one blocked workspace's events can then fill the buffer and
    /// pause every partition).
    #[serde(default)]
    pub park_topic: Option<String>,
    /// How many parked workspaces one pod reads back from the parking topic at once
    /// (a Kafka consumer each). More wait their turn in order; while any waits, a
    /// workspace that has read for 10 s hands its reader on (what it read back and
    /// has not delivered is read again on its next turn).
    #[serde(default = "defaults::park_readers")]
    pub park_readers: usize,
    /// Bytes held in process (each event as read plus its encoding) above which the
    /// consumer stops reading, whatever the event count; it reads on below half of it. librdkafka's prefetch (`queued.max.messages.kbytes`) is sized to a
    /// sixteenth of it unless set in `[kafka.options]`. The pod's memory needs this, the
    /// prefetch ×4 (librdkafka's fetch buffers) and ~40 MB besides.
    #[serde(default = "defaults::max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// Events held in process below which a stopped consumer reads on; unset: half of
    /// `max_buffered_events`, which leaves work for the fetch a paused partition's
    /// resume costs.
    #[serde(default)]
    pub resume_buffered_events: Option<usize>,
    /// How long revoked partitions' in-flight work may finish before the rebalance goes
    /// on without it, in milliseconds.
    #[serde(default = "defaults::revoke_deadline_ms")]
    pub revoke_deadline_ms: Millis,
    /// How often the lag of the assigned partitions (and so `sluice_queue_depth`) is
    /// measured, in milliseconds.
    #[serde(default = "defaults::lag_refresh_ms")]
    pub lag_refresh_ms: Millis,
    /// Extra librdkafka properties, passed through unchanged (SASL, TLS, timeouts...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Events held in process below which paused partitions resume.
    pub(crate) fn resume_buffered(&self) -> usize {
        self.resume_buffered_events
            .unwrap_or(self.max_buffered_events / 2)
    }
}

/// Where a consumer group without committed offsets starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest retained event.
    #[default]
    Earliest,
    /// Only events produced after the group first joins.
    Latest,
}

/// `[destination]`: the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Destination kind: `customerio` (the Track API), `segment` (Segment's HTTP
    /// Tracking API) or `customerio_pipelines` (Customer.io Data Pipelines, strict mode).
    pub kind: DestinationKind,
    /// Data centre: `us` or `eu` (each kind's own hosts). Ignored when `base_url` is set.
    #[serde(default)]
    pub region: Region,
    /// Overrides the region's host, e.g. `http://127.0.0.1:8080` for a mock API.
    #[serde(default)]
    pub base_url: Option<String>,
    /// For `customerio`: `batch` (v2 `/api/v2/batch`, many events per request) or
    /// `single` (v1, one request per event). The Segment kinds always batch.
    #[serde(default)]
    pub api: ApiMode,
    /// TCP connect timeout, in milliseconds.
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: Millis,
    /// Whole-request timeout (send and read the response), in milliseconds.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: Millis,
    /// Idle keep-alive connections kept per host.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// kind = "http": the request URL, a template over the event (`{{ user_id }}`,
    /// `{{ workspace }}`…; a batch uses its first event's). Required for that kind.
    #[serde(default)]
    pub url: Option<String>,
    /// kind = "http": the request method. Default: "POST".
    #[serde(default = "defaults::method")]
    pub method: String,
    /// kind = "http": headers of every request, their values templated like `url`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// kind = "http": one event's JSON, a template (`{{ properties | tojson }}`);
    /// unset: the event as sluice reads it (type, user_id or anonymous_id, event,
    /// traits or properties, message_id, timestamp, workspace).
    #[serde(default)]
    pub body: Option<String>,
    /// kind = "http": `event` (a request per event) or `batch` (a request per batch,
    /// `{"<batch_field>": [one body per event]}`). Default: "event".
    #[serde(default)]
    pub send: SendMode,
    /// kind = "http", send = "batch": the request body's field holding the events.
    /// Default: "batch".
    #[serde(default = "defaults::batch_field")]
    pub batch_field: String,
    /// kind = "http": `bearer` (the workspace's key), `basic` (site_id and the key),
    /// `oauth2` (client credentials: site_id as the client id, the key as its secret,
    /// tokens from `token_url`) or `none`. Default: "bearer".
    #[serde(default)]
    pub auth: AuthMode,
    /// kind = "http", auth = "oauth2": the token endpoint (client-credentials grant).
    #[serde(default)]
    pub token_url: Option<String>,
    /// kind = "http", send = "batch": where a 2xx answer lists refused events, a JSON
    /// pointer (e.g. "/errors") to a list of objects with the event's `index` in the
    /// batch and a `reason` or `message`; those are dead-lettered, the rest delivered.
    /// Unset: a 2xx accepts the whole batch.
    #[serde(default)]
    pub item_errors: Option<String>,
    /// This destination's batch shape (`[destinations.NAME.batch]`, the keys of
    /// `[batch]`): what it leaves unset comes from `[batch]`.
    #[serde(default, skip_serializing_if = "BatchTable::is_empty")]
    pub batch: BatchTable,
    /// This destination's retries (`[destinations.NAME.retry]`, the keys of
    /// `[retry]`): what it leaves unset comes from `[retry]`.
    #[serde(default, skip_serializing_if = "RetryTable::is_empty")]
    pub retry: RetryTable,
}

/// A destination's own `batch` table: each key set here replaces `[batch]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchTable {
    /// Most events in one request.
    pub max_events: Option<usize>,
    /// Most bytes in one request body.
    pub max_bytes: Option<usize>,
    /// Largest accepted encoded event, in bytes; larger ones are `too_large`.
    pub max_event_bytes: Option<usize>,
    /// How long a partly filled batch waits for more events, in milliseconds.
    pub linger_ms: Option<Millis>,
}

impl BatchTable {
    /// Nothing set: `[batch]` as it is.
    pub fn is_empty(&self) -> bool {
        *self == BatchTable::default()
    }

    /// `base` with this table's keys over it.
    pub fn over(&self, base: &BatchConfig) -> BatchConfig {
        BatchConfig {
            max_events: self.max_events.unwrap_or(base.max_events),
            max_bytes: self.max_bytes.unwrap_or(base.max_bytes),
            max_event_bytes: self.max_event_bytes.unwrap_or(base.max_event_bytes),
            linger_ms: self.linger_ms.unwrap_or(base.linger_ms),
        }
    }
}

/// A destination's own `retry` table: each key set here replaces `[retry]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryTable {
    /// Attempts per request (the first included) before `retries_exhausted`.
    pub max_attempts: Option<u32>,
    /// Time since the first attempt after which no further attempt starts, in ms.
    pub max_elapsed_ms: Option<Millis>,
    /// Backoff ceiling of the first retry, in ms; it doubles per retry.
    pub initial_backoff_ms: Option<Millis>,
    /// Largest backoff ceiling, in ms.
    pub max_backoff_ms: Option<Millis>,
    /// Longest `Retry-After` honoured, in ms.
    pub max_retry_after_ms: Option<Millis>,
}

impl RetryTable {
    /// Nothing set: `[retry]` as it is.
    pub fn is_empty(&self) -> bool {
        *self == RetryTable::default()
    }

    /// `base` with this table's keys over it.
    pub fn over(&self, base: &RetryConfig) -> RetryConfig {
        RetryConfig {
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            max_elapsed_ms: self.max_elapsed_ms.unwrap_or(base.max_elapsed_ms),
            initial_backoff_ms: self.initial_backoff_ms.unwrap_or(base.initial_backoff_ms),
            max_backoff_ms: self.max_backoff_ms.unwrap_or(base.max_backoff_ms),
            max_retry_after_ms: self.max_retry_after_ms.unwrap_or(base.max_retry_after_ms),
        }
    }
}

/// kind = "http": how events map to requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendMode {
    /// One request per event.
    #[default]
    Event,
    /// One request per batch.
    Batch,
}

/// kind = "http": how a request proves who sends it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <the workspace's key>`.
    #[default]
    Bearer,
    /// `Authorization: Basic site_id:key`.
    Basic,
    /// An OAuth2 client-credentials token as the Bearer.
    Oauth2,
    /// No `Authorization` header.
    None,
}

/// The kind of destination API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// Customer.io Track API (Basic auth `site_id:api_key`).
    Customerio,
    /// Segment's HTTP Tracking API: `POST /v1/batch` of Segment-spec calls, the
    /// workspace's write key as the Basic user with a blank password.
    Segment,
    /// Customer.io Data Pipelines: Segment's call shapes, the API key as the Basic
    /// user, with `X-Strict-Mode: 1` so an invalid call is refused (400), not dropped
    /// behind a 200.
    #[serde(rename = "customerio_pipelines")]
    CustomerioPipelines,
    /// Any JSON API: URL, headers and body templated from the event, Bearer, Basic,
    /// OAuth2 client credentials or no auth, optional per-event results.
    Http,
}

impl DestinationKind {
    /// Whether the API takes Segment-spec calls (a write key per workspace).
    pub fn is_segment_like(self) -> bool {
        matches!(
            self,
            DestinationKind::Segment | DestinationKind::CustomerioPipelines
        )
    }
}

/// Customer.io data centre.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://track.customer.io`.
    #[default]
    Us,
    /// `https://track-eu.customer.io`.
    Eu,
}

/// Which Customer.io Track API generation to call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiMode {
    /// v2 `POST /api/v2/batch`.
    #[default]
    Batch,
    /// v1 `PUT /api/v1/customers/{id}` and `POST /api/v1/customers/{id}/events`.
    Single,
}

/// `[batch]`: when a lane sends what it holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one request.
    pub max_events: usize,
    /// Most bytes in one request body (Customer.io allows 500 KB).
    pub max_bytes: usize,
    /// Largest accepted encoded event, in bytes (Customer.io allows 32 KB per item);
    /// larger events are rejected as `too_large`.
    pub max_event_bytes: usize,
    /// How long a partly filled batch waits for more events, in milliseconds.
    pub linger_ms: Millis,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 500,
            max_bytes: CUSTOMERIO_MAX_BATCH_BYTES,
            max_event_bytes: CUSTOMERIO_MAX_ITEM_BYTES,
            linger_ms: Millis::new(200),
        }
    }
}

/// `[lanes]`: per-workspace scheduling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaneConfig {
    /// Requests one workspace may have in flight at once.
    pub max_in_flight: usize,
    /// `per-user`: one user's events arrive in produced order; `none`: no ordering.
    pub ordering: Ordering,
    /// Workspace for events that name none (field or header); unset means such events
    /// are rejected as `unknown_workspace`.
    pub default_workspace: Option<String>,
}

impl Default for LaneConfig {
    fn default() -> Self {
        LaneConfig {
            max_in_flight: 8,
            ordering: Ordering::default(),
            default_workspace: None,
        }
    }
}

/// Ordering guarantee within a workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ordering {
    /// Never two requests in flight carrying the same user.
    #[default]
    PerUser,
    /// Any event may go in any request.
    None,
}

/// One `[[workspaces]]` entry: a Customer.io workspace and its credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Name used in events (`workspace` field or header) and in logs and metrics.
    pub id: String,
    /// Customer.io site id (Basic auth user). For the Segment kinds, the name its limit
    /// is kept under (unset: the workspace id).
    #[serde(default)]
    pub site_id: String,
    /// Name of the environment variable holding the API key (kind `customerio`); the
    /// key itself never appears in the file.
    #[serde(default)]
    pub api_key_env: String,
    /// Name of the environment variable holding the write key (kinds `segment` and
    /// `customerio_pipelines`, where it is the API key), sent as the Basic user.
    #[serde(default)]
    pub write_key_env: Option<String>,
    /// The named destination (`[destinations.NAME]`) this workspace sends to; unset:
    /// `[destination]`.
    #[serde(default)]
    pub destination: Option<String>,
    /// Requests per second this workspace may send (Customer.io plans for 100);
    /// unset takes `limits.default_rate_limit_per_s`.
    #[serde(default)]
    pub rate_limit_per_s: Option<f64>,
    /// Requests that may go at once after a quiet spell; unset takes
    /// `limits.default_burst`.
    #[serde(default)]
    pub burst: Option<u32>,
    /// The API key read from `api_key_env` (or the write key from `write_key_env`) at
    /// validation.
    #[serde(skip)]
    pub api_key: Secret,
}

impl WorkspaceConfig {
    /// The environment variable its key is read from: `write_key_env` where set, else
    /// `api_key_env`.
    pub fn key_env(&self) -> &str {
        self.write_key_env.as_deref().unwrap_or(&self.api_key_env)
    }
}

/// `[limits]`: how each workspace's API limit is kept, and global caps.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// How pods of one consumer group share each workspace's limit: `partition-share`
    /// (each pod its share of the partitions; nothing extra to run), `redis` (one
    /// budget in Redis, exact; partition-share while Redis is away) or `local` (every
    /// pod the whole limit: only for one pod per workspace).
    pub mode: LimitMode,
    /// Redis for `mode = "redis"`, e.g. `redis://redis:6379/0` (any Redis-compatible
    /// server); `rediss://` for TLS.
    pub redis_url: Option<SecretUrl>,
    /// For `rediss://` to a server whose certificate a private CA signed: that CA's
    /// certificate (PEM), trusted instead of the system's roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Prefix of the Redis keys (one hash per site id): pods sharing a prefix share
    /// budgets.
    pub redis_prefix: String,
    /// Requests per second for a workspace entry that sets no `rate_limit_per_s`.
    pub default_rate_limit_per_s: f64,
    /// Burst for a workspace entry that sets no `burst`: requests that may go back to
    /// back after a quiet spell. Any burst keeps every one-second window within the
    /// limit (the limiter also logs the last window's sends).
    pub default_burst: u32,
    /// Share of each limit actually used (0 < headroom ≤ 1): the limiter counts its
    /// window as 1 s ÷ headroom, so jitter between our clock and the API's never puts
    /// one request too many in the API's window (0.995: 5 ms a second).
    pub headroom: f64,
    /// Requests in flight over all workspaces at once.
    pub max_in_flight_total: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            mode: LimitMode::default(),
            redis_url: None,
            redis_ca_file: None,
            redis_prefix: "sluice:limit".into(),
            default_rate_limit_per_s: 100.0,
            default_burst: 2,
            headroom: 0.995,
            max_in_flight_total: 256,
        }
    }
}

/// How a fleet of pods shares one workspace's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitMode {
    /// Each pod paces at its share of the source partitions.
    #[default]
    PartitionShare,
    /// One budget per workspace in Redis; partition-share while Redis is away.
    Redis,
    /// Each pod paces at the whole limit (one pod per workspace).
    Local,
}

/// `[retry]`: exponential backoff with full jitter between attempts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request (the first included) before its events are dead-lettered
    /// as `retries_exhausted`. 401/403 ignore it (they retry until fixed), and so does
    /// an API refusing connections (an outage: waited out at the longest backoff).
    pub max_attempts: u32,
    /// Time since the first attempt after which no further attempt starts, in ms.
    pub max_elapsed_ms: Millis,
    /// Backoff ceiling of the first retry, in ms; it doubles per retry.
    pub initial_backoff_ms: Millis,
    /// Largest backoff ceiling, in ms (also the wait between 401/403 retries).
    pub max_backoff_ms: Millis,
    /// Longest `Retry-After` honoured, in ms; longer asks are cut to this.
    pub max_retry_after_ms: Millis,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 10,
            max_elapsed_ms: Millis::new(300_000),
            initial_backoff_ms: Millis::new(200),
            max_backoff_ms: Millis::new(30_000),
            max_retry_after_ms: Millis::new(300_000),
        }
    }
}

/// `[server]`: the metrics and health listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` to serve `/metrics`, `/healthz` and `/readyz` on; port 0 picks one.
    pub listen: SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}

/// `[shutdown]`: draining on SIGTERM.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long buffered and in-flight events may take to deliver after SIGTERM before
    /// the worker gives up on them (they stay uncommitted), in milliseconds.
    pub drain_deadline_ms: Millis,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_deadline_ms: Millis::new(10_000),
        }
    }
}

mod defaults {
    use super::Millis;

    pub(super) fn commit_interval_ms() -> Millis {
        Millis::new(100)
    }
    pub(super) fn method() -> String {
        "POST".into()
    }
    pub(super) fn batch_field() -> String {
        "batch".into()
    }
    pub(super) fn park_readers() -> usize {
        16
    }
    pub(super) fn max_buffered_events() -> usize {
        25_000
    }
    pub(super) fn max_buffered_bytes() -> usize {
        64 << 20
    }
    pub(super) fn revoke_deadline_ms() -> Millis {
        Millis::new(5_000)
    }
    pub(super) fn lag_refresh_ms() -> Millis {
        Millis::new(5_000)
    }
    pub(super) fn connect_timeout_ms() -> Millis {
        Millis::new(5_000)
    }
    pub(super) fn request_timeout_ms() -> Millis {
        Millis::new(10_000)
    }
    pub(super) fn pool_size() -> usize {
        32
    }
}
