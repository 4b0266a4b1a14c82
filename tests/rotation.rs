//! Credentials that rotate while the agent runs: each file-based credential is replaced
//! mid-run, the receiver refuses the old one from then on, and every probe result still
//! arrives, once; a file removed mid-run keeps its last good value.
//!
//! Bearer tokens are checked by the scripted receiver; basic-auth passwords by a real
//! Prometheus whose `--web.config.file` (re-read on every request) holds bcrypt hashes made
//! with `htpasswd`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::rw_receiver::RwReceiver;
use common::target::TargetServer;
use common::*;

const DEADLINE: Duration = Duration::from_secs(60);

/// Replaces `path`'s contents the way secret managers do: write aside, then rename over it.
fn rotate(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("write the new secret");
    std::fs::rename(&tmp, path).expect("rename the new secret into place");
}

/// Polls `cond` until it holds, panicking with `what` after [`DEADLINE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config pushing one HTTP probe of `target` every 500 ms (400 ms timeout) to `write_url`, with
/// `auth_toml` (keys of the `[[remote_write]]` block) added.
fn config(write_url: &str, target: &str, auth_toml: &str) -> String {
    basic_config(write_url, &[("local", target)], "500ms")
        .replace("timeout = \"1s\"", "timeout = \"400ms\"")
        .replace(
        "batch_send_deadline = \"1s\"\n",
        &format!("batch_send_deadline = \"1s\"\nmin_backoff = \"50ms\"\nmax_backoff = \"500ms\"\n{auth_toml}\n"),
    )
}

/// Asserts each probe run's result arrived exactly once: as many distinct, increasing
/// timestamps as the target saw requests (the last run may have been cut by the stop).
fn assert_nothing_lost(stamps: &[i64], hits: u64, what: &str) {
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "{what}: duplicates or disorder: {stamps:?}"
    );
    let n = stamps.len() as u64;
    assert!(
        n == hits || n + 1 == hits,
        "{what}: {n} results stored for {hits} probe runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_bearer_token_file_is_used_without_a_restart_and_nothing_is_lost() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    receiver.require_authorization("Bearer token-one");
    let target = TargetServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "token-one\n").unwrap();
    let agent = Pushprobe::with_config(&config(
        &receiver.write_url(),
        &target.url("/"),
        &format!(
            "bearer_token_file = {}",
            toml_string(&token.to_string_lossy())
        ),
    ));
    let mut running = agent.spawn_run(&[]);
    let accepted = || {
        receiver
            .series("probe_success{")
            .values()
            .map(|t| t.accepted.len())
            .sum::<usize>()
    };
    wait_until("results with the first token", || accepted() >= 3).await;

    // The receiver switches first: the old token is refused from now on, and the agent keeps
    // its samples queued until its file catches up.
    receiver.require_authorization("Bearer token-two");
    wait_until("the old token refused", || receiver.unauthorized() >= 1).await;
    rotate(&token, "token-two\n");
    let before = accepted();
    wait_until("results with the second token", || accepted() >= before + 3).await;

    // The file disappears: the last good token stays in use.
    std::fs::remove_file(&token).unwrap();
    let before = accepted();
    wait_until("results after the file was removed", || {
        accepted() >= before + 3
    })
    .await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    let series = receiver.series("probe_success{");
    assert_eq!(series.len(), 1, "{series:?}");
    let tally = series.values().next().unwrap();
    assert!(tally.refused.is_empty(), "refused: {:?}", tally.refused);
    assert_nothing_lost(&tally.accepted, target.hits(), "bearer rotation");
    // The removal was noticed and logged by key and path, never with the token.
    assert!(
        stopped.stderr.contains("bearer_token_file"),
        "{}",
        stopped.stderr
    );
    for secret in ["token-one", "token-two"] {
        assert!(!stopped.stderr.contains(secret), "{secret} in the logs");
        assert!(!stopped.stdout.contains(secret), "{secret} in the output");
    }
}

/// `htpasswd`'s bcrypt hash of `password` (cost 5: fast, and Prometheus accepts any cost).
fn bcrypt(htpasswd: &Path, password: &str) -> String {
    let out = std::process::Command::new(htpasswd)
        .args(["-nbBC", "5", "user", password])
        .output()
        .expect("run htpasswd");
    assert!(out.status.success(), "htpasswd failed: {out:?}");
    let line = String::from_utf8(out.stdout).expect("htpasswd prints text");
    line.trim()
        .split_once(':')
        .map(|(_, hash)| hash.to_string())
        .expect("htpasswd prints user:hash")
}

/// Prometheus' web configuration requiring basic auth: the agent's user, and a reader for
/// the test's queries.
fn web_config(agent_hash: &str, reader_hash: &str) -> String {
    format!("basic_auth_users:\n  agent: '{agent_hash}'\n  reader: '{reader_hash}'\n")
}

/// Queries a Prometheus that requires basic auth, as the `reader` user.
struct Authed(String);

impl QueryApi for Authed {
    fn base_url(&self) -> String {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_used_against_prometheus_and_nothing_is_lost() {
    let Some(htpasswd) = require_binary("htpasswd") else {
        return;
    };
    let web_dir = tempfile::tempdir().unwrap();
    let web = web_dir.path().join("web.yml");
    // No users yet, so that start-up's readiness check needs no credentials; Prometheus
    // re-reads this file on every request.
    std::fs::write(&web, "{}\n").unwrap();
    let web_flag = format!("--web.config.file={}", web.display());
    let Some(prom) = Prometheus::start_with(
        PROMETHEUS_MINIMAL_CONFIG,
        &["--web.enable-remote-write-receiver", &web_flag],
    )
    .await
    else {
        return;
    };
    let reader = bcrypt(&htpasswd, "reader-pass");
    let (old_hash, new_hash) = (bcrypt(&htpasswd, "pass-one"), bcrypt(&htpasswd, "pass-two"));
    std::fs::write(&web, web_config(&old_hash, &reader)).unwrap();
    let authed = Authed(format!(
        "http://reader:reader-pass@127.0.0.1:{}",
        prom.port()
    ));
    let write_url = format!("http://127.0.0.1:{}/api/v1/write", prom.port());
    // The receiver refuses requests without credentials now.
    let anonymous = http_client().post(&write_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let target = TargetServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, "pass-one\n").unwrap();
    let agent = Pushprobe::with_config(&config(
        &write_url,
        &target.url("/"),
        &format!(
            "basic_auth = {{ username = \"agent\", password_file = {} }}",
            toml_string(&password.to_string_lossy())
        ),
    ));
    let mut running = agent.spawn_run(&[]);
    let count = r#"count_over_time(probe_success{probe="local"}[10m])"#;
    authed
        .wait_for(count, |r| r.len() == 1 && r[0].value >= 3.0, DEADLINE)
        .await;

    // Prometheus switches to the new password (the old one is refused from now on), then
    // the agent's file follows.
    std::fs::write(&web, web_config(&new_hash, &reader)).unwrap();
    let old = http_client()
        .post(&write_url)
        .basic_auth("agent", Some("pass-one"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the old password is refused");
    tokio::time::sleep(Duration::from_millis(700)).await;
    rotate(&password, "pass-two\n");
    let before = authed.query(count).await[0].value;
    authed
        .wait_for(
            count,
            |r| r.len() == 1 && r[0].value >= before + 3.0,
            DEADLINE,
        )
        .await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    let raw = authed
        .raw_samples(r#"probe_success{probe="local"}"#, "10m")
        .await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    let stamps: Vec<i64> = raw[0].samples.iter().map(|s| s.0).collect();
    assert_nothing_lost(&stamps, target.hits(), "password rotation");
    let dropped = authed
        .query("sum(pushprobe_remote_write_samples_dropped_total)")
        .await;
    assert!(dropped.iter().all(|r| r.value == 0.0), "{dropped:?}");
    for secret in ["pass-one", "pass-two"] {
        assert!(!stopped.stderr.contains(secret), "{secret} in the logs");
    }
}
