//! A worker's configuration for one test, as values.

use sluice_core::config::{BatchConfig, Config, LaneConfig, LimitsConfig, Millis};

use super::{produced_ends, unique, wait_committed_to_end, API_KEY, API_KEY_ENV};

/// A worker's configuration for one test, as values: [`Setup::new`]'s settings for a
/// fast test, changed field by field (`setup.worker.batch.max_events = 1`), written
/// out by [`toml`](Self::toml) and validated again by [`config`](Self::config).
#[derive(Clone)]
pub struct Setup {
    /// The settings.
    pub worker: Config,
}

impl Setup {
    /// Settings for a fast test: small batches that go out soon, 4 requests in flight,
    /// a limit of 1 000/s with a burst of 20, short backoffs, commits every 200 ms,
    /// and a 6 s session; a fresh consumer group, `<topic>.dlq`, workspaces with site
    /// id `site-<id>`, and the metrics listener on a free port.
    pub fn new(brokers: &str, topic: &str, base_url: &str, workspaces: &[&str]) -> Self {
        let mut text = format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = ["{topic}"]
dlq_topic = "{topic}.dlq"
commit_interval_ms = 200
lag_refresh_ms = 300

[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[destination]
kind = "customerio"
base_url = "{base_url}"
request_timeout_ms = 30000

[batch]
max_events = 20
linger_ms = 20

[lanes]
max_in_flight = 4

[limits]
default_rate_limit_per_s = 1000
default_burst = 20

[retry]
initial_backoff_ms = 20
max_backoff_ms = 200

[server]
listen = "127.0.0.1:0"

[shutdown]
drain_deadline_ms = 5000
"#,
            group = unique("group"),
        );
        for ws in workspaces {
            text.push_str(&format!(
                "\n[[workspaces]]\nid = \"{ws}\"\nsite_id = \"site-{ws}\"\napi_key_env = \"{API_KEY_ENV}\"\n"
            ));
        }
        Setup {
            worker: parse_config(&text),
        }
    }

    /// Bootstrap servers.
    pub fn brokers(&self) -> &str {
        &self.worker.kafka.brokers
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.worker.kafka.group_id
    }

    /// The source topic.
    pub fn topic(&self) -> &str {
        &self.worker.kafka.topics[0]
    }

    /// The `[[workspaces]]` entry `id`.
    pub fn workspace(&mut self, id: &str) -> &mut sluice_core::config::WorkspaceConfig {
        self.worker
            .workspaces
            .iter_mut()
            .find(|w| w.id == id)
            .expect("a workspace of this setup")
    }

    /// One event per request, sent at once: the backlog becomes that many requests.
    pub fn one_event_per_request(&mut self) {
        self.worker.batch.max_events = 1;
        self.worker.batch.linger_ms = Millis::new(0);
    }

    /// Requests of at most `max_events`, a partly filled one waiting `linger_ms`; the
    /// shipped `[batch]` otherwise.
    pub fn batch(&mut self, max_events: usize, linger_ms: u64) {
        self.worker.batch = BatchConfig {
            max_events,
            linger_ms: Millis::new(linger_ms),
            ..BatchConfig::default()
        };
    }

    /// `max_in_flight` requests per workspace; the shipped `[lanes]` otherwise.
    pub fn in_flight(&mut self, max_in_flight: usize) {
        self.worker.lanes = LaneConfig {
            max_in_flight,
            ..LaneConfig::default()
        };
    }

    /// `per_s` requests a second per workspace; the shipped `[limits]` otherwise
    /// (burst 2, headroom 0.995).
    pub fn limit(&mut self, per_s: f64) {
        self.worker.limits = LimitsConfig {
            default_rate_limit_per_s: per_s,
            ..LimitsConfig::default()
        };
    }

    /// As [`limit`](Self::limit), with this burst.
    pub fn limit_with_burst(&mut self, per_s: f64, burst: u32) {
        self.limit(per_s);
        self.worker.limits.default_burst = burst;
    }

    /// Parks a workspace that cannot keep up in `park_topic`, holding at most
    /// `max_buffered` events in process (reading on at `resume`).
    pub fn parking(&mut self, park_topic: &str, max_buffered: usize, resume: usize) {
        let kafka = &mut self.worker.kafka;
        kafka.park_topic = Some(park_topic.to_string());
        kafka.max_buffered_events = max_buffered;
        kafka.resume_buffered_events = Some(resume);
    }

    /// The TOML text of this configuration (for a worker in its own process).
    pub fn toml(&self) -> String {
        toml::to_string(&self.worker).expect("a configuration serializes")
    }

    /// Waits until this setup's group has committed up to the end of what `produce`
    /// reported writing (`positions`) on its topic's `partitions`.
    pub async fn wait_committed(&self, positions: &[(i32, i64)], partitions: i32) {
        let ends = produced_ends(positions, partitions);
        wait_committed_to_end(self.brokers(), self.group(), self.topic(), &ends).await;
    }

    /// The configuration, validated as a worker validates its file.
    pub fn config(&self) -> Config {
        parse_config(&self.toml())
    }
}

/// Every setting at its shipped default (a minimal file: one broker, one workspace).
pub fn shipped_defaults() -> Config {
    parse_config(&format!(
        "[kafka]\nbrokers = \"127.0.0.1:9\"\ngroup_id = \"g\"\ntopics = [\"t\"]\n\
         dlq_topic = \"t.dlq\"\n[destination]\nkind = \"customerio\"\n\
         [[workspaces]]\nid = \"w\"\nsite_id = \"s\"\napi_key_env = \"{API_KEY_ENV}\"\n"
    ))
}

/// `text` as the worker reads it, with the tests' API key in its environment.
fn parse_config(text: &str) -> Config {
    Config::from_toml(
        text,
        "test",
        [(API_KEY_ENV.to_string(), API_KEY.to_string())],
    )
    .unwrap_or_else(|e| panic!("test config is valid: {e}\n{text}"))
}
