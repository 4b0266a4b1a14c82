//! Live reload end to end: the real binary pushing to a real Prometheus, its configuration
//! rewritten under it and reloaded with SIGHUP and with `POST /-/reload`. A probe added shows
//! up, a removed one's series end at once (staleness markers), a changed one runs with its new
//! settings; a broken configuration leaves collection running and sets
//! `pushprobe_config_last_reload_successful` to 0; and a reload while the receiver is down,
//! with the disk queue holding a backlog, loses and duplicates nothing.
//!
//! The remote-write endpoints themselves change too, against scripted receivers that keep
//! every sample: an endpoint whose URL changes delivers every sample once across its old and
//! new receiver, an endpoint added gets what is published from then on (not the backlog kept
//! for the others), a removed one with a backlog on disk drains what it can and releases the
//! rest while the others go on, and a broken `[[remote_write]]` table changes nothing.
//! Pushgateway groups move, come and go on a real Pushgateway.
//!
//! Every check counts samples or series; none measures time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::rw_receiver::RwReceiver;
use common::*;

/// An agent with its listener on `listen`, one receiver, and `probes` (name, URL) run every
/// second; `data_dir` adds a disk queue.
fn config(write_url: &str, listen: u16, data_dir: bool, probes: &[(&str, &str)]) -> String {
    let mut out = format!(
        "[agent]\nlisten = \"127.0.0.1:{listen}\"\nself_metrics_interval = \"1s\"\n\
         drain_timeout = \"60s\"\n{}\n\
         [[remote_write]]\nname = \"prom\"\nurl = {}\nbatch_send_deadline = \"500ms\"\n\
         max_backoff = \"1s\"\n",
        if data_dir {
            "data_dir = \"data\"\n"
        } else {
            ""
        },
        toml_string(write_url)
    );
    for (name, url) in probes {
        out += &format!(
            "\n[[probe]]\nname = \"{name}\"\nkind = \"http\"\nurl = {}\ninterval = \"1s\"\n\
             timeout = \"1s\"\n",
            toml_string(url)
        );
    }
    out
}

/// The value of the agent's self-metric `name` (unlabelled), from its `/metrics`.
async fn agent_metric(listen: u16, name: &str) -> Option<f64> {
    let text = http_get_text(
        &http_client(),
        &format!("http://127.0.0.1:{listen}/metrics"),
    )
    .await
    .ok()?;
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Polls the agent's self-metric `name` until `cond` holds on it.
async fn wait_metric(listen: u16, name: &str, cond: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        if let Some(v) = agent_metric(listen, name).await.filter(|v| cond(*v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} never satisfied the test");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Names of the probes whose `probe_success` Prometheus holds now (stale ones are gone).
fn probe_names(results: &[QueryResult]) -> Vec<String> {
    let mut names: Vec<String> = results
        .iter()
        .map(|r| r.labels.get("probe").cloned().unwrap_or_default())
        .collect();
    names.sort();
    names
}

async fn wait_probes(prom: &Prometheus, want: &[&str]) -> Vec<QueryResult> {
    prom.wait_for(
        "probe_success",
        |r| probe_names(r) == want,
        Duration::from_secs(120),
    )
    .await
}

/// Samples of `keep`'s `probe_success` stored so far.
async fn kept_samples(prom: &Prometheus) -> u64 {
    prom.query(r#"count_over_time(probe_success{probe="keep"}[30m])"#)
        .await
        .first()
        .map_or(0, |r| r.value as u64)
}

/// Waits until `keep` has more samples than `before`: collection went on.
async fn wait_collecting(prom: &Prometheus, before: u64) {
    prom.wait_for(
        r#"count_over_time(probe_success{probe="keep"}[30m])"#,
        |r| r.first().is_some_and(|s| s.value as u64 > before + 2),
        Duration::from_secs(120),
    )
    .await;
}

async fn post_reload(listen: u16) -> (u16, String) {
    let resp = http_client()
        .post(format!("http://127.0.0.1:{listen}/-/reload"))
        .send()
        .await
        .expect("POST /-/reload");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_apply_the_difference_and_a_broken_file_changes_nothing() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let listen = free_port();
    let ok = target.url("/ok");
    // Nothing listens there: a probe pointed at it fails.
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        listen,
        false,
        &[("keep", &ok), ("change", &ok), ("drop", &ok)],
    ));
    let mut agent = pp.spawn_run(&[]);
    wait_probes(&prom, &["change", "drop", "keep"]).await;
    assert_eq!(
        wait_metric(listen, "pushprobe_config_last_reload_successful", |_| true).await,
        1.0
    );
    let loaded_at = wait_metric(
        listen,
        "pushprobe_config_last_reload_success_timestamp_seconds",
        |v| v > 0.0,
    )
    .await;

    // SIGHUP: `drop` goes (its series end at once), `new` comes, `change` probes elsewhere.
    pp.rewrite_config(&config(
        &prom.write_url(),
        listen,
        false,
        &[("keep", &ok), ("change", &closed), ("new", &ok)],
    ));
    agent.signal("HUP");
    wait_probes(&prom, &["change", "keep", "new"]).await;
    prom.wait_for(
        r#"probe_success{probe="change"} == 0"#,
        |r| r.len() == 1,
        Duration::from_secs(120),
    )
    .await;
    wait_metric(
        listen,
        "pushprobe_config_last_reload_success_timestamp_seconds",
        |v| v > loaded_at,
    )
    .await;
    agent.assert_running();

    // A broken file: refused, counted, and collection goes on with the running configuration.
    pp.rewrite_config("[[probe]]\nname = \"half\"\nkind = \"http\"\nurl = \n");
    agent.signal("HUP");
    wait_metric(listen, "pushprobe_config_last_reload_successful", |v| {
        v == 0.0
    })
    .await;
    let before = kept_samples(&prom).await;
    wait_collecting(&prom, before).await;
    assert_eq!(
        probe_names(&prom.query("probe_success").await),
        ["change", "keep", "new"]
    );
    agent.assert_running();

    // POST /-/reload with an invalid value: 500 naming the key, nothing changes.
    let mut bad = config(&prom.write_url(), listen, false, &[("keep", &ok)]);
    bad = bad.replace("interval = \"1s\"", "interval = \"soon\"");
    pp.rewrite_config(&bad);
    let (status, body) = post_reload(listen).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("interval"), "{body}");
    assert_eq!(
        agent_metric(listen, "pushprobe_config_last_reload_successful").await,
        Some(0.0)
    );

    // Fixed: 200, the metric back at 1, and the difference applied.
    pp.rewrite_config(&config(
        &prom.write_url(),
        listen,
        false,
        &[("keep", &ok), ("again", &ok)],
    ));
    let (status, body) = post_reload(listen).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        agent_metric(listen, "pushprobe_config_last_reload_successful").await,
        Some(1.0)
    );
    wait_probes(&prom, &["again", "keep"]).await;
    let stopped = agent.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    assert!(
        stopped.stderr.contains("configuration reload refused"),
        "{}",
        stopped.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_receiver_outage_loses_and_duplicates_nothing() {
    let Some(mut prom) = Prometheus::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let other = TargetServer::start().await;
    let listen = free_port();
    let pp = Pushprobe::with_config(&config(
        &prom.write_url(),
        listen,
        true,
        &[("x", &target.url("/x"))],
    ));
    let agent = pp.spawn_run(&[]);
    prom.wait_for_any(r#"probe_success{probe="x"}"#).await;

    prom.kill();
    let hits_at_kill = target.hits();
    let deadline = Instant::now() + DATA_TIMEOUT;
    while target.hits() < hits_at_kill + 4 {
        assert!(Instant::now() < deadline, "probe x stopped running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_metric(
        listen,
        "pushprobe_remote_write_pending_samples{endpoint=\"prom\"}",
        |v| v > 0.0,
    )
    .await;

    // Reloaded with the backlog on disk: `x` keeps running, `y` joins.
    let loaded_at = wait_metric(
        listen,
        "pushprobe_config_last_reload_success_timestamp_seconds",
        |v| v > 0.0,
    )
    .await;
    pp.rewrite_config(&config(
        &prom.write_url(),
        listen,
        true,
        &[("x", &target.url("/x")), ("y", &other.url("/y"))],
    ));
    agent.signal("HUP");
    wait_metric(
        listen,
        "pushprobe_config_last_reload_success_timestamp_seconds",
        |v| v > loaded_at,
    )
    .await;
    let deadline = Instant::now() + DATA_TIMEOUT;
    while other.hits() < 2 {
        assert!(Instant::now() < deadline, "probe y never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    prom.restart().await;

    let hits_at_restart = target.hits();
    prom.wait_for(
        r#"count_over_time(probe_success{probe="x"}[30m])"#,
        |r| {
            r.first()
                .is_some_and(|s| s.value as u64 + 1 >= hits_at_restart)
        },
        Duration::from_secs(120),
    )
    .await;
    prom.wait_for_any(r#"probe_success{probe="y"}"#).await;
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    // Every run of `x` the agent published arrived once: before, during and after the reload.
    let runs = prom
        .query(r#"sum(last_over_time(pushprobe_probe_runs_total{probe="x"}[30m]))"#)
        .await
        .first()
        .map_or(0, |r| r.value as u64);
    let stored = prom
        .query(r#"count_over_time(probe_success{probe="x"}[30m])"#)
        .await
        .first()
        .map_or(0, |r| r.value as u64);
    let hits = target.hits();
    assert!(runs >= hits_at_kill + 4, "runs {runs}");
    assert!(hits == runs || hits == runs + 1, "hits {hits}, runs {runs}");
    assert_eq!(stored, runs, "one sample per run, none lost, none doubled");
}

/// What the endpoint reload tests start from: a target for probe `x`, and a port for the
/// agent's listener.
struct Fixture {
    target: TargetServer,
    listen: u16,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture {
            target: TargetServer::start().await,
            listen: free_port(),
        }
    }

    /// An agent with its listener, the endpoint `tables`, and probe `x` of the target run every
    /// second; `data_dir` adds a disk queue.
    fn config(&self, drain_timeout: &str, data_dir: bool, tables: &str) -> String {
        let listen = self.listen;
        let data_dir = if data_dir {
            "data_dir = \"data\"\n"
        } else {
            ""
        };
        format!(
            "[agent]\nlisten = \"127.0.0.1:{listen}\"\nself_metrics_interval = \"1s\"\n\
             drain_timeout = \"{drain_timeout}\"\n{data_dir}\n{tables}{}",
            probe_x(&self.target.url("/x"))
        )
    }

    /// Checks that every run of probe `x` was stored once (`stored` of them): a run in
    /// flight at the stop is abandoned unpublished.
    fn assert_every_run_stored(&self, stored: u64) {
        let hits = self.target.hits();
        assert!(
            hits == stored || hits == stored + 1,
            "hits {hits}, stored {stored}"
        );
    }
}

/// The `[[remote_write]]` tables of `endpoints` (name, URL).
fn rw_tables(endpoints: &[(&str, &str)]) -> String {
    endpoints
        .iter()
        .map(|(name, url)| {
            format!(
                "[[remote_write]]\nname = \"{name}\"\nurl = {}\nbatch_send_deadline = \"500ms\"\n\
                 max_backoff = \"1s\"\n\n",
                toml_string(url)
            )
        })
        .collect()
}

/// The `[[probe]]` table of probe `x` of `url`, run every second.
fn probe_x(url: &str) -> String {
    format!(
        "[[probe]]\nname = \"x\"\nkind = \"http\"\nurl = {}\ninterval = \"1s\"\n\
         timeout = \"1s\"\n",
        toml_string(url)
    )
}

/// Timestamps of the runs of probe `x` a receiver accepted, in arrival order.
fn runs_of(receiver: &RwReceiver) -> Vec<i64> {
    receiver
        .accepted_samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("probe_success") && s.label("probe") == Some("x"))
        .map(|s| s.timestamp_ms)
        .collect()
}

/// Waits until a receiver accepted at least `n` runs of `x`.
async fn wait_runs(receiver: &RwReceiver, n: usize) {
    let deadline = Instant::now() + DATA_TIMEOUT;
    while runs_of(receiver).len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} runs of x arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks for a reload with SIGHUP and waits until it applied.
async fn reload_applied(agent: &RunningAgent, listen: u16) {
    let name = "pushprobe_config_last_reload_success_timestamp_seconds";
    let loaded_at = wait_metric(listen, name, |v| v > 0.0).await;
    agent.signal("HUP");
    wait_metric(listen, name, |v| v > loaded_at).await;
}

/// Asserts that `runs` holds no timestamp twice, and returns them as a set.
fn once_each(runs: &[i64], receiver: &str) -> BTreeSet<i64> {
    let set: BTreeSet<i64> = runs.iter().copied().collect();
    assert_eq!(
        set.len(),
        runs.len(),
        "{receiver} got a run twice: {runs:?}"
    );
    set
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_endpoint_url_delivers_every_sample_once_across_old_and_new_receiver() {
    changed_url(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_endpoint_url_hands_its_disk_queue_position_over() {
    changed_url(true).await;
}

/// Moves the endpoint to another receiver mid-stream, with a memory or a disk queue, then
/// tries a broken `[[remote_write]]` table; counts every run on both receivers.
async fn changed_url(data_dir: bool) {
    let old = RwReceiver::start(|_, _| 204).await;
    let new = RwReceiver::start(|_, _| 204).await;
    let fx = Fixture::start().await;
    let listen = fx.listen;
    let pp = Pushprobe::with_config(&fx.config(
        "60s",
        data_dir,
        &rw_tables(&[("rw", &old.write_url())]),
    ));
    let mut agent = pp.spawn_run(&[]);
    wait_runs(&old, 3).await;

    let moved = fx.config("60s", data_dir, &rw_tables(&[("rw", &new.write_url())]));
    pp.rewrite_config(&moved);
    reload_applied(&agent, listen).await;
    // The old sender is done once the reload applied: nothing more reaches the old URL.
    let at_old = runs_of(&old).len();
    wait_runs(&new, 3).await;

    // A broken `[[remote_write]]` table: refused, naming it, and the endpoint goes on as it was.
    pp.rewrite_config(&moved.replace(&toml_string(&new.write_url()), "\"not a url\""));
    let (status, body) = post_reload(listen).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("remote_write"), "{body}");
    let at_new = runs_of(&new).len();
    wait_runs(&new, at_new + 3).await;
    agent.assert_running();

    let stopped = agent.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    let (old_runs, new_runs) = (runs_of(&old), runs_of(&new));
    assert_eq!(
        old_runs.len(),
        at_old,
        "the old URL got samples after the reload"
    );
    let before = once_each(&old_runs, "the old receiver");
    let after = once_each(&new_runs, "the new receiver");
    assert!(
        before.is_disjoint(&after),
        "{before:?} and {after:?} share runs"
    );
    // Every run published arrived, and only on one side.
    fx.assert_every_run_stored((before.len() + after.len()) as u64);
    // And in order: everything the old receiver got came before what the new one got.
    assert!(before.last() < after.first(), "{before:?} / {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_endpoint_gets_what_is_published_from_then_on_not_the_backlog() {
    let first = RwReceiver::start(|_, _| 204).await;
    let second = RwReceiver::start(|_, _| 204).await;
    let fx = Fixture::start().await;
    let listen = fx.listen;
    let (a, b) = (first.write_url(), second.write_url());
    let pp = Pushprobe::with_config(&fx.config("60s", true, &rw_tables(&[("a", &a)])));
    let mut agent = pp.spawn_run(&[]);
    wait_runs(&first, 3).await;

    pp.rewrite_config(&fx.config("60s", true, &rw_tables(&[("a", &a), ("b", &b)])));
    reload_applied(&agent, listen).await;
    wait_runs(&second, 3).await;
    agent.assert_running();
    agent
        .terminate(Duration::from_secs(90))
        .await
        .assert_code(0);

    let all = once_each(&runs_of(&first), "a");
    let late = once_each(&runs_of(&second), "b");
    let from = *late.first().expect("b got runs");
    assert!(
        all.first() < Some(&from),
        "b was sent the runs queued before it came"
    );
    let tail: BTreeSet<i64> = all.range(from..).copied().collect();
    assert_eq!(late, tail, "b gets every run from its first on, as a does");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_with_a_disk_backlog_releases_it_and_the_others_go_on() {
    let kept = RwReceiver::start(|_, _| 204).await;
    // Down for good: its backlog only grows.
    let gone = RwReceiver::start(|_, _| 503).await;
    let fx = Fixture::start().await;
    let listen = fx.listen;
    let pp = Pushprobe::with_config(&fx.config(
        "3s",
        true,
        &rw_tables(&[("kept", &kept.write_url()), ("gone", &gone.write_url())]),
    ));
    let mut agent = pp.spawn_run(&[]);
    wait_runs(&kept, 3).await;
    let pending_gone = "pushprobe_remote_write_pending_samples{endpoint=\"gone\"}";
    wait_metric(listen, pending_gone, |v| v >= 3.0).await;
    let position = pp
        .dir()
        .join("data/queue")
        .join(pushprobe::queue::disk::ackfile::ack_file_name("gone"));
    assert!(position.exists(), "{}", position.display());

    pp.rewrite_config(&fx.config("3s", true, &rw_tables(&[("kept", &kept.write_url())])));
    reload_applied(&agent, listen).await;
    // Its drain deadline passes with the receiver still down: the backlog is dropped, counted.
    let dropped = wait_metric(
        listen,
        "pushprobe_remote_write_removed_endpoint_samples_dropped_total",
        |v| v > 0.0,
    )
    .await;
    assert!(dropped >= 3.0, "{dropped}");
    assert_eq!(
        agent_metric(listen, pending_gone).await,
        None,
        "its series end"
    );
    assert!(!position.exists(), "its position on disk is gone");
    let at = runs_of(&kept).len();
    wait_runs(&kept, at + 3).await;
    agent.assert_running();

    let stopped = agent.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    assert!(
        stopped
            .stderr
            .contains("remote_write endpoint removed by a reload"),
        "{}",
        stopped.stderr
    );
    assert!(runs_of(&gone).is_empty());
    fx.assert_every_run_stored(once_each(&runs_of(&kept), "kept").len() as u64);
}

/// The `[[pushgateway]]` tables of `groups` (name, job) at `gateway`, each deleted at exit.
fn gateway_tables(gateway: &str, groups: &[(&str, &str)]) -> String {
    groups
        .iter()
        .map(|(name, job)| {
            format!(
                "[[pushgateway]]\nname = \"{name}\"\nurl = {}\njob = \"{job}\"\n\
                 delete_on_exit = true\n\n",
                toml_string(gateway)
            )
        })
        .collect()
}

/// The jobs of the groups holding `probe_success` of probe `x` on the Pushgateway.
async fn jobs_with_x(gw: &Pushgateway) -> Vec<String> {
    let mut jobs: Vec<String> = gw
        .metric("probe_success")
        .await
        .into_iter()
        .filter(|m| m.labels.get("probe").map(String::as_str) == Some("x"))
        .filter_map(|m| m.group.get("job").cloned())
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

/// Waits until the groups holding probe `x` are those of `want`.
async fn wait_jobs(gw: &Pushgateway, want: &[&str]) {
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let jobs = jobs_with_x(gw).await;
        if jobs == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "groups {jobs:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushgateway_groups_move_come_and_go_with_a_reload() {
    let Some(gw) = Pushgateway::start().await else {
        return;
    };
    let fx = Fixture::start().await;
    let listen = fx.listen;
    let url = gw.base_url();
    let config = |groups: &[(&str, &str)]| fx.config("30s", false, &gateway_tables(&url, groups));
    let pp = Pushprobe::with_config(&config(&[("pg", "first")]));
    let mut agent = pp.spawn_run(&[]);
    wait_jobs(&gw, &["first"]).await;

    // Another job is another group: the old one is left as at exit (deleted), the new one
    // gets the latest results; a second group is added beside it.
    pp.rewrite_config(&config(&[("pg", "second"), ("more", "third")]));
    reload_applied(&agent, listen).await;
    wait_jobs(&gw, &["second", "third"]).await;

    // Removed: deleted as at exit, its own series end; the other one goes on.
    let requests = "pushprobe_pushgateway_last_success_timestamp_seconds{gateway=\"more\"}";
    assert!(agent_metric(listen, requests).await.is_some());
    pp.rewrite_config(&config(&[("pg", "second")]));
    reload_applied(&agent, listen).await;
    wait_jobs(&gw, &["second"]).await;
    let deadline = Instant::now() + DATA_TIMEOUT;
    while agent_metric(listen, requests).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the removed group's series linger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.assert_running();
    let stopped = agent.terminate(Duration::from_secs(90)).await;
    stopped.assert_code(0);
    assert!(
        stopped
            .stderr
            .contains("Pushgateway group removed by a reload"),
        "{}",
        stopped.stderr
    );
    wait_jobs(&gw, &[]).await;
}
