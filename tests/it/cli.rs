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
