//! TCP probe (`kind = "tcp"`): resolve the target with the configured address family
//! preference, connect (from `source_ip_address` if set), speak TLS when asked, and run the
//! `query_response` dialogue, all under the probe's timeout; recorded as the blackbox
//! exporter's `tcp` prober records it.
//!
//! A step reads lines until one matches its `expect` pattern, writes its `send` text plus a
//! newline (with `${1}`-style groups of the match filled in), then upgrades the connection to
//! TLS when it says `starttls`. Lines end at `\n` (a `\r` before it is dropped) and may be at
//! most [`MAX_LINE_BYTES`] long: a peer that sends more without a newline fails the step, and
//! the probe never holds more than that plus one read.
//!
//! Every series carries `probe`, `instance` (the configured target) and the probe's labels:
//! `probe_success`, `probe_duration_seconds`, `probe_dns_lookup_time_seconds`,
//! `probe_ip_protocol` (0 when resolution failed), `probe_ip_addr_hash`,
//! `probe_failed_due_to_regex`, `probe_failed_due_to_bytes` (always 0); after a TLS handshake also `probe_ssl_earliest_cert_expiry`,
//! `probe_ssl_last_chain_expiry_timestamp_seconds` and `probe_tls_version_info{version}`
//! (removed again when a run has no TLS facts).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::address::ip_hash;
use super::http::{
    IP_PROTOCOL, PROBE_DURATION, PROBE_SUCCESS, SSL_EARLIEST_CERT_EXPIRY, TLS_VERSION_INFO,
};
use super::{Detail, ProbeError, ProbeReport};
use crate::config::{ConfigDuration, IpProtocol, TcpProbeSettings};
use crate::http_client::cert::format_unix;
use crate::http_client::{tls_info, Host, TlsInfo};
use crate::series::{LabelError, MetricType, Registry};

/// Seconds spent resolving the target's name.
pub const DNS_LOOKUP_TIME: &str = "probe_dns_lookup_time_seconds";
/// FNV-1a hash of the address connected to, to see when it changes; 0 without one.
pub const IP_ADDR_HASH: &str = "probe_ip_addr_hash";
/// 1 when the peer closed the connection before sending a line that matched `expect`.
pub const FAILED_DUE_TO_REGEX: &str = "probe_failed_due_to_regex";
/// Always 0: the blackbox exporter's `expect_bytes` steps have no counterpart here; recorded
/// so that queries written for the blackbox exporter find the series.
pub const FAILED_DUE_TO_BYTES: &str = "probe_failed_due_to_bytes";
/// Earliest certificate `notAfter` of the chain the server presented, Unix seconds.
pub const SSL_LAST_CHAIN_EXPIRY: &str = "probe_ssl_last_chain_expiry_timestamp_seconds";

/// Longest line, without its line ending, that an `expect` step reads (as the blackbox
/// exporter's line scanner allows): more without a newline fails the step.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Bytes asked for per read: the probe holds at most [`MAX_LINE_BYTES`] plus this much.
const READ_CHUNK: usize = 8 * 1024;

/// The longest stretch of a received line shown in `check` and reasons.
const SHOWN_LINE_CHARS: usize = 120;

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
        DNS_LOOKUP_TIME,
        MetricType::Gauge,
        "Returns the time taken for probe dns lookup in seconds",
    ),
    (
        IP_PROTOCOL,
        MetricType::Gauge,
        "Specifies whether probe ip protocol is IP4 or IP6",
    ),
    (
        IP_ADDR_HASH,
        MetricType::Gauge,
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
    ),
    (
        FAILED_DUE_TO_REGEX,
        MetricType::Gauge,
        "Indicates if probe failed due to regex",
    ),
    (
        FAILED_DUE_TO_BYTES,
        MetricType::Gauge,
        "Indicates if probe failed due to bytes",
    ),
    (
        SSL_EARLIEST_CERT_EXPIRY,
        MetricType::Gauge,
        "Returns earliest SSL cert expiry date",
    ),
    (
        SSL_LAST_CHAIN_EXPIRY,
        MetricType::Gauge,
        "Returns last SSL chain expiry in unixtime",
    ),
    (
        TLS_VERSION_INFO,
        MetricType::Gauge,
        "Returns the TLS version used, or NaN when unknown",
    ),
];

/// A TCP probe.
pub struct TcpProbe {
    settings: TcpProbeSettings,
    /// Built once when the probe uses TLS (`tls` or a `starttls` step).
    connector: Option<TlsConnector>,
    /// `probe`, `instance` and the extra labels, in that order.
    labels: Vec<(String, String)>,
    /// The `version` of the `probe_tls_version_info` series last recorded.
    tls_version: Option<&'static str>,
}

impl fmt::Debug for TcpProbe {
    // The steps' `send` texts may hold credentials (an AUTH line): they are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpProbe")
            .field("name", &self.settings.name)
            .field("target", &self.settings.target)
            .finish_non_exhaustive()
    }
}

/// Where a run is, so that a timeout can say what it interrupted.
#[derive(Debug, Clone, Default, PartialEq)]
enum Stage {
    #[default]
    Resolve,
    Connect(SocketAddr),
    Tls,
    Expect {
        index: usize,
        pattern: String,
    },
    Send {
        index: usize,
    },
    StartTls {
        index: usize,
    },
}

/// What a run found, filled in as it goes so that it is complete after a failure too.
#[derive(Debug, Default)]
struct Progress {
    stage: Stage,
    dns_lookup: Duration,
    /// The address chosen, and whether it came from the fallback family.
    addr: Option<(SocketAddr, bool)>,
    /// What the last TLS handshake established.
    tls: Option<TlsInfo>,
    failed_due_to_regex: bool,
    /// The last line received, cut short for display.
    last_line: Option<String>,
    steps_done: usize,
}

/// Why a step of the dialogue failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepProblem {
    /// The connection ended before a line matched.
    #[error("expected /{pattern}/ but the peer closed the connection")]
    Closed {
        /// The `expect` pattern.
        pattern: String,
    },
    /// A line ran past [`MAX_LINE_BYTES`].
    #[error("expected /{pattern}/ but the peer sent a line longer than {limit} bytes")]
    LineTooLong {
        /// The `expect` pattern.
        pattern: String,
        /// The limit.
        limit: usize,
    },
    /// Reading failed.
    #[error("expected /{pattern}/ but reading failed: {source}")]
    Read {
        /// The `expect` pattern.
        pattern: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the `send` text failed.
    #[error("sending failed: {0}")]
    Write(io::Error),
    /// The STARTTLS handshake failed.
    #[error("STARTTLS handshake with {server}: {source}")]
    StartTls {
        /// The name the certificate was checked against.
        server: String,
        /// What went wrong.
        source: io::Error,
    },
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TcpFailure {
    /// The name did not resolve.
    #[error("resolving {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No address of an acceptable family.
    #[error("{host} has no {} address{}", family(*.preferred), if *.fallback { "" } else { " (ip_protocol_fallback = false)" })]
    NoAddress {
        /// The host.
        host: String,
        /// The family preferred.
        preferred: IpProtocol,
        /// Whether the other family was acceptable.
        fallback: bool,
    },
    /// `source_ip_address` is of the other family than the address chosen.
    #[error("source_ip_address {source_ip} cannot reach {addr}: not the same IP version")]
    SourceFamily {
        /// The configured local address.
        source_ip: IpAddr,
        /// The address chosen.
        addr: SocketAddr,
    },
    /// The local address could not be used.
    #[error("binding to source_ip_address {source_ip}: {source}")]
    Bind {
        /// The configured local address.
        source_ip: IpAddr,
        /// The error.
        source: io::Error,
    },
    /// The TCP connection failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The error (refused, unreachable …).
        source: io::Error,
    },
    /// The TLS handshake (`tls = true`) failed.
    #[error("TLS handshake with {server}: {source}")]
    Tls {
        /// The name the certificate was checked against.
        server: String,
        /// What went wrong.
        source: io::Error,
    },
    /// A `query_response` step failed.
    #[error("query_response[{index}]: {problem}")]
    Step {
        /// The step's position.
        index: usize,
        /// What went wrong.
        problem: StepProblem,
    },
    /// The probe's timeout ran out.
    #[error("{}", timeout_message(.stage, *.timeout))]
    Timeout {
        /// What the run was doing.
        stage: Box<StageText>,
        /// The timeout.
        timeout: Duration,
    },
}

/// What a run was doing when its timeout ran out, in words (`index`: the step, if any).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageText {
    /// The step's position, when the run was in one.
    pub(crate) index: Option<usize>,
    /// What it was doing, e.g. `waiting for a line matching /^OK/`.
    pub(crate) doing: String,
}

fn timeout_message(stage: &StageText, timeout: Duration) -> String {
    let t = ConfigDuration(timeout);
    match stage.index {
        Some(i) => format!("query_response[{i}]: timed out after {t} {}", stage.doing),
        None => format!("timed out after {t} {}", stage.doing),
    }
}

fn family(p: IpProtocol) -> &'static str {
    match p {
        IpProtocol::Ip4 => "IPv4",
        IpProtocol::Ip6 => "IPv6",
    }
}

impl TcpFailure {
    /// Short status for `check`: what kind of failure.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TcpFailure::Resolve { .. } | TcpFailure::NoAddress { .. } => "resolve",
            TcpFailure::SourceFamily { .. } | TcpFailure::Bind { .. } => "source_address",
            TcpFailure::Connect { .. } => "connect",
            TcpFailure::Tls { .. } => "tls",
            TcpFailure::Timeout { .. } => "timeout",
            TcpFailure::Step { problem, .. } => match problem {
                StepProblem::Closed { .. } => "no_match",
                StepProblem::LineTooLong { .. } => "line_too_long",
                StepProblem::Read { .. } => "read",
                StepProblem::Write(_) => "write",
                StepProblem::StartTls { .. } => "starttls",
            },
        }
    }
}

impl Stage {
    fn describe(&self, host: &str, server: &str) -> StageText {
        let (index, doing) = match self {
            Stage::Resolve => (None, format!("resolving {host}")),
            Stage::Connect(addr) => (None, format!("connecting to {addr}")),
            Stage::Tls => (None, format!("in the TLS handshake with {server}")),
            Stage::Expect { index, pattern } => (
                Some(*index),
                format!("waiting for a line matching /{pattern}/"),
            ),
            Stage::Send { index } => (Some(*index), "sending".to_string()),
            Stage::StartTls { index } => (
                Some(*index),
                format!("in the STARTTLS handshake with {server}"),
            ),
        };
        StageText { index, doing }
    }
}

/// The connection: plain until a TLS handshake, then TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

impl TcpProbe {
    /// Builds the probe; fails when its TLS options cannot be loaded.
    pub fn new(settings: TcpProbeSettings) -> Result<Self, ProbeError> {
        let uses_tls = settings.tls || settings.query_response.iter().any(|s| s.starttls);
        let connector = if uses_tls {
            let config =
                crate::tls::client_config(&settings.tls_config, &[]).map_err(|source| {
                    ProbeError::Tls {
                        probe: settings.name.clone(),
                        source,
                    }
                })?;
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        let labels =
            super::series_labels(&settings.name, || settings.target.clone(), &settings.labels);
        Ok(TcpProbe {
            settings,
            connector,
            labels,
            tls_version: None,
        })
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once within the probe's timeout, recording into `registry`.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let started = Instant::now();
        let mut progress = Progress::default();
        let timeout = self.settings.timeout;
        let result = match tokio::time::timeout(timeout, self.dialogue(&mut progress)).await {
            Ok(result) => result,
            Err(_) => Err(TcpFailure::Timeout {
                stage: Box::new(
                    progress
                        .stage
                        .describe(&host_text(&self.settings.host), &self.server_name()),
                ),
                timeout,
            }),
        };
        let duration = started.elapsed();
        if let Err(e) = self.record(registry, &progress, result.is_ok(), duration) {
            // Labels were validated with the configuration; this is a programming error,
            // reported instead of panicking in the middle of a run.
            tracing::warn!(probe = %self.settings.name, error = %e, "could not record probe series");
        }
        let (status, reason) = match &result {
            Ok(()) => ("ok".to_string(), None),
            Err(e) => (e.kind().to_string(), Some(e.to_string())),
        };
        ProbeReport {
            success: result.is_ok(),
            duration,
            status,
            reason,
            details: details(&progress, self.settings.query_response.len()),
        }
    }

    /// The name a certificate is checked against: `tls_config.server_name`, else the host.
    fn server_name(&self) -> String {
        self.settings
            .tls_config
            .server_name
            .clone()
            .unwrap_or_else(|| host_text(&self.settings.host))
    }

    /// The TLS handshake over `tcp`; `Err` holds the server name and the error.
    async fn handshake(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, (String, io::Error)> {
        let server = self.server_name();
        let Some(connector) = &self.connector else {
            // `new` builds a connector whenever TLS is configured; not having one here is a
            // programming error, reported as a failed handshake rather than a panic.
            return Err((server, io::Error::other("no TLS configuration")));
        };
        let name = match ServerName::try_from(server.clone()) {
            Ok(name) => name,
            Err(e) => return Err((server, io::Error::new(io::ErrorKind::InvalidInput, e))),
        };
        connector.connect(name, tcp).await.map_err(|e| (server, e))
    }

    /// Resolution, connection, TLS and the steps; `p` keeps what was found so far.
    async fn dialogue(&self, p: &mut Progress) -> Result<(), TcpFailure> {
        let s = &self.settings;
        p.stage = Stage::Resolve;
        let resolving = Instant::now();
        let addrs = resolve(&s.host, s.port).await;
        p.dns_lookup = resolving.elapsed();
        let addrs = addrs?;
        if addrs.is_empty() {
            return Err(TcpFailure::Resolve {
                host: host_text(&s.host),
                source: io::Error::new(io::ErrorKind::NotFound, "the name has no address"),
            });
        }
        let (ip, fell_back) = s
            .preferred_ip_protocol
            .choose(&addrs, s.ip_protocol_fallback)
            .ok_or_else(|| TcpFailure::NoAddress {
                host: host_text(&s.host),
                preferred: s.preferred_ip_protocol,
                fallback: s.ip_protocol_fallback,
            })?;
        let addr = SocketAddr::new(ip, s.port);
        p.addr = Some((addr, fell_back));

        p.stage = Stage::Connect(addr);
        let tcp = connect(addr, s.source_ip_address).await?;
        let mut conn = if s.tls {
            p.stage = Stage::Tls;
            let tls = self
                .handshake(tcp)
                .await
                .map_err(|(server, source)| TcpFailure::Tls { server, source })?;
            p.tls = Some(tls_info(&tls));
            Conn::Tls(Box::new(tls))
        } else {
            Conn::Plain(tcp)
        };

        let mut lines = LineBuffer::new(MAX_LINE_BYTES);
        let mut chunk = vec![0u8; READ_CHUNK];
        for (index, step) in s.query_response.iter().enumerate() {
            let fail = |problem| TcpFailure::Step { index, problem };
            let mut send = step.send.as_ref().map(|t| t.as_bytes().to_vec());
            if let Some(re) = &step.expect {
                let pattern = re.as_str().to_string();
                p.stage = Stage::Expect {
                    index,
                    pattern: pattern.clone(),
                };
                loop {
                    let line = match read_line(&mut conn, &mut lines, &mut chunk).await {
                        Ok(Some(line)) => line,
                        Ok(None) => {
                            p.failed_due_to_regex = true;
                            return Err(fail(StepProblem::Closed { pattern }));
                        }
                        Err(ReadError::TooLong) => {
                            return Err(fail(StepProblem::LineTooLong {
                                pattern,
                                limit: MAX_LINE_BYTES,
                            }))
                        }
                        Err(ReadError::Io(source)) => {
                            return Err(fail(StepProblem::Read { pattern, source }))
                        }
                    };
                    p.last_line = Some(show_line(&line));
                    if let Some(caps) = re.captures(&line) {
                        if let Some(template) = &step.send {
                            send = Some(expand(&caps, template));
                        }
                        break;
                    }
                }
            }
            // As in the blackbox exporter, an empty text (after expansion) sends nothing.
            if let Some(mut bytes) = send.filter(|b| !b.is_empty()) {
                p.stage = Stage::Send { index };
                bytes.push(b'\n');
                conn.write_all(&bytes)
                    .await
                    .map_err(|e| fail(StepProblem::Write(e)))?;
            }
            if step.starttls {
                p.stage = Stage::StartTls { index };
                let tcp = match conn {
                    Conn::Plain(tcp) => tcp,
                    // Validation refuses a second handshake; reported, not panicked on.
                    Conn::Tls(_) => {
                        return Err(fail(StepProblem::StartTls {
                            server: self.server_name(),
                            source: io::Error::other("the connection is TLS already"),
                        }))
                    }
                };
                let tls = self
                    .handshake(tcp)
                    .await
                    .map_err(|(server, source)| fail(StepProblem::StartTls { server, source }))?;
                p.tls = Some(tls_info(&tls));
                conn = Conn::Tls(Box::new(tls));
                // Bytes that came before the handshake are not protected by it; reading them
                // as if they were is how STARTTLS command injection works.
                lines.clear();
            }
            p.steps_done = index + 1;
        }
        Ok(())
    }

    fn record(
        &mut self,
        registry: &mut Registry,
        p: &Progress,
        success: bool,
        duration: Duration,
    ) -> Result<(), LabelError> {
        for (name, kind, help) in FAMILIES {
            registry.describe(name, *kind, help);
        }
        let base: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        registry.gauge_set(PROBE_SUCCESS, &base, if success { 1.0 } else { 0.0 })?;
        registry.gauge_set(PROBE_DURATION, &base, duration.as_secs_f64())?;
        registry.gauge_set(DNS_LOOKUP_TIME, &base, p.dns_lookup.as_secs_f64())?;
        let ip = p.addr.map(|(a, _)| a.ip());
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
        registry.gauge_set(
            FAILED_DUE_TO_REGEX,
            &base,
            if p.failed_due_to_regex { 1.0 } else { 0.0 },
        )?;
        registry.gauge_set(FAILED_DUE_TO_BYTES, &base, 0.0)?;
        match p.tls.as_ref().and_then(|t| t.earliest_cert_expiry) {
            Some(expiry) => {
                registry.gauge_set(SSL_EARLIEST_CERT_EXPIRY, &base, expiry as f64)?;
                registry.gauge_set(SSL_LAST_CHAIN_EXPIRY, &base, expiry as f64)?;
            }
            None => {
                registry.remove(SSL_EARLIEST_CERT_EXPIRY, &base);
                registry.remove(SSL_LAST_CHAIN_EXPIRY, &base);
            }
        }
        let version = p.tls.as_ref().map(|t| t.version);
        if let Some(old) = self.tls_version.filter(|old| Some(*old) != version) {
            let mut labels = base.clone();
            labels.push(("version", old));
            registry.remove(TLS_VERSION_INFO, &labels);
        }
        if let Some(v) = version {
            let mut labels = base.clone();
            labels.push(("version", v));
            registry.gauge_set(TLS_VERSION_INFO, &labels, 1.0)?;
        }
        self.tls_version = version;
        Ok(())
    }
}

/// The target's addresses, in resolver order.
async fn resolve(host: &Host, port: u16) -> Result<Vec<IpAddr>, TcpFailure> {
    match host {
        Host::Ip(ip) => Ok(vec![*ip]),
        Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|source| TcpFailure::Resolve {
                host: name.clone(),
                source,
            }),
    }
}

/// Connects to `addr`, from `source_ip` when set.
async fn connect(addr: SocketAddr, source_ip: Option<IpAddr>) -> Result<TcpStream, TcpFailure> {
    let connect_err = |source| TcpFailure::Connect { addr, source };
    let tcp = match source_ip {
        None => TcpStream::connect(addr).await.map_err(connect_err)?,
        Some(source_ip) => {
            if source_ip.is_ipv4() != addr.is_ipv4() {
                return Err(TcpFailure::SourceFamily { source_ip, addr });
            }
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(connect_err)?;
            socket
                .bind(SocketAddr::new(source_ip, 0))
                .map_err(|source| TcpFailure::Bind { source_ip, source })?;
            socket.connect(addr).await.map_err(connect_err)?
        }
    };
    // Lines are small and written whole; Nagle would only delay them.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The `send` template with `expect`'s groups filled in (`$1`, `${1}`, `${name}`; `$$` is `$`).
pub(crate) fn expand(caps: &regex::bytes::Captures<'_>, template: &str) -> Vec<u8> {
    let mut out = Vec::new();
    caps.expand(template.as_bytes(), &mut out);
    out
}

/// A received line for display: lossy UTF-8, control characters escaped, cut short.
fn show_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut shown: String = text.chars().take(SHOWN_LINE_CHARS).collect();
    if text.chars().count() > SHOWN_LINE_CHARS {
        shown.push('…');
    }
    shown.escape_debug().to_string()
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Domain(d) => d.clone(),
    }
}

/// Why no line could be read.
#[derive(Debug)]
enum ReadError {
    TooLong,
    Io(io::Error),
}

/// Reads the next line; `None` when the peer closed the connection with nothing left.
async fn read_line(
    conn: &mut Conn,
    lines: &mut LineBuffer,
    chunk: &mut [u8],
) -> Result<Option<Vec<u8>>, ReadError> {
    loop {
        if let Some(line) = lines.next_line().map_err(|_| ReadError::TooLong)? {
            return Ok(Some(line));
        }
        let n = conn.read(chunk).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(lines.finish());
        }
        lines.push(chunk.get(..n).unwrap_or_default());
    }
}

/// A line longer than the buffer's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Splits received bytes into lines (pure): `\n` ends a line, a `\r` before it is dropped, and
/// a line may be at most `limit` bytes. Holds at most `limit` bytes plus one pushed chunk.
#[derive(Debug)]
pub(crate) struct LineBuffer {
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// How far `buf` is known to hold no newline.
    scanned: usize,
    limit: usize,
}

impl LineBuffer {
    /// An empty buffer for lines of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
        }
    }

    /// Appends received bytes; call only when [`LineBuffer::next_line`] has none.
    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, without its ending; an error once a line exceeds the limit.
    pub(crate) fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        let pending = self.buf.get(self.scanned..).unwrap_or_default();
        match memchr::memchr(b'\n', pending) {
            Some(at) => {
                let end = self.scanned + at;
                let line = self.buf.get(self.start..end).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > self.limit {
                    return Err(LineTooLong);
                }
                let line = line.to_vec();
                self.start = end + 1;
                self.scanned = self.start;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() - self.start > self.limit {
                    Err(LineTooLong)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// At the end of the stream: what is left, as a last line without an ending, if anything.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        let line = (!rest.is_empty()).then(|| rest.to_vec());
        self.clear();
        line
    }

    /// Forgets everything received.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }
}

/// Facts for `check` and logs.
fn details(p: &Progress, steps: usize) -> Vec<(String, Detail)> {
    let mut out: Vec<(String, Detail)> = Vec::new();
    if let Some((addr, fell_back)) = p.addr {
        out.push(("address".into(), addr.to_string().into()));
        if fell_back {
            out.push(("ip_protocol_fallback".into(), Detail::Flag(true)));
        }
    }
    out.push(("dns_lookup_seconds".into(), p.dns_lookup.into()));
    if steps > 0 {
        out.push((
            "steps_completed".into(),
            Detail::Text(format!("{} of {steps}", p.steps_done)),
        ));
    }
    if let Some(line) = &p.last_line {
        out.push(("last_line".into(), line.clone().into()));
    }
    if let Some(tls) = &p.tls {
        out.push(("tls_version".into(), tls.version.into()));
        if let Some(exp) = tls.earliest_cert_expiry {
            out.push(("cert_not_after".into(), format_unix(exp).into()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]], limit: usize) -> Result<Vec<Vec<u8>>, LineTooLong> {
        let mut b = LineBuffer::new(limit);
        let mut out = Vec::new();
        for c in chunks {
            while let Some(l) = b.next_line()? {
                out.push(l);
            }
            b.push(c);
        }
        while let Some(l) = b.next_line()? {
            out.push(l);
        }
        out.extend(b.finish());
        Ok(out)
    }

    #[test]
    fn lines_end_at_newline_and_drop_a_carriage_return() {
        let got = lines_of(&[b"220 mx ESMTP\r\n250-a", b"\r\n250 b\nlast"], 100).unwrap();
        assert_eq!(
            got,
            vec![
                b"220 mx ESMTP".to_vec(),
                b"250-a".to_vec(),
                b"250 b".to_vec(),
                b"last".to_vec()
            ]
        );
        assert_eq!(
            lines_of(&[b"\n\n"], 10).unwrap(),
            vec![Vec::<u8>::new(), Vec::new()]
        );
        assert!(lines_of(&[b""], 10).unwrap().is_empty());
    }

    #[test]
    fn a_line_is_bounded_with_or_without_its_newline() {
        assert_eq!(lines_of(&[b"12345", b"6"], 5), Err(LineTooLong));
        assert_eq!(lines_of(&[b"1234", b"56\n"], 5), Err(LineTooLong));
        assert_eq!(
            lines_of(&[b"12345\r\n"], 5).unwrap(),
            vec![b"12345".to_vec()]
        );
        // Memory stays bounded: a flood fails at the limit, after one more chunk at most.
        let mut b = LineBuffer::new(64);
        let chunk = [b'x'; 16];
        let mut pushed = 0;
        while b.next_line().is_ok() {
            b.push(&chunk);
            pushed += chunk.len();
            assert!(pushed <= 64 + 16);
        }
    }

    #[test]
    fn consumed_lines_are_released_before_more_is_read() {
        let mut b = LineBuffer::new(8);
        for _ in 0..1000 {
            b.push(b"abcdefg\n");
            assert_eq!(b.next_line(), Ok(Some(b"abcdefg".to_vec())));
            assert_eq!(b.next_line(), Ok(None));
        }
        assert!(b.buf.len() <= 8, "{}", b.buf.len());
    }

    #[test]
    fn groups_are_expanded_like_the_blackbox_exporter() {
        let re = regex::bytes::Regex::new(r"^220 (?P<host>\S+) (\w+)").unwrap();
        let caps = re.captures(b"220 mx.example.com ESMTP ready").unwrap();
        assert_eq!(expand(&caps, "EHLO ${1}"), b"EHLO mx.example.com");
        assert_eq!(expand(&caps, "$host/$2"), b"mx.example.com/ESMTP");
        assert_eq!(expand(&caps, "${2}x $$1"), b"ESMTPx $1");
        // An unknown group expands to nothing, as Go's Expand does.
        assert_eq!(expand(&caps, "[${9}]"), b"[]");
    }

    #[test]
    fn failures_say_which_step_and_what() {
        let e = TcpFailure::Step {
            index: 1,
            problem: StepProblem::Closed {
                pattern: "^OK".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "query_response[1]: expected /^OK/ but the peer closed the connection"
        );
        assert_eq!(e.kind(), "no_match");
        let t = TcpFailure::Timeout {
            stage: Box::new(
                Stage::Expect {
                    index: 0,
                    pattern: "^220".into(),
                }
                .describe("mx", "mx"),
            ),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            t.to_string(),
            "query_response[0]: timed out after 5s waiting for a line matching /^220/"
        );
        let n = TcpFailure::NoAddress {
            host: "mx".into(),
            preferred: IpProtocol::Ip6,
            fallback: false,
        };
        assert_eq!(
            n.to_string(),
            "mx has no IPv6 address (ip_protocol_fallback = false)"
        );
    }

    #[test]
    fn shown_lines_are_escaped_and_short() {
        assert_eq!(show_line(b"ok\x1b[31m"), "ok\\u{1b}[31m");
        let long = vec![b'a'; 500];
        assert_eq!(show_line(&long).chars().count(), SHOWN_LINE_CHARS + 1);
    }
}
