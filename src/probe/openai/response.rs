//! Reading OpenAI-compatible responses: the model list, a chat completion, and a chat stream
//! fed event by event. Pure functions over bytes; nothing a server sends can make them panic.
//!
//! Error messages describe the shape that was wrong, never the text that was sent: a response
//! may echo the prompt or the model's answer, and error bodies may quote part of the key.

use std::time::Duration;

use serde_json::Value;

use super::expect::push_answer;
use super::sse::SseEvent;
use super::timing::{FinishReason, StreamTiming, TextKind, TimingSummary};
use crate::pricing::Usage;

/// Why a response could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The body is not JSON (serde's position only: its messages never quote input here).
    #[error("response is not valid JSON ({0})")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("response has no {0}")]
    Missing(&'static str),
    /// A stream event carried an `error` object instead of a chunk.
    #[error("the stream carried an error event")]
    StreamError,
    /// The stream ended before `data: [DONE]`.
    #[error("the stream ended without data: [DONE]")]
    NoDone,
}

/// What the model list said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelList {
    /// How many models are listed.
    pub count: usize,
    /// Whether the configured model is among them.
    pub listed: bool,
}

/// What a chat completion (or a finished stream) said beyond its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatReply {
    /// Token usage, if the server reported a usable one.
    pub usage: Option<Usage>,
    /// The model the server says answered.
    pub served_model: Option<String>,
}

fn parse_json(body: &[u8]) -> Result<Value, ResponseError> {
    // Parsing into a `Value` can only fail on syntax, whose messages name a position and
    // never echo the input (type errors, which would, cannot happen at this stage).
    serde_json::from_slice(body).map_err(|e| ResponseError::Json(e.to_string()))
}

/// Parses `GET /models`: `{"data": [{"id": "..."}, ...]}`.
pub fn parse_models(body: &[u8], model: &str) -> Result<ModelList, ResponseError> {
    let v = parse_json(body)?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or(ResponseError::Missing("\"data\" array"))?;
    let listed = data
        .iter()
        .any(|m| m.get("id").and_then(Value::as_str) == Some(model));
    Ok(ModelList {
        count: data.len(),
        listed,
    })
}

/// Reads a `usage` object; `None` if it is absent, null or lacks the two token counts.
pub fn parse_usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let prompt_tokens = u.get("prompt_tokens")?.as_u64()?;
    let completion_tokens = u.get("completion_tokens")?.as_u64()?;
    // OpenAI's field first; DeepSeek reports the same count as `prompt_cache_hit_tokens`.
    let cached_tokens = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .or_else(|| u.get("prompt_cache_hit_tokens").and_then(Value::as_u64))
        .unwrap_or(0);
    Some(Usage {
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        cache_write_tokens: 0,
    })
}

fn served_model(v: &Value) -> Option<String> {
    v.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Parses a chat completion; it must have a non-empty `choices` array.
pub fn parse_chat(body: &[u8]) -> Result<ChatReply, ResponseError> {
    let v = parse_json(body)?;
    match v.get("choices").and_then(Value::as_array) {
        Some(c) if !c.is_empty() => {}
        _ => return Err(ResponseError::Missing("\"choices\"")),
    }
    Ok(ChatReply {
        usage: parse_usage(&v),
        served_model: served_model(&v),
    })
}

/// What a chat answer said besides usage: its text (for `expect`), why it stopped and the
/// provider's `system_fingerprint`. Bounded: the text is capped, the fingerprint too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnswerFacts {
    /// The visible answer text, at most [`super::expect::MAX_ANSWER_BYTES`].
    pub answer: String,
    /// Why generation stopped.
    pub finish_reason: Option<FinishReason>,
    /// The backend configuration the provider says served the request.
    pub system_fingerprint: Option<String>,
}

/// Longest `system_fingerprint` kept; real ones are about 12 characters.
const MAX_FINGERPRINT: usize = 128;

fn fingerprint(v: &Value) -> Option<String> {
    v.get("system_fingerprint")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
        .map(|f| f.chars().take(MAX_FINGERPRINT).collect())
}

/// Reads the answer facts of a (non-streamed) chat completion; absent fields stay empty.
pub fn parse_chat_facts(body: &[u8]) -> AnswerFacts {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return AnswerFacts::default();
    };
    let choice = v.get("choices").and_then(|c| c.get(0));
    let mut answer = String::new();
    if let Some(text) = choice
        .and_then(|c| c.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
    {
        push_answer(&mut answer, text);
    }
    AnswerFacts {
        answer,
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(FinishReason::parse),
        system_fingerprint: fingerprint(&v),
    }
}

/// What an error body's `error.code` or `error.type` says, reduced to what classification needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorHint {
    /// The provider says the model does not exist.
    ModelNotFound,
    /// Nothing recognised.
    None,
}

/// Reads an error body for hints (never for text to log).
pub fn error_hint(body: &[u8]) -> ErrorHint {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ErrorHint::None;
    };
    let err = v.get("error");
    let field = |name: &str| err.and_then(|e| e.get(name)).and_then(Value::as_str);
    if [field("code"), field("type")]
        .iter()
        .any(|f| matches!(f, Some("model_not_found")))
    {
        ErrorHint::ModelNotFound
    } else {
        ErrorHint::None
    }
}

/// The result of a completed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Usage and served model from the chunks.
    pub reply: ChatReply,
    /// Time from sending the request to the first chunk with visible text.
    pub time_to_first_token: Option<Duration>,
    /// Content chunks received.
    pub chunks: u64,
    /// Chunk arrival times, gaps, stalls and the finish reason.
    pub timing: TimingSummary,
    /// Answer text and fingerprint.
    pub facts: AnswerFacts,
    /// Whether a usage chunk arrived.
    pub usage_seen: bool,
}

/// Follows a chat stream event by event.
#[derive(Debug)]
pub struct StreamState {
    reply: ChatReply,
    timing: StreamTiming,
    answer: String,
    fingerprint: Option<String>,
    error: Option<Value>,
    usage_seen: bool,
    done: bool,
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    /// Starts following a stream with the default stall threshold.
    pub fn new() -> Self {
        Self::with_stall_threshold(super::timing::DEFAULT_STALL_THRESHOLD)
    }

    /// Starts following a stream; text gaps longer than `stall_threshold` are stalls.
    pub fn with_stall_threshold(stall_threshold: Duration) -> Self {
        StreamState {
            reply: ChatReply::default(),
            timing: StreamTiming::new(stall_threshold),
            answer: String::new(),
            fingerprint: None,
            error: None,
            usage_seen: false,
            done: false,
        }
    }

    /// The error object of an error event, once [`ResponseError::StreamError`] was returned.
    pub fn error_event(&self) -> Option<&Value> {
        self.error.as_ref()
    }

    /// The timing so far (also when the stream fails).
    pub fn timing(&self) -> TimingSummary {
        self.timing.summary()
    }

    /// Tells whether `data: [DONE]` has arrived (later events are ignored).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes one event that arrived `at` after the request was sent.
    pub fn on_event(&mut self, event: &SseEvent, at: Duration) -> Result<(), ResponseError> {
        if self.done {
            return Ok(());
        }
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let mut v = parse_json(event.data.as_bytes())?;
        if let Some(e) = v.get_mut("error").filter(|e| !e.is_null()) {
            // Kept for classification: the error object says why, like an HTTP error body.
            let e = e.take();
            self.error = Some(if e.is_object() {
                e
            } else {
                serde_json::json!({})
            });
            return Err(ResponseError::StreamError);
        }
        if let Some(m) = served_model(&v) {
            self.reply.served_model = Some(m);
        }
        if let Some(f) = fingerprint(&v) {
            self.fingerprint = Some(f);
        }
        if v.get("usage").is_some_and(Value::is_object) {
            self.usage_seen = true;
        }
        if let Some(u) = parse_usage(&v) {
            self.reply.usage = Some(u);
        }
        let choice = v.get("choices").and_then(|c| c.get(0));
        let delta = choice.and_then(|c| c.get("delta"));
        let text = |field: &str| {
            delta
                .and_then(|d| d.get(field))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        // Reasoning models stream `reasoning_content` (some relays: `reasoning`) before
        // `content`. An empty delta is no token.
        if text("reasoning_content").or(text("reasoning")).is_some() {
            self.timing.on_text(at, TextKind::Reasoning);
        }
        if let Some(t) = text("content") {
            self.timing.on_text(at, TextKind::Visible);
            push_answer(&mut self.answer, t);
        }
        if let Some(f) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.timing.on_finish_reason(f);
        }
        Ok(())
    }

    /// Ends the stream: it must have reached `[DONE]`.
    pub fn finish(self) -> Result<StreamSummary, ResponseError> {
        if !self.done {
            return Err(ResponseError::NoDone);
        }
        let timing = self.timing.summary();
        Ok(StreamSummary {
            reply: self.reply,
            time_to_first_token: timing.first_visible,
            chunks: timing.chunks,
            facts: AnswerFacts {
                answer: self.answer,
                finish_reason: timing.finish_reason,
                system_fingerprint: self.fingerprint,
            },
            usage_seen: self.usage_seen,
            timing,
        })
    }
}

/// Output tokens per second after the first token: `completion_tokens / (total − TTFT)`, or
/// `None` when there is no usage, no first token, or no time after it (nothing to divide by).
pub fn output_tokens_per_second(
    usage: Option<&Usage>,
    ttft: Option<Duration>,
    total: Duration,
) -> Option<f64> {
    let generating = total.checked_sub(ttft?)?.as_secs_f64();
    let tokens = usage?.completion_tokens;
    if generating > 0.0 && tokens > 0 {
        Some(tokens as f64 / generating)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: data.into(),
        }
    }

    #[test]
    fn models_are_counted_and_the_configured_one_found() {
        let body = br#"{"object":"list","data":[{"id":"a"},{"id":"deepseek-v3.2"},{"x":1}]}"#;
        assert_eq!(
            parse_models(body, "deepseek-v3.2"),
            Ok(ModelList {
                count: 3,
                listed: true
            })
        );
        assert!(!parse_models(body, "deepseek").unwrap().listed);
        assert_eq!(
            parse_models(b"{\"data\":{}}", "a"),
            Err(ResponseError::Missing("\"data\" array"))
        );
        assert!(matches!(
            parse_models(b"<html>", "a"),
            Err(ResponseError::Json(_))
        ));
    }

    #[test]
    fn chat_reads_usage_cached_tokens_and_model() {
        let body = br#"{"model":"deepseek-chat","choices":[{"message":{"content":"pong"}}],
            "usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let r = parse_chat(body).unwrap();
        assert_eq!(r.served_model.as_deref(), Some("deepseek-chat"));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                cached_tokens: 4,
                cache_write_tokens: 0,
            })
        );
        let deepseek = br#"{"choices":[{}],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_cache_hit_tokens":3}}"#;
        assert_eq!(
            parse_chat(deepseek).unwrap().usage.unwrap().cached_tokens,
            3
        );
        let no_usage = br#"{"choices":[{}],"usage":null}"#;
        assert_eq!(parse_chat(no_usage).unwrap().usage, None);
        assert_eq!(
            parse_chat(br#"{"choices":[]}"#),
            Err(ResponseError::Missing("\"choices\""))
        );
        assert_eq!(
            parse_chat(br#"{"id":"x"}"#),
            Err(ResponseError::Missing("\"choices\""))
        );
    }

    #[test]
    fn json_errors_never_quote_the_body() {
        let secret = "the model said something private";
        let body = format!("{{\"choices\": [{secret}");
        let e = parse_chat(body.as_bytes()).unwrap_err().to_string();
        assert!(!e.contains("private"), "{e}");
    }

    #[test]
    fn error_hints() {
        assert_eq!(
            error_hint(br#"{"error":{"message":"x","code":"model_not_found"}}"#),
            ErrorHint::ModelNotFound
        );
        assert_eq!(error_hint(b"nope"), ErrorHint::None);
    }

    #[test]
    fn stream_records_first_token_usage_and_done() {
        let mut s = StreamState::new();
        let ms = Duration::from_millis;
        s.on_event(
            &ev(r#"{"model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}"#),
            ms(10),
        )
        .unwrap();
        s.on_event(&ev(r#"{"choices":[{"delta":{"content":"po"}}]}"#), ms(20))
            .unwrap();
        s.on_event(&ev(r#"{"choices":[{"delta":{"content":"ng"}}]}"#), ms(30))
            .unwrap();
        s.on_event(
            &ev(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#),
            ms(40),
        )
        .unwrap();
        s.on_event(&ev("[DONE]"), ms(41)).unwrap();
        // Anything after [DONE] is ignored, even garbage.
        s.on_event(&ev("garbage"), ms(42)).unwrap();
        let sum = s.finish().unwrap();
        assert_eq!(sum.time_to_first_token, Some(ms(20)));
        assert_eq!(sum.chunks, 2);
        assert_eq!(sum.reply.served_model.as_deref(), Some("m"));
        assert_eq!(sum.reply.usage.unwrap().completion_tokens, 2);
    }

    #[test]
    fn stream_failures() {
        let mut s = StreamState::new();
        s.on_event(
            &ev(r#"{"choices":[{"delta":{"content":"a"}}]}"#),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(s.finish(), Err(ResponseError::NoDone));
        let mut s = StreamState::new();
        assert_eq!(
            s.on_event(&ev(r#"{"error":{"message":"overloaded"}}"#), Duration::ZERO),
            Err(ResponseError::StreamError)
        );
        assert!(matches!(
            s.on_event(&ev("{not json"), Duration::ZERO),
            Err(ResponseError::Json(_))
        ));
    }

    #[test]
    fn stream_separates_reasoning_from_visible_text_and_keeps_the_facts() {
        let ms = Duration::from_millis;
        let mut s = StreamState::with_stall_threshold(ms(100));
        let events = [
            (
                r#"{"model":"r1","system_fingerprint":"fp_1","choices":[{"delta":{"reasoning_content":"hm"}}]}"#,
                10,
            ),
            (r#"{"choices":[{"delta":{"reasoning_content":"m"}}]}"#, 20),
            (r#"{"choices":[{"delta":{"content":""}}]}"#, 30),
            (r#"{"choices":[{"delta":{"content":"Par"}}]}"#, 250),
            (
                r#"{"choices":[{"delta":{"content":"is"},"finish_reason":"length"}]}"#,
                260,
            ),
            (
                r#"{"choices":[],"usage":{"prompt_tokens":-3,"completion_tokens":"2"}}"#,
                270,
            ),
            ("[DONE]", 280),
        ];
        for (data, at) in events {
            s.on_event(&ev(data), ms(at)).unwrap();
        }
        let sum = s.finish().unwrap();
        assert_eq!(sum.time_to_first_token, Some(ms(250)));
        assert_eq!(sum.timing.first_reasoning, Some(ms(10)));
        assert_eq!(sum.timing.first_text(), Some(ms(10)));
        assert_eq!(sum.timing.longest_gap, Some(ms(230)));
        assert_eq!(sum.timing.stalls, 1);
        assert_eq!(sum.facts.answer, "Paris");
        assert_eq!(sum.facts.finish_reason, Some(FinishReason::Length));
        assert_eq!(sum.facts.system_fingerprint.as_deref(), Some("fp_1"));
        // A usage chunk arrived, but its counts are not usable numbers: no usage, no panic.
        assert!(sum.usage_seen);
        assert_eq!(sum.reply.usage, None);
    }

    #[test]
    fn error_events_are_kept_for_classification() {
        let mut s = StreamState::new();
        let e = s.on_event(
            &ev(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            Duration::ZERO,
        );
        assert_eq!(e, Err(ResponseError::StreamError));
        assert_eq!(
            s.error_event()
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str),
            Some("overloaded_error")
        );
    }

    #[test]
    fn chat_facts() {
        let body = br#"{"model":"m","system_fingerprint":"fp_x","choices":[{"message":{"content":"{\"a\":1}"},"finish_reason":"stop"}]}"#;
        let f = parse_chat_facts(body);
        assert_eq!(f.answer, "{\"a\":1}");
        assert_eq!(f.finish_reason, Some(FinishReason::Stop));
        assert_eq!(f.system_fingerprint.as_deref(), Some("fp_x"));
        assert_eq!(parse_chat_facts(b"nope"), AnswerFacts::default());
        let long = format!(r#"{{"system_fingerprint":"{}"}}"#, "f".repeat(10_000));
        assert_eq!(
            parse_chat_facts(long.as_bytes())
                .system_fingerprint
                .map(|f| f.len()),
            Some(MAX_FINGERPRINT)
        );
    }

    #[test]
    fn tokens_per_second_is_guarded() {
        let u = Usage {
            prompt_tokens: 1,
            completion_tokens: 10,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        let s = Duration::from_secs;
        assert_eq!(
            output_tokens_per_second(Some(&u), Some(s(1)), s(3)),
            Some(5.0)
        );
        assert_eq!(output_tokens_per_second(Some(&u), Some(s(3)), s(3)), None);
        assert_eq!(output_tokens_per_second(Some(&u), Some(s(4)), s(3)), None);
        assert_eq!(output_tokens_per_second(None, Some(s(1)), s(3)), None);
        assert_eq!(output_tokens_per_second(Some(&u), None, s(3)), None);
    }
}
