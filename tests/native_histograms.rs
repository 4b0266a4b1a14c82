//! Native histograms end to end: the agent's own histograms sent as native ones arrive in real
//! Prometheus receivers (stable's 2.42 and the current 3.5) as native histograms.

mod common;

use common::*;

/// Starts the agent once with native histograms on against `prom` and checks that the probe
/// latency histogram is stored as a native histogram, not as classic series.
async fn agent_histograms_arrive_native(prom: Prometheus) {
    let target = TargetServer::start().await;
    let url = target.url("/");
    let config = basic_config(&prom.write_url(), &[("local", &url)], "1s").replace(
        "[agent]\n",
        "[agent]\nnative_histograms = true\nnative_histogram_bucket_factor = 1.1\n",
    );
    let agent = Pushprobe::with_config(&config);
    agent.once().await.assert_code(0);

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
    agent_histograms_arrive_native(prom).await;
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
    agent_histograms_arrive_native(prom).await;
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
