//! End to end against a real Prometheus (remote-write receiver): the `pushprobe` binary probes a
//! local HTTP target and what Prometheus stores is checked through its query API.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_delivers_a_successful_probe_with_its_measurement_time() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let url = target.url("/");
    let agent = Pushprobe::with_config(&basic_config(&prom.write_url(), &[("local", &url)], "1s"));

    let run = agent.once().await;
    run.assert_code(0);
    assert!(target.hits() >= 1, "the target was never probed");

    // `once` exits only after delivery, so the data must be there; the poll only covers the
    // receiver making it queryable.
    let success = prom.wait_for_any(r#"probe_success{probe="local"}"#).await;
    let s = only(&success, &[("probe", "local"), ("instance", &url)]);
    assert_eq!(s.value, 1.0);
    assert_eq!(s.labels["cluster"], "edge-1", "external label missing");

    let code = prom
        .wait_for_any(r#"probe_http_status_code{probe="local"}"#)
        .await;
    assert_eq!(only(&code, &[("cluster", "edge-1")]).value, 200.0);

    // The stored timestamp is when the probe started: inside the command's lifetime, and no
    // later than the request reaching the target (a send-time stamp would come after it).
    let raw = prom
        .raw_samples(r#"probe_success{probe="local"}"#, "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(raw[0].samples.len(), 1, "once probes once: {raw:?}");
    let (ts, value) = raw[0].samples[0];
    assert_eq!(value, 1.0);
    assert!(
        ts >= run.started_ms && ts <= run.finished_ms,
        "sample timestamp {ts} outside the run [{}, {}]",
        run.started_ms,
        run.finished_ms
    );
    let first_hit = target.hit_times_ms()[0];
    assert!(
        ts <= first_hit,
        "sample timestamp {ts} is after the request reached the target at {first_hit}"
    );

    for metric in [
        "probe_duration_seconds",
        "probe_http_duration_seconds",
        "pushprobe_probe_latency_seconds_count",
        "pushprobe_probe_requests_total",
    ] {
        let got = prom
            .wait_for_any(&format!(r#"{metric}{{probe="local"}}"#))
            .await;
        assert!(
            got.iter().all(|r| r.labels["cluster"] == "edge-1"),
            "{metric} lacks the external label: {got:?}"
        );
    }
    let phases = prom
        .query(r#"probe_http_duration_seconds{probe="local"}"#)
        .await;
    assert!(
        phases.iter().all(|r| r.labels.contains_key("phase")),
        "phase label missing: {phases:?}"
    );
    let requests = prom
        .query(r#"pushprobe_probe_requests_total{probe="local"}"#)
        .await;
    assert!(
        requests
            .iter()
            .any(|r| r.labels.get("code").map(String::as_str) == Some("200") && r.value >= 1.0),
        "no request counted with code 200: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_reports_a_failing_target_with_exit_1_and_still_delivers() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start_with(Reply {
        status: 500,
        ..Reply::default()
    })
    .await;
    let agent = Pushprobe::with_config(&basic_config(
        &prom.write_url(),
        &[("broken", &target.url("/"))],
        "1s",
    ));

    let run = agent.once().await;
    run.assert_code(1);

    let success = prom.wait_for_any(r#"probe_success{probe="broken"}"#).await;
    assert_eq!(only(&success, &[("cluster", "edge-1")]).value, 0.0);
    let code = prom
        .wait_for_any(r#"probe_http_status_code{probe="broken"}"#)
        .await;
    assert_eq!(code[0].value, 500.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_an_external_label() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let agent = Pushprobe::with_config(&basic_config(
        &prom.write_url(),
        &[("local", &target.url("/"))],
        "1s",
    ))
    .env("PUSHPROBE_AGENT__EXTERNAL_LABELS__CLUSTER", "edge-2");

    agent.once().await.assert_code(0);
    let success = prom.wait_for_any(r#"probe_success{probe="local"}"#).await;
    assert_eq!(success[0].labels["cluster"], "edge-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pushes_continuously_and_drains_on_sigterm() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let url = target.url("/");
    let agent = Pushprobe::with_config(&basic_config(&prom.write_url(), &[("local", &url)], "1s"));
    let mut running = agent.spawn_run(&[]);

    // Wait for behaviour, not for a fixed time: several probe results must have arrived.
    prom.wait_for(
        r#"count_over_time(probe_success{probe="local"}[10m])"#,
        |r| r.len() == 1 && r[0].value >= 4.0,
        DATA_TIMEOUT,
    )
    .await;
    prom.wait_for_any(r#"pushprobe_remote_write_samples_sent_total"#)
        .await;
    running.assert_running();

    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    // Every probe's samples share the probe's start time, and probes run in order.
    let raw = prom
        .raw_samples(r#"probe_success{probe="local"}"#, "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    let stamps: Vec<i64> = raw[0].samples.iter().map(|s| s.0).collect();
    assert!(stamps.len() >= 4, "too few samples: {stamps:?}");
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "timestamps not increasing: {stamps:?}"
    );
    assert!(raw[0].samples.iter().all(|s| s.1 == 1.0));
    assert!(stamps
        .iter()
        .all(|&t| t >= stopped.started_ms && t <= stopped.finished_ms));

    // Counters never go down within one process's life.
    for selector in [
        r#"pushprobe_probe_latency_seconds_count{probe="local"}"#,
        r#"pushprobe_probe_requests_total{probe="local",code="200"}"#,
        r#"pushprobe_remote_write_samples_sent_total"#,
    ] {
        let series = prom.raw_samples(selector, "10m").await;
        assert!(!series.is_empty(), "{selector}: no series");
        for s in &series {
            assert!(
                s.samples.windows(2).all(|w| w[0].1 <= w[1].1),
                "{selector} decreased: {:?}",
                s.samples
            );
        }
    }
    let sent = prom
        .query("max(pushprobe_remote_write_samples_sent_total)")
        .await;
    assert!(sent[0].value > 0.0, "{sent:?}");

    let build = prom.wait_for_any("pushprobe_build_info").await;
    assert!(build[0].labels.contains_key("version"), "{build:?}");

    // One stored probe result per request the target saw at most: nothing is invented, and
    // each result is stamped no later than its request arrived.
    let hits = target.hit_times_ms();
    assert!(stamps.len() <= hits.len(), "{stamps:?} vs hits {hits:?}");
    for (stamp, hit) in stamps.iter().zip(&hits) {
        assert!(stamp <= hit, "sample at {stamp} after its request at {hit}");
    }
}

/// A `tracing` writer into a shared buffer, to read the log lines a test's code emitted.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `samples` to `prom` through a sender of its own, as one request, until delivered or
/// refused; returns the sender's self-metrics.
async fn send_once(
    prom: &Prometheus,
    samples: Vec<pushprobe::series::Sample>,
) -> std::sync::Arc<pushprobe::telemetry::Telemetry> {
    use pushprobe::queue::{memory::MemoryQueue, SharedQueue};
    use tokio_util::sync::CancellationToken;

    let config = format!(
        "[[remote_write]]\nname = \"prom\"\nurl = {}\nmax_samples_per_send = 1000\nmax_shards = 1\n",
        toml_string(&prom.write_url())
    );
    let file: pushprobe::config::ConfigFile = toml::from_str(&config).expect("config parses");
    let settings = file.validate("test").expect("config is valid");
    let rw = settings.remote_write[0].clone();
    let queue = SharedQueue::new(Box::new(MemoryQueue::new(1000)));
    queue.append(&samples).expect("queued");
    let telemetry = std::sync::Arc::new(pushprobe::telemetry::Telemetry::new());
    let labels = pushprobe::series::Labels::default();
    let sender = pushprobe::remote_write::Sender::new(rw, labels, queue, telemetry.clone())
        .expect("sender builds");
    let drain = CancellationToken::new();
    drain.cancel();
    // Awaited here rather than spawned, so its log lines reach this thread's subscriber.
    tokio::time::timeout(DATA_TIMEOUT, sender.run(drain, CancellationToken::new()))
        .await
        .expect("sender drained");
    telemetry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_sample_is_dropped_alone_and_the_rest_of_its_request_is_stored() {
    use pushprobe::series::{Labels, Sample};

    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let logs = LogBuf::default();
    let writer = {
        let logs = logs.clone();
        move || logs.clone()
    };
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let now = now_ms();
    let sample = |name: &str, series: usize, timestamp_ms: i64| Sample {
        labels: Labels::with_name(name, [("series", series.to_string())]).unwrap(),
        value: series as f64,
        timestamp_ms,
    };
    // The receiver holds a newer sample of one series than the next request carries.
    let first = send_once(&prom, vec![sample("split_bad", 0, now)]).await;
    assert_eq!(
        first.value(
            "pushprobe_remote_write_samples_sent_total",
            &[("endpoint", "prom")]
        ),
        Some(1.0)
    );
    let mut batch: Vec<Sample> = (0..30).map(|i| sample("split_good", i, now)).collect();
    batch.insert(17, sample("split_bad", 0, now - 60_000));
    let t = send_once(&prom, batch).await;

    // Prometheus refused the whole request for the one sample; every other one is stored.
    let good = prom
        .wait_for(
            "count(split_good)",
            |r| r.len() == 1 && r[0].value == 30.0,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(good[0].value, 30.0);
    let metric = |name: &str, extra: Option<(&str, &str)>| {
        let mut labels = vec![("endpoint", "prom")];
        labels.extend(extra);
        t.value(name, &labels).unwrap_or(-1.0)
    };
    assert_eq!(
        metric("pushprobe_remote_write_samples_sent_total", None),
        30.0
    );
    assert_eq!(
        metric("pushprobe_remote_write_samples_failed_total", None),
        1.0
    );
    assert_eq!(
        metric(
            "pushprobe_remote_write_samples_dropped_total",
            Some(("reason", "rejected"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            "pushprobe_remote_write_requests_total",
            Some(("outcome", "rejected"))
        ),
        1.0
    );
    let raw = prom.raw_samples("split_bad", "10m").await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(raw[0].samples, [(now, 0.0)]);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let rejected: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("receiver rejected a batch"))
        .collect();
    assert_eq!(rejected.len(), 1, "{logs}");
    assert!(rejected[0].contains("samples=1"), "{logs}");
    assert!(rejected[0].contains("out of order sample"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_the_last_stored_pending_gauge_is_zero() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    // Batches wait for their deadline, which the run does not reach: the samples are still
    // queued at the stop, and only the drain sends them.
    let config = basic_config(&prom.write_url(), &[("local", &target.url("/"))], "1s").replace(
        "batch_send_deadline = \"1s\"",
        "batch_send_deadline = \"10m\"",
    );
    let agent = Pushprobe::with_config(&config);
    let running = agent.spawn_run(&[]);
    let deadline = std::time::Instant::now() + DATA_TIMEOUT;
    while target.hits() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the target was never probed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    let raw = prom
        .raw_samples("pushprobe_remote_write_pending_samples", "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    let samples = &raw[0].samples;
    assert!(samples.len() >= 2, "{samples:?}");
    // Earlier snapshots saw the queue filling up; the last one was taken once it was empty.
    assert!(samples.iter().any(|s| s.1 > 0.0), "{samples:?}");
    assert_eq!(samples.last().unwrap().1, 0.0, "{samples:?}");
}
