//! Scrape and forward: pushprobe scrapes real exporters and local targets and remote-writes
//! the samples; the results are checked against what a real Prometheus stores when it scrapes
//! the same target itself, and against a scripted receiver for the exact bytes (staleness
//! bits, metadata).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::rw_receiver::RwReceiver;
use common::*;
use pushprobe::series::STALE_NAN_BITS;

/// A textfile for node_exporter: a gauge, a counter whose labels clash with the target
/// labels (`job`, `instance` → `exported_*`), and a histogram.
const TEXTFILE: &str = r#"# HELP edge_temperature_celsius Temperature of the edge box.
# TYPE edge_temperature_celsius gauge
edge_temperature_celsius{sensor="cpu"} 51.5
edge_temperature_celsius{sensor="board"} 40
# HELP edge_requests_total Requests served.
# TYPE edge_requests_total counter
edge_requests_total{code="200",instance="pod-7",job="app"} 1027
edge_requests_total{code="500",instance="pod-7",job="app"} 3
# HELP edge_latency_seconds Request latency.
# TYPE edge_latency_seconds histogram
edge_latency_seconds_bucket{le="0.1"} 5
edge_latency_seconds_bucket{le="1"} 9
edge_latency_seconds_bucket{le="+Inf"} 10
edge_latency_seconds_sum 3.5
edge_latency_seconds_count 10
"#;

/// Series whose values legitimately differ between two scrapers.
const UNSTABLE: &[&str] = &[
    "node_scrape_collector_duration_seconds",
    "scrape_duration_seconds",
    "scrape_series_added",
];

type SeriesKey = BTreeMap<String, String>;

/// The job's series as `labels without job → value`.
fn by_labels(results: &[QueryResult]) -> BTreeMap<SeriesKey, f64> {
    results
        .iter()
        .map(|r| {
            let mut l = r.labels.clone();
            l.remove("job");
            (l, r.value)
        })
        .collect()
}

/// Describes how two scrapers' views differ; empty when they agree.
fn differences(
    pushed: &BTreeMap<SeriesKey, f64>,
    scraped: &BTreeMap<SeriesKey, f64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let a: BTreeSet<&SeriesKey> = pushed.keys().collect();
    let b: BTreeSet<&SeriesKey> = scraped.keys().collect();
    for only in a.difference(&b) {
        out.push(format!("only forwarded by pushprobe: {only:?}"));
    }
    for only in b.difference(&a) {
        out.push(format!("only scraped by Prometheus: {only:?}"));
    }
    for (key, v) in pushed {
        let name = key.get("__name__").map(String::as_str).unwrap_or("");
        if UNSTABLE.contains(&name) {
            continue;
        }
        if let Some(w) = scraped.get(key) {
            if v != w && !(v.is_nan() && w.is_nan()) {
                out.push(format!("{key:?}: pushprobe {v}, Prometheus {w}"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_node_exporter_series_match_what_prometheus_scraped() {
    let Some(exporter) = NodeExporter::start(TEXTFILE).await else {
        return;
    };
    let target = exporter.address();
    // One Prometheus scrapes the exporter itself (job node-prom) and receives pushprobe's
    // remote write (job node): two jobs, so the series do not collide. The reference is
    // Prometheus 2, which stores `le` values as exposed: `normalize_le_quantile = false`.
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: node-prom\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let Some(prom) = Prometheus::start_with(&config, &["--web.enable-remote-write-receiver"]).await
    else {
        return;
    };
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"1s\"\n\n\
         [[scrape]]\njob = \"node\"\ntargets = [{}]\ninterval = \"1s\"\n\
         normalize_le_quantile = false\n",
        toml_string(&prom.write_url()),
        toml_string(&target),
    ));
    let mut run = agent.spawn_run(&[]);

    // Poll until both views agree; on the deadline, fail with the differences.
    let deadline = Instant::now() + DATA_TIMEOUT;
    let (pushed, scraped) = loop {
        run.assert_running();
        let pushed = by_labels(&prom.query(r#"{job="node"}"#).await);
        let scraped = by_labels(&prom.query(r#"{job="node-prom"}"#).await);
        let diff = differences(&pushed, &scraped);
        if !pushed.is_empty() && diff.is_empty() {
            break (pushed, scraped);
        }
        if Instant::now() >= deadline {
            panic!(
                "forwarded and scraped series still differ after {DATA_TIMEOUT:?}:\n{}",
                diff.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let key = |pairs: &[(&str, &str)]| -> SeriesKey {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("instance".to_string(), target.clone())])
            .collect()
    };
    // The semantics the comparison rests on, spelled out.
    assert_eq!(pushed.get(&key(&[("__name__", "up")])), Some(&1.0));
    assert_eq!(scraped.get(&key(&[("__name__", "up")])), Some(&1.0));
    assert_eq!(
        pushed.get(&key(&[
            ("__name__", "edge_requests_total"),
            ("code", "200"),
            ("exported_instance", "pod-7"),
            ("exported_job", "app"),
        ])),
        Some(&1027.0),
        "clashing exposed labels become exported_*: {pushed:#?}"
    );
    assert_eq!(
        pushed.get(&key(&[
            ("__name__", "edge_latency_seconds_bucket"),
            ("le", "1")
        ])),
        Some(&9.0),
        "le values as exposed, as Prometheus 2 stores them: {pushed:#?}"
    );
    let samples = pushed
        .get(&key(&[("__name__", "scrape_samples_scraped")]))
        .copied();
    assert!(samples.is_some_and(|n| n >= 10.0), "{samples:?}");
    assert_eq!(
        samples,
        scraped
            .get(&key(&[("__name__", "scrape_samples_scraped")]))
            .copied()
    );

    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_turning_invalid_goes_down_and_its_series_go_stale_in_prometheus() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start_with(Reply {
        body: "# TYPE edge_thing gauge\nedge_thing{a=\"1\"} 1\nedge_other 2\n".into(),
        ..Reply::default()
    })
    .await;
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\nself_metrics_interval = \"1s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"1s\"\n\n\
         [[scrape]]\njob = \"edge\"\ntargets = [{}]\ninterval = \"1s\"\n",
        toml_string(&prom.write_url()),
        toml_string(&target.addr().to_string()),
    ));
    let mut run = agent.spawn_run(&[]);
    prom.wait_for_any(r#"edge_thing{job="edge",a="1"}"#).await;
    prom.wait_for(
        r#"up{job="edge"}"#,
        |r| r.len() == 1 && r[0].value == 1.0,
        DATA_TIMEOUT,
    )
    .await;

    // Invalid text: the scrape fails, `up` drops to 0, and the staleness markers make the
    // series vanish from instant queries at once (without them they would linger 5 minutes).
    target.set_body("edge_thing{a=\"1\" 1\n");
    prom.wait_for(
        r#"up{job="edge"}"#,
        |r| r.len() == 1 && r[0].value == 0.0,
        DATA_TIMEOUT,
    )
    .await;
    prom.wait_for(
        r#"{__name__=~"edge_.*",job="edge"}"#,
        |r| r.is_empty(),
        DATA_TIMEOUT,
    )
    .await;
    prom.wait_for(
        r#"pushprobe_scrape_failures_total{scrape_job="edge",reason="parse"}"#,
        |r| r.len() == 1 && r[0].value >= 1.0,
        DATA_TIMEOUT,
    )
    .await;
    run.assert_running();

    // Valid again: back up; then shutdown ends every series of the target, `up` included.
    target.set_body("edge_thing{a=\"1\"} 3\n");
    prom.wait_for(
        r#"edge_thing{job="edge"}"#,
        |r| r.len() == 1 && r[0].value == 3.0,
        DATA_TIMEOUT,
    )
    .await;
    prom.wait_for(
        r#"up{job="edge"}"#,
        |r| r.len() == 1 && r[0].value == 1.0,
        DATA_TIMEOUT,
    )
    .await;
    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);
    let left = prom.query(r#"{job="edge"}"#).await;
    assert!(
        left.is_empty(),
        "series still live after shutdown: {left:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_sends_prometheus_scrape_headers_samples_and_metadata() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    let target = TargetServer::start_with(Reply {
        body: "# TYPE build_info info\n# HELP build_info Build.\nbuild_info{version=\"1\"} 1\n\
               # TYPE io_bytes counter\n# UNIT io_bytes bytes\n# HELP io_bytes Bytes moved.\n\
               io_bytes_total{dir=\"in\"} 5 1700000000.5\n# EOF\n"
            .into(),
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
        ..Reply::default()
    })
    .await;
    let address = target.addr().to_string();
    let agent = Pushprobe::with_config(&format!(
        "[[remote_write]]\nurl = {}\n\n\
         [[scrape]]\njob = \"om\"\ntargets = [{}]\ntimeout = \"5s\"\nlabels = {{ site = \"edge-1\" }}\n",
        toml_string(&receiver.write_url()),
        toml_string(&address),
    ));
    let done = agent.once().await;
    done.assert_code(0);

    assert_eq!(
        target.last_header("accept").as_deref(),
        Some(pushprobe::scrape::ACCEPT_HEADER)
    );
    assert_eq!(
        target
            .last_header("x-prometheus-scrape-timeout-seconds")
            .as_deref(),
        Some("5")
    );
    assert!(target
        .last_header("user-agent")
        .is_some_and(|ua| ua.starts_with("pushprobe/")));

    let samples = receiver.accepted_samples();
    let find = |name: &str| {
        samples
            .iter()
            .find(|s| s.label("__name__") == Some(name))
            .unwrap_or_else(|| panic!("{name} not received: {samples:#?}"))
    };
    let io = find("io_bytes_total");
    assert_eq!(io.label("job"), Some("om"));
    assert_eq!(io.label("instance"), Some(address.as_str()));
    assert_eq!(io.label("site"), Some("edge-1"));
    assert_eq!(
        io.timestamp_ms, 1_700_000_000_500,
        "exposed timestamp honoured"
    );
    assert_eq!(find("up").value, 1.0);
    assert_eq!(find("scrape_samples_scraped").value, 2.0);
    assert_eq!(find("build_info").label("version"), Some("1"));

    let metadata: Vec<_> = receiver
        .accepted_requests()
        .into_iter()
        .flat_map(|r| r.metadata)
        .collect();
    let io_meta = metadata
        .iter()
        .find(|m| m.metric_family_name == "io_bytes")
        .unwrap_or_else(|| panic!("no metadata for io_bytes: {metadata:#?}"));
    assert_eq!(io_meta.r#type, 1, "counter");
    assert_eq!(
        (io_meta.help.as_str(), io_meta.unit.as_str()),
        ("Bytes moved.", "bytes")
    );
    assert!(metadata
        .iter()
        .any(|m| m.metric_family_name == "build_info" && m.r#type == 6));

    // A failing target: `once` still delivers `up` = 0, and exits 1 like a failed probe.
    target.set_status(503);
    let done = agent.once().await;
    done.assert_code(1);
    let ups: Vec<f64> = receiver
        .accepted_samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("up"))
        .map(|s| s.value)
        .collect();
    assert_eq!(ups, vec![1.0, 0.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_queues_exact_staleness_markers_before_the_drain() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    let target = TargetServer::start_with(Reply {
        body: "a 1\nb{x=\"y\"} 2\n".into(),
        ..Reply::default()
    })
    .await;
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"200ms\"\n\n\
         [[scrape]]\njob = \"j\"\ntargets = [{}]\ninterval = \"1s\"\n",
        toml_string(&receiver.write_url()),
        toml_string(&target.addr().to_string()),
    ));
    let run = agent.spawn_run(&[]);
    let deadline = Instant::now() + DATA_TIMEOUT;
    while !receiver
        .accepted_samples()
        .iter()
        .any(|s| s.label("__name__") == Some("b"))
    {
        assert!(Instant::now() < deadline, "no scrape arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);

    let samples = receiver.accepted_samples();
    for name in [
        "a",
        "b",
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
    ] {
        let last = samples
            .iter()
            .filter(|s| s.label("__name__") == Some(name) && s.label("job") == Some("j"))
            .max_by_key(|s| s.timestamp_ms)
            .unwrap_or_else(|| panic!("{name} never received"));
        assert_eq!(
            last.value.to_bits(),
            STALE_NAN_BITS,
            "{name}'s last sample is not the staleness marker: {last:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_keep_their_connection_unless_the_target_closes_it() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    // A body several times the kept connection's read buffer, as a node exporter's is.
    let mut big_body = String::new();
    for i in 0..4000 {
        big_body.push_str(&format!(
            "big_series{{i=\"{i:05}\",pad=\"xxxxxxxx\"}} {i}\n"
        ));
    }
    assert!(big_body.len() > 4 * pushprobe::http_client::KEPT_READ_BUFFER);
    let big = TargetServer::start_with(Reply {
        body: big_body,
        ..Reply::default()
    })
    .await;
    let closing = TargetServer::start_with(Reply {
        body: "a 1\n".into(),
        ..Reply::default()
    })
    .await;
    closing.set_keep_alive(false);
    let agent = Pushprobe::with_config(&format!(
        "[[remote_write]]\nurl = {}\nbatch_send_deadline = \"200ms\"\n\n\
         [[scrape]]\njob = \"j\"\ntargets = [{}, {}]\ninterval = \"1s\"\n",
        toml_string(&receiver.write_url()),
        toml_string(&big.addr().to_string()),
        toml_string(&closing.addr().to_string()),
    ));
    let run = agent.spawn_run(&[]);
    let deadline = Instant::now() + DATA_TIMEOUT;
    while big.hits() < 3 || closing.hits() < 3 {
        assert!(
            Instant::now() < deadline,
            "targets were not scraped three times"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.terminate(Duration::from_secs(30)).await.assert_code(0);
    // Every scrape of the big target went over its first connection, and none asked for it
    // to be closed; a target that closes after each answer is reconnected to each time.
    assert_eq!(big.connections(), 1, "{} scrapes", big.hits());
    assert_eq!(big.last_header("connection"), None);
    // (One more connection than requests if the shutdown cut a scrape between the two.)
    let (conns, hits) = (closing.connections(), closing.hits());
    assert!(
        hits <= conns && conns <= hits + 1,
        "{conns} connections, {hits} scrapes"
    );
    let samples = receiver.accepted_samples();
    let ups = |addr: String| {
        samples
            .iter()
            .filter(|s| s.label("__name__") == Some("up") && s.label("instance") == Some(&addr))
            // Leaves out the staleness marker the shutdown writes.
            .filter(|s| s.value.to_bits() != STALE_NAN_BITS)
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    for target in [&big, &closing] {
        let ups = ups(target.addr().to_string());
        assert!(ups.len() >= 3, "{ups:?}");
        assert!(ups.iter().all(|v| *v == 1.0), "{ups:?}");
    }
    assert!(samples
        .iter()
        .any(|s| s.label("__name__") == Some("big_series") && s.label("i") == Some("03999")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_target_is_asked_for_gzip_and_its_series_are_forwarded() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    let target = TargetServer::start_with(Reply::gzip(
        "# TYPE edge_temp gauge\nedge_temp{sensor=\"cpu\"} 51.5\nedge_temp{sensor=\"board\"} 40\n",
    ))
    .await;
    let address = target.addr().to_string();
    let config = |extra: &str| {
        format!(
            "[[remote_write]]\nurl = {}\n\n[[scrape]]\njob = \"gz\"\ntargets = [{}]\n{extra}",
            toml_string(&receiver.write_url()),
            toml_string(&address),
        )
    };
    let agent = Pushprobe::with_config(&config(""));
    agent.once().await.assert_code(0);
    assert_eq!(
        target.last_header("accept-encoding").as_deref(),
        Some("gzip")
    );
    let samples = receiver.accepted_samples();
    let value = |name: &str, sensor: Option<&str>| {
        samples
            .iter()
            .find(|s| s.label("__name__") == Some(name) && s.label("sensor") == sensor)
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("{name} {sensor:?} not received: {samples:#?}"))
    };
    assert_eq!(value("edge_temp", Some("cpu")), 51.5);
    assert_eq!(value("edge_temp", Some("board")), 40.0);
    assert_eq!(value("up", None), 1.0);
    assert_eq!(value("scrape_samples_scraped", None), 2.0);

    // Compression off: nothing asked for, but a target that gzips anyway is still decoded,
    // as Prometheus decodes it.
    agent.rewrite_config(&config("enable_compression = false\n"));
    agent.once().await.assert_code(0);
    assert_eq!(target.last_header("accept-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_or_a_broken_body_fails_its_own_scrape_and_the_others_go_on() {
    use std::io::Write as _;
    let receiver = RwReceiver::start(|_, _| 204).await;
    let healthy = TargetServer::start_with(Reply::gzip("edge_ok 1\n")).await;
    // 10 MB of zeros, about 10 KB of gzip, against a 1 MiB limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 10 << 20]).expect("gzip");
    let bomb_body = encoder.finish().expect("gzip");
    assert!(bomb_body.len() < 20 << 10, "{} bytes", bomb_body.len());
    let bomb = TargetServer::start_with(Reply {
        content_encoding: Some("gzip".into()),
        raw_body: Some(bomb_body),
        ..Reply::default()
    })
    .await;
    let mut truncated = Reply::gzip("edge_cut 1\nedge_cut_more 2\n");
    if let Some(raw) = truncated.raw_body.as_mut() {
        raw.truncate(raw.len() - 6);
    }
    let corrupt = TargetServer::start_with(truncated).await;
    let brotli = TargetServer::start_with(Reply {
        content_encoding: Some("br".into()),
        raw_body: Some(vec![0x1b, 0x03, 0x00, 0xf8]),
        ..Reply::default()
    })
    .await;
    let targets = [&healthy, &bomb, &corrupt, &brotli];
    let list: Vec<String> = targets
        .iter()
        .map(|t| toml_string(&t.addr().to_string()))
        .collect();
    let agent = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"10s\"\nself_metrics_interval = \"1s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"200ms\"\n\n\
         [[scrape]]\njob = \"gz\"\ntargets = [{}]\ninterval = \"1s\"\nbody_size_limit = \"1MiB\"\n",
        toml_string(&receiver.write_url()),
        list.join(", "),
    ));
    let mut run = agent.spawn_run(&[]);
    let failures = |reason: &str| {
        receiver
            .accepted_samples()
            .iter()
            .filter(|s| {
                s.label("__name__") == Some("pushprobe_scrape_failures_total")
                    && s.label("reason") == Some(reason)
            })
            .map(|s| s.value)
            .fold(0.0, f64::max)
    };
    let deadline = Instant::now() + DATA_TIMEOUT;
    while targets.iter().any(|t| t.hits() < 3)
        || failures("body_size_limit") < 2.0
        || failures("http") < 4.0
    {
        run.assert_running();
        assert!(
            Instant::now() < deadline,
            "hits {:?}, failures body_size_limit {} http {}",
            targets.iter().map(|t| t.hits()).collect::<Vec<_>>(),
            failures("body_size_limit"),
            failures("http")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);

    let samples = receiver.accepted_samples();
    let ups = |t: &TargetServer| {
        let addr = t.addr().to_string();
        samples
            .iter()
            .filter(|s| s.label("__name__") == Some("up") && s.label("instance") == Some(&addr))
            .filter(|s| s.value.to_bits() != STALE_NAN_BITS)
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    let ok = ups(&healthy);
    assert!(ok.len() >= 3 && ok.iter().all(|v| *v == 1.0), "{ok:?}");
    assert!(samples
        .iter()
        .any(|s| s.label("__name__") == Some("edge_ok")));
    for t in [&bomb, &corrupt, &brotli] {
        let down = ups(t);
        assert!(
            !down.is_empty() && down.iter().all(|v| *v == 0.0),
            "{down:?}"
        );
    }
    assert!(!samples
        .iter()
        .any(|s| s.label("__name__") == Some("edge_cut")));
    for message in [
        "gzip body decoded past body_size_limit of 1048576 bytes",
        "corrupt gzip body",
        "unsupported Content-Encoding",
    ] {
        assert!(
            done.stderr.contains(message),
            "{message:?} not logged:\n{}",
            done.stderr
        );
    }
}
