//! AWS SigV4 on remote write, checked by an independent implementation: a receiver that signs
//! every request again with botocore (`tests/support/sigv4_receiver.py`) and answers 403 when
//! the signatures differ, the key is unknown or the date is more than five minutes off; a
//! `secret_key_file` rotated mid-run is used without a restart, nothing lost. The
//! credentials chain is checked against scripted container, instance-metadata (IMDSv2) and
//! STS endpoints on 127.0.0.1, including one that hangs and one that answers garbage.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message;
use pushprobe::auth::aws_credentials::{AwsCredentialsProvider, AwsCredentialsSettings, EnvLookup};
use pushprobe::auth::sigv4::{ClockOffset, SigV4Signer};
use pushprobe::auth::SecretSource;
use pushprobe::proto::WriteRequest;
use serde_json::Value;
use tokio::net::TcpListener;

const KEY_ID: &str = "AKIDPUSHPROBETEST";
const SECRET: &str = "sigv4-test-secret-0123456789";
const REGION: &str = "eu-west-1";

/// The botocore receiver, killed when dropped.
struct Receiver {
    _process: ChildGuard,
    dir: tempfile::TempDir,
    port: u16,
}

impl Receiver {
    /// Starts the receiver knowing `keys`, for `REGION` and service `aps`, failing the first
    /// `fail_first` requests with 503; `None` (skipped) without the Python tools.
    async fn start(keys: &[(&str, &str)], fail_first: usize) -> Option<Receiver> {
        Self::start_args(keys, fail_first, &[]).await
    }

    /// Starts the receiver knowing only the keys in `keys_file` (ID=SECRET lines), read again
    /// for every request.
    async fn start_with_keys_file(keys_file: &Path) -> Option<Receiver> {
        let path = keys_file.to_str().expect("utf-8 path");
        Self::start_args(&[], 0, &["--keys-file", path]).await
    }

    /// Starts the receiver with `keys`, `fail_first` and `extra` arguments.
    async fn start_args(
        keys: &[(&str, &str)],
        fail_first: usize,
        extra: &[&str],
    ) -> Option<Receiver> {
        let python = require_tool("python-tools")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sigv4_receiver.py");
        let mut cmd = std::process::Command::new(python);
        cmd.arg(script)
            .args(["--dir", dir.path().to_str().expect("utf-8 path")])
            .args(["--region", REGION, "--service", "aps"])
            .args(["--fail-first", &fail_first.to_string()])
            .args(extra);
        for (id, secret) in keys {
            cmd.arg("--key").arg(format!("{id}={secret}"));
        }
        let process = ChildGuard::spawn("sigv4-receiver", cmd, dir.path()).expect("spawn");
        let port_file = dir.path().join("port");
        for _ in 0..300 {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let port = text.trim().parse().expect("port");
                return Some(Receiver {
                    _process: process,
                    dir,
                    port,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process.dump_logs();
        panic!("the SigV4 receiver did not start");
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/workspaces/ws-test/api/v1/remote_write",
            self.port
        )
    }

    /// Every request seen, in order, as logged by the receiver.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }

    /// The metric names of every sample the receiver accepted, with counts.
    fn accepted_names(&self) -> HashMap<String, usize> {
        let mut names = HashMap::new();
        for n in 0.. {
            let Ok(raw) = std::fs::read(self.dir.path().join(format!("accepted-{n}.bin"))) else {
                break;
            };
            let body = snap::raw::Decoder::new()
                .decompress_vec(&raw)
                .expect("snappy body");
            let req = WriteRequest::decode(body.as_slice()).expect("write request");
            for ts in req.timeseries {
                let name = ts
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .map(|l| l.value.clone())
                    .unwrap_or_default();
                *names.entry(name).or_default() += ts.samples.len();
            }
        }
        names
    }

    /// The timestamps of every accepted `name` sample, in arrival order.
    fn accepted_stamps(&self, name: &str) -> Vec<i64> {
        let mut stamps = Vec::new();
        for n in 0.. {
            let Ok(raw) = std::fs::read(self.dir.path().join(format!("accepted-{n}.bin"))) else {
                break;
            };
            let body = snap::raw::Decoder::new()
                .decompress_vec(&raw)
                .expect("snappy body");
            let req = WriteRequest::decode(body.as_slice()).expect("write request");
            for ts in req.timeseries {
                if ts
                    .labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
                {
                    stamps.extend(ts.samples.iter().map(|s| s.timestamp));
                }
            }
        }
        stamps
    }
}

/// An agent configuration pushing one HTTP probe's results to `url` with a `sigv4` block.
fn config(url: &str, probe_url: &str, sigv4: &str, extra: &str) -> String {
    format!(
        "[agent]\n\
         drain_timeout = \"20s\"\n\
         [[remote_write]]\n\
         url = {}\n\
         batch_send_deadline = \"1s\"\n\
         {extra}\n\
         sigv4 = {sigv4}\n\
         [[probe]]\nname = \"api\"\nkind = \"http\"\nurl = {}\ninterval = \"1s\"\ntimeout = \"1s\"\n",
        toml_string(url),
        toml_string(probe_url),
    )
}

/// An agent whose AWS environment is empty but for what the test sets: no keys, shared files
/// that do not exist, no instance metadata.
fn agent(toml: &str) -> Pushprobe {
    let none = "/nonexistent/aws";
    Pushprobe::with_config(toml)
        .env("AWS_ACCESS_KEY_ID", "")
        .env("AWS_SECRET_ACCESS_KEY", "")
        .env("AWS_SESSION_TOKEN", "")
        .env("AWS_PROFILE", "")
        .env("AWS_REGION", "")
        .env("AWS_DEFAULT_REGION", "")
        .env("AWS_SHARED_CREDENTIALS_FILE", none)
        .env("AWS_CONFIG_FILE", none)
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", "")
        .env("AWS_ROLE_ARN", "")
        .env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "")
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", "")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

fn statuses(requests: &[Value]) -> Vec<u64> {
    requests
        .iter()
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn signed_writes_are_accepted_by_botocore_and_every_series_arrives() {
    let Some(rx) = Receiver::start(&[(KEY_ID, SECRET)], 0).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    let agent = agent(&config(
        &rx.url(),
        &target.url("/"),
        &format!(
            "{{ region = \"{REGION}\", access_key = \"{KEY_ID}\", secret_key_file = \"sk\" }}"
        ),
        "",
    ));
    std::fs::write(agent.dir().join("sk"), format!("{SECRET}\n")).expect("write key");
    let run = agent.once().await;
    run.assert_code(0);
    let requests = rx.requests();
    assert!(!requests.is_empty(), "nothing was sent");
    assert!(
        statuses(&requests).iter().all(|s| *s == 204),
        "botocore refused a signature: {requests:?}"
    );
    let names = rx.accepted_names();
    for name in [
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
    ] {
        assert!(
            names.get(name).is_some_and(|n| *n >= 1),
            "{name} missing: {names:?}"
        );
    }
    assert!(
        !run.stderr.contains(SECRET),
        "the secret key reached the log"
    );
}

#[tokio::test]
async fn credentials_from_the_environment_with_a_session_token_are_accepted() {
    let Some(rx) = Receiver::start(&[("ASIAENVTEST", "env-secret")], 0).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    // The region comes from the environment too.
    let agent = agent(&config(&rx.url(), &target.url("/"), "{}", ""))
        .env("AWS_ACCESS_KEY_ID", "ASIAENVTEST")
        .env("AWS_SECRET_ACCESS_KEY", "env-secret")
        .env("AWS_SESSION_TOKEN", "env-session-token")
        .env("AWS_REGION", REGION);
    let run = agent.once().await;
    run.assert_code(0);
    let requests = rx.requests();
    assert!(!requests.is_empty());
    assert!(
        statuses(&requests).iter().all(|s| *s == 204),
        "{requests:?}"
    );
    for secret in ["env-secret", "env-session-token"] {
        assert!(!run.stderr.contains(secret), "{secret} reached the log");
    }
}

#[tokio::test]
async fn a_wrong_key_or_region_is_refused_once_and_dropped_as_an_authentication_failure() {
    let Some(rx) = Receiver::start(&[(KEY_ID, SECRET)], 0).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    for sigv4 in [
        format!(
            "{{ region = \"{REGION}\", access_key = \"{KEY_ID}\", secret_key = \"wrong-secret\" }}"
        ),
        format!(
            "{{ region = \"us-east-1\", access_key = \"{KEY_ID}\", secret_key = \"{SECRET}\" }}"
        ),
    ] {
        let before = rx.requests().len();
        let run = agent(&config(&rx.url(), &target.url("/"), &sigv4, ""))
            .once()
            .await;
        let requests = rx.requests().split_off(before);
        assert!(!requests.is_empty(), "{sigv4}: nothing was sent");
        assert!(
            statuses(&requests).iter().all(|s| *s == 403),
            "{requests:?}"
        );
        // Never retried: each body was sent once.
        let mut bodies: Vec<&str> = requests
            .iter()
            .filter_map(|r| r["body_sha256"].as_str())
            .collect();
        let sent = bodies.len();
        bodies.sort();
        bodies.dedup();
        assert_eq!(
            bodies.len(),
            sent,
            "a refused body was sent again: {requests:?}"
        );
        assert!(
            run.stderr.contains("authentication failed"),
            "no clear log line: {}",
            run.stderr
        );
        assert!(run.stderr.contains("does not match"), "{}", run.stderr);
        assert!(!run.stderr.contains(SECRET) && !run.stderr.contains("wrong-secret"));
        for r in &requests {
            let sig = r["signature"].as_str().unwrap_or("");
            assert!(!run.stderr.contains(sig), "a signature reached the log");
        }
    }
}

#[tokio::test]
async fn a_retry_after_a_server_error_is_signed_again() {
    let Some(rx) = Receiver::start(&[(KEY_ID, SECRET)], 1).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    // A retry more than a second later: X-Amz-Date has a resolution of one second.
    let run = agent(&config(
        &rx.url(),
        &target.url("/"),
        &format!(
            "{{ region = \"{REGION}\", access_key = \"{KEY_ID}\", secret_key = \"{SECRET}\" }}"
        ),
        "min_backoff = \"1100ms\"\nmax_backoff = \"2s\"",
    ))
    .once()
    .await;
    run.assert_code(0);
    let requests = rx.requests();
    assert_eq!(requests[0]["status"], 503, "{requests:?}");
    let first = &requests[0];
    let retry = requests
        .iter()
        .skip(1)
        .find(|r| r["body_sha256"] == first["body_sha256"])
        .unwrap_or_else(|| panic!("the refused body was not sent again: {requests:?}"));
    assert_eq!(retry["status"], 204, "{requests:?}");
    assert_ne!(retry["date"], first["date"], "the retry kept the old date");
    assert_ne!(
        retry["signature"], first["signature"],
        "the retry kept the old signature"
    );
}

/// Signs a request with `signer` and posts it; the receiver's status.
async fn post_signed(signer: &SigV4Signer, url: &str, body: &[u8]) -> u16 {
    let url = reqwest::Url::parse(url).expect("url");
    let mut headers = http::HeaderMap::new();
    headers.insert("content-encoding", http::HeaderValue::from_static("snappy"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    signer
        .apply(&http::Method::POST, &url, &mut headers, body)
        .await
        .expect("sign");
    http_client()
        .post(url)
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

fn env(pairs: &[(&str, String)]) -> EnvLookup {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Arc::new(move |name| map.get(name).cloned())
}

fn static_signer(region: &str, secret: &str) -> SigV4Signer {
    let settings = AwsCredentialsSettings {
        static_keys: Some((
            KEY_ID.into(),
            SecretSource::Inline(pushprobe::secret::Secret::new(secret)),
        )),
        ..Default::default()
    };
    SigV4Signer::new(
        region.into(),
        "aps".into(),
        AwsCredentialsProvider::new(settings, region.into(), env(&[])),
    )
}

#[tokio::test]
async fn botocore_refuses_a_clock_skewed_by_ten_minutes_either_way() {
    let Some(rx) = Receiver::start(&[(KEY_ID, SECRET)], 0).await else {
        return;
    };
    let body = b"exact compressed bytes";
    assert_eq!(
        post_signed(&static_signer(REGION, SECRET), &rx.url(), body).await,
        204
    );
    let ten = Duration::from_secs(600);
    for offset in [ClockOffset::Ahead(ten), ClockOffset::Behind(ten)] {
        let skewed = static_signer(REGION, SECRET).with_clock_offset(offset);
        assert_eq!(
            post_signed(&skewed, &rx.url(), body).await,
            403,
            "{offset:?}"
        );
    }
    assert_eq!(
        post_signed(&static_signer("us-west-2", SECRET), &rx.url(), body).await,
        403
    );
    let reasons: Vec<String> = rx
        .requests()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(reasons[1].contains("Signature expired"), "{reasons:?}");
    assert!(reasons[2].contains("Signature expired"), "{reasons:?}");
}

// ---------------------------------------------------------------------------------------------
// Scripted credential endpoints
// ---------------------------------------------------------------------------------------------

/// One request as a scripted endpoint sees it.
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// Serves `handler` on 127.0.0.1 until the test ends; counts requests.
async fn serve(handler: Arc<Handler>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let counter = counter.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        counter.fetch_add(1, Ordering::SeqCst);
                        let seen = Seen {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let (status, text) = handler(&seen);
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

fn credentials_json(id: &str, expires_in: Duration) -> String {
    serde_json::json!({
        "Code": "Success",
        "AccessKeyId": id,
        "SecretAccessKey": format!("{id}-secret"),
        "Token": format!("{id}-token"),
        "Expiration": rfc3339(SystemTime::now() + expires_in),
    })
    .to_string()
}

/// A scripted IMDSv2: a session token by PUT, the role's name, then the role's credentials
/// (`answer(n)` for the `n`th credentials request); anything without the token gets 401.
async fn imds(
    answer: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    let handler: Arc<Handler> = Arc::new(move |r: &Seen| {
        let has_token = r
            .headers
            .get("x-aws-ec2-metadata-token")
            .is_some_and(|v| v == "imds-token");
        match (r.method.as_str(), r.path.as_str()) {
            ("PUT", "/latest/api/token")
                if r.headers
                    .contains_key("x-aws-ec2-metadata-token-ttl-seconds") =>
            {
                (200, "imds-token".into())
            }
            (_, _) if !has_token => (401, String::new()),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "agent-role\n".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/agent-role") => {
                (200, answer(count.fetch_add(1, Ordering::SeqCst)))
            }
            _ => (404, String::new()),
        }
    });
    let (addr, _) = serve(handler).await;
    (format!("http://{addr}"), served)
}

fn chain_env(extra: &[(&str, String)]) -> EnvLookup {
    let mut pairs = vec![
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials".to_string(),
        ),
        ("AWS_CONFIG_FILE", "/nonexistent/aws/config".to_string()),
    ];
    pairs.extend(extra.iter().cloned());
    env(&pairs)
}

fn chain(extra: &[(&str, String)]) -> AwsCredentialsProvider {
    AwsCredentialsProvider::new(
        AwsCredentialsSettings::default(),
        REGION.into(),
        chain_env(extra),
    )
}

#[tokio::test]
async fn imdsv2_credentials_are_used_and_refreshed_before_they_expire() {
    // The first credentials expire in two minutes, inside the refresh window; the next last.
    let (endpoint, served) = imds(|n| {
        let life = if n == 0 {
            Duration::from_secs(120)
        } else {
            Duration::from_secs(3600)
        };
        credentials_json(&format!("ASIAIMDS{n}"), life)
    })
    .await;
    let p = chain(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)]);
    let c = p.credentials().await.expect("credentials");
    assert_eq!(c.access_key_id, "ASIAIMDS0");
    assert_eq!(c.session_token.expect("token").expose(), "ASIAIMDS0-token");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        p.credentials().await.expect("refreshed").access_key_id,
        "ASIAIMDS1"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        p.credentials().await.expect("cached").access_key_id,
        "ASIAIMDS1"
    );
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_agent_signs_with_instance_metadata_credentials() {
    let Some(rx) = Receiver::start(&[("ASIAIMDS0", "ASIAIMDS0-secret")], 0).await else {
        return;
    };
    let (endpoint, served) =
        imds(|_| credentials_json("ASIAIMDS0", Duration::from_secs(3600))).await;
    let target = target::TargetServer::start().await;
    let run = agent(&config(
        &rx.url(),
        &target.url("/"),
        &format!("{{ region = \"{REGION}\" }}"),
        "",
    ))
    .env("AWS_EC2_METADATA_DISABLED", "")
    .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
    .once()
    .await;
    run.assert_code(0);
    assert!(served.load(Ordering::SeqCst) >= 1);
    let requests = rx.requests();
    assert!(!requests.is_empty());
    assert!(
        statuses(&requests).iter().all(|s| *s == 204),
        "{requests:?}"
    );
    assert!(!run.stderr.contains("ASIAIMDS0-secret") && !run.stderr.contains("ASIAIMDS0-token"));
}

#[tokio::test]
async fn container_credentials_are_fetched_with_the_authorization_token() {
    let handler: Arc<Handler> = Arc::new(|r: &Seen| {
        if r.headers
            .get("authorization")
            .is_some_and(|v| v == "container-token")
            && r.path == "/creds"
        {
            (
                200,
                credentials_json("ASIACONTAINER", Duration::from_secs(3600)),
            )
        } else {
            (401, "{}".into())
        }
    });
    let (addr, _) = serve(handler).await;
    let token_file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(token_file.path(), "container-token\n").expect("write");
    let full = format!("http://{addr}/creds");
    let p = chain(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", full.clone()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.path().display().to_string(),
        ),
    ]);
    assert_eq!(
        p.credentials().await.expect("credentials").access_key_id,
        "ASIACONTAINER"
    );
    // Without the token the endpoint refuses, and the error names it.
    let p = chain(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", full.clone())]);
    let e = p.credentials().await.unwrap_err();
    assert!(e.is_temporary());
    assert!(
        e.to_string().contains(&full) && e.to_string().contains("401"),
        "{e}"
    );
}

#[tokio::test]
async fn a_hanging_metadata_endpoint_fails_soon_with_its_address() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let p = chain(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{addr}"),
    )]);
    let e = tokio::time::timeout(Duration::from_secs(60), p.credentials())
        .await
        .expect("the provider gave up on its own")
        .unwrap_err();
    held.abort();
    assert!(e.is_temporary());
    let text = e.to_string();
    assert!(
        text.contains(&format!("the instance metadata endpoint http://{addr}")),
        "{text}"
    );
    assert!(text.contains("did not answer in time"), "{text}");
    assert!(text.contains("AWS_ACCESS_KEY_ID (unset)"), "{text}");
}

#[tokio::test]
async fn garbage_or_expired_metadata_credentials_are_clear_errors() {
    let (endpoint, _) = imds(|_| "<html>captive portal</html>".into()).await;
    let e = chain(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.clone())])
        .credentials()
        .await
        .unwrap_err();
    assert!(e.is_temporary());
    assert!(e.to_string().contains("not credentials JSON"), "{e}");
    let (endpoint, _) = imds(|_| {
        let mut v: Value =
            serde_json::from_str(&credentials_json("ASIAOLD", Duration::ZERO)).expect("json");
        v["Expiration"] = Value::String(rfc3339(SystemTime::now() - Duration::from_secs(60)));
        v.to_string()
    })
    .await;
    let e = chain(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)])
        .credentials()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(!e.to_string().contains("ASIAOLD-secret"), "{e}");
}

#[tokio::test]
async fn a_role_is_assumed_through_sts_with_a_signed_request() {
    let handler: Arc<Handler> = Arc::new(|r: &Seen| {
        let auth = r
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let body = String::from_utf8_lossy(&r.body);
        let signed = auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDBASE/")
            && auth.contains(&format!("/{REGION}/sts/aws4_request"));
        if r.method == "POST"
            && signed
            && body.contains("Action=AssumeRole")
            && body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fwriter")
        {
            let expires = rfc3339(SystemTime::now() + Duration::from_secs(3600));
            (200, format!("<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAROLE</AccessKeyId><SecretAccessKey>role-secret</SecretAccessKey><SessionToken>role-token</SessionToken><Expiration>{expires}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"))
        } else {
            (403, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>not this role</Message></Error></ErrorResponse>".into())
        }
    });
    let (addr, _) = serve(handler).await;
    let settings = |arn: &str| AwsCredentialsSettings {
        static_keys: Some((
            "AKIDBASE".into(),
            SecretSource::Inline(pushprobe::secret::Secret::new("base-secret")),
        )),
        role_arn: Some(arn.into()),
        ..Default::default()
    };
    let env = chain_env(&[("AWS_ENDPOINT_URL_STS", format!("http://{addr}/"))]);
    let p = AwsCredentialsProvider::new(
        settings("arn:aws:iam::123456789012:role/writer"),
        REGION.into(),
        env.clone(),
    );
    let c = p.credentials().await.expect("assumed");
    assert_eq!(c.access_key_id, "ASIAROLE");
    assert_eq!(c.session_token.expect("token").expose(), "role-token");
    let p = AwsCredentialsProvider::new(
        settings("arn:aws:iam::123456789012:role/other"),
        REGION.into(),
        env,
    );
    let e = p.credentials().await.unwrap_err();
    assert!(!e.is_temporary(), "{e}");
    assert!(e.to_string().contains("AccessDenied: not this role"), "{e}");
}

#[tokio::test]
async fn a_missing_profile_is_named_with_its_file_and_samples_wait() {
    let Some(rx) = Receiver::start(&[(KEY_ID, SECRET)], 0).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    let agent = agent(&config(
        &rx.url(),
        &target.url("/"),
        &format!("{{ region = \"{REGION}\", profile = \"prod\" }}"),
        "",
    ));
    let credentials: PathBuf = agent.dir().join("credentials");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
    )
    .expect("write");
    let agent = agent.env(
        "AWS_SHARED_CREDENTIALS_FILE",
        credentials.to_str().expect("utf-8"),
    );
    let run = agent.once().await;
    // Nothing could be signed, so nothing was sent, and `once` reports the undelivered data.
    assert_ne!(run.code(), Some(0), "{}", run.stderr);
    assert!(rx.requests().is_empty());
    let want = format!("profile \"prod\" is not in {}", credentials.display());
    assert!(run.stderr.contains(&want), "{}", run.stderr);
    assert!(!run.stderr.contains(SECRET));
}

#[tokio::test]
async fn the_amazon_managed_prometheus_example_validates() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/amazon-managed-prometheus.toml");
    let toml = std::fs::read_to_string(path).expect("example");
    let check = agent(&toml).config_check().await;
    check.assert_code(0);
    assert!(check.stdout.contains("sigv4"), "{}", check.stdout);
}

#[tokio::test]
async fn a_web_identity_token_is_exchanged_at_sts_without_a_signature() {
    let handler: Arc<Handler> = Arc::new(|r: &Seen| {
        let body = String::from_utf8_lossy(&r.body);
        let unsigned = !r.headers.contains_key("authorization");
        if unsigned
            && body.contains("Action=AssumeRoleWithWebIdentity")
            && body.contains("WebIdentityToken=eks.jwt.token")
            && body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Firsa")
        {
            let expires = rfc3339(SystemTime::now() + Duration::from_secs(3600));
            (200, format!("<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><SessionToken>web-token</SessionToken><SecretAccessKey>web-secret</SecretAccessKey><Expiration>{expires}</Expiration><AccessKeyId>ASIAWEB</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"))
        } else {
            (400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>".into())
        }
    });
    let (addr, _) = serve(handler).await;
    let token = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(token.path(), "eks.jwt.token").expect("write");
    let p = chain(&[
        ("AWS_ENDPOINT_URL_STS", format!("http://{addr}/")),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token.path().display().to_string(),
        ),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa".into()),
    ]);
    let c = p.credentials().await.expect("web identity");
    assert_eq!(c.access_key_id, "ASIAWEB");
    // A token the cluster rotated to something STS refuses: a configuration error, quoted
    // by its code, never by the token.
    std::fs::write(token.path(), "stale.jwt").expect("write");
    let p = chain(&[
        ("AWS_ENDPOINT_URL_STS", format!("http://{addr}/")),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token.path().display().to_string(),
        ),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa".into()),
    ]);
    let e = p.credentials().await.unwrap_err();
    assert!(!e.is_temporary());
    assert!(e.to_string().contains("InvalidIdentityToken"), "{e}");
    assert!(!e.to_string().contains("stale.jwt"), "{e}");
}

#[tokio::test]
async fn config_check_refuses_a_block_without_any_region_and_names_the_key() {
    let toml = config(
        "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write",
        "http://127.0.0.1:9/",
        "{}",
        "",
    );
    let check = agent(&toml).config_check().await;
    assert_ne!(check.code(), Some(0), "{}", check.stdout);
    let all = format!("{}{}", check.stdout, check.stderr);
    assert!(all.contains("sigv4.region"), "{all}");
    // AWS_REGION gives it.
    agent(&toml)
        .env("AWS_REGION", REGION)
        .config_check()
        .await
        .assert_code(0);
}

/// What the receiver logs of the secret a request was accepted with: the first 16 hex digits
/// of its SHA-256.
fn fingerprint(secret: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces `path`'s contents the way secret managers do: write aside, then rename over it.
fn rotate(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).expect("write the new contents");
    std::fs::rename(&tmp, path).expect("rename the new contents into place");
}

/// Polls `cond` until it holds, panicking with `what` after a minute.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_key_file_is_used_without_a_restart_and_nothing_is_lost() {
    const OLD: &str = "sigv4-old-secret-0123456789";
    const NEW: &str = "sigv4-new-secret-9876543210";
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let keys = keys_dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY_ID}={OLD}\n")).expect("write keys");
    let Some(rx) = Receiver::start_with_keys_file(&keys).await else {
        return;
    };
    let target = target::TargetServer::start().await;
    let agent = agent(&config(
        &rx.url(),
        &target.url("/"),
        &format!(
            "{{ region = \"{REGION}\", access_key = \"{KEY_ID}\", secret_key_file = \"sk\" }}"
        ),
        "min_backoff = \"50ms\"\nmax_backoff = \"500ms\"",
    ));
    let secret_file = agent.dir().join("sk");
    std::fs::write(&secret_file, format!("{OLD}\n")).expect("write key");
    let mut running = agent.spawn_run(&[]);
    let accepted_with = |secret: &str| {
        let print = fingerprint(secret);
        rx.requests()
            .iter()
            .filter(|r| r["secret_sha256"].as_str() == Some(print.as_str()))
            .count()
    };
    wait_until("requests signed with the old key", || {
        accepted_with(OLD) >= 2
    })
    .await;

    // A 403 drops a batch, so the receiver first accepts both keys, the file is rotated,
    // and only once the agent signs with the new key is the old one withdrawn.
    rotate(&keys, &format!("{KEY_ID}={OLD}\n{KEY_ID}={NEW}\n"));
    rotate(&secret_file, &format!("{NEW}\n"));
    wait_until("requests signed with the new key", || {
        accepted_with(NEW) >= 1
    })
    .await;
    rotate(&keys, &format!("{KEY_ID}={NEW}\n"));
    let switched = rx.requests().len();
    wait_until("requests accepted with only the new key known", || {
        statuses(&rx.requests()[switched..])
            .iter()
            .filter(|s| **s == 204)
            .count()
            >= 3
    })
    .await;
    running.assert_running();
    let stopped = running.terminate(Duration::from_secs(30)).await;
    stopped.assert_code(0);

    let requests = rx.requests();
    assert!(
        statuses(&requests).iter().all(|s| *s == 204),
        "a request was refused: {requests:?}"
    );
    // Every probe run's result stored once: as many distinct, increasing timestamps as the
    // target saw requests (the last run may have been cut by the stop).
    let stamps = rx.accepted_stamps("probe_success");
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "duplicates or disorder: {stamps:?}"
    );
    let (n, hits) = (stamps.len() as u64, target.hits());
    assert!(
        n == hits || n + 1 == hits,
        "{n} results stored for {hits} probe runs"
    );
    for secret in [OLD, NEW] {
        assert!(!stopped.stderr.contains(secret), "a secret key in the logs");
        assert!(
            !stopped.stdout.contains(secret),
            "a secret key in the output"
        );
    }
}
