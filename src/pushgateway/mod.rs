//! The Pushgateway sink: keeps the latest results of every source (a probe, an `exec` job)
//! and pushes them, rendered as one text-format body, to one group of a Pushgateway.
//!
//! The pure parts are [`render`](mod@render) (the body) and [`group_path`] (the URL path of a grouping
//! key). [`Feed`] is where the agent leaves results; each [`PushgatewaySink`] watches it and
//! pushes the whole current state whenever it changes, so a push never sends half a picture
//! even with `PUT`. On drain the sink pushes once more if anything is unsent, then deletes the
//! group if `delete_on_exit` is set; it stops as soon as `abort` is cancelled.
//!
//! Failed requests are retried by the remote-write [`RetryPolicy`]: transport errors, 5xx,
//! 408 and 429 (honouring `Retry-After`) with capped, jittered backoff; any other status is a
//! refusal that retrying cannot change (a 400 for an inconsistent push, say).

pub mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Authorizer;
use crate::config::{PushMethod, PushgatewaySettings};
use crate::http_client::pooled;
use crate::remote_write::retry::{reauthorize, Decision, Outcome, RetryPolicy, UNAUTHORIZED_GRACE};
use crate::series::{Labels, Registry};
use crate::telemetry::{self, Telemetry};

pub use render::{render, RenderOptions, Rendered};

/// Why a sink could not be built or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The HTTP client or the retry policy could not be built.
    #[error("pushgateway {gateway}: {message}")]
    Client {
        /// Gateway name.
        gateway: String,
        /// What went wrong.
        message: String,
    },
    /// The request did not get an answer (connect, timeout, reset).
    #[error("pushgateway {gateway}: {method} {path}: {message}")]
    Transport {
        /// Gateway name.
        gateway: String,
        /// HTTP method.
        method: &'static str,
        /// The group path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// No request was sent: the credentials could not be obtained.
    #[error("pushgateway {gateway}: credentials: {message}")]
    Credentials {
        /// Gateway name.
        gateway: String,
        /// What went wrong; never a secret.
        message: String,
    },
    /// The gateway answered with a non-2xx status.
    #[error("pushgateway {gateway}: {method} {path}: HTTP {status}: {body}")]
    Status {
        /// Gateway name.
        gateway: String,
        /// HTTP method.
        method: &'static str,
        /// The group path.
        path: String,
        /// The status code.
        status: u16,
        /// The `Retry-After` header, when the gateway (or a proxy in front of it) sent one.
        retry_after: Option<String>,
        /// The start of the response body (the gateway explains refusals there).
        body: String,
    },
}

/// Characters a path segment may hold as is; anything else is sent base64-encoded, which
/// the gateway decodes exactly (percent-encoding would be at the mercy of path cleaning).
fn is_plain_segment(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// One `name/value` pair of a grouping-key path. A value with `/`, an empty value or any
/// other character outside `[A-Za-z0-9._~-]` uses `name@base64/<base64url>`; an empty value
/// is the single `=` the Pushgateway requires for it.
pub fn path_pair(name: &str, value: &str) -> String {
    if is_plain_segment(value) {
        format!("{name}/{value}")
    } else if value.is_empty() {
        format!("{name}@base64/=")
    } else {
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(value.as_bytes());
        format!("{name}@base64/{encoded}")
    }
}

/// The group's path below the gateway's base URL: `/metrics/job/<job>{/<label>/<value>}`.
pub fn group_path(job: &str, grouping: &[(String, String)]) -> String {
    let mut path = format!("/metrics/{}", path_pair("job", job));
    for (name, value) in grouping {
        path.push('/');
        path.push_str(&path_pair(name, value));
    }
    path
}

/// The group's full URL: the base URL (and any route prefix in it) plus [`group_path`].
pub fn group_url(base: &reqwest::Url, job: &str, grouping: &[(String, String)]) -> reqwest::Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{}", group_path(job, grouping)));
    url
}

/// The latest registry of every source, shared by the agent (writer) and the sinks (readers).
pub struct Feed {
    sources: Mutex<BTreeMap<String, Registry>>,
    generation: watch::Sender<u64>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            sources: Mutex::new(BTreeMap::new()),
            generation: watch::Sender::new(0),
        }
    }
}

impl Feed {
    /// Creates an empty feed.
    pub fn new() -> Arc<Feed> {
        Arc::new(Feed::default())
    }

    /// Replaces `source`'s results and wakes every sink.
    pub fn set(&self, source: &str, registry: &Registry) {
        self.lock().insert(source.to_string(), registry.clone());
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forgets `source` (a discovered target that went) and wakes every sink, so the group
    /// no longer carries its results.
    pub fn remove(&self, source: &str) {
        if self.lock().remove(source).is_some() {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The current generation (bumped on every change).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Renders the current state; returns it with the generation it reflects.
    pub fn render(&self, opts: &RenderOptions) -> (u64, Rendered) {
        let sources = self.lock();
        // Read under the lock so the generation cannot move past what was rendered.
        let generation = self.generation();
        let rendered = render(sources.values().flat_map(|r| r.families()), opts);
        (generation, rendered)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registry>> {
        // Each update is one map insert, so a poisoned lock still holds a consistent map.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a sink achieved, readable after it stopped.
#[derive(Debug, Default)]
pub struct SinkStatus {
    pushed_generation: AtomicU64,
    unsent_series: AtomicUsize,
    delete_failed: AtomicBool,
}

impl SinkStatus {
    /// Tells whether the latest state of `feed` reached the gateway (and, with
    /// `delete_on_exit`, the group was then deleted).
    pub fn delivered(&self, feed: &Feed) -> bool {
        self.pushed_generation.load(Ordering::SeqCst) == feed.generation()
            && !self.delete_failed.load(Ordering::SeqCst)
    }

    /// Series of the latest state that did not reach the gateway.
    pub fn unsent_series(&self, feed: &Feed) -> usize {
        if self.pushed_generation.load(Ordering::SeqCst) == feed.generation() {
            0
        } else {
            self.unsent_series.load(Ordering::SeqCst).max(1)
        }
    }
}

/// Pushes one feed to one Pushgateway group.
pub struct PushgatewaySink {
    settings: PushgatewaySettings,
    client: reqwest::Client,
    /// Sets the credentials of every request (rotated files included).
    authorizer: Authorizer,
    policy: RetryPolicy,
    url: reqwest::Url,
    path: String,
    method: PushMethod,
    render_opts: RenderOptions,
    feed: Arc<Feed>,
    status: Arc<SinkStatus>,
    telemetry: Arc<Telemetry>,
}

impl PushgatewaySink {
    /// Builds the sink and its HTTP client; sends nothing yet.
    pub fn new(
        settings: PushgatewaySettings,
        external_labels: &Labels,
        feed: Arc<Feed>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, PushError> {
        let client = build_client(&settings)?;
        let authorizer =
            Authorizer::new(settings.auth.as_ref()).map_err(|e| PushError::Client {
                gateway: settings.name.clone(),
                message: e.to_string(),
            })?;
        let policy = RetryPolicy::new(settings.min_backoff, settings.max_backoff).map_err(|e| {
            PushError::Client {
                gateway: settings.name.clone(),
                message: e.to_string(),
            }
        })?;
        // A 401 during a credential rotation is waited out for a while, as for remote write.
        let policy = if authorizer.can_rotate() {
            policy.with_unauthorized_grace(UNAUTHORIZED_GRACE)
        } else {
            policy
        };
        let url = group_url(&settings.url, &settings.job, &settings.grouping);
        let path = group_path(&settings.job, &settings.grouping);
        let mut strip_labels = vec!["job".to_string()];
        strip_labels.extend(settings.grouping.iter().map(|(k, _)| k.clone()));
        let render_opts = RenderOptions {
            extra_labels: external_labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect(),
            strip_labels,
        };
        Ok(PushgatewaySink {
            method: settings.method,
            settings,
            client,
            authorizer,
            policy,
            url,
            path,
            render_opts,
            feed,
            status: Arc::new(SinkStatus::default()),
            telemetry,
        })
    }

    /// The sink's outcome, to read after [`PushgatewaySink::run`] returned.
    pub fn status(&self) -> Arc<SinkStatus> {
        self.status.clone()
    }

    /// Uses `method` for this sink's pushes instead of the configured one.
    pub fn set_method(&mut self, method: PushMethod) {
        self.method = method;
    }

    /// Pushes on every change of the feed until `drain` is cancelled; then pushes what is
    /// still unsent and deletes the group if configured. Stops at once when `abort` is
    /// cancelled.
    pub async fn run(self, drain: CancellationToken, abort: CancellationToken) {
        // Every outcome exists from the start, so the first failure is an increase.
        for outcome in ["success", "retryable", "transport", "rejected", "deleted"] {
            self.telemetry.add(
                telemetry::PG_REQUESTS,
                &[("gateway", &self.settings.name), ("outcome", outcome)],
                0.0,
            );
        }
        let mut changes = self.feed.generation.subscribe();
        // Whatever was published before the sink started counts as a change.
        changes.mark_changed();
        loop {
            tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                _ = drain.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
            changes.mark_unchanged();
            if !self.push_latest(&abort).await {
                return;
            }
        }
        if self.status.pushed_generation.load(Ordering::SeqCst) != self.feed.generation()
            && !self.push_latest(&abort).await
        {
            return;
        }
        if self.settings.delete_on_exit {
            self.delete(&abort).await;
        }
    }

    /// Pushes the current state, retrying as the remote-write sender does. Returns false if
    /// `abort` stopped it.
    async fn push_latest(&self, abort: &CancellationToken) -> bool {
        match self.deliver(Op::Push, abort).await {
            None => false,
            Some(Ok(generation)) => {
                self.status
                    .pushed_generation
                    .store(generation, Ordering::SeqCst);
                self.status.unsent_series.store(0, Ordering::SeqCst);
                self.record("success");
                self.telemetry.set(
                    telemetry::PG_LAST_SUCCESS,
                    &[("gateway", &self.settings.name)],
                    crate::clock::now_ms() as f64 / 1000.0,
                );
                tracing::debug!(gateway = %self.settings.name, path = %self.path, "pushed");
                true
            }
            Some(Err(e)) => {
                self.record("rejected");
                tracing::error!(error = %e, "the Pushgateway refused the push; not retrying");
                true
            }
        }
    }

    /// Deletes the group, retrying like a push.
    async fn delete(&self, abort: &CancellationToken) {
        match self.deliver(Op::Delete, abort).await {
            Some(Ok(_)) => {
                self.record("deleted");
                tracing::debug!(gateway = %self.settings.name, path = %self.path, "group deleted");
            }
            Some(Err(e)) => {
                self.status.delete_failed.store(true, Ordering::SeqCst);
                self.record("rejected");
                tracing::error!(error = %e, "the Pushgateway refused to delete the group");
            }
            None => self.status.delete_failed.store(true, Ordering::SeqCst),
        }
    }

    /// Sends `op` until it is accepted (`Ok` with the generation pushed), refused for good
    /// (`Err`), or `abort` is cancelled (`None`). Each push attempt renders the feed afresh,
    /// so a retry after an outage carries the newest results, not the ones that failed.
    async fn deliver(&self, op: Op, abort: &CancellationToken) -> Option<Result<u64, PushError>> {
        let mut attempt = 0u32;
        loop {
            let (generation, method, name, body) = match op {
                Op::Push => {
                    let (generation, rendered) = self.feed.render(&self.render_opts);
                    if rendered.duplicates > 0 && attempt == 0 {
                        tracing::warn!(
                            gateway = %self.settings.name,
                            duplicates = rendered.duplicates,
                            "series that differ only in job or grouping labels were left out of the push"
                        );
                    }
                    self.status
                        .unsent_series
                        .store(rendered.series, Ordering::SeqCst);
                    let (method, name) = match self.method {
                        PushMethod::Put => (reqwest::Method::PUT, "PUT"),
                        PushMethod::Post => (reqwest::Method::POST, "POST"),
                    };
                    (generation, method, name, Some(Bytes::from(rendered.text)))
                }
                Op::Delete => (0, reqwest::Method::DELETE, "DELETE", None),
            };
            let result = tokio::select! {
                _ = abort.cancelled() => return None,
                r = self.send_authorized(&method, name, body.as_ref()) => r,
            };
            let (outcome, retry_after) = match &result {
                Ok(()) => return Some(Ok(generation)),
                Err(PushError::Status {
                    status,
                    retry_after,
                    ..
                }) => (Outcome::Status(*status), retry_after.clone()),
                Err(PushError::Credentials { .. }) => (Outcome::Credentials, None),
                Err(_) => (Outcome::Transport, None),
            };
            let decision = self.policy.decide(
                outcome,
                retry_after.as_deref(),
                attempt,
                SystemTime::now(),
                jitter(),
            );
            match decision {
                Decision::Done => return Some(Ok(generation)),
                Decision::Drop { .. } => return Some(result.map(|()| generation)),
                Decision::Retry { after } => {
                    self.record(outcome.retried_label());
                    // One warning per push, as remote write logs one per batch: a long outage
                    // would otherwise log every backoff step.
                    if let Err(e) = &result {
                        let gateway = self.settings.name.as_str();
                        if attempt == 0 {
                            tracing::warn!(gateway, error = %e, retry_in = ?after, "Pushgateway request failed; retrying (further attempts are logged at debug)");
                        } else {
                            tracing::debug!(gateway, error = %e, retry_in = ?after, attempt = attempt + 1, "Pushgateway request failed again; retrying");
                        }
                    }
                    tokio::select! {
                        _ = abort.cancelled() => return None,
                        _ = tokio::time::sleep(after) => {}
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Sends one request with fresh credentials; a `401` is sent once more when the
    /// credentials changed on refusal.
    async fn send_authorized(
        &self,
        method: &reqwest::Method,
        name: &'static str,
        body: Option<&Bytes>,
    ) -> Result<(), PushError> {
        let result = self.send(self.request(method, body).await?, name).await;
        if let Err(PushError::Status { status: 401, .. }) = &result {
            let changed = self.authorizer.refused();
            if reauthorize(Outcome::Status(401), changed, false) {
                return self.send(self.request(method, body).await?, name).await;
            }
        }
        result
    }

    /// The request of one attempt, its credentials set from their current values.
    async fn request(
        &self,
        method: &reqwest::Method,
        body: Option<&Bytes>,
    ) -> Result<reqwest::RequestBuilder, PushError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if body.is_some() {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static(render::CONTENT_TYPE),
            );
        }
        let bytes = body.map(|b| b.as_ref()).unwrap_or_default();
        self.authorizer
            .apply(method, &self.url, &mut headers, bytes)
            .await
            .map_err(|e| PushError::Credentials {
                gateway: self.settings.name.clone(),
                message: e.to_string(),
            })?;
        let mut rb = self
            .client
            .request(method.clone(), self.url.clone())
            .timeout(self.settings.timeout)
            .headers(headers);
        if let Some(b) = body {
            rb = rb.body(b.clone());
        }
        Ok(rb)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        method: &'static str,
    ) -> Result<(), PushError> {
        let response = request.send().await.map_err(|e| PushError::Transport {
            gateway: self.settings.name.clone(),
            method,
            path: self.path.clone(),
            message: pooled::describe_error(&e),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.unwrap_or_default();
        Err(PushError::Status {
            gateway: self.settings.name.clone(),
            method,
            path: self.path.clone(),
            status: status.as_u16(),
            retry_after,
            body: truncate(body.trim(), 512),
        })
    }

    fn record(&self, outcome: &str) {
        self.telemetry.add(
            telemetry::PG_REQUESTS,
            &[("gateway", &self.settings.name), ("outcome", outcome)],
            1.0,
        );
    }
}

/// What a request does to the group.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `PUT` or `POST` the rendered feed.
    Push,
    /// `DELETE` the group.
    Delete,
}

/// A uniform draw in `[0, 1)` for backoff jitter. Each `RandomState` gets fresh keys, so
/// hashing a constant with it is a cheap source of spread (not of cryptographic quality).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn build_client(settings: &PushgatewaySettings) -> Result<reqwest::Client, PushError> {
    let err = |message: String| PushError::Client {
        gateway: settings.name.clone(),
        message,
    };
    let builder = pooled::builder(
        &settings.url,
        &settings.tls,
        &[b"http/1.1"],
        &settings.proxy,
    )
    .map_err(|e| err(e.to_string()))?;
    pooled::build(builder.user_agent(crate::http_client::USER_AGENT)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_values_stay_readable_in_the_path() {
        assert_eq!(
            group_path("nightly-backup", &key(&[("instance", "host-1.example")])),
            "/metrics/job/nightly-backup/instance/host-1.example"
        );
    }

    #[test]
    fn slashes_empty_and_special_values_use_base64url() {
        assert_eq!(
            group_path("a/b", &key(&[("path", "/var/tmp"), ("empty", "")])),
            "/metrics/job@base64/YS9i/path@base64/L3Zhci90bXA=/empty@base64/="
        );
        // The URL-safe alphabet: `?`/`>` bytes would give `/` and `+` in standard base64.
        assert_eq!(path_pair("q", "??>"), "q@base64/Pz8-");
        assert_eq!(path_pair("u", "ünï code"), "u@base64/w7xuw68gY29kZQ==");
    }

    #[test]
    fn group_url_keeps_a_route_prefix() {
        let base = reqwest::Url::parse("http://gw:9091/pgw/").unwrap();
        assert_eq!(
            group_url(&base, "j", &key(&[("i", "x")])).as_str(),
            "http://gw:9091/pgw/metrics/job/j/i/x"
        );
        let base = reqwest::Url::parse("http://gw:9091").unwrap();
        assert_eq!(
            group_url(&base, "j", &[]).as_str(),
            "http://gw:9091/metrics/job/j"
        );
    }

    #[test]
    fn feed_renders_every_source_and_counts_generations() {
        let feed = Feed::new();
        let mut a = Registry::new();
        a.gauge_set("x", &[("probe", "a")], 1.0).unwrap();
        let mut b = Registry::new();
        b.gauge_set("x", &[("probe", "b")], 2.0).unwrap();
        feed.set("a", &a);
        feed.set("b", &b);
        let (generation, r) = feed.render(&RenderOptions::default());
        assert_eq!(generation, 2);
        assert_eq!(
            r.text,
            "# TYPE x untyped\nx{probe=\"a\"} 1\nx{probe=\"b\"} 2\n"
        );
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn long_error_bodies_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("ab", 5), "ab");
        assert_eq!(truncate("aé", 2), "a…");
    }
}
