//! OAuth 2.0 client credentials against a third-party token server (`oauth2-mock-server`,
//! whose tokens are verified against the keys it publishes), and against scripted endpoints
//! that misbehave in ways that server cannot be made to: HTML, no `expires_in`, a token that
//! expires at once, 5xx, a hang, an oversized or garbage body.

mod common;

use std::time::Duration;

use common::oauth2::{verify_jwt, OAuth2MockServer};
use common::{Reply, TargetServer};
use pushprobe::auth::oauth2::{TokenError, TokenSource, MIN_REFRESH_INTERVAL};
use pushprobe::config::{OAuth2Settings, TlsConfig};
use pushprobe::secret::Secret;

const CLIENT_SECRET: &str = "cs-never-shown-7f3a";

fn settings(token_url: &str) -> OAuth2Settings {
    OAuth2Settings {
        key: "remote_write[0].oauth2".into(),
        client_id: "pushprobe-edge".into(),
        client_secret: Secret::new(CLIENT_SECRET).into(),
        token_url: token_url.parse().expect("token URL"),
        scopes: vec!["metrics:write".into()],
        endpoint_params: vec![],
        tls: TlsConfig::default(),
        proxy: Default::default(),
        timeout: Duration::from_secs(2),
    }
}

/// The token of an `Authorization: Bearer …` value.
fn bearer(h: &http::HeaderValue) -> String {
    h.to_str()
        .expect("ASCII")
        .strip_prefix("Bearer ")
        .expect("a bearer value")
        .to_string()
}

#[tokio::test]
async fn tokens_from_a_real_server_are_cached_and_verify_against_its_keys() {
    let Some(server) = OAuth2MockServer::start().await else {
        return;
    };
    let source = TokenSource::new(settings(&server.token_url())).unwrap();
    let first = source.authorization().await.unwrap();
    assert!(first.is_sensitive());
    let claims = verify_jwt(&bearer(&first), &server.keys().await).expect("a token it signed");
    assert_eq!(claims["scope"], "metrics:write");
    // Cached: the same token again, and it is listed for scrubbing from logs.
    assert_eq!(source.authorization().await.unwrap(), first);
    assert!(source
        .secrets()
        .iter()
        .any(|s| s.expose() == bearer(&first)));
    // After a receiver's 401 a new one is fetched, and it verifies too.
    source.invalidate();
    let again = source.authorization().await.unwrap();
    verify_jwt(&bearer(&again), &server.keys().await).expect("a token it signed");
}

#[tokio::test]
async fn an_outage_of_the_real_server_is_temporary_and_ends_with_a_new_token() {
    let Some(mut server) = OAuth2MockServer::start().await else {
        return;
    };
    let source = TokenSource::new(settings(&server.token_url())).unwrap();
    let old = bearer(&source.authorization().await.unwrap());
    server.kill();
    source.invalidate();
    let e = source.authorization().await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e}");
    assert!(!e.is_config());
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "remote_write[0].oauth2: the token endpoint {} is unavailable",
            server.token_url()
        )),
        "{text}"
    );
    assert!(!text.contains(CLIENT_SECRET), "{text}");

    server.restart().await;
    // Failures are shared for the floor interval; then the next call fetches again.
    tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
    let new = bearer(&source.authorization().await.unwrap());
    let keys = server.keys().await;
    verify_jwt(&new, &keys).expect("signed with the new key");
    // The restarted server signs with a new key: the old token is no longer good.
    assert!(verify_jwt(&old, &keys).is_err());
}

/// A token source for a scripted endpoint answering `reply`.
async fn scripted(reply: Reply) -> (TargetServer, TokenSource) {
    let target = TargetServer::start_with(reply).await;
    let source = TokenSource::new(settings(&target.url("/oauth2/token"))).unwrap();
    (target, source)
}

fn json(body: &str) -> Reply {
    Reply {
        body: body.to_string(),
        content_type: "application/json".to_string(),
        ..Reply::default()
    }
}

#[tokio::test]
async fn bad_answers_are_clear_errors_naming_key_and_endpoint() {
    let cases: Vec<(Reply, &str, bool)> = vec![
        (
            Reply {
                body: "<!DOCTYPE html><html><body>Sign in</body></html>".into(),
                content_type: "text/html; charset=utf-8".into(),
                ..Reply::default()
            },
            "answered an HTML page (HTTP 200), not a token; is remote_write[0].oauth2.token_url the token endpoint?",
            false,
        ),
        (
            json("\u{1}\u{2} not json at all"),
            "answered a body that is not a JSON object",
            false,
        ),
        (
            json(&format!("{{\"access_token\":\"{}\"}}", "a".repeat(100_000))),
            "answered a body larger than 64 KiB",
            false,
        ),
        (
            Reply {
                status: 503,
                body: "maintenance".into(),
                ..Reply::default()
            },
            "is unavailable (HTTP 503: maintenance); will retry",
            false,
        ),
        (
            Reply {
                status: 401,
                ..json(r#"{"error":"invalid_client","error_description":"unknown client"}"#)
            },
            "refused the request (HTTP 401, invalid_client: unknown client); check remote_write[0].oauth2's client_id and client_secret",
            true,
        ),
        (
            Reply {
                status: 400,
                ..json(r#"{"error":"invalid_scope"}"#)
            },
            "check remote_write[0].oauth2's scopes",
            true,
        ),
        (
            Reply {
                status: 404,
                body: "not found".into(),
                ..Reply::default()
            },
            "check remote_write[0].oauth2's token_url",
            true,
        ),
    ];
    for (reply, want, config) in cases {
        let (target, source) = scripted(reply).await;
        let e = source.authorization().await.unwrap_err();
        let text = e.to_string();
        let endpoint = target.url("/oauth2/token");
        assert!(
            text.starts_with(&format!(
                "remote_write[0].oauth2: the token endpoint {endpoint} "
            )),
            "{text}"
        );
        assert!(text.contains(want), "{text}");
        assert_eq!(e.is_config(), config, "{text}");
        assert!(!text.contains(CLIENT_SECRET), "{text}");
    }
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_as_a_temporary_failure() {
    let (_target, source) = scripted(Reply {
        delay: Duration::from_secs(30),
        ..json(r#"{"access_token":"late"}"#)
    })
    .await;
    let e = tokio::time::timeout(Duration::from_secs(20), source.authorization())
        .await
        .expect("bounded by the request timeout")
        .unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test]
async fn tokens_without_or_with_no_lifetime_are_used_without_hammering_the_endpoint() {
    // No expires_in: a default lifetime is assumed, so one fetch serves many requests.
    let (target, source) = scripted(json(r#"{"access_token":"t-1","token_type":"bearer"}"#)).await;
    for _ in 0..20 {
        assert_eq!(source.authorization().await.unwrap(), "Bearer t-1");
    }
    assert_eq!(target.hits(), 1);

    // Expires at once: used for the floor interval, then fetched again, never in a loop.
    let (target, source) = scripted(json(r#"{"access_token":"t-0","expires_in":0}"#)).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        source.authorization().await.unwrap();
        source.invalidate();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let most = 2 + (started.elapsed().as_secs_f64() / MIN_REFRESH_INTERVAL.as_secs_f64()) as u64;
    assert!(
        target.hits() >= 2 && target.hits() <= most,
        "{} fetches",
        target.hits()
    );
}

/// Waits until `done` holds, polling; panics with `what` after [`common::DATA_TIMEOUT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + common::DATA_TIMEOUT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Timestamps of the accepted `probe_success` samples, in arrival order.
fn probe_stamps(receiver: &common::rw_receiver::RwReceiver) -> Vec<i64> {
    receiver
        .accepted_samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("probe_success"))
        .map(|s| s.timestamp_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushprobe_delivers_with_real_tokens_and_keeps_samples_through_a_token_outage() {
    use common::oauth2::{bearer_verifies, TrustedKeys};
    use common::rw_receiver::RwReceiver;
    use std::sync::{Arc, Mutex};

    let Some(mut server) = OAuth2MockServer::start().await else {
        return;
    };
    // The receiver accepts only tokens signed by the keys the token server publishes.
    let keys: TrustedKeys = Arc::new(Mutex::new(server.keys().await));
    let gate_keys = keys.clone();
    let receiver =
        RwReceiver::start_gated(move |h| bearer_verifies(h, &gate_keys), |_, _| 204).await;
    let target = TargetServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_path = secrets.path().join("client-secret");
    std::fs::write(&secret_path, format!("{CLIENT_SECRET}\n")).unwrap();
    let config = format!(
        r#"
[[remote_write]]
url = "{write}"
batch_send_deadline = "500ms"
min_backoff = "100ms"
max_backoff = "1s"

[remote_write.oauth2]
client_id = "pushprobe-e2e"
client_secret_file = "{secret}"
token_url = "{token}"
scopes = ["metrics:write"]

[[probe]]
name = "web"
kind = "http"
url = "{target}"
interval = "1s"
timeout = "1s"
"#,
        write = receiver.write_url(),
        secret = secret_path.display(),
        token = server.token_url(),
        target = target.url("/"),
    );
    let pushprobe = common::Pushprobe::with_config(&config);
    let agent = pushprobe.spawn_run(&[]);

    wait_until("first samples delivered with a verified token", || {
        probe_stamps(&receiver).len() >= 3
    })
    .await;

    // Outage: the token server goes away and the receiver stops trusting the old key, so
    // the cached token is refused and no new one can be had.
    server.kill();
    keys.lock().unwrap().clear();
    let outage_start = common::now_ms();
    let refused_before = receiver.unauthorized();
    // The cached token is refused (401); the new one cannot be fetched, so nothing more
    // reaches the receiver until the token server is back.
    wait_until("the old token refused", || {
        receiver.unauthorized() > refused_before
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outage_end = common::now_ms();

    // Back with a new signing key: the agent fetches a new token and delivers the backlog.
    server.restart().await;
    *keys.lock().unwrap() = server.keys().await;
    wait_until("samples measured after the outage delivered", || {
        probe_stamps(&receiver)
            .iter()
            .any(|t| *t > outage_end + 2000)
    })
    .await;

    let stamps = probe_stamps(&receiver);
    let during: Vec<i64> = stamps
        .iter()
        .copied()
        .filter(|t| (outage_start..outage_end).contains(t))
        .collect();
    assert!(
        during.len() >= 2,
        "samples measured during the outage were delivered later: {during:?} of {stamps:?}"
    );
    // Nothing twice, nothing out of order, nothing refused for good.
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert!(receiver
        .series("probe_success")
        .values()
        .all(|t| t.refused.is_empty()));

    let logs = agent.kill();
    assert!(
        logs.contains(&format!("the token endpoint {}", server.token_url())),
        "the outage is logged naming the token endpoint:\n{logs}"
    );
    assert!(!logs.contains(CLIENT_SECRET), "secret in the logs:\n{logs}");
}

#[tokio::test]
async fn config_check_never_prints_the_client_secret() {
    let config = format!(
        r#"
[[remote_write]]
url = "http://127.0.0.1:9/api/v1/write"

[remote_write.oauth2]
client_id = "pushprobe-edge"
client_secret = "{CLIENT_SECRET}"
token_url = "http://127.0.0.1:9/token"
"#
    );
    let run = common::Pushprobe::with_config(&config).config_check().await;
    run.assert_code(0);
    assert!(run.stdout.contains("pushprobe-edge"), "{}", run.stdout);
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(CLIENT_SECRET), "{text}");
    }
}

/// An HTTP probe of `url` with OAuth2 credentials from `token_url`.
fn probe_settings(url: &str, token_url: &str) -> pushprobe::config::HttpProbeSettings {
    let mut oauth2 = settings(token_url);
    oauth2.key = "probe[0].oauth2".into();
    pushprobe::config::HttpProbeSettings {
        name: "gateway".into(),
        url: url.parse().unwrap(),
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        method: http::Method::GET,
        headers: vec![],
        body: None,
        valid_status_codes: vec![],
        follow_redirects: true,
        auth: Some(pushprobe::auth::Auth::OAuth2(Box::new(oauth2))),
        tls: TlsConfig::default(),
        proxy: Default::default(),
        buckets: std::sync::Arc::from(pushprobe::config::DEFAULT_BUCKETS),
        labels: vec![],
        checks: Default::default(),
    }
}

#[tokio::test]
async fn an_http_probe_sends_a_real_token_refreshes_it_on_401_and_fails_without_one() {
    use pushprobe::probe::http::HttpProbe;
    use pushprobe::series::Registry;

    let Some(mut server) = OAuth2MockServer::start().await else {
        return;
    };
    let target = TargetServer::start().await;
    let mut probe =
        HttpProbe::new(probe_settings(&target.url("/ready"), &server.token_url())).unwrap();
    let mut registry = Registry::new();
    let report = probe.run(&mut registry).await;
    assert!(report.success, "{report:?}");
    let sent = target.last_header("authorization").expect("a token sent");
    let token = sent.strip_prefix("Bearer ").expect("a bearer token");
    verify_jwt(token, &server.keys().await).expect("a token the server signed");

    // A 401 drops the token and the request is sent once more with a new one.
    target.set_status(401);
    let hits = target.hits();
    let report = probe.run(&mut registry).await;
    assert!(!report.success);
    assert_eq!(report.status, "401");
    assert_eq!(target.hits(), hits + 2);

    // The token is refused and no new one can be had: the run fails with the reason after
    // the one refused request.
    server.kill();
    tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
    let hits = target.hits();
    let report = probe.run(&mut registry).await;
    assert!(!report.success);
    assert_eq!(report.status, "credentials");
    let reason = report.reason.unwrap_or_default();
    assert!(reason.contains(&server.token_url()), "{reason}");
    assert!(!reason.contains(CLIENT_SECRET), "{reason}");
    assert_eq!(target.hits(), hits + 1);
    assert_eq!(
        registry.value(
            "pushprobe_probe_requests_total",
            &[
                ("probe", "gateway"),
                ("instance", target.url("/ready").as_str()),
                ("code", "none"),
                ("error", "credentials"),
            ],
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_mimir_example_validates_once_its_secret_files_exist() {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mimir-oauth2.toml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = example.clone();
    for name in [
        "pushprobe-oauth2-client-secret",
        "pushprobe-oauth2-probe-secret",
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{CLIENT_SECRET}\n")).unwrap();
        config = config.replace(&format!("/run/secrets/{name}"), &path.display().to_string());
    }
    assert_ne!(config, example, "the example names its secret files");
    let run = common::Pushprobe::with_config(&config).config_check().await;
    run.assert_code(0);
    assert!(!run.stdout.contains(CLIENT_SECRET), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_and_the_pushgateway_send_tokens_from_the_real_server() {
    let Some(server) = OAuth2MockServer::start().await else {
        return;
    };
    let exporter = TargetServer::start_with(Reply {
        body: "# TYPE demo gauge\ndemo 1\n".into(),
        ..Reply::default()
    })
    .await;
    let gateway = TargetServer::start().await;
    // The probe, without credentials, gives the Pushgateway something to push.
    let web = TargetServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_path = secrets.path().join("client-secret");
    std::fs::write(&secret_path, format!("{CLIENT_SECRET}\n")).unwrap();
    let block = format!(
        "client_id = \"pushprobe-e2e\"\nclient_secret_file = \"{}\"\ntoken_url = \"{}\"\n",
        secret_path.display(),
        server.token_url()
    );
    let config = format!(
        r#"
[[pushgateway]]
url = "{gateway}"
job = "edge"

[pushgateway.oauth2]
{block}
[[scrape]]
job = "demo"
targets = ["{exporter}"]
interval = "1s"

[scrape.oauth2]
{block}
[[probe]]
name = "web"
kind = "http"
url = "{probe}"
interval = "1s"
timeout = "1s"
"#,
        gateway = gateway.url(""),
        exporter = exporter.addr(),
        probe = web.url("/health"),
    );
    let pushprobe = common::Pushprobe::with_config(&config);
    let agent = pushprobe.spawn_run(&[]);
    let keys = server.keys().await;
    let verified = |target: &TargetServer| {
        target
            .last_header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
            .is_some_and(|t| verify_jwt(&t, &keys).is_ok())
    };
    wait_until("a scrape with a verified token", || verified(&exporter)).await;
    wait_until("a push with a verified token", || verified(&gateway)).await;
    let logs = agent.kill();
    assert!(!logs.contains(CLIENT_SECRET), "{logs}");
}
