//! The binary's command line: configuration errors stop it at once with one clear line
//! naming the key; `config check` prints the effective config with secrets masked.

use std::process::Command;

use crate::common::{Setup, API_KEY_ENV};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn base() -> String {
    Setup::new("127.0.0.1:9", "events", "http://127.0.0.1:9", &["acme"]).toml()
}

/// Runs sluice with the API key variable set or not; returns (success, stderr lines).
fn run(args: &[&str], with_key: bool) -> (bool, Vec<String>, String) {
    let mut cmd = sluice();
    cmd.args(args)
        .env_remove(API_KEY_ENV)
        .env("SLUICE_LOG_FORMAT", "text");
    if with_key {
        cmd.env(API_KEY_ENV, "cli-secret-9d1e");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr.lines().map(str::to_string).collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

#[test]
fn unknown_key_fails_with_one_line_naming_it() {
    let file = write_config(&base().replace("commit_interval_ms", "comit_interval_ms"));
    let path = file.path().to_str().unwrap();
    for cmd in [
        vec!["config", "check", "--config", path],
        vec!["run", "--config", path],
    ] {
        let (ok, lines, _) = run(&cmd, true);
        assert!(!ok, "{cmd:?} must fail");
        assert_eq!(lines.len(), 1, "one line: {lines:?}");
        assert!(
            lines[0].contains("kafka") && lines[0].contains("comit_interval_ms"),
            "{lines:?}"
        );
    }
}

#[test]
fn missing_api_key_variable_fails_with_one_line_naming_it() {
    let file = write_config(&base());
    let path = file.path().to_str().unwrap();
    let (ok, lines, _) = run(&["run", "--config", path], false);
    assert!(!ok);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("workspaces[0].api_key_env") && lines[0].contains(API_KEY_ENV),
        "{lines:?}"
    );
}

#[test]
fn config_check_prints_the_effective_config_without_secrets() {
    let text = base().replace(
        "[kafka.options]",
        "[kafka.options]\n\"sasl.password\" = \"kafka-secret-77\"",
    );
    let file = write_config(&text);
    let path = file.path().to_str().unwrap();
    let mut cmd = sluice();
    cmd.args(["config", "check", "--config", path])
        .env(API_KEY_ENV, "cli-secret-9d1e")
        .env("SLUICE__BATCH__MAX_EVENTS", "42");
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("max_events = 42"), "{stdout}");
    assert!(stdout.contains("sasl.password"));
    assert!(!stdout.contains("kafka-secret-77") && !stdout.contains("cli-secret-9d1e"));
}

#[test]
fn shipped_example_configs_are_valid() {
    for file in ["config/sluice.toml", "config/local.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut cmd = sluice();
        cmd.args(["config", "check", "--config", &path]);
        for var in [
            "SLUICE_ACME_API_KEY",
            "SLUICE_GLOBEX_API_KEY",
            "SLUICE_LOCAL_API_KEY",
        ] {
            cmd.env(var, "example");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every credential a configuration can hold, each a marker no output may contain.
const MARKERS: [&str; 4] = [
    "mark-apikey-5e1",
    "mark-sasl-9c2",
    "mark-redis-7a4",
    "mark-sslkey-3b8",
];

/// A configuration whose every secret-bearing field holds one of [`MARKERS`] (the API
/// key is the environment's), with the metrics listener on `listen`.
fn config_with_marked_secrets(listen: &str) -> String {
    let mut setup = Setup::new("127.0.0.1:9", "events", "http://127.0.0.1:9", &["acme"]);
    let options = &mut setup.worker.kafka.options;
    options.insert("sasl.password".into(), MARKERS[1].into());
    options.insert("sasl.username".into(), "user".into());
    options.insert("ssl.key.password".into(), MARKERS[3].into());
    setup.worker.limits.mode = sluice_core::config::LimitMode::Redis;
    setup.worker.limits.redis_url = Some(sluice_core::config::SecretUrl::new(format!(
        "redis://sluice:{}@127.0.0.1:9/0",
        MARKERS[2]
    )));
    setup.worker.server.listen = listen.parse().unwrap();
    setup.toml()
}

fn assert_no_marker(what: &str, text: &str) {
    for marker in MARKERS {
        assert!(!text.contains(marker), "{what} shows {marker}:\n{text}");
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_secret_reaches_any_output() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let text = config_with_marked_secrets(&listen);
    assert!(MARKERS[1..].iter().all(|m| text.contains(m)), "{text}");
    let file = write_config(&text);
    let path = file.path().to_str().unwrap();
    let with_env = |args: &[&str]| {
        let mut cmd = sluice();
        cmd.args(args)
            .env(API_KEY_ENV, MARKERS[0])
            .env("SLUICE_LOG_FORMAT", "text");
        cmd
    };

    // config check, --help of every command
    let out = with_env(&["config", "check", "--config", path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let shown = output_text(&out);
    assert!(
        shown.contains("redis://sluice:****@127.0.0.1:9/0"),
        "{shown}"
    );
    assert_no_marker("config check", &shown);
    for help in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["config", "check", "--help"],
    ] {
        assert_no_marker("--help", &output_text(&with_env(&help).output().unwrap()));
    }

    // a syntax error on a credential's line, and a wrong value in the Redis URL
    for (name, broken) in [
        (
            "syntax error",
            text.replace(&format!("\"{}\"", MARKERS[1]), &format!("\"{}", MARKERS[1])),
        ),
        (
            "bad redis url",
            text.replace("redis://sluice:", "http://sluice:"),
        ),
    ] {
        let file = write_config(&broken);
        let out = with_env(&["run", "--config", file.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} must fail");
        let shown = output_text(&out);
        assert!(shown.contains("line ") || name != "syntax error", "{shown}");
        assert_no_marker(name, &shown);
    }

    // the worker itself, its logs (no broker, no Redis: it complains) and its metrics
    let child = with_env(&["run", "--config", path])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut metrics = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Ok(body) = http_get(&listen, "/metrics") {
            metrics = body;
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    assert!(metrics.contains("sluice_"), "metrics were served");
    assert_no_marker("/metrics", &metrics);
    let logs = output_text(&out);
    assert!(logs.lines().count() > 1, "the worker logged: {logs}");
    assert_no_marker("the worker's logs", &logs);
}

/// A plain HTTP/1.0 GET on loopback; the body.
fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map_or(answer.clone(), |(_, b)| b.to_string()))
}
