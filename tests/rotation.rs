//! Credentials that rotate while the agent runs: each file-based credential is replaced
//! mid-run, the receiver refuses the old one from then on, and every probe result still
//! arrives, once; a file removed mid-run keeps its last good value.
//!
//! Bearer tokens are checked by the scripted receiver; basic-auth passwords by a real
//! Prometheus whose `--web.config.file` (re-read on every request) holds bcrypt hashes made
//! with `htpasswd`; TLS files by a Prometheus serving mutual TLS (certificates from rcgen),
//! probed over a new connection each run; OAuth2 client secrets by a scripted token endpoint
//! that grants tokens for the current secret only, and a receiver gated on those tokens.
//! (SigV4 secret keys rotate in `tests/sigv4.rs`, against its botocore receiver.)

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

/// A CA, or a certificate it issued, with its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

/// A new CA named `name`; returns its PEM and the issuer to sign with.
fn new_ca(name: &str) -> (Issued, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    (pem, rcgen::Issuer::new(params, key))
}

/// A leaf certificate for `127.0.0.1`, issued by `ca`.
fn issue(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str) -> Issued {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// `probe_success` values the receiver accepted so far, in time order.
fn successes(receiver: &RwReceiver) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = receiver
        .accepted_samples()
        .into_iter()
        .filter(|s| {
            s.labels
                .iter()
                .any(|(n, v)| n == "__name__" && v == "probe_success")
        })
        .map(|s| (s.timestamp_ms, s.value))
        .collect();
    out.sort_by_key(|s| s.0);
    out
}

/// Waits until `n` more `probe_success` results with `value` have arrived after the first
/// `after` results.
async fn wait_for_results(
    receiver: &RwReceiver,
    after: usize,
    value: f64,
    n: usize,
    what: &str,
) -> usize {
    wait_until(what, || {
        successes(receiver)
            .iter()
            .skip(after)
            .filter(|s| s.1 == value)
            .count()
            >= n
    })
    .await;
    successes(receiver).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_tls_files_are_used_for_new_connections_against_prometheus_mutual_tls() {
    let Some(prometheus) = require_binary("prometheus") else {
        return;
    };
    // Prometheus serving TLS that requires a client certificate from `client-ca.pem`; it
    // reads its web configuration and the files it names again for every new connection.
    let server_dir = tempfile::tempdir().unwrap();
    let sp = |name: &str| server_dir.path().join(name);
    let (server_ca_1, server_issuer_1) = new_ca("server CA one");
    let (client_ca_1, client_issuer_1) = new_ca("client CA one");
    let server_1 = issue(&server_issuer_1, "prometheus one");
    std::fs::write(sp("server.pem"), &server_1.cert).unwrap();
    std::fs::write(sp("server-key.pem"), &server_1.key).unwrap();
    std::fs::write(sp("client-ca.pem"), &client_ca_1.cert).unwrap();
    std::fs::write(
        sp("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            sp("server.pem").display(),
            sp("server-key.pem").display(),
            sp("client-ca.pem").display()
        ),
    )
    .unwrap();
    std::fs::write(sp("prometheus.yml"), PROMETHEUS_MINIMAL_CONFIG).unwrap();
    let port = free_port();
    let mut cmd = std::process::Command::new(prometheus);
    cmd.arg(format!("--config.file={}", sp("prometheus.yml").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--web.config.file={}", sp("web.yml").display()))
        .arg(format!("--storage.tsdb.path={}", sp("data").display()));
    let _prom = ChildGuard::spawn("prometheus-tls", cmd, server_dir.path()).unwrap();

    // The agent's files: trust in server CA one, client certificate from client CA one.
    let agent_dir = tempfile::tempdir().unwrap();
    let ap = |name: &str| agent_dir.path().join(name);
    let client_1 = issue(&client_issuer_1, "agent one");
    std::fs::write(ap("ca.pem"), &server_ca_1.cert).unwrap();
    std::fs::write(ap("cert.pem"), &client_1.cert).unwrap();
    std::fs::write(ap("key.pem"), &client_1.key).unwrap();
    let receiver = RwReceiver::start(|_, _| 204).await;
    let url = format!("https://127.0.0.1:{port}/-/healthy");
    let toml = basic_config(&receiver.write_url(), &[("mtls", &url)], "500ms")
        .replace("timeout = \"1s\"", "timeout = \"400ms\"")
        + &format!(
            "[probe.tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
            toml_string(&ap("ca.pem").to_string_lossy()),
            toml_string(&ap("cert.pem").to_string_lossy()),
            toml_string(&ap("key.pem").to_string_lossy()),
        );
    let agent = Pushprobe::with_config(&toml);
    let mut running = agent.spawn_run(&[]);
    let seen = wait_for_results(&receiver, 0, 1.0, 2, "mutual TLS with the first files").await;

    // Prometheus now trusts only client CA two: the old client certificate is refused.
    running.assert_running();
    let (client_ca_2, client_issuer_2) = new_ca("client CA two");
    rotate(&sp("client-ca.pem"), &client_ca_2.cert);
    let seen = wait_for_results(
        &receiver,
        seen,
        0.0,
        1,
        "the old client certificate refused",
    )
    .await;
    // The agent's certificate and key are renewed (key first, as a careless writer might).
    let client_2 = issue(&client_issuer_2, "agent two");
    rotate(&ap("key.pem"), &client_2.key);
    rotate(&ap("cert.pem"), &client_2.cert);
    let seen = wait_for_results(&receiver, seen, 1.0, 2, "the new client certificate used").await;

    // The server moves to a certificate from a new CA; the agent's ca_file follows.
    let (server_ca_2, server_issuer_2) = new_ca("server CA two");
    let server_2 = issue(&server_issuer_2, "prometheus two");
    rotate(&sp("server-key.pem"), &server_2.key);
    rotate(&sp("server.pem"), &server_2.cert);
    let seen = wait_for_results(&receiver, seen, 0.0, 1, "the old trust refused").await;
    rotate(&ap("ca.pem"), &server_ca_2.cert);
    let seen = wait_for_results(&receiver, seen, 1.0, 2, "the new ca_file used").await;

    // The client files disappear: the last good pair and roots stay in use.
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::remove_file(ap(f)).unwrap();
    }
    wait_for_results(&receiver, seen, 1.0, 2, "the last good files kept").await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);
    assert!(stopped.stderr.contains("cert_file"), "{}", stopped.stderr);
    assert!(!stopped.stderr.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn an_http_probe_sends_the_current_bearer_token_file_each_run() {
    use pushprobe::auth::{Auth, SecretFile, SecretSource};
    use pushprobe::config::{HttpProbeSettings, TlsConfig, DEFAULT_BUCKETS};
    use pushprobe::probe::http::HttpProbe;
    use pushprobe::series::Registry;

    let target = TargetServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "probe-one\n").unwrap();
    let file = SecretFile::open("probe[0].bearer_token_file", &token).unwrap();
    let mut probe = HttpProbe::new(HttpProbeSettings {
        name: "web".into(),
        url: target.url("/").parse().unwrap(),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        method: http::Method::GET,
        headers: vec![("authorization".into(), "Bearer hand-written".into())],
        body: None,
        valid_status_codes: vec![],
        follow_redirects: true,
        auth: Some(Auth::Bearer(SecretSource::File(file))),
        tls: TlsConfig::default(),
        proxy: Default::default(),
        buckets: std::sync::Arc::from(DEFAULT_BUCKETS),
        labels: vec![],
        checks: Default::default(),
    })
    .unwrap();
    let mut sent = Vec::new();
    for next in [Some("probe-two\n"), None, Some("probe-three")] {
        let report = probe.run(&mut Registry::new()).await;
        assert!(report.success, "{report:?}");
        sent.push(target.last_header("authorization").unwrap());
        match next {
            Some(text) => rotate(&token, text),
            None => std::fs::remove_file(&token).unwrap(),
        }
    }
    probe.run(&mut Registry::new()).await;
    sent.push(target.last_header("authorization").unwrap());
    assert_eq!(
        sent,
        [
            "Bearer probe-one",
            "Bearer probe-two",
            // Removed: the last good token stays.
            "Bearer probe-two",
            "Bearer probe-three"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_and_pushgateway_pushes_send_the_current_token_file() {
    let receiver = RwReceiver::start(|_, _| 204).await;
    let probed = TargetServer::start().await;
    let exporter = TargetServer::start_with(common::target::Reply {
        body: "up_metric 1\n".into(),
        ..Default::default()
    })
    .await;
    // Stands in for a Pushgateway: accepts every push and keeps its headers.
    let gateway = TargetServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "sink-one\n").unwrap();
    let file = toml_string(&token.to_string_lossy());
    let toml = basic_config(
        &receiver.write_url(),
        &[("local", &probed.url("/"))],
        "500ms",
    )
    .replace("timeout = \"1s\"", "timeout = \"400ms\"")
        + &format!(
            "\n[[pushgateway]]\nurl = {}\njob = \"edge\"\nbearer_token_file = {file}\n\
             \n[[scrape]]\njob = \"exp\"\ntargets = [{}]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             bearer_token_file = {file}\n",
            toml_string(&gateway.url("")),
            toml_string(&exporter.addr().to_string()),
        );
    let agent = Pushprobe::with_config(&toml);
    let mut running = agent.spawn_run(&[]);
    let sent = |t: &TargetServer| t.last_header("authorization").unwrap_or_default();
    wait_until("first token on both", || {
        sent(&gateway) == "Bearer sink-one" && sent(&exporter) == "Bearer sink-one"
    })
    .await;
    rotate(&token, "sink-two\n");
    wait_until("second token on both", || {
        sent(&gateway) == "Bearer sink-two" && sent(&exporter) == "Bearer sink-two"
    })
    .await;
    running.assert_running();
    running
        .terminate(Duration::from_secs(30))
        .await
        .assert_code(0);
}

/// An OAuth2 token endpoint that grants tokens only for the current client secret, and
/// remembers the tokens it granted (a receiver gated on them refuses any other).
#[derive(Default)]
struct TokenEndpoint {
    /// The client secret accepted now.
    secret: String,
    /// Tokens granted and not revoked.
    issued: std::collections::HashSet<String>,
    /// Token requests refused for a wrong client secret.
    refused: usize,
    /// The client secret of each token granted, in order.
    granted_for: Vec<String>,
}

type Shared = std::sync::Arc<std::sync::Mutex<TokenEndpoint>>;

/// The client secret of a token request: from its basic credentials or its form body.
fn client_secret_of(headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    use base64::Engine as _;
    if let Some(basic) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let pair = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .ok()?;
        let pair = String::from_utf8(pair).ok()?;
        return pair.split_once(':').map(|(_, secret)| secret.to_string());
    }
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix("client_secret="))
        .map(str::to_string)
}

/// Serves the token endpoint of `state` on 127.0.0.1; returns its token URL.
async fn serve_token_endpoint(state: Shared) -> String {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let offered = client_secret_of(&parts.headers, &body);
                            let mut st = state.lock().unwrap();
                            let (status, answer) = if offered.as_deref() == Some(&st.secret) {
                                let token = format!("token-{}", st.granted_for.len());
                                let secret = st.secret.clone();
                                st.granted_for.push(secret);
                                st.issued.insert(token.clone());
                                let json = format!(
                                    r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#
                                );
                                (200, json)
                            } else {
                                st.refused += 1;
                                (401, r#"{"error":"invalid_client"}"#.to_string())
                            };
                            drop(st);
                            let response = hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(answer)))
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/oauth2/token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_secret_file_is_used_without_a_restart_and_nothing_is_lost() {
    const OLD: &str = "client-secret-one-4b1d";
    const NEW: &str = "client-secret-two-9e0c";
    let endpoint: Shared = Default::default();
    endpoint.lock().unwrap().secret = OLD.to_string();
    let token_url = serve_token_endpoint(endpoint.clone()).await;
    // The receiver accepts only tokens the endpoint granted and has not revoked.
    let gate = endpoint.clone();
    let receiver = RwReceiver::start_gated(
        move |h| {
            h.get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| gate.lock().unwrap().issued.contains(t))
        },
        |_, _| 204,
    )
    .await;
    let target = TargetServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("client-secret");
    std::fs::write(&secret, format!("{OLD}\n")).unwrap();
    let agent = Pushprobe::with_config(&config(
        &receiver.write_url(),
        &target.url("/"),
        &format!(
            "oauth2 = {{ client_id = \"agent\", client_secret_file = {}, token_url = {} }}",
            toml_string(&secret.to_string_lossy()),
            toml_string(&token_url),
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
    wait_until("results with a token for the first secret", || {
        accepted() >= 3
    })
    .await;

    // The endpoint switches to the new secret and revokes the tokens granted for the old
    // one: the receiver refuses the cached token, the agent asks for another with the old
    // secret and is refused, and keeps its samples queued until its file catches up.
    {
        let mut st = endpoint.lock().unwrap();
        st.secret = NEW.to_string();
        st.issued.clear();
    }
    wait_until("the old token refused", || receiver.unauthorized() >= 1).await;
    wait_until("the old secret refused", || {
        endpoint.lock().unwrap().refused >= 1
    })
    .await;
    rotate(&secret, &format!("{NEW}\n"));
    let before = accepted();
    wait_until("results with a token for the second secret", || {
        accepted() >= before + 3
    })
    .await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    let granted = endpoint.lock().unwrap().granted_for.clone();
    assert_eq!(
        granted.first().map(String::as_str),
        Some(OLD),
        "{granted:?}"
    );
    assert_eq!(granted.last().map(String::as_str), Some(NEW), "{granted:?}");
    let series = receiver.series("probe_success{");
    assert_eq!(series.len(), 1, "{series:?}");
    let tally = series.values().next().unwrap();
    assert!(tally.refused.is_empty(), "refused: {:?}", tally.refused);
    assert_nothing_lost(&tally.accepted, target.hits(), "client secret rotation");
    for secret in [OLD, NEW] {
        assert!(!stopped.stderr.contains(secret), "{secret} in the logs");
        assert!(!stopped.stdout.contains(secret), "{secret} in the output");
    }
}
