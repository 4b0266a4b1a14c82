//! The `openai` probe's stream quality, stream integrity, rate-limit headroom, relay honesty,
//! answer checks and finer failure reasons, against scripted local servers (raw TCP on port
//! 0). Timing is asserted only as lower bounds a pause guarantees, never as upper bounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushprobe::config::{OpenAiProbeSettings, DEFAULT_BUCKETS};
use pushprobe::pricing::{Price, PriceTable};
use pushprobe::probe::openai::classify::KeySource;
use pushprobe::probe::openai::expect::Expect;
use pushprobe::probe::openai::metrics as m;
use pushprobe::probe::openai::signals as sg;
use pushprobe::probe::openai::{Check, OpenAiProbe, TokenLimitField};
use pushprobe::probe::{Detail, ProbeReport};
use pushprobe::series::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MODEL: &str = "deepseek-v3.2";
// 2025-03-01T12:00:00Z.
const NOON: i64 = 1_740_830_400_000;

/// One step of a scripted answer.
enum Step {
    Send(Vec<u8>),
    Pause(Duration),
}

type Handler = Arc<dyn Fn(usize, &str) -> Vec<Step> + Send + Sync>;

struct Server {
    base: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

/// Serves `handler(n, request_body)` for the n-th request (from 0).
async fn serve(handler: impl Fn(usize, &str) -> Vec<Step> + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler: Handler = Arc::new(handler);
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let task_bodies = bodies.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (handler, bodies, count) = (handler.clone(), task_bodies.clone(), count.clone());
            tokio::spawn(async move {
                let _ = handle(sock, handler, bodies, count).await;
            });
        }
    });
    Server {
        base: format!("http://{addr}/v1"),
        bodies,
    }
}

async fn handle(
    mut sock: TcpStream,
    handler: Handler,
    bodies: Arc<Mutex<Vec<String>>>,
    count: Arc<AtomicUsize>,
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
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let body = String::from_utf8_lossy(&body).to_string();
    bodies.lock().unwrap().push(body.clone());
    let n = count.fetch_add(1, Ordering::SeqCst);
    for step in handler(n, &body) {
        match step {
            Step::Send(bytes) => {
                sock.write_all(&bytes).await?;
                sock.flush().await?;
            }
            Step::Pause(d) => tokio::time::sleep(d).await,
        }
    }
    sock.shutdown().await
}

fn reply(status: u16, headers: &str, body: &str) -> Step {
    Step::Send(
        format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn stream_head(headers: &str) -> Step {
    Step::Send(
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n{headers}\r\n")
            .into_bytes(),
    )
}

/// One SSE event as one HTTP chunk.
fn event(data: &str) -> Step {
    let ev = format!("data: {data}\n\n");
    Step::Send(format!("{:x}\r\n{ev}\r\n", ev.len()).into_bytes())
}

fn end() -> Step {
    Step::Send(b"0\r\n\r\n".to_vec())
}

fn content(text: &str) -> String {
    format!(r#"{{"model":"{MODEL}","choices":[{{"delta":{{"content":"{text}"}}}}]}}"#)
}

fn finish(reason: &str) -> String {
    format!(r#"{{"model":"{MODEL}","choices":[{{"delta":{{}},"finish_reason":"{reason}"}}]}}"#)
}

fn usage(completion: u64) -> String {
    format!(r#"{{"choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":{completion}}}}}"#)
}

/// A complete stream of `texts`, finishing with `reason`, with usage and `[DONE]`.
fn stream(texts: &[&str], reason: &str) -> Vec<Step> {
    let mut v = vec![stream_head("")];
    v.extend(texts.iter().map(|t| event(&content(t))));
    v.push(event(&finish(reason)));
    v.push(event(&usage(5)));
    v.push(event("[DONE]"));
    v.push(end());
    v
}

fn chat(model: &str, text: &str, reason: &str, extra: &str) -> String {
    format!(
        r#"{{"model":{}{extra},"choices":[{{"message":{{"role":"assistant","content":{}}},"finish_reason":"{reason}"}}],"usage":{{"prompt_tokens":4,"completion_tokens":5}}}}"#,
        serde_json::Value::from(model),
        serde_json::Value::from(text)
    )
}

fn pricing() -> Arc<PriceTable> {
    let aliases = vec!["deepseek-chat".to_string()];
    Arc::new(
        PriceTable::new([(
            MODEL,
            Price {
                input_per_mtok: 0.5,
                output_per_mtok: 2.0,
                cached_input_per_mtok: None,
                cache_read_per_mtok: None,
                cache_write_per_mtok: None,
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
        key: KeySource::None,
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

fn new_probe(s: OpenAiProbeSettings) -> OpenAiProbe {
    OpenAiProbe::with_env(s, Arc::new(|_| None), Arc::new(|| NOON)).unwrap()
}

async fn run_once(s: OpenAiProbeSettings) -> (ProbeReport, Registry) {
    let mut p = new_probe(s);
    let mut r = Registry::new();
    let report = p.run(&mut r).await;
    (report, r)
}

/// Every label of a series of `check` besides `__name__`.
fn at<'a>(
    provider: &'a str,
    check: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("probe", "relay"),
        ("provider", provider),
        ("model", MODEL),
        ("check", check),
    ];
    v.extend_from_slice(extra);
    v
}

fn provider(s: &Server) -> String {
    s.base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string()
}

/// The `_count` of a histogram series.
fn hist_count(r: &Registry, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let count = format!("{name}_count");
    r.samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.metric_name() == count
                && s.labels.len() == labels.len() + 1
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| s.value)
}

fn detail<'a>(report: &'a ProbeReport, key: &str) -> Option<&'a Detail> {
    report
        .details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn text<'a>(report: &'a ProbeReport, key: &str) -> &'a str {
    detail(report, key)
        .and_then(Detail::as_text)
        .unwrap_or_else(|| panic!("no text detail {key}: {report:?}"))
}

#[tokio::test]
async fn a_stream_with_known_gaps_and_a_stall() {
    let server = serve(|_, _| {
        vec![
            stream_head(""),
            event(&content("a")),
            event(&content("b")),
            Step::Pause(Duration::from_millis(700)),
            event(&content("c")),
            event(&finish("stop")),
            event(&usage(3)),
            event("[DONE]"),
            end(),
        ]
    })
    .await;
    let p = provider(&server);
    let mut s = settings(&server.base, &[Check::ChatStream]);
    s.stall_threshold = Duration::from_millis(300);
    let (report, r) = run_once(s).await;
    assert!(report.success, "{report:?}");
    let l = at(&p, "chat_stream", &[]);
    // Three text chunks: two gaps; the pause guarantees at least one over the threshold.
    assert_eq!(hist_count(&r, sg::INTER_TOKEN_GAP, &l), Some(2.0));
    let stalls = r.value(sg::STALLS, &l).unwrap();
    assert!((1.0..=2.0).contains(&stalls), "{stalls}");
    let longest = r.value(sg::LONGEST_GAP, &l).unwrap();
    assert!(longest >= 0.7, "{longest}");
    assert_eq!(
        r.value(
            sg::FINISH_REASONS,
            &at(&p, "chat_stream", &[("finish_reason", "stop")])
        ),
        Some(1.0)
    );
    for a in ["missing_done", "error_event", "missing_usage"] {
        assert_eq!(
            r.value(sg::ANOMALIES, &at(&p, "chat_stream", &[("anomaly", a)])),
            Some(0.0),
            "{a}"
        );
    }
    assert!(
        matches!(detail(&report, "chat_stream.longest_gap_seconds"), Some(Detail::Seconds(s)) if *s >= 0.7)
    );
    let summary = text(&report, "summary");
    assert!(
        summary.contains("longest gap") && summary.contains("stall"),
        "{summary}"
    );
    assert!(summary.contains("finish stop"), "{summary}");
}

#[tokio::test]
async fn reasoning_then_content_gives_two_first_token_times() {
    let server = serve(|_, _| {
        let reasoning = |t: &str| {
            format!(
                r#"{{"model":"{MODEL}","choices":[{{"delta":{{"reasoning_content":"{t}"}}}}]}}"#
            )
        };
        vec![
            stream_head(""),
            event(&reasoning("thinking")),
            Step::Pause(Duration::from_millis(100)),
            event(&reasoning("more")),
            Step::Pause(Duration::from_millis(100)),
            event(&content("pong")),
            event(&finish("stop")),
            event(&usage(5)),
            event("[DONE]"),
            end(),
        ]
    })
    .await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream])).await;
    assert!(report.success, "{report:?}");
    let l = at(&p, "chat_stream", &[]);
    assert_eq!(hist_count(&r, sg::TTFRT, &l), Some(1.0));
    assert_eq!(hist_count(&r, m::TTFT, &l), Some(1.0));
    let (Some(Detail::Seconds(reasoning)), Some(Detail::Seconds(visible))) = (
        detail(&report, "chat_stream.time_to_first_reasoning_token_seconds"),
        detail(&report, "chat_stream.time_to_first_token_seconds"),
    ) else {
        panic!("{report:?}")
    };
    // The visible token came at least the two pauses after the first reasoning token.
    assert!(visible - reasoning >= 0.2, "{reasoning} {visible}");
    // The decode rate counts from the first token of either kind.
    assert!(r.value(m::TOKENS_PER_SECOND, &l).is_some());
}

#[tokio::test]
async fn each_finish_reason_is_counted_and_length_at_max_tokens_is_normal() {
    for (given, label) in [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "tool_calls"),
        ("eos_token", "other"),
    ] {
        let server = serve(move |_, body| {
            if body.contains("\"stream\":true") {
                stream(&["po", "ng"], given)
            } else {
                vec![reply(200, "", &chat(MODEL, "pong", given, ""))]
            }
        })
        .await;
        let p = provider(&server);
        let (report, r) = run_once(settings(&server.base, &[Check::Chat, Check::ChatStream])).await;
        assert!(report.success, "{report:?}");
        for check in ["chat", "chat_stream"] {
            for other in ["stop", "length", "content_filter", "tool_calls", "other"] {
                let want = if other == label { 1.0 } else { 0.0 };
                assert_eq!(
                    r.value(
                        sg::FINISH_REASONS,
                        &at(&p, check, &[("finish_reason", other)])
                    ),
                    Some(want),
                    "{given} {check} {other}"
                );
            }
        }
        if label == "length" {
            // The probe asked for 5 tokens and got 5: its own limit, not a problem.
            assert!(
                text(&report, "chat.finish_reason").contains("normal"),
                "{report:?}"
            );
        }
    }
    // Cut at length before the probe's max_tokens: the provider cut it.
    let server = serve(|_, _| {
        vec![reply(
            200,
            "",
            &chat(MODEL, "po", "length", "")
                .replace("\"completion_tokens\":5", "\"completion_tokens\":2"),
        )]
    })
    .await;
    let (report, _) = run_once(settings(&server.base, &[Check::Chat])).await;
    assert!(
        text(&report, "chat.finish_reason").contains("cut the answer short"),
        "{report:?}"
    );
}

#[tokio::test]
async fn integrity_anomalies_are_counted_distinctly() {
    // No [DONE]: a failure, and the anomaly.
    let server = serve(|_, _| {
        vec![
            stream_head(""),
            event(&content("a")),
            event(&finish("stop")),
            event(&usage(1)),
            end(),
        ]
    })
    .await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream])).await;
    assert_eq!(report.status, "stream_interrupted", "{report:?}");
    let anomaly =
        |r: &Registry, a| r.value(sg::ANOMALIES, &at(&p, "chat_stream", &[("anomaly", a)]));
    assert_eq!(anomaly(&r, "missing_done"), Some(1.0));
    assert_eq!(anomaly(&r, "error_event"), Some(0.0));

    // An error event inside a 200 stream, classified like the HTTP error it stands for.
    let server = serve(|_, _| {
        vec![
            stream_head(""),
            event(&content("a")),
            Step::Send({
                let ev = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
                format!("{:x}\r\n{ev}\r\n", ev.len()).into_bytes()
            }),
            end(),
        ]
    })
    .await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream])).await;
    assert_eq!(report.status, "overloaded", "{report:?}");
    assert!(report.reason.as_deref().unwrap().contains("overloaded"));
    let anomaly =
        |r: &Registry, a| r.value(sg::ANOMALIES, &at(&p, "chat_stream", &[("anomaly", a)]));
    assert_eq!(anomaly(&r, "error_event"), Some(1.0));
    assert_eq!(anomaly(&r, "missing_done"), Some(0.0));
    assert_eq!(
        r.value(
            m::REQUESTS,
            &at(
                &p,
                "chat_stream",
                &[("outcome", "failure"), ("reason", "overloaded")]
            )
        ),
        Some(1.0)
    );

    // No usage chunk: the check succeeds, the anomaly is counted.
    let server = serve(|_, _| {
        vec![
            stream_head(""),
            event(&content("a")),
            event(&finish("stop")),
            event("[DONE]"),
            end(),
        ]
    })
    .await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::ChatStream])).await;
    assert!(report.success, "{report:?}");
    let anomaly =
        |r: &Registry, a| r.value(sg::ANOMALIES, &at(&p, "chat_stream", &[("anomaly", a)]));
    assert_eq!(anomaly(&r, "missing_usage"), Some(1.0));
    assert_eq!(anomaly(&r, "missing_done"), Some(0.0));
    assert!(
        text(&report, "summary").contains("missing_usage"),
        "{report:?}"
    );
}

#[tokio::test]
async fn rate_limit_headers_of_both_styles_and_each_reset_form() {
    let openai = "x-ratelimit-limit-requests: 10000\r\nx-ratelimit-remaining-requests: 9999\r\nx-ratelimit-reset-requests: 250ms\r\nx-ratelimit-limit-tokens: 200000\r\nx-ratelimit-remaining-tokens: 15000\r\nx-ratelimit-reset-tokens: 6m0s\r\n";
    let server =
        serve(move |_, _| vec![reply(200, openai, &chat(MODEL, "pong", "stop", ""))]).await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::Chat])).await;
    assert!(report.success, "{report:?}");
    let g = |r: &Registry, name, res| r.value(name, &at(&p, "chat", &[("resource", res)]));
    assert_eq!(g(&r, sg::RATELIMIT_LIMIT, "requests"), Some(10000.0));
    assert_eq!(g(&r, sg::RATELIMIT_REMAINING, "requests"), Some(9999.0));
    assert_eq!(g(&r, sg::RATELIMIT_RESET, "requests"), Some(0.25));
    assert_eq!(g(&r, sg::RATELIMIT_LIMIT, "tokens"), Some(200000.0));
    assert_eq!(g(&r, sg::RATELIMIT_REMAINING, "tokens"), Some(15000.0));
    assert_eq!(g(&r, sg::RATELIMIT_RESET, "tokens"), Some(360.0));
    assert_eq!(g(&r, sg::RATELIMIT_LIMIT, "input_tokens"), None);
    // The tightest resource shows on the probe's line: 7.5 % of the tokens left.
    assert!(
        text(&report, "summary").contains("headroom 7.5%"),
        "{report:?}"
    );

    // Anthropic's names with RFC 3339 resets (seconds from the probe's clock), on a 429: the
    // headroom is known exactly when it ran out. A reset of "1s" parses as a duration too.
    let anthropic = "anthropic-ratelimit-requests-limit: 50\r\nanthropic-ratelimit-requests-remaining: 0\r\nanthropic-ratelimit-requests-reset: 2025-03-01T12:00:30Z\r\nanthropic-ratelimit-input-tokens-limit: 40000\r\nanthropic-ratelimit-input-tokens-remaining: 39000\r\nanthropic-ratelimit-input-tokens-reset: 1s\r\nanthropic-ratelimit-output-tokens-limit: 8000\r\nanthropic-ratelimit-output-tokens-remaining: lots\r\nanthropic-ratelimit-output-tokens-reset: 2025-03-01T11:00:00Z\r\n";
    let server = serve(move |_, _| {
        vec![reply(
            429,
            anthropic,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit"}}"#,
        )]
    })
    .await;
    let p = provider(&server);
    let (report, r) = run_once(settings(&server.base, &[Check::Chat])).await;
    assert_eq!(report.status, "429");
    let g = |r: &Registry, name, res| r.value(name, &at(&p, "chat", &[("resource", res)]));
    assert_eq!(g(&r, sg::RATELIMIT_REMAINING, "requests"), Some(0.0));
    assert_eq!(g(&r, sg::RATELIMIT_RESET, "requests"), Some(30.0));
    assert_eq!(g(&r, sg::RATELIMIT_LIMIT, "input_tokens"), Some(40000.0));
    assert_eq!(g(&r, sg::RATELIMIT_RESET, "input_tokens"), Some(1.0));
    // A value that does not parse is absent, never NaN; a past reset is 0, never negative.
    assert_eq!(g(&r, sg::RATELIMIT_REMAINING, "output_tokens"), None);
    assert_eq!(g(&r, sg::RATELIMIT_RESET, "output_tokens"), Some(0.0));
    assert_eq!(
        r.value(
            m::REQUESTS,
            &at(
                &p,
                "chat",
                &[("outcome", "failure"), ("reason", "rate_limited")]
            )
        ),
        Some(1.0)
    );
    assert!(matches!(
        detail(&report, "chat.ratelimit_unparsed_headers"),
        Some(Detail::Count(1))
    ));
}

#[tokio::test]
async fn a_substituted_model_is_counted_and_named() {
    // Run 0 answers with the requested model, run 1 with an alias, run 2 with another model.
    let server = serve(|n, _| {
        let model = ["deepseek-v3.2", "deepseek-chat", "qwen-2.5-7b\u{7}"][n.min(2)];
        vec![reply(200, "", &chat(model, "pong", "stop", ""))]
    })
    .await;
    let p = provider(&server);
    let mut probe = new_probe(settings(&server.base, &[Check::Chat]));
    let mut r = Registry::new();
    let info = |r: &Registry, answered| {
        r.value(
            sg::ANSWERING_MODEL_INFO,
            &at(
                &p,
                "chat",
                &[("requested_model", MODEL), ("answering_model", answered)],
            ),
        )
    };
    let report = probe.run(&mut r).await;
    assert!(report.success);
    assert_eq!(
        r.value(sg::MODEL_MISMATCHES, &at(&p, "chat", &[])),
        Some(0.0)
    );
    assert_eq!(info(&r, MODEL), Some(1.0));
    probe.run(&mut r).await;
    assert_eq!(
        r.value(sg::MODEL_MISMATCHES, &at(&p, "chat", &[])),
        Some(0.0)
    );
    assert_eq!(info(&r, "deepseek-chat"), Some(1.0));
    assert_eq!(info(&r, MODEL), None, "one info series per check");
    let report = probe.run(&mut r).await;
    assert_eq!(
        r.value(sg::MODEL_MISMATCHES, &at(&p, "chat", &[])),
        Some(1.0)
    );
    // The control character from the server is replaced in the label.
    assert_eq!(info(&r, "qwen-2.5-7b?"), Some(1.0));
    assert!(
        text(&report, "summary").contains("MODEL MISMATCH"),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_fingerprint_change_between_runs_is_counted() {
    let server = serve(|n, _| {
        let fp = ["fp_aaa", "fp_aaa", "fp_bbb", "fp_bbb"][n.min(3)];
        vec![reply(
            200,
            "",
            &chat(
                MODEL,
                "pong",
                "stop",
                &format!(r#","system_fingerprint":"{fp}""#),
            ),
        )]
    })
    .await;
    let p = provider(&server);
    let mut probe = new_probe(settings(&server.base, &[Check::Chat]));
    let mut r = Registry::new();
    let mut changes = Vec::new();
    for _ in 0..4 {
        probe.run(&mut r).await;
        changes.push(
            r.value(sg::FINGERPRINT_CHANGES, &at(&p, "chat", &[]))
                .unwrap(),
        );
    }
    assert_eq!(changes, [0.0, 0.0, 1.0, 1.0]);
}

#[tokio::test]
async fn expect_checks_the_canary_answer() {
    let answers = Arc::new(Mutex::new(Vec::<String>::new()));
    let script = answers.clone();
    let server = serve(move |n, body| {
        let answer = script.lock().unwrap().get(n).cloned().unwrap_or_default();
        if body.contains("\"stream\":true") {
            let mut v = vec![stream_head("")];
            // The answer in two chunks, escaped as JSON.
            let (a, b) = answer.split_at(answer.len() / 2);
            for part in [a, b] {
                let data = format!(
                    r#"{{"model":"{MODEL}","choices":[{{"delta":{{"content":{}}}}}]}}"#,
                    serde_json::Value::from(part)
                );
                v.push(event(&data));
            }
            v.extend([
                event(&finish("stop")),
                event(&usage(5)),
                event("[DONE]"),
                end(),
            ]);
            v
        } else {
            vec![reply(200, "", &chat(MODEL, &answer, "stop", ""))]
        }
    })
    .await;
    let p = provider(&server);
    let mut s = settings(&server.base, &[Check::Chat, Check::ChatStream]);
    s.expect = Some(Expect::regex(r"(?i)\bparis\b").unwrap());
    s.temperature = Some(0.0);
    s.seed = Some(42);
    *answers.lock().unwrap() = vec![
        "The capital of France is Paris.".into(),
        "Paris".into(),
        "It is Lyon.".into(),
        "Lyon".into(),
    ];
    let mut probe = new_probe(s);
    let mut r = Registry::new();
    let report = probe.run(&mut r).await;
    assert!(report.success, "{report:?}");
    // The canary is deterministic: temperature 0 and a seed.
    for body in server.bodies.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["temperature"].as_f64(), v["seed"].as_i64()),
            (Some(0.0), Some(42))
        );
    }
    let report = probe.run(&mut r).await;
    assert!(!report.success);
    assert_eq!(report.status, "answer_mismatch");
    let reason = report.reason.unwrap();
    assert!(reason.contains("does not match expect.regex"), "{reason}");
    assert!(
        !reason.contains("Lyon"),
        "the answer is never quoted: {reason}"
    );
    for check in ["chat", "chat_stream"] {
        assert_eq!(
            r.value(
                m::REQUESTS,
                &at(
                    &p,
                    check,
                    &[("outcome", "failure"), ("reason", "answer_mismatch")]
                )
            ),
            Some(1.0),
            "{check}"
        );
    }

    // JSON fields, fenced or not.
    let server = serve(|n, _| {
        let answer = [
            "```json\n{\"capital\":\"Paris\",\"meta\":{\"country\":\"FR\"}}\n```",
            "{\"capital\":\"Paris\"}",
            "Paris",
        ][n.min(2)];
        vec![reply(200, "", &chat(MODEL, answer, "stop", ""))]
    })
    .await;
    let mut s = settings(&server.base, &[Check::Chat]);
    s.expect = Some(Expect::json_fields(&["capital".into(), "meta.country".into()]).unwrap());
    let mut probe = new_probe(s);
    assert!(probe.run(&mut r).await.success);
    let report = probe.run(&mut r).await;
    assert!(report.reason.unwrap().contains("\"meta.country\""));
    let report = probe.run(&mut r).await;
    assert!(report.reason.unwrap().contains("not a JSON object"));
}

#[tokio::test]
async fn finer_failure_reasons_from_realistic_error_bodies() {
    let cases: [(u16, &str, &str, &str); 7] = [
        (
            429,
            r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            "insufficient_quota",
            "add credit",
        ),
        (
            429,
            r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            "rate_limited",
            "lengthen the interval",
        ),
        (
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
            "context_length_exceeded",
            "lower `max_tokens`",
        ),
        (
            401,
            r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
            "invalid_api_key",
            "API key is invalid",
        ),
        (
            400,
            r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#,
            "content_filter",
            "neutral `prompt`",
        ),
        (
            400,
            r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#,
            "content_filter",
            "content filter",
        ),
        (
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "overloaded",
            "overloaded",
        ),
    ];
    for (status, body, reason, hint) in cases {
        let server = serve(move |_, _| vec![reply(status, "", body)]).await;
        let p = provider(&server);
        let (report, r) = run_once(settings(&server.base, &[Check::Chat])).await;
        assert_eq!(report.status, status.to_string());
        let why = report.reason.clone().unwrap();
        assert!(why.contains(hint), "{reason}: {why}");
        assert!(
            !why.contains("sk-abc") && !why.contains("safety system"),
            "{why}"
        );
        assert_eq!(
            r.value(
                m::REQUESTS,
                &at(&p, "chat", &[("outcome", "failure"), ("reason", reason)])
            ),
            Some(1.0),
            "{reason}"
        );
    }
    // A 401 without the code stays a plain authentication failure.
    let server = serve(|_, _| vec![reply(401, "", r#"{"error":{"message":"no"}}"#)]).await;
    let p = provider(&server);
    let (_, r) = run_once(settings(&server.base, &[Check::Chat])).await;
    assert_eq!(
        r.value(
            m::REQUESTS,
            &at(&p, "chat", &[("outcome", "failure"), ("reason", "auth")])
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_hundred_thousand_empty_chunks_stay_bounded() {
    let server = serve(|_, _| {
        let empty = format!("data: {}\n\n", content(""));
        let mut body = empty.repeat(100_000);
        body.push_str(&format!("data: {}\n\n", content("pong")));
        body.push_str(&format!(
            "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
            finish("stop"),
            usage(1)
        ));
        let mut v = vec![stream_head("")];
        for piece in body.as_bytes().chunks(64 * 1024) {
            let piece = std::str::from_utf8(piece).unwrap();
            v.push(Step::Send(
                format!("{:x}\r\n{piece}\r\n", piece.len()).into_bytes(),
            ));
        }
        v.push(end());
        v
    })
    .await;
    let p = provider(&server);
    let mut s = settings(&server.base, &[Check::ChatStream]);
    s.max_body_bytes = 64 * 1024 * 1024;
    let (report, r) = run_once(s).await;
    assert!(report.success, "{report:?}");
    let l = at(&p, "chat_stream", &[]);
    // Empty deltas are no tokens: one text chunk, no gap, no stall.
    assert_eq!(hist_count(&r, sg::INTER_TOKEN_GAP, &l), None);
    assert_eq!(r.value(sg::STALLS, &l), Some(0.0));
    assert_eq!(r.value(sg::LONGEST_GAP, &l), None);
    assert_eq!(hist_count(&r, m::TTFT, &l), Some(1.0));
}

#[tokio::test]
async fn hostile_model_names_and_token_counts_stay_bounded() {
    let long = format!("{}\u{1b}[31m", "m".repeat(10 * 1024));
    let answered = long.clone();
    let server = serve(move |_, _| {
        let body = format!(
            r#"{{"model":{},"choices":[{{"message":{{"content":"x"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":-4,"completion_tokens":"lots"}}}}"#,
            serde_json::Value::from(answered.as_str())
        );
        vec![reply(200, "", &body)]
    })
    .await;
    let mut s = settings(&server.base, &[Check::Chat]);
    s.model = format!("{}\n", "q".repeat(10 * 1024));
    let (report, r) = run_once(s).await;
    assert!(report.success, "{report:?}");
    for sample in r.samples_at(0) {
        assert!(!sample.value.is_nan() || sample.labels.metric_name().ends_with("_bucket"));
        assert!(
            sample.value >= 0.0 || sample.value.is_nan(),
            "{}",
            sample.labels
        );
        for name in [
            "model",
            "requested_model",
            "answering_model",
            "served_model",
        ] {
            if let Some(v) = sample.labels.get(name) {
                assert!(v.chars().count() <= sg::MAX_LABEL_CHARS, "{name}");
                assert!(!v.chars().any(char::is_control), "{name}");
            }
        }
    }
    assert!(report
        .details
        .iter()
        .all(|(_, d)| !matches!(d, Detail::Dollars(x) if x.is_nan() || *x < 0.0)));
}
