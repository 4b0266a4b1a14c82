//! The I/O shell around [`super::target`]: one scrape loop per target that fetches the
//! exposition over HTTP (bounded in time and size), feeds it to the target's state and hands
//! the resulting samples to the agent's queues, saying which are the report series so that a
//! full queue keeps them longest.
//!
//! Requests carry what Prometheus sends: the job's `Accept` header (from `scrape_protocols`;
//! by default preferring OpenMetrics), `Accept-Encoding: gzip` (unless `enable_compression` is off),
//! `X-Prometheus-Scrape-Timeout-Seconds`, and `User-Agent: pushprobe/<version>`. A gzip answer
//! is decoded as it arrives ([`super::body`]), its decoded size held to `body_size_limit`.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::Method;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{BodyReader, ContentEncoding, ACCEPT_ENCODING_GZIP};
use super::metadata::MetadataStore;
use super::target::{
    JobSets, ScrapeError, ScrapeSummary, TargetOptions, TargetState, REPORT_SERIES,
};
use crate::auth::Authorizer;
use crate::clock::now_ms;
use crate::config::{ScrapeSettings, ScrapeTargetSettings};
use crate::http_client::{ClientError, HttpClient, KeepAlive, Request, Trace};
use crate::series::Sample;
use crate::telemetry::{self, Telemetry};

/// Most redirects a scrape follows, as Prometheus does by default.
pub const MAX_REDIRECTS: u32 = 10;

/// Body buffers kept for the next scrapes at most, over all jobs.
pub const BODY_POOL_KEEP: usize = 2;

/// Largest buffer kept for the next scrapes: a rare huge body does not pin its memory.
pub const BODY_POOL_MAX_CAPACITY: usize = 1 << 20;

/// Buffers for scrape bodies, reused across scrapes and targets.
///
/// A node exporter's body is over glibc's mmap threshold (fixed at 128 KiB in `main`), so a
/// fresh buffer per scrape is mapped, faulted in page by page and unmapped every time: about
/// 6 % of the agent's CPU when forwarding 50 such targets. Scrapes are spread over their
/// interval and hold a body for about a millisecond, so two buffers serve almost every
/// scrape; one that overlaps others gets a fresh buffer, dropped afterwards.
#[derive(Debug, Default)]
pub struct BodyPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl BodyPool {
    /// An empty pool.
    pub const fn new() -> BodyPool {
        BodyPool {
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer, reused if one is free.
    pub fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// Returns a buffer for later scrapes; kept only while fewer than [`BODY_POOL_KEEP`] are
    /// and if not larger than [`BODY_POOL_MAX_CAPACITY`].
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > BODY_POOL_MAX_CAPACITY {
            return;
        }
        buf.clear();
        let mut free = self.lock();
        if free.len() < BODY_POOL_KEEP {
            free.push(buf);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // The vector of buffers is valid whatever a panicking holder was doing.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The body buffers of every scrape loop.
static BODIES: BodyPool = BodyPool::new();

/// Why a scrape job could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeSetupError {
    /// The HTTP client or the request headers could not be built.
    #[error("scrape job {job}: {message}")]
    Client {
        /// Job name.
        job: String,
        /// What went wrong.
        message: String,
    },
}

/// What a job's targets share: the HTTP client and request headers, and the label sets their
/// series have in common.
#[derive(Clone)]
pub struct JobClient {
    client: HttpClient,
    /// Header values may be credentials: never logged (`Request`'s `Debug` shows names only).
    headers: Vec<(String, String)>,
    /// Sets the credentials of every scrape (rotated files included).
    authorizer: Authorizer,
    /// The own label sets the job's targets keep once between them.
    job_sets: Arc<JobSets>,
}

impl std::fmt::Debug for JobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers may carry credentials.
        f.debug_struct("JobClient").finish_non_exhaustive()
    }
}

impl JobClient {
    /// Builds the client (TLS settings) and the headers of every scrape of `job`.
    pub fn new(job: &ScrapeSettings) -> Result<JobClient, ScrapeSetupError> {
        let fail = |message: String| ScrapeSetupError::Client {
            job: job.job.clone(),
            message,
        };
        let client = HttpClient::new(&job.tls)
            .map_err(|e| fail(e.to_string()))?
            .with_proxy(job.proxy.clone());
        let mut headers = vec![
            ("accept".to_string(), job.accept.clone()),
            (
                "x-prometheus-scrape-timeout-seconds".to_string(),
                timeout_header(job.timeout),
            ),
        ];
        if job.enable_compression {
            headers.push((
                "accept-encoding".to_string(),
                ACCEPT_ENCODING_GZIP.to_string(),
            ));
        }
        if let Some(auth) = &job.auth {
            // Checked here so a bad value fails the job's set-up, not every scrape.
            auth.header_value().map_err(|e| fail(e.to_string()))?;
        }
        let authorizer = Authorizer::new(job.auth.as_ref()).map_err(|e| fail(e.to_string()))?;
        Ok(JobClient {
            client,
            headers,
            authorizer,
            job_sets: Arc::default(),
        })
    }
}

/// The timeout as Prometheus writes it in `X-Prometheus-Scrape-Timeout-Seconds`: seconds,
/// shortest decimal form (`10`, `0.5`).
pub fn timeout_header(timeout: Duration) -> String {
    format!("{}", timeout.as_secs_f64())
}

/// What a scrape loop hands to the queues at a time.
#[derive(Debug, Default)]
pub struct Scraped {
    /// Scraped samples and staleness markers, then the report series (`up`, `scrape_*`).
    pub samples: Vec<Sample>,
    /// Where the report series start in `samples` (its length when there are none).
    pub report_from: usize,
}

/// One target's scrape loop.
#[derive(Debug)]
pub struct Scraper {
    job: String,
    /// `job/address`: names the target in metadata and logs, and seeds its phase.
    key: String,
    /// The scrape request (URL, headers, limits), built once: every scrape sends the same.
    request: Request,
    client: JobClient,
    /// The connection to the target, kept between scrapes as Prometheus keeps it.
    connection: KeepAlive,
    interval: Duration,
    timeout: Duration,
    state: TargetState,
    /// Whether the previous scrape failed (to log transitions, not every failure).
    down: bool,
}

impl Scraper {
    /// Creates the loop of one target of `job`.
    pub fn new(job: &ScrapeSettings, target: &ScrapeTargetSettings, client: JobClient) -> Scraper {
        let opts = TargetOptions {
            honor_labels: job.honor_labels,
            honor_timestamps: job.honor_timestamps,
            sample_limit: job.sample_limit,
            rules: job.metric_relabel.clone(),
            normalize_le_quantile: job.normalize_le_quantile,
            keep_classic_histograms: job.always_scrape_classic_histograms,
            job_sets: client.job_sets.clone(),
        };
        let mut request = Request::new(Method::GET, target.url.clone(), target.timeout);
        request.headers = client.headers.clone();
        if target.timeout != job.timeout {
            // Relabeled `__scrape_timeout__`: the header tells the target its own deadline.
            for (name, value) in &mut request.headers {
                if name == "x-prometheus-scrape-timeout-seconds" {
                    *value = timeout_header(target.timeout);
                }
            }
        }
        request.body_limit = job.body_size_limit;
        request.max_redirects = MAX_REDIRECTS;
        Scraper {
            job: job.job.clone(),
            key: format!("{}/{}", job.job, target.address),
            request,
            client,
            connection: KeepAlive::default(),
            interval: target.interval,
            timeout: target.timeout,
            state: TargetState::new(target.labels.clone(), opts),
            down: false,
        }
    }

    /// `job/address`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name of its `[[scrape]]` job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Fetches the body, decoded and bounded by `body_limit` (what arrives, and what it decodes
    /// to) and the timeout; any non-2xx status fails the scrape.
    async fn fetch(&mut self) -> Result<(Vec<u8>, Option<String>), ScrapeError> {
        let mut trace = Trace::default();
        let mut authorized = self.authorized().await?;
        let mut response = self
            .client
            .client
            .send_with(
                authorized.as_ref().unwrap_or(&self.request),
                &mut trace,
                Some(&mut self.connection),
            )
            .await
            .map_err(|e| self.scrape_error(e))?;
        // A 401 is tried once more when the credentials changed on refusal (a rotated file).
        if response.status() == http::StatusCode::UNAUTHORIZED && self.client.authorizer.refused() {
            // Read to the end so the kept connection can carry the second request.
            let _ = response.discard(&mut trace).await;
            trace = Trace::default();
            authorized = self.authorized().await?;
            response = self
                .client
                .client
                .send_with(
                    authorized.as_ref().unwrap_or(&self.request),
                    &mut trace,
                    Some(&mut self.connection),
                )
                .await
                .map_err(|e| self.scrape_error(e))?;
        }
        let status = response.status();
        if !status.is_success() {
            return Err(ScrapeError::Http(format!(
                "server returned HTTP status {status}"
            )));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let encoding = ContentEncoding::from_header(response.headers().get(CONTENT_ENCODING))?;
        let mut buf = BODIES.take();
        if encoding == ContentEncoding::Identity {
            // The declared length sizes the buffer, within the limit (`chunk` enforces it).
            let expected = response
                .content_length()
                .filter(|&n| n <= self.request.body_limit)
                .map_or(0, |n| usize::try_from(n).unwrap_or(0));
            buf.reserve(expected);
        }
        let mut body = BodyReader::new(encoding, buf, self.request.body_limit);
        while let Some(chunk) = response
            .chunk(&mut trace)
            .await
            .map_err(|e| self.scrape_error(e))?
        {
            body.push(&chunk)?;
        }
        Ok((body.finish()?, content_type))
    }

    /// This scrape's request with the credentials' current values; `None` without
    /// credentials, when the fixed request is sent as it is (no copy per scrape).
    async fn authorized(&self) -> Result<Option<Request>, ScrapeError> {
        if !self.client.authorizer.is_configured() {
            return Ok(None);
        }
        let mut request = self.request.clone();
        self.client
            .authorizer
            .apply_to_pairs(&request.method, &request.url, &mut request.headers, b"")
            .await
            .map_err(|e| ScrapeError::Http(format!("credentials: {e}")))?;
        Ok(Some(request))
    }

    /// The scrape failure a client error is.
    fn scrape_error(&self, e: ClientError) -> ScrapeError {
        match e {
            ClientError::Timeout { .. } => ScrapeError::Timeout(self.timeout),
            ClientError::BodyTooLarge { limit } => ScrapeError::BodyTooLarge { limit },
            // The client's messages already carry their causes.
            e => ScrapeError::Http(e.to_string()),
        }
    }

    /// Scrapes once: appends the samples, staleness markers and report series to `out`, and
    /// records metadata and self-metrics.
    pub async fn scrape(
        &mut self,
        out: &mut Vec<Sample>,
        telemetry: &Telemetry,
        metadata: Option<&MetadataStore>,
    ) -> ScrapeSummary {
        let started = Instant::now();
        // A sample's timestamp is when its scrape started, as in Prometheus.
        let ts = now_ms();
        let summary = match self.fetch().await {
            Ok((body, content_type)) => {
                let (summary, families) =
                    self.state.ingest(&body, content_type.as_deref(), ts, out);
                if let (Some(store), true) = (metadata, summary.up()) {
                    store.set(&self.key, families);
                }
                BODIES.give(body);
                summary
            }
            Err(e) => self.state.fail(e, ts, out),
        };
        self.state.report(&summary, ts, started.elapsed(), out);
        self.record(&summary, telemetry);
        summary
    }

    fn record(&mut self, summary: &ScrapeSummary, telemetry: &Telemetry) {
        let job = self.job.as_str();
        let r = &summary.rejected;
        for (reason, n) in [
            ("out_of_order", r.out_of_order),
            ("duplicate_timestamp", r.duplicate_timestamp),
            ("no_metric_name", r.no_metric_name),
        ] {
            if n > 0 {
                telemetry.add(
                    telemetry::SCRAPE_SAMPLES_REJECTED,
                    &[("scrape_job", job), ("reason", reason)],
                    n as f64,
                );
            }
        }
        match &summary.error {
            Some(e) => {
                telemetry.add(
                    telemetry::SCRAPE_FAILURES,
                    &[("scrape_job", job), ("reason", e.reason())],
                    1.0,
                );
                if !self.down {
                    tracing::warn!(target = %self.key, url = %crate::secret::redact_url(&self.request.url), error = %e, stale_markers = summary.stale_markers, "scrape failed (up = 0); further failures are logged at debug");
                } else {
                    tracing::debug!(target = %self.key, error = %e, "scrape failed again");
                }
                self.down = true;
            }
            None => {
                if self.down {
                    tracing::info!(target = %self.key, samples = summary.scraped, "scrape succeeded again");
                }
                self.down = false;
            }
        }
    }

    /// Appends the end-of-run staleness markers (every series of the latest scrape and the
    /// report series) stamped `ts` or later.
    pub fn end(&mut self, ts: i64, out: &mut Vec<Sample>) -> usize {
        self.state.end(ts, out)
    }

    /// Scrapes every interval, at the target's own phase, until `shutdown`; then publishes
    /// the end-of-run staleness markers. A scrape in flight at shutdown is abandoned.
    pub async fn run(
        mut self,
        publish: impl Fn(Scraped) + Send + Sync + 'static,
        telemetry: Arc<Telemetry>,
        metadata: Option<Arc<MetadataStore>>,
        shutdown: CancellationToken,
    ) {
        for reason in [
            "http",
            "timeout",
            "body_size_limit",
            "parse",
            "sample_limit",
        ] {
            telemetry.add(
                telemetry::SCRAPE_FAILURES,
                &[("scrape_job", &self.job), ("reason", reason)],
                0.0,
            );
        }
        // Each target keeps a fixed wall-clock phase, from its job, address and URL, on the
        // grid the probes use: targets spread over the interval, a restart keeps each one's
        // phase, and the targets that share a step start together, so thousands of them wake
        // the runtime once per step rather than once each (docs/performance.md, Discovery).
        let delay = crate::clock::delay_to_phase(
            &format!("{}\0{}", self.key, self.request.url),
            self.interval,
        );
        tracing::debug!(target = %self.key, delay = ?delay, "first scrape scheduled");
        let mut ticker = crate::clock::phase_ticker(delay, self.interval);
        let mut out = Vec::new();
        let mut reported = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            // Boxed for the scrape's length: its state (the HTTP exchange, the parse) is most of
            // the loop's size, and a task keeps its whole future allocated between scrapes, for
            // each of thousands of targets.
            let done = tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = Box::pin(self.scrape(&mut out, &telemetry, metadata.as_deref())) => true,
            };
            if !done {
                break;
            }
            reported = true;
            // Every finished scrape ends with its report series.
            let report_from = out.len().saturating_sub(REPORT_SERIES.len());
            // The queues take the samples; a buffer kept by every target would hold each
            // one's largest scrape while it sits idle.
            publish(Scraped {
                samples: std::mem::take(&mut out),
                report_from,
            });
        }
        out.clear();
        let markers = self.end(now_ms(), &mut out);
        tracing::debug!(target = %self.key, markers, "scrape loop stopped; staleness markers queued");
        // The report series' markers come last, if a scrape reported any.
        let report_from = if reported {
            out.len().saturating_sub(REPORT_SERIES.len())
        } else {
            out.len()
        };
        publish(Scraped {
            samples: out,
            report_from,
        });
        if let Some(store) = metadata {
            store.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_pool_keeps_a_few_cleared_buffers_of_bounded_size() {
        let pool = BodyPool::new();
        assert_eq!(
            pool.take().capacity(),
            0,
            "an empty pool hands out a new buffer"
        );
        let mut a = pool.take();
        a.extend_from_slice(b"up 1\n");
        let cap = a.capacity();
        pool.give(a);
        let a = pool.take();
        assert!(a.is_empty());
        assert_eq!(a.capacity(), cap, "the same buffer comes back, cleared");

        for _ in 0..BODY_POOL_KEEP + 3 {
            pool.give(Vec::with_capacity(64));
        }
        assert_eq!(pool.lock().len(), BODY_POOL_KEEP);
        let held: Vec<_> = (0..BODY_POOL_KEEP).map(|_| pool.take()).collect();
        assert!(held.iter().all(|b| b.capacity() >= 64));

        pool.give(Vec::with_capacity(BODY_POOL_MAX_CAPACITY + 1));
        assert_eq!(pool.take().capacity(), 0, "an oversized buffer is not kept");
    }

    #[test]
    fn timeout_header_is_seconds_in_shortest_form() {
        assert_eq!(timeout_header(Duration::from_secs(10)), "10");
        assert_eq!(timeout_header(Duration::from_millis(500)), "0.5");
        assert_eq!(timeout_header(Duration::from_millis(1250)), "1.25");
    }

    #[tokio::test]
    async fn an_idle_scrape_loop_does_not_hold_a_scrape_s_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pushprobe.toml");
        std::fs::write(
            &path,
            "[[remote_write]]\nurl = \"http://127.0.0.1:9/api/v1/write\"\n\n\
             [[scrape]]\njob = \"j\"\ntargets = [\"127.0.0.1:1\"]\n",
        )
        .unwrap();
        let settings = crate::config::load(&path, true)
            .unwrap()
            .validate("test")
            .unwrap();
        let job = &settings.scrapes[0];
        let client = JobClient::new(job).unwrap();
        let telemetry = Arc::new(Telemetry::new());
        let mut scraper = Scraper::new(job, &job.targets[0], client.clone());
        let mut out = Vec::new();
        let scrape = std::mem::size_of_val(&scraper.scrape(&mut out, &telemetry, None));
        let scraper = Scraper::new(job, &job.targets[0], client);
        let idle = scraper.run(|_| {}, telemetry, None, CancellationToken::new());
        // A task's future stays allocated as long as the task: thousands of targets would
        // each hold room for an HTTP exchange and a parse between their scrapes.
        assert!(
            std::mem::size_of_val(&idle) < scrape,
            "the loop's future ({} bytes) holds a scrape's ({scrape} bytes)",
            std::mem::size_of_val(&idle)
        );
    }
}
