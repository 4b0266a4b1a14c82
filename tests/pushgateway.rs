//! The Pushgateway sink against the real Pushgateway binary: text-format escaping, PUT vs
//! POST, grouping keys with `/`, and `delete_on_exit` through `pushprobe exec`.
//!
//! The gateway comes from the shared harness (`tests/common`): without the binary the tests
//! are skipped locally but fail when `CI` is set, so CI cannot pass by not testing.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::{Pushgateway, Pushprobe};
use pushprobe::config::{PushMethod, PushgatewaySettings, TlsConfig};
use pushprobe::pushgateway::{Feed, PushgatewaySink};
use pushprobe::series::{Labels, MetricType, Registry};
use pushprobe::telemetry::Telemetry;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The gateway's groups, from `/api/v1/metrics`.
async fn groups(gw: &Pushgateway) -> Vec<Value> {
    gw.metrics_json()
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The group whose labels are exactly `labels`.
async fn group(gw: &Pushgateway, labels: &[(&str, &str)]) -> Option<Value> {
    groups(gw).await.into_iter().find(|g| {
        let l = g["labels"].as_object().unwrap();
        l.len() == labels.len() && labels.iter().all(|(k, v)| l.get(*k) == Some(&(*v).into()))
    })
}

fn settings(
    url: &str,
    job: &str,
    grouping: &[(&str, &str)],
    method: PushMethod,
) -> PushgatewaySettings {
    PushgatewaySettings {
        name: "test-gw".into(),
        url: url.parse().unwrap(),
        job: job.into(),
        grouping: grouping
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        method,
        delete_on_exit: false,
        auth: None,
        tls: TlsConfig::default(),
        timeout: Duration::from_secs(10),
        min_backoff: Duration::from_millis(30),
        max_backoff: Duration::from_secs(1),
    }
}

/// Pushes `registry` once through a sink (as `once` does) and returns whether it arrived.
async fn push_once(settings: PushgatewaySettings, external: &Labels, registry: &Registry) -> bool {
    let feed = Feed::new();
    feed.set("test", registry);
    let sink =
        PushgatewaySink::new(settings, external, feed.clone(), Arc::new(Telemetry::new())).unwrap();
    let status = sink.status();
    let drain = CancellationToken::new();
    drain.cancel();
    sink.run(drain, CancellationToken::new()).await;
    status.delivered(&feed)
}

#[tokio::test(flavor = "current_thread")]
async fn escaping_survives_the_real_pushgateway() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let tricky = "say \"hi\" \\ back\nslash ünïcødé ✓";
    let mut r = Registry::new();
    r.describe("pp_tricky", MetricType::Gauge, "Help with \\ and\nnewline.");
    r.gauge_set("pp_tricky", &[("v", tricky), ("job", "inner")], 1.5)
        .unwrap();
    r.describe("pp_lat_seconds", MetricType::Histogram, "Latency.");
    let bounds: Arc<[f64]> = Arc::from(vec![0.1, 1.0]);
    for v in [0.05, 0.5, 5.0] {
        r.histogram_observe("pp_lat_seconds", &[("probe", "p")], &bounds, v)
            .unwrap();
    }
    let external = Labels::from_pairs([("cluster", "edge-1")]).unwrap();
    let ok = push_once(
        settings(
            &gw.base_url(),
            "escape",
            &[("instance", "host-1")],
            PushMethod::Put,
        ),
        &external,
        &r,
    )
    .await;
    assert!(ok, "push was not accepted");

    let g = group(&gw, &[("job", "escape"), ("instance", "host-1")])
        .await
        .expect("group exists");
    let fam = &g["pp_tricky"];
    assert_eq!(fam["help"], "Help with \\ and\nnewline.");
    assert_eq!(fam["type"], "GAUGE");
    let m = &fam["metrics"][0];
    assert_eq!(m["value"], "1.5");
    assert_eq!(m["labels"]["v"], tricky);
    assert_eq!(m["labels"]["cluster"], "edge-1");
    // The body's own `job` label was left out; the path's wins.
    assert_eq!(m["labels"]["job"], "escape");
    assert_eq!(m["labels"]["instance"], "host-1");

    let h = &g["pp_lat_seconds"];
    assert_eq!(h["type"], "HISTOGRAM");
    let hm = &h["metrics"][0];
    assert_eq!(hm["count"], "3");
    assert_eq!(hm["sum"], "5.55");
    assert_eq!(hm["buckets"]["0.1"], "1");
    assert_eq!(hm["buckets"]["1"], "2");
}

#[tokio::test(flavor = "current_thread")]
async fn put_replaces_the_group_and_post_merges() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let none = Labels::default();
    let mut both = Registry::new();
    both.gauge_set("pp_a", &[], 1.0).unwrap();
    both.gauge_set("pp_b", &[], 2.0).unwrap();
    let mut only_a = Registry::new();
    only_a.gauge_set("pp_a", &[], 10.0).unwrap();

    for (job, method) in [("put", PushMethod::Put), ("post", PushMethod::Post)] {
        assert!(
            push_once(
                settings(&gw.base_url(), job, &[], PushMethod::Put),
                &none,
                &both
            )
            .await
        );
        assert!(push_once(settings(&gw.base_url(), job, &[], method), &none, &only_a).await);
    }
    let put = group(&gw, &[("job", "put")]).await.unwrap();
    assert_eq!(put["pp_a"]["metrics"][0]["value"], "10");
    assert!(put.get("pp_b").is_none(), "PUT must drop pp_b: {put}");
    let post = group(&gw, &[("job", "post")]).await.unwrap();
    assert_eq!(post["pp_a"]["metrics"][0]["value"], "10");
    assert_eq!(
        post["pp_b"]["metrics"][0]["value"], "2",
        "POST must keep pp_b"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn grouping_values_with_slashes_and_empty_values_round_trip() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let mut r = Registry::new();
    r.gauge_set("pp_g", &[], 1.0).unwrap();
    let grouping = [("path", "/var/tmp/x"), ("space", "a b?c"), ("empty", "")];
    let ok = push_once(
        settings(&gw.base_url(), "nightly/backup", &grouping, PushMethod::Put),
        &Labels::default(),
        &r,
    )
    .await;
    assert!(ok);
    let g = group(
        &gw,
        &[
            ("job", "nightly/backup"),
            ("path", "/var/tmp/x"),
            ("space", "a b?c"),
            ("empty", ""),
        ],
    )
    .await;
    assert!(g.is_some(), "groups: {:?}", groups(&gw).await);
}

/// A scripted HTTP server: answers each request with the next status in `script` (then 200)
/// and records each request's method and path.
fn scripted_server(script: Vec<u16>) -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            let head_end = loop {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = script.next().unwrap_or(200);
            let _ = tx.send(head.lines().next().unwrap_or("").to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nRetry-After: 0\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            );
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "current_thread")]
async fn retryable_failures_are_retried_and_refusals_are_not() {
    let mut r = Registry::new();
    r.gauge_set("pp_r", &[], 1.0).unwrap();

    let (port, requests) = scripted_server(vec![503, 429]);
    assert!(
        push_once(
            settings(
                &format!("http://127.0.0.1:{port}"),
                "j",
                &[],
                PushMethod::Put
            ),
            &Labels::default(),
            &r
        )
        .await
    );
    let seen: Vec<String> = requests.try_iter().collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|l| l.starts_with("PUT /metrics/job/j ")),
        "{seen:?}"
    );

    let (port, requests) = scripted_server(vec![400]);
    assert!(
        !push_once(
            settings(
                &format!("http://127.0.0.1:{port}"),
                "j",
                &[],
                PushMethod::Post
            ),
            &Labels::default(),
            &r
        )
        .await
    );
    let seen: Vec<String> = requests.try_iter().collect();
    assert_eq!(seen.len(), 1, "a 400 must not be retried: {seen:?}");
    assert!(seen[0].starts_with("POST "), "{seen:?}");
}

/// Runs `pushprobe --config FILE exec ARGS...` to completion.
async fn exec(pp: &Pushprobe, args: &[&str]) -> common::Finished {
    let config = pp.config_path().to_string_lossy().into_owned();
    let mut all = vec!["--config", config.as_str(), "exec"];
    all.extend_from_slice(args);
    pp.run_to_end("exec", &all, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "current_thread")]
async fn exec_pushes_job_metrics_and_keeps_last_success_after_a_failure() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let pp = Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"20s\"\n[[pushgateway]]\nurl = \"{}\"\njob = \"from-config\"\ngrouping = {{ instance = \"host-1\" }}\n",
        gw.base_url()
    ));
    exec(&pp, &["--job", "nightly", "--", "true"])
        .await
        .assert_code(0);
    let g = group(&gw, &[("job", "nightly"), ("instance", "host-1")])
        .await
        .expect("group");
    let last_success = g["pushprobe_job_last_success_timestamp_seconds"]["metrics"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(g["pushprobe_job_exit_code"]["metrics"][0]["value"], "0");

    exec(&pp, &["--job", "nightly", "--", "sh", "-c", "exit 4"])
        .await
        .assert_code(4);
    let g = group(&gw, &[("job", "nightly"), ("instance", "host-1")])
        .await
        .expect("group");
    assert_eq!(g["pushprobe_job_exit_code"]["metrics"][0]["value"], "4");
    assert_eq!(
        g["pushprobe_job_last_success_timestamp_seconds"]["metrics"][0]["value"],
        last_success.as_str(),
        "a failed run must not erase the last success"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn delete_on_exit_removes_the_group_after_pushing_it() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let pp = Pushprobe::with_config(&format!(
        "[[pushgateway]]\nurl = \"{}\"\njob = \"ephemeral\"\ndelete_on_exit = true\n",
        gw.base_url()
    ));
    exec(&pp, &["--", "true"]).await.assert_code(0);
    assert!(group(&gw, &[("job", "ephemeral")]).await.is_none());
    // It was pushed first, then deleted: the gateway counted both requests.
    let metrics = common::http_get_text(
        &common::http_client(),
        &format!("{}/metrics", gw.base_url()),
    )
    .await
    .unwrap();
    let counted = |needle: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with("pushgateway_http_requests_total") && l.contains(needle))
    };
    assert!(counted(r#"handler="push",method="put""#), "{metrics}");
    assert!(counted(r#"handler="delete",method="delete""#), "{metrics}");
}
