//! `sluice capacity run` end to end on the embedded default (mock cluster, mock API,
//! load generator, the real pipeline): its counts agree with the API's own, its report
//! follows its schema, thresholds and invalid runs give k6's exit codes.
//!
//! Over 400 lines by design: 6 scenarios of one area, each test a whole story
//! against the real parts, read top to bottom; what they share is in `common/`.

use std::process::Command;

use clap::Parser;
use serde_json::Value;
use sluice::cli::{CapacityCommand, Cli, Command as Sub};
use sluice_lab::capacity;
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

fn review_args(args: &[&str]) -> capacity::ReviewArgs {
    let argv = ["sluice", "capacity", "review"].iter().chain(args).copied();
    match Cli::try_parse_from(argv).unwrap().command {
        Sub::Capacity {
            command: CapacityCommand::Review(a),
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

/// A worker held by its limit: 10 requests/s × 50 events (a 500 events/s ceiling)
/// under 1 000 events/s from the load generator for `duration`, on the mock cluster,
/// serving /metrics at `url`.
struct HeldAtItsLimit {
    _broker: crate::common::Broker,
    api: sluice_mock_api::MockApi,
    worker: crate::common::Worker,
    url: String,
    load: tokio::task::JoinHandle<anyhow::Result<sluice_lab::loadgen::Summary>>,
}

impl HeldAtItsLimit {
    async fn start(duration: &str) -> Self {
        use crate::common::{TestEnv, Worker};
        use sluice_mock_api::MockApiConfig;
        let (broker, api, topic, mut setup) = TestEnv::build(4, &["local"])
            .api(MockApiConfig::default())
            .dlq()
            .start()
            .await
            .into_parts();
        setup.batch(50, 20);
        setup.limit_with_burst(10.0, 1);
        let (worker, url) = Worker::start_serving(setup.config()).await;
        let argv = [
            "sluice",
            "loadgen",
            "--brokers",
            &broker.brokers(),
            "--topic",
            &topic,
            "--rate",
            "1000",
            "--duration",
            duration,
        ];
        let plan = match Cli::try_parse_from(argv).unwrap().command {
            Sub::Loadgen(a) => sluice_lab::loadgen::Plan::new(*a).unwrap(),
            _ => unreachable!(),
        };
        let load = tokio::task::spawn_blocking(move || {
            sluice_lab::loadgen::run(plan, &CancellationToken::new())
        });
        HeldAtItsLimit {
            _broker: broker,
            api,
            worker,
            url,
            load,
        }
    }

    /// The load's end, then the worker stopped and gone before the broker and the API
    /// go: a worker still closing its consumer when the broker vanished could wait for
    /// its final commit for ever.
    async fn stop(self) {
        self.load.await.unwrap().unwrap();
        self.worker.stop().await;
        // The consumer's last handle may be a commit finishing on a blocking thread:
        // let it end against a broker that is still there.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        self.api.stop().await;
    }
}

/// `capacity review` on two scrapes of a running worker: its delivery rate matches the
/// API's own count, and a worker held by its limit is reported as bound by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_of_two_scrapes_matches_the_api_and_names_the_limit() {
    let held = HeldAtItsLimit::start("14s").await;
    let (api, url) = (&held.api, &held.url);
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
    use capacity::scrapes::Scrape;
    let pods = vec![capacity::scrapes::PodScrapes {
        name: "pod-0".into(),
        scrapes: vec![
            Scrape::parse(&before, 0.0).unwrap(),
            Scrape::parse(&after, interval.as_secs_f64()).unwrap(),
        ],
    }];
    let review = capacity::review::review(&pods, 1.0);
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
    held.stop().await;
}

/// One scenario of the fidelity test: the worker under test confined to one core.
struct Scenario {
    name: &'static str,
    /// `capacity run` options shared by the moderate and the stress run.
    api: &'static [&'static str],
    /// The moderate run: two rates, so the review sees CPU at two operating points.
    moderate: &'static [&'static str],
    /// The stress staircase's last step, events/s, and how many steps of 5 s lead
    /// there.
    max_rate: &'static str,
    steps: u32,
    bound: &'static str,
}

/// Runs `sluice capacity run` on core 0 (a one-core pod) and waits for it.
fn one_core_capacity_run(bin: &str, args: &[String]) -> std::process::Child {
    Command::new("taskset")
        .args(["-c", "0", bin, "capacity", "run"])
        .args(args)
        .env("SLUICE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("taskset (util-linux) runs the worker on one core")
}

/// Fidelity: a `capacity review` taken during a moderate `capacity run` predicts the
/// breaking point that `capacity run --profile stress` then measures, within ±10%,
/// API-limited and CPU-limited. It measures CPU, so it runs alone, on the release
/// binary (scripts/test.sh's last step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real broker and release binary, ~7 min, run alone: scripts/test.sh"]
async fn fidelity_a_review_predicts_the_breaking_point() {
    use crate::common::fleet::free_port;
    let bin = std::env::var("SLUICE_TEST_RELEASE_BIN")
        .expect("SLUICE_TEST_RELEASE_BIN names a release build of sluice");
    let scenarios = [
        // 10 requests/s × the shipped 500-event batches: ~5 000 events/s, well below
        // what one core of sluice carries, so the API's limit binds. Both scenarios run
        // on the embedded broker: a Tansu that had carried one run fell behind in the
        // next (bound `broker` at 2 000/s, twice), which measured the broker.
        Scenario {
            name: "API-limited (10 requests/s, one core, embedded)",
            api: &["--limit-per-s", "10"],
            moderate: &[
                "--stage", "2s:1500", "--stage", "22s:1500", "--stage", "2s:3000", "--stage",
                "22s:3000",
            ],
            max_rate: "10000",
            steps: 20,
            bound: "api_limit",
        },
        // An unlimited API answering in 1 ms: the core binds. On the embedded broker,
        // so the whole pipeline — broker, generator, API and worker — is the one
        // process on the one core the review measures (Tansu on the other core cannot
        // carry what one core of sluice does).
        Scenario {
            name: "CPU-limited (unlimited API, one core, embedded)",
            api: &["--limit-per-s", "0", "--api-latency", "fixed:1"],
            moderate: &[
                "--stage",
                "2s:6000",
                "--stage",
                "22s:6000",
                "--stage",
                "2s:18000",
                "--stage",
                "22s:18000",
            ],
            // Steps of 1 000 events/s: the break is known only to a step, and steps of
            // 2 000 (5% of it) spent half of the ±10% on the staircase's resolution.
            max_rate: "60000",
            steps: 60,
            bound: "cpu",
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        let base: Vec<String> = s.api.iter().map(|a| a.to_string()).collect();
        // The moderate run, reviewed from its /metrics while it runs.
        let port = free_port();
        let mut args = base.clone();
        args.extend(s.moderate.iter().map(|a| a.to_string()));
        args.extend([
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--out".into(),
            dir.path()
                .join(format!("moderate-{i}"))
                .display()
                .to_string(),
        ]);
        let mut run = one_core_capacity_run(&bin, &args);
        let url = format!("http://127.0.0.1:{port}/metrics");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let owned = match reqwest::get(&url).await {
                Ok(r) => r
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains("sluice_partition_lag{"),
                Err(_) => false,
            };
            if owned {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never owned partitions"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // Past the first ramp, over both rates.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let review_args = review_args(&[
            "--metrics",
            &url,
            "--interval",
            "40s",
            "--every",
            "2s",
            "--cores-per-pod",
            "1",
        ]);
        let pods = capacity::gather::collect(&review_args).await.unwrap();
        let review = capacity::review::review(&pods, 1.0);
        println!("{}\n{}", s.name, review.markdown());
        assert!(run.wait().unwrap().success(), "the moderate run failed");
        // The stress run.
        let out = dir.path().join(format!("stress-{i}"));
        let mut args = base;
        args.extend(
            ["--profile", "stress", "--max-rate", s.max_rate]
                .iter()
                .map(|a| a.to_string()),
        );
        args.extend([
            "--steps".into(),
            s.steps.to_string(),
            "--ramp".into(),
            format!("{}s", 5 * s.steps),
            "--out".into(),
            out.display().to_string(),
        ]);
        let status = one_core_capacity_run(&bin, &args).wait().unwrap();
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert!(status.success(), "the stress run failed: {report}");
        let measured = report["breaking_point_per_s"]
            .as_f64()
            .unwrap_or_else(|| panic!("the stress run never broke: {report}"));
        let predicted = review.max_sustainable_per_s;
        let line = format!(
            "{}: predicted {predicted:.0} events/s ({}, {}), measured breaking point {measured:.0} ({}; held {}, broke at the {} step): {:+.1}%",
            s.name,
            review.bound,
            review
                .cpu_model
                .map_or("no CPU model".into(), |m| format!(
                    "{:.3} cores + {:.1} µs/event",
                    m.fixed_cores, m.per_event_us
                )),
            report["bound"],
            report["broke"]["held_per_s"],
            report["broke"]["step_per_s"],
            (predicted / measured - 1.0) * 100.0
        );
        println!("{line}");
        figures.push((s, review.bound, predicted, measured, line));
    }
    for (s, bound, predicted, measured, line) in figures {
        assert_eq!(bound, s.bound, "{line}");
        assert!((predicted / measured - 1.0).abs() <= 0.10, "{line}");
    }
}

/// `capacity review --prometheus`: a real Prometheus scrapes a worker held by its limit
/// every second; the review read back from its HTTP API over a range gives the API's
/// delivery rate and names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Prometheus (SLUICE_TEST_PROMETHEUS; scripts/test.sh installs Debian's)"]
async fn a_review_from_prometheus_matches_the_api_and_names_the_limit() {
    use crate::common::fleet::free_port;
    let prometheus_bin = std::env::var("SLUICE_TEST_PROMETHEUS")
        .expect("SLUICE_TEST_PROMETHEUS names a prometheus binary");
    let held = HeldAtItsLimit::start("16s").await;
    let (api, url) = (&held.api, &held.url);
    let dir = tempfile::tempdir().unwrap();
    let target = url.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: sluice\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut prometheus = Command::new(&prometheus_bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus starts");
    // Steady state from ~4 s; the API's own rate over 10 s of it.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (api_before, started) = (api.stats().events_accepted, std::time::Instant::now());
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let api_rate =
        (api.stats().events_accepted - api_before) as f64 / started.elapsed().as_secs_f64();
    let prometheus_url = format!("http://127.0.0.1:{port}");
    let review_args = review_args(&[
        "--prometheus",
        &prometheus_url,
        "--range",
        "8s",
        "--every",
        "1s",
        "--selector",
        "job=\"sluice\"",
    ]);
    let pods = capacity::gather::collect(&review_args).await.unwrap();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(pods.len(), 1, "one instance");
    assert!(
        pods[0].scrapes.len() >= 5,
        "{} points",
        pods[0].scrapes.len()
    );
    let review = capacity::review::review(&pods, 1.0);
    println!("{}", review.markdown());
    assert!(
        (review.delivered_per_s / api_rate - 1.0).abs() < 0.10,
        "review {:.0}/s, API {api_rate:.0}/s",
        review.delivered_per_s
    );
    assert_eq!(review.bound, "api_limit", "{review:?}");
    held.stop().await;
}
