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
