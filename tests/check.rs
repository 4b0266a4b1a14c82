//! `pushprobe check` as a process: table and JSON output and the exit code. The first probes
//! target a closed local port, so they fail whatever the HTTP probe's implementation; the
//! others run against local doubles (an HTTP target).

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{Pushprobe, Reply, TargetServer};

fn config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = dir.path().join("pushprobe.toml");
    std::fs::write(
        &p,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n\
             [[probe]]\nname = \"closed-port\"\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\ntimeout = \"5s\"\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn table_lists_each_probe_and_exits_1_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .arg("-c")
        .arg(config(&dir))
        .arg("check")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("✗ closed-port  "), "{text}");
    assert!(text.contains(" ms"), "{text}");
    assert!(text.ends_with("1 of 1 probes failed\n"), "{text}");
    // stdout is a pipe here, not a terminal: no colour.
    assert!(!text.contains('\x1b'), "{text:?}");
}

#[test]
fn json_output_is_parseable_and_pushes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .arg("-c")
        .arg(config(&dir))
        .args(["check", "--output", "json"])
        .output()
        .unwrap();
    // The remote_write receiver is a closed port: without --push that must not matter
    // (exit 1 for the probe, not 3 for delivery).
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["delivered"], serde_json::Value::Null);
    assert_eq!(v["probes"][0]["name"], "closed-port");
    assert_eq!(v["probes"][0]["success"], false);
    assert!(v["probes"][0]["latency_ms"].is_number());
}

#[test]
fn a_bad_log_level_is_a_usage_error() {
    for args in [
        vec!["--log-level", "bad[["],
        vec!["--log-level=pushprobe=loud"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
            .args(&args)
            .args(["config", "check"])
            .env_remove("PUSHPROBE_LOG_LEVEL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--log-level"), "{err}");
    }
    // The environment variable is checked the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_pushprobe"))
        .args(["config", "check"])
        .env("PUSHPROBE_LOG_LEVEL", "bad[[")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `pushprobe check ARGS` on `config` to completion.
async fn check(config: &Pushprobe, args: &[&str]) -> common::Finished {
    let path = config.config_path().to_string_lossy().into_owned();
    let mut all = vec!["--config", path.as_str(), "check"];
    all.extend_from_slice(args);
    config
        .run_to_end("check", &all, Duration::from_secs(60))
        .await
}

const AI_KEY: &str = "sk-check-test";

fn ai_config(base_url: &str, pricing: &str) -> Pushprobe {
    Pushprobe::with_config(&format!(
        "[[probe]]\nname = \"relay\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
         api_key_env = \"CHECK_AI_KEY\"\nmodel = \"deepseek-v3.2\"\n\
         checks = [\"models\", \"chat\", \"chat_stream\"]\n{pricing}"
    ))
    .env("CHECK_AI_KEY", AI_KEY)
}

#[tokio::test]
async fn an_ai_failure_names_each_check_once() {
    // A 200 whose body is neither JSON nor a usable stream: every check fails while reading it.
    let api = TargetServer::start_with(Reply {
        body: "data: <html>bad gateway</html>\n\n".into(),
        content_type: "text/event-stream".into(),
        ..Reply::default()
    })
    .await;
    let config = ai_config(api.url("/v1").as_str(), "");
    let run = check(&config, &["--output", "json"]).await;
    run.assert_code(1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let reason = v["probes"][0]["reason"].as_str().unwrap_or_default();
    for check in ["models", "chat", "chat_stream"] {
        assert!(reason.contains(&format!("{check}: ")), "{reason}");
        assert!(!reason.contains(&format!("{check}: {check}:")), "{reason}");
        let detail = v["probes"][0]["details"][check]
            .as_str()
            .unwrap_or_default();
        assert!(!detail.contains(&format!("{check}:")), "{detail}");
    }
}
