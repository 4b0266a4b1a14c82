//! Durable store-and-forward, end to end: the real binary with `agent.data_dir`, a real
//! Prometheus (killed and restarted on the same port and storage), and SIGKILL of the agent.
//!
//! Every check counts samples; none measures time. The probe runs every second against a
//! local target; the number of runs is the target's hit count (a run abandoned by a kill or a
//! shutdown hits the target without publishing, hence the "at most one fewer" bounds) and,
//! exactly, the `pushprobe_probe_runs_total` an agent pushes in its last self-metrics snapshot.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::rw_receiver::RwReceiver;
use common::*;

const SELECTOR: &str = r#"probe_success{probe="x"}"#;

/// An agent with a disk queue in `data` (relative to its directory), one receiver named
/// `prom`, one HTTP probe `x` every second, and the health listener on `listen`.
fn config(write_url: &str, target_url: &str, listen: u16, remote_write_extra: &str) -> String {
    format!(
        "[agent]\n\
         data_dir = \"data\"\n\
         listen = \"127.0.0.1:{listen}\"\n\
         self_metrics_interval = \"1s\"\n\
         drain_timeout = \"60s\"\n\
         \n\
         [[remote_write]]\n\
         name = \"prom\"\n\
         url = {}\n\
         batch_send_deadline = \"500ms\"\n\
         max_backoff = \"1s\"\n\
         {remote_write_extra}\n\
         \n\
         [[probe]]\n\
         name = \"x\"\n\
         kind = \"http\"\n\
         url = {}\n\
         interval = \"1s\"\n\
         timeout = \"1s\"\n",
        toml_string(write_url),
        toml_string(target_url),
    )
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of the agent's self-metric lines starting with `prefix`, from its `/metrics`.
async fn agent_metric(listen: u16, prefix: &str) -> Option<f64> {
    let text = http_get_text(
        &http_client(),
        &format!("http://127.0.0.1:{listen}/metrics"),
    )
    .await
    .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Waits until the agent reports samples queued for the receiver.
async fn wait_for_backlog(listen: u16) {
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let pending = agent_metric(listen, "pushprobe_remote_write_pending_samples").await;
        if pending.is_some_and(|p| p > 0.0) {
            return;
        }
        assert!(Instant::now() < deadline, "no backlog reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Samples of probe `x`'s `probe_success` stored by the receiver.
async fn stored(prom: &Prometheus) -> u64 {
    prom.query(&format!("count_over_time({SELECTOR}[30m])"))
        .await
        .first()
        .map_or(0, |r| r.value as u64)
}

/// Runs of probe `x` that the last agent published, from its final self-metrics snapshot.
async fn published_runs(prom: &Prometheus) -> u64 {
    prom.query(r#"sum(last_over_time(pushprobe_probe_runs_total{probe="x"}[30m]))"#)
        .await
        .first()
        .map_or(0, |r| r.value as u64)
}

/// Polls until the receiver stores at least `want` samples of probe `x`.
async fn wait_stored(prom: &Prometheus, want: u64) {
    let promql = format!("count_over_time({SELECTOR}[30m])");
    prom.wait_for(
        &promql,
        |r| r.first().is_some_and(|s| s.value as u64 >= want),
        Duration::from_secs(120),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_across_a_receiver_outage() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "",
    ));
    let agent = pp.spawn_run(&[]);
    prom.wait_for_any(SELECTOR).await;

    prom.kill();
    let hits_at_kill = target.hits();
    // Probing goes on while the receiver is down: the samples wait on disk.
    wait_until("probe runs during the outage", DATA_TIMEOUT, || {
        target.hits() >= hits_at_kill + 6
    })
    .await;
    wait_for_backlog(listen).await;
    prom.restart().await;

    let hits_at_restart = target.hits();
    wait_stored(&prom, hits_at_restart - 1).await;
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    let runs = published_runs(&prom).await;
    let hits = target.hits();
    assert!(runs >= hits_at_kill + 6, "runs {runs}");
    assert!(hits == runs || hits == runs + 1, "hits {hits}, runs {runs}");
    assert_eq!(stored(&prom).await, runs, "one sample per run, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_queued_on_disk_survive_sigkill_of_the_agent() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    // The receiver is down from the start: everything the first agent measures is on disk.
    prom.kill();
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "",
    ));
    let first = pp.spawn_run_as("run-1", &[]);
    wait_until("probe runs", DATA_TIMEOUT, || target.hits() >= 6).await;
    wait_for_backlog(listen).await;
    first.kill();
    let first_hits = target.hits();

    let second = pp.spawn_run_as("run-2", &[]);
    // The kernel released the dead agent's lock; the live one holds it now.
    wait_until("second agent serving", DATA_TIMEOUT, || {
        std::net::TcpStream::connect(("127.0.0.1", listen)).is_ok()
    })
    .await;
    // A second long-running agent on the same directory is refused before it starts: two
    // agents must never share one queue. (A short-lived `once`/`exec` falls back to memory
    // queues instead; tests/e2e_exec.rs covers that.)
    let config_path = pp.config_path().to_string_lossy().into_owned();
    let locked = pp
        .run_to_end(
            "run-locked",
            &["run", "--config", &config_path],
            Duration::from_secs(60),
        )
        .await;
    locked.assert_code(78);
    assert!(
        locked
            .stderr
            .contains("is in use by another pushprobe process"),
        "{}",
        locked.stderr
    );

    prom.restart().await;
    wait_stored(&prom, first_hits - 1).await;
    // A few runs of its own, so its last snapshot carries its own run count.
    wait_until("second agent's runs", DATA_TIMEOUT, || {
        target.hits() >= first_hits + 3
    })
    .await;
    let done = second.terminate(Duration::from_secs(90)).await;
    done.assert_code(0);
    assert!(
        done.stderr.contains("disk queue opened; resuming"),
        "{}",
        done.stderr
    );

    let second_runs = published_runs(&prom).await;
    let count = stored(&prom).await;
    // The first agent may have been killed between a probe's request and its publication.
    assert!(
        count == second_runs + first_hits || count + 1 == second_runs + first_hits,
        "stored {count}, first agent's runs {first_hits} (hits), second's {second_runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_catch_up_loses_nothing() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    prom.kill();
    let target = TargetServer::start().await;
    let listen = free_port();
    // Catch-up paced below the rate samples are produced: the agent is still catching up
    // whenever it is killed.
    let slow = config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 20\nmax_shards = 2\nmax_catchup_bytes_per_second = \"1KiB\"",
    );
    let pp = Pushprobe::with_config(&slow);
    let first = pp.spawn_run_as("run-1", &[]);
    wait_until("probe runs", DATA_TIMEOUT, || target.hits() >= 8).await;
    wait_for_backlog(listen).await;
    prom.restart().await;
    wait_stored(&prom, 1).await;
    first.kill();
    let first_hits = target.hits();
    let partial = stored(&prom).await;
    assert!(
        partial + 1 < first_hits,
        "killed mid-catch-up: {partial} of {first_hits} stored"
    );

    pp.rewrite_config(&config(
        &prom.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 20\nmax_shards = 2",
    ));
    let second = pp.spawn_run_as("run-2", &[]);
    wait_stored(&prom, first_hits - 1).await;
    // A few runs of its own, so its last snapshot carries its own run count.
    wait_until("second agent's runs", DATA_TIMEOUT, || {
        target.hits() >= first_hits + 3
    })
    .await;
    let done = second.terminate(Duration::from_secs(90)).await;
    done.assert_code(0);

    let second_runs = published_runs(&prom).await;
    let count = stored(&prom).await;
    assert!(
        count == second_runs + first_hits || count + 1 == second_runs + first_hits,
        "stored {count}, first agent's runs {first_hits} (hits), second's {second_runs}\n{}",
        done.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_are_counted_and_do_not_stall_the_rest() {
    // About every third probe result is a bad sample, and a request holding one is refused
    // whole, as Prometheus does: the agent sends the rest again in parts until only the bad
    // series' part is refused. The first window after start (at most max_shards requests) is
    // left alone: a refusal there takes the after-restart path, which re-sends series by series.
    let receiver = RwReceiver::start(|n, request| {
        let bad = request.timeseries.iter().any(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == "probe_success")
                && t.samples.iter().any(|s| (s.timestamp / 1000) % 3 == 1)
        });
        if n >= 6 && bad {
            400
        } else {
            204
        }
    })
    .await;
    let target = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &receiver.write_url(),
        &target.url("/health"),
        listen,
        "max_samples_per_send = 10",
    ));
    let agent = pp.spawn_run(&[]);
    wait_until("refusals and later deliveries", DATA_TIMEOUT, || {
        let series = receiver.series("probe_success{");
        let tally = series.values().next().cloned().unwrap_or_default();
        match (tally.refused.first(), tally.accepted.last()) {
            (Some(first_refused), Some(last_accepted)) => {
                last_accepted > first_refused && tally.accepted.len() >= 3
            }
            _ => false,
        }
    })
    .await;

    // The agent counts exactly what the receiver refused for good, i.e. never accepted in a
    // part sent again (compared while no request is in flight, which the 1 s probe interval
    // leaves room for).
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let refused: usize = receiver
            .series("")
            .values()
            .map(|t| {
                let refused: BTreeSet<i64> = t.refused.iter().copied().collect();
                refused.iter().filter(|ts| !t.accepted.contains(ts)).count()
            })
            .sum();
        let failed = agent_metric(listen, "pushprobe_remote_write_samples_failed_total").await;
        if failed == Some(refused as f64) && refused > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent counts {failed:?} failed, receiver refused {refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    let series = receiver.series("probe_success{");
    assert_eq!(series.len(), 1, "{series:?}");
    let tally = series.into_values().next().unwrap();
    let accepted: BTreeSet<i64> = tally.accepted.iter().copied().collect();
    assert_eq!(
        accepted.len(),
        tally.accepted.len(),
        "each sample accepted once"
    );
    // Refused whole, then accepted in a part: answered all the same.
    let all: BTreeSet<i64> = accepted
        .union(&tally.refused.iter().copied().collect())
        .copied()
        .collect();
    let total = all.len() as u64;
    let hits = target.hits();
    assert!(
        total == hits || total + 1 == hits,
        "{total} answered, {hits} runs"
    );
}
