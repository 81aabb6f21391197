//! The broker stopped and started again on the same port, with its data.

use super::*;

/// Tansu keeping its log in S3 (`moto`'s server, so it outlives a restart): the one
/// broker a drill can stop and start again on the same port with its data.
struct DurableTansu {
    _moto: Proc,
    tansu: Option<Proc>,
    port: u16,
    s3: String,
    bucket: String,
}

impl DurableTansu {
    /// `SLUICE_TEST_TANSU` (the broker) and `SLUICE_TEST_MOTO` (where moto is installed):
    /// scripts/test.sh sets both.
    async fn start() -> DurableTansu {
        let moto_path = std::env::var("SLUICE_TEST_MOTO")
            .expect("SLUICE_TEST_MOTO names a directory holding moto[server] (scripts/test.sh)");
        let s3_port = free_port();
        let moto = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(s3_port.to_string())
            .env("PYTHONPATH", moto_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server starts");
        let s3 = format!("http://127.0.0.1:{s3_port}");
        let bucket = unique("tansu");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let made = client.put(format!("{s3}/{bucket}")).send().await;
            if made.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "moto's S3 server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut broker = DurableTansu {
            _moto: Proc(Some(moto)),
            tansu: None,
            port: free_port(),
            s3,
            bucket,
        };
        broker.up().await;
        broker
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its port and waits until it accepts connections.
    async fn up(&mut self) {
        let tansu = std::env::var("SLUICE_TEST_TANSU").expect("SLUICE_TEST_TANSU names Tansu");
        let listener = format!("tcp://{}", self.brokers());
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &format!("s3://{}/", self.bucket)])
            .env("AWS_ACCESS_KEY_ID", "drill")
            .env("AWS_SECRET_ACCESS_KEY", "drill")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT", &self.s3)
            .env("AWS_ALLOW_HTTP", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.tansu = Some(Proc(Some(child)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(self.brokers())
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "Tansu did not listen");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the broker (SIGTERM) and waits for it to exit.
    fn down(&mut self) {
        if let Some(proc) = self.tansu.take() {
            let mut child = proc.take();
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// The broker stopped for 25 s while the worker works through a backlog, and started
/// again on the same port with its data: the worker lives through it, says on
/// `/readyz` why it is not ready, commits nothing while the broker is away, then
/// delivers and commits the rest of the backlog and what is written after the return.
/// (The producer is quiet as the broker stops: Tansu 0.6 acknowledges writes it then
/// loses when stopped in the middle of them — 2 of 8 000 in a trial with no consumer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: Tansu on moto's S3 and the release binary, ~1 min, run alone: scripts/test.sh"]
async fn drill_broker_stopped_and_restarted_on_the_same_port() {
    const PARTITIONS: i32 = 4;
    const BEFORE: usize = 16_000;
    const AFTER: usize = 3_000;
    let bin = release_bin();
    let mut broker = DurableTansu::start().await;
    let admin = Broker::Real(broker.brokers());
    let topic = unique("drill-broker");
    admin.create_topic(&topic, PARTITIONS).await;
    admin.create_topic(&format!("{topic}.dlq"), 1).await;
    drop(admin);
    let backlog = crate::common::tracks("local", "u", 100, 1..BEFORE + 1);
    let mut positions = crate::common::produce(&broker.brokers(), &topic, &backlog).await;
    let api = Api::start(&bin).await;
    let mut setup = Setup::new(&broker.brokers(), &topic, &api.url, &["local"]);
    // 1 000 events/s at most, and at most ~2 000 held in process (buffer + prefetch):
    // the backlog (16 s of delivery) outlasts the outage and must be fetched after it.
    setup.batch = "max_events = 100\n".into();
    setup.limits = "default_rate_limit_per_s = 10\ndefault_burst = 1\n".into();
    setup.kafka = "max_buffered_events = 1000\nresume_buffered_events = 500\n".into();
    setup.kafka_options =
        "\"queued.max.messages.kbytes\" = \"256\"\n\"queued.min.messages\" = \"200\"\n".into();
    let dir = tempfile::tempdir().unwrap();
    let mut pod = Pod::start_binary(&bin, &setup.toml(), dir.path(), "pod");
    let readyz = |pod: &Pod| {
        let url = format!("{}/readyz", pod.url);
        async move {
            match reqwest::get(url).await {
                Ok(r) => Some((r.status().is_success(), r.text().await.unwrap_or_default())),
                Err(_) => None,
            }
        }
    };
    async fn commits(pod: &Pod) -> f64 {
        let m = pod.metrics().await.expect("the worker answers");
        crate::common::fleet::value(&m, "sluice_commits_total", &[])
    }
    let joined = Instant::now();
    while api.stats().await.unique() < 2_000 {
        assert!(joined.elapsed() < Duration::from_secs(60), "{}", pod.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_before = api.stats().await.unique();
    broker.down();
    // What was in flight as it went fails within a couple of seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits_then = commits(&pod).await;
    let away = Instant::now();
    let mut why = None;
    while away.elapsed() < Duration::from_secs(23) {
        let (ready, text) = readyz(&pod).await.expect("the worker answers");
        if !ready && why.is_none() {
            why = Some((away.elapsed().as_secs_f64() + 2.0, text));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let commits_away = commits(&pod).await - commits_then;
    let delivered_away = api.stats().await.unique();
    broker.up().await;
    let back = Instant::now();
    let more = crate::common::tracks("local", "u", 100, BEFORE + 1..BEFORE + AFTER + 1);
    let more_positions = crate::common::produce(&broker.brokers(), &topic, &more).await;
    let sent = (BEFORE + AFTER) as u64;
    let s = wait_delivered(&api, sent, Duration::from_secs(120), &pod).await;
    let delivered_after = back.elapsed().as_secs_f64();
    // Committed to the end of every partition (by the producer's acknowledgements:
    // Tansu's high watermark is not the true end).
    positions.extend(more_positions);
    setup.wait_committed(&positions, PARTITIONS).await;
    let committed_after = back.elapsed().as_secs_f64();
    let ready_again = readyz(&pod).await.is_some_and(|(ready, _)| ready);
    let log = pod.log();
    pod.stop();
    let (after, text) = why.expect("not ready while the broker was away");
    println!(
        "broker restart drill: {BEFORE} events waiting, {delivered_before} delivered when \
         the broker stopped for 25 s, {delivered_away} by its return; not ready {after:.1} s \
         after it stopped ({}); {commits_away} commits while away; {AFTER} more written \
         after the return; delivered {} of {sent} (unique; re-delivered {}, order \
         violations {}) {delivered_after:.1} s and committed to the end \
         {committed_after:.1} s after it came back",
        text.trim(),
        s.unique(),
        s.redelivered,
        s.order_violations
    );
    assert!(text.contains("kafka"), "/readyz says why: {text}");
    assert_eq!(
        commits_away, 0.0,
        "nothing committed while the broker was away"
    );
    assert!(
        delivered_away < BEFORE as u64,
        "the backlog outlasted the outage, so delivery resumed by fetching again"
    );
    assert_eq!(s.order_violations, 0, "first deliveries in per-user order");
    assert!(ready_again, "ready once the broker is back:\n{log}");
}
