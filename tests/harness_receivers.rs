//! Checks the test harness itself against the real receivers, independently of pushprobe's
//! pipeline: a hand-built remote-write request (the generated protobuf + snappy) must be
//! readable back through the query helpers with its exact timestamp. If these fail, the e2e
//! tests' failures say nothing about pushprobe.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use pushprobe::proto::{Label, Sample, TimeSeries, WriteRequest};

/// Encodes one series with the given samples as a remote-write 1.0 body.
fn write_body(name: &str, labels: &[(&str, &str)], samples: &[(i64, f64)]) -> Vec<u8> {
    let mut all: Vec<Label> = labels
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    all.push(Label {
        name: "__name__".into(),
        value: name.into(),
    });
    // The protocol requires labels sorted by name.
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: all,
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("snappy")
}

async fn post_write(url: &str, body: Vec<u8>) {
    let resp = http_client()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("send remote write");
    let status = resp.status();
    assert!(
        status.is_success(),
        "remote write to {url}: {status}: {}",
        resp.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_receives_and_returns_exact_samples() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let t0 = now_ms() - 5_000;
    let body = write_body(
        "harness_check",
        &[("probe", "selftest"), ("cluster", "edge-1")],
        &[(t0, 1.0), (t0 + 1_000, 2.0), (t0 + 2_000, 3.0)],
    );
    post_write(&prom.write_url(), body).await;

    let latest = prom
        .wait_for_any(r#"harness_check{probe="selftest"}"#)
        .await;
    let r = only(&latest, &[("cluster", "edge-1")]);
    assert_eq!(r.value, 3.0);

    let raw = prom
        .raw_samples(r#"harness_check{probe="selftest"}"#, "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert_eq!(
        raw[0].samples,
        vec![(t0, 1.0), (t0 + 1_000, 2.0), (t0 + 2_000, 3.0)]
    );

    let range = prom
        .query_range("harness_check", t0, t0 + 2_000, Duration::from_secs(1))
        .await;
    assert_eq!(range.len(), 1);
    assert_eq!(range[0].samples.len(), 3, "{range:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_receives_and_exports_exact_samples() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let t0 = now_ms() - 5_000;
    let body = write_body(
        "harness_check",
        &[("probe", "selftest")],
        &[(t0, 1.0), (t0 + 1_000, 0.0)],
    );
    post_write(&vm.write_url(), body).await;

    let latest = vm
        .wait_for(
            r#"harness_check{probe="selftest"}"#,
            |r| r.len() == 1 && r[0].value == 0.0,
            DATA_TIMEOUT,
        )
        .await;
    assert_eq!(latest[0].labels["probe"], "selftest");

    let exported = vm.export(r#"harness_check{probe="selftest"}"#).await;
    assert_eq!(exported.len(), 1, "{exported:?}");
    assert_eq!(exported[0].samples, vec![(t0, 1.0), (t0 + 1_000, 0.0)]);

    let raw = vm
        .raw_samples(r#"harness_check{probe="selftest"}"#, "10m")
        .await;
    assert_eq!(raw[0].samples, vec![(t0, 1.0), (t0 + 1_000, 0.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushgateway_lists_pushed_metrics() {
    let Some(pgw) = Pushgateway::start().await else {
        return;
    };
    let resp = http_client()
        .put(format!(
            "{}/metrics/job/pushprobe/instance/selftest",
            pgw.base_url()
        ))
        .body("# TYPE harness_check gauge\nharness_check{probe=\"selftest\"} 42\n")
        .send()
        .await
        .expect("push");
    assert!(resp.status().is_success(), "{}", resp.status());

    let pushed = pgw.metric("harness_check").await;
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0].value, 42.0);
    assert_eq!(pushed[0].group["job"], "pushprobe");
    assert_eq!(pushed[0].labels["probe"], "selftest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_server_follows_its_script() {
    let target = TargetServer::start().await;
    let client = http_client();
    let resp = client.get(target.url("/")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    target.set_status(503);
    let resp = client.get(target.url("/x")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 503);
    target.set_reply(Reply {
        status: 201,
        delay: Duration::from_millis(10),
        body: "made".into(),
        ..Reply::default()
    });
    let resp = client.get(target.url("/")).send().await.expect("get");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.text().await.expect("body"), "made");
    assert_eq!(target.hits(), 3);
}

#[test]
fn missing_binary_is_a_skip_outside_ci_and_a_failure_in_ci() {
    let name = "pushprobe-no-such-binary";
    if std::env::var_os("CI").is_some() {
        let result = std::panic::catch_unwind(|| require_binary(name));
        assert!(result.is_err(), "require_binary must panic under CI");
    } else {
        assert_eq!(require_binary(name), None);
    }
    assert!(require_binary("sh").is_some());
}
