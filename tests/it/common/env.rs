//! What most tests start from: a broker, `sluice mock-api` in-process, a fresh topic
//! and a worker [`Setup`] for some workspaces, built by [`TestEnv::build`].

use super::{Broker, Setup, API_KEY};

/// `sluice mock-api` in-process on a free loopback port: unlimited, recording every
/// item and arrival, accepting any site id with [`API_KEY`].
pub async fn recording_api() -> sluice_mock_api::MockApi {
    sluice_mock_api::MockApi::start(sluice_mock_api::MockApiConfig {
        keys: vec![format!("*:{API_KEY}")],
        record: true,
        ..Default::default()
    })
    .await
    .expect("the mock API starts")
}

/// What most tests start from: the mock cluster, a recording `sluice mock-api`, a
/// fresh topic and a worker set-up for some workspaces (site id `site-<id>`).
pub struct TestEnv {
    /// librdkafka's mock cluster.
    pub broker: Broker,
    /// The API, recording what it accepts.
    pub api: sluice_mock_api::MockApi,
    /// The source topic, created with the partitions asked for.
    pub topic: String,
    /// The worker's settings, pointing at all of the above.
    pub setup: Setup,
}

impl TestEnv {
    /// A topic named `events-…` of `partitions`, for `workspaces`.
    pub async fn mock(partitions: i32, workspaces: &[&str]) -> Self {
        Self::build(partitions, workspaces).start().await
    }

    /// The same start with more choices: another API, a real broker, a parking or
    /// dead-letter topic. Nothing starts before [`TestEnvBuilder::start`].
    pub fn build(partitions: i32, workspaces: &[&str]) -> TestEnvBuilder {
        TestEnvBuilder {
            partitions,
            workspaces: workspaces.iter().map(|w| w.to_string()).collect(),
            prefix: "events".into(),
            api: None,
            broker: None,
            park: false,
            dlq: false,
        }
    }

    /// (broker, api, topic, setup), for a test's own names.
    pub fn into_parts(self) -> (Broker, sluice_mock_api::MockApi, String, Setup) {
        (self.broker, self.api, self.topic, self.setup)
    }
}

/// A [`TestEnv`] to be started; see [`TestEnv::build`].
pub struct TestEnvBuilder {
    partitions: i32,
    workspaces: Vec<String>,
    prefix: String,
    api: Option<sluice_mock_api::MockApiConfig>,
    broker: Option<Broker>,
    park: bool,
    dlq: bool,
}

impl TestEnvBuilder {
    /// The source topic is named `prefix-…`.
    pub fn named(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `sluice mock-api` with these settings instead of [`recording_api`].
    pub fn api(mut self, config: sluice_mock_api::MockApiConfig) -> Self {
        self.api = Some(config);
        self
    }

    /// This broker (e.g. [`Broker::real`]) instead of a fresh mock cluster.
    pub fn on(mut self, broker: Broker) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Creates `<topic>.park` with as many partitions as the source and sets it as
    /// `kafka.park_topic`.
    pub fn parking(mut self) -> Self {
        self.park = true;
        self
    }

    /// Creates `<topic>.dlq` (one partition) before the worker does.
    pub fn dlq(mut self) -> Self {
        self.dlq = true;
        self
    }

    /// Starts the broker and the API and creates the topics.
    pub async fn start(self) -> TestEnv {
        let broker = self.broker.unwrap_or_else(Broker::mock);
        let api = match self.api {
            Some(config) => sluice_mock_api::MockApi::start(config)
                .await
                .expect("the mock API starts"),
            None => recording_api().await,
        };
        let topic = broker.fresh_topic(&self.prefix, self.partitions).await;
        let workspaces: Vec<&str> = self.workspaces.iter().map(String::as_str).collect();
        let mut setup = Setup::new(&broker.brokers(), &topic, &api.base_url(), &workspaces);
        if self.park {
            if matches!(broker, crate::common::Broker::Real(_)) {
                broker
                    .create_topic(&format!("{topic}.park"), self.partitions)
                    .await;
            }
            setup.worker.kafka.park_topic = Some(format!("{topic}.park"));
        }
        if self.dlq {
            broker.create_topic(&format!("{topic}.dlq"), 1).await;
        }
        TestEnv {
            broker,
            api,
            topic,
            setup,
        }
    }
}
