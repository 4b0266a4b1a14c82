//! The `openai` probe against scriptable local OpenAI-compatible servers (raw TCP on port 0):
//! every outcome the probe classifies, asserted by behaviour, never by wall-clock time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushprobe::config::{OpenAiProbeSettings, DEFAULT_BUCKETS};
use pushprobe::pricing::{Price, PriceTable};
use pushprobe::probe::openai::classify::KeySource;
use pushprobe::probe::openai::metrics as m;
use pushprobe::probe::openai::{Check, OpenAiProbe, TokenLimitField};
use pushprobe::probe::{Detail, ProbeReport};
use pushprobe::series::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "sk-test-key-0123456789";
const MODEL: &str = "deepseek-v3.2";

/// What the server received.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Captured {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn stream(&self) -> bool {
        self.body.contains("\"stream\":true")
    }
}

/// One step of a scripted answer.
enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Keep the connection open, sending nothing, until the client goes away.
    Hang,
    /// Send chunked data forever (until the client goes away).
    Endless,
}

type Handler = Arc<dyn Fn(&Captured) -> Vec<Step> + Send + Sync>;

struct Server {
    base: String,
    log: Arc<Mutex<Vec<Captured>>>,
}

impl Server {
    fn paths(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                let kind = if c.stream() { " (stream)" } else { "" };
                format!("{} {}{kind}", c.method, c.path)
            })
            .collect()
    }

    fn requests(&self) -> Vec<Captured> {
        self.log.lock().unwrap().clone()
    }
}

async fn serve(handler: impl Fn(&Captured) -> Vec<Step> + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let task_log = log.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (handler, log) = (handler.clone(), task_log.clone());
            tokio::spawn(async move {
                let _ = handle(sock, handler, log).await;
            });
        }
    });
    Server {
        base: format!("http://{addr}/v1"),
        log,
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    handler: Handler,
    log: Arc<Mutex<Vec<Captured>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let captured = Captured {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    };
    log.lock().unwrap().push(captured.clone());
    for step in handler(&captured) {
        match step {
            Step::Send(bytes) => {
                sock.write_all(&bytes).await?;
                sock.flush().await?;
            }
            Step::Hang => {
                // Reads until the client closes: no timer, so nothing depends on timing.
                while sock.read(&mut tmp).await? > 0 {}
                return Ok(());
            }
            Step::Endless => {
                let piece = chunk(&"x".repeat(8192));
                loop {
                    sock.write_all(&piece).await?;
                }
            }
        }
    }
    sock.shutdown().await
}

/// An HTTPS server with a self-signed certificate for 127.0.0.1 expiring at `not_after`;
/// returns the server and the certificate's PEM, to trust it through `tls.ca_file`.
async fn serve_tls(
    handler: impl Fn(&Captured) -> Vec<Step> + Send + Sync + 'static,
) -> (Server, String, i64) {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2033, 1, 2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(pushprobe::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let task_log = log.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (handler, log, acceptor) = (handler.clone(), task_log.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(sock).await {
                    let _ = handle(tls, handler, log).await;
                }
            });
        }
    });
    let server = Server {
        base: format!("https://{addr}/v1"),
        log,
    };
    (server, cert.pem(), params.not_after.unix_timestamp())
}

fn reply(status: u16, extra_headers: &str, body: &str) -> Step {
    Step::Send(
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn stream_head() -> Step {
    Step::Send(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec(),
    )
}

fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

fn send_chunk(data: &str) -> Step {
    Step::Send(chunk(data))
}

fn end_chunks() -> Step {
    Step::Send(b"0\r\n\r\n".to_vec())
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"deepseek-v3.2"},{"id":"deepseek-reasoner"},{"id":"gpt-4.1"}]}"#;
const CHAT: &str = r#"{"id":"c1","model":"deepseek-chat","choices":[{"index":0,"message":{"role":"assistant","content":"pong"}}],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4}}}"#;

/// The SSE events of a good stream; `usage` adds the final usage chunk.
fn stream_events(usage: bool) -> Vec<String> {
    let mut v = vec![
        "data: {\"model\":\"deepseek-v3.2\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n".to_string(),
        ": keep-alive comment\r\n\r\n".to_string(),
        "data: {\"model\":\"deepseek-v3.2\",\"choices\":[{\"delta\":{\"content\":\"po\"}}]}\n\n".to_string(),
        "data: {\"model\":\"deepseek-v3.2\",\"choices\":[{\"delta\":{\"content\":\"ng\"}}]}\r\n\r\n".to_string(),
    ];
    if usage {
        v.push(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\n"
                .into(),
        );
    }
    v.push("data: [DONE]\n\n".into());
    v
}

/// A stream split at awkward places: inside `data:`, between `\r` and `\n`.
fn good_stream(usage: bool) -> Vec<Step> {
    let whole: String = stream_events(usage).concat();
    let mut steps = vec![stream_head()];
    let bytes = whole.as_bytes();
    let mut at = 0;
    for size in [3usize, 17, 1, 40, 7].iter().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        steps.push(send_chunk(std::str::from_utf8(&bytes[at..end]).unwrap()));
        at = end;
    }
    steps.push(end_chunks());
    steps
}

fn authorized(c: &Captured) -> bool {
    c.header("authorization") == Some(&format!("Bearer {KEY}"))
}

/// A well-behaved provider: 401 without the right key, else the usual answers.
fn good_provider(usage_in_stream: bool) -> impl Fn(&Captured) -> Vec<Step> + Send + Sync {
    move |c: &Captured| {
        if !authorized(c) {
            return vec![reply(
                401,
                "",
                r#"{"error":{"message":"Incorrect API key provided: sk-te****6789","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            )];
        }
        match (c.method.as_str(), c.path.as_str()) {
            ("GET", "/v1/models") => vec![reply(200, "", MODELS)],
            ("POST", "/v1/chat/completions") if c.stream() => good_stream(usage_in_stream),
            ("POST", "/v1/chat/completions") => vec![reply(200, "", CHAT)],
            _ => vec![reply(404, "", "{}")],
        }
    }
}

fn pricing() -> Arc<PriceTable> {
    let aliases = vec!["deepseek-chat".to_string()];
    Arc::new(
        PriceTable::new([(
            MODEL,
            Price {
                input_per_mtok: 0.5,
                output_per_mtok: 2.0,
                cached_input_per_mtok: Some(0.25),
                cache_write_per_mtok: None,
                cache_read_per_mtok: None,
            },
            aliases.as_slice(),
        )])
        .unwrap(),
    )
}

fn settings(base: &str, checks: &[Check]) -> OpenAiProbeSettings {
    let base_url = reqwest::Url::parse(base).unwrap();
    OpenAiProbeSettings {
        name: "relay".into(),
        provider: pushprobe::config::openai::provider_label(&base_url),
        base_url,
        key: KeySource::Env("RELAY_API_KEY".into()),
        model: MODEL.into(),
        checks: checks.to_vec(),
        prompt: "ping".into(),
        max_tokens: 5,
        token_limit_field: TokenLimitField::MaxTokens,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(20),
        max_probe_spend_per_day: None,
        headers: vec![("x-gateway".into(), "g1".into())],
        tls: Default::default(),
        proxy: Default::default(),
        labels: vec![("team".into(), "ai".into())],
        buckets: Arc::from(DEFAULT_BUCKETS),
        max_body_bytes: 1024 * 1024,
        pricing: pricing(),
        stall_threshold: Duration::from_secs(2),
        expect: None,
        temperature: None,
        seed: None,
        api: pushprobe::probe::openai::Api::Openai,
        anthropic_version: "2023-06-01".into(),
        embeddings: pushprobe::config::openai::EmbeddingSettings {
            model: MODEL.into(),
            input: "hello".into(),
            expected_dimensions: None,
        },
    }
}

fn env_with(key: Option<&str>) -> pushprobe::probe::openai::EnvLookup {
    let key = key.map(str::to_string);
    Arc::new(move |name| {
        assert_eq!(name, "RELAY_API_KEY");
        key.clone()
    })
}

// 2025-03-01T12:00:00Z.
const NOON: i64 = 1_740_830_400_000;
const DAY: i64 = 86_400_000;

fn probe_with(s: OpenAiProbeSettings, key: Option<&str>) -> (OpenAiProbe, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(NOON));
    let clock = now.clone();
    let p = OpenAiProbe::with_env(
        s,
        env_with(key),
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap();
    (p, now)
}

async fn run_once(s: OpenAiProbeSettings, key: Option<&str>) -> (ProbeReport, Registry) {
    let (mut p, _) = probe_with(s, key);
    let mut r = Registry::new();
    let report = p.run(&mut r).await;
    (report, r)
}

/// Labels of a `pushprobe_ai_*` series of `check`, plus `extra`.
fn at<'a>(check: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("probe", "relay"),
        ("team", "ai"),
        ("model", MODEL),
        ("check", check),
    ];
    v.extend_from_slice(extra);
    v
}

/// Value of one series, matched on the given labels plus the provider (host:port).
fn value(r: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    r.samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.metric_name() == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                && s.labels.len() == labels.len() + 2 // __name__ and provider
        })
        .map(|s| s.value)
}

/// Value of a per-probe series (no provider/model labels).
fn probe_value(r: &Registry, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("probe", "relay"), ("team", "ai")];
    labels.extend_from_slice(extra);
    r.samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.metric_name() == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                && s.labels.len() == labels.len() + 1
        })
        .map(|s| s.value)
}

fn reason_count(r: &Registry, check: &str, reason: &str) -> Option<f64> {
    let outcome = if reason == "ok" { "success" } else { "failure" };
    value(
        r,
        m::REQUESTS,
        &at(check, &[("outcome", outcome), ("reason", reason)]),
    )
}

fn assert_no_secrets(report: &ProbeReport, r: &Registry) {
    let text = format!("{report:?}");
    for secret in [KEY, "sk-te****6789", "pong", "Incorrect API key"] {
        assert!(!text.contains(secret), "report leaks {secret:?}: {text}");
    }
    for s in r.samples_at(0) {
        let l = s.labels.to_string();
        assert!(
            !l.contains(KEY) && !l.contains("ping") && !l.contains("pong"),
            "{l}"
        );
    }
}

#[tokio::test]
async fn all_checks_succeed_and_record_tokens_cost_and_ttft() {
    let server = serve(good_provider(true)).await;
    let s = settings(
        &server.base,
        &[Check::Models, Check::Chat, Check::ChatStream],
    );
    let (report, r) = run_once(s, Some(KEY)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(report.status, "ok");
    assert_eq!(
        server.paths(),
        [
            "GET /v1/models",
            "POST /v1/chat/completions",
            "POST /v1/chat/completions (stream)"
        ]
    );
    // Requests carry the key, the configured headers and the OpenAI request shape.
    let reqs = server.requests();
    assert!(reqs.iter().all(authorized));
    assert!(reqs.iter().all(|c| c.header("x-gateway") == Some("g1")));
    let body: serde_json::Value = serde_json::from_str(&reqs[2].body).unwrap();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 5);
    assert_eq!(body["messages"][0]["content"], "ping");
    assert_eq!(body["stream_options"]["include_usage"], true);

    for check in ["models", "chat", "chat_stream"] {
        assert_eq!(value(&r, m::UP, &at(check, &[])), Some(1.0), "{check}");
        assert_eq!(reason_count(&r, check, "ok"), Some(1.0), "{check}");
        assert_eq!(
            value(
                &r,
                &format!("{}_count", m::REQUEST_DURATION),
                &at(check, &[])
            ),
            Some(1.0)
        );
        for phase in ["resolve", "connect", "processing", "transfer"] {
            // Split by model and provider like every AI series.
            assert!(
                value(&r, m::PHASE_DURATION, &at(check, &[("phase", phase)])).is_some(),
                "{check} {phase}"
            );
        }
    }
    let base = [("probe", "relay"), ("team", "ai"), ("model", MODEL)];
    assert_eq!(value(&r, m::MODELS_AVAILABLE, &base), Some(3.0));
    assert_eq!(value(&r, m::MODEL_LISTED, &base), Some(1.0));

    // chat: 9 prompt tokens of which 4 cached, 2 completion; answered as the alias.
    let tokens = |check, kind| value(&r, m::TOKENS, &at(check, &[("kind", kind)]));
    assert_eq!(tokens("chat", "input"), Some(9.0));
    assert_eq!(tokens("chat", "cached_input"), Some(4.0));
    assert_eq!(tokens("chat", "output"), Some(2.0));
    let chat_cost = 5.0 * 0.5 / 1e6 + 4.0 * 0.25 / 1e6 + 2.0 * 2.0 / 1e6;
    assert_eq!(value(&r, m::COST, &at("chat", &[])), Some(chat_cost));
    assert_eq!(
        value(
            &r,
            m::RESPONSES,
            &at("chat", &[("served_model", "deepseek-chat")])
        ),
        Some(1.0)
    );
    // chat_stream: usage from the final chunk, a first token, a rate.
    assert_eq!(tokens("chat_stream", "output"), Some(3.0));
    let stream_cost = 9.0 * 0.5 / 1e6 + 0.0 * 0.25 / 1e6 + 3.0 * 2.0 / 1e6;
    assert_eq!(
        value(&r, m::COST, &at("chat_stream", &[])),
        Some(stream_cost)
    );
    let ttft = value(&r, &format!("{}_sum", m::TTFT), &at("chat_stream", &[])).unwrap();
    let total = value(
        &r,
        &format!("{}_sum", m::REQUEST_DURATION),
        &at("chat_stream", &[]),
    )
    .unwrap();
    assert!(ttft > 0.0 && ttft <= total, "ttft {ttft} total {total}");
    let tps = value(&r, m::TOKENS_PER_SECOND, &at("chat_stream", &[]));
    if total > ttft {
        assert!(tps.is_some_and(|t| t > 0.0), "{tps:?}");
    }
    // Published at 0 from the first run (so increase() sees a first occurrence), not counted.
    assert_eq!(
        value(&r, m::MISSING_USAGE, &at("chat_stream", &[])),
        Some(0.0)
    );
    assert_eq!(
        value(
            &r,
            m::PROBE_SUCCESS,
            &[("probe", "relay"), ("team", "ai"), ("model", MODEL)]
        ),
        Some(1.0)
    );
    assert_eq!(
        probe_value(&r, m::SPEND_TODAY, &[]),
        Some(chat_cost + stream_cost)
    );
    assert_eq!(probe_value(&r, m::SPEND_GUARD_ENGAGED, &[]), Some(0.0));
    // `check` shows tokens and cost, as exact numbers.
    let detail = |k: &str| {
        report
            .details
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("chat.input_tokens"), Some(Detail::Count(9)));
    assert_eq!(detail("chat.cached_input_tokens"), Some(Detail::Count(4)));
    assert_eq!(detail("chat.output_tokens"), Some(Detail::Count(2)));
    assert_eq!(
        detail("chat.cost_dollars"),
        Some(Detail::Dollars(chat_cost))
    );
    assert!(matches!(
        detail("chat_stream.time_to_first_token_seconds"),
        Some(Detail::Seconds(s)) if s > 0.0
    ));
    assert_no_secrets(&report, &r);
}

#[tokio::test]
async fn stream_without_usage_succeeds_and_counts_missing_usage() {
    let server = serve(good_provider(false)).await;
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream]), Some(KEY)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        value(&r, m::MISSING_USAGE, &at("chat_stream", &[])),
        Some(1.0)
    );
    // No usage: no tokens counted (the series exists at 0 from the first run).
    assert_eq!(
        value(&r, m::TOKENS, &at("chat_stream", &[("kind", "output")])),
        Some(0.0)
    );
    assert_eq!(value(&r, m::COST, &at("chat_stream", &[])), Some(0.0));
    assert_eq!(
        value(&r, m::TOKENS_PER_SECOND, &at("chat_stream", &[])),
        None
    );
    assert_eq!(
        value(&r, &format!("{}_count", m::TTFT), &at("chat_stream", &[])),
        Some(1.0)
    );
}

#[tokio::test]
async fn unauthorized_names_each_key_defect_without_the_key() {
    let cases: [(Option<&str>, &str); 5] = [
        (None, "api_key_env RELAY_API_KEY is not set"),
        (Some(""), "api_key_env RELAY_API_KEY is set but is empty"),
        (
            Some(" sk-test-key-0123456789 "),
            "api_key_env RELAY_API_KEY is set but has leading or trailing whitespace",
        ),
        (
            Some("sk-test-key-0123456789\n"),
            "api_key_env RELAY_API_KEY is set but ends with a newline",
        ),
        (
            Some("sk-revoked"),
            "the key from api_key_env RELAY_API_KEY is well-formed",
        ),
    ];
    for (key, want) in cases {
        let server = serve(good_provider(true)).await;
        let (report, r) = run_once(settings(&server.base, &[Check::Models]), key).await;
        assert!(!report.success);
        assert_eq!(report.status, "401");
        let reason = report.reason.clone().unwrap();
        assert!(reason.contains(want), "{key:?}: {reason}");
        // The provider's code says the key itself is invalid, a finer reason than "auth".
        assert_eq!(reason_count(&r, "models", "invalid_api_key"), Some(1.0));
        assert_eq!(value(&r, m::UP, &at("models", &[])), Some(0.0));
        assert_no_secrets(&report, &r);
        assert!(!reason.contains("sk-"), "{reason}");
    }
}

#[tokio::test]
async fn key_is_read_at_every_run() {
    let server = serve(good_provider(true)).await;
    let key = Arc::new(Mutex::new(None::<String>));
    let lookup = key.clone();
    let mut p = OpenAiProbe::with_env(
        settings(&server.base, &[Check::Models]),
        Arc::new(move |_| lookup.lock().unwrap().clone()),
        Arc::new(|| NOON),
    )
    .unwrap();
    let mut r = Registry::new();
    assert!(!p.run(&mut r).await.success);
    *key.lock().unwrap() = Some(KEY.into());
    assert!(p.run(&mut r).await.success);
}

#[tokio::test]
async fn status_failures_are_classified() {
    let cases: [(u16, &str, &str, &str); 5] = [
        (404, "", r#"{"error":{"message":"no"}}"#, "model_not_found"),
        (
            400,
            "",
            r#"{"error":{"code":"model_not_found","message":"The model zz-secret-zz is gone"}}"#,
            "model_not_found",
        ),
        (500, "", "{}", "server_error"),
        (503, "", "overloaded", "server_error"),
        (418, "", "", "http_error"),
    ];
    for (status, headers, body, reason) in cases {
        let server = serve(move |_| vec![reply(status, headers, body)]).await;
        let (report, r) = run_once(settings(&server.base, &[Check::Chat]), Some(KEY)).await;
        assert!(!report.success);
        assert_eq!(report.status, status.to_string());
        assert_eq!(
            reason_count(&r, "chat", reason),
            Some(1.0),
            "{status}: {report:?}"
        );
        assert!(!format!("{report:?}").contains("zz-secret-zz"));
    }
    // 404 on the model list points at base_url instead.
    let server = serve(|_| vec![reply(404, "", "")]).await;
    let (_, r) = run_once(settings(&server.base, &[Check::Models]), Some(KEY)).await;
    assert_eq!(reason_count(&r, "models", "not_found"), Some(1.0));
}

#[tokio::test]
async fn rate_limit_records_retry_after() {
    let server = serve(|_| vec![reply(429, "retry-after: 17\r\n", "{}")]).await;
    let (report, r) = run_once(settings(&server.base, &[Check::Chat]), Some(KEY)).await;
    assert_eq!(report.status, "429");
    assert!(report.reason.unwrap().contains("wait 17s"));
    assert_eq!(reason_count(&r, "chat", "rate_limited"), Some(1.0));
    assert_eq!(value(&r, m::RETRY_AFTER, &at("chat", &[])), Some(17.0));
}

#[tokio::test]
async fn slow_first_byte_times_out_in_the_processing_phase() {
    let server = serve(|_| vec![Step::Hang]).await;
    let mut s = settings(&server.base, &[Check::Chat]);
    s.timeout = Duration::from_millis(300);
    let (report, r) = run_once(s, Some(KEY)).await;
    assert_eq!(report.status, "timeout");
    let reason = report.reason.unwrap();
    assert!(reason.contains("phase processing"), "{reason}");
    assert_eq!(reason_count(&r, "chat", "timeout"), Some(1.0));
}

#[tokio::test]
async fn stalled_stream_times_out_in_the_transfer_phase() {
    let server = serve(|_| {
        vec![
            stream_head(),
            send_chunk("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"),
            Step::Hang,
        ]
    })
    .await;
    let mut s = settings(&server.base, &[Check::ChatStream]);
    s.timeout = Duration::from_millis(500);
    let (report, r) = run_once(s, Some(KEY)).await;
    assert!(report.reason.unwrap().contains("phase transfer"));
    assert_eq!(reason_count(&r, "chat_stream", "timeout"), Some(1.0));
}

#[tokio::test]
async fn malformed_and_incomplete_bodies_are_invalid_responses() {
    let bodies = [
        "{\"choices\": [",
        "<html>bad gateway</html>",
        r#"{"id":"x","object":"chat.completion"}"#,
        r#"{"choices":"nope"}"#,
    ];
    for body in bodies {
        let server = serve(move |_| vec![reply(200, "", body)]).await;
        let (report, r) = run_once(settings(&server.base, &[Check::Chat]), Some(KEY)).await;
        assert_eq!(report.status, "invalid_response", "{body}");
        assert_eq!(reason_count(&r, "chat", "invalid_response"), Some(1.0));
        assert!(!format!("{report:?}").contains("bad gateway"));
    }
    let server = serve(|_| vec![reply(200, "", r#"{"data":"x"}"#)]).await;
    let (report, _) = run_once(settings(&server.base, &[Check::Models]), Some(KEY)).await;
    assert_eq!(report.status, "invalid_response");
    // Chat without usage still succeeds.
    let server = serve(|_| vec![reply(200, "", r#"{"choices":[{"message":{}}]}"#)]).await;
    let (report, r) = run_once(settings(&server.base, &[Check::Chat]), Some(KEY)).await;
    assert!(report.success);
    assert_eq!(value(&r, m::MISSING_USAGE, &at("chat", &[])), Some(1.0));
}

#[tokio::test]
async fn model_missing_from_the_list_is_reported() {
    let server = serve(|_| vec![reply(200, "", r#"{"data":[{"id":"other"}]}"#)]).await;
    let (report, r) = run_once(settings(&server.base, &[Check::Models]), Some(KEY)).await;
    assert!(report.success);
    let base = [("probe", "relay"), ("team", "ai"), ("model", MODEL)];
    assert_eq!(value(&r, m::MODEL_LISTED, &base), Some(0.0));
    assert_eq!(value(&r, m::MODELS_AVAILABLE, &base), Some(1.0));
}

#[tokio::test]
async fn oversized_and_endless_bodies_fail_cleanly() {
    // Declared too large: refused before reading.
    let big = "x".repeat(4096);
    let server = serve(move |_| vec![reply(200, "", &big)]).await;
    let mut s = settings(&server.base, &[Check::Models]);
    s.max_body_bytes = 1024;
    let (report, r) = run_once(s, Some(KEY)).await;
    assert_eq!(report.status, "body_too_large");
    assert_eq!(reason_count(&r, "models", "body_too_large"), Some(1.0));
    // Endless chunked body: stops at the limit.
    let server = serve(|_| {
        vec![
            Step::Send(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                    .to_vec(),
            ),
            Step::Endless,
        ]
    })
    .await;
    let mut s = settings(&server.base, &[Check::Chat]);
    s.max_body_bytes = 64 * 1024;
    let (report, r) = run_once(s, Some(KEY)).await;
    assert_eq!(report.status, "body_too_large");
    assert_eq!(reason_count(&r, "chat", "body_too_large"), Some(1.0));
    // An endless stream with no line end hits the same limit.
    let server = serve(|_| vec![stream_head(), Step::Endless]).await;
    let mut s = settings(&server.base, &[Check::ChatStream]);
    s.max_body_bytes = 64 * 1024;
    let (report, _) = run_once(s, Some(KEY)).await;
    assert!(
        report.status == "body_too_large" || report.status == "invalid_response",
        "{report:?}"
    );
}

#[tokio::test]
async fn dropped_or_unfinished_streams_are_interrupted() {
    // Connection closed mid-stream (no final chunk).
    let server = serve(|_| {
        vec![
            stream_head(),
            send_chunk("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"),
        ]
    })
    .await;
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream]), Some(KEY)).await;
    assert_eq!(report.status, "stream_interrupted", "{report:?}");
    assert_eq!(
        reason_count(&r, "chat_stream", "stream_interrupted"),
        Some(1.0)
    );
    // Clean end of body, but no [DONE].
    let server = serve(|_| {
        vec![
            stream_head(),
            send_chunk("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"),
            end_chunks(),
        ]
    })
    .await;
    let (report, _) = run_once(settings(&server.base, &[Check::ChatStream]), Some(KEY)).await;
    assert_eq!(report.status, "stream_interrupted");
    assert!(report.reason.unwrap().contains("[DONE]"));
    // A server that ignores "stream": true and answers JSON.
    let server = serve(|_| vec![reply(200, "", CHAT)]).await;
    let (report, _) = run_once(settings(&server.base, &[Check::ChatStream]), Some(KEY)).await;
    assert_eq!(report.status, "invalid_response");
    // An error event inside the stream.
    let server = serve(|_| {
        vec![
            stream_head(),
            send_chunk("data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
            end_chunks(),
        ]
    })
    .await;
    let (report, _) = run_once(settings(&server.base, &[Check::ChatStream]), Some(KEY)).await;
    assert_eq!(report.status, "server_error");
}

#[tokio::test]
async fn connection_refused_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (report, r) = run_once(
        settings(&format!("http://{addr}/v1"), &[Check::Models]),
        Some(KEY),
    )
    .await;
    assert_eq!(report.status, "connect");
    assert_eq!(reason_count(&r, "models", "connect"), Some(1.0));
}

#[tokio::test]
async fn a_proxy_that_is_down_or_refuses_is_reason_proxy() {
    use pushprobe::http_client::proxy::{Proxy, ProxySettings};
    // A proxy that answers 407 to every forwarded request.
    let refusing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refusing_addr = refusing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = refusing.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
    });
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    for proxy in [refusing_addr, down] {
        let p = Proxy {
            url: reqwest::Url::parse(&format!("http://{proxy}")).unwrap(),
            auth: None,
            connect_headers: Vec::new(),
        };
        let mut s = settings("http://api.example.invalid/v1", &[Check::Models]);
        s.proxy = ProxySettings {
            http: Some(p.clone()),
            https: Some(p),
            no_proxy: Default::default(),
        };
        let (report, r) = run_once(s, Some(KEY)).await;
        assert_eq!(report.status, "proxy", "{report:?}");
        assert!(
            report
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains(&proxy.to_string()),
            "{report:?}"
        );
        assert_eq!(reason_count(&r, "models", "proxy"), Some(1.0));
        assert_no_secrets(&report, &r);
    }
}

#[tokio::test]
async fn unpriced_model_counts_tokens_but_no_cost() {
    let chat = r#"{"model":"gpt-4.1-mini","choices":[{}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    let server = serve(move |_| vec![reply(200, "", chat)]).await;
    let (report, r) = run_once(settings(&server.base, &[Check::Chat]), Some(KEY)).await;
    assert!(report.success);
    assert_eq!(value(&r, m::UNPRICED, &at("chat", &[])), Some(1.0));
    // No price, no cost added: the counter stays at the 0 it starts at.
    assert_eq!(value(&r, m::COST, &at("chat", &[])), Some(0.0));
    assert_eq!(
        value(&r, m::TOKENS, &at("chat", &[("kind", "input")])),
        Some(3.0)
    );
    assert_eq!(
        value(&r, m::RESPONSES, &at("chat", &[("served_model", "other")])),
        Some(1.0)
    );
}

#[tokio::test]
async fn spend_guard_pauses_paid_checks_until_utc_midnight() {
    let server = serve(good_provider(true)).await;
    let mut s = settings(
        &server.base,
        &[Check::Models, Check::Chat, Check::ChatStream],
    );
    // One chat costs 5*0.5/1e6 + 4*0.25/1e6 + 2*2/1e6 = 7.5e-6 dollars: the limit is below it.
    s.max_probe_spend_per_day = Some(5e-6);
    let (mut p, clock) = probe_with(s, Some(KEY));
    let mut r = Registry::new();
    let report = p.run(&mut r).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        server.paths(),
        ["GET /v1/models", "POST /v1/chat/completions"]
    );
    assert_eq!(probe_value(&r, m::SPEND_GUARD_ENGAGED, &[]), Some(1.0));
    assert_eq!(
        value(
            &r,
            m::SKIPPED,
            &at("chat_stream", &[("reason", "spend_guard")])
        ),
        Some(1.0)
    );

    // Later the same UTC day: only the free check runs; the paused checks have no `up`.
    clock.store(NOON + 11 * 3_600_000 + 59 * 60_000, Ordering::SeqCst);
    p.run(&mut r).await;
    assert_eq!(server.paths().len(), 3);
    assert_eq!(server.paths()[2], "GET /v1/models");
    assert_eq!(value(&r, m::UP, &at("chat", &[])), None);
    assert_eq!(value(&r, m::UP, &at("models", &[])), Some(1.0));

    // 00:00 UTC: the paid checks resume and the day's spend starts again.
    clock.store(NOON - 12 * 3_600_000 + DAY, Ordering::SeqCst);
    p.run(&mut r).await;
    assert_eq!(
        &server.paths()[3..],
        ["GET /v1/models", "POST /v1/chat/completions"]
    );
    assert_eq!(value(&r, m::UP, &at("chat", &[])), Some(1.0));
    let spent = 5.0 * 0.5 / 1e6 + 4.0 * 0.25 / 1e6 + 2.0 * 2.0 / 1e6;
    assert_eq!(probe_value(&r, m::SPEND_TODAY, &[]), Some(spent));
}

#[tokio::test]
async fn https_records_tls_phase_and_certificate_expiry() {
    let (server, pem, not_after) = serve_tls(good_provider(true)).await;
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), pem).unwrap();
    let mut s = settings(&server.base, &[Check::Models, Check::ChatStream]);
    s.tls.ca_file = Some(ca.path().to_path_buf());
    let (report, r) = run_once(s, Some(KEY)).await;
    assert!(report.success, "{report:?}");
    assert_eq!(
        probe_value(&r, "probe_ssl_earliest_cert_expiry", &[]),
        Some(not_after as f64)
    );
    assert!(
        value(&r, m::PHASE_DURATION, &at("models", &[("phase", "tls")])).is_some_and(|t| t > 0.0)
    );
    // Without the CA the handshake fails, classified as tls.
    let mut s = settings(&server.base, &[Check::Models]);
    s.tls.ca_file = None;
    let (report, r) = run_once(s, Some(KEY)).await;
    assert_eq!(report.status, "tls");
    assert_eq!(reason_count(&r, "models", "tls"), Some(1.0));
}

#[tokio::test]
async fn without_a_key_no_authorization_header_is_sent() {
    let server = serve(|c: &Captured| match c.header("authorization") {
        Some(_) => vec![reply(400, "", r#"{"error":{"message":"no key expected"}}"#)],
        None => vec![reply(200, "", MODELS)],
    })
    .await;
    let mut s = settings(&server.base, &[Check::Models]);
    s.key = KeySource::None;
    let (report, _) = run_once(s, None).await;
    assert!(report.success, "{report:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), None);
    assert_eq!(reqs[0].header("x-gateway"), Some("g1"));
}
