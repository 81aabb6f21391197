//! `sluice capacity run` end to end on the embedded default (mock cluster, mock API,
//! load generator, the real pipeline): its counts agree with the API's own, its report
//! follows its schema, thresholds and invalid runs give k6's exit codes.

use std::process::Command;

use clap::Parser;
use serde_json::Value;
use sluice::cli::{CapacityCommand, Cli, Command as Sub};
use sluice::tools::capacity;
use tokio_util::sync::CancellationToken;

fn run_args(args: &[&str]) -> capacity::RunArgs {
    let argv = ["sluice", "capacity", "run"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Capacity {
            command: CapacityCommand::Run(a),
        } => *a,
        _ => unreachable!(),
    }
}

/// Checks `value` against the parts of a JSON Schema the report's schema uses:
/// `required`, `type`, `const`, `enum`, nested `properties` and array `items`.
fn conforms(value: &Value, schema: &Value, path: &str) -> Result<(), String> {
    if let Some(c) = schema.get("const") {
        if value != c {
            return Err(format!("{path}: {value} is not {c}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            return Err(format!("{path}: {value} is not one of {options:?}"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{path}: {value} is not {types:?}"));
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if value.get(key).is_none() {
                return Err(format!("{path}: missing {key}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (k, sub) in props {
            if let Some(v) = obj.get(k) {
                conforms(v, sub, &format!("{path}.{k}"))?;
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            conforms(v, items, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_embedded_run_delivers_everything_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = run_args(&[
        "--stage",
        "2s:200",
        "--stage",
        "4s:200",
        "--threshold",
        "delivered_ratio>=1",
        "--threshold",
        "error_rate<0.01",
        "--out",
        dir.path().to_str().unwrap(),
        "--seed",
        "5",
    ]);
    let outcome = capacity::run(args, CancellationToken::new()).await.unwrap();
    let r = &outcome.report;
    println!("{}", r.markdown());
    assert_eq!(r.sent, 1_000);
    assert_eq!(r.loadgen.sent, r.sent);
    assert_eq!(r.delivered, r.sent, "every event delivered");
    assert_eq!(
        r.api_accepted,
        Some(r.delivered),
        "the API's own count agrees"
    );
    assert_eq!(r.order_violations, Some(0));
    assert!(r.passed && r.valid);
    assert!(r.p99_ms > 0.0 && r.p99_ms < 5_000.0, "{:?}", r.latency_ms);
    // The files.
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let schema: Value =
        serde_json::from_str(include_str!("../../loadtests/capacity-report.schema.json")).unwrap();
    conforms(&json, &schema, "report").unwrap();
    assert_eq!(json["delivered"], 1_000);
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("report.svg is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| Events delivered | 1000 |"), "{md}");
}

#[test]
fn a_schema_violation_is_caught() {
    let schema: Value =
        serde_json::from_str(include_str!("../../loadtests/capacity-report.schema.json")).unwrap();
    let bad = serde_json::json!({"schema": "sluice.capacity.report/1"});
    assert!(conforms(&bad, &schema, "report")
        .unwrap_err()
        .contains("missing"));
}

fn capacity_binary(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["capacity", "run"])
        .args(args)
        .env("SLUICE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_failed_threshold_exits_99_and_an_impossible_rate_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (code, output) = capacity_binary(&[
        "--stage",
        "3s:100",
        "--threshold",
        "p99_latency<1ms",
        "--out",
        &out("a"),
    ]);
    assert_eq!(code, 99, "{output}");
    assert!(output.contains("**FAIL**"), "{output}");
    // Far more than one process can generate while also running the worker: sends fall
    // behind their schedule, so the run says it measured nothing it claims.
    let (code, output) = capacity_binary(&[
        "--stage",
        "1s:1000000",
        "--events",
        "20000",
        "--limit-per-s",
        "0",
        "--out",
        &out("b"),
    ]);
    assert_eq!(code, 3, "{output}");
    assert!(output.contains("invalid run"), "{output}");
}

/// `capacity report` on two scrapes of a running worker: its delivery rate matches the
/// API's own count, and a worker held by its limit is reported as bound by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_of_two_scrapes_matches_the_api_and_names_the_limit() {
    use crate::common::{unique, Broker, Setup, Worker};
    use sluice::tools::mock_api::{MockApi, MockApiConfig};
    let broker = Broker::mock();
    let topic = unique("events");
    broker.create_topic(&topic, 4).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let api = MockApi::start(MockApiConfig::default()).await.unwrap();
    let mut setup = Setup::new(&broker.brokers(), &topic, &api.base_url(), &["local"]);
    // 10 requests/s × 50 events: a 500 events/s ceiling under 1 000/s offered.
    setup.batch = "max_events = 50\nlinger_ms = 20\n".into();
    setup.limits = "default_rate_limit_per_s = 10\ndefault_burst = 1\n".into();
    let (worker, url) = Worker::start_serving(setup.config()).await;
    let plan = sluice::tools::loadgen::Plan::new(
        match Cli::try_parse_from([
            "sluice",
            "loadgen",
            "--brokers",
            &broker.brokers(),
            "--topic",
            &topic,
            "--rate",
            "1000",
            "--duration",
            "14s",
        ])
        .unwrap()
        .command
        {
            Sub::Loadgen(a) => *a,
            _ => unreachable!(),
        },
    )
    .unwrap();
    let load = tokio::task::spawn_blocking(move || {
        sluice::tools::loadgen::run(plan, &CancellationToken::new())
    });
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let metrics_url = format!("{url}/metrics");
    let scrape = || async {
        reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let (before, api_before) = (scrape().await, api.stats().events_accepted);
    let started = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let (after, api_after) = (scrape().await, api.stats().events_accepted);
    let interval = started.elapsed();
    let pods = vec![capacity::review::PodScrapes {
        name: "pod-0".into(),
        before: capacity::review::parse(&before).unwrap(),
        after: capacity::review::parse(&after).unwrap(),
    }];
    let review = capacity::review::review(&pods, interval, 1.0);
    println!("{}", review.markdown());
    let api_rate = (api_after - api_before) as f64 / interval.as_secs_f64();
    assert!(
        (review.delivered_per_s / api_rate - 1.0).abs() < 0.10,
        "review {:.0}/s, API {api_rate:.0}/s",
        review.delivered_per_s
    );
    assert_eq!(review.bound, "api_limit", "{review:?}");
    assert!(
        (review.api_ceiling_per_s / 500.0 - 1.0).abs() < 0.10,
        "{}",
        review.api_ceiling_per_s
    );
    assert!(
        review.time_to_drain_s.is_none(),
        "arrival above delivery never drains"
    );
    load.await.unwrap().unwrap();
    worker.signal_stop();
    api.stop().await;
}
