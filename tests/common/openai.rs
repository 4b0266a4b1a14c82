//! A local OpenAI-compatible API for integration tests: `/v1/models` lists `deepseek-v3.2` and
//! `mystery-model`; `/v1/chat/completions`, plain or streamed, answers as the requested model
//! with the fixed usage below; every request without the expected key gets a 401 (or, from a
//! keyless server, every request that carries an `Authorization` header gets a 400).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Prompt tokens a plain chat answer reports.
pub const CHAT_PROMPT_TOKENS: u64 = 9;
/// Completion tokens a plain chat answer reports.
pub const CHAT_COMPLETION_TOKENS: u64 = 2;
/// Cached part of a plain chat answer's prompt tokens.
pub const CHAT_CACHED_TOKENS: u64 = 4;
/// Prompt tokens a streamed answer reports.
pub const STREAM_PROMPT_TOKENS: u64 = 9;
/// Completion tokens a streamed answer reports.
pub const STREAM_COMPLETION_TOKENS: u64 = 3;

fn json_reply(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An OpenAI-compatible API: `/v1/models`, and `/v1/chat/completions` plain or streamed,
/// answering as the requested model, with usage (some of it cached); 401 without the key.
pub async fn serve(key: &'static str) -> SocketAddr {
    serve_with(Some(key)).await
}

/// The same API as a local server that needs no key (vLLM, llama.cpp, Ollama): a request
/// that carries an `Authorization` header anyway gets a 400.
pub async fn serve_keyless() -> SocketAddr {
    serve_with(None).await
}

async fn serve_with(key: Option<&'static str>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Some(req) = super::request::read_request(&mut s).await else {
                    return;
                };
                let authorization = req.header("authorization");
                let authorized = match key {
                    Some(key) => authorization.is_some_and(|v| v == format!("Bearer {key}")),
                    None => authorization.is_none(),
                };
                if !authorized && key.is_none() {
                    let _ = s
                        .write_all(&json_reply(
                            400,
                            r#"{"error":{"message":"unexpected Authorization header"}}"#,
                        ))
                        .await;
                    return;
                }
                if !authorized {
                    let _ = s
                        .write_all(&json_reply(
                            401,
                            r#"{"error":{"message":"Incorrect API key","code":"invalid_api_key"}}"#,
                        ))
                        .await;
                    return;
                }
                let request: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let model = request["model"].as_str().unwrap_or("unknown").to_string();
                if req.method == "GET" && req.path.starts_with("/v1/models") {
                    let models = r#"{"object":"list","data":[{"id":"deepseek-v3.2"},{"id":"mystery-model"}]}"#;
                    let _ = s.write_all(&json_reply(200, models)).await;
                } else if request["stream"] == true {
                    let first = format!(
                        "data: {{\"model\":\"{model}\",\"choices\":[{{\"delta\":{{\"content\":\"po\"}}}}]}}\n\n"
                    );
                    let rest = format!(
                        "data: {{\"model\":\"{model}\",\"choices\":[{{\"delta\":{{\"content\":\"ng\"}}}}]}}\n\n\
                         data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{STREAM_PROMPT_TOKENS},\"completion_tokens\":{STREAM_COMPLETION_TOKENS}}}}}\n\n\
                         data: [DONE]\n\n"
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        first.len() + rest.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(first.as_bytes()).await;
                    let _ = s.flush().await;
                    // Generation takes time after the first token, as it does for a real
                    // model, so output speed is measurable.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let _ = s.write_all(rest.as_bytes()).await;
                } else {
                    let chat = format!(
                        r#"{{"id":"c1","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"pong"}}}}],"usage":{{"prompt_tokens":{CHAT_PROMPT_TOKENS},"completion_tokens":{CHAT_COMPLETION_TOKENS},"total_tokens":11,"prompt_tokens_details":{{"cached_tokens":{CHAT_CACHED_TOKENS}}}}}}}"#
                    );
                    let _ = s.write_all(&json_reply(200, &chat)).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}
