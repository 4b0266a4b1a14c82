//! End to end for `pushprobe exec`: a cron-style job wrapped by pushprobe shows up both in a
//! real Prometheus (remote write, with the job's real timestamps) and in a real Pushgateway,
//! with the right exit code and duration, and pushprobe exits with the job's code.

mod common;

use std::time::Duration;

use common::*;

fn config(write_url: &str, gateway_url: &str) -> String {
    format!(
        r#"
[agent]
external_labels = {{ cluster = "edge-1" }}
drain_timeout = "20s"

[[remote_write]]
url = "{write_url}"
batch_send_deadline = "1s"

[[pushgateway]]
url = "{gateway_url}"
job = "from-config"
grouping = {{ instance = "host-1" }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_job_reaches_prometheus_and_the_pushgateway() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let agent = Pushprobe::with_config(&config(&prom.write_url(), &gw.base_url()));

    // A job that runs for a measurable while and then fails with its own code.
    let run = agent
        .run_to_end(
            "exec",
            &[
                "exec",
                "--job",
                "nightly-backup",
                "--",
                "sh",
                "-c",
                "sleep 0.3; exit 3",
            ],
            Duration::from_secs(60),
        )
        .await;
    run.assert_code(3);
    let wall_seconds = (run.finished_ms - run.started_ms) as f64 / 1000.0;

    // Remote write: the exit code and duration, stamped within the job's lifetime.
    let code = prom
        .wait_for_any(r#"pushprobe_job_exit_code{job="nightly-backup"}"#)
        .await;
    let code = only(&code, &[("cluster", "edge-1")]);
    assert_eq!(code.value, 3.0);
    let raw = prom
        .raw_samples(
            r#"pushprobe_job_duration_seconds{job="nightly-backup"}"#,
            "10m",
        )
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    let (ts, duration) = raw[0].samples[0];
    assert!(
        (0.3..=wall_seconds).contains(&duration),
        "duration {duration}s, run took {wall_seconds}s"
    );
    assert!(
        ts >= run.started_ms && ts <= run.finished_ms,
        "sample stamped {ts}, outside the run [{}, {}]",
        run.started_ms,
        run.finished_ms
    );
    // A failed run has no last success.
    assert!(prom
        .query(r#"pushprobe_job_last_success_timestamp_seconds{job="nightly-backup"}"#)
        .await
        .is_empty());

    // Pushgateway: the same facts in the job's group.
    let pushed = gw.metric("pushprobe_job_exit_code").await;
    let group: Vec<_> = pushed
        .iter()
        .filter(|m| {
            m.group.get("job").map(String::as_str) == Some("nightly-backup")
                && m.group.get("instance").map(String::as_str) == Some("host-1")
        })
        .collect();
    assert_eq!(group.len(), 1, "{pushed:?}");
    assert_eq!(group[0].value, 3.0);
    let durations = gw.metric("pushprobe_job_duration_seconds").await;
    assert!(
        durations
            .iter()
            .any(|m| (0.3..=wall_seconds).contains(&m.value)),
        "{durations:?}"
    );

    // A successful run adds the last-success timestamp in both places.
    let ok = agent
        .run_to_end(
            "exec-ok",
            &["exec", "--job", "nightly-backup", "--", "true"],
            Duration::from_secs(60),
        )
        .await;
    ok.assert_code(0);
    let last = prom
        .wait_for_any(r#"pushprobe_job_last_success_timestamp_seconds{job="nightly-backup"}"#)
        .await;
    let last_ms = (last[0].value * 1000.0) as i64;
    assert!(
        last_ms >= ok.started_ms - 1000 && last_ms <= ok.finished_ms + 1000,
        "last success {last_ms} outside the run [{}, {}]",
        ok.started_ms,
        ok.finished_ms
    );
    assert_eq!(
        gw.metric("pushprobe_job_last_success_timestamp_seconds")
            .await
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_beside_a_running_agent_on_the_same_data_dir_still_delivers() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    // The shared configuration a host would have: the agent and the cron job read the same file.
    let config = format!(
        r#"
[agent]
data_dir = "{}"
drain_timeout = "20s"

[[remote_write]]
url = "{}"
batch_send_deadline = "1s"
"#,
        data_dir.path().display(),
        prom.write_url()
    );
    let agent = Pushprobe::with_config(&config);
    let running = agent.spawn_run(&[]);
    // The running agent takes the lock at start; wait until it has created it.
    let lock = data_dir.path().join("pushprobe.lock");
    for _ in 0..600 {
        if lock.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lock.exists(), "the running agent never took its data_dir");

    let job = agent
        .run_to_end(
            "exec-beside",
            &["exec", "--job", "beside", "--", "sh", "-c", "exit 5"],
            Duration::from_secs(60),
        )
        .await;
    job.assert_code(5);
    assert!(
        job.stderr.contains("memory queues"),
        "no warning about the held data_dir:\n{}",
        job.stderr
    );
    let code = prom
        .wait_for_any(r#"pushprobe_job_exit_code{job="beside"}"#)
        .await;
    assert_eq!(code[0].value, 5.0);
    running
        .terminate(Duration::from_secs(60))
        .await
        .assert_code(0);
}
