//! End to end against a real VictoriaMetrics, plus the CLI's failure paths: undeliverable data,
//! bad configuration and secret redaction.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_to_victoriametrics() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let url = target.url("/health");
    let agent = Pushprobe::with_config(&basic_config(&vm.write_url(), &[("local", &url)], "1s"));

    let run = agent.once().await;
    run.assert_code(0);

    let success = vm.wait_for_any(r#"probe_success{probe="local"}"#).await;
    let s = only(&success, &[("instance", &url), ("cluster", "edge-1")]);
    assert_eq!(s.value, 1.0);
    let code = vm
        .wait_for_any(r#"probe_http_status_code{probe="local"}"#)
        .await;
    assert_eq!(code[0].value, 200.0);

    // The export API returns stored samples with their own timestamps.
    let exported = vm.export(r#"probe_success{probe="local"}"#).await;
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0].samples.len(), 1, "{exported:?}");
    let (ts, value) = exported[0].samples[0];
    assert_eq!(value, 1.0);
    assert!(
        ts >= run.started_ms && ts <= target.hit_times_ms()[0],
        "timestamp {ts} not the probe's start (run began {}, request arrived {:?})",
        run.started_ms,
        target.hit_times_ms()
    );

    let histogram = vm
        .wait_for_any(r#"pushprobe_probe_latency_seconds_bucket{probe="local"}"#)
        .await;
    assert!(
        histogram
            .iter()
            .any(|r| r.labels.get("le").map(String::as_str) == Some("+Inf") && r.value == 1.0),
        "no +Inf bucket counting the one probe: {histogram:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pushes_continuously_to_victoriametrics() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let agent = Pushprobe::with_config(&basic_config(
        &vm.write_url(),
        &[("local", &target.url("/"))],
        "1s",
    ));
    let mut running = agent.spawn_run(&["--log-format", "json"]);

    vm.wait_for(
        r#"count_over_time(probe_success{probe="local"}[10m])"#,
        |r| r.len() == 1 && r[0].value >= 3.0,
        DATA_TIMEOUT,
    )
    .await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    // With --log-format json every log line on stderr is a JSON object.
    for line in stopped.stderr.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }

    let exported = vm.export(r#"probe_success{probe="local"}"#).await;
    let stamps: Vec<i64> = exported[0].samples.iter().map(|s| s.0).collect();
    assert!(stamps.len() >= 3, "{stamps:?}");
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    vm.wait_for_any("pushprobe_remote_write_samples_sent_total")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_3_when_the_receiver_is_unreachable() {
    let target = TargetServer::start().await;
    // A port that was free a moment ago: nothing listens there, so every send is refused.
    let dead = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let config = basic_config(&dead, &[("local", &target.url("/"))], "1s")
        .replace("drain_timeout = \"15s\"", "drain_timeout = \"2s\"");
    let agent = Pushprobe::with_config(&config);

    let run = agent.once().await;
    run.assert_code(3);
    assert!(target.hits() >= 1, "the probe should still have run");
}

/// Runs `once` and `config check` on `config`, expecting exit 78 with `key` named on stderr.
async fn assert_rejected(config: &str, key: &str) {
    let agent = Pushprobe::with_config(config);
    for run in [agent.once().await, agent.config_check().await] {
        run.assert_code(78);
        assert!(
            run.stderr.contains(key),
            "stderr does not name {key}:\n{}",
            run.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_78_naming_the_key() {
    let target = TargetServer::start().await;
    let good = basic_config(
        "http://127.0.0.1:9/api/v1/write",
        &[("local", &target.url("/"))],
        "1s",
    );

    // A value that parses but is out of range.
    assert_rejected(
        &good.replace("interval = \"1s\"", "interval = \"0s\""),
        "probe[0].interval",
    )
    .await;
    // A value that does not parse, outside the probe list.
    assert_rejected(
        &good.replace("drain_timeout = \"15s\"", "drain_timeout = \"soon\""),
        "drain_timeout",
    )
    .await;
    // An unknown key.
    assert_rejected(
        &good.replace("[agent]\n", "[agent]\ndrain_timeout_typo = \"1s\"\n"),
        "drain_timeout_typo",
    )
    .await;
    assert_eq!(target.hits(), 0, "nothing may be probed with a bad config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_probe_field_is_named() {
    let config = basic_config(
        "http://127.0.0.1:9/api/v1/write",
        &[("local", "http://127.0.0.1:9/")],
        "not-a-duration",
    );
    assert_rejected(&config, "interval").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_error_exits_2() {
    let agent = Pushprobe::with_config("");
    let run = agent
        .run_to_end("usage", &["no-such-command"], Duration::from_secs(60))
        .await;
    run.assert_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_redacts_the_bearer_token() {
    let config = r#"
[agent]
external_labels = { cluster = "edge-1" }

[[remote_write]]
url = "http://127.0.0.1:9/api/v1/write"
bearer_token = "s3cr3t"

[[probe]]
name = "local"
kind = "http"
url = "http://127.0.0.1:9/"
interval = "1s"
timeout = "1s"
"#;
    let agent = Pushprobe::with_config(config);
    let run = agent.config_check().await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("edge-1"),
        "effective config not printed:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("bearer_token"), "{}", run.stdout);
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !text.contains("s3cr3t"),
            "secret leaked on {stream}:\n{text}"
        );
    }
}
