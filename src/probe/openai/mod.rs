//! Probe of an OpenAI-compatible API (`kind = "openai"`): is the model up, how fast does it
//! answer and start streaming, why does it fail, and what do the probes cost.
//!
//! With `api = "anthropic"` the chat checks speak Anthropic's Messages API instead
//! ([`anthropic`]); the `embeddings` check reads `POST /embeddings` ([`embeddings`]). Both map
//! into the same reply and usage, so metrics, cost and failure handling are shared.
//!
//! The pure core lives in the submodules: [`sse`] (incremental event-stream parser),
//! [`response`] (reading models, completions and stream chunks), [`timing`] (stream chunk
//! timing: gaps, stalls, first tokens), [`classify`] (bounded failure reasons and key
//! diagnosis), [`ratelimit`] (rate-limit headers), [`expect`] (answer checks), [`spend`] (the
//! daily spend guard), [`metrics`] and [`signals`] (recording). This module is the thin I/O
//! shell that sends the requests through the shared HTTP client.

pub mod anthropic;
pub mod classify;
pub mod embeddings;
pub mod expect;
pub mod metrics;
pub mod ratelimit;
pub mod response;
pub mod signals;
pub mod spend;
pub mod sse;
pub mod timing;

pub use crate::config::openai::{Api, Check, TokenLimitField};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use self::anthropic::{AnthropicError, AnthropicStream};
use self::classify::{classify_status, diagnose_key, Failure, KeyDiagnosis, KeySource, Reason};
use self::embeddings::EmbeddingError;
use self::metrics::{Accounting, BaseLabels, CheckRun, Measured, RecordContext};
use self::response::{AnswerFacts, ResponseError, StreamState};
use self::signals::{Anomaly, History, Signals};
use self::spend::SpendGuard;
use self::sse::SseParser;
use super::{ProbeError, ProbeReport};
use crate::config::OpenAiProbeSettings;
use crate::http_client::{ClientError, HttpClient, Phase, Request, Response, Trace};
use crate::series::Registry;

use super::Detail;

/// Looks up an environment variable; injectable so tests need not touch the process env.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Returns the current Unix time in milliseconds; injectable for the spend guard's day.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The header in which LiteLLM forwards the upstream provider's `Retry-After`.
const LITELLM_RETRY_AFTER: &str = "llm_provider-retry-after";

/// Most distinct unpriced model names warned about, so a server inventing names cannot grow
/// the set without bound.
const MAX_WARNED_MODELS: usize = 64;

/// A probe of an OpenAI-compatible API.
pub struct OpenAiProbe {
    // Read-only after start; behind an Arc so the probe stays small to move between tasks.
    settings: Arc<OpenAiProbeSettings>,
    client: HttpClient,
    env: EnvLookup,
    clock: Clock,
    labels: BaseLabels,
    models_url: reqwest::Url,
    chat_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    guard: SpendGuard,
    guard_was_engaged: bool,
    last_key_state: Option<KeyDiagnosis>,
    warned_unpriced: HashSet<String>,
    history: History,
}

/// `{base_url}/{endpoint}`, keeping the base path and any query string (gateways use
/// `?api-version=`), whether or not the base ends with `/`.
pub fn endpoint_url(base: &reqwest::Url, endpoint: &str) -> reqwest::Url {
    let mut url = base.clone();
    let path = format!("{}/{endpoint}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The JSON body of a chat request.
pub fn chat_body(model: &str, prompt: &str, limit: (TokenLimitField, u32), stream: bool) -> Bytes {
    chat_body_with(model, prompt, limit, stream, None, None)
}

/// The JSON body of a chat request with `temperature` and `seed` when given (the canary of
/// an answer check sends both, so its answer is deterministic where the provider allows).
pub fn chat_body_with(
    model: &str,
    prompt: &str,
    limit: (TokenLimitField, u32),
    stream: bool,
    temperature: Option<f64>,
    seed: Option<i64>,
) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
    });
    body[limit.0.as_str()] = limit.1.into();
    if stream {
        body["stream"] = true.into();
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    if let Some(t) = temperature {
        body["temperature"] = t.into();
    }
    if let Some(seed) = seed {
        body["seed"] = seed.into();
    }
    Bytes::from(body.to_string())
}

/// A stream parser the event loop feeds: OpenAI's chunks or Anthropic's events. Both are read
/// by one loop ([`OpenAiProbe::read_events`]); what differs is how their errors read.
trait EventStream: Sized {
    /// What an event can say is wrong.
    type Error: PartialEq;
    /// The end marker as a reader knows it, for messages about a stream that broke off.
    const END_MARKER: &'static str;
    /// Whether the end marker arrived.
    fn is_done(&self) -> bool;
    /// Takes one event that arrived `at` after the request was sent.
    fn on_event(&mut self, event: &sse::SseEvent, at: Duration) -> Result<(), Self::Error>;
    /// Timing so far, also of a stream that failed.
    fn timing(&self) -> timing::TimingSummary;
    /// The error event the stream carried, if any.
    fn error_event(&self) -> Option<&serde_json::Value>;
    /// The stream's result once it ended.
    fn finish(self) -> Result<StreamEnd, Self::Error>;
    /// Whether `e` is an error event inside the 200 stream.
    fn is_error_event(e: &Self::Error) -> bool;
    /// Whether `e` says the end marker never came.
    fn is_missing_end(e: &Self::Error) -> bool;
    /// The failure `e` stands for, after `events` events.
    fn failure(e: &Self::Error, events: u64) -> Failure;
}

/// What both stream shapes yield when they end well.
struct StreamEnd {
    reply: response::ChatReply,
    time_to_first_token: Option<Duration>,
    timing: timing::TimingSummary,
    facts: AnswerFacts,
    usage_seen: bool,
}

impl EventStream for StreamState {
    type Error = ResponseError;
    const END_MARKER: &'static str = "data: [DONE]";
    fn is_done(&self) -> bool {
        StreamState::is_done(self)
    }
    fn on_event(&mut self, event: &sse::SseEvent, at: Duration) -> Result<(), ResponseError> {
        StreamState::on_event(self, event, at)
    }
    fn timing(&self) -> timing::TimingSummary {
        StreamState::timing(self)
    }
    fn error_event(&self) -> Option<&serde_json::Value> {
        StreamState::error_event(self)
    }
    fn finish(self) -> Result<StreamEnd, ResponseError> {
        StreamState::finish(self).map(|s| StreamEnd {
            reply: s.reply,
            time_to_first_token: s.time_to_first_token,
            timing: s.timing,
            facts: s.facts,
            usage_seen: s.usage_seen,
        })
    }
    fn is_error_event(e: &ResponseError) -> bool {
        *e == ResponseError::StreamError
    }
    fn is_missing_end(e: &ResponseError) -> bool {
        *e == ResponseError::NoDone
    }
    fn failure(e: &ResponseError, events: u64) -> Failure {
        response_failure(e, events)
    }
}

impl EventStream for AnthropicStream {
    type Error = AnthropicError;
    // Anthropic's end marker is message_stop: its absence is the same anomaly as [DONE]'s.
    const END_MARKER: &'static str = "message_stop";
    fn is_done(&self) -> bool {
        AnthropicStream::is_done(self)
    }
    fn on_event(&mut self, event: &sse::SseEvent, at: Duration) -> Result<(), AnthropicError> {
        AnthropicStream::on_event(self, event, at)
    }
    fn timing(&self) -> timing::TimingSummary {
        AnthropicStream::timing(self)
    }
    fn error_event(&self) -> Option<&serde_json::Value> {
        AnthropicStream::error_event(self)
    }
    fn finish(self) -> Result<StreamEnd, AnthropicError> {
        AnthropicStream::finish(self).map(|s| StreamEnd {
            reply: s.reply,
            time_to_first_token: s.time_to_first_token,
            timing: s.timing,
            facts: s.facts,
            usage_seen: s.usage_seen,
        })
    }
    fn is_error_event(e: &AnthropicError) -> bool {
        matches!(e, AnthropicError::Error { .. })
    }
    fn is_missing_end(e: &AnthropicError) -> bool {
        *e == AnthropicError::NoStop
    }
    fn failure(e: &AnthropicError, events: u64) -> Failure {
        anthropic_failure(e, events)
    }
}

/// A failure of a (non-streamed) Anthropic reply: an error object in a 200 body is classified
/// like the HTTP error it stands for (`overloaded_error` is `overloaded`, …).
fn anthropic_body_failure(e: &AnthropicError, body: &[u8], key_state: &str) -> Failure {
    if let AnthropicError::Error { .. } = e {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let empty = serde_json::Value::Object(Default::default());
        let err = v.get("error").filter(|e| e.is_object()).unwrap_or(&empty);
        return classify::classify_error_object(
            err,
            "the 200 response carried an error",
            key_state,
        );
    }
    anthropic_failure(e, 0)
}

/// A failure to read an Anthropic Messages answer (see [`response_failure`]).
fn anthropic_failure(e: &AnthropicError, events: u64) -> Failure {
    match e {
        AnthropicError::NoStop if events > 0 => Failure::new(
            Reason::StreamInterrupted,
            "the stream broke off before message_stop",
        ),
        AnthropicError::NoStop => Failure::new(
            Reason::InvalidResponse,
            "the response has no server-sent events; does the server support \"stream\": true?",
        ),
        AnthropicError::Error { .. } => Failure::new(Reason::ServerError, e.to_string()),
        _ => Failure::new(Reason::InvalidResponse, e.to_string()),
    }
}

/// A failure to read an embeddings answer: every shape problem, a dimension mismatch
/// included, is an invalid response whose message says which.
fn embedding_failure(e: &EmbeddingError) -> Failure {
    Failure::new(Reason::InvalidResponse, e.to_string())
}

/// Maps an HTTP-client error to a bounded reason and an actionable message.
pub fn client_failure(check: Check, e: &ClientError) -> Failure {
    let reason = match e {
        ClientError::Resolve { .. } | ClientError::NoAddress { .. } => Reason::Dns,
        ClientError::Connect { .. } => Reason::Connect,
        ClientError::Tls { .. } => Reason::Tls,
        ClientError::Proxy { .. } => Reason::Proxy,
        ClientError::Timeout { .. } => Reason::Timeout,
        ClientError::BodyTooLarge { .. } => Reason::BodyTooLarge,
        ClientError::Http {
            phase: Phase::Transfer,
            ..
        } if check == Check::ChatStream => Reason::StreamInterrupted,
        ClientError::Http { .. } => Reason::InvalidResponse,
        ClientError::InvalidUrl { .. }
        | ClientError::InvalidHeader { .. }
        | ClientError::TooManyRedirects { .. }
        | ClientError::BadRedirect { .. } => Reason::Request,
        ClientError::Credentials { .. } => Reason::Auth,
    };
    let message = match (reason, e.phase()) {
        (Reason::Timeout, Some(p)) => format!("{e} (phase {p})"),
        (Reason::BodyTooLarge, _) => {
            format!("{e}; raise max_body_bytes if the answer is legitimate")
        }
        (Reason::StreamInterrupted, _) => format!("the stream broke off before data: [DONE]: {e}"),
        _ => e.to_string(),
    };
    Failure::new(reason, message)
}

/// An error event inside a 200 stream, of either API shape: counted as an anomaly and
/// classified like the HTTP error it stands for.
fn error_event_failure(
    event: Option<&serde_json::Value>,
    key_state: &str,
    signals: &mut Signals,
) -> Failure {
    signals.anomalies.push(Anomaly::ErrorEvent);
    let empty = serde_json::Value::Object(Default::default());
    classify::classify_stream_error(event.unwrap_or(&empty), key_state)
}

/// Checks the answer against `expect`; a mismatch is the failure `answer_mismatch`.
fn check_answer(
    expect: Option<&expect::Expect>,
    facts: &AnswerFacts,
    max_tokens: u32,
) -> Result<(), Failure> {
    let Some(e) = expect else {
        return Ok(());
    };
    e.check(&facts.answer).map_err(|m| {
        let hint = if facts.finish_reason == Some(timing::FinishReason::Length) {
            format!("; the answer stopped at max_tokens ({max_tokens}): raise max_tokens so the whole answer fits")
        } else {
            "; the relay may serve another model, or the prompt has no single answer".to_string()
        };
        Failure::new(Reason::AnswerMismatch, format!("{m}{hint}"))
    })
}

/// A failure to read a 2xx answer. The message does not name the check: the report puts
/// the check's name in front of every failure (see [`report`]).
fn response_failure(e: &ResponseError, events: u64) -> Failure {
    let reason = match e {
        ResponseError::NoDone if events > 0 => Reason::StreamInterrupted,
        ResponseError::StreamError => Reason::ServerError,
        _ => Reason::InvalidResponse,
    };
    let message = match e {
        ResponseError::NoDone if events == 0 => {
            "the response has no server-sent events; does the server support \"stream\": true?"
                .to_string()
        }
        ResponseError::StreamError => {
            "the stream carried an error event instead of a completion".to_string()
        }
        e => e.to_string(),
    };
    Failure::new(reason, message)
}

impl OpenAiProbe {
    /// Builds the probe, reading keys from the process environment and time from the system.
    pub fn new(settings: OpenAiProbeSettings) -> Result<Self, ProbeError> {
        Self::with_env(
            settings,
            Arc::new(|name| std::env::var(name).ok()),
            Arc::new(crate::clock::now_ms),
        )
    }

    /// Builds the probe with an injected environment lookup and clock.
    pub fn with_env(
        settings: OpenAiProbeSettings,
        env: EnvLookup,
        clock: Clock,
    ) -> Result<Self, ProbeError> {
        let client = HttpClient::new(&settings.tls)
            .map_err(|source| ProbeError::Tls {
                probe: settings.name.clone(),
                source,
            })?
            .with_proxy(settings.proxy.clone());
        let labels = BaseLabels::new(
            &settings.name,
            &settings.provider,
            &settings.model,
            &settings.labels,
        );
        Ok(OpenAiProbe {
            models_url: endpoint_url(&settings.base_url, "models"),
            chat_url: endpoint_url(
                &settings.base_url,
                match settings.api {
                    Api::Openai => "chat/completions",
                    Api::Anthropic => "messages",
                },
            ),
            embeddings_url: endpoint_url(&settings.base_url, "embeddings"),
            guard: SpendGuard::new(settings.max_probe_spend_per_day),
            guard_was_engaged: false,
            last_key_state: None,
            warned_unpriced: HashSet::new(),
            history: History::default(),
            client,
            env,
            clock,
            labels,
            settings: Arc::new(settings),
        })
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Reads the key now (it may have been rotated) and diagnoses it, never logging it.
    fn read_key(&mut self) -> (Option<String>, KeyDiagnosis) {
        let (value, diagnosis) = match &self.settings.key {
            KeySource::Env(var) => {
                let v = (self.env)(var);
                let d = diagnose_key(Ok(v.as_deref()));
                (v, d)
            }
            KeySource::File(path) => match crate::config::read_secret_file(path) {
                Ok(s) => {
                    let v = s.expose().to_string();
                    let d = diagnose_key(Ok(Some(&v)));
                    (Some(v), d)
                }
                Err(e) => (None, KeyDiagnosis::Unreadable(e.to_string())),
            },
            KeySource::None => (None, KeyDiagnosis::Fine),
        };
        if self.last_key_state.as_ref() != Some(&diagnosis) {
            if diagnosis != KeyDiagnosis::Fine {
                tracing::warn!(
                    probe = %self.settings.name,
                    "{}",
                    self.settings.key.explain(&diagnosis)
                );
            }
            self.last_key_state = Some(diagnosis.clone());
        }
        (value, diagnosis)
    }

    fn request(&self, check: Check, key: Option<&str>) -> Request {
        let (method, url, body, accept) = match check {
            Check::Models => (
                http::Method::GET,
                &self.models_url,
                None,
                "application/json",
            ),
            Check::Embeddings => (
                http::Method::POST,
                &self.embeddings_url,
                Some(embeddings::embeddings_body(
                    &self.settings.embeddings.model,
                    &self.settings.embeddings.input,
                )),
                "application/json",
            ),
            Check::Chat | Check::ChatStream => {
                let stream = check == Check::ChatStream;
                let body = match self.settings.api {
                    Api::Openai => chat_body_with(
                        &self.settings.model,
                        &self.settings.prompt,
                        (self.settings.token_limit_field, self.settings.max_tokens),
                        stream,
                        self.settings.temperature,
                        self.settings.seed,
                    ),
                    Api::Anthropic => anthropic::messages_body_with(
                        &self.settings.model,
                        &self.settings.prompt,
                        self.settings.max_tokens,
                        stream,
                        self.settings.temperature,
                    ),
                };
                let accept = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                (http::Method::POST, &self.chat_url, Some(body), accept)
            }
        };
        let mut req = Request::new(method, url.clone(), self.settings.timeout);
        req.body_limit = self.settings.max_body_bytes;
        // An API that redirects would turn POST into GET; report the 3xx instead.
        req.follow_redirects = false;
        req.headers = crate::secret::expose_headers(&self.settings.headers);
        req.headers.push(("accept".into(), accept.into()));
        if body.is_some() {
            req.headers
                .push(("content-type".into(), "application/json".into()));
        }
        req.body = body;
        // A key that cannot be a header value (empty, a newline) is left out: the server's
        // 401 is then reported with the key's defect named.
        if self.settings.api == Api::Anthropic {
            req.headers.push((
                "anthropic-version".into(),
                self.settings.anthropic_version.clone(),
            ));
        }
        if let Some(k) = key.filter(|k| !k.is_empty()) {
            match self.settings.api {
                Api::Openai => {
                    let auth = crate::auth::Auth::Bearer(crate::secret::Secret::new(k).into());
                    if auth.header_value().is_ok() {
                        let text = auth.header_text();
                        req.headers
                            .push(("authorization".into(), text.expose().to_string()));
                    }
                }
                // The client marks every configured header sensitive, so the key never shows.
                Api::Anthropic => {
                    if http::HeaderValue::from_str(k).is_ok() {
                        req.headers.push(("x-api-key".into(), k.to_string()));
                    }
                }
            }
        }
        req
    }

    async fn exchange(
        &self,
        check: Check,
        request: &Request,
        key_state: &str,
        trace: &mut Trace,
        signals: &mut Signals,
    ) -> Result<Measured, Failure> {
        let mut response = self
            .client
            .send(request, trace)
            .await
            .map_err(|e| client_failure(check, &e))?;
        let status = response.status().as_u16();
        // Read on every answer, a 429 above all: it tells how far off the limit was.
        signals.ratelimits = Some(ratelimit::parse_headers(
            response
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?))),
            (self.clock)(),
        ));
        if !(200..300).contains(&status) {
            // LiteLLM forwards the upstream's Retry-After only as `llm_provider-retry-after`.
            let retry_after = [http::header::RETRY_AFTER.as_str(), LITELLM_RETRY_AFTER]
                .iter()
                .find_map(|name| response.headers().get(*name)?.to_str().ok())
                .map(str::to_string);
            // The error body only feeds classification hints; a failure to read it changes
            // nothing about the status.
            let body = response.read_to_end(trace).await.unwrap_or_default();
            let mut f = classify_status(
                check,
                status,
                &body,
                key_state,
                retry_after.as_deref(),
                (self.clock)(),
            );
            if (300..400).contains(&status) {
                f.message = format!(
                    "HTTP {status}: base_url redirects; set it to the final URL of the API"
                );
            }
            return Err(f);
        }
        match check {
            Check::Models => {
                let body = response
                    .read_to_end(trace)
                    .await
                    .map_err(|e| client_failure(check, &e))?;
                let list = response::parse_models(&body, &self.settings.model)
                    .map_err(|e| response_failure(&e, 0))?;
                Ok(Measured {
                    models: Some(list),
                    ..Measured::default()
                })
            }
            Check::Chat => {
                let body = response
                    .read_to_end(trace)
                    .await
                    .map_err(|e| client_failure(check, &e))?;
                let (reply, facts) = match self.settings.api {
                    Api::Openai => (
                        response::parse_chat(&body).map_err(|e| response_failure(&e, 0))?,
                        response::parse_chat_facts(&body),
                    ),
                    Api::Anthropic => match anthropic::parse_message(&body) {
                        Ok(m) => (m.reply, m.facts),
                        Err(e) => return Err(anthropic_body_failure(&e, &body, key_state)),
                    },
                };
                signals.answering_model = reply.served_model.clone();
                let checked = check_answer(
                    self.settings.expect.as_ref(),
                    &facts,
                    self.settings.max_tokens,
                );
                signals.facts = Some(facts);
                checked?;
                Ok(Measured {
                    reply,
                    ..Measured::default()
                })
            }
            Check::ChatStream => match self.settings.api {
                Api::Openai => {
                    let state = StreamState::with_stall_threshold(self.settings.stall_threshold);
                    self.read_events(&mut response, trace, key_state, signals, state)
                        .await
                }
                Api::Anthropic => {
                    let state =
                        AnthropicStream::with_stall_threshold(self.settings.stall_threshold);
                    self.read_events(&mut response, trace, key_state, signals, state)
                        .await
                }
            },
            Check::Embeddings => {
                let body = response
                    .read_to_end(trace)
                    .await
                    .map_err(|e| client_failure(check, &e))?;
                let e = embeddings::parse_embeddings(
                    &body,
                    self.settings.embeddings.expected_dimensions,
                )
                .map_err(|e| embedding_failure(&e))?;
                signals.answering_model = e.reply.served_model.clone();
                Ok(Measured {
                    reply: e.reply,
                    embedding_dimensions: Some(e.dimensions),
                    ..Measured::default()
                })
            }
        }
    }

    /// Reads a stream (OpenAI chunks up to `[DONE]`, or Anthropic events up to
    /// `message_stop`) event by event, timing each as it arrives. Its timing and integrity go
    /// into `signals`, also when the stream fails.
    async fn read_events<S: EventStream>(
        &self,
        response: &mut Response,
        trace: &mut Trace,
        key_state: &str,
        signals: &mut Signals,
        mut state: S,
    ) -> Result<Measured, Failure> {
        let mut events = 0u64;
        let result = self
            .follow_stream(response, trace, &mut state, &mut events)
            .await;
        signals.timing = Some(state.timing());
        if let Err(e) = result {
            return Err(match e {
                Ok(mut f) => {
                    if f.reason == Reason::StreamInterrupted {
                        f.message = f.message.replace("data: [DONE]", S::END_MARKER);
                    }
                    f
                }
                Err(e) if S::is_error_event(&e) => {
                    error_event_failure(state.error_event(), key_state, signals)
                }
                Err(e) => S::failure(&e, events),
            });
        }
        let end = match state.finish() {
            Ok(end) => end,
            Err(e) => {
                if S::is_missing_end(&e) && events > 0 {
                    signals.anomalies.push(Anomaly::MissingDone);
                }
                return Err(S::failure(&e, events));
            }
        };
        let first_text = end.timing.first_text();
        self.conclude_stream(
            signals,
            end.reply,
            (end.time_to_first_token, first_text),
            end.facts,
            end.usage_seen,
        )
    }

    /// Feeds the body to `state` until `[DONE]` or its end. Errors: `Ok(failure)` for the
    /// transport or framing, `Err(e)` for what an event said.
    async fn follow_stream<S: EventStream>(
        &self,
        response: &mut Response,
        trace: &mut Trace,
        state: &mut S,
        events: &mut u64,
    ) -> Result<(), Result<Failure, S::Error>> {
        let check = Check::ChatStream;
        let started = trace.started.unwrap_or_else(Instant::now);
        let limit = usize::try_from(self.settings.max_body_bytes).unwrap_or(usize::MAX);
        let mut parser = SseParser::new(limit);
        while !state.is_done() {
            let Some(chunk) = response
                .chunk(trace)
                .await
                .map_err(|e| Ok(client_failure(check, &e)))?
            else {
                break;
            };
            let at = started.elapsed();
            let parsed = parser
                .feed(&chunk)
                .map_err(|e| Ok(Failure::new(Reason::InvalidResponse, e.to_string())))?;
            for event in parsed {
                *events += 1;
                state.on_event(&event, at).map_err(Err)?;
            }
        }
        Ok(())
    }

    /// What both stream readers do with a finished stream: a missing usage chunk and the
    /// answering model into `signals`, the answer check, and the measurement. `first` is the
    /// time to the first visible token and to the first text of any kind.
    fn conclude_stream(
        &self,
        signals: &mut Signals,
        reply: response::ChatReply,
        first: (Option<Duration>, Option<Duration>),
        facts: AnswerFacts,
        usage_seen: bool,
    ) -> Result<Measured, Failure> {
        if !usage_seen {
            signals.anomalies.push(Anomaly::MissingUsage);
        }
        signals.answering_model = reply.served_model.clone();
        let checked = check_answer(
            self.settings.expect.as_ref(),
            &facts,
            self.settings.max_tokens,
        );
        signals.facts = Some(facts);
        checked?;
        Ok(Measured {
            reply,
            time_to_first_token: first.0,
            first_text: first.1,
            ..Measured::default()
        })
    }

    async fn run_check(
        &self,
        check: Check,
        key: Option<&str>,
        key_state: &str,
    ) -> (CheckRun, Signals) {
        let request = self.request(check, key);
        let mut trace = Trace::default();
        let mut signals = Signals::default();
        let began = Instant::now();
        let result = self
            .exchange(check, &request, key_state, &mut trace, &mut signals)
            .await;
        let duration = trace.started.unwrap_or(began).elapsed();
        let run = CheckRun {
            check,
            duration,
            phases: trace.phases.iter().map(|(p, d)| (p.as_str(), d)).collect(),
            cert_expiry: trace.tls.as_ref().and_then(|t| t.earliest_cert_expiry),
            result,
        };
        (run, signals)
    }

    /// Runs every configured check once, recording into `registry`. Never panics on anything
    /// the server sends; each check's request is bounded by the probe's timeout.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let began = Instant::now();
        metrics::describe(registry);
        metrics::declare_counters(registry, &self.labels, &self.settings.checks);
        let (key, diagnosis) = self.read_key();
        let key_state = self.settings.key.explain(&diagnosis);
        let mut details: Vec<(String, Detail)> = Vec::new();
        let mut failures: Vec<(Check, Failure)> = Vec::new();
        let mut cert_expiry: Option<i64> = None;
        let mut notes: Vec<String> = Vec::new();
        let checks = self.settings.checks.clone();
        for check in checks {
            let name = check.as_str();
            if check.is_paid() && self.guard.engaged((self.clock)()) {
                metrics::record_skipped(registry, &self.labels, check);
                details.push((
                    name.into(),
                    "skipped: daily spend limit reached; resumes at 00:00 UTC".into(),
                ));
                continue;
            }
            let (run, signals) = self.run_check(check, key.as_deref(), &key_state).await;
            if let Some(t) = run.cert_expiry {
                cert_expiry = Some(cert_expiry.map_or(t, |c| c.min(t)));
            }
            let cx = RecordContext {
                labels: &self.labels,
                // The embeddings check asks for its own model, priced and compared as such.
                model: if check == Check::Embeddings {
                    &self.settings.embeddings.model
                } else {
                    &self.settings.model
                },
                pricing: &self.settings.pricing,
                buckets: &self.settings.buckets,
            };
            let acc = metrics::record_check(registry, &cx, &run);
            let signal_details = signals::record(
                registry,
                &cx,
                self.settings.max_tokens,
                &run,
                &signals,
                &mut self.history,
            );
            if let Some(dollars) = acc.cost {
                self.guard.record((self.clock)(), dollars);
            }
            self.warn_unpriced(&acc);
            describe_run(&run, &acc, &mut details);
            let line = signals::summary_line(check, &signal_details);
            if !line.is_empty() {
                notes.push(format!("{name}: {line}"));
            }
            details.extend(signal_details);
            if let Err(f) = run.result {
                failures.push((check, f));
            }
        }
        let now = (self.clock)();
        let engaged = self.guard.engaged(now);
        let spent = self.guard.spent_today(now);
        if engaged && !self.guard_was_engaged {
            tracing::warn!(
                probe = %self.settings.name,
                spent_today = spent,
                "daily spend limit reached: chat checks pause until 00:00 UTC"
            );
        }
        self.guard_was_engaged = engaged;
        metrics::record_spend(registry, &self.labels, spent, engaged);
        if self.settings.max_probe_spend_per_day.is_some() || spent > 0.0 {
            details.push(("spend_today_dollars".into(), Detail::Dollars(spent)));
        }
        if !notes.is_empty() {
            // Shown on the probe's line in `check` when no failure takes the room.
            details.push(("summary".into(), notes.join("; ").into()));
        }
        let duration = began.elapsed();
        metrics::record_run(
            registry,
            &self.labels,
            failures.is_empty(),
            duration,
            cert_expiry,
        );
        report(failures, duration, engaged, details)
    }

    fn warn_unpriced(&mut self, acc: &Accounting) {
        let Some(model) = &acc.unpriced_model else {
            return;
        };
        if self.warned_unpriced.len() < MAX_WARNED_MODELS
            && self.warned_unpriced.insert(model.clone())
        {
            tracing::warn!(
                probe = %self.settings.name,
                model = %model,
                "model has no [pricing] entry: its tokens are counted but not priced; add an entry or an alias"
            );
        }
    }
}

/// Adds a check's facts to the report details (numbers only; never text from the server).
/// Numbers stay exact; names of numeric facts end with their unit.
fn describe_run(run: &CheckRun, acc: &Accounting, details: &mut Vec<(String, Detail)>) {
    let name = run.check.as_str();
    let m = match &run.result {
        Ok(m) => m,
        Err(f) => {
            details.push((
                name.into(),
                format!("{}: {}", f.reason.as_str(), f.message).into(),
            ));
            return;
        }
    };
    details.push((name.into(), "ok".into()));
    let mut add = |key: &str, value: Detail| details.push((format!("{name}.{key}"), value));
    add("duration_seconds", run.duration.into());
    if let Some(list) = &m.models {
        add("models_available", Detail::Count(list.count as u64));
        add("model_listed", Detail::Flag(list.listed));
    }
    if let Some(ttft) = m.time_to_first_token {
        add("time_to_first_token_seconds", ttft.into());
    }
    if let Some(d) = m.embedding_dimensions {
        add("dimensions", Detail::Count(d as u64));
    }
    if let Some(tps) = acc.tokens_per_second {
        add("output_tokens_per_second", Detail::PerSecond(tps));
    }
    if run.check.is_paid() {
        match (&acc.usage, &acc.invalid_usage) {
            (None, Some(u)) => add(
                "tokens",
                format!(
                    "implausible usage ignored: input {}, output {} (over {} of a kind)",
                    u.prompt_tokens,
                    u.completion_tokens,
                    crate::pricing::MAX_PLAUSIBLE_TOKENS
                )
                .into(),
            ),
            (Some(u), _) => {
                add("input_tokens", Detail::Count(u.prompt_tokens));
                add(
                    "cached_input_tokens",
                    Detail::Count(u.billable_cached_tokens()),
                );
                add("output_tokens", Detail::Count(u.completion_tokens));
                if u.cache_write_tokens > 0 {
                    add(
                        "cache_write_input_tokens",
                        Detail::Count(u.billable_cache_write_tokens()),
                    );
                }
            }
            (None, None) => add("tokens", "no usage reported".into()),
        }
        match (acc.cost, &acc.unpriced_model) {
            (Some(c), _) => add("cost_dollars", Detail::Dollars(c)),
            (None, Some(_)) => add("cost", "unpriced".into()),
            (None, None) => {}
        }
    }
}

fn report(
    failures: Vec<(Check, Failure)>,
    duration: Duration,
    guard_engaged: bool,
    details: Vec<(String, Detail)>,
) -> ProbeReport {
    let status = match failures.first() {
        Some((_, f)) => f
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| f.reason.as_str().to_string()),
        None if guard_engaged => "ok (spend limit reached)".to_string(),
        None => "ok".to_string(),
    };
    let reason = (!failures.is_empty()).then(|| {
        failures
            .iter()
            .map(|(c, f)| format!("{}: {}", c.as_str(), f.message))
            .collect::<Vec<_>>()
            .join("; ")
    });
    ProbeReport {
        success: failures.is_empty(),
        duration,
        status,
        reason,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_base_path_and_query() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            endpoint_url(&u("https://api.example.com/v1"), "models").as_str(),
            "https://api.example.com/v1/models"
        );
        assert_eq!(
            endpoint_url(&u("https://api.example.com/v1/"), "chat/completions").as_str(),
            "https://api.example.com/v1/chat/completions"
        );
        assert_eq!(
            endpoint_url(
                &u("http://127.0.0.1:8000/openai/v1?api-version=2"),
                "models"
            )
            .as_str(),
            "http://127.0.0.1:8000/openai/v1/models?api-version=2"
        );
    }

    #[test]
    fn chat_body_has_the_openai_shape() {
        let v: serde_json::Value = serde_json::from_slice(&chat_body(
            "m",
            "ping",
            (TokenLimitField::MaxTokens, 5),
            true,
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "ping"}],
                "max_tokens": 5,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
        let v: serde_json::Value = serde_json::from_slice(&chat_body(
            "m",
            "ping",
            (TokenLimitField::MaxTokens, 5),
            false,
        ))
        .unwrap();
        assert!(v.get("stream").is_none());
    }

    #[test]
    fn the_canary_sends_temperature_and_seed_only_when_set() {
        let limit = (TokenLimitField::MaxTokens, 5);
        let v: serde_json::Value =
            serde_json::from_slice(&chat_body_with("m", "p", limit, true, Some(0.0), Some(42)))
                .unwrap();
        assert_eq!(
            (v["temperature"].as_f64(), v["seed"].as_i64()),
            (Some(0.0), Some(42))
        );
        let v: serde_json::Value =
            serde_json::from_slice(&chat_body_with("m", "p", limit, false, None, None)).unwrap();
        assert!(
            v.get("temperature").is_none() && v.get("seed").is_none(),
            "{v}"
        );
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens_instead() {
        let limit = (TokenLimitField::MaxCompletionTokens, 7);
        let v: serde_json::Value =
            serde_json::from_slice(&chat_body("o", "p", limit, false)).unwrap();
        assert_eq!(v["max_completion_tokens"], 7);
        assert!(v.get("max_tokens").is_none(), "{v}");
    }
}
