//! HTTP probe: one request per run through the instrumented [`http_client`](crate::http_client),
//! recorded as the blackbox exporter's `http` prober records it, so that existing dashboards
//! and alerts keep working on pushed series.
//!
//! Every series carries `probe` (the probe's name), `instance` (the configured URL, password
//! redacted) and the probe's extra labels. Per run:
//! - `probe_success`, `probe_duration_seconds`, `probe_http_status_code` (0 without a
//!   response), `probe_http_duration_seconds{phase}` (all five phases, 0 when a phase did not
//!   happen), `probe_http_content_length` (-1 when not declared), `probe_http_uncompressed_body_length`,
//!   `probe_http_redirects`, `probe_http_ssl`, `probe_http_version`, `probe_ip_protocol`;
//! - with TLS only: `probe_ssl_earliest_cert_expiry` and `probe_tls_version_info{version}`
//!   (removed again, with a staleness marker, when a run has no TLS facts);
//! - `probe_failed_due_to_regex` (1 when a body or header regular expression failed a run
//!   whose status passed),
//!   `probe_failed_due_to_json` (with `fail_if_body_json` only), and, when present,
//!   `probe_http_last_modified_timestamp_seconds` (the `Last-Modified` header; a date that
//!   does not parse is left out, not a failure) and
//!   `probe_ssl_client_cert_expiry_timestamp_seconds` (the `notAfter` of `tls.cert_file`'s
//!   certificate, read each run);
//! - cumulative: `pushprobe_probe_latency_seconds` (histogram of run durations, observed for
//!   every run that received a complete HTTP response, whatever its status: a timeout or a
//!   refused connection measures the failure, not the service, and would skew the latency)
//!   and `pushprobe_probe_requests_total{code, error}` (`code` = status or `none`, `error` =
//!   [`ClientError::kind`] or `none`).
//!
//! The response checks (`fail_if_*`, `valid_http_versions`) are evaluated in `assert`, the
//! body decoded for them in `decode`; each failed check is named in the report's reason and
//! as a detail of its own.

mod assert;
mod decode;

use std::time::Duration;

use bytes::Bytes;
use http::Version;
use tokio::time::Instant;

use super::{ProbeError, ProbeReport};
use crate::auth::Authorizer;
use crate::config::HttpProbeSettings;
use crate::http_client::cert::format_unix;
use crate::http_client::{ClientError, HttpClient, Phase, Request, Response, Trace};
use crate::secret::redact_url;
use crate::series::{LabelError, MetricType, Registry};

/// Whether the probe succeeded, 1 or 0.
pub const PROBE_SUCCESS: &str = "probe_success";
/// Wall time of the run in seconds.
pub const PROBE_DURATION: &str = "probe_duration_seconds";
/// Final response status, 0 without a response.
pub const HTTP_STATUS_CODE: &str = "probe_http_status_code";
/// Seconds per `phase`, summed over redirects.
pub const HTTP_DURATION: &str = "probe_http_duration_seconds";
/// Declared body length, -1 when not declared.
pub const HTTP_CONTENT_LENGTH: &str = "probe_http_content_length";
/// Body bytes read.
pub const HTTP_BODY_LENGTH: &str = "probe_http_uncompressed_body_length";
/// Redirects followed.
pub const HTTP_REDIRECTS: &str = "probe_http_redirects";
/// 1 when the final request used TLS.
pub const HTTP_SSL: &str = "probe_http_ssl";
/// HTTP version of the response (1.1, 1.0), 0 without a response.
pub const HTTP_VERSION: &str = "probe_http_version";
/// 4 or 6, by the address of the first connection; 0 when resolution failed.
pub const IP_PROTOCOL: &str = "probe_ip_protocol";
/// Earliest certificate `notAfter` of the final TLS connection, Unix seconds.
pub const SSL_EARLIEST_CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
/// Always 1, labelled with the TLS `version` of the final connection.
pub const TLS_VERSION_INFO: &str = "probe_tls_version_info";
/// Histogram of run durations with complete HTTP responses.
pub const LATENCY: &str = "pushprobe_probe_latency_seconds";
/// Runs by `code` and `error`.
pub const REQUESTS: &str = "pushprobe_probe_requests_total";
/// 1 when a body or header regular expression failed the run.
pub const FAILED_DUE_TO_REGEX: &str = "probe_failed_due_to_regex";
/// 1 when a `fail_if_body_json` check failed the run (only with such checks).
pub const FAILED_DUE_TO_JSON: &str = "probe_failed_due_to_json";
/// The `Last-Modified` header, Unix seconds (only when it parses).
pub const HTTP_LAST_MODIFIED: &str = "probe_http_last_modified_timestamp_seconds";
/// `notAfter` of the configured client certificate (`tls.cert_file`), Unix seconds.
pub const CLIENT_CERT_EXPIRY: &str = "probe_ssl_client_cert_expiry_timestamp_seconds";

const FAMILIES: &[(&str, MetricType, &str)] = &[
    (
        PROBE_SUCCESS,
        MetricType::Gauge,
        "Displays whether or not the probe was a success",
    ),
    (
        PROBE_DURATION,
        MetricType::Gauge,
        "Returns how long the probe took to complete in seconds",
    ),
    (
        HTTP_STATUS_CODE,
        MetricType::Gauge,
        "Response HTTP status code",
    ),
    (
        HTTP_DURATION,
        MetricType::Gauge,
        "Duration of http request by phase, summed over all redirects",
    ),
    (
        HTTP_CONTENT_LENGTH,
        MetricType::Gauge,
        "Length of http content response",
    ),
    (
        HTTP_BODY_LENGTH,
        MetricType::Gauge,
        "Length of uncompressed response body",
    ),
    (HTTP_REDIRECTS, MetricType::Gauge, "The number of redirects"),
    (
        HTTP_SSL,
        MetricType::Gauge,
        "Indicates if SSL was used for the final redirect",
    ),
    (
        HTTP_VERSION,
        MetricType::Gauge,
        "Returns the version of HTTP of the probe response",
    ),
    (
        IP_PROTOCOL,
        MetricType::Gauge,
        "Specifies whether probe ip protocol is IP4 or IP6",
    ),
    (
        SSL_EARLIEST_CERT_EXPIRY,
        MetricType::Gauge,
        "Returns earliest SSL cert expiry in unixtime",
    ),
    (
        TLS_VERSION_INFO,
        MetricType::Gauge,
        "Returns the TLS version used",
    ),
    (
        LATENCY,
        MetricType::Histogram,
        "Duration of probe runs that received a complete HTTP response, in seconds",
    ),
    (
        REQUESTS,
        MetricType::Counter,
        "Probe runs by response status code and error kind",
    ),
    (
        FAILED_DUE_TO_REGEX,
        MetricType::Gauge,
        "Indicates if probe failed due to regex",
    ),
    (
        FAILED_DUE_TO_JSON,
        MetricType::Gauge,
        "Indicates if probe failed due to a fail_if_body_json check",
    ),
    (
        HTTP_LAST_MODIFIED,
        MetricType::Gauge,
        "Returns the Last-Modified HTTP response header in unixtime",
    ),
    (
        CLIENT_CERT_EXPIRY,
        MetricType::Gauge,
        "Returns the expiry of the configured TLS client certificate in unixtime",
    ),
];

/// An HTTP(S) probe.
pub struct HttpProbe {
    settings: HttpProbeSettings,
    client: HttpClient,
    /// Sets the credentials of every run (rotated files included).
    authorizer: Authorizer,
    request: Request,
    /// `probe`, `instance` and the extra labels, in that order.
    labels: Vec<(String, String)>,
    /// The `version` of the `probe_tls_version_info` series last recorded, to remove it when
    /// the version changes or TLS goes away.
    tls_version: Option<&'static str>,
}

impl std::fmt::Debug for HttpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProbe")
            .field("name", &self.settings.name)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// What one run found, before it is judged and recorded.
#[derive(Debug)]
struct Outcome {
    duration: Duration,
    trace: Trace,
    response: Option<ResponseFacts>,
    /// The first error, if any; with a response, it happened while reading the body.
    error: Option<ClientError>,
    /// The checks the response failed (none without a response).
    failed: Vec<assert::Failed>,
    /// Body bytes, decoded when `compression` is set.
    body_length: u64,
    /// `notAfter` of the configured client certificate, when there is one and it reads.
    client_cert_expiry: Option<i64>,
}

/// The parts of the final response that are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ResponseFacts {
    status: u16,
    version: Version,
    content_length: Option<u64>,
    /// `Last-Modified`, Unix seconds, when present and valid.
    last_modified: Option<i64>,
}

/// Whether a run succeeded, and what to say about it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    success: bool,
    status: String,
    reason: Option<String>,
}

impl HttpProbe {
    /// Builds the probe; fails when its TLS options cannot be loaded.
    pub fn new(settings: HttpProbeSettings) -> Result<Self, ProbeError> {
        let client = HttpClient::new(&settings.tls)
            .map_err(|source| ProbeError::Tls {
                probe: settings.name.clone(),
                source,
            })?
            .with_proxy(settings.proxy.clone());
        let mut request = Request::new(
            settings.method.clone(),
            settings.url.clone(),
            settings.timeout,
        );
        request.headers = crate::secret::expose_headers(&settings.headers);
        request.body = settings.body.clone().map(Bytes::from);
        request.follow_redirects = settings.follow_redirects;
        request.body_limit = settings.checks.body_limit;
        request.ip = settings.checks.ip;
        if let Some(c) = settings.checks.compression {
            // A configured Accept-Encoding wins, as the probe's own headers always do.
            if !request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"))
            {
                request
                    .headers
                    .push(("accept-encoding".into(), c.as_str().into()));
            }
        }
        let labels = super::series_labels(
            &settings.name,
            || instance_label(&settings.url),
            &settings.labels,
        );
        let authorizer =
            Authorizer::new(settings.auth.as_ref()).map_err(|e| ProbeError::Credentials {
                probe: settings.name.clone(),
                message: e.to_string(),
            })?;
        Ok(HttpProbe {
            settings,
            client,
            authorizer,
            request,
            labels,
            tls_version: None,
        })
    }

    /// Sends this run's request with the credentials' current values; a `401` is sent once
    /// more (its phases measured afresh) when the credentials changed on refusal.
    async fn exchange(&self, trace: &mut Trace) -> Result<Response, ClientError> {
        let mut response = self.send_authorized(trace).await?;
        if response.status() == http::StatusCode::UNAUTHORIZED && self.authorizer.refused() {
            let _ = response.discard(trace).await;
            *trace = Trace::default();
            response = self.send_authorized(trace).await?;
        }
        Ok(response)
    }

    async fn send_authorized(&self, trace: &mut Trace) -> Result<Response, ClientError> {
        if !self.authorizer.is_configured() {
            return self.client.send(&self.request, trace).await;
        }
        let mut request = self.request.clone();
        let body = request.body.clone().unwrap_or_default();
        self.authorizer
            .apply_to_pairs(&request.method, &request.url, &mut request.headers, &body)
            .await
            .map_err(|e| ClientError::Credentials {
                message: e.to_string(),
            })?;
        self.client.send(&request, trace).await
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once: one request (plus redirects) within the probe's timeout, recorded into
    /// `registry`.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let started = Instant::now();
        let mut trace = Trace::default();
        let checks = &self.settings.checks;
        let mut failed = Vec::new();
        let mut body_length = None;
        let (response, error) = match self.exchange(&mut trace).await {
            Ok(mut response) => {
                let facts = ResponseFacts {
                    status: response.status().as_u16(),
                    version: response.version(),
                    content_length: response.content_length(),
                    last_modified: last_modified(response.headers()),
                };
                // The body is read whole so that `transfer` and the size limit mean what they
                // mean in the blackbox exporter; it is kept only when a check needs it.
                let (body, error) = if checks.reads_body() {
                    match response.read_to_end(&mut trace).await {
                        Ok(b) => (Some(b), None),
                        Err(e) => (None, Some(e)),
                    }
                } else {
                    (None, response.discard(&mut trace).await.err())
                };
                let (body, error) = match (body, checks.compression) {
                    (Some(raw), Some(c)) => match decode::decode(c, &raw, checks.body_limit) {
                        Ok(decoded) => (Some(Bytes::from(decoded)), error),
                        Err(decode::DecodeError::TooLarge { limit }) => {
                            (None, Some(ClientError::BodyTooLarge { limit }))
                        }
                        Err(e) => {
                            failed.push(assert::Failed {
                                key: "compression".into(),
                                problem: e.to_string(),
                                family: assert::Family::Other,
                            });
                            (None, error)
                        }
                    },
                    (body, _) => (body, error),
                };
                if checks.compression.is_some() {
                    body_length = Some(body.as_ref().map_or(0, |b| b.len() as u64));
                }
                let received = assert::Received {
                    version: facts.version,
                    tls: trace.https,
                    headers: response.headers(),
                    body: body.as_deref(),
                };
                failed.extend(assert::evaluate(checks, &received));
                (Some(facts), error)
            }
            Err(e) => (None, Some(e)),
        };
        let client_cert_expiry = self.settings.tls.cert_file.as_deref().and_then(|path| {
            crate::tls::client_cert_not_after(path)
                .inspect_err(|e| {
                    tracing::debug!(probe = %self.settings.name, error = %e, "client certificate expiry not read")
                })
                .ok()
        });
        let outcome = Outcome {
            duration: started.elapsed(),
            body_length: body_length.unwrap_or(trace.body_bytes),
            trace,
            response,
            error,
            failed,
            client_cert_expiry,
        };
        let verdict = judge(&outcome, &self.settings.valid_status_codes);
        if let Err(e) = self.record(registry, &outcome, &verdict) {
            // Labels were validated with the configuration; this is a programming error,
            // reported instead of panicking in the middle of a run.
            tracing::warn!(probe = %self.settings.name, error = %e, "could not record probe series");
        }
        ProbeReport {
            success: verdict.success,
            duration: outcome.duration,
            status: verdict.status,
            reason: verdict.reason,
            details: details(&outcome),
        }
    }

    fn record(
        &mut self,
        registry: &mut Registry,
        outcome: &Outcome,
        verdict: &Verdict,
    ) -> Result<(), LabelError> {
        for (name, kind, help) in FAMILIES {
            registry.describe(name, *kind, help);
        }
        let base: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let trace = &outcome.trace;
        let response = outcome.response.as_ref();

        registry.gauge_set(PROBE_SUCCESS, &base, bool_value(verdict.success))?;
        registry.gauge_set(PROBE_DURATION, &base, outcome.duration.as_secs_f64())?;
        registry.gauge_set(
            HTTP_STATUS_CODE,
            &base,
            response.map_or(0.0, |r| f64::from(r.status)),
        )?;
        for (phase, d) in trace.phases.iter() {
            registry.gauge_set(
                HTTP_DURATION,
                &with(&base, &[("phase", phase.as_str())]),
                d.as_secs_f64(),
            )?;
        }
        registry.gauge_set(
            HTTP_CONTENT_LENGTH,
            &base,
            response.map_or(0.0, |r| r.content_length.map_or(-1.0, |n| n as f64)),
        )?;
        registry.gauge_set(HTTP_BODY_LENGTH, &base, outcome.body_length as f64)?;
        registry.gauge_set(HTTP_REDIRECTS, &base, f64::from(trace.redirects))?;
        registry.gauge_set(
            HTTP_SSL,
            &base,
            bool_value(response.is_some() && trace.https),
        )?;
        registry.gauge_set(
            HTTP_VERSION,
            &base,
            response.map_or(0.0, |r| version_value(r.version)),
        )?;
        registry.gauge_set(
            IP_PROTOCOL,
            &base,
            match trace.first_addr {
                Some(a) if a.is_ipv4() => 4.0,
                Some(_) => 6.0,
                None => 0.0,
            },
        )?;

        let tls = trace.tls.as_ref().filter(|_| response.is_some());
        match tls.and_then(|t| t.earliest_cert_expiry) {
            Some(expiry) => registry.gauge_set(SSL_EARLIEST_CERT_EXPIRY, &base, expiry as f64)?,
            None => registry.remove(SSL_EARLIEST_CERT_EXPIRY, &base),
        }
        let version = tls.map(|t| t.version);
        if let Some(old) = self.tls_version.filter(|old| Some(*old) != version) {
            registry.remove(TLS_VERSION_INFO, &with(&base, &[("version", old)]));
        }
        if let Some(v) = version {
            registry.gauge_set(TLS_VERSION_INFO, &with(&base, &[("version", v)]), 1.0)?;
        }
        self.tls_version = version;

        if response.is_some() && outcome.error.is_none() {
            registry.histogram_observe(
                LATENCY,
                &base,
                &self.settings.buckets,
                outcome.duration.as_secs_f64(),
            )?;
        }
        // As in the blackbox exporter, a check "failed the run" only when the status passed:
        // a 503 whose body also fails a regexp failed because of its status.
        let status_passed = response
            .is_some_and(|r| status_problem(r.status, &self.settings.valid_status_codes).is_none());
        let failed_by =
            |family| bool_value(status_passed && outcome.failed.iter().any(|f| f.family == family));
        registry.gauge_set(FAILED_DUE_TO_REGEX, &base, failed_by(assert::Family::Regex))?;
        if !self.settings.checks.json.is_empty() {
            registry.gauge_set(FAILED_DUE_TO_JSON, &base, failed_by(assert::Family::Json))?;
        }
        match response.and_then(|r| r.last_modified) {
            Some(t) => registry.gauge_set(HTTP_LAST_MODIFIED, &base, t as f64)?,
            None => registry.remove(HTTP_LAST_MODIFIED, &base),
        }
        match outcome.client_cert_expiry {
            Some(t) => registry.gauge_set(CLIENT_CERT_EXPIRY, &base, t as f64)?,
            None => registry.remove(CLIENT_CERT_EXPIRY, &base),
        }

        let code = response.map_or_else(|| "none".to_string(), |r| r.status.to_string());
        let error = outcome.error.as_ref().map_or("none", ClientError::kind);
        registry.counter_add(
            REQUESTS,
            &with(&base, &[("code", &code), ("error", error)]),
            1.0,
        )?;
        Ok(())
    }
}

/// Decides success: a complete response whose status is accepted.
fn judge(outcome: &Outcome, valid_status_codes: &[u16]) -> Verdict {
    if let Some(e) = &outcome.error {
        return Verdict {
            success: false,
            status: e.kind().to_string(),
            reason: Some(e.to_string()),
        };
    }
    let Some(r) = &outcome.response else {
        // Unreachable by construction (no response means an error); judged as a failure
        // rather than trusted.
        return Verdict {
            success: false,
            status: "none".into(),
            reason: Some("no response received".into()),
        };
    };
    // Every problem is named, the status first: one run's reason shows all there is to fix.
    let problems: Vec<String> = status_problem(r.status, valid_status_codes)
        .into_iter()
        .chain(outcome.failed.iter().map(ToString::to_string))
        .collect();
    Verdict {
        success: problems.is_empty(),
        status: r.status.to_string(),
        reason: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// The `Last-Modified` header as Unix seconds; `None` when absent or not an HTTP date.
fn last_modified(headers: &http::HeaderMap) -> Option<i64> {
    let text = headers.get(http::header::LAST_MODIFIED)?.to_str().ok()?;
    let t = httpdate::parse_http_date(text).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Why `status` is not accepted, or `None` when it is (empty list: any 2xx).
fn status_problem(status: u16, valid: &[u16]) -> Option<String> {
    if valid.is_empty() {
        if (200..300).contains(&status) {
            None
        } else {
            Some(format!(
                "status {status} is not 2xx: fix the target, or list the codes to accept in valid_status_codes"
            ))
        }
    } else if valid.contains(&status) {
        None
    } else {
        let list: Vec<String> = valid.iter().map(u16::to_string).collect();
        Some(format!(
            "status {status} not in valid_status_codes [{}]",
            list.join(", ")
        ))
    }
}

/// Facts for `check` and logs; timings in seconds, as numbers.
fn details(outcome: &Outcome) -> Vec<(String, super::Detail)> {
    let t = &outcome.trace;
    let mut out: Vec<(String, super::Detail)> = Vec::new();
    if let Some(phase) = outcome.error.as_ref().and_then(ClientError::phase) {
        out.push(("failed_phase".into(), phase.to_string().into()));
    }
    if let Some(addr) = t.addr {
        out.push(("address".into(), addr.to_string().into()));
    }
    if let Some(r) = &outcome.response {
        out.push(("http_version".into(), format!("{:?}", r.version).into()));
    }
    if let Some(ttfb) = t.time_to_first_byte() {
        out.push(("time_to_first_byte_seconds".into(), ttfb.into()));
    }
    for phase in Phase::ALL {
        let d = t.phases.get(phase);
        if !d.is_zero() {
            out.push((format!("{phase}_seconds"), d.into()));
        }
    }
    if t.redirects > 0 {
        out.push((
            "redirects".into(),
            super::Detail::Count(u64::from(t.redirects)),
        ));
        if let Some(u) = &t.url {
            out.push(("final_url".into(), redact_url(u).into()));
        }
    }
    if let Some(tls) = &t.tls {
        out.push(("tls_version".into(), tls.version.to_string().into()));
        if let Some(exp) = tls.earliest_cert_expiry {
            out.push(("cert_not_after".into(), format_unix(exp).into()));
        }
    }
    if let Some(exp) = outcome.client_cert_expiry {
        out.push(("client_cert_not_after".into(), format_unix(exp).into()));
    }
    for f in &outcome.failed {
        out.push((f.key.clone(), f.problem.clone().into()));
    }
    out
}

/// The `instance` label: the configured URL with any password replaced.
fn instance_label(url: &reqwest::Url) -> String {
    redact_url(url)
}

/// `base` plus `extra` labels.
fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = base.to_vec();
    l.extend_from_slice(extra);
    l
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The version as the blackbox exporter reports it (major + minor / 10).
fn version_value(v: Version) -> f64 {
    match v {
        Version::HTTP_09 => 0.9,
        Version::HTTP_10 => 1.0,
        Version::HTTP_11 => 1.1,
        Version::HTTP_2 => 2.0,
        Version::HTTP_3 => 3.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(response: Option<u16>, error: Option<ClientError>) -> Outcome {
        Outcome {
            duration: Duration::from_millis(5),
            trace: Trace::default(),
            response: response.map(|status| ResponseFacts {
                status,
                version: Version::HTTP_11,
                content_length: None,
                last_modified: None,
            }),
            error,
            failed: Vec::new(),
            body_length: 0,
            client_cert_expiry: None,
        }
    }

    #[test]
    fn empty_valid_codes_accept_any_2xx() {
        assert_eq!(status_problem(200, &[]), None);
        assert_eq!(status_problem(204, &[]), None);
        assert!(status_problem(301, &[]).is_some_and(|p| p.contains("not 2xx")));
        assert!(status_problem(500, &[]).is_some());
    }

    #[test]
    fn listed_codes_are_the_only_ones_accepted() {
        assert_eq!(status_problem(404, &[200, 404]), None);
        assert_eq!(
            status_problem(503, &[200]),
            Some("status 503 not in valid_status_codes [200]".to_string())
        );
        assert!(status_problem(204, &[200]).is_some());
    }

    #[test]
    fn verdict_reports_status_or_error_kind() {
        let ok = judge(&outcome(Some(200), None), &[]);
        assert_eq!(
            ok,
            Verdict {
                success: true,
                status: "200".into(),
                reason: None
            }
        );
        let bad = judge(&outcome(Some(500), None), &[]);
        assert!(!bad.success);
        assert_eq!(bad.status, "500");
        let body = judge(
            &outcome(Some(200), Some(ClientError::BodyTooLarge { limit: 10 })),
            &[],
        );
        assert!(!body.success);
        assert_eq!(body.status, "body_too_large");
        let timeout = judge(
            &outcome(
                None,
                Some(ClientError::Timeout {
                    phase: Phase::Processing,
                    timeout: Duration::from_secs(1),
                }),
            ),
            &[],
        );
        assert_eq!(timeout.status, "timeout");
        assert!(timeout
            .reason
            .is_some_and(|r| r.contains("waiting for the response headers")));
        assert!(!judge(&outcome(None, None), &[]).success);
    }

    #[test]
    fn failed_checks_join_the_status_in_the_reason_and_each_is_a_detail() {
        let mut o = outcome(Some(503), None);
        o.failed = vec![
            assert::Failed {
                key: "fail_if_body_not_matches_regexp[0]".into(),
                problem: "/ok/ did not match".into(),
                family: assert::Family::Regex,
            },
            assert::Failed {
                key: "fail_if_body_json[1]".into(),
                problem: "/status: expected \"up\", got \"down\"".into(),
                family: assert::Family::Json,
            },
        ];
        let v = judge(&o, &[]);
        assert!(!v.success);
        assert_eq!(v.status, "503");
        assert_eq!(
            v.reason.as_deref(),
            Some(
                "status 503 is not 2xx: fix the target, or list the codes to accept in \
                 valid_status_codes; fail_if_body_not_matches_regexp[0] /ok/ did not match; \
                 fail_if_body_json[1] /status: expected \"up\", got \"down\""
            )
        );
        let d = details(&o);
        assert!(d.contains(&(
            "fail_if_body_json[1]".to_string(),
            "/status: expected \"up\", got \"down\"".into()
        )));
        o.response = outcome(Some(200), None).response;
        o.failed.truncate(1);
        assert_eq!(
            judge(&o, &[]).reason.as_deref(),
            Some("fail_if_body_not_matches_regexp[0] /ok/ did not match")
        );
    }

    #[test]
    fn last_modified_reads_http_dates_and_ignores_the_rest() {
        let mut h = http::HeaderMap::new();
        assert_eq!(last_modified(&h), None);
        h.insert(
            http::header::LAST_MODIFIED,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(last_modified(&h), Some(1_445_412_480));
        h.insert(
            http::header::LAST_MODIFIED,
            http::HeaderValue::from_static("yesterday"),
        );
        assert_eq!(last_modified(&h), None);
    }

    #[test]
    fn failed_phase_is_a_detail() {
        let o = outcome(
            None,
            Some(ClientError::Timeout {
                phase: Phase::Tls,
                timeout: Duration::from_secs(1),
            }),
        );
        assert!(details(&o).contains(&("failed_phase".to_string(), "tls".into())));
    }

    #[test]
    fn instance_label_hides_passwords() {
        let u = reqwest::Url::parse("https://user:hunter2@example.com/x").unwrap();
        let label = instance_label(&u);
        assert!(!label.contains("hunter2"), "{label}");
        assert!(label.starts_with("https://user:"), "{label}");
        let plain = reqwest::Url::parse("http://127.0.0.1:8080/health").unwrap();
        assert_eq!(instance_label(&plain), "http://127.0.0.1:8080/health");
    }

    #[test]
    fn versions_are_reported_like_blackbox() {
        assert_eq!(version_value(Version::HTTP_11), 1.1);
        assert_eq!(version_value(Version::HTTP_10), 1.0);
        assert_eq!(version_value(Version::HTTP_2), 2.0);
    }
}
