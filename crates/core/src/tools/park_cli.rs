//! `sluice park inspect`: what waits in the parking topic, per workspace — records
//! parked, records not yet read back (past the workspace reader's committed offset),
//! fences — with samples of where the events came from.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::dlq_cli::{read_topic, Filter, StoredRecord};
use crate::config::Config;
use crate::kafka::client_config;
use crate::park::writer::{FENCE, WORKSPACE};
use crate::printable::{printable, printable_bytes};
use crate::record::headers;

/// One workspace's part of the parking topic.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parked {
    /// Records parked (fences excluded).
    pub records: usize,
    /// Of those, not yet read back by the workspace's reader.
    pub waiting: usize,
    /// Fences written.
    pub fences: usize,
    /// A few waiting records: (parking partition, offset, source topic/partition/offset, key).
    pub samples: Vec<String>,
}

/// Reads the parking topic of `config` and each workspace reader's committed offsets.
pub fn inspect(config: &Config, samples: usize) -> anyhow::Result<BTreeMap<String, Parked>> {
    let k = &config.kafka;
    let topic = config
        .parking_topic()
        .ok_or_else(|| anyhow::anyhow!("parking is off in this configuration"))?;
    let records = read_topic(k, &topic, &Filter::default())?;
    let mut by_workspace: BTreeMap<String, Vec<&StoredRecord>> = BTreeMap::new();
    for r in &records {
        let workspace = r
            .headers
            .get(WORKSPACE)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        by_workspace.entry(workspace).or_default().push(r);
    }
    let mut out = BTreeMap::new();
    for (workspace, records) in by_workspace {
        let committed = committed(config, &topic, &workspace)?;
        let mut parked = Parked::default();
        for r in records {
            if r.headers.contains_key(FENCE) {
                parked.fences += 1;
                continue;
            }
            parked.records += 1;
            let read_back = committed
                .get(&r.partition)
                .is_some_and(|next| r.offset < *next);
            if !read_back {
                parked.waiting += 1;
                if parked.samples.len() < samples {
                    let h = |name: &str| printable(r.headers.get(name).map_or("?", String::as_str));
                    parked.samples.push(format!(
                        "parking {}@{} from {}[{}]@{} key {}",
                        r.partition,
                        r.offset,
                        h(headers::TOPIC),
                        h(headers::PARTITION),
                        h(headers::OFFSET),
                        r.key.as_deref().map_or("-".into(), printable_bytes),
                    ));
                }
            }
        }
        out.insert(workspace, parked);
    }
    Ok(out)
}

/// The report `sluice park inspect` prints.
pub fn report(parked: &BTreeMap<String, Parked>) -> String {
    let mut out = format!(
        "{:<20} {:>10} {:>10} {:>8}\n",
        "WORKSPACE", "PARKED", "WAITING", "FENCES"
    );
    for (workspace, p) in parked {
        let workspace = printable(workspace);
        out.push_str(&format!(
            "{workspace:<20} {:>10} {:>10} {:>8}\n",
            p.records, p.waiting, p.fences
        ));
    }
    for (workspace, p) in parked {
        for sample in &p.samples {
            out.push_str(&format!("  {}: {sample}\n", printable(workspace)));
        }
    }
    if parked.is_empty() {
        out.push_str("(the parking topic is empty)\n");
    }
    out
}

/// The committed offsets of `workspace`'s reader group, by parking partition.
fn committed(config: &Config, topic: &str, workspace: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let group = format!("{}.park.{workspace}", config.kafka.group_id);
    let consumer: BaseConsumer = client_config(&config.kafka)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let partitions = super::dlq_cli::partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let result = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let map = result
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    drop(result);
    Ok(map)
}
