//! The parking topic made ready at start: created when missing, with as many
//! partitions as the source topic (parking partition n holds source partition n) and
//! the source's replication and retention, and grown when the source has grown past it.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What the parking topic covers, once made ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coverage {
    /// Partitions of the parking topic.
    pub parking: usize,
    /// Partitions of the source topic (0: unknown).
    pub source: usize,
}

/// The parking topic could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TopicError {
    /// It does not exist and could not be created: nothing can be parked there, and
    /// nothing is waiting there either.
    #[error("cannot create the parking topic {topic}: {why}")]
    Missing {
        /// The topic.
        topic: String,
        /// Why.
        why: String,
    },
    /// The brokers could not be asked (they may hold parked events: the worker must
    /// not run without reading them).
    #[error("parking topic {topic}: {why}")]
    Unknown {
        /// The topic.
        topic: String,
        /// Why.
        why: String,
    },
}

/// Partitions of `topic` (0 if it does not exist), without creating it.
fn partitions(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<usize, String> {
    shape(admin, topic).map(|(partitions, _)| partitions)
}

/// Partitions and replicas of `topic` ((0, 0) if it does not exist).
fn shape(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<(usize, usize), String> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or((0, 0), |t| {
            let replicas = t.partitions().first().map_or(0, |p| p.replicas().len());
            (t.partitions().len(), replicas)
        }))
}

/// Makes `park` ready for source topic `source`: created with the source's partitions
/// and replication when missing, grown to the partitions when it has fewer.
pub(crate) async fn ensure(
    kafka: &KafkaConfig,
    source: &str,
    park: &str,
) -> Result<Coverage, TopicError> {
    let unknown = |why: String| TopicError::Unknown {
        topic: park.to_string(),
        why,
    };
    let mut client = crate::kafka::producer_config(kafka);
    // Asking for a missing topic must not create it with the brokers' default count.
    client.set("allow.auto.create.topics", "false");
    let admin: std::sync::Arc<AdminClient<DefaultClientContext>> =
        std::sync::Arc::new(client.create().map_err(|e| unknown(e.to_string()))?);
    let (source_n, source_replicas) = super::blocking(|| shape(&admin, source)).map_err(unknown)?;
    let mut parking = super::blocking(|| partitions(&admin, park)).map_err(unknown)?;
    let options = AdminOptions::new()
        .operation_timeout(Some(TIMEOUT))
        .request_timeout(Some(TIMEOUT));
    if parking == 0 {
        parking = create(
            kafka,
            &admin,
            source,
            park,
            (source_n, source_replicas),
            &options,
        )
        .await?;
    } else {
        // Not worth holding up the start for: said once the brokers answer.
        let admin = admin.clone();
        let (source, park) = (source.to_string(), park.to_string());
        tokio::spawn(async move { warn_if_kept_shorter(&admin, &source, &park).await });
    }
    if parking < source_n {
        parking = grow(&admin, park, parking, source_n, &options).await;
    }
    Ok(Coverage {
        parking,
        source: source_n,
    })
}

/// Creates `park` with the source's shape (partitions, replicas) and retention;
/// returns its partitions.
async fn create(
    kafka: &KafkaConfig,
    admin: &AdminClient<DefaultClientContext>,
    source: &str,
    park: &str,
    (partitions_n, replicas): (usize, usize),
    options: &AdminOptions,
) -> Result<usize, TopicError> {
    // As safe as the source: parked events' source offsets are committed, so the
    // parking topic is their only copy. (Unknown: the brokers' default.)
    let replication = match replicas {
        0 => -1,
        n => n as i32,
    };
    let new = NewTopic::new(
        park,
        partitions_n.max(1) as i32,
        TopicReplication::Fixed(replication),
    );
    let created = admin.create_topics([&new], options).await;
    let why = match created.as_deref() {
        Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))]) => None,
        _ => failure(&created),
    };
    let Some(why) = why else {
        let parking = wait_for_partitions(admin, park, 1).await;
        tracing::info!(topic = park, partitions = parking, "parking topic created");
        copy_retention(admin, source, park).await;
        return Ok(parking);
    };
    // Brokers without the admin API (librdkafka's mock cluster) create a topic on first
    // use: ask a client that may.
    auto_create(kafka, park);
    let parking =
        super::blocking(|| partitions(admin, park)).map_err(|why| TopicError::Unknown {
            topic: park.to_string(),
            why,
        })?;
    if parking == 0 {
        return Err(TopicError::Missing {
            topic: park.to_string(),
            why,
        });
    }
    Ok(parking)
}

/// Grows `park` from `parking` to the source's `source_n` partitions; returns its
/// partitions (as they were if it cannot grow, said in one line).
async fn grow(
    admin: &AdminClient<DefaultClientContext>,
    park: &str,
    parking: usize,
    source_n: usize,
    options: &AdminOptions,
) -> usize {
    let grown = admin
        .create_partitions([&NewPartitions::new(park, source_n)], options)
        .await;
    if let Some(why) = failure(&grown) {
        tracing::warn!(
            topic = park,
            "the parking topic has {parking} partitions, the source {source_n}, and \
             cannot grow ({why}): workspaces are not parked from source partitions \
             {parking} and up"
        );
        return parking;
    }
    let parking = wait_for_partitions(admin, park, source_n).await;
    tracing::info!(topic = park, partitions = parking, "parking topic grown");
    parking
}

/// Why an admin request on one resource failed, or `None` if it did not.
fn failure<T, N>(
    result: &rdkafka::error::KafkaResult<Vec<Result<T, (N, RDKafkaErrorCode)>>>,
) -> Option<String> {
    match result.as_deref() {
        Ok([Ok(_)]) => None,
        Ok([Err((_, code))]) => Some(code.to_string()),
        Ok(_) => Some("no answer".to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// The topic setting that says how long records are kept.
const RETENTION: &str = "retention.ms";

/// How long asking for a topic's retention may take (brokers without the API never
/// answer).
const RETENTION_TIMEOUT: Duration = Duration::from_secs(3);

/// `topic`'s `retention.ms` as the brokers describe it (`None`: not set).
async fn retention_ms(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<Option<String>, String> {
    let options = AdminOptions::new().request_timeout(Some(RETENTION_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|e| e.to_string())?;
    match described.into_iter().next() {
        Some(Ok(resource)) => Ok(resource.get(RETENTION).and_then(|e| e.value.clone())),
        Some(Err(code)) => Err(code.to_string()),
        None => Ok(None),
    }
}

/// Gives the newly created parking topic the source's retention: parked, events wait
/// no less long than they would have waited there, uncommitted.
async fn copy_retention(admin: &AdminClient<DefaultClientContext>, source: &str, park: &str) {
    let ms = match retention_ms(admin, source).await {
        Ok(Some(ms)) => ms,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(
                topic = park,
                "parking topic kept for the brokers' default retention (the source's \
                 could not be read: {e}); keep it at least as long as the source's"
            );
            return;
        }
    };
    let options = AdminOptions::new().request_timeout(Some(RETENTION_TIMEOUT));
    let alter = AlterConfig::new(ResourceSpecifier::Topic(park)).set(RETENTION, &ms);
    match failure(&admin.alter_configs([&alter], &options).await) {
        None => tracing::info!(
            topic = park,
            "parking topic kept as long as the source: retention.ms = {ms}"
        ),
        Some(why) => tracing::warn!(
            topic = park,
            "parking topic kept for the brokers' default retention, not the source's \
             {ms} ms ({why}); keep it at least as long as the source's"
        ),
    }
}

/// Warns when an existing parking topic deletes records sooner than the source does:
/// a workspace parked longer than that loses events.
async fn warn_if_kept_shorter(admin: &AdminClient<DefaultClientContext>, source: &str, park: &str) {
    let ms = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
    let (Ok(source_ms), Ok(park_ms)) = (
        retention_ms(admin, source).await.map(ms),
        retention_ms(admin, park).await.map(ms),
    ) else {
        return;
    };
    if let Some(shorter) = kept_shorter(source_ms, park_ms) {
        tracing::warn!(
            topic = park,
            "the parking topic keeps records {shorter}, less than the source topic: \
             a workspace parked longer than that loses the events it parked; raise its \
             retention.ms"
        );
    }
}

/// How long the parking topic keeps records, if shorter than the source (`-1`: for
/// ever; `None`: unknown, assumed long enough).
fn kept_shorter(source_ms: Option<i64>, park_ms: Option<i64>) -> Option<String> {
    let park = park_ms.filter(|ms| *ms >= 0)?;
    let shorter = match source_ms {
        Some(source) => source < 0 || park < source,
        None => false,
    };
    shorter.then(|| format!("{} h", park / 3_600_000))
}

/// Partitions of `topic` once the metadata shows at least `want` (a few seconds at
/// most after creating or growing it), else what it shows.
async fn wait_for_partitions(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    want: usize,
) -> usize {
    let mut seen = 0;
    for _ in 0..50 {
        seen = super::blocking(|| partitions(admin, topic)).unwrap_or(0);
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Asks for `topic`'s metadata from a client that lets the brokers create it.
fn auto_create(kafka: &KafkaConfig, topic: &str) {
    let producer: Result<rdkafka::producer::BaseProducer, _> = crate::kafka::producer_config(kafka)
        .set("allow.auto.create.topics", "true")
        .create();
    if let Ok(producer) = producer {
        let _ = super::blocking(|| {
            rdkafka::producer::Producer::client(&producer).fetch_metadata(Some(topic), TIMEOUT)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::kept_shorter;

    #[test]
    fn a_parking_topic_kept_shorter_than_its_source_is_told() {
        let day = 86_400_000;
        assert_eq!(
            kept_shorter(Some(7 * day), Some(day)).as_deref(),
            Some("24 h")
        );
        assert_eq!(kept_shorter(Some(-1), Some(day)).as_deref(), Some("24 h"));
        assert_eq!(kept_shorter(Some(day), Some(7 * day)), None);
        assert_eq!(kept_shorter(Some(day), Some(-1)), None);
        assert_eq!(kept_shorter(Some(day), None), None);
        assert_eq!(kept_shorter(None, Some(day)), None);
    }
}
