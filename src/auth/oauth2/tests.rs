//! The pure core against known cases, and the token source against a scripted endpoint on
//! loopback: caching, one fetch shared by concurrent callers, refresh after `invalidate`,
//! no hot loop on a token that expires at once, the fallback to secrets in the body, and
//! a rotated secret file.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;
use crate::config::TlsConfig;

fn settings(url: &str) -> OAuth2Settings {
    OAuth2Settings {
        key: "remote_write[0].oauth2".into(),
        client_id: "agent 1".into(),
        client_secret: Secret::new("s3cr:et&").into(),
        token_url: url.parse().unwrap(),
        scopes: vec!["metrics:write".into(), "read".into()],
        endpoint_params: vec![("audience".into(), "mimir gw".into())],
        tls: TlsConfig::default(),
        proxy: Default::default(),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn tokens_are_reused_for_most_of_their_life_and_never_hot() {
    for (expires_in, want) in [
        (Some(3600), 3540),            // an hour: a minute early
        (Some(300), 270),              // five minutes: a tenth early
        (Some(10), 9),                 // short-lived
        (Some(1), 2),                  // floored
        (Some(0), 2),                  // expires at once: floored
        (None, 270),                   // no expires_in: five minutes assumed
        (Some(u64::MAX), 86_400 - 60), // absurd: a day at most
    ] {
        assert_eq!(
            reuse_for(expires_in),
            Duration::from_secs(want),
            "{expires_in:?}"
        );
    }
}

#[test]
fn the_request_body_and_basic_credentials_are_form_encoded() {
    let s = settings("http://127.0.0.1:1/token");
    let secret = Secret::new("s3cr:et&");
    let header = token_request_body(&s, ClientAuthStyle::Header, &secret);
    assert_eq!(
        header.expose(),
        "grant_type=client_credentials&scope=metrics%3Awrite%20read&audience=mimir%20gw"
    );
    let params = token_request_body(&s, ClientAuthStyle::Params, &secret);
    assert!(
        params
            .expose()
            .ends_with("&client_id=agent%201&client_secret=s3cr%3Aet%26"),
        "{params:?}"
    );
    // RFC 6749 §2.3.1: each part form-encoded, then basic: "agent%201:s3cr%3Aet%26".
    let basic = basic_credentials("agent 1", &secret);
    assert_eq!(basic.expose(), "Basic YWdlbnQlMjAxOnMzY3IlM0FldCUyNg==");
    // grant_type may be replaced, as in Prometheus.
    let mut other = s.clone();
    other.scopes.clear();
    other.endpoint_params = vec![("grant_type".into(), "urn:x".into())];
    assert_eq!(
        token_request_body(&other, ClientAuthStyle::Header, &secret).expose(),
        "grant_type=urn%3Ax"
    );
}

#[test]
fn answers_are_judged() {
    let ok = |body: &str| judge_answer(200, "application/json", body.as_bytes(), true);
    assert_eq!(
        ok(r#"{"access_token":"t-1","token_type":"Bearer","expires_in":3600}"#),
        Ok(Token {
            access_token: Secret::new("t-1"),
            expires_in: Some(3600)
        })
    );
    assert_eq!(
        ok(r#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#).map(|t| t.expires_in),
        Ok(Some(60))
    );
    assert_eq!(
        ok(r#"{"access_token":"t"}"#).map(|t| t.expires_in),
        Ok(None)
    );
    assert_eq!(
        ok(r#"{"access_token":"t","expires_in":-5}"#).map(|t| t.expires_in),
        Ok(Some(0))
    );
    let bad = |r: Result<Token, Problem>| match r {
        Err(Problem::BadAnswer(d)) => d,
        other => panic!("{other:?}"),
    };
    assert!(bad(judge_answer(200, "text/html", b"<html>login</html>", true)).contains("HTML"));
    assert!(bad(judge_answer(200, "", b"  <!DOCTYPE html>", true)).contains("HTML"));
    assert!(bad(judge_answer(
        200,
        "application/json",
        b"\x00\xffgarbage",
        true
    ))
    .contains("not a JSON object"));
    assert!(bad(judge_answer(200, "application/json", b"{}", false)).contains("larger than 64 KiB"));
    assert!(bad(ok(r#"{"token_type":"bearer"}"#)).contains("without an access_token"));
    assert!(bad(ok(r#"{"access_token":"a\nb"}"#)).contains("header"));
    assert!(bad(ok(r#"{"access_token":"t","token_type":"mac"}"#)).contains("\"mac\""));
    assert!(bad(ok(r#"{"access_token":"t","expires_in":"soon"}"#)).contains("expires_in"));
    assert!(bad(ok(r#"{"access_token":"t","expires_in":[1]}"#)).contains("expires_in"));

    let refused = |status, body: &str| match judge_answer(
        status,
        "application/json",
        body.as_bytes(),
        true,
    ) {
        Err(Problem::Refused { keys, detail }) => (keys, detail),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(
            401,
            r#"{"error":"invalid_client","error_description":"bad\nsecret"}"#
        ),
        (
            "client_id and client_secret",
            "HTTP 401, invalid_client: bad secret".to_string()
        )
    );
    assert_eq!(refused(400, r#"{"error":"invalid_scope"}"#).0, "scopes");
    assert_eq!(
        refused(400, r#"{"error":"unauthorized_client"}"#).0,
        "client_id and client_secret"
    );
    assert_eq!(refused(404, "no such path").0, "token_url");
    assert_eq!(refused(302, "").0, "token_url");
    assert_eq!(
        refused(200, r#"{"error":"invalid_client"}"#).0,
        "client_id and client_secret"
    );
    for status in [500, 502, 503, 408, 429] {
        assert!(matches!(
            judge_answer(status, "text/html", b"<html>oops</html>", true),
            Err(Problem::Unavailable(d)) if d == format!("HTTP {status} with an HTML page")
        ));
    }
    let long = "x".repeat(5000);
    let Err(Problem::Unavailable(d)) = judge_answer(503, "text/plain", long.as_bytes(), true)
    else {
        panic!()
    };
    assert!(d.chars().count() < 250, "{d}");
}

#[test]
fn endpoints_print_without_user_info_or_query_and_the_fallback_is_one_step() {
    let u: reqwest::Url = "https://u:pw@auth.example.com:8443/oauth/token?key=k#f"
        .parse()
        .unwrap();
    assert_eq!(
        shown_endpoint(&u),
        "https://auth.example.com:8443/oauth/token"
    );
    let refused = Err(Problem::Refused {
        keys: "client_id and client_secret",
        detail: String::new(),
    });
    assert_eq!(
        fallback_style(ClientAuthStyle::Header, &refused),
        Some(ClientAuthStyle::Params)
    );
    assert_eq!(fallback_style(ClientAuthStyle::Params, &refused), None);
    assert_eq!(
        fallback_style(
            ClientAuthStyle::Header,
            &Err(Problem::Unavailable(String::new()))
        ),
        None
    );
    let e = TokenError::Unavailable {
        key: "k".into(),
        endpoint: "e".into(),
        detail: "d".into(),
    };
    assert!(!e.is_config());
}

/// A scripted token endpoint: answers each request with `answer(n, request)` for the n-th
/// request (from 0) and counts requests.
struct Endpoint {
    url: String,
    hits: Arc<AtomicUsize>,
}

type Script = dyn Fn(usize, &str) -> (u16, String) + Send + Sync;

async fn endpoint(
    answer: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static,
) -> Endpoint {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let answer: Arc<Script> = Arc::new(answer);
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                // One request per connection; read until the body announced has arrived.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let request = String::from_utf8_lossy(&buf).to_string();
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer(n, &request);
                // Held a moment, so that concurrent callers overlap with the fetch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    Endpoint { url, hits }
}

fn token_json(n: usize, expires_in: u64) -> String {
    format!(r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#)
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch_and_the_token_is_cached() {
    let ep = endpoint(|n, req| {
        // Basic credentials first, as RFC 6749 §2.3.1 prefers.
        assert!(
            req.to_ascii_lowercase().contains("authorization: basic "),
            "{req}"
        );
        assert!(req.contains("grant_type=client_credentials"), "{req}");
        (200, token_json(n, 3600))
    })
    .await;
    let source = TokenSource::new(settings(&ep.url)).unwrap();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let s = source.clone();
            tokio::spawn(async move { s.authorization().await })
        })
        .collect();
    for c in calls {
        let h = c.await.unwrap().unwrap();
        assert_eq!(h, "Bearer tok-0");
        assert!(h.is_sensitive());
    }
    assert_eq!(source.authorization().await.unwrap(), "Bearer tok-0");
    assert_eq!(ep.hits.load(Ordering::SeqCst), 1);
    let secrets: Vec<String> = source
        .secrets()
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    assert_eq!(secrets, ["tok-0", "s3cr:et&"]);
    assert!(!format!("{source:?}").contains("s3cr"));

    // A receiver's 401: the next call fetches a new token.
    source.invalidate();
    assert_eq!(source.authorization().await.unwrap(), "Bearer tok-1");
    assert_eq!(ep.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_token_that_expires_at_once_is_not_fetched_in_a_loop() {
    let ep = endpoint(|n, _| (200, token_json(n, 0))).await;
    let source = TokenSource::new(settings(&ep.url)).unwrap();
    let started = Instant::now();
    for _ in 0..50 {
        source.authorization().await.unwrap();
    }
    // Reused for the floor interval; and after invalidation, the next fetch waits for it.
    source.invalidate();
    source.authorization().await.unwrap();
    let fetches = ep.hits.load(Ordering::SeqCst);
    let bound = 2 + (started.elapsed().as_secs_f64() / MIN_REFRESH_INTERVAL.as_secs_f64()) as usize;
    assert!(fetches >= 2 && fetches <= bound, "{fetches} fetches");
}

#[tokio::test]
async fn failures_are_classified_named_and_shared() {
    let ep = endpoint(|n, _| match n {
        0 => (503, "upstream down".into()),
        _ => (200, token_json(n, 3600)),
    })
    .await;
    let source = TokenSource::new(settings(&ep.url)).unwrap();
    let e = source.authorization().await.unwrap_err();
    assert!(!e.is_config());
    let text = e.to_string();
    assert!(
        text.starts_with("remote_write[0].oauth2: the token endpoint http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("HTTP 503: upstream down"), "{text}");
    // Within the floor interval the failure is handed out without a new request.
    assert_eq!(source.authorization().await.unwrap_err(), e);
    assert_eq!(ep.hits.load(Ordering::SeqCst), 1);
    tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
    assert_eq!(source.authorization().await.unwrap(), "Bearer tok-1");

    // Nothing listening: temporary, described without the secret.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let source = TokenSource::new(settings(&format!("http://u:pw-in-url@{closed}/token"))).unwrap();
    let e = source.authorization().await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable { .. }), "{e}");
    assert!(!e.to_string().contains("pw-in-url"), "{e}");
}

#[tokio::test]
async fn a_refused_header_falls_back_to_the_body_and_remembers_it() {
    let ep = endpoint(|n, req| {
        if req.contains("client_secret=") {
            (200, token_json(n, 0))
        } else {
            (401, r#"{"error":"invalid_client"}"#.into())
        }
    })
    .await;
    let source = TokenSource::new(settings(&ep.url)).unwrap();
    assert_eq!(source.authorization().await.unwrap(), "Bearer tok-1");
    source.invalidate();
    // The body style is remembered: one request for the next token.
    assert_eq!(source.authorization().await.unwrap(), "Bearer tok-2");
    assert_eq!(ep.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn invalid_client_is_a_configuration_error_that_never_shows_the_secret() {
    let ep = endpoint(|_, _| {
        (
            401,
            r#"{"error":"invalid_client","error_description":"secret s3cr:et& is wrong"}"#.into(),
        )
    })
    .await;
    let source = TokenSource::new(settings(&ep.url)).unwrap();
    let e = source.authorization().await.unwrap_err();
    assert!(e.is_config());
    let text = e.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(
        text.contains("check remote_write[0].oauth2's client_id and client_secret"),
        "{text}"
    );
    assert!(!text.contains("s3cr:et&"), "{text}");
}

#[tokio::test]
async fn a_rotated_secret_file_is_read_and_a_vanished_one_keeps_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client-secret");
    std::fs::write(&path, "first\n").unwrap();
    let ep = endpoint(|n, req| {
        let first = basic_credentials("agent 1", &Secret::new("first"));
        let secret = if req.contains(first.expose()) {
            "first"
        } else {
            "other"
        };
        (
            200,
            format!(r#"{{"access_token":"{secret}-{n}","expires_in":3600}}"#),
        )
    })
    .await;
    let mut s = settings(&ep.url);
    s.client_secret = crate::auth::SecretSource::File(
        crate::auth::SecretFile::open("remote_write[0].oauth2.client_secret_file", &path).unwrap(),
    );
    let source = TokenSource::new(s).unwrap();
    assert_eq!(source.authorization().await.unwrap(), "Bearer first-0");
    std::fs::write(&path, "second\n").unwrap();
    source.invalidate();
    assert_eq!(source.authorization().await.unwrap(), "Bearer other-1");
    std::fs::remove_file(&path).unwrap();
    source.invalidate();
    // The last good secret is used.
    assert_eq!(source.authorization().await.unwrap(), "Bearer other-2");
}
