//! Native histograms end to end: the agent's own histograms sent as native ones arrive in real
//! Prometheus receivers (stable's 2.42 and the current 3.5) as native histograms, over remote
//! write 1.0 and, to a Prometheus 3.5 that accepts only 2.0, over 2.0; and so do native
//! histograms scraped from Prometheus 3.5's own `/metrics`.

mod common;

use common::*;

/// `protobuf_message` of remote write 2.0.
const V2: &str = "io.prometheus.write.v2.Request";

/// What the agent logs when a 2.0 receiver's `-Written` counts disagree with what was sent:
/// fewer written (a partial write), or more than sent (an untrusted count).
const COUNT_MISMATCH_LOGS: [&str; 2] = [
    "wrote only part of a request",
    "written count is not a number or exceeds what was sent",
];

/// Checks that every `-Written` count matched what was sent: histograms are counted apart
/// from float samples, as receivers count them.
fn counts_matched(stderr: &str) {
    for log in COUNT_MISMATCH_LOGS {
        assert!(!stderr.contains(log), "written counts disagree: {stderr}");
    }
}

/// Prometheus 3.5.3 as a receiver of 2.0 only, native histograms on.
async fn prometheus_3_5_v2_only() -> Option<Prometheus> {
    let bin = require_tool("prometheus-3.5.3")?;
    Prometheus::start_bin_with(
        bin,
        PROMETHEUS_MINIMAL_CONFIG,
        &[
            "--web.enable-remote-write-receiver",
            &format!("--web.remote-write-receiver.accepted-protobuf-messages={V2}"),
            "--enable-feature=native-histograms",
        ],
    )
    .await
}

/// Starts the agent once with native histograms on against `prom` (with `protobuf_message`
/// when given) and checks that the probe latency histogram is stored as a native histogram,
/// not as classic series.
async fn agent_histograms_arrive_native(prom: Prometheus, protobuf_message: Option<&str>) {
    let target = TargetServer::start().await;
    let url = target.url("/");
    let mut config = basic_config(&prom.write_url(), &[("local", &url)], "1s").replace(
        "[agent]\n",
        "[agent]\nnative_histograms = true\nnative_histogram_bucket_factor = 1.1\n",
    );
    if let Some(message) = protobuf_message {
        config = config.replace(
            "batch_send_deadline = \"1s\"\n",
            &format!("batch_send_deadline = \"1s\"\nprotobuf_message = {message:?}\n"),
        );
    }
    let agent = Pushprobe::with_config(&config);
    let finished = agent.once().await;
    finished.assert_code(0);
    counts_matched(&finished.stderr);

    let count = prom
        .wait_for_any(r#"histogram_count(pushprobe_probe_latency_seconds{probe="local"})"#)
        .await;
    let got = only(&count, &[("probe", "local"), ("cluster", "edge-1")]);
    assert_eq!(got.value, 1.0, "one probe run observed: {count:?}");
    let sum = prom
        .query(r#"histogram_sum(pushprobe_probe_latency_seconds{probe="local"})"#)
        .await;
    assert!(
        sum.len() == 1 && sum[0].value > 0.0 && sum[0].value < 60.0,
        "latency sum: {sum:?}"
    );
    // One observation lands in one bucket whose bounds hold the measured latency.
    let fraction = prom
        .query(&format!(
            r#"histogram_fraction(0, {}, pushprobe_probe_latency_seconds{{probe="local"}})"#,
            sum[0].value * 1.1
        ))
        .await;
    assert_eq!(fraction.len(), 1, "{fraction:?}");
    assert!(fraction[0].value > 0.99, "{fraction:?}");
    // The classic series are not sent beside the native one.
    let classic = prom
        .query(r#"{__name__=~"pushprobe_probe_latency_seconds_(bucket|count|sum)"}"#)
        .await;
    assert!(classic.is_empty(), "classic series sent too: {classic:?}");
    // Float series of the same run are still plain samples.
    let success = prom.wait_for_any(r#"probe_success{probe="local"}"#).await;
    assert_eq!(only(&success, &[("probe", "local")]).value, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_native_histograms_arrive_in_prometheus_3_5() {
    let Some(bin) = require_tool("prometheus-3.5.3") else {
        return;
    };
    let Some(prom) = Prometheus::start_bin_with(
        bin,
        PROMETHEUS_MINIMAL_CONFIG,
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    )
    .await
    else {
        return;
    };
    agent_histograms_arrive_native(prom, None).await;
}

/// Over 2.0 a histogram sample goes in the series' `histograms`, never as its marker NaN: a
/// Prometheus that takes only 2.0 stores a native histogram, and its `-Histograms-Written`
/// count matches what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_native_histograms_arrive_over_2_0_in_prometheus_3_5() {
    let Some(prom) = prometheus_3_5_v2_only().await else {
        return;
    };
    agent_histograms_arrive_native(prom, Some(V2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_native_histograms_arrive_in_prometheus_2_42() {
    let Some(prom) = Prometheus::start_with(
        PROMETHEUS_MINIMAL_CONFIG,
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    )
    .await
    else {
        return;
    };
    agent_histograms_arrive_native(prom, None).await;
}

/// Prometheus 3.5 exposes `prometheus_http_request_duration_seconds` as a native histogram on
/// its own `/metrics` when asked for protobuf: pushprobe scrapes it so and writes it back into
/// the same server, once as native only and once with the classic buckets kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_native_histograms_are_forwarded_intact() {
    let Some(bin) = require_tool("prometheus-3.5.3") else {
        return;
    };
    let Some(prom) = Prometheus::start_bin_with(
        bin,
        PROMETHEUS_MINIMAL_CONFIG,
        &[
            "--web.enable-remote-write-receiver",
            "--enable-feature=native-histograms",
        ],
    )
    .await
    else {
        return;
    };
    let target = format!("127.0.0.1:{}", prom.port());
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\n\n\
         [[remote_write]]\nurl = {url}\nbatch_send_deadline = \"1s\"\n\n\
         [[scrape]]\njob = \"native\"\ntargets = [{t}]\ninterval = \"1s\"\n\
         scrape_protocols = [\"PrometheusProto\", \"PrometheusText0.0.4\"]\n\n\
         [[scrape]]\njob = \"both\"\ntargets = [{t}]\ninterval = \"1s\"\n\
         scrape_protocols = [\"PrometheusProto\"]\n\
         always_scrape_classic_histograms = true\n\n\
         [[scrape]]\njob = \"text\"\ntargets = [{t}]\ninterval = \"1s\"\n",
        url = toml_string(&prom.write_url()),
        t = toml_string(&target),
    ));
    let mut run = agent.spawn_run(&[]);

    let count = prom
        .wait_for(
            r#"histogram_count(prometheus_http_request_duration_seconds{job="native",handler="/api/v1/write"})"#,
            |r| r.iter().any(|s| s.value >= 1.0),
            DATA_TIMEOUT,
        )
        .await;
    run.assert_running();
    assert_eq!(count.len(), 1, "{count:?}");
    assert_eq!(count[0].labels["instance"], target);
    let up = prom.wait_for_any(r#"up{job="native"}"#).await;
    assert_eq!(up[0].value, 1.0);
    // Native only: the classic series are not forwarded.
    let classic = prom
        .query(r#"prometheus_http_request_duration_seconds_bucket{job="native"}"#)
        .await;
    assert!(classic.is_empty(), "{classic:?}");
    // Float series of the same body arrive as they do from text.
    let goroutines = prom.wait_for_any(r#"go_goroutines{job="native"}"#).await;
    assert!(goroutines[0].value > 0.0);

    // Kept beside the native histogram when asked.
    prom.wait_for(
        r#"histogram_count(prometheus_http_request_duration_seconds{job="both",handler="/api/v1/write"})"#,
        |r| r.iter().any(|s| s.value >= 1.0),
        DATA_TIMEOUT,
    )
    .await;
    prom.wait_for_any(
        r#"prometheus_http_request_duration_seconds_bucket{job="both",handler="/api/v1/write",le="+Inf"}"#,
    )
    .await;
    // Without scrape_protocols the text formats are asked for: classic buckets only.
    prom.wait_for_any(r#"prometheus_http_request_duration_seconds_bucket{job="text"}"#)
        .await;
    let native_from_text = prom
        .query(r#"histogram_count(prometheus_http_request_duration_seconds{job="text"})"#)
        .await;
    assert!(native_from_text.is_empty(), "{native_from_text:?}");

    let finished = run.terminate(std::time::Duration::from_secs(30)).await;
    finished.assert_code(0);
    assert!(
        !finished.stderr.contains("protobuf exposition"),
        "parse errors: {}",
        finished.stderr
    );
}

/// Prometheus 3.5's own native histograms, scraped with protobuf negotiated, forwarded over
/// 2.0 into a Prometheus 3.5 that takes only 2.0: stored as native histograms, every
/// histogram written as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_native_histograms_are_forwarded_over_2_0() {
    let Some(prom) = prometheus_3_5_v2_only().await else {
        return;
    };
    let target = format!("127.0.0.1:{}", prom.port());
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\n\n\
         [[remote_write]]\nurl = {url}\nbatch_send_deadline = \"1s\"\n\
         protobuf_message = {V2:?}\n\n\
         [[scrape]]\njob = \"native\"\ntargets = [{t}]\ninterval = \"1s\"\n\
         scrape_protocols = [\"PrometheusProto\", \"PrometheusText0.0.4\"]\n",
        url = toml_string(&prom.write_url()),
        t = toml_string(&target),
    ));
    let mut run = agent.spawn_run(&[]);

    let count = prom
        .wait_for(
            r#"histogram_count(prometheus_http_request_duration_seconds{job="native",handler="/api/v1/write"})"#,
            |r| r.iter().any(|s| s.value >= 1.0),
            DATA_TIMEOUT,
        )
        .await;
    run.assert_running();
    assert_eq!(count.len(), 1, "{count:?}");
    assert_eq!(count[0].labels["instance"], target);
    // Float series of the same scrape arrive beside them, as floats.
    let goroutines = prom.wait_for_any(r#"go_goroutines{job="native"}"#).await;
    assert!(goroutines[0].value > 0.0);
    let classic = prom
        .query(r#"prometheus_http_request_duration_seconds_bucket{job="native"}"#)
        .await;
    assert!(classic.is_empty(), "{classic:?}");

    let finished = run.terminate(std::time::Duration::from_secs(30)).await;
    finished.assert_code(0);
    counts_matched(&finished.stderr);
    assert!(
        !finished.stderr.contains("does not take remote write 2.0"),
        "fell back against a 2.0 receiver: {}",
        finished.stderr
    );
}
