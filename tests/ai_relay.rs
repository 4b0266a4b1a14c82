//! The AI probe through a real relay, as a relay user probes it: LiteLLM's proxy in front of
//! fakeai (models, chat, streams, embeddings) and in front of a scripted upstream this test
//! runs (a 429 with rate-limit headers, a refused upstream key, a stream cut mid-way). Both
//! of the relay's shapes are probed: OpenAI-compatible and Anthropic's `/v1/messages`.
//!
//! LiteLLM starts slowly, so one test starts it once and goes through the phases in turn.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::litellm::{Relay, CHAT_MODEL, EMBEDDING_MODEL, RELAY_KEY};
use common::request::read_request;
use pushprobe::config::openai::EmbeddingSettings;
use pushprobe::config::{OpenAiProbeSettings, DEFAULT_BUCKETS};
use pushprobe::pricing::{Price, PriceTable};
use pushprobe::probe::openai::classify::KeySource;
use pushprobe::probe::openai::metrics as m;
use pushprobe::probe::openai::{Api, Check, OpenAiProbe, TokenLimitField};
use pushprobe::probe::ProbeReport;
use pushprobe::series::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Scripted upstream models: each answers with one fault.
const LIMITED: &str = "limited";
const LOCKED: &str = "locked";
const CUT: &str = "cut";

/// A scripted OpenAI-compatible upstream: by the requested model, a 429 with `Retry-After`
/// and rate-limit headers, a 401, or a stream that stops after two chunks without its end.
async fn scripted_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(body) = read_request(&mut sock).await.map(|r| r.body) else {
                    return;
                };
                let model = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["model"].as_str().map(str::to_string))
                    .unwrap_or_default();
                let answer = match model.as_str() {
                    LIMITED => json(
                        429,
                        "retry-after: 7\r\nx-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 7s\r\n",
                        r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                    ),
                    LOCKED => json(
                        401,
                        "",
                        r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                    ),
                    CUT => {
                        let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                        for t in ["po", "ng"] {
                            let event = format!(
                                "data: {{\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"cut\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n"
                            );
                            out.extend(format!("{:x}\r\n{event}\r\n", event.len()).into_bytes());
                        }
                        // No final chunk and no [DONE]: the connection just closes.
                        out
                    }
                    _ => json(404, "", r#"{"error":{"message":"no such model"}}"#),
                };
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

fn json(status: u16, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn pricing() -> Arc<PriceTable> {
    let none: Vec<String> = Vec::new();
    let price = |input, output| Price {
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: None,
        cache_write_per_mtok: None,
        cache_read_per_mtok: Some(input / 10.0),
    };
    Arc::new(
        PriceTable::new([
            (CHAT_MODEL, price(1.0, 2.0), none.as_slice()),
            (EMBEDDING_MODEL, price(0.02, 0.0), none.as_slice()),
        ])
        .unwrap(),
    )
}

fn settings(base: &str, api: Api, model: &str, checks: &[Check]) -> OpenAiProbeSettings {
    let base_url = reqwest::Url::parse(base).unwrap();
    OpenAiProbeSettings {
        name: "relay".into(),
        provider: pushprobe::config::openai::provider_label(&base_url),
        base_url,
        key: KeySource::Env("RELAY_API_KEY".into()),
        model: model.into(),
        checks: checks.to_vec(),
        prompt: "ping".into(),
        max_tokens: 5,
        token_limit_field: TokenLimitField::MaxTokens,
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(60),
        max_probe_spend_per_day: None,
        headers: vec![],
        tls: Default::default(),
        proxy: Default::default(),
        labels: vec![],
        buckets: Arc::from(DEFAULT_BUCKETS),
        max_body_bytes: 4 * 1024 * 1024,
        pricing: pricing(),
        api,
        anthropic_version: "2023-06-01".into(),
        embeddings: EmbeddingSettings {
            model: EMBEDDING_MODEL.into(),
            input: "pushprobe embeddings check".into(),
            expected_dimensions: None,
        },
        stall_threshold: Duration::from_secs(2),
        expect: None,
        temperature: None,
        seed: None,
    }
}

/// One probe run with `key` as the relay key.
async fn run(s: OpenAiProbeSettings, key: &'static str) -> (ProbeReport, Registry) {
    let mut p = OpenAiProbe::with_env(
        s,
        Arc::new(move |name| (name == "RELAY_API_KEY").then(|| key.to_string())),
        Arc::new(pushprobe::clock::now_ms),
    )
    .unwrap();
    let mut r = Registry::new();
    let report = p.run(&mut r).await;
    (report, r)
}

/// Value of `name` for `check` with `extra` labels (other labels ignored).
fn value(r: &Registry, name: &str, check: &str, extra: &[(&str, &str)]) -> Option<f64> {
    r.samples_at(0)
        .into_iter()
        .find(|s| {
            s.labels.metric_name() == name
                && s.labels.get("check") == Some(check)
                && extra.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| s.value)
}

fn failed_with(r: &Registry, check: &str, reason: &str) -> bool {
    value(
        r,
        m::REQUESTS,
        check,
        &[("outcome", "failure"), ("reason", reason)],
    ) == Some(1.0)
}

fn tokens(r: &Registry, check: &str, kind: &str) -> f64 {
    value(r, m::TOKENS, check, &[("kind", kind)]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_see_the_upstream_through_litellm() {
    let upstream = scripted_upstream().await;
    let Some(relay) = Relay::start(&upstream, &[LIMITED, LOCKED, CUT]).await else {
        return;
    };
    let base = relay.base_url();
    let all = [Check::Models, Check::Chat, Check::ChatStream];

    // OpenAI-compatible shape: the upstream's model answers, its tokens are counted and priced.
    let (report, r) = run(settings(&base, Api::Openai, CHAT_MODEL, &all), RELAY_KEY).await;
    if !report.success {
        relay.dump_logs();
    }
    assert!(report.success, "{report:?}");
    for check in ["chat", "chat_stream"] {
        assert!(tokens(&r, check, "output") > 0.0, "{check}: {report:?}");
        assert!(tokens(&r, check, "input") > 0.0, "{check}: {report:?}");
        assert!(
            value(&r, m::RESPONSES, check, &[("served_model", CHAT_MODEL)]) == Some(1.0),
            "{check}: the relay names the upstream's model"
        );
        assert!(value(&r, m::COST, check, &[]).is_some_and(|c| c > 0.0));
    }
    assert!(report
        .details
        .iter()
        .any(|(k, _)| k == "chat_stream.time_to_first_token_seconds"));
    let listed = r
        .samples_at(0)
        .into_iter()
        .find(|s| s.labels.metric_name() == m::MODEL_LISTED)
        .map(|s| s.value);
    assert_eq!(listed, Some(1.0), "the relay lists the model it serves");

    // Anthropic shape on the same relay: /v1/messages, plain and streamed, x-api-key.
    let (report, r) = run(settings(&base, Api::Anthropic, CHAT_MODEL, &all), RELAY_KEY).await;
    if !report.success {
        relay.dump_logs();
    }
    assert!(report.success, "{report:?}");
    for check in ["chat", "chat_stream"] {
        assert!(tokens(&r, check, "output") > 0.0, "{check}: {report:?}");
        // LiteLLM reports fakeai's prompt as input plus cache reads; their sum is the input.
        assert!(tokens(&r, check, "input") > 0.0, "{check}: {report:?}");
        assert_eq!(
            value(&r, m::RESPONSES, check, &[("served_model", CHAT_MODEL)]),
            Some(1.0)
        );
    }

    // Embeddings through the relay: fakeai's dimensions, input tokens at the input price.
    let s = settings(&base, Api::Openai, CHAT_MODEL, &[Check::Embeddings]);
    let (report, r) = run(s.clone(), RELAY_KEY).await;
    assert!(report.success, "{report:?}");
    let dims = value(&r, m::EMBEDDING_DIMENSIONS, "embeddings", &[]).unwrap();
    assert!(dims > 0.0);
    let input = tokens(&r, "embeddings", "input");
    assert!(input > 0.0);
    assert_eq!(
        value(&r, m::COST, "embeddings", &[]),
        Some(input * 0.02 / 1e6)
    );
    let mut wrong = s.clone();
    wrong.embeddings.expected_dimensions = Some(dims as u32 + 1);
    let (report, r) = run(wrong, RELAY_KEY).await;
    assert!(
        failed_with(&r, "embeddings", "invalid_response"),
        "{report:?}"
    );
    let mut right = s;
    right.embeddings.expected_dimensions = Some(dims as u32);
    assert!(run(right, RELAY_KEY).await.0.success);

    // A key the relay does not know: without a database LiteLLM cannot look keys up and
    // answers 400 ("No connected db."), not 401; the probe reports that status as it is.
    for api in [Api::Openai, Api::Anthropic] {
        let (report, r) = run(
            settings(&base, api, CHAT_MODEL, &[Check::Chat]),
            "sk-not-the-relay-key",
        )
        .await;
        assert!(!report.success);
        assert_eq!(report.status, "400", "{api:?}: {report:?}");
        assert!(failed_with(&r, "chat", "http_error"), "{api:?}");
        assert!(!format!("{report:?}").contains("sk-not-the-relay-key"));
    }

    // The upstream refuses the relay's key: LiteLLM passes the 401 on with the upstream's
    // `invalid_api_key` code, so the probe gives the finer reason.
    for api in [Api::Openai, Api::Anthropic] {
        let (report, r) = run(settings(&base, api, LOCKED, &[Check::Chat]), RELAY_KEY).await;
        assert_eq!(report.status, "401", "{api:?}: {report:?}");
        assert!(
            failed_with(&r, "chat", "invalid_api_key"),
            "{api:?}: {report:?}"
        );
    }

    // The upstream's 429: rate limited through both shapes. On its OpenAI shape LiteLLM
    // forwards the upstream's Retry-After only renamed (llm_provider-retry-after), which the
    // probe reads too; its /v1/messages error answer carries neither name.
    for (api, wait) in [(Api::Openai, 7.0), (Api::Anthropic, 0.0)] {
        let (report, r) = run(settings(&base, api, LIMITED, &[Check::Chat]), RELAY_KEY).await;
        assert_eq!(report.status, "429", "{api:?}: {report:?}");
        assert!(failed_with(&r, "chat", "rate_limited"), "{api:?}");
        assert_eq!(
            value(&r, m::RETRY_AFTER, "chat", &[]),
            Some(wait),
            "{api:?}: {report:?}"
        );
    }

    // A stream cut mid-way upstream: LiteLLM keeps its own stream well-formed and ends it
    // with an error event, which the probe reports as the provider's failure.
    for api in [Api::Openai, Api::Anthropic] {
        let (report, r) = run(settings(&base, api, CUT, &[Check::ChatStream]), RELAY_KEY).await;
        assert!(!report.success, "{api:?}");
        assert!(
            failed_with(&r, "chat_stream", "server_error"),
            "{api:?}: {report:?}"
        );
        // Counted as an error event on both shapes.
        assert_eq!(
            value(
                &r,
                "pushprobe_ai_stream_anomalies_total",
                "chat_stream",
                &[("anomaly", "error_event")]
            ),
            Some(1.0),
            "{api:?}"
        );
    }
}
