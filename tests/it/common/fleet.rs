//! A fleet as it is deployed: `sluice run` processes (the real binary) sharing one
//! consumer group, and a real Redis (Debian's `redis-server` on a free loopback port)
//! for the shared limit.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{scrape, Scrape, API_KEY, API_KEY_ENV};

/// Held by tests that start several worker processes, so two of them never share the
/// machine's two cores (the limits they check are per window, in real time).
pub static PROCESSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `sluice run` process.
pub struct Pod {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of its metrics and health endpoints.
    pub url: String,
    _config: tempfile::NamedTempFile,
    log: std::path::PathBuf,
}

impl Pod {
    /// Starts `sluice run` on `toml` (its `server.listen` replaced by a free port);
    /// its log goes to a file in `dir`.
    pub fn start(toml: &str, dir: &Path, name: &str) -> Self {
        Self::start_binary(env!("CARGO_BIN_EXE_sluice"), toml, dir, name)
    }

    /// [`start`](Self::start) with another build of sluice (the drills' release one).
    pub fn start_binary(bin: &str, toml: &str, dir: &Path, name: &str) -> Self {
        let port = free_port();
        let toml = toml.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let config = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config.path(), toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config.path())
            .env(API_KEY_ENV, API_KEY)
            .env("SLUICE_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("sluice binary starts");
        Pod {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            _config: config,
            log,
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its Kafka clients now: librdkafka names each client's main thread `rdk:main`.
    pub fn kafka_clients(&self) -> usize {
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim() == "rdk:main")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Its metrics now, or `None` if it does not answer.
    pub async fn metrics(&self) -> Option<Scrape> {
        let probe = reqwest::Client::new()
            .get(format!("{}/healthz", self.url))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        probe.ok()?;
        Some(scrape(&self.url).await)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for it to drain and exit.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(30));
    }

    /// SIGTERM, then waits up to `grace` for it to exit (`kill -9` past that, as
    /// Kubernetes does). Whether it exited by itself.
    pub fn stop_within(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of `name`'s series carrying all of `labels` (`(name, value)` pairs).
pub fn value(metrics: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics.sum(name, labels)
}

/// A Redis server of this test's own.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts `redis-server` (no persistence) on a free loopback port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts `redis-server` on a free loopback port speaking only TLS, with a server
    /// certificate for 127.0.0.1 that a throwaway CA signed (made with `openssl` in
    /// `dir`); returns it and the CA's PEM file.
    pub fn start_tls(dir: &Path) -> (Self, std::path::PathBuf) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl is installed (scripts/test.sh installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=sluice test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let port = free_port();
        let file = |name: &str| dir.join(name).display().to_string();
        let redis = Self::spawn(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &file("server.pem"),
                "--tls-key-file",
                &file("server.key"),
                "--tls-ca-cert-file",
                &file("ca.pem"),
                "--tls-auth-clients",
                "no",
            ],
        );
        (redis, dir.join("ca.pem"))
    }

    /// Starts `redis-server` on `port` and waits until it accepts connections.
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, &["--port", &port.to_string()])
    }

    /// `redis-server` with `args`, waiting until `port` accepts connections.
    fn spawn(port: u16, args: &[&str]) -> Self {
        let binary = [
            "redis-server",
            "/usr/bin/redis-server",
            "/usr/sbin/redis-server",
        ]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok()
        })
        .expect("redis-server is installed (scripts/test.sh installs Debian's)");
        let child = Command::new(binary)
            .args(args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child: Some(child),
            port,
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
