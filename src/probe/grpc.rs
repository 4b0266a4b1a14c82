//! gRPC probe: one `grpc.health.v1.Health/Check` per run, recorded as the blackbox exporter's
//! `grpc` prober records it, so that dashboards and alerts written for it keep working.
//!
//! A run resolves the target (the preferred address family first, the other one when
//! `ip_protocol_fallback` allows), opens a TCP connection (and a TLS session, offering ALPN
//! `h2`), speaks HTTP/2 on it and makes the one call, all within the probe's timeout. Only a
//! `SERVING` answer is a success. The connection is made here rather than by a gRPC channel, so
//! that the resolve and TLS facts are this probe's own measurements and the TLS settings are
//! the ones every other connection of pushprobe uses.
//!
//! Every series carries `probe`, `instance` (the target as configured) and the probe's extra
//! labels. Per run: `probe_success`, `probe_duration_seconds`,
//! `probe_grpc_duration_seconds{phase}` (`resolve`, and `check`: connecting and the call),
//! `probe_grpc_healthcheck_response{serving_status}` (one series per status, 1 for the
//! answer, all 0 without one), `probe_grpc_status_code`, `probe_grpc_ssl`,
//! `probe_ip_protocol`, `probe_ip_addr_hash`, `probe_dns_lookup_time_seconds`; with TLS only,
//! `probe_ssl_earliest_cert_expiry` and `probe_tls_version_info{version}` (removed again when a
//! run has no TLS facts).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::address::ip_hash;
use super::{Detail, ProbeError, ProbeReport};
use crate::config::{GrpcProbeSettings, GrpcTarget};
use crate::http_client::cert::format_unix;
use crate::http_client::{ClientError, TlsInfo};
use crate::series::{LabelError, MetricType, Registry};

/// Whether the probe succeeded, 1 or 0.
pub const PROBE_SUCCESS: &str = "probe_success";
/// Wall time of the run in seconds.
pub const PROBE_DURATION: &str = "probe_duration_seconds";
/// Seconds per `phase` (`resolve`, `check`).
pub const GRPC_DURATION: &str = "probe_grpc_duration_seconds";
/// 1 for the `serving_status` the server answered, 0 for the others.
pub const GRPC_HEALTHCHECK_RESPONSE: &str = "probe_grpc_healthcheck_response";
/// The call's gRPC status code (0 = OK).
pub const GRPC_STATUS_CODE: &str = "probe_grpc_status_code";
/// 1 when the connection used TLS.
pub const GRPC_SSL: &str = "probe_grpc_ssl";
/// 4 or 6, by the address connected to; 0 when resolution failed.
pub const IP_PROTOCOL: &str = "probe_ip_protocol";
/// FNV-1a hash of the address connected to; 0 when resolution failed.
pub const IP_ADDR_HASH: &str = "probe_ip_addr_hash";
/// Seconds spent resolving the target.
pub const DNS_LOOKUP_TIME: &str = "probe_dns_lookup_time_seconds";
/// Earliest certificate `notAfter` of the TLS connection, Unix seconds.
pub const SSL_EARLIEST_CERT_EXPIRY: &str = "probe_ssl_earliest_cert_expiry";
/// Always 1, labelled with the TLS `version` of the connection.
pub const TLS_VERSION_INFO: &str = "probe_tls_version_info";

const FAMILIES: &[(&str, &str)] = &[
    (
        PROBE_SUCCESS,
        "Displays whether or not the probe was a success",
    ),
    (
        PROBE_DURATION,
        "Returns how long the probe took to complete in seconds",
    ),
    (GRPC_DURATION, "Duration of gRPC request by phase"),
    (GRPC_HEALTHCHECK_RESPONSE, "Response HealthCheck response"),
    (GRPC_STATUS_CODE, "Response gRPC status code"),
    (GRPC_SSL, "Indicates if SSL was used for the connection"),
    (
        IP_PROTOCOL,
        "Specifies whether probe ip protocol is IP4 or IP6",
    ),
    (
        IP_ADDR_HASH,
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
    ),
    (
        DNS_LOOKUP_TIME,
        "Returns the time taken for probe dns lookup in seconds",
    ),
    (
        SSL_EARLIEST_CERT_EXPIRY,
        "Returns earliest SSL cert expiry in unixtime",
    ),
    (TLS_VERSION_INFO, "Returns the TLS version used"),
];

/// Every serving status, each with its series in `probe_grpc_healthcheck_response`.
const SERVING_STATUSES: [ServingStatus; 4] = [
    ServingStatus::Unknown,
    ServingStatus::Serving,
    ServingStatus::NotServing,
    ServingStatus::ServiceUnknown,
];

/// The step of a run, for timeouts and `check`'s details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolve,
    Connect,
    Tls,
    Http2,
    Check,
}

impl Step {
    /// What the probe was doing, for messages.
    fn activity(self) -> &'static str {
        match self {
            Step::Resolve => "resolving the target",
            Step::Connect => "connecting",
            Step::Tls => "in the TLS handshake",
            Step::Http2 => "in the HTTP/2 handshake",
            Step::Check => "waiting for the answer to Health/Check",
        }
    }
}

/// Why a run got no `SERVING` answer, before the answer itself is judged.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The name could not be resolved, or the TCP connection failed.
    #[error("{0}")]
    Network(ClientError),
    /// The target resolved, but to no address a probe may use.
    #[error(
        "resolve {host}: no {family} address{}",
        if *.fallback { "" } else { " (ip_protocol_fallback = false)" }
    )]
    NoAddress {
        host: String,
        family: &'static str,
        fallback: bool,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {server}: {message}")]
    Tls { server: String, message: String },
    /// The connection did not carry HTTP/2 (or broke off).
    #[error("HTTP/2 with {addr}: {message}: the target may not serve gRPC on this port, or may need tls = true")]
    Http2 { addr: SocketAddr, message: String },
    /// The server answered the call with an error status.
    #[error("{}", status_reason(*.code, .message, .service))]
    Status {
        code: Code,
        message: String,
        service: String,
    },
    /// The probe's timeout ran out.
    #[error("no answer within {timeout:?}, {}: raise the probe's timeout or find out why the server is slow", .step.activity())]
    Timeout { step: Step, timeout: Duration },
}

impl Failure {
    /// A short status word for logs and `check`.
    fn kind(&self) -> String {
        match self {
            Failure::Network(e) => e.kind().to_string(),
            Failure::NoAddress { .. } => "resolve".into(),
            Failure::Tls { .. } => "tls".into(),
            Failure::Http2 { .. } => "http2".into(),
            Failure::Status { code, .. } => code_name(*code).into(),
            Failure::Timeout { .. } => "timeout".into(),
        }
    }

    /// The gRPC status code the call ended with, as a gRPC client reports it: the server's
    /// own, `DEADLINE_EXCEEDED` when time ran out, `UNAVAILABLE` when no connection carried
    /// the call; `None` when no call was attempted (the name did not resolve).
    fn code(&self) -> Option<Code> {
        match self {
            Failure::Status { code, .. } => Some(*code),
            Failure::Timeout {
                step: Step::Resolve,
                ..
            }
            | Failure::NoAddress { .. } => None,
            Failure::Network(ClientError::Resolve { .. } | ClientError::NoAddress { .. }) => None,
            Failure::Timeout { .. } => Some(Code::DeadlineExceeded),
            Failure::Network(_) | Failure::Tls { .. } | Failure::Http2 { .. } => {
                Some(Code::Unavailable)
            }
        }
    }
}

/// What one run found, before it is judged and recorded.
#[derive(Debug)]
struct Outcome {
    duration: Duration,
    resolve: Duration,
    check: Duration,
    /// The address connected to (or tried).
    addr: Option<SocketAddr>,
    /// What the TLS handshake established, when it completed.
    tls: Option<TlsInfo>,
    /// The serving status the server answered (its raw value), or why there is none.
    answer: Result<i32, Failure>,
}

/// Whether a run succeeded, and what to say about it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    success: bool,
    status: String,
    reason: Option<String>,
}

/// A gRPC health-check probe.
pub struct GrpcProbe {
    settings: GrpcProbeSettings,
    /// The TLS client, when `tls = true`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Request metadata, credentials marked sensitive.
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// `probe`, `instance` and the extra labels, in that order.
    labels: Vec<(String, String)>,
    /// The `version` of the `probe_tls_version_info` series last recorded, to remove it when
    /// the version changes or TLS goes away.
    tls_version: Option<&'static str>,
}

impl std::fmt::Debug for GrpcProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcProbe")
            .field("name", &self.settings.name)
            .field("target", &self.settings.target_text)
            .field("service", &self.settings.service)
            .finish_non_exhaustive()
    }
}

impl GrpcProbe {
    /// Builds the probe; fails when its TLS options cannot be loaded.
    pub fn new(settings: GrpcProbeSettings) -> Result<Self, ProbeError> {
        let tls_error = |source| ProbeError::Tls {
            probe: settings.name.clone(),
            source,
        };
        let tls = match &settings.tls {
            Some(t) => {
                let config = crate::tls::client_config(t, &[b"h2"]).map_err(tls_error)?;
                let name = t
                    .server_name
                    .clone()
                    .unwrap_or_else(|| settings.target.host.clone());
                let name = ServerName::try_from(name.clone()).map_err(|_| {
                    tls_error(crate::tls::TlsError::Rustls(rustls::Error::General(
                        format!(
                            "{name:?} is not a valid TLS server name; set tls_config.server_name"
                        ),
                    )))
                })?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        let mut metadata = Vec::new();
        for (name, value) in &settings.metadata {
            // Validated with the configuration; a pair that still does not fit is reported
            // rather than dropped without a word.
            let key = AsciiMetadataKey::from_bytes(name.as_bytes());
            let parsed = AsciiMetadataValue::try_from(value.expose());
            let (Ok(key), Ok(mut parsed)) = (key, parsed) else {
                return Err(ProbeError::Credentials {
                    probe: settings.name.clone(),
                    message: format!("metadata {name:?} is not valid gRPC metadata"),
                });
            };
            parsed.set_sensitive(crate::secret::is_credential_header(name));
            metadata.push((key, parsed));
        }
        let labels = super::series_labels(
            &settings.name,
            || settings.target_text.clone(),
            &settings.labels,
        );
        Ok(GrpcProbe {
            settings,
            tls,
            metadata,
            labels,
            tls_version: None,
        })
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once: resolve, connect and one health check within the probe's timeout,
    /// recorded into `registry`.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        let mut outcome = Outcome {
            duration: Duration::ZERO,
            resolve: Duration::ZERO,
            check: Duration::ZERO,
            addr: None,
            tls: None,
            answer: Ok(0),
        };
        outcome.answer = self.exchange(deadline, &mut outcome).await;
        outcome.duration = started.elapsed();
        let verdict = judge(&outcome.answer, &self.settings.service);
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

    /// Resolves, then checks; fills in the timings and facts of `o` as it goes.
    async fn exchange(&self, deadline: Instant, o: &mut Outcome) -> Result<i32, Failure> {
        let target = &self.settings.target;
        let resolving = Instant::now();
        let addrs = self.within(deadline, Step::Resolve, resolve(target)).await;
        o.resolve = resolving.elapsed();
        let ip = self
            .settings
            .preferred_ip_protocol
            .choose(&addrs??, self.settings.ip_protocol_fallback)
            .map(|(ip, _fell_back)| ip)
            .ok_or_else(|| Failure::NoAddress {
                host: target.host.clone(),
                family: self.settings.preferred_ip_protocol.as_str(),
                fallback: self.settings.ip_protocol_fallback,
            })?;
        let addr = SocketAddr::new(ip, target.port);
        o.addr = Some(addr);
        let checking = Instant::now();
        let answer = self.connect_and_check(deadline, addr, o).await;
        o.check = checking.elapsed();
        answer
    }

    async fn connect_and_check(
        &self,
        deadline: Instant,
        addr: SocketAddr,
        o: &mut Outcome,
    ) -> Result<i32, Failure> {
        let tcp = self
            .within(deadline, Step::Connect, TcpStream::connect(addr))
            .await?
            .map_err(|source| Failure::Network(ClientError::Connect { addr, source }))?;
        // The request is small and written at once; Nagle would only delay it.
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return self.check(deadline, addr, "http", tcp).await;
        };
        let stream = self
            .within(deadline, Step::Tls, connector.connect(name.clone(), tcp))
            .await?
            .map_err(|e| Failure::Tls {
                server: name.to_str().into_owned(),
                message: tls_reason(&e),
            })?;
        o.tls = Some(crate::http_client::tls_info(&stream));
        self.check(deadline, addr, "https", stream).await
    }

    /// Speaks HTTP/2 on `stream` and makes the one call.
    async fn check<S>(
        &self,
        deadline: Instant,
        addr: SocketAddr,
        scheme: &str,
        stream: S,
    ) -> Result<i32, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http2 = |e: hyper::Error| Failure::Http2 {
            addr,
            message: error_chain(&e),
        };
        let (sender, connection) = self
            .within(
                deadline,
                Step::Http2,
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(stream)),
            )
            .await?
            .map_err(http2)?;
        // Dropping the guard at the end of the run closes the connection.
        let _connection = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let origin = http::Uri::builder()
            .scheme(scheme)
            .authority(self.settings.target.authority())
            .path_and_query("/")
            .build()
            .map_err(|e| Failure::Http2 {
                addr,
                message: format!("target is not a valid HTTP/2 authority: {e}"),
            })?;
        let mut client = HealthClient::with_origin(Http2Service(sender), origin);
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.settings.service.clone(),
        });
        // The server learns the deadline too (`grpc-timeout`), as from any gRPC client.
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        for (key, value) in &self.metadata {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let answer = self
            .within(deadline, Step::Check, client.check(request))
            .await?;
        match answer {
            Ok(response) => Ok(response.into_inner().status),
            // A status with a source was made by the client from a transport error; one
            // without came from the server.
            Err(status) => match std::error::Error::source(&status) {
                Some(source) => Err(Failure::Http2 {
                    addr,
                    message: source.to_string(),
                }),
                None => Err(Failure::Status {
                    code: status.code(),
                    message: status.message().to_string(),
                    service: self.settings.service.clone(),
                }),
            },
        }
    }

    /// Runs `step` until the run's deadline.
    async fn within<T>(
        &self,
        deadline: Instant,
        step: Step,
        future: impl Future<Output = T>,
    ) -> Result<T, Failure> {
        tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| Failure::Timeout {
                step,
                timeout: self.settings.timeout,
            })
    }

    fn record(
        &mut self,
        registry: &mut Registry,
        outcome: &Outcome,
        verdict: &Verdict,
    ) -> Result<(), LabelError> {
        for (name, help) in FAMILIES {
            registry.describe(name, MetricType::Gauge, help);
        }
        let base: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        registry.gauge_set(PROBE_SUCCESS, &base, bool_value(verdict.success))?;
        registry.gauge_set(PROBE_DURATION, &base, outcome.duration.as_secs_f64())?;
        for (phase, d) in [("resolve", outcome.resolve), ("check", outcome.check)] {
            registry.gauge_set(
                GRPC_DURATION,
                &with(&base, &[("phase", phase)]),
                d.as_secs_f64(),
            )?;
        }
        registry.gauge_set(DNS_LOOKUP_TIME, &base, outcome.resolve.as_secs_f64())?;
        let answered = outcome.answer.as_ref().ok().copied();
        for status in SERVING_STATUSES {
            let value = bool_value(answered == Some(status as i32));
            registry.gauge_set(
                GRPC_HEALTHCHECK_RESPONSE,
                &with(&base, &[("serving_status", status.as_str_name())]),
                value,
            )?;
        }
        let code = match &outcome.answer {
            Ok(_) => Some(Code::Ok),
            Err(f) => f.code(),
        };
        registry.gauge_set(
            GRPC_STATUS_CODE,
            &base,
            code.map_or(0.0, |c| f64::from(c as i32)),
        )?;
        registry.gauge_set(GRPC_SSL, &base, bool_value(outcome.tls.is_some()))?;
        let ip = outcome.addr.map(|a| a.ip());
        registry.gauge_set(
            IP_PROTOCOL,
            &base,
            match ip {
                Some(IpAddr::V4(_)) => 4.0,
                Some(IpAddr::V6(_)) => 6.0,
                None => 0.0,
            },
        )?;
        registry.gauge_set(IP_ADDR_HASH, &base, ip.map_or(0.0, ip_hash))?;

        let tls = outcome.tls.as_ref();
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
        Ok(())
    }
}

/// The target's addresses: the literal itself, or what the system resolver answers.
async fn resolve(target: &GrpcTarget) -> Result<Vec<IpAddr>, Failure> {
    if let Some(ip) = target.ip() {
        return Ok(vec![ip]);
    }
    let addrs = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|source| {
            Failure::Network(ClientError::Resolve {
                host: target.host.clone(),
                source,
            })
        })?;
    Ok(addrs.map(|a| a.ip()).collect())
}

/// Decides success: only a `SERVING` answer is one.
fn judge(answer: &Result<i32, Failure>, service: &str) -> Verdict {
    let status = match answer {
        Err(f) => {
            return Verdict {
                success: false,
                status: f.kind(),
                reason: Some(f.to_string()),
            }
        }
        Ok(raw) => *raw,
    };
    let about = service_words(service);
    let fail = |status: &str, reason: String| Verdict {
        success: false,
        status: status.to_string(),
        reason: Some(reason),
    };
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Verdict {
            success: true,
            status: "SERVING".into(),
            reason: None,
        },
        Ok(ServingStatus::NotServing) => fail(
            "NOT_SERVING",
            format!("the server reports {about} NOT_SERVING"),
        ),
        Ok(ServingStatus::ServiceUnknown) => fail(
            "SERVICE_UNKNOWN",
            format!("the server reports {about} SERVICE_UNKNOWN: check the probe's service"),
        ),
        Ok(ServingStatus::Unknown) => fail(
            "UNKNOWN",
            format!("the server reports {about} in status UNKNOWN"),
        ),
        Err(_) => fail(
            "invalid",
            format!(
                "the server answered serving status {status}, which grpc.health.v1 does not define"
            ),
        ),
    }
}

/// "service \"x\"", or "the server" for the empty service name.
fn service_words(service: &str) -> String {
    if service.is_empty() {
        "the server".into()
    } else {
        format!("service {service:?}")
    }
}

/// The reason for an error status the server answered, with what to do about the usual ones.
fn status_reason(code: Code, message: &str, service: &str) -> String {
    let name = code_name(code);
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    };
    let advice = match code {
        Code::NotFound => format!(
            ": the server has no health status for {}; check the probe's service",
            service_words(service)
        ),
        Code::Unimplemented => {
            ": the server does not offer the grpc.health.v1.Health service".to_string()
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            ": check the credentials in the probe's metadata".to_string()
        }
        _ => String::new(),
    };
    format!("Health/Check failed with status {name}{said}{advice}")
}

/// The code's name as gRPC spells it (`NOT_FOUND`).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Why the TLS handshake failed, naming the `tls_config` key that fixes the usual causes.
fn tls_reason(e: &io::Error) -> String {
    let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!(
            "{e}: the target may not speak TLS on this port (set tls = false for plaintext)"
        );
    };
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = rustls_error else {
        return rustls_error.to_string();
    };
    let advice = match cert {
        C::UnknownIssuer | C::BadSignature => {
            "set tls_config.ca_file to the CA that signed the server's certificate"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "set tls_config.server_name to a name the certificate is issued for"
        }
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired: renew it",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet: check its dates and this host's clock"
        }
        _ => "check the server's certificate chain",
    };
    format!("server certificate refused ({cert:?}): {advice}")
}

/// An error and its causes, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Facts for `check` and logs.
fn details(outcome: &Outcome) -> Vec<(String, Detail)> {
    let mut out: Vec<(String, Detail)> = Vec::new();
    if let Some(addr) = outcome.addr {
        out.push(("address".into(), addr.to_string().into()));
    }
    out.push(("resolve_seconds".into(), outcome.resolve.into()));
    if !outcome.check.is_zero() {
        out.push(("check_seconds".into(), outcome.check.into()));
    }
    if let Some(tls) = &outcome.tls {
        out.push(("tls_version".into(), tls.version.into()));
        if let Some(exp) = tls.earliest_cert_expiry {
            out.push(("cert_not_after".into(), format_unix(exp).into()));
        }
    }
    out
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

/// The task that drives the HTTP/2 connection; aborted on drop, so a run never leaves a
/// connection behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// tonic's client calls a request/response service; this one sends on our HTTP/2 connection.
#[derive(Clone)]
struct Http2Service(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Http2Service {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_is_a_success() {
        let ok = judge(&Ok(ServingStatus::Serving as i32), "");
        assert_eq!(
            ok,
            Verdict {
                success: true,
                status: "SERVING".into(),
                reason: None
            }
        );
        let not = judge(&Ok(ServingStatus::NotServing as i32), "shop.Cart");
        assert!(!not.success);
        assert_eq!(not.status, "NOT_SERVING");
        assert_eq!(
            not.reason.as_deref(),
            Some("the server reports service \"shop.Cart\" NOT_SERVING")
        );
        let unknown = judge(&Ok(ServingStatus::Unknown as i32), "");
        assert_eq!(unknown.status, "UNKNOWN");
        assert!(unknown.reason.is_some_and(|r| r.contains("the server")));
        assert_eq!(
            judge(&Ok(ServingStatus::ServiceUnknown as i32), "x").status,
            "SERVICE_UNKNOWN"
        );
        let odd = judge(&Ok(9), "");
        assert!(!odd.success);
        assert!(odd.reason.is_some_and(|r| r.contains('9')));
    }

    #[test]
    fn failures_name_the_status_and_what_to_do() {
        let not_found = Failure::Status {
            code: Code::NotFound,
            message: "unknown service".into(),
            service: "shop.Cart".into(),
        };
        let v = judge(&Err(not_found), "shop.Cart");
        assert_eq!(v.status, "NOT_FOUND");
        assert_eq!(
            v.reason.as_deref(),
            Some(
                "Health/Check failed with status NOT_FOUND (unknown service): the server has \
                 no health status for service \"shop.Cart\"; check the probe's service"
            )
        );
        let timeout = Failure::Timeout {
            step: Step::Check,
            timeout: Duration::from_secs(2),
        };
        assert_eq!(timeout.code(), Some(Code::DeadlineExceeded));
        let v = judge(&Err(timeout), "");
        assert_eq!(v.status, "timeout");
        assert!(v
            .reason
            .is_some_and(|r| r.contains("2s") && r.contains("Health/Check")));
        let no_addr = Failure::NoAddress {
            host: "h".into(),
            family: "ip6",
            fallback: false,
        };
        assert_eq!(no_addr.code(), None);
        assert_eq!(
            no_addr.to_string(),
            "resolve h: no ip6 address (ip_protocol_fallback = false)"
        );
        let refused = Failure::Network(ClientError::Connect {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        });
        assert_eq!(refused.code(), Some(Code::Unavailable));
        assert_eq!(refused.kind(), "connect");
        // A name that does not resolve: no call was made, so no status code either.
        let unresolved = Failure::Network(ClientError::Resolve {
            host: "nowhere.invalid".into(),
            source: io::Error::other("no such host"),
        });
        assert_eq!(unresolved.code(), None);
        assert_eq!(unresolved.kind(), "resolve");
    }

    #[test]
    fn every_code_has_its_grpc_name() {
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        for status in SERVING_STATUSES {
            assert!(!status.as_str_name().is_empty());
        }
    }
}
