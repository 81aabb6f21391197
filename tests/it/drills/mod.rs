//! Crash and fault drills: the release binary under load on a real broker, killed and
//! faulted; each drill prints its figures. scripts/test.sh runs them alone (they time
//! recoveries), after the real-broker suite, with `SLUICE_TEST_RELEASE_BIN`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::fleet::{free_port, Pod};
use crate::common::{unique, Broker, Setup};

mod api;
mod broker;
mod crash;
mod input;

/// A child process, killed when dropped (a failed drill leaves nothing running).
struct Proc(Option<Child>);

impl Proc {
    fn take(mut self) -> Child {
        self.0.take().expect("running")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The command that starts the API: `bin` behind `prefix` (e.g. `taskset -c 1`) and
/// `chrt -f 50` where the system allows real-time priority. A real API's front door
/// dates each request as it comes in, on machines of its own; here it shares two cores
/// with the worker, the broker and this test, and one request read 22 ms late once made
/// 51 requests the worker sent 1.016 s apart look like one second (the CPU drill, 3 runs
/// in 4 before; 0 in 6 at real-time priority, arrivals then ≤ 1 ms after the worker's
/// write).
fn api_command(prefix: &[&str], bin: &str) -> Command {
    static CHRT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let chrt = *CHRT.get_or_init(|| {
        let ok = Command::new("chrt")
            .args(["-f", "50", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "note: chrt -f not permitted; the mock API's counts include its own \
                 scheduling delays"
            );
        }
        ok
    });
    let mut words: Vec<&str> = prefix.to_vec();
    if chrt {
        words.extend(["chrt", "-f", "50"]);
    }
    words.push(bin);
    let mut command = Command::new(words[0]);
    command.args(&words[1..]);
    command
}

/// `sluice mock-api` (release, unlimited) in its own process, read through `/stats`:
/// the in-process one would run in this debug test binary, too slow for the load.
struct Api {
    _proc: Proc,
    url: String,
}

impl Api {
    async fn start(bin: &str) -> Api {
        Api::start_on(bin, free_port(), &["--limit-per-s", "0"]).await
    }

    /// On `port`, with `args` (limit, faults...).
    async fn start_on(bin: &str, port: u16, args: &[&str]) -> Api {
        Api::start_with(api_command(&[], bin), port, args).await
    }

    /// As [`start_on`](Self::start_on), `command` being the binary (or a wrapper such as
    /// `taskset` in front of it).
    async fn start_with(mut command: Command, port: u16, args: &[&str]) -> Api {
        let child = command
            .args(["mock-api", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mock-api starts");
        let api = Api {
            _proc: Proc(Some(child)),
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if reqwest::get(format!("{}/healthz", api.url)).await.is_ok() {
                return api;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mock-api did not start");
    }

    async fn stats(&self) -> Stats {
        let v: Value = reqwest::get(format!("{}/stats", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Stats {
            accepted: n("events_accepted"),
            redelivered: n("redelivered_events"),
            order_violations: n("order_violations"),
            max_per_second: v["workspaces"]
                .as_object()
                .into_iter()
                .flat_map(|w| w.values())
                .filter_map(|w| w["max_requests_per_second"].as_u64())
                .max()
                .unwrap_or(0),
        }
    }
}

/// What the API counted.
#[derive(Debug, Clone, Copy)]
struct Stats {
    accepted: u64,
    redelivered: u64,
    order_violations: u64,
    /// The most requests any workspace sent in one sliding second.
    max_per_second: u64,
}

impl Stats {
    /// The later of two readings (counts only grow).
    fn max_with(self, other: Stats) -> Stats {
        if self.accepted >= other.accepted {
            self
        } else {
            other
        }
    }

    /// Distinct events delivered.
    fn unique(&self) -> u64 {
        self.accepted - self.redelivered
    }
}

/// The release build the drills run (a debug build cannot carry their load).
fn release_bin() -> String {
    std::env::var("SLUICE_TEST_RELEASE_BIN")
        .expect("SLUICE_TEST_RELEASE_BIN names a release build of sluice")
}

/// `sluice loadgen` at `rate` events/s for `duration`, 1 000 users.
fn loadgen(bin: &str, brokers: &str, topic: &str, rate: u32, duration: &str, seed: u64) -> Proc {
    let child = Command::new(bin)
        .args([
            "loadgen",
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--duration",
            duration,
        ])
        .args([
            "--rate",
            &rate.to_string(),
            "--users",
            "1000",
            "--seed",
            &seed.to_string(),
        ])
        .args(["--progress-interval", "1h"])
        .env("SLUICE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("loadgen starts");
    Proc(Some(child))
}

/// Waits for a loadgen to finish and returns how many events the broker acknowledged.
fn loadgen_sent(load: Proc) -> u64 {
    let out = load.take().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no loadgen summary in {text}"));
    summary["acknowledged"].as_u64().unwrap()
}

/// The real broker, a fresh 8-partition topic (and its DLQ), an unlimited `sluice
/// mock-api`, and a worker setup at the shipped batch, window and limits.
async fn at_shipped_defaults(bin: &str, prefix: &str) -> (Broker, String, Api, Setup) {
    let broker = Broker::real();
    let topic = unique(prefix);
    broker.create_topic(&topic, 8).await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let api = Api::start(bin).await;
    let mut setup = Setup::new(&broker.brokers(), &topic, &api.url, &["local"]);
    setup.batch = String::new();
    setup.lanes = String::new();
    setup.limits = String::new();
    (broker, topic, api, setup)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until the API counted `sent` distinct events, or panics after `limit`.
async fn wait_delivered(api: &Api, sent: u64, limit: Duration, pod: &Pod) -> Stats {
    let deadline = Instant::now() + limit;
    loop {
        let s = api.stats().await;
        if s.unique() >= sent {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {sent} events delivered:\n{}",
            s.unique(),
            pod.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
