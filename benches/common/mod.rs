//! What every stage's bench starts from: `sluice loadgen`'s default events (one
//! workspace, 1 000 users, identify and track, a fixed seed) and a minimal config.
#![allow(dead_code)]

/// The shipped binary's allocator (src/main.rs), so each stage is measured as it runs
/// there: glibc's malloc and free cost several times mimalloc's, and the stages
/// allocate per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use sluice_core::config::Config;
use sluice_core::deliver::Encoded;
use sluice_core::lane::Envelope;
use sluice_core::record::{Origin, Raw, TopicPartition};
use sluice_lab::loadgen::shape::{Generated, Generator, Shape, ShapeArgs};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    shape: ShapeArgs,
}

/// `n` events as `sluice loadgen --workspaces local --seed 1` makes them.
pub fn events(n: usize) -> Vec<Generated> {
    let args = Args::parse_from(["bench", "--workspaces", "local"]);
    let shape = Shape::new(args.shape, vec![]).expect("loadgen's default shape");
    let mut generator = Generator::new(shape, 1);
    (0..n).map(|_| generator.next_event()).collect()
}

/// A Segment-like call per event, as a user would template it: the file
/// `scripts/bench-peers.sh` takes as `destination.body=@benches/segment-call.tpl`.
pub const TEMPLATE: &str = include_str!("../segment-call.tpl");

/// The shipped defaults, one workspace `local`.
pub fn config() -> Config {
    with_destination(
        "kind = \"customerio\"\nbase_url = \"http://127.0.0.1:9\"",
        "site_id = \"site\"",
    )
}

/// The shipped defaults with a `kind = "http"` destination sending batches, one
/// workspace `local`: `body` as the per-event template, or the field mapping (the
/// template context as JSON) without one.
pub fn http_config(body: Option<&str>) -> Config {
    let body = body
        .map(|b| format!("body = '''{b}'''"))
        .unwrap_or_default();
    with_destination(
        &format!(
            "kind = \"http\"\nurl = \"http://127.0.0.1:9/v1/items\"\nsend = \"batch\"\n\
             batch_field = \"items\"\nitem_errors = \"/errors\"\n{body}"
        ),
        "",
    )
}

/// The shipped defaults with `destination` as its `[destination]` and `workspace`'s
/// keys on workspace `local`.
fn with_destination(destination: &str, workspace: &str) -> Config {
    let text = format!(
        r#"
[kafka]
brokers = "127.0.0.1:9092"
group_id = "bench"
topics = ["events"]
dlq_topic = "events.dlq"

[destination]
{destination}

[[workspaces]]
id = "local"
api_key_env = "BENCH_KEY"
{workspace}
"#
    );
    Config::from_toml(&text, "bench", [("BENCH_KEY".to_string(), "k".to_string())])
        .expect("bench config")
}

/// `n` of those events as a lane holds them: 8 partitions, a 200-byte encoding each.
pub fn envelopes(n: usize) -> Vec<Envelope> {
    let now = tokio::time::Instant::now();
    events(n)
        .into_iter()
        .enumerate()
        .map(|(i, e)| Envelope {
            origin: Origin {
                tp: TopicPartition::new("events", (i % 8) as i32),
                offset: i as i64,
            },
            user: e.key.clone(),
            event_time: None,
            encoded: Encoded::BatchItem(vec![b'x'; 200]),
            arrived: now,
            from_park: false,
            raw: Raw {
                key: Some(e.key.into_bytes()),
                payload: Some(e.value),
                redrive_count: 0,
                replay: None,
                entered_us: None,
                first_written: String::new(),
            },
        })
        .collect()
}
