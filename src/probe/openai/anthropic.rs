//! Anthropic's Messages API (`api = "anthropic"`): the request body, the reply, and the
//! stream's events, read into the same [`ChatReply`] and [`Usage`] the OpenAI shape yields,
//! so metrics, cost and failure handling are shared. Pure functions over bytes and events;
//! nothing a server sends can make them panic.
//!
//! Usage: Anthropic's `input_tokens` excludes the tokens written to and read from the prompt
//! cache, so `prompt_tokens` is their sum (saturating), `cached_tokens` the cache reads and
//! `cache_write_tokens` the cache writes. A count that is not a non-negative integer (negative,
//! fractional, a string) makes the whole usage unusable rather than half-priced.
//!
//! The stream (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`,
//! `error`) is followed by [`AnthropicStream`], which feeds the same [`StreamTiming`] as the
//! OpenAI stream: `text_delta` is visible text, `thinking_delta` reasoning, `stop_reason` the
//! finish reason. So gaps, stalls, first tokens and finish reasons mean the same for both
//! shapes, and the answer text is kept for `expect`. Unknown event types are skipped, as
//! Anthropic asks clients to; events that need a message before them and find none, or a
//! second `message_start`, fail as an invalid response.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::expect::push_answer;
use super::response::{AnswerFacts, ChatReply};
use super::sse::SseEvent;
use super::timing::{FinishReason, StreamTiming, TextKind, TimingSummary, DEFAULT_STALL_THRESHOLD};
use crate::pricing::Usage;

/// Why an Anthropic answer could not be used. Messages describe the shape, never the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnthropicError {
    /// The body or an event's data is not JSON (serde's position only).
    #[error("response is not valid JSON ({0})")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("response has no {0}")]
    Missing(&'static str),
    /// The body or the stream carried an `error` object; its `type` if it is a known one.
    #[error("the {place} carried an error ({kind})")]
    Error {
        /// `response` or `stream`.
        place: &'static str,
        /// Anthropic's error type (`overloaded_error`, …) or `unknown`.
        kind: &'static str,
    },
    /// An event arrived where the protocol does not allow it.
    #[error("stream event {event} arrived {problem}")]
    OutOfOrder {
        /// The event type.
        event: &'static str,
        /// What is wrong about its place.
        problem: &'static str,
    },
    /// The stream ended before `message_stop`.
    #[error("the stream ended without message_stop")]
    NoStop,
}

/// Anthropic's error types, the only error text that may reach a message.
const ERROR_TYPES: &[&str] = &[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "request_too_large",
    "rate_limit_error",
    "api_error",
    "overloaded_error",
];

/// The JSON body of a Messages request.
pub fn messages_body(model: &str, prompt: &str, max_tokens: u32, stream: bool) -> Bytes {
    messages_body_with(model, prompt, max_tokens, stream, None)
}

/// The JSON body of a Messages request with `temperature` when given (the canary of an
/// answer check sends 0; Anthropic has no `seed`).
pub fn messages_body_with(
    model: &str,
    prompt: &str,
    max_tokens: u32,
    stream: bool,
    temperature: Option<f64>,
) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    });
    if stream {
        body["stream"] = true.into();
    }
    if let Some(t) = temperature {
        body["temperature"] = t.into();
    }
    Bytes::from(body.to_string())
}

/// The `finish_reason` value of an Anthropic `stop_reason`: `end_turn` and `stop_sequence`
/// are `stop`, `max_tokens` is `length`, `tool_use` is `tool_calls`, `refusal` is
/// `content_filter`, anything else `other`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    FinishReason::parse(stop_reason).as_str()
}

/// Token counts of a `usage` object as reported, each `None` when absent or null.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cache_write: Option<u64>,
    cache_read: Option<u64>,
    /// A present field was not a non-negative integer.
    invalid: bool,
}

impl Counts {
    /// Reads a `usage` object; later (cumulative) reports overwrite what they carry.
    fn merge(&mut self, usage: &Value) {
        let mut field = |name: &str, slot: &mut Option<u64>| match usage.get(name) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => *slot = Some(n),
                None => self.invalid = true,
            },
        };
        let (mut input, mut output, mut write, mut read) =
            (self.input, self.output, self.cache_write, self.cache_read);
        field("input_tokens", &mut input);
        field("output_tokens", &mut output);
        field("cache_creation_input_tokens", &mut write);
        field("cache_read_input_tokens", &mut read);
        (self.input, self.output, self.cache_write, self.cache_read) = (input, output, write, read);
    }

    /// The usage, if both main counts arrived and nothing was malformed.
    fn usage(&self) -> Option<Usage> {
        if self.invalid {
            return None;
        }
        let (input, output) = (self.input?, self.output?);
        let write = self.cache_write.unwrap_or(0);
        let read = self.cache_read.unwrap_or(0);
        Some(Usage {
            prompt_tokens: input.saturating_add(write).saturating_add(read),
            completion_tokens: output,
            cached_tokens: read,
            cache_write_tokens: write,
        })
    }
}

/// Reads an Anthropic `usage` object (the object itself); `None` if absent, incomplete or
/// malformed.
pub fn parse_usage(usage: Option<&Value>) -> Option<Usage> {
    let u = usage.filter(|u| u.is_object())?;
    let mut c = Counts::default();
    c.merge(u);
    c.usage()
}

fn parse_json(data: &[u8]) -> Result<Value, AnthropicError> {
    // Syntax errors name a position and never echo the input.
    serde_json::from_slice(data).map_err(|e| AnthropicError::Json(e.to_string()))
}

fn error_kind(v: &Value) -> &'static str {
    let kind = v
        .get("error")
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str);
    ERROR_TYPES
        .iter()
        .find(|t| Some(**t) == kind)
        .copied()
        .unwrap_or("unknown")
}

fn model_of(v: &Value) -> Option<String> {
    v.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// What a Messages reply said beyond its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageReply {
    /// Usage and the answering model, as the OpenAI shape reports them.
    pub reply: ChatReply,
    /// Anthropic's `stop_reason` (see [`finish_reason`]).
    pub stop_reason: Option<String>,
    /// The text blocks' answer (for `expect`) and the mapped finish reason.
    pub facts: AnswerFacts,
}

/// Parses a (non-streamed) Messages reply; it must have a `content` array.
pub fn parse_message(body: &[u8]) -> Result<MessageReply, AnthropicError> {
    let v = parse_json(body)?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return Err(AnthropicError::Error {
            place: "response",
            kind: error_kind(&v),
        });
    }
    let Some(content) = v.get("content").and_then(Value::as_array) else {
        return Err(AnthropicError::Missing("\"content\" array"));
    };
    // The answer is the text blocks in order; thinking and tool blocks are not part of it.
    let mut answer = String::new();
    for block in content {
        if block.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(text) = block.get("text").and_then(Value::as_str) {
                push_answer(&mut answer, text);
            }
        }
    }
    let stop_reason = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(MessageReply {
        reply: ChatReply {
            usage: parse_usage(v.get("usage")),
            served_model: model_of(&v),
        },
        facts: AnswerFacts {
            answer,
            finish_reason: stop_reason.as_deref().map(FinishReason::parse),
            // Anthropic has no system_fingerprint.
            system_fingerprint: None,
        },
        stop_reason,
    })
}

/// The result of a completed Messages stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnthropicSummary {
    /// Usage and the answering model.
    pub reply: ChatReply,
    /// Time to the first visible text delta.
    pub time_to_first_token: Option<Duration>,
    /// Delta arrival times, gaps, stalls, first tokens and the finish reason.
    pub timing: TimingSummary,
    /// The visible answer (for `expect`) and the finish reason.
    pub facts: AnswerFacts,
    /// Whether a `message_delta` reported usage (the final output count).
    pub usage_seen: bool,
    /// The last `stop_reason` of a `message_delta`.
    pub stop_reason: Option<String>,
}

/// Follows a Messages stream event by event.
#[derive(Debug)]
pub struct AnthropicStream {
    started: bool,
    done: bool,
    model: Option<String>,
    counts: Counts,
    timing: StreamTiming,
    answer: String,
    error: Option<Value>,
    usage_seen: bool,
    stop_reason: Option<String>,
}

impl Default for AnthropicStream {
    fn default() -> Self {
        Self::new()
    }
}

impl AnthropicStream {
    /// Starts following a stream with the default stall threshold.
    pub fn new() -> Self {
        Self::with_stall_threshold(DEFAULT_STALL_THRESHOLD)
    }

    /// Starts following a stream; delta gaps longer than `stall_threshold` are stalls.
    pub fn with_stall_threshold(stall_threshold: Duration) -> Self {
        AnthropicStream {
            started: false,
            done: false,
            model: None,
            counts: Counts::default(),
            timing: StreamTiming::new(stall_threshold),
            answer: String::new(),
            error: None,
            usage_seen: false,
            stop_reason: None,
        }
    }

    /// Tells whether `message_stop` has arrived (later events are ignored).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The timing so far (also when the stream fails).
    pub fn timing(&self) -> TimingSummary {
        self.timing.summary()
    }

    /// The error object of an `error` event, once [`AnthropicError::Error`] was returned:
    /// for classification only, never for a message.
    pub fn error_event(&self) -> Option<&Value> {
        self.error.as_ref()
    }

    fn require_start(&self, event: &'static str) -> Result<(), AnthropicError> {
        if self.started {
            Ok(())
        } else {
            Err(AnthropicError::OutOfOrder {
                event,
                problem: "before message_start",
            })
        }
    }

    /// Takes one event that arrived `at` after the request was sent.
    pub fn on_event(&mut self, event: &SseEvent, at: Duration) -> Result<(), AnthropicError> {
        // OpenAI's end marker, which some relays append: not JSON, and no message_stop.
        if self.done || event.data.trim() == "[DONE]" {
            return Ok(());
        }
        let v = parse_json(event.data.as_bytes())?;
        // The data's own `type` is authoritative; the `event:` line is its fallback.
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .ok_or(AnthropicError::Missing("\"type\" of a stream event"))?;
        match kind {
            "message_start" => {
                if self.started {
                    return Err(AnthropicError::OutOfOrder {
                        event: "message_start",
                        problem: "twice",
                    });
                }
                self.started = true;
                let message = v.get("message");
                if let Some(m) = message.and_then(model_of) {
                    self.model = Some(m);
                }
                if let Some(u) = message.and_then(|m| m.get("usage")) {
                    self.counts.merge(u);
                }
            }
            "content_block_start" => self.require_start("content_block_start")?,
            "content_block_stop" => self.require_start("content_block_stop")?,
            "content_block_delta" => {
                self.require_start("content_block_delta")?;
                let delta = v.get("delta");
                let text = |field: &str| {
                    delta
                        .and_then(|d| d.get(field))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                };
                // An empty delta is no token.
                match delta.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        if let Some(t) = text("text") {
                            self.timing.on_text(at, TextKind::Visible);
                            push_answer(&mut self.answer, t);
                        }
                    }
                    Some("thinking_delta") if text("thinking").is_some() => {
                        self.timing.on_text(at, TextKind::Reasoning);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.require_start("message_delta")?;
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.timing.on_finish_reason(r);
                    self.stop_reason = Some(r.to_string());
                }
                // Its usage is cumulative: a second message_delta replaces the first's counts.
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    self.usage_seen = true;
                    self.counts.merge(u);
                }
            }
            "message_stop" => {
                self.require_start("message_stop")?;
                self.done = true;
            }
            "error" => {
                // Kept for classification: the error object says why, like an HTTP error body.
                self.error = Some(match v.get("error") {
                    Some(e) if e.is_object() => e.clone(),
                    _ => serde_json::json!({}),
                });
                return Err(AnthropicError::Error {
                    place: "stream",
                    kind: error_kind(&v),
                });
            }
            // `ping` and event types added after this was written.
            _ => {}
        }
        Ok(())
    }

    /// Ends the stream: it must have reached `message_stop`.
    pub fn finish(self) -> Result<AnthropicSummary, AnthropicError> {
        if !self.done {
            return Err(AnthropicError::NoStop);
        }
        let timing = self.timing.summary();
        Ok(AnthropicSummary {
            reply: ChatReply {
                usage: self.counts.usage(),
                served_model: self.model,
            },
            time_to_first_token: timing.first_visible,
            facts: AnswerFacts {
                answer: self.answer,
                finish_reason: timing.finish_reason,
                system_fingerprint: None,
            },
            usage_seen: self.usage_seen,
            stop_reason: self.stop_reason,
            timing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: Some(event.into()),
            data: data.into(),
        }
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1}}}"#;

    fn good_stream() -> Vec<SseEvent> {
        vec![
            ev("message_start", START),
            ev(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            ),
            ev(
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            ev("ping", r#"{"type":"ping"}"#),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"po"}}"#,
            ),
            ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"ng"}}"#,
            ),
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}"#,
            ),
            ev("message_stop", r#"{"type":"message_stop"}"#),
        ]
    }

    fn run(events: &[SseEvent]) -> Result<AnthropicSummary, AnthropicError> {
        let mut s = AnthropicStream::new();
        for (i, e) in events.iter().enumerate() {
            s.on_event(e, Duration::from_millis(10 * (i as u64 + 1)))?;
        }
        s.finish()
    }

    #[test]
    fn body_has_the_messages_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&messages_body("claude", "ping", 5, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "claude",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "ping"}],
                "stream": true,
            })
        );
        let v: serde_json::Value =
            serde_json::from_slice(&messages_body("claude", "ping", 5, false)).unwrap();
        assert!(v.get("stream").is_none());
        let v: serde_json::Value =
            serde_json::from_slice(&messages_body_with("claude", "ping", 5, false, Some(0.0)))
                .unwrap();
        assert_eq!(v["temperature"], 0.0);
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "other"),
            ("", "other"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop}");
        }
    }

    #[test]
    fn a_stream_yields_usage_with_cache_counts_deltas_and_stop_reason() {
        let s = run(&good_stream()).unwrap();
        assert_eq!(s.reply.served_model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(
            s.reply.usage,
            Some(Usage {
                prompt_tokens: 2112,
                completion_tokens: 3,
                cached_tokens: 2000,
                cache_write_tokens: 100,
            })
        );
        let ms = Duration::from_millis;
        assert_eq!(s.timing.first_reasoning, Some(ms(30)));
        assert_eq!(s.time_to_first_token, Some(ms(60)));
        assert_eq!(s.timing.first_visible, Some(ms(60)));
        // Thinking at 30 ms, text at 60 and 70: the gaps run across both kinds.
        assert_eq!(s.timing.gaps, [ms(30), ms(10)]);
        assert_eq!(s.timing.chunks, 3);
        assert_eq!(s.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(s.timing.finish_reason, Some(FinishReason::Stop));
        // Only visible text is the answer.
        assert_eq!(s.facts.answer, "pong");
        assert_eq!(s.facts.finish_reason, Some(FinishReason::Stop));
        assert!(s.usage_seen);
    }

    #[test]
    fn the_data_type_wins_and_the_event_line_is_a_fallback() {
        let mut events = good_stream();
        // No `event:` lines at all (some relays omit them): the data's type suffices.
        for e in &mut events {
            e.event = None;
        }
        assert!(run(&events).is_ok());
        // A `type`-less data with an event line: the event line names it.
        let mut s = AnthropicStream::new();
        s.on_event(&ev("message_start", r#"{"message":{}}"#), Duration::ZERO)
            .unwrap();
        let mut s2 = AnthropicStream::new();
        assert_eq!(
            s2.on_event(
                &SseEvent {
                    event: None,
                    data: "{}".into()
                },
                Duration::ZERO
            ),
            Err(AnthropicError::Missing("\"type\" of a stream event"))
        );
    }

    #[test]
    fn events_out_of_order_fail_clearly() {
        let delta = good_stream()[2].clone();
        assert_eq!(
            run(&[delta]),
            Err(AnthropicError::OutOfOrder {
                event: "content_block_delta",
                problem: "before message_start"
            })
        );
        let stop = good_stream()[8].clone();
        assert!(matches!(
            run(&[stop]),
            Err(AnthropicError::OutOfOrder {
                event: "message_stop",
                ..
            })
        ));
        let mut twice = good_stream();
        twice.insert(1, ev("message_start", START));
        assert_eq!(
            run(&twice),
            Err(AnthropicError::OutOfOrder {
                event: "message_start",
                problem: "twice"
            })
        );
        let e = AnthropicError::OutOfOrder {
            event: "content_block_delta",
            problem: "before message_start",
        };
        assert_eq!(
            e.to_string(),
            "stream event content_block_delta arrived before message_start"
        );
    }

    #[test]
    fn message_delta_twice_and_unknown_events_are_tolerated() {
        let mut events = good_stream();
        events.insert(
            8,
            ev(
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":5}}"#,
            ),
        );
        events.insert(3, ev("brand_new", r#"{"type":"brand_new","x":[1,2]}"#));
        let s = run(&events).unwrap();
        // The last cumulative report wins.
        assert_eq!(s.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(s.reply.usage.unwrap().completion_tokens, 5);
        // Events after message_stop, and OpenAI's [DONE], are ignored.
        let mut events = good_stream();
        events.push(ev("", "[DONE]"));
        events.push(ev("", "garbage"));
        assert!(run(&events).is_ok());
    }

    #[test]
    fn streams_that_end_early_or_carry_errors() {
        let mut cut = good_stream();
        cut.truncate(6);
        assert_eq!(run(&cut), Err(AnthropicError::NoStop));
        let mut overloaded = good_stream();
        overloaded.insert(
            3,
            ev(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
        );
        let e = run(&overloaded).unwrap_err();
        assert_eq!(
            e,
            AnthropicError::Error {
                place: "stream",
                kind: "overloaded_error"
            }
        );
        // Unknown error types never reach the message.
        let mut s = AnthropicStream::new();
        let e = s
            .on_event(
                &ev(
                    "error",
                    r#"{"type":"error","error":{"type":"sk-secret-ish"}}"#,
                ),
                Duration::ZERO,
            )
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            AnthropicStream::new().on_event(&ev("x", "{not json"), Duration::ZERO),
            Err(AnthropicError::Json(_))
        ));
    }

    #[test]
    fn error_objects_are_kept_and_usage_without_message_delta_is_unseen() {
        let mut s = AnthropicStream::new();
        s.on_event(&ev("message_start", START), Duration::ZERO)
            .unwrap();
        let e = s.on_event(
            &ev(
                "error",
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 9 tokens > 1 maximum"}}"#,
            ),
            Duration::ZERO,
        );
        assert!(matches!(e, Err(AnthropicError::Error { .. })));
        // The whole object, so classification can read its message.
        let kept = s.error_event().unwrap();
        assert_eq!(kept["type"], "invalid_request_error");
        // A stream whose message_delta carries no usage: the output count never came.
        let mut events = good_stream();
        events[7] = ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"}}"#,
        );
        let s = run(&events).unwrap();
        assert!(!s.usage_seen);
        assert_eq!(s.timing.finish_reason, Some(FinishReason::ToolCalls));
        // Gaps longer than the threshold are stalls.
        let mut s = AnthropicStream::with_stall_threshold(Duration::from_millis(15));
        for (i, e) in good_stream().iter().enumerate() {
            let at = if i >= 5 { 100 + i as u64 } else { i as u64 };
            s.on_event(e, Duration::from_millis(at)).unwrap();
        }
        let t = s.finish().unwrap().timing;
        assert_eq!(t.stalls, 1);
        assert_eq!(t.longest_gap, Some(Duration::from_millis(103)));
    }

    #[test]
    fn malformed_or_huge_usage_is_never_priced_as_garbage() {
        let usage = |u: &str| parse_usage(Some(&serde_json::from_str(u).unwrap()));
        // Negative, fractional, string counts: no usage at all.
        for bad in [
            r#"{"input_tokens":-5,"output_tokens":1}"#,
            r#"{"input_tokens":5,"output_tokens":1.5}"#,
            r#"{"input_tokens":"5","output_tokens":1}"#,
            r#"{"input_tokens":5,"output_tokens":1,"cache_read_input_tokens":-1}"#,
            r#"{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":1e20}"#,
            r#"{"input_tokens":5}"#,
        ] {
            assert_eq!(usage(bad), None, "{bad}");
        }
        assert_eq!(parse_usage(None), None);
        assert_eq!(parse_usage(Some(&serde_json::json!([1, 2]))), None);
        // Nulls are absent, not invalid.
        let u = usage(r#"{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":null}"#)
            .unwrap();
        assert_eq!((u.prompt_tokens, u.cache_write_tokens), (5, 0));
        // Huge counts saturate instead of wrapping; the plausibility check then refuses them.
        let u = usage(&format!(
            r#"{{"input_tokens":{m},"output_tokens":1,"cache_read_input_tokens":{m}}}"#,
            m = u64::MAX
        ))
        .unwrap();
        assert_eq!(u.prompt_tokens, u64::MAX);
        assert!(!u.is_plausible());
        // A malformed count in a stream's message_delta spoils the stream's usage too.
        let mut events = good_stream();
        events[7] = ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":"NaN"}}"#,
        );
        assert_eq!(run(&events).unwrap().reply.usage, None);
    }

    #[test]
    fn plain_replies() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"pong"}],"stop_reason":"max_tokens","usage":{"input_tokens":8,"cache_read_input_tokens":4,"output_tokens":5}}"#;
        let r = parse_message(body).unwrap();
        assert_eq!(r.reply.served_model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(r.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(r.facts.answer, "pong");
        assert_eq!(r.facts.finish_reason, Some(FinishReason::Length));
        let u = r.reply.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens), (12, 4));
        // Thinking blocks are not the answer; text blocks join in order.
        let r = parse_message(br#"{"content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"Par"},{"type":"text","text":"is"}]}"#).unwrap();
        assert_eq!(r.facts.answer, "Paris");
        assert_eq!(
            parse_message(br#"{"type":"message","model":"m"}"#),
            Err(AnthropicError::Missing("\"content\" array"))
        );
        assert_eq!(
            parse_message(br#"{"type":"error","error":{"type":"overloaded_error"}}"#),
            Err(AnthropicError::Error {
                place: "response",
                kind: "overloaded_error"
            })
        );
        let e = parse_message(b"{\"content\": [private").unwrap_err();
        assert!(!e.to_string().contains("private"), "{e}");
    }
}
