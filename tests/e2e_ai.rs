//! End to end for the AI probe: `pushprobe once` runs `chat` and `chat_stream` against a local
//! OpenAI-compatible API and a real Prometheus must then hold the latency, time-to-first-token,
//! token and cost series with the right values — cost exactly tokens × price.

mod common;

use common::openai::{
    CHAT_CACHED_TOKENS, CHAT_COMPLETION_TOKENS, CHAT_PROMPT_TOKENS, STREAM_COMPLETION_TOKENS,
    STREAM_PROMPT_TOKENS,
};
use common::*;

const KEY: &str = "sk-e2e-test";

// Prices chosen so the expected dollars are easy to read; the comparison below is exact either
// way, since it repeats pushprobe's documented formula term by term.
const INPUT: f64 = 0.5;
const CACHED: f64 = 0.25;
const OUTPUT: f64 = 2.0;

fn config(write_url: &str, base_url: &str) -> String {
    format!(
        r#"
[agent]
external_labels = {{ cluster = "edge-1" }}
drain_timeout = "15s"

[[remote_write]]
url = "{write_url}"
batch_send_deadline = "1s"

[[probe]]
name = "relay"
kind = "openai"
base_url = "{base_url}"
api_key_env = "E2E_AI_KEY"
model = "deepseek-v3.2"
checks = ["models", "chat", "chat_stream"]

[pricing."deepseek-v3.2"]
input_per_mtok = {INPUT}
cached_input_per_mtok = {CACHED}
output_per_mtok = {OUTPUT}
"#
    )
}

/// Dollars for one response: uncached input, cached input and output, each tokens × price.
fn dollars(prompt: u64, cached: u64, completion: u64) -> f64 {
    (prompt - cached) as f64 * INPUT / 1e6
        + cached as f64 * CACHED / 1e6
        + completion as f64 * OUTPUT / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_latency_tokens_and_exact_cost_arrive_in_prometheus() {
    let Some(prom) = Prometheus::start().await else {
        return;
    };
    let api = common::openai::serve(KEY).await;
    let agent = Pushprobe::with_config(&config(&prom.write_url(), &format!("http://{api}/v1")))
        .env("E2E_AI_KEY", KEY);
    let run = agent.once().await;
    run.assert_code(0);
    assert!(!run.stderr.contains(KEY), "the key reached the log");

    let value = |results: &[QueryResult], check: &str, extra: &[(&str, &str)]| -> f64 {
        let mut want = vec![
            ("probe", "relay"),
            ("model", "deepseek-v3.2"),
            ("check", check),
            ("cluster", "edge-1"),
        ];
        want.extend_from_slice(extra);
        only(results, &want).value
    };

    let cost = prom.wait_for_any("pushprobe_ai_cost_dollars_total").await;
    assert_eq!(
        value(&cost, "chat", &[]),
        dollars(
            CHAT_PROMPT_TOKENS,
            CHAT_CACHED_TOKENS,
            CHAT_COMPLETION_TOKENS
        )
    );
    assert_eq!(
        value(&cost, "chat_stream", &[]),
        dollars(STREAM_PROMPT_TOKENS, 0, STREAM_COMPLETION_TOKENS)
    );

    let tokens = prom.wait_for_any("pushprobe_ai_tokens_total").await;
    for (check, kind, want) in [
        ("chat", "input", CHAT_PROMPT_TOKENS),
        ("chat", "cached_input", CHAT_CACHED_TOKENS),
        ("chat", "output", CHAT_COMPLETION_TOKENS),
        ("chat_stream", "input", STREAM_PROMPT_TOKENS),
        ("chat_stream", "output", STREAM_COMPLETION_TOKENS),
    ] {
        assert_eq!(
            value(&tokens, check, &[("kind", kind)]),
            want as f64,
            "{check} {kind} tokens"
        );
    }

    // One successful request each: one latency observation, one time to first token.
    let latency = prom
        .wait_for_any("pushprobe_ai_request_duration_seconds_count")
        .await;
    assert_eq!(value(&latency, "chat", &[]), 1.0);
    assert_eq!(value(&latency, "chat_stream", &[]), 1.0);
    let latency_sum = prom
        .wait_for_any("pushprobe_ai_request_duration_seconds_sum")
        .await;
    let chat_seconds = value(&latency_sum, "chat", &[]);
    let wall_seconds = (run.finished_ms - run.started_ms) as f64 / 1000.0;
    assert!(
        chat_seconds > 0.0 && chat_seconds <= wall_seconds,
        "chat latency {chat_seconds}s outside the run's {wall_seconds}s"
    );
    let ttft = prom
        .wait_for_any("pushprobe_ai_time_to_first_token_seconds_count")
        .await;
    assert_eq!(value(&ttft, "chat_stream", &[]), 1.0);

    let up = prom.wait_for_any("pushprobe_ai_up").await;
    for check in ["models", "chat", "chat_stream"] {
        assert_eq!(value(&up, check, &[]), 1.0, "{check} not up");
    }
    let listed = prom.wait_for_any("pushprobe_ai_model_listed").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].value, 1.0);
    let success = prom.wait_for_any(r#"probe_success{probe="relay"}"#).await;
    assert_eq!(success[0].value, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_needs_no_key_is_probed_without_one() {
    // No api_key_env or api_key_file: vLLM, llama.cpp and Ollama usually need no key. The
    // server answers 400 to any request that carries an Authorization header.
    let api = common::openai::serve_keyless().await;
    let toml = format!(
        "[[probe]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://{api}/v1\"\n\
         model = \"deepseek-v3.2\"\nchecks = [\"models\", \"chat\", \"chat_stream\"]\n"
    );
    let agent = Pushprobe::with_config(&toml);
    agent.config_check().await.assert_code(0);
    agent.once().await.assert_code(0);
}
