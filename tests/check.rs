//! `pushprobe check` as a process: table and JSON output, `--verbose`, `--push` and the exit
//! code. The first probes target a closed local port, so they fail whatever the HTTP probe's
//! implementation; the others run against local doubles (an HTTP target, the OpenAI-compatible
//! API of `tests/common`) and the real Pushgateway.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{Pushgateway, Pushprobe, Reply, TargetServer};

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

fn columns(line: &str) -> usize {
    line.chars().count()
}

#[tokio::test]
async fn lines_fit_100_columns_and_details_wait_for_verbose() {
    let target = TargetServer::start().await;
    let name = "an-http-probe-whose-name-goes-on-and-on-well-past-any-sensible-column-width";
    let config = Pushprobe::with_config(&format!(
        "[[probe]]\nname = \"{name}\"\nkind = \"http\"\nurl = \"{}\"\n\
         valid_status_codes = [418]\n",
        target.url("/")
    ));
    let plain = check(&config, &[]).await;
    plain.assert_code(1);
    for line in plain.stdout.lines() {
        assert!(columns(line) <= 100, "{} columns: {line}", columns(line));
    }
    let first = plain.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("✗ an-http-probe-whose-name-goes…  200"),
        "{first}"
    );
    assert!(
        first.contains("status 200 not in valid_status_codes"),
        "{first}"
    );
    assert!(
        !plain.stdout.contains("time_to_first_byte"),
        "{}",
        plain.stdout
    );

    let verbose = check(&config, &["--verbose"]).await;
    verbose.assert_code(1);
    for line in verbose.stdout.lines() {
        assert!(columns(line) <= 100, "{} columns: {line}", columns(line));
    }
    for detail in ["address", "time_to_first_byte", "processing"] {
        assert!(
            verbose.stdout.contains(&format!("\n    {detail} ")),
            "{detail}: {}",
            verbose.stdout
        );
    }
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
async fn the_table_rounds_the_cost_and_the_json_keeps_it_exact() {
    use common::openai::{CHAT_CACHED_TOKENS, CHAT_COMPLETION_TOKENS, CHAT_PROMPT_TOKENS};
    let api = common::openai::serve(AI_KEY).await;
    // Prices whose products carry binary noise (0.27 has no exact f64).
    let config = ai_config(
        &format!("http://{api}/v1"),
        "[pricing.\"deepseek-v3.2\"]\ninput_per_mtok = 0.27\noutput_per_mtok = 1.1\n",
    );
    let price = pushprobe::pricing::Price {
        input_per_mtok: 0.27,
        output_per_mtok: 1.1,
        cached_input_per_mtok: None,
        cache_write_per_mtok: None,
        cache_read_per_mtok: None,
    };
    let usage = pushprobe::pricing::Usage {
        prompt_tokens: CHAT_PROMPT_TOKENS,
        completion_tokens: CHAT_COMPLETION_TOKENS,
        cached_tokens: CHAT_CACHED_TOKENS,
        cache_write_tokens: 0,
    };
    let exact = pushprobe::pricing::cost(&usage, &price);

    let json = check(&config, &["--output", "json"]).await;
    json.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let details = &v["probes"][0]["details"];
    assert_eq!(
        details["chat.cost_dollars"].as_f64(),
        Some(exact),
        "{details}"
    );
    assert_eq!(details["chat.input_tokens"], CHAT_PROMPT_TOKENS);
    assert_eq!(details["chat.output_tokens"], CHAT_COMPLETION_TOKENS);
    assert!(
        details["chat_stream.time_to_first_token_seconds"].is_number(),
        "{details}"
    );

    let table = check(&config, &["--verbose"]).await;
    table.assert_code(0);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("    chat.cost "))
        .unwrap_or_else(|| panic!("no cost line: {}", table.stdout));
    let rounded = line.rsplit(' ').next().unwrap_or_default();
    // Two significant digits below a cent.
    let digits = rounded.trim_start_matches("$0.").trim_start_matches('0');
    assert_eq!(digits.len(), 2, "{line}");
    let value: f64 = rounded.trim_start_matches('$').parse().unwrap();
    assert!((value - exact).abs() / exact < 0.05, "{line} for {exact}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_prints_each_sink_delivered() {
    let Some(gateway) = Pushgateway::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let config = Pushprobe::with_config(&format!(
        "[[pushgateway]]\nname = \"gw\"\nurl = \"{}\"\njob = \"check\"\n\
         [[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"{}\"\n",
        gateway.base_url(),
        target.url("/")
    ));
    let run = check(&config, &["--push"]).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .ends_with("1 of 1 probes succeeded\n✓ pushgateway gw  delivered\n"),
        "{}",
        run.stdout
    );
    assert!(!gateway.metric("probe_success").await.is_empty());

    let json = check(&config, &["--push", "--output", "json"]).await;
    json.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["delivered"], true);
    assert_eq!(v["sinks"][0]["kind"], "pushgateway");
    assert_eq!(v["sinks"][0]["name"], "gw");
    assert_eq!(v["sinks"][0]["delivered"], true);
}

#[tokio::test]
async fn push_to_an_unreachable_receiver_says_why_and_exits_3() {
    let target = TargetServer::start().await;
    let port = common::free_port();
    let config = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"2s\"\n\
         [[remote_write]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}/api/v1/write\"\n\
         [[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"{}\"\n",
        target.url("/")
    ));
    let run = check(&config, &["--push"]).await;
    run.assert_code(3);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("✗ remote_write down  "))
        .unwrap_or_else(|| panic!("no delivery line: {}", run.stdout));
    assert!(line.contains(" samples not delivered: "), "{line}");
    assert!(line.contains(": unreachable ("), "{line}");
    assert!(columns(line) <= 100, "{line}");
}
