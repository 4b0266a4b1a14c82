//! Remote write 2.0: delivery to a real 2.0 receiver (Prometheus 3.5 accepting only
//! `io.prometheus.write.v2.Request`), the fallback to 1.0 against real 1.0-only receivers
//! (Debian stable's Prometheus 2.42 and VictoriaMetrics 1.79) with every sample delivered
//! exactly once, and answers no real receiver gives on demand (bogus `-Written` counts,
//! partial writes, garbage bodies, refusing both messages) from a scripted receiver.

mod common;

use std::time::{Duration, Instant};

use common::rw2_receiver::{honest, Answer, Msg, Rw2Receiver};
use common::*;

const V2: &str = "io.prometheus.write.v2.Request";

/// A configuration sending 2.0 to `write_url`: probe `local` of `target` every `interval`,
/// self-metrics every second, and `extra` appended (for example a scrape job).
fn v2_config(write_url: &str, target: &str, interval: &str, extra: &str) -> String {
    // A fixed instance, so self-metric keys do not depend on the host name.
    let base = basic_config(write_url, &[("local", target)], interval).replacen(
        "[agent]\n",
        "[agent]\ninstance = \"edge-agent\"\n",
        1,
    );
    let base = base.replace(
        "batch_send_deadline = \"1s\"\n",
        &format!("batch_send_deadline = \"1s\"\nprotobuf_message = {V2:?}\nmin_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n"),
    );
    format!("{base}{extra}")
}

/// An OpenMetrics exposition with a counter carrying type, unit, help and `_created`.
const OPENMETRICS: &str = "# TYPE edge_work_seconds counter\n\
# UNIT edge_work_seconds seconds\n\
# HELP edge_work_seconds Time spent working.\n\
edge_work_seconds_total{kind=\"a\"} 17.5\n\
edge_work_seconds_created{kind=\"a\"} 1700000000.25\n\
# TYPE edge_temp_celsius gauge\n\
# UNIT edge_temp_celsius celsius\n\
# HELP edge_temp_celsius Temperature.\n\
edge_temp_celsius 21.5\n\
# EOF\n";

fn scrape_job(target: &TargetServer) -> String {
    format!(
        "\n[[scrape]]\njob = \"edge\"\ntargets = [{}]\ninterval = \"1s\"\n",
        toml_string(&target.addr().to_string())
    )
}

fn openmetrics_target_reply() -> Reply {
    Reply {
        body: OPENMETRICS.to_string(),
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8".to_string(),
        ..Reply::default()
    }
}

/// Prometheus 3.5.3 as a receiver of 2.0 only, native histograms on.
async fn prometheus_3_5_v2_only() -> Option<Prometheus> {
    let bin = require_tool("prometheus-3.5.3")?;
    Some(
        Prometheus::start_bin(
            bin,
            PROMETHEUS_MINIMAL_CONFIG,
            &[
                "--web.enable-remote-write-receiver",
                "--web.remote-write-receiver.accepted-protobuf-messages=io.prometheus.write.v2.Request",
                "--enable-feature=native-histograms",
            ],
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_delivers_probes_scrapes_and_self_metrics_to_prometheus_3_5() {
    let Some(prom) = prometheus_3_5_v2_only().await else {
        return;
    };
    let target = TargetServer::start().await;
    let exporter = TargetServer::start_with(openmetrics_target_reply()).await;
    let agent = Pushprobe::with_config(&v2_config(
        &prom.write_url(),
        &target.url("/"),
        "1s",
        &scrape_job(&exporter),
    ));
    let mut run = agent.spawn_run(&[]);

    let success = prom.wait_for_any(r#"probe_success{probe="local"}"#).await;
    assert_eq!(only(&success, &[("cluster", "edge-1")]).value, 1.0);
    let work = prom
        .wait_for_any(r#"edge_work_seconds_total{job="edge",kind="a"}"#)
        .await;
    assert_eq!(work[0].value, 17.5);
    let temp = prom.wait_for_any(r#"edge_temp_celsius{job="edge"}"#).await;
    assert_eq!(temp[0].value, 21.5);
    // The endpoint still speaks 2.0 (Prometheus refuses 1.0 here, so everything above came
    // as 2.0), and says so.
    let protocol = prom
        .wait_for_any(&format!(
            r#"pushprobe_remote_write_protocol{{message="{V2}"}}"#
        ))
        .await;
    assert_eq!(protocol[0].value, 1.0, "{protocol:?}");
    let v1 = prom
        .wait_for_any(r#"pushprobe_remote_write_protocol{message="prometheus.WriteRequest"}"#)
        .await;
    assert_eq!(v1[0].value, 0.0);
    let sent = prom
        .wait_for(
            "pushprobe_remote_write_samples_sent_total",
            |r| r.first().is_some_and(|s| s.value > 0.0),
            DATA_TIMEOUT,
        )
        .await;
    assert!(sent[0].value > 0.0);
    let failed = prom
        .query("pushprobe_remote_write_samples_failed_total")
        .await;
    assert!(failed.iter().all(|r| r.value == 0.0), "{failed:?}");

    // Prometheus 3.5 lists only what it scraped itself in its metadata API: the metadata the
    // series carried is checked on the wire (next test).
    let stderr = run.stderr();
    assert!(
        !stderr.contains("does not take remote write 2.0"),
        "fell back against a 2.0 receiver: {stderr}"
    );
    run.assert_running();
    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_series_carry_metadata_and_start_times_for_every_source() {
    // What a 2.0 receiver reads off each series: checked on the wire, since Prometheus 3.5
    // keeps remote-written metadata out of its metadata API and reads start times from a
    // field rc.4 moved.
    let receiver = Rw2Receiver::start(|_, seen| honest(seen)).await;
    let target = TargetServer::start().await;
    let exporter = TargetServer::start_with(openmetrics_target_reply()).await;
    let agent = Pushprobe::with_config(&v2_config(
        &receiver.write_url(),
        &target.url("/"),
        "1s",
        &scrape_job(&exporter),
    ));
    let run = agent.once().await;
    run.assert_code(0);
    let requests = receiver.requests();
    assert!(requests
        .iter()
        .all(|(seen, status)| seen.msg == Msg::V2 && seen.version == "2.0.0" && *status == 204));
    let meta = receiver.metadata();
    let get = |name: &str| {
        meta.get(name)
            .unwrap_or_else(|| panic!("no metadata for {name}: {meta:#?}"))
            .clone()
    };
    // Scraped: type, help and unit from the exposition; start time from `_created`.
    let work = get("edge_work_seconds_total");
    assert_eq!(
        (work.kind, work.help.as_str(), work.unit.as_str()),
        (1, "Time spent working.", "seconds")
    );
    assert_eq!(work.start_ms, 1_700_000_000_250);
    let temp = get("edge_temp_celsius");
    assert_eq!(
        (temp.kind, temp.unit.as_str(), temp.start_ms),
        (2, "celsius", 0)
    );
    // A probe's gauge and counter, and a self-metric counter: declared by the agent; its
    // counters count from when it started.
    let success = get("probe_success");
    assert_eq!(success.kind, 2);
    assert!(!success.help.is_empty());
    assert_eq!(success.start_ms, 0);
    for counter in [
        "pushprobe_probe_requests_total",
        "pushprobe_remote_write_samples_sent_total",
    ] {
        let c = get(counter);
        assert_eq!(c.kind, 1, "{counter}");
        assert!(
            c.start_ms >= run.started_ms - 1000 && c.start_ms <= run.finished_ms,
            "{counter} starts at {} outside the run [{}, {}]",
            c.start_ms,
            run.started_ms,
            run.finished_ms
        );
    }
}

/// Runs the agent sending 2.0 to a 1.0-only receiver until `probe_runs` probe results were
/// measured, then stops it; returns the target (its hits are the probe runs) and stderr.
async fn run_against(write_url: &str, probe_runs: u64) -> (TargetServer, String) {
    let target = TargetServer::start().await;
    let agent = Pushprobe::with_config(&v2_config(write_url, &target.url("/"), "1s", ""));
    let mut run = agent.spawn_run(&[]);
    let deadline = Instant::now() + DATA_TIMEOUT;
    while target.hits() < probe_runs {
        assert!(
            Instant::now() < deadline,
            "the probe did not run {probe_runs} times"
        );
        run.assert_running();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = run.terminate(Duration::from_secs(30)).await;
    done.assert_code(0);
    (target, done.stderr)
}

/// Every probe run that reached the target has its result stored: a sample stamped when the
/// run started, the latest one before its request arrived, and no run shares one. The run in
/// flight when the agent was stopped may have been cut short without a result.
fn each_run_stored_once(target: &TargetServer, stamps: &[i64]) {
    let hits = target.hit_times_ms();
    let finished = &hits[..hits.len() - 1];
    let mut matched: Vec<i64> = finished
        .iter()
        .map(|hit| {
            let stamp = stamps
                .iter()
                .copied()
                .filter(|s| s <= hit)
                .max()
                .unwrap_or_else(|| panic!("no sample before the run at {hit}: {stamps:?}"));
            assert!(
                hit - stamp < 1000,
                "the run that reached the target at {hit} has no sample: {stamps:?}"
            );
            stamp
        })
        .collect();
    let runs = matched.len();
    matched.dedup();
    assert_eq!(
        matched.len(),
        runs,
        "runs {finished:?} share samples {stamps:?}"
    );
}

fn fell_back_once(stderr: &str) {
    assert_eq!(
        stderr.matches("does not take remote write 2.0").count(),
        1,
        "the fallback is logged once: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_falls_back_to_1_0_on_prometheus_2_42_without_losing_a_sample() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let (target, stderr) = run_against(&prom.write_url(), 6).await;
    fell_back_once(&stderr);
    // A 1.0 receiver that ignores the Content-Type: 2xx, nothing stored, no counts.
    assert!(stderr.contains("status=204"), "{stderr}");
    // Every probe run's result is there (the agent drained before exiting), each at its own
    // measurement time: the batch that found out about the fallback was sent again as 1.0.
    let raw = prom
        .raw_samples(r#"probe_success{probe="local"}"#, "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    let stamps: Vec<i64> = raw[0].samples.iter().map(|s| s.0).collect();
    each_run_stored_once(&target, &stamps);
    let protocol = prom
        .wait_for_any(r#"pushprobe_remote_write_protocol{message="prometheus.WriteRequest"}"#)
        .await;
    assert_eq!(protocol[0].value, 1.0);
    let v2 = prom
        .wait_for_any(&format!(
            r#"pushprobe_remote_write_protocol{{message="{V2}"}}"#
        ))
        .await;
    assert_eq!(v2[0].value, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_falls_back_to_1_0_on_victoriametrics_1_79_with_every_sample_once() {
    let Some(vm) = VictoriaMetrics::start().await else {
        return;
    };
    let (target, stderr) = run_against(&vm.write_url(), 6).await;
    fell_back_once(&stderr);
    assert!(stderr.contains("status=204"), "{stderr}");
    // VictoriaMetrics keeps a sample sent twice as two: the export shows any duplicate.
    let exported = vm.export(r#"probe_success{probe="local"}"#).await;
    assert_eq!(exported.len(), 1, "{exported:?}");
    let stamps: Vec<i64> = exported[0].samples.iter().map(|s| s.0).collect();
    let mut unique = stamps.clone();
    unique.dedup();
    assert_eq!(unique, stamps, "a sample arrived twice");
    each_run_stored_once(&target, &stamps);
    let protocol = vm
        .wait_for_any(r#"pushprobe_remote_write_protocol{message="prometheus.WriteRequest"}"#)
        .await;
    assert_eq!(protocol[0].value, 1.0);
}

/// Runs the agent sending 2.0 to `receiver` until `done` holds for it, then stops it.
async fn run_until(receiver: &Rw2Receiver, done: impl Fn(&Rw2Receiver) -> bool) -> String {
    let target = TargetServer::start().await;
    let agent = Pushprobe::with_config(&v2_config(
        &receiver.write_url(),
        &target.url("/"),
        "1s",
        "",
    ));
    let mut run = agent.spawn_run(&[]);
    let deadline = Instant::now() + DATA_TIMEOUT;
    while !done(receiver) {
        assert!(
            Instant::now() < deadline,
            "condition not met; requests: {:#?}\n{}",
            receiver.requests(),
            run.stderr()
        );
        run.assert_running();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.terminate(Duration::from_secs(30)).await.stderr
}

/// The latest value the agent reported for self-metric series `key` (as the receiver keys
/// series), if any arrived.
fn reported(receiver: &Rw2Receiver, key: &str) -> Option<f64> {
    receiver
        .requests()
        .into_iter()
        .filter(|(_, status)| (200..300).contains(status))
        .flat_map(|(seen, _)| seen.samples)
        .filter(|(k, _, _)| k == key)
        .max_by_key(|(_, _, t)| *t)
        .map(|(_, v, _)| v)
}

/// Every `probe_success` sample the receiver accepted, in order: none may appear twice.
fn assert_each_once(receiver: &Rw2Receiver) -> Vec<i64> {
    let stamps: Vec<i64> = receiver
        .accepted("probe_success{")
        .into_iter()
        .map(|(_, _, t)| t)
        .collect();
    let mut unique = stamps.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        stamps.len(),
        "a sample arrived twice: {stamps:?}"
    );
    stamps
}

fn endpoint_key(receiver: &Rw2Receiver, name: &str, extra: &str) -> String {
    // The default endpoint name: host, port and path.
    let endpoint = receiver
        .write_url()
        .trim_start_matches("http://")
        .to_string();
    // The agent's own series carry `job` and `instance` (fixed by `v2_config`).
    format!(
        "{name}{{cluster=\"edge-1\",endpoint={endpoint:?},instance=\"edge-agent\",job=\"pushprobe\"{extra}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_counts_that_are_not_numbers_or_too_large_are_counted_and_nothing_is_resent() {
    for (bogus, reason) in [
        ("lots", "written_not_a_number"),
        ("99999999", "written_exceeds_sent"),
    ] {
        let receiver = Rw2Receiver::start(move |_, _| {
            Answer::status(204)
                .header("X-Prometheus-Remote-Write-Samples-Written", bogus)
                .header("X-Prometheus-Remote-Write-Histograms-Written", "0")
        })
        .await;
        let key = endpoint_key(
            &receiver,
            "pushprobe_remote_write_invalid_answers_total",
            &format!(",reason={reason:?}"),
        );
        let stderr = run_until(&receiver, |r| {
            reported(r, &key).is_some_and(|v| v >= 3.0) && r.accepted("probe_success{").len() >= 3
        })
        .await;
        assert_each_once(&receiver);
        // Trusting the status: no fallback, every request stayed 2.0.
        assert!(receiver.requests().iter().all(|(s, _)| s.msg == Msg::V2));
        assert!(
            stderr.contains("written count is not a number or exceeds what was sent"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_write_is_counted_logged_and_never_sent_again() {
    // The first three requests: the receiver says it kept all but one sample, and refuses
    // with 400 as the protocol asks; then it writes everything (and so gets the counts).
    let receiver = Rw2Receiver::start(|i, seen| {
        let n = seen.samples.len();
        if i < 3 && n > 1 {
            Answer::status(400)
                .header(
                    "X-Prometheus-Remote-Write-Samples-Written",
                    &(n - 1).to_string(),
                )
                .body("out of order sample: one of them")
        } else {
            honest(seen)
        }
    })
    .await;
    let key = endpoint_key(&receiver, "pushprobe_remote_write_partial_writes_total", "");
    let stderr = run_until(&receiver, |r| reported(r, &key).is_some_and(|v| v >= 3.0)).await;
    // A request refused with 400 but partly written is neither resent nor split: no
    // request repeats samples of an earlier one.
    let mut seen_before = std::collections::HashSet::new();
    for (seen, _) in receiver.requests() {
        for (k, _, t) in &seen.samples {
            assert!(
                seen_before.insert((k.clone(), *t)),
                "{k}@{t} was sent twice"
            );
        }
    }
    assert!(
        stderr.contains("receiver wrote only part of a request")
            && stderr.contains("out of order sample: one of them"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_2xx_with_garbage_and_no_counts_gets_1_0_and_every_sample_once() {
    // Answers every request 200 with a garbage body and no `-Written` header: it read the
    // 2.0 body as an empty 1.0 request, so the same samples must go again as 1.0.
    let receiver =
        Rw2Receiver::start(|_, _| Answer::status(200).body("<html>\u{0}garbage\u{7f}</html>"))
            .await;
    let key = endpoint_key(
        &receiver,
        "pushprobe_remote_write_protocol",
        ",message=\"prometheus.WriteRequest\"",
    );
    let stderr = run_until(&receiver, |r| {
        reported(r, &key) == Some(1.0)
            && r.accepted("probe_success{")
                .iter()
                .filter(|(m, _, _)| *m == Msg::V1)
                .count()
                >= 3
    })
    .await;
    fell_back_once(&stderr);
    let requests = receiver.requests();
    // 2.0 only until the first answer came back; 1.0 from then on.
    let first_v1 = requests
        .iter()
        .position(|(s, _)| s.msg == Msg::V1)
        .expect("a 1.0 request");
    assert!(requests[first_v1..].iter().all(|(s, _)| s.msg == Msg::V1));
    assert!(requests[first_v1..]
        .iter()
        .all(|(s, _)| s.version == "0.1.0"));
    // Each probe result arrived as 1.0 exactly once, the first ones included: what the
    // 2.0 requests carried was sent again.
    let v2_stamps: Vec<i64> = requests[..first_v1]
        .iter()
        .flat_map(|(s, _)| s.samples.iter())
        .filter(|(k, _, _)| k.starts_with("probe_success{"))
        .map(|(_, _, t)| *t)
        .collect();
    let v1_stamps: Vec<i64> = receiver
        .accepted("probe_success{")
        .into_iter()
        .filter(|(m, _, _)| *m == Msg::V1)
        .map(|(_, _, t)| t)
        .collect();
    for t in &v2_stamps {
        assert_eq!(
            v1_stamps.iter().filter(|s| *s == t).count(),
            1,
            "sample at {t} sent as 2.0 must arrive once as 1.0: {v1_stamps:?}"
        );
    }
    let mut unique = v1_stamps.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), v1_stamps.len(), "{v1_stamps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_0_success_with_a_body_is_counted_and_ignored() {
    // 200, since a 204 cannot carry a body.
    let receiver = Rw2Receiver::start(|_, seen| {
        let mut answer = honest(seen).body("\u{1}\u{2}garbage");
        answer.status = 200;
        answer
    })
    .await;
    let key = endpoint_key(
        &receiver,
        "pushprobe_remote_write_invalid_answers_total",
        ",reason=\"success_with_body\"",
    );
    run_until(&receiver, |r| reported(r, &key).is_some_and(|v| v >= 2.0)).await;
    assert!(receiver.requests().iter().all(|(s, _)| s.msg == Msg::V2));
    assert_each_once(&receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_refusing_both_messages_gets_a_clear_error_and_no_endless_retries() {
    let receiver = Rw2Receiver::start(|_, _| Answer::status(415).body("unsupported")).await;
    let target = TargetServer::start().await;
    let agent = Pushprobe::with_config(&v2_config(
        &receiver.write_url(),
        &target.url("/"),
        "1s",
        "",
    ));
    let run = agent.once().await;
    // Nothing delivered: `once` says so, and returns instead of retrying forever.
    assert_ne!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refuses both remote write 2.0 and 1.0 messages"),
        "{}",
        run.stderr
    );
    fell_back_once(&run.stderr);
    let requests = receiver.requests();
    // The probe results: one 2.0 attempt, then one 1.0 attempt, each refused once.
    let v2 = requests.iter().filter(|(s, _)| s.msg == Msg::V2).count();
    let v1 = requests.iter().filter(|(s, _)| s.msg == Msg::V1).count();
    assert!(v2 >= 1 && v1 >= 1, "{requests:#?}");
    assert!(
        requests.len() <= 6,
        "retried a refused batch: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_passes_config_check() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/remote-write-2.toml");
    let toml = std::fs::read_to_string(path).expect("read the example");
    let check = Pushprobe::with_config(&toml).config_check().await;
    check.assert_code(0);
    let wrong = toml.replace(
        "protobuf_message = \"io.prometheus.write.v2.Request\"",
        "protobuf_message = \"v2\"",
    );
    let check = Pushprobe::with_config(&wrong).config_check().await;
    assert_ne!(check.code(), Some(0));
    assert!(
        check
            .stderr
            .contains("remote_write[0].protobuf_message: \"v2\" is not a remote-write message"),
        "{}",
        check.stderr
    );
}
