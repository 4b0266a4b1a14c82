//! The AI probe with `api = "anthropic"` and the `embeddings` check, against scripted local
//! servers (raw TCP on port 0): the faults a real relay cannot be made to produce (events out
//! of order, an overloaded 529, cache usage, malformed usage, a wrong embedding size).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushprobe::config::openai::EmbeddingSettings;
use pushprobe::config::{OpenAiProbeSettings, DEFAULT_BUCKETS};
use pushprobe::pricing::{Price, PriceTable};
use pushprobe::probe::openai::classify::KeySource;
use pushprobe::probe::openai::metrics as m;
use pushprobe::probe::openai::signals as sig;
use pushprobe::probe::openai::{Api, Check, OpenAiProbe, TokenLimitField};
use pushprobe::probe::{Detail, ProbeReport};
use pushprobe::series::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const KEY: &str = "sk-ant-test-0123456789";
const MODEL: &str = "claude-sonnet-4-5";
const EMBEDDING_MODEL: &str = "text-embedding-3-small";

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

/// How long an empty piece of a scripted answer pauses.
const PAUSE: Duration = Duration::from_millis(600);

type Handler = Arc<dyn Fn(&Captured) -> Vec<Vec<u8>> + Send + Sync>;

/// Serves every connection with `handler`'s writes, then closes; returns the base URL and
/// the requests received.
async fn serve(
    handler: impl Fn(&Captured) -> Vec<Vec<u8>> + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Captured>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let task_log = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (handler, log) = (handler.clone(), task_log.clone());
            tokio::spawn(async move {
                let Some(c) = read_request(&mut sock).await else {
                    return;
                };
                log.lock().unwrap().push(c.clone());
                for piece in handler(&c) {
                    // An empty piece is a pause: the gap a stalling provider leaves.
                    if piece.is_empty() {
                        tokio::time::sleep(PAUSE).await;
                        continue;
                    }
                    if sock.write_all(&piece).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), log)
}

/// The request, its body as text.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Captured> {
    let r = common::request::read_request(sock).await?;
    Some(Captured {
        body: String::from_utf8_lossy(&r.body).into_owned(),
        method: r.method,
        path: r.path,
        headers: r.headers,
    })
}

fn reply(status: u16, body: &str) -> Vec<Vec<u8>> {
    vec![format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()]
}

/// A chunked event stream of `events` (each `(event, data)`), optionally cut before its end.
fn sse(events: &[(&str, &str)], complete: bool) -> Vec<Vec<u8>> {
    let mut out = vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec()];
    for (event, data) in events {
        let text = format!("event: {event}\ndata: {data}\n\n");
        out.push(format!("{:x}\r\n{text}\r\n", text.len()).into_bytes());
    }
    if complete {
        out.push(b"0\r\n\r\n".to_vec());
    }
    out
}

const MODELS: &str = r#"{"data":[{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5"},{"type":"model","id":"claude-haiku-4-5"}],"has_more":false}"#;
const MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"pong"}],"stop_reason":"max_tokens","usage":{"input_tokens":8,"cache_creation_input_tokens":1000,"cache_read_input_tokens":4000,"output_tokens":5}}"#;
const START: &str = r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":8,"cache_creation_input_tokens":0,"cache_read_input_tokens":4000,"output_tokens":1}}}"#;
const DELTA_PO: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"po"}}"#;
const DELTA_NG: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ng"}}"#;
const MESSAGE_DELTA: &str =
    r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#;
const STOP: &str = r#"{"type":"message_stop"}"#;

fn good_events() -> Vec<(&'static str, &'static str)> {
    vec![
        ("message_start", START),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        ("ping", r#"{"type":"ping"}"#),
        ("content_block_delta", DELTA_PO),
        ("content_block_delta", DELTA_NG),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        ("message_delta", MESSAGE_DELTA),
        ("message_stop", STOP),
    ]
}

/// Anthropic's API: `x-api-key` and `anthropic-version` required, else its 401 body.
fn anthropic(stream: Vec<(&'static str, &'static str)>) -> impl Fn(&Captured) -> Vec<Vec<u8>> {
    move |c: &Captured| {
        if c.header("x-api-key") != Some(KEY) || c.header("anthropic-version").is_none() {
            return reply(
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            );
        }
        match (c.method.as_str(), c.path.as_str()) {
            ("GET", "/v1/models") => reply(200, MODELS),
            ("POST", "/v1/messages") if c.stream() => sse(&stream, true),
            ("POST", "/v1/messages") => reply(200, MESSAGE),
            _ => reply(
                404,
                r#"{"type":"error","error":{"type":"not_found_error"}}"#,
            ),
        }
    }
}

fn pricing() -> Arc<PriceTable> {
    let none: Vec<String> = Vec::new();
    Arc::new(
        PriceTable::new([
            (
                MODEL,
                Price {
                    input_per_mtok: 3.0,
                    output_per_mtok: 15.0,
                    cached_input_per_mtok: None,
                    cache_write_per_mtok: Some(3.75),
                    cache_read_per_mtok: Some(0.3),
                },
                none.as_slice(),
            ),
            (
                EMBEDDING_MODEL,
                Price {
                    input_per_mtok: 0.02,
                    output_per_mtok: 0.0,
                    cached_input_per_mtok: None,
                    cache_write_per_mtok: None,
                    cache_read_per_mtok: None,
                },
                none.as_slice(),
            ),
        ])
        .unwrap(),
    )
}

fn settings(base: &str, api: Api, checks: &[Check]) -> OpenAiProbeSettings {
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
        headers: vec![],
        tls: Default::default(),
        proxy: Default::default(),
        labels: vec![],
        buckets: Arc::from(DEFAULT_BUCKETS),
        max_body_bytes: 1024 * 1024,
        pricing: pricing(),
        api,
        anthropic_version: "2023-06-01".into(),
        embeddings: EmbeddingSettings {
            model: EMBEDDING_MODEL.into(),
            input: "hello".into(),
            expected_dimensions: None,
        },
        stall_threshold: Duration::from_secs(2),
        expect: None,
        temperature: None,
        seed: None,
    }
}

async fn run_once(s: OpenAiProbeSettings) -> (ProbeReport, Registry) {
    let mut p = OpenAiProbe::with_env(
        s,
        Arc::new(|name| (name == "RELAY_API_KEY").then(|| KEY.to_string())),
        Arc::new(|| 1_740_830_400_000),
    )
    .unwrap();
    let mut r = Registry::new();
    let report = p.run(&mut r).await;
    (report, r)
}

/// Value of the series `name` with exactly the probe's labels, `check` and `extra`.
fn value(r: &Registry, name: &str, check: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let mut labels = vec![("probe", "relay"), ("model", MODEL), ("check", check)];
    labels.extend_from_slice(extra);
    r.samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.metric_name() == name
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
                && s.labels.len() == labels.len() + 2 // __name__ and provider
        })
        .map(|s| s.value)
}

fn reason(r: &Registry, check: &str, reason: &str) -> Option<f64> {
    let outcome = if reason == "ok" { "success" } else { "failure" };
    value(
        r,
        m::REQUESTS,
        check,
        &[("outcome", outcome), ("reason", reason)],
    )
}

fn detail<'a>(report: &'a ProbeReport, key: &str) -> Option<&'a Detail> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, d)| d)
}

#[tokio::test]
async fn messages_api_plain_and_streamed_with_cache_usage_and_cost() {
    let (base, log) = serve(anthropic(good_events())).await;
    let s = settings(
        &base,
        Api::Anthropic,
        &[Check::Models, Check::Chat, Check::ChatStream],
    );
    let (report, r) = run_once(s).await;
    assert!(report.success, "{report:?}");
    let requests = log.lock().unwrap().clone();
    let seen: Vec<String> = requests
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(
        seen,
        ["GET /v1/models", "POST /v1/messages", "POST /v1/messages"]
    );
    for c in &requests {
        assert_eq!(c.header("x-api-key"), Some(KEY));
        assert_eq!(c.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(
            c.header("authorization"),
            None,
            "no bearer key for Anthropic"
        );
    }
    let body: serde_json::Value = serde_json::from_str(&requests[2].body).unwrap();
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 5);
    assert_eq!(body["stream"], true);
    assert_eq!(body["messages"][0]["content"], "ping");

    // Plain: 8 fresh + 1000 written + 4000 read; streamed: 8 fresh + 4000 read, 2 output.
    let tokens = |check, kind| value(&r, m::TOKENS, check, &[("kind", kind)]);
    assert_eq!(tokens("chat", "input"), Some(5008.0));
    assert_eq!(tokens("chat", "cache_write"), Some(1000.0));
    assert_eq!(tokens("chat", "cached_input"), Some(4000.0));
    assert_eq!(tokens("chat", "output"), Some(5.0));
    assert_eq!(tokens("chat_stream", "input"), Some(4008.0));
    assert_eq!(tokens("chat_stream", "cache_write"), Some(0.0));
    assert_eq!(tokens("chat_stream", "output"), Some(2.0));
    let chat_cost = 8.0 * 3.0 / 1e6 + 4000.0 * 0.3 / 1e6 + 1000.0 * 3.75 / 1e6 + 5.0 * 15.0 / 1e6;
    assert_eq!(value(&r, m::COST, "chat", &[]), Some(chat_cost));
    assert_eq!(
        detail(&report, "chat.cache_write_input_tokens"),
        Some(&Detail::Count(1000))
    );
    assert_eq!(
        detail(&report, "models.model_listed"),
        Some(&Detail::Flag(true))
    );
    assert_eq!(reason(&r, "chat_stream", "ok"), Some(1.0));
    assert!(detail(&report, "chat_stream.time_to_first_token_seconds").is_some());
    assert!(!format!("{report:?}").contains(KEY));
}

#[tokio::test]
async fn a_wrong_key_is_invalid_api_key_and_the_key_is_never_shown() {
    let (base, _) = serve(anthropic(good_events())).await;
    let mut s = settings(&base, Api::Anthropic, &[Check::Chat]);
    s.key = KeySource::Env("OTHER".into());
    let (report, r) = run_once(s).await;
    assert!(!report.success);
    assert_eq!(report.status, "401");
    // Anthropic's 401 body says `authentication_error`: the finer reason, with the key's
    // state named in the message.
    assert_eq!(reason(&r, "chat", "invalid_api_key"), Some(1.0));
    let why = report.reason.clone().unwrap();
    assert!(why.contains("OTHER is not set"), "{why}");
    assert!(!format!("{report:?}").contains("invalid x-api-key"));
}

#[tokio::test]
async fn events_out_of_order_are_an_invalid_response() {
    let events = vec![
        ("content_block_delta", DELTA_PO),
        ("message_start", START),
        ("message_stop", STOP),
    ];
    let (base, _) = serve(anthropic(events)).await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::ChatStream])).await;
    assert_eq!(reason(&r, "chat_stream", "invalid_response"), Some(1.0));
    let why = report.reason.unwrap();
    assert!(
        why.contains("stream event content_block_delta arrived before message_start"),
        "{why}"
    );
}

#[tokio::test]
async fn message_delta_twice_and_unknown_events_still_succeed() {
    let events = vec![
        ("message_start", START),
        ("future_event", r#"{"type":"future_event","x":{"y":[1]}}"#),
        ("content_block_delta", DELTA_PO),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}"#,
        ),
        ("message_delta", MESSAGE_DELTA),
        ("message_stop", STOP),
    ];
    let (base, _) = serve(anthropic(events)).await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::ChatStream])).await;
    assert!(report.success, "{report:?}");
    // The later cumulative count wins.
    assert_eq!(
        value(&r, m::TOKENS, "chat_stream", &[("kind", "output")]),
        Some(2.0)
    );
}

#[tokio::test]
async fn overloaded_answers_and_error_events_fail_as_the_provider_s() {
    // Anthropic's 529 with its overloaded body.
    let (base, _) = serve(|_: &Captured| {
        reply(
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    })
    .await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::Chat])).await;
    assert_eq!(report.status, "529");
    assert_eq!(reason(&r, "chat", "overloaded"), Some(1.0), "{report:?}");
    assert_eq!(reason(&r, "chat", "server_error"), None);
    // An error event in the middle of a stream.
    let events = vec![
        ("message_start", START),
        ("content_block_delta", DELTA_PO),
        (
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
    ];
    let (base, _) = serve(anthropic(events)).await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::ChatStream])).await;
    // Classified like the HTTP error it stands for, and counted as a stream anomaly.
    assert_eq!(reason(&r, "chat_stream", "overloaded"), Some(1.0));
    assert_eq!(reason(&r, "chat_stream", "server_error"), None);
    assert_eq!(
        value(
            &r,
            sig::ANOMALIES,
            "chat_stream",
            &[("anomaly", "error_event")]
        ),
        Some(1.0)
    );
    let why = report.reason.unwrap();
    assert!(why.contains("the stream carried an error event"), "{why}");
    assert!(why.contains("overloaded"), "{why}");
    assert!(!why.contains("Overloaded\""), "{why}");
}

#[tokio::test]
async fn a_cut_stream_is_interrupted() {
    let (base, _) = serve(|c: &Captured| {
        if c.stream() {
            sse(
                &[("message_start", START), ("content_block_delta", DELTA_PO)],
                false,
            )
        } else {
            reply(200, MESSAGE)
        }
    })
    .await;
    let mut s = settings(&base, Api::Anthropic, &[Check::ChatStream]);
    s.key = KeySource::None;
    let (report, r) = run_once(s).await;
    assert_eq!(reason(&r, "chat_stream", "stream_interrupted"), Some(1.0));
    assert!(
        report.reason.unwrap().contains("before message_stop"),
        "names Anthropic's end event"
    );
}

#[tokio::test]
async fn malformed_usage_is_missing_and_huge_usage_is_invalid_never_a_cost() {
    let negative = r#"{"type":"message","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":-8,"output_tokens":"5"}}"#;
    let huge = r#"{"type":"message","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"output_tokens":1}}"#;
    for (body, counter) in [(negative, m::MISSING_USAGE), (huge, m::INVALID_USAGE)] {
        let (base, _) = serve(move |_: &Captured| reply(200, body)).await;
        let mut s = settings(&base, Api::Anthropic, &[Check::Chat]);
        s.key = KeySource::None;
        let (report, r) = run_once(s).await;
        assert!(report.success, "{report:?}");
        assert_eq!(value(&r, counter, "chat", &[]), Some(1.0), "{counter}");
        assert_eq!(value(&r, m::COST, "chat", &[]), Some(0.0));
        assert_eq!(
            value(&r, m::TOKENS, "chat", &[("kind", "input")]),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn embeddings_dimensions_tokens_and_cost() {
    let (base, log) = serve(|c: &Captured| match c.path.as_str() {
        "/v1/embeddings" => reply(
            200,
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,-0.3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}"#,
        ),
        _ => reply(404, "{}"),
    })
    .await;
    let (report, r) = run_once(settings(&base, Api::Openai, &[Check::Embeddings])).await;
    assert!(report.success, "{report:?}");
    let c = log.lock().unwrap()[0].clone();
    assert_eq!(c.header("authorization"), Some(&*format!("Bearer {KEY}")));
    let body: serde_json::Value = serde_json::from_str(&c.body).unwrap();
    assert_eq!(body["model"], EMBEDDING_MODEL);
    assert_eq!(body["input"], "hello");
    assert_eq!(
        value(&r, m::EMBEDDING_DIMENSIONS, "embeddings", &[]),
        Some(3.0)
    );
    assert_eq!(
        value(&r, m::TOKENS, "embeddings", &[("kind", "input")]),
        Some(2.0)
    );
    assert_eq!(
        value(&r, m::COST, "embeddings", &[]),
        Some(2.0 * 0.02 / 1e6)
    );
    assert_eq!(
        detail(&report, "embeddings.dimensions"),
        Some(&Detail::Count(3))
    );

    // The configured size differs: a failure naming both numbers.
    let mut s = settings(&base, Api::Openai, &[Check::Embeddings]);
    s.embeddings.expected_dimensions = Some(1536);
    let (report, r) = run_once(s).await;
    assert_eq!(reason(&r, "embeddings", "invalid_response"), Some(1.0));
    let why = report.reason.unwrap();
    assert!(
        why.contains("the embedding has 3 dimensions, expected_dimensions is 1536"),
        "{why}"
    );
}

/// A chunked event stream with extra response headers; an event named `PAUSE_EVENT` is a
/// pause instead.
fn sse_with(headers: &str, events: &[(&str, &str)], complete: bool) -> Vec<Vec<u8>> {
    let mut out = vec![format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n{headers}transfer-encoding: chunked\r\nconnection: close\r\n\r\n").into_bytes()];
    for (event, data) in events {
        if *event == PAUSE_EVENT {
            out.push(Vec::new());
            continue;
        }
        let text = format!("event: {event}\ndata: {data}\n\n");
        out.push(format!("{:x}\r\n{text}\r\n", text.len()).into_bytes());
    }
    if complete {
        out.push(b"0\r\n\r\n".to_vec());
    }
    out
}

const PAUSE_EVENT: &str = "(pause)";
const THINKING: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The capital of France"}}"#;
const DELTA_PAR: &str =
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Par"}}"#;
const DELTA_IS: &str =
    r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"is"}}"#;
/// Anthropic's headers with little left: 3 of 1000 requests, 100 of 80000 output tokens.
/// The clock of `run_once` is 2025-03-01T12:00:00Z, so the request window resets in 30 s.
const LOW_HEADROOM: &str = "anthropic-ratelimit-requests-limit: 1000\r\nanthropic-ratelimit-requests-remaining: 3\r\nanthropic-ratelimit-requests-reset: 2025-03-01T12:00:30Z\r\nanthropic-ratelimit-output-tokens-limit: 80000\r\nanthropic-ratelimit-output-tokens-remaining: 100\r\n";

#[tokio::test]
async fn an_anthropic_stream_feeds_timing_finish_reasons_headroom_and_expect() {
    let events = vec![
        ("message_start", START),
        ("content_block_delta", THINKING),
        ("content_block_delta", DELTA_PAR),
        (PAUSE_EVENT, ""),
        ("content_block_delta", DELTA_IS),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":5}}"#,
        ),
        ("message_stop", STOP),
    ];
    let (base, log) = serve(move |_: &Captured| sse_with(LOW_HEADROOM, &events, true)).await;
    let mut s = settings(&base, Api::Anthropic, &[Check::ChatStream]);
    s.stall_threshold = Duration::from_millis(300);
    s.expect = Some(pushprobe::probe::openai::expect::Expect::regex("(?i)paris").unwrap());
    s.temperature = Some(0.0);
    let (report, r) = run_once(s).await;
    assert!(report.success, "{report:?}");
    let body: serde_json::Value = serde_json::from_str(&log.lock().unwrap()[0].body).unwrap();
    assert_eq!(body["temperature"], 0.0);
    assert!(body.get("seed").is_none(), "Anthropic has no seed");

    let v = |name: &str, extra: &[(&str, &str)]| value(&r, name, "chat_stream", extra);
    let count = |name: &str| v(&format!("{name}_count"), &[]);
    // Thinking first, then visible text: both first tokens, and two gaps across them.
    assert_eq!(count(sig::TTFRT), Some(1.0));
    assert_eq!(count(m::TTFT), Some(1.0));
    assert_eq!(count(sig::INTER_TOKEN_GAP), Some(2.0));
    // The paused gap is at least the pause, so at least one stall.
    let longest = v(sig::LONGEST_GAP, &[]).unwrap();
    assert!(longest >= PAUSE.as_secs_f64(), "{longest}");
    let stalls = v(sig::STALLS, &[]).unwrap();
    assert!((1.0..=2.0).contains(&stalls), "{stalls}");
    // stop_reason max_tokens is finish_reason length.
    assert_eq!(
        v(sig::FINISH_REASONS, &[("finish_reason", "length")]),
        Some(1.0)
    );
    assert_eq!(
        v(sig::FINISH_REASONS, &[("finish_reason", "stop")]),
        Some(0.0)
    );
    for a in ["missing_done", "error_event", "missing_usage"] {
        assert_eq!(v(sig::ANOMALIES, &[("anomaly", a)]), Some(0.0), "{a}");
    }
    // Anthropic's rate-limit headers.
    let rl = |name: &str, res: &str| v(name, &[("resource", res)]);
    assert_eq!(rl(sig::RATELIMIT_LIMIT, "requests"), Some(1000.0));
    assert_eq!(rl(sig::RATELIMIT_REMAINING, "requests"), Some(3.0));
    assert_eq!(rl(sig::RATELIMIT_RESET, "requests"), Some(30.0));
    assert_eq!(rl(sig::RATELIMIT_REMAINING, "output_tokens"), Some(100.0));
    let Some(Detail::Text(headroom)) = detail(&report, "chat_stream.ratelimit_headroom") else {
        panic!("{report:?}");
    };
    assert!(headroom.contains("output_tokens"), "{headroom}");
    // The answering model is the requested one.
    assert_eq!(v(sig::MODEL_MISMATCHES, &[]), Some(0.0));
}

#[tokio::test]
async fn an_anthropic_stream_without_message_stop_or_usage_is_an_anomaly() {
    // A stream that ends cleanly at the transport level but never says message_stop.
    let events = vec![("message_start", START), ("content_block_delta", DELTA_PO)];
    let (base, _) = serve(move |_: &Captured| sse_with("", &events, true)).await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::ChatStream])).await;
    assert!(!report.success);
    let v = |r: &Registry, a: &str| value(r, sig::ANOMALIES, "chat_stream", &[("anomaly", a)]);
    assert_eq!(v(&r, "missing_done"), Some(1.0));
    assert_eq!(reason(&r, "chat_stream", "stream_interrupted"), Some(1.0));
    // message_delta without usage: the output count never arrived.
    let events = vec![
        ("message_start", START),
        ("content_block_delta", DELTA_PO),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
        ),
        ("message_stop", STOP),
    ];
    let (base, _) = serve(move |_: &Captured| sse_with("", &events, true)).await;
    let (report, r) = run_once(settings(&base, Api::Anthropic, &[Check::ChatStream])).await;
    assert!(report.success, "{report:?}");
    assert_eq!(v(&r, "missing_usage"), Some(1.0));
    assert_eq!(v(&r, "missing_done"), Some(0.0));
    assert_eq!(
        value(
            &r,
            sig::FINISH_REASONS,
            "chat_stream",
            &[("finish_reason", "stop")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn anthropic_answers_are_checked_and_their_model_compared() {
    // Another model answers "pong": a substitution, and an answer that fails `expect`.
    let other = MESSAGE.replace("claude-sonnet-4-5", "claude-haiku-4-5");
    let (base, _) = serve(move |_: &Captured| reply(200, &other)).await;
    let mut s = settings(&base, Api::Anthropic, &[Check::Chat]);
    s.expect = Some(pushprobe::probe::openai::expect::Expect::regex("(?i)paris").unwrap());
    let (report, r) = run_once(s).await;
    assert_eq!(
        reason(&r, "chat", "answer_mismatch"),
        Some(1.0),
        "{report:?}"
    );
    assert_eq!(value(&r, sig::MODEL_MISMATCHES, "chat", &[]), Some(1.0));
    assert_eq!(
        value(
            &r,
            sig::ANSWERING_MODEL_INFO,
            "chat",
            &[
                ("requested_model", MODEL),
                ("answering_model", "claude-haiku-4-5")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &r,
            sig::FINISH_REASONS,
            "chat",
            &[("finish_reason", "length")]
        ),
        Some(1.0)
    );
    assert!(
        !format!("{report:?}").contains("pong"),
        "never quotes the answer"
    );
    // The same answer passes a check it matches.
    let (base, _) = serve(|_: &Captured| reply(200, MESSAGE)).await;
    let mut s = settings(&base, Api::Anthropic, &[Check::Chat]);
    s.expect = Some(pushprobe::probe::openai::expect::Expect::regex("^po").unwrap());
    let (report, _) = run_once(s).await;
    assert!(report.success, "{report:?}");
    // An error object in a 200 body is classified like the HTTP error it stands for.
    let (base, _) = serve(|_: &Captured| {
        reply(
            200,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
    })
    .await;
    let (_, r) = run_once(settings(&base, Api::Anthropic, &[Check::Chat])).await;
    assert_eq!(reason(&r, "chat", "overloaded"), Some(1.0));
}

#[tokio::test]
async fn embeddings_record_the_answering_model_and_headroom() {
    let (base, _) = serve(|_: &Captured| {
        let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-ada-002","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        vec![format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-ratelimit-limit-requests: 500\r\nx-ratelimit-remaining-requests: 7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()]
    })
    .await;
    let (report, r) = run_once(settings(&base, Api::Openai, &[Check::Embeddings])).await;
    assert!(report.success, "{report:?}");
    let at = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![
            ("probe", "relay"),
            ("model", MODEL),
            ("check", "embeddings"),
        ];
        labels.extend_from_slice(extra);
        r.samples_at(0)
            .into_iter()
            .find(|s| {
                s.labels.metric_name() == name
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| s.value)
    };
    // Compared with the embedding model asked for, not the chat model.
    assert_eq!(at(sig::MODEL_MISMATCHES, &[]), Some(1.0));
    assert_eq!(
        at(
            sig::ANSWERING_MODEL_INFO,
            &[
                ("requested_model", EMBEDDING_MODEL),
                ("answering_model", "text-embedding-ada-002")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        at(sig::RATELIMIT_REMAINING, &[("resource", "requests")]),
        Some(7.0)
    );
    // No stream series for embeddings.
    assert_eq!(at(sig::STALLS, &[]), None);
    assert_eq!(at(&format!("{}_count", sig::INTER_TOKEN_GAP), &[]), None);
    assert_eq!(at(sig::FINISH_REASONS, &[("finish_reason", "stop")]), None);
}

/// A `tracing` writer into a shared buffer.
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_x_api_key_never_reaches_a_log_line() {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = buf.clone();
        move || LogBuf(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(writer)
        .finish();
    // This test's runtime has one thread, so everything the probe and the client log is here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (base, log) = serve(anthropic(good_events())).await;
    let mut s = settings(
        &base,
        Api::Anthropic,
        &[Check::Models, Check::Chat, Check::ChatStream],
    );
    // An unpriced answering model is logged, so the capture has a line to check.
    s.pricing = Arc::new(PriceTable::default());
    let (ok, _) = run_once(s).await;
    assert!(ok.success, "{ok:?}");
    // A server refusing the key, quoting it in its error body.
    let (refused, _) = {
        let (base, _) = serve(|_: &Captured| {
            reply(
                401,
                &format!(r#"{{"type":"error","error":{{"type":"authentication_error","message":"bad key {KEY}"}}}}"#),
            )
        })
        .await;
        run_once(settings(&base, Api::Anthropic, &[Check::Chat])).await
    };
    assert_eq!(refused.status, "401");
    assert_eq!(
        log.lock().unwrap()[0].header("x-api-key"),
        Some(KEY),
        "the key was sent"
    );
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    assert!(text.contains("has no [pricing] entry"), "{text}");
    assert!(!text.contains(KEY), "a log line shows the key:\n{text}");
    assert!(!format!("{refused:?}").contains(KEY));
}
