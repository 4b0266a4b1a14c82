//! zstd where the receiver speaks it: the handshake, the bodies on the wire, and the fallback to
//! snappy, against VictoriaMetrics 1.145 (zstd), VictoriaMetrics 1.79 and Prometheus 2.42 (no
//! zstd), and a scripted receiver for what real ones do not do on demand (a handshake that
//! hangs or answers a web page, zstd refused after a hundred accepted requests).
//!
//! The samples come from one scrape target of many series scraped every second, sent in small
//! requests so that a run makes many of them; every series is stamped the same times, so a
//! sample lost or doubled anywhere shows as a series that differs from the others.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::passthrough::Passthrough;
use common::rw_receiver::{Handshake, Options, RwReceiver};
use common::*;

/// Series of the scrape target.
const SERIES: usize = 300;

/// The target's exposition: `SERIES` gauges of one family.
fn exposition() -> String {
    let mut text = String::from("# TYPE load_series gauge\n");
    for i in 0..SERIES {
        text.push_str(&format!("load_series{{shard=\"s{i}\"}} {i}\n"));
    }
    text
}

/// A scrape target serving [`exposition`].
async fn load_target() -> TargetServer {
    TargetServer::start_with(Reply {
        body: exposition(),
        content_type: "text/plain; version=0.0.4".into(),
        ..Reply::default()
    })
    .await
}

/// An agent scraping `target` every second into `write_url`, ten samples a request, with
/// `extra` lines in its `[[remote_write]]` table.
fn agent(write_url: &str, target: &TargetServer, extra: &str) -> Pushprobe {
    Pushprobe::with_config(&format!(
        "[agent]\ndrain_timeout = \"60s\"\nself_metrics_interval = \"1s\"\n\n\
         [[remote_write]]\nurl = {}\nbatch_send_deadline = \"1s\"\nmax_samples_per_send = 10\n{extra}\n\n\
         [[scrape]]\njob = \"load\"\ntargets = [{}]\ninterval = \"1s\"\n",
        toml_string(write_url),
        toml_string(&target.addr().to_string()),
    ))
}

/// Polls `cond` until it holds, failing with `what` after [`DATA_TIMEOUT`].
async fn until(what: &str, run: &mut RunningAgent, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DATA_TIMEOUT;
    while !cond() {
        run.assert_running();
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts that every series got the same timestamps, each once, and at least `min` of them;
/// `stamps` holds each series' timestamps in arrival order.
fn assert_complete_once(stamps: &[(String, Vec<i64>)], min: usize) {
    assert_eq!(stamps.len(), SERIES, "series arrived");
    let reference: BTreeSet<i64> = stamps[0].1.iter().copied().collect();
    assert!(
        reference.len() >= min,
        "{} scrapes arrived: {:?}",
        reference.len(),
        stamps[0]
    );
    for (series, got) in stamps {
        let unique: BTreeSet<i64> = got.iter().copied().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "{series} got a sample twice: {got:?}"
        );
        assert_eq!(unique, reference, "{series} differs from the others");
    }
}

/// The scripted receiver's accepted timestamps per `load_series` series.
fn received(receiver: &RwReceiver) -> Vec<(String, Vec<i64>)> {
    receiver
        .series("load_series{")
        .into_iter()
        .map(|(series, tally)| {
            assert!(tally.refused.is_empty(), "{series} refused: {tally:?}");
            (series, tally.accepted)
        })
        .collect()
}

/// The last value of a self-metric the agent pushed to the scripted receiver, by labels.
fn self_metric(receiver: &RwReceiver, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    receiver
        .accepted_samples()
        .into_iter()
        .filter(|s| s.label("__name__") == Some(name))
        .filter(|s| want.iter().all(|(k, v)| s.label(k) == Some(v)))
        .max_by_key(|s| s.timestamp_ms)
        .map(|s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_1_145_gets_zstd_bodies_and_every_sample_once() {
    let Some(bin) = require_tool("victoria-metrics-1.145.0") else {
        return;
    };
    let vm = VictoriaMetrics::start_bin(bin).await;
    let wire = Passthrough::start(&vm.base_url()).await;
    let target = load_target().await;
    let agent = agent(&format!("{}/api/v1/write", wire.base_url()), &target, "");
    let mut run = agent.spawn_run(&[]);
    // A scrape in flight at shutdown is abandoned: one more than asserted below.
    until("four scrapes", &mut run, || target.hits() >= 4).await;
    let stopped = run.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);

    let seen = wire.seen();
    let handshakes: Vec<_> = seen.iter().filter(|s| s.method == "GET").collect();
    assert_eq!(handshakes.len(), 1, "{handshakes:?}");
    assert_eq!(
        handshakes[0].query.as_deref(),
        Some("get_vm_proto_version=1")
    );
    assert_eq!(handshakes[0].status, 200);
    assert!(
        wire.posts("snappy").is_empty(),
        "no snappy body after the handshake"
    );
    assert!(
        seen.iter()
            .filter(|s| s.method == "POST")
            .all(|s| s.status == 204),
        "VictoriaMetrics accepted every zstd body: {seen:?}"
    );
    assert!(
        stopped.stderr.contains("sending zstd"),
        "{}",
        stopped.stderr
    );

    let exported = vm.export(r#"{__name__="load_series"}"#).await;
    let stamps: Vec<(String, Vec<i64>)> = exported
        .iter()
        .map(|s| {
            let series = format!("{:?}", s.labels);
            (series, s.samples.iter().map(|(t, _)| *t).collect())
        })
        .collect();
    assert_complete_once(&stamps, 3);
    let in_use = vm
        .query(r#"pushprobe_remote_write_compression{compression="zstd"}"#)
        .await;
    assert_eq!(in_use.len(), 1, "{in_use:?}");
    assert_eq!(in_use[0].value, 1.0);
}

/// Runs an agent with `compression = "auto"` against a receiver without the handshake,
/// through a pass-through; returns what went over the wire in two scrapes or more.
async fn auto_without_handshake(write_base: &str) -> (Vec<common::passthrough::Seen>, Finished) {
    let wire = Passthrough::start(write_base).await;
    let target = load_target().await;
    let agent = agent(&format!("{}/api/v1/write", wire.base_url()), &target, "");
    let mut run = agent.spawn_run(&[]);
    until("three scrapes", &mut run, || target.hits() >= 3).await;
    let stopped = run.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    let seen = wire.seen();
    assert!(
        wire.posts("zstd").is_empty(),
        "a zstd body was sent: {seen:?}"
    );
    let handshakes = seen.iter().filter(|s| s.method == "GET").count();
    assert_eq!(handshakes, 1, "{seen:?}");
    assert!(
        stopped.stderr.contains("does not announce zstd"),
        "{}",
        stopped.stderr
    );
    (seen, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_1_79_without_the_handshake_gets_snappy_and_every_sample_once() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let (seen, _) = auto_without_handshake(&vm.base_url()).await;
    assert!(
        seen.iter()
            .filter(|s| s.method == "POST")
            .all(|s| s.status == 204),
        "{seen:?}"
    );
    let exported = vm.export(r#"{__name__="load_series"}"#).await;
    let stamps: Vec<(String, Vec<i64>)> = exported
        .iter()
        .map(|s| {
            let series = format!("{:?}", s.labels);
            (series, s.samples.iter().map(|(t, _)| *t).collect())
        })
        .collect();
    assert_complete_once(&stamps, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_2_42_with_auto_gets_snappy() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let (seen, _) = auto_without_handshake(&format!("http://127.0.0.1:{}", prom.port())).await;
    assert!(
        seen.iter()
            .filter(|s| s.method == "POST")
            .all(|s| s.status == 204),
        "{seen:?}"
    );
    // The series ended with staleness markers at shutdown: count what was stored before.
    let stored = prom.query("count(count_over_time(load_series[10m]))").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].value, SERIES as f64);
    let refused = prom
        .query("pushprobe_remote_write_zstd_refused_requests_total")
        .await;
    assert!(refused.iter().all(|r| r.value == 0.0), "{refused:?}");
}

/// Runs an agent with `compression = "auto"` against a scripted receiver whose handshake
/// `handshake` answers; every sample must arrive once, as snappy.
async fn handshake_failure_means_snappy(handshake: Handshake, result: &str) {
    let receiver = RwReceiver::start_with(
        Options {
            handshake,
            refuse_zstd_after: None,
        },
        |_, _| 204,
    )
    .await;
    let target = load_target().await;
    let agent = agent(&receiver.write_url(), &target, "");
    let mut run = agent.spawn_run(&[]);
    let counted = || {
        self_metric(
            &receiver,
            "pushprobe_remote_write_compression_handshakes_total",
            &[("result", result)],
        ) == Some(1.0)
    };
    until("two scrapes and the handshake counted", &mut run, || {
        target.hits() >= 3 && counted()
    })
    .await;
    let stopped = run.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    assert_eq!(receiver.handshakes(), 1);
    assert_eq!(receiver.accepted_by_encoding().1, 0, "no zstd body");
    let logged: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("does not announce zstd"))
        .collect();
    assert_eq!(logged.len(), 1, "one log line: {}", stopped.stderr);
    assert_complete_once(&received(&receiver), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_hangs_means_snappy_after_its_deadline() {
    handshake_failure_means_snappy(Handshake::Hang, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_answered_with_a_web_page_means_snappy() {
    handshake_failure_means_snappy(Handshake::Html, "unexpected").await;
}

/// A receiver that announces zstd, takes a hundred zstd requests, then refuses zstd with
/// `status`: every sample must arrive once, the rest as snappy.
async fn zstd_refused_after_a_hundred(status: u16) {
    let receiver = RwReceiver::start_with(
        Options {
            handshake: Handshake::Zstd,
            refuse_zstd_after: Some((100, status)),
        },
        |_, _| 204,
    )
    .await;
    let target = load_target().await;
    let agent = agent(&receiver.write_url(), &target, "");
    let mut run = agent.spawn_run(&[]);
    until("zstd refused", &mut run, || receiver.refused_zstd() >= 1).await;
    let scraped = target.hits();
    until("two scrapes after the refusal", &mut run, || {
        target.hits() >= scraped + 3
    })
    .await;
    let stopped = run.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    let (snappy, zstd) = receiver.accepted_by_encoding();
    assert_eq!(zstd, 100);
    assert!(snappy > 0);
    // Shards in flight when the first refusal came were refused too, and nothing after.
    let refused = receiver.refused_zstd();
    assert!(
        (1..=4).contains(&refused),
        "{refused} zstd requests refused"
    );
    let logged = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("refused a zstd body"))
        .count();
    assert_eq!(logged, 1, "logged once: {}", stopped.stderr);
    assert_complete_once(&received(&receiver), 3);
    assert_eq!(
        self_metric(
            &receiver,
            "pushprobe_remote_write_compression",
            &[("compression", "snappy")]
        ),
        Some(1.0)
    );
    assert_eq!(
        self_metric(
            &receiver,
            "pushprobe_remote_write_zstd_refused_requests_total",
            &[]
        ),
        Some(refused as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_refused_with_415_after_a_hundred_requests_goes_on_as_snappy_losing_nothing() {
    zstd_refused_after_a_hundred(415).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_refused_with_400_after_a_hundred_requests_goes_on_as_snappy_losing_nothing() {
    zstd_refused_after_a_hundred(400).await;
}
