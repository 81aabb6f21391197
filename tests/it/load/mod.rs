//! The load tools end to end: `sluice loadgen` and `sluice replay` against librdkafka's
//! mock cluster (and Tansu for time ranges), read back with a plain consumer.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use sluice::cli::{Cli, Command as Sub};
use sluice::tools::dump::Raw;
use sluice::tools::loadgen;
use sluice::tools::replay;
use tokio_util::sync::CancellationToken;

use crate::common::{unique, Broker};

mod loadgen_tests;
mod replay_tests;

pub use replay_tests::replay_selects_exactly_a_time_range;

fn loadgen_args(args: &[&str]) -> loadgen::LoadgenArgs {
    let argv = ["sluice", "loadgen"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Loadgen(a) => *a,
        _ => unreachable!(),
    }
}

fn replay_args(args: &[&str]) -> replay::ReplayArgs {
    let argv = ["sluice", "replay"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Replay(a) => *a,
        _ => unreachable!(),
    }
}

/// Runs loadgen in-process (on a blocking thread) and returns its summary.
async fn run_loadgen(args: &[&str]) -> loadgen::Summary {
    let plan = loadgen::Plan::new(loadgen_args(args)).unwrap();
    tokio::task::spawn_blocking(move || loadgen::run(plan, &CancellationToken::new()))
        .await
        .unwrap()
        .unwrap()
}

async fn run_replay(args: &[&str]) -> replay::Summary {
    let args = replay_args(args);
    tokio::task::spawn_blocking(move || replay::run(args, &CancellationToken::new()))
        .await
        .unwrap()
        .unwrap()
}

/// Every record of `topic`, by partition in offset order, read with a plain consumer.
fn read_all(brokers: &str, topic: &str) -> BTreeMap<i32, Vec<Raw>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("read-all"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0;
    let mut ends = BTreeMap::new();
    for p in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .unwrap();
        remaining += high - low;
        ends.insert(p.id(), Vec::new());
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    while remaining > 0 && start.elapsed() < Duration::from_secs(60) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        remaining -= 1;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        ends.get_mut(&m.partition()).unwrap().push(Raw {
            topic: Some(topic.to_string()),
            partition: Some(m.partition()),
            offset: Some(m.offset()),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    assert_eq!(remaining, 0, "{topic}: all records read");
    ends
}

fn header<'a>(raw: &'a Raw, name: &str) -> Option<&'a [u8]> {
    raw.headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Runs the binary; returns (exit code, last stdout line as JSON if any, stderr).
fn run_binary(args: &[&str]) -> (i32, Option<Value>, String) {
    let out = sluice()
        .args(args)
        .env("SLUICE_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok());
    (
        out.status.code().unwrap_or(-1),
        summary,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
