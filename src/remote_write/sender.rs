//! The HTTP sender for one remote-write endpoint: the thin I/O shell around [`super::encode`]
//! and [`super::retry`].
//!
//! One loop per endpoint: wait until a batch is worth sending (full, old enough, or the agent
//! is draining), peek it from the queue, encode it once, and POST the same bytes until the
//! receiver accepts or permanently refuses them; only then is the batch released from the
//! queue. Samples are therefore delivered at least once: a request cut short by `abort` (or a
//! crash) is sent again by whoever reads the queue next.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
    USER_AGENT,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::encode::{EncodeStats, Encoder};
use super::retry::{Decision, DropReason, Outcome, RetryPolicy};
use crate::config::{Auth, RemoteWriteSettings, RESERVED_HEADERS};
use crate::queue::{Batch, SharedQueue};
use crate::secret::Secret;
use crate::series::Labels;
use crate::telemetry::{
    Telemetry, RW_BYTES_SENT, RW_LAST_SUCCESS, RW_PENDING, RW_REQUESTS, RW_SAMPLES_DROPPED,
    RW_SAMPLES_FAILED, RW_SAMPLES_RETRIED, RW_SAMPLES_SENT,
};

/// Protocol version header value for remote write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// `User-Agent` of every write request.
pub const USER_AGENT_VALUE: &str = concat!("pushprobe/", env!("CARGO_PKG_VERSION"));

/// Most bytes of a response body read, so a misbehaving receiver cannot make us buffer an
/// arbitrarily large error page.
const MAX_BODY_READ: usize = 16 * 1024;

/// Most characters of a receiver's error message put in a log line.
const MAX_MESSAGE_CHARS: usize = 512;

/// How often a burst of rejections is summarised in the log.
const REJECTION_SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Why a sender could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// The HTTP client could not be built.
    #[error("remote_write {endpoint}: {message}")]
    Client {
        /// Endpoint name.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// Waits for a delay; the production timer is tokio's, tests record the delays instead.
trait Timer: Send + Sync {
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real timer.
struct TokioTimer;

impl Timer for TokioTimer {
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Moves batches from one queue to one receiver.
pub struct Sender {
    endpoint: String,
    url: reqwest::Url,
    client: reqwest::Client,
    /// Every request's headers, credentials included (marked sensitive).
    headers: HeaderMap,
    /// Credential texts scrubbed from receiver messages before logging: some proxies echo
    /// the request headers in their error pages.
    secrets: Vec<Secret>,
    external_labels: Labels,
    max_samples_per_send: usize,
    batch_send_deadline: Duration,
    policy: RetryPolicy,
    queue: Arc<SharedQueue>,
    telemetry: Arc<Telemetry>,
    timer: Arc<dyn Timer>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the name: the URL may carry user info and the headers carry credentials.
        f.debug_struct("Sender")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Builds a sender: the HTTP client with its TLS settings and the request headers.
    pub fn new(
        settings: RemoteWriteSettings,
        external_labels: Labels,
        queue: Arc<SharedQueue>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, SenderError> {
        let endpoint = settings.name.clone();
        let fail = |message: String| SenderError::Client {
            endpoint: endpoint.clone(),
            message,
        };
        let policy = RetryPolicy::new(settings.min_backoff, settings.max_backoff)
            .map_err(|e| fail(e.to_string()))?;
        if settings.max_samples_per_send == 0 {
            return Err(fail("max_samples_per_send must be > 0".into()));
        }
        let (headers, secrets) = request_headers(&settings).map_err(fail)?;
        let tls =
            crate::tls::client_config_for_url(&settings.url, &settings.tls, &[b"h2", b"http/1.1"])
                .map_err(|e| fail(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.timeout)
            // A 301/302 would turn the POST into a body-less GET; a remote-write URL that
            // redirects is a configuration error, reported as a rejection.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail(format!("building the HTTP client: {}", error_chain(&e))))?;

        let sender = Sender {
            endpoint,
            url: settings.url,
            client,
            headers,
            secrets,
            external_labels,
            max_samples_per_send: settings.max_samples_per_send,
            batch_send_deadline: settings.batch_send_deadline,
            policy,
            queue,
            telemetry,
            timer: Arc::new(TokioTimer),
        };
        sender.touch_metrics();
        Ok(sender)
    }

    /// Runs until `drain` is cancelled and the queue is empty, or `abort` is cancelled.
    ///
    /// On `abort` the batch in flight stays in the queue, unacknowledged.
    pub async fn run(self, drain: CancellationToken, abort: CancellationToken) {
        let mut state = RunState::new();
        tokio::select! {
            biased;
            _ = abort.cancelled() => {
                tracing::debug!(endpoint = %self.endpoint, "remote write aborted");
            }
            _ = self.pump(&drain, &mut state) => {
                tracing::debug!(endpoint = %self.endpoint, "remote write drained");
            }
        }
        if let Some(summary) = state.rejections.end() {
            self.log_rejection_summary(&summary, "until shutdown");
        }
        self.set_pending(self.queue.pending());
    }

    /// Sends batches until draining finds the queue empty. Dropping this future at any await
    /// leaves the queue consistent: a batch is acknowledged only after its answer arrived.
    async fn pump(&self, drain: &CancellationToken, st: &mut RunState) {
        let mut queue_failures = 0u32;
        loop {
            if !self.wait_for_batch(drain, st).await {
                return;
            }
            let peek_at = Instant::now();
            let peeked = self.queue.with(|q| {
                let pending = q.pending();
                q.peek(self.max_samples_per_send).map(|b| (b, pending))
            });
            let failure = match peeked {
                Ok((Some(batch), pending)) => Ok((batch, pending)),
                Ok((None, 0)) => continue,
                // Samples pending yet none handed out: retrying at once would spin.
                Ok((None, n)) => Err(format!("queue reports {n} pending samples but yields none")),
                Err(e) => Err(e.to_string()),
            };
            let (batch, pending_at_peek) = match failure {
                Ok(found) => found,
                Err(error) => {
                    tracing::error!(endpoint = %self.endpoint, %error, "reading the queue failed");
                    let delay = self
                        .policy
                        .backoff()
                        .delay(queue_failures, st.jitter.next());
                    queue_failures = queue_failures.saturating_add(1);
                    self.timer.sleep(delay).await;
                    continue;
                }
            };
            queue_failures = 0;
            self.deliver(&batch, st).await;
            // Whatever is pending now and was not at peek time arrived after `peek_at`; older
            // leftovers (the batch was full) keep the earlier start of their wait.
            if batch.samples.len() >= pending_at_peek {
                st.oldest = Some(peek_at);
            }
        }
    }

    /// Waits until a batch should go out: true to send, false when draining found nothing left.
    async fn wait_for_batch(&self, drain: &CancellationToken, st: &mut RunState) -> bool {
        loop {
            let pending = self.queue.pending();
            self.set_pending(pending);
            if pending == 0 {
                st.oldest = None;
                if drain.is_cancelled() {
                    return false;
                }
                tokio::select! {
                    _ = self.queue.appended.notified() => {}
                    _ = drain.cancelled() => {}
                }
                continue;
            }
            if pending >= self.max_samples_per_send || drain.is_cancelled() {
                return true;
            }
            let since = *st.oldest.get_or_insert_with(Instant::now);
            let remaining = self.batch_send_deadline.saturating_sub(since.elapsed());
            if remaining.is_zero() {
                return true;
            }
            tokio::select! {
                _ = self.queue.appended.notified() => {}
                _ = self.timer.sleep(remaining) => return true,
                _ = drain.cancelled() => {}
            }
        }
    }

    /// Encodes one batch and sends it until it is accepted or refused, then releases it.
    async fn deliver(&self, batch: &Batch, st: &mut RunState) {
        let stats = match st
            .encoder
            .encode(&batch.samples, &self.external_labels, &mut st.buf)
        {
            Ok(stats) => stats,
            Err(e) => {
                tracing::error!(
                    endpoint = %self.endpoint,
                    samples = batch.samples.len(),
                    error = %e,
                    "cannot encode batch; dropping it"
                );
                self.count_dropped(batch.samples.len(), "encode_error", true);
                self.ack(batch);
                return;
            }
        };
        if stats.skipped_no_name > 0 {
            tracing::warn!(
                endpoint = %self.endpoint,
                samples = stats.skipped_no_name,
                "dropping samples whose series has no metric name"
            );
            self.count_dropped(stats.skipped_no_name, "invalid", true);
        }
        if stats.samples == 0 {
            self.ack(batch);
            return;
        }
        // The same bytes go out on every attempt: timestamps never change on retry.
        let body = Bytes::copy_from_slice(&st.buf);
        let mut attempt = 0u32;
        loop {
            let answer = self.attempt(body.clone()).await;
            let decision = self.policy.decide(
                answer.outcome,
                answer.retry_after.as_deref(),
                attempt,
                SystemTime::now(),
                st.jitter.next(),
            );
            match decision {
                Decision::Done => {
                    self.ack(batch);
                    self.record_success(&stats, body.len());
                    if attempt > 0 {
                        tracing::info!(
                            endpoint = %self.endpoint,
                            attempts = attempt + 1,
                            "batch delivered after retries"
                        );
                    }
                    if let Some(summary) = st.rejections.end() {
                        self.log_rejection_summary(&summary, "before this success");
                    }
                    return;
                }
                Decision::Drop { reason } => {
                    self.ack(batch);
                    self.record_rejection(&stats, reason, &answer, st);
                    return;
                }
                Decision::Retry { after } => {
                    self.record_retry(&stats, &answer, attempt, after);
                    self.timer.sleep(after).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Sends one request and reads (a bounded part of) the answer.
    async fn attempt(&self, body: Bytes) -> Answer {
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    outcome: Outcome::Transport,
                    retry_after: None,
                    message: error_chain(&e),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Reading the body lets the connection be reused; a failure while reading does not
        // change what the status said.
        let mut raw = Vec::new();
        while raw.len() < MAX_BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Answer {
            outcome: Outcome::Status(status),
            retry_after,
            message: receiver_message(&raw, &self.secrets),
        }
    }

    fn ack(&self, batch: &Batch) {
        if let Err(e) = self.queue.with(|q| q.ack(batch.last_seq)) {
            // The batch will be sent again; duplicates are harmless to receivers.
            tracing::error!(endpoint = %self.endpoint, error = %e, "releasing a sent batch failed");
        }
    }

    fn labels(&self) -> [(&str, &str); 1] {
        [("endpoint", self.endpoint.as_str())]
    }

    fn with_label<'a>(&'a self, name: &'a str, value: &'a str) -> [(&'a str, &'a str); 2] {
        [("endpoint", self.endpoint.as_str()), (name, value)]
    }

    /// Creates every series at zero so dashboards see them before the first event.
    fn touch_metrics(&self) {
        let t = &self.telemetry;
        for name in [
            RW_SAMPLES_SENT,
            RW_SAMPLES_FAILED,
            RW_SAMPLES_RETRIED,
            RW_BYTES_SENT,
        ] {
            t.add(name, &self.labels(), 0.0);
        }
        for outcome in ["success", "retryable", "rejected", "transport"] {
            t.add(RW_REQUESTS, &self.with_label("outcome", outcome), 0.0);
        }
        t.add(
            RW_SAMPLES_DROPPED,
            &self.with_label("reason", "rejected"),
            0.0,
        );
        self.set_pending(self.queue.pending());
    }

    fn set_pending(&self, pending: usize) {
        self.telemetry
            .set(RW_PENDING, &self.labels(), pending as f64);
    }

    fn count_dropped(&self, samples: usize, reason: &str, failed: bool) {
        let n = samples as f64;
        if failed {
            self.telemetry.add(RW_SAMPLES_FAILED, &self.labels(), n);
        }
        self.telemetry
            .add(RW_SAMPLES_DROPPED, &self.with_label("reason", reason), n);
    }

    fn record_success(&self, stats: &EncodeStats, bytes: usize) {
        let t = &self.telemetry;
        t.add(RW_SAMPLES_SENT, &self.labels(), stats.samples as f64);
        t.add(RW_BYTES_SENT, &self.labels(), bytes as f64);
        t.add(RW_REQUESTS, &self.with_label("outcome", "success"), 1.0);
        t.set(
            RW_LAST_SUCCESS,
            &self.labels(),
            crate::clock::now_ms() as f64 / 1000.0,
        );
    }

    fn record_rejection(
        &self,
        stats: &EncodeStats,
        reason: DropReason,
        answer: &Answer,
        st: &mut RunState,
    ) {
        self.telemetry
            .add(RW_REQUESTS, &self.with_label("outcome", "rejected"), 1.0);
        self.count_dropped(stats.samples, reason.as_label(), true);
        let DropReason::Rejected { status } = reason;
        match st
            .rejections
            .rejected(Instant::now(), stats.samples, status, &answer.message)
        {
            RejectionReport::First => {
                let hint = if (300..400).contains(&status) {
                    "; the URL redirects, point it at the final write endpoint"
                } else {
                    ""
                };
                tracing::warn!(
                    endpoint = %self.endpoint,
                    status,
                    samples = stats.samples,
                    receiver_message = %answer.message,
                    "receiver rejected a batch, dropping it{hint} (repeats are summarised)"
                );
            }
            RejectionReport::Summary(summary) => {
                self.log_rejection_summary(&summary, "in the last minute")
            }
            RejectionReport::Quiet => {}
        }
    }

    fn log_rejection_summary(&self, s: &RejectionSummary, period: &str) {
        tracing::warn!(
            endpoint = %self.endpoint,
            requests = s.requests,
            samples = s.samples,
            last_status = s.last_status,
            last_receiver_message = %s.last_message,
            "receiver rejected more batches {period}, dropped"
        );
    }

    fn record_retry(&self, stats: &EncodeStats, answer: &Answer, attempt: u32, after: Duration) {
        let outcome = match answer.outcome {
            Outcome::Transport => "transport",
            Outcome::Status(_) => "retryable",
        };
        self.telemetry
            .add(RW_REQUESTS, &self.with_label("outcome", outcome), 1.0);
        self.telemetry
            .add(RW_SAMPLES_RETRIED, &self.labels(), stats.samples as f64);
        let status = match answer.outcome {
            Outcome::Status(s) => Some(s),
            Outcome::Transport => None,
        };
        // One warning per batch: a long outage would otherwise log every backoff step.
        if attempt == 0 {
            tracing::warn!(
                endpoint = %self.endpoint,
                status,
                samples = stats.samples,
                retry_in = ?after,
                error = %answer.message,
                "write failed, retrying"
            );
        } else {
            tracing::debug!(
                endpoint = %self.endpoint,
                status,
                attempt = attempt + 1,
                retry_in = ?after,
                error = %answer.message,
                "write failed again, retrying"
            );
        }
    }

    #[cfg(test)]
    fn with_timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }
}

/// What one attempt got back.
struct Answer {
    outcome: Outcome,
    retry_after: Option<String>,
    /// The receiver's message or the transport error, made safe to log.
    message: String,
}

/// State of one `run`, kept across batches.
struct RunState {
    encoder: Encoder,
    buf: Vec<u8>,
    jitter: Jitter,
    rejections: RejectionLog,
    /// When the oldest pending sample started waiting (as far as the sender can tell).
    oldest: Option<Instant>,
}

impl RunState {
    fn new() -> Self {
        RunState {
            encoder: Encoder::new(),
            buf: Vec::new(),
            jitter: Jitter::new(),
            rejections: RejectionLog::default(),
            oldest: None,
        }
    }
}

/// Builds the headers of every request (protocol headers, the user's, then credentials) and
/// lists the credential texts they contain.
pub(crate) fn request_headers(
    settings: &RemoteWriteSettings,
) -> Result<(HeaderMap, Vec<Secret>), String> {
    let mut h = HeaderMap::new();
    let mut secrets = Vec::new();
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    h.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static(REMOTE_WRITE_VERSION),
    );
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value_text) in &settings.headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "header {name} is set by pushprobe and cannot be overridden"
            ));
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        // The value is not quoted in the error: it may be a credential.
        let mut value = HeaderValue::from_str(value_text)
            .map_err(|_| format!("header {name} has characters not allowed in a header"))?;
        if looks_sensitive(name.as_str()) {
            value.set_sensitive(true);
            secrets.push(Secret::new(value_text));
        }
        h.insert(name, value);
    }
    if let Some(auth) = &settings.auth {
        let text = match auth {
            Auth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                secrets.push(password.clone());
                secrets.push(Secret::new(encoded.clone()));
                format!("Basic {encoded}")
            }
            Auth::Bearer(token) => {
                secrets.push(token.clone());
                format!("Bearer {}", token.expose())
            }
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| "credentials have characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        // Configured credentials win over a hand-written Authorization header.
        h.insert(AUTHORIZATION, value);
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
    Ok((h, secrets))
}

/// Replaces every credential text in `message`.
fn redact(mut message: String, secrets: &[Secret]) -> String {
    for s in secrets {
        if message.contains(s.expose()) {
            message = message.replace(s.expose(), "<redacted>");
        }
    }
    message
}

/// Tells whether a user header probably carries a credential (then it is kept out of debug
/// output and HTTP/2 header compression tables).
fn looks_sensitive(name: &str) -> bool {
    ["auth", "token", "key", "secret", "password", "cookie"]
        .iter()
        .any(|w| name.contains(w))
}

/// A receiver's response body as one short log-safe line, credentials removed.
fn receiver_message(raw: &[u8], secrets: &[Secret]) -> String {
    // Redacted before truncating, so a credential cut in half is still caught.
    let text = redact(String::from_utf8_lossy(raw).into_owned(), secrets);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() || raw.len() >= MAX_BODY_READ {
        out.push('…');
    }
    out
}

/// An error and its causes on one line, without the request URL (which may hold user info).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.url().is_some() => describe_reqwest(r),
            _ => err.to_string(),
        };
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        cur = err.source();
    }
    out
}

/// A reqwest error's own message without its URL.
fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() {
        "sending the request body failed".into()
    } else if e.is_request() {
        "sending the request failed".into()
    } else {
        "HTTP client error".into()
    }
}

/// Uniform draws in `[0, 1)` for backoff jitter (xorshift64*, seeded per sender from the
/// process' random hash keys): jitter needs spread, not cryptographic quality.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Jitter(h.finish() | 1)
    }

    fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counts of rejections not yet logged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RejectionSummary {
    requests: u64,
    samples: u64,
    last_status: u16,
    last_message: String,
}

/// What to log for a rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RejectionReport {
    /// First of a burst: log it in full.
    First,
    /// A minute has passed since the last report: log the counts.
    Summary(RejectionSummary),
    /// Counted, reported later.
    Quiet,
}

/// Rate-limits rejection logging: a misconfigured series can be refused every few seconds for
/// hours, and one line per minute says as much as thousands.
#[derive(Debug, Default)]
struct RejectionLog {
    burst: Option<Burst>,
}

#[derive(Debug)]
struct Burst {
    last_report: Instant,
    unreported: Option<RejectionSummary>,
}

impl RejectionLog {
    /// Records a rejection at `now` and says what to log.
    fn rejected(
        &mut self,
        now: Instant,
        samples: usize,
        status: u16,
        message: &str,
    ) -> RejectionReport {
        let Some(burst) = &mut self.burst else {
            self.burst = Some(Burst {
                last_report: now,
                unreported: None,
            });
            return RejectionReport::First;
        };
        let s = burst.unreported.get_or_insert_with(|| RejectionSummary {
            requests: 0,
            samples: 0,
            last_status: status,
            last_message: String::new(),
        });
        s.requests += 1;
        s.samples += samples as u64;
        s.last_status = status;
        s.last_message.clear();
        s.last_message.push_str(message);
        if now.saturating_duration_since(burst.last_report) >= REJECTION_SUMMARY_EVERY {
            burst.last_report = now;
            burst
                .unreported
                .take()
                .map_or(RejectionReport::Quiet, RejectionReport::Summary)
        } else {
            RejectionReport::Quiet
        }
    }

    /// Ends the burst (a batch was accepted, or the sender stops); returns what is unreported.
    fn end(&mut self) -> Option<RejectionSummary> {
        self.burst.take().and_then(|b| b.unreported)
    }
}

#[cfg(test)]
mod tests;
