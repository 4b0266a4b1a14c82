//! An HTTP/1.1 client for probes that times every phase of a request.
//!
//! General-purpose clients hide their connection pool, DNS cache and TLS session reuse; a
//! probe needs the opposite: a fresh connection per run and a stopwatch on each step. So this
//! client resolves, connects, handshakes and speaks HTTP/1.1 (hyper's connection-level API)
//! itself, and records into a [`Trace`] the phases the blackbox exporter names in
//! `probe_http_duration_seconds{phase}`: `resolve`, `connect`, `tls`, `processing`, `transfer`.
//! Scrapes use it too, keeping one connection per target in a [`KeepAlive`].
//!
//! One [`Request::timeout`] bounds the whole call, redirects and body included; when it runs
//! out, the error names the phase it ran out in. The body is read by the caller, chunk by chunk
//! ([`Response::chunk`], for streamed answers such as server-sent events) or at once
//! ([`Response::read_to_end`], [`Response::discard`]), never beyond [`Request::body_limit`].
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use pushprobe::http_client::{HttpClient, Request, Trace};
//! use std::time::Duration;
//!
//! let client = HttpClient::new(&Default::default())?;
//! let mut request = Request::new(
//!     http::Method::POST,
//!     "https://api.example.com/v1/chat/completions".parse()?,
//!     Duration::from_secs(30),
//! );
//! request.headers.push(("content-type".into(), "application/json".into()));
//! request.body = Some(r#"{"stream":true}"#.into());
//! let mut trace = Trace::default();
//! let mut response = client.send(&request, &mut trace).await?;
//! while let Some(chunk) = response.chunk(&mut trace).await? {
//!     // Parse server-sent events from `chunk` here.
//!     let _ = chunk;
//! }
//! let ttfb = trace.time_to_first_byte();
//! let first_chunk = trace.time_to_first_chunk();
//! # let _ = (ttfb, first_chunk);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsConfig;
use crate::tls::TlsError;

/// Body size limit probes use unless they set another.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

/// Most redirects followed, as in the blackbox exporter.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// `User-Agent` sent unless the request sets its own.
pub const USER_AGENT: &str = concat!("pushprobe/", env!("CARGO_PKG_VERSION"));

/// Headers that carry credentials: dropped when a redirect leaves the original host.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "cookie2",
    "www-authenticate",
];

/// A step of an HTTP exchange, named as in `probe_http_duration_seconds{phase}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Looking up the host's address.
    Resolve,
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    Tls,
    /// From sending the request to the response headers (time to first byte).
    Processing,
    /// From the response headers to the end of the body.
    Transfer,
}

impl Phase {
    /// Every phase, in the order they happen.
    pub const ALL: [Phase; 5] = [
        Phase::Resolve,
        Phase::Connect,
        Phase::Tls,
        Phase::Processing,
        Phase::Transfer,
    ];

    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Processing => "processing",
            Phase::Transfer => "transfer",
        }
    }

    /// What the client was doing in this phase, for error messages.
    fn activity(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the host name",
            Phase::Connect => "connecting",
            Phase::Tls => "in the TLS handshake",
            Phase::Processing => "waiting for the response headers",
            Phase::Transfer => "reading the response body",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Time spent per phase; redirects add up, as in the blackbox exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases([Duration; 5]);

impl Phases {
    /// Time spent in `phase` (zero if it did not happen).
    pub fn get(&self, phase: Phase) -> Duration {
        self.0[phase as usize]
    }

    /// Every phase with its time, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Phase, Duration)> + '_ {
        Phase::ALL.iter().map(|p| (*p, self.get(*p)))
    }

    fn add(&mut self, phase: Phase, d: Duration) {
        self.0[phase as usize] += d;
    }

    fn set(&mut self, phase: Phase, d: Duration) {
        self.0[phase as usize] = d;
    }
}

/// What the TLS handshake of the last connection established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version as the blackbox exporter labels it, e.g. `TLS 1.3`.
    pub version: &'static str,
    /// Earliest `notAfter` (Unix seconds) over the certificates the server sent.
    pub earliest_cert_expiry: Option<i64>,
}

/// What happened during one call, filled in as it goes, so it is useful after a failure too.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Time per phase, summed over redirects (`transfer`: the final response only).
    pub phases: Phases,
    /// Phases in the order they began, over all hops (a hop on a new connection starts with
    /// `resolve`, one on a kept connection with `processing`).
    pub entered: Vec<Phase>,
    /// Redirects followed.
    pub redirects: u32,
    /// The address the first hop connected to (or tried to).
    pub first_addr: Option<SocketAddr>,
    /// The address of the last hop.
    pub addr: Option<SocketAddr>,
    /// The URL of the last hop.
    pub url: Option<Url>,
    /// TLS facts of the last hop; `None` when it was plain HTTP or the handshake failed.
    pub tls: Option<TlsInfo>,
    /// Body bytes read so far.
    pub body_bytes: u64,
    /// When the call began.
    pub started: Option<Instant>,
    /// When the final response's headers arrived.
    pub headers_at: Option<Instant>,
    /// When the first non-empty body chunk arrived.
    pub first_chunk_at: Option<Instant>,
    /// When the body was read to its end.
    pub finished_at: Option<Instant>,
}

impl Trace {
    /// Time from the start of the call to the final response's headers.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        Some(self.headers_at? - self.started?)
    }

    /// Time from the start of the call to the first body chunk.
    pub fn time_to_first_chunk(&self) -> Option<Duration> {
        Some(self.first_chunk_at? - self.started?)
    }

    fn enter(&mut self, phase: Phase) {
        self.entered.push(phase);
    }
}

/// Why a call failed. [`ClientError::kind`] is a short, bounded label value.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL cannot be requested.
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request header is not valid HTTP (its value is never shown: it may be a secret).
    #[error("request header {name:?}: {reason}; fix the configured headers")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The host name could not be resolved.
    #[error("resolve {host}: {source}: check the host name and this host's DNS settings")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
    /// The host name resolved to no address.
    #[error("resolve {host}: no address found: check the host name and this host's DNS settings")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The TCP connection failed.
    #[error("{}", connect_message(.addr, .source))]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {server}: {}", tls_message(.source))]
    Tls {
        /// The name the certificate was checked against.
        server: String,
        /// The handshake error (wraps a `rustls::Error` when rustls refused).
        #[source]
        source: io::Error,
    },
    /// The call's timeout ran out.
    #[error(
        "timed out after {timeout:?} {}: raise the probe's timeout or find out why the target is slow",
        .phase.activity()
    )]
    Timeout {
        /// The phase that was running out of time.
        phase: Phase,
        /// The call's timeout.
        timeout: Duration,
    },
    /// The target did not speak valid HTTP/1.x, or closed the connection early.
    #[error("HTTP error {}: {}: the target did not answer with valid HTTP/1.x", .phase.activity(), hyper_message(.source))]
    Http {
        /// The phase the error surfaced in.
        phase: Phase,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The response body is larger than the limit.
    #[error("response body exceeds the limit of {limit} bytes: the endpoint answers more than a probe should read")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// More redirects than allowed.
    #[error("stopped after {max} redirects (last Location: {last}): the target redirects in a loop or too often; point the probe or scrape at the final URL (a probe can also set follow_redirects = false)")]
    TooManyRedirects {
        /// The limit.
        max: u32,
        /// The Location that was not followed.
        last: String,
    },
    /// A redirect's `Location` cannot be followed.
    #[error("redirect to {location:?} cannot be followed: {reason}")]
    BadRedirect {
        /// The Location header (lossily decoded).
        location: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ClientError {
    /// A short label value for the error's kind (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::InvalidUrl { .. } | ClientError::BadRedirect { .. } => "invalid_url",
            ClientError::InvalidHeader { .. } => "invalid_request",
            ClientError::Resolve { .. } | ClientError::NoAddress { .. } => "resolve",
            ClientError::Connect { .. } => "connect",
            ClientError::Tls { .. } => "tls",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Http { .. } => "http",
            ClientError::BodyTooLarge { .. } => "body_too_large",
            ClientError::TooManyRedirects { .. } => "redirect_loop",
        }
    }

    /// The phase the error happened in, when it happened on the wire.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            ClientError::Resolve { .. } | ClientError::NoAddress { .. } => Some(Phase::Resolve),
            ClientError::Connect { .. } => Some(Phase::Connect),
            ClientError::Tls { .. } => Some(Phase::Tls),
            ClientError::Timeout { phase, .. } | ClientError::Http { phase, .. } => Some(*phase),
            ClientError::BodyTooLarge { .. } => Some(Phase::Transfer),
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidHeader { .. }
            | ClientError::TooManyRedirects { .. }
            | ClientError::BadRedirect { .. } => None,
        }
    }
}

fn connect_message(addr: &SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            format!("connect to {addr} refused: is the service listening?")
        }
        _ => format!("connect to {addr}: {e}: check the address, the port and firewalls"),
    }
}

fn tls_message(e: &io::Error) -> String {
    let Some(rustls_error) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return format!("{e}: the target may not speak TLS on this port");
    };
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = rustls_error else {
        return rustls_error.to_string();
    };
    let advice = match cert {
        C::UnknownIssuer | C::BadSignature => {
            "set tls.ca_file to the CA that signed the server's certificate"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "set tls.server_name to a name the certificate is issued for"
        }
        C::Expired | C::ExpiredContext { .. } => "the certificate has expired: renew it",
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the certificate is not valid yet: check its dates and this host's clock"
        }
        _ => "check the server's certificate chain",
    };
    format!("server certificate refused ({cert:?}): {advice}")
}

fn hyper_message(e: &hyper::Error) -> String {
    if e.is_parse_too_large() {
        return format!(
            "{e} (a kept scrape connection reads at most {} KiB of response headers)",
            KEPT_READ_BUFFER / 1024
        );
    }
    match std::error::Error::source(e) {
        Some(inner) => format!("{e} ({inner})"),
        None => e.to_string(),
    }
}

/// One request to make. Header values may be secrets: `Debug` shows header names only.
#[derive(Clone)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Target (http or https).
    pub url: Url,
    /// Extra headers; `host` and `user-agent` here replace the defaults.
    pub headers: Vec<(String, String)>,
    /// Body, sent with its `Content-Length`.
    pub body: Option<Bytes>,
    /// Deadline of the whole call, body included.
    pub timeout: Duration,
    /// Most body bytes read before the call fails with [`ClientError::BodyTooLarge`].
    pub body_limit: u64,
    /// Whether 3xx responses with a `Location` are followed.
    pub follow_redirects: bool,
    /// Most redirects followed before [`ClientError::TooManyRedirects`].
    pub max_redirects: u32,
}

impl Request {
    /// A request without headers or body, with the default limits and redirects followed.
    pub fn new(method: Method, url: Url, timeout: Duration) -> Request {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: None,
            timeout,
            body_limit: DEFAULT_BODY_LIMIT,
            follow_redirects: true,
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .field("timeout", &self.timeout)
            .field("body_limit", &self.body_limit)
            .field("follow_redirects", &self.follow_redirects)
            .field("max_redirects", &self.max_redirects)
            .finish()
    }
}

/// The probe client: TLS settings shared by every call; a connection is reused only through
/// a caller's [`KeepAlive`].
#[derive(Clone)]
pub struct HttpClient {
    /// Built on first use unless TLS options were given: an http-only probe (the common case)
    /// then never loads the system's trust store, which is most of an idle agent's memory.
    tls: std::sync::OnceLock<TlsConnector>,
    tls_options: TlsConfig,
    server_name: Option<String>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A received response whose body has not been read yet.
pub struct Response {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    url: Url,
    body: Incoming,
    deadline: Instant,
    timeout: Duration,
    limit: u64,
    headers_at: Instant,
    transfer_started: bool,
    done: bool,
    // Dropping the response ends the connection task (unless a `KeepAlive` holds it).
    _conn: Option<ConnTask>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds a client; TLS options that were given are loaded now, so that their errors show
    /// at start.
    pub fn new(tls: &TlsConfig) -> Result<HttpClient, TlsError> {
        let client = HttpClient {
            tls: std::sync::OnceLock::new(),
            tls_options: tls.clone(),
            server_name: tls.server_name.clone(),
        };
        if *tls != TlsConfig::default() {
            client.connector()?;
        }
        Ok(client)
    }

    /// The TLS connector, built on first use.
    fn connector(&self) -> Result<TlsConnector, TlsError> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let mut config = crate::tls::client_config(&self.tls_options, &[b"http/1.1"])?;
        // Every probe does a full handshake, as the blackbox exporter does: a resumed session
        // would hide the handshake's real cost from the `tls` phase. It also spares each
        // probe rustls' default session cache, which pre-allocates room for 256 servers.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(self
            .tls
            .get_or_init(|| TlsConnector::from(Arc::new(config)))
            .clone())
    }

    /// Sends `request` on a fresh connection, following redirects if asked, and returns the
    /// final response with its body unread. `trace` is reset and then filled in as the call
    /// goes, errors or not.
    pub async fn send(
        &self,
        request: &Request,
        trace: &mut Trace,
    ) -> Result<Response, ClientError> {
        self.send_with(request, trace, None).await
    }

    /// As [`HttpClient::send`], but the first hop reuses the connection `keep` holds when it
    /// goes to the same origin and is idle, and leaves its own connection in `keep` for the
    /// next call. For callers that request one URL on a schedule (scrapes), where a new
    /// connection per call costs more than the call; a probe never keeps one.
    pub async fn send_with(
        &self,
        request: &Request,
        trace: &mut Trace,
        mut keep: Option<&mut KeepAlive>,
    ) -> Result<Response, ClientError> {
        let started = Instant::now();
        *trace = Trace {
            started: Some(started),
            ..Trace::default()
        };
        let deadline = started + request.timeout;
        let mut url = request.url.clone();
        let mut method = request.method.clone();
        let mut body = request.body.clone();
        let mut headers = request.headers.clone();
        loop {
            trace.url = Some(url.clone());
            // Only the requested URL's own connection is kept: a redirect elsewhere is rare
            // for a scheduled request, and keeping it would evict the one that matters.
            let keep = if trace.redirects == 0 {
                keep.as_deref_mut()
            } else {
                None
            };
            let hop = self
                .hop(
                    &method,
                    &url,
                    &headers,
                    body.as_ref(),
                    deadline,
                    request.timeout,
                    trace,
                    keep,
                )
                .await?;
            let location = match hop.response.headers().get(header::LOCATION) {
                Some(loc) if request.follow_redirects && is_redirect(hop.response.status()) => {
                    loc.clone()
                }
                _ => {
                    let (parts, incoming) = hop.response.into_parts();
                    return Ok(Response {
                        status: parts.status,
                        version: parts.version,
                        headers: parts.headers,
                        url,
                        body: incoming,
                        deadline,
                        timeout: request.timeout,
                        limit: request.body_limit,
                        headers_at: hop.headers_at,
                        transfer_started: false,
                        done: false,
                        _conn: hop.conn,
                    });
                }
            };
            let next = resolve_location(&url, &location)?;
            if trace.redirects >= request.max_redirects {
                return Err(ClientError::TooManyRedirects {
                    max: request.max_redirects,
                    last: next.to_string(),
                });
            }
            trace.redirects += 1;
            if changes_to_get(hop.response.status(), &method) {
                method = Method::GET;
                body = None;
            }
            if !same_origin(&next, &url) {
                // Another scheme (https to http would send them in clear), host or port.
                headers.retain(|(name, _)| {
                    !CREDENTIAL_HEADERS.contains(&name.as_str()) && name != "host"
                });
            }
            url = next;
        }
    }

    /// One request: on the connection `keep` holds if it suits, else on a fresh one (kept
    /// afterwards when `keep` is given).
    #[allow(clippy::too_many_arguments)]
    async fn hop(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(String, String)],
        body: Option<&Bytes>,
        deadline: Instant,
        timeout: Duration,
        trace: &mut Trace,
        mut keep: Option<&mut KeepAlive>,
    ) -> Result<Hop, ClientError> {
        let target = Target::from_url(url)?;
        let close = keep.is_none();
        // Header errors are configuration errors: report them before touching the network.
        let mut request = Some(build_request(method, url, headers, body, close)?);

        // A kept connection that is not idle yet (its previous body unread, or its task not
        // yet back from finishing it) is closed and replaced: scrapes are seconds apart, so
        // waiting for it would only ever wait on a stuck body.
        if let Some(mut kept) = keep.as_deref_mut().and_then(|k| k.take_idle(&target)) {
            let req = match request.take() {
                Some(r) => r,
                None => build_request(method, url, headers, body, close)?,
            };
            trace.addr = Some(kept.addr);
            trace.first_addr.get_or_insert(kept.addr);
            trace.tls = kept.tls.clone();
            trace.enter(Phase::Processing);
            let began = Instant::now();
            let sent = tokio::time::timeout_at(deadline, kept.sender.send_request(req)).await;
            trace.phases.add(Phase::Processing, began.elapsed());
            match sent {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        phase: Phase::Processing,
                        timeout,
                    })
                }
                Ok(Ok(response)) => {
                    let headers_at = Instant::now();
                    trace.headers_at = Some(headers_at);
                    if let Some(k) = keep {
                        k.conn = Some(kept);
                    }
                    return Ok(Hop {
                        response,
                        conn: None,
                        headers_at,
                    });
                }
                // The server closed the idle connection as the request went out (it may close
                // one whenever it likes) and answered nothing: a body-less GET or HEAD is sent
                // again on a fresh connection, as browsers and Go's client do. Anything else
                // is the server's answer to this request, and is reported.
                Ok(Err(e))
                    if (e.is_incomplete_message() || e.is_canceled())
                        && body.is_none()
                        && (*method == Method::GET || *method == Method::HEAD) => {}
                Ok(Err(source)) => {
                    return Err(ClientError::Http {
                        phase: Phase::Processing,
                        source,
                    })
                }
            }
        }
        let request = match request {
            Some(r) => r,
            None => build_request(method, url, headers, body, close)?,
        };

        let addrs = phase(trace, Phase::Resolve, deadline, timeout, resolve(&target)).await?;
        // A probe measures the preferred address only, as the blackbox exporter does. A
        // scheduled request falls back to the host's other addresses, as Prometheus' dialer
        // does: `localhost` may resolve to ::1 and 127.0.0.1 with the exporter on only one.
        let tries = if close { 1 } else { addrs.len() };
        if let Some(&first) = addrs.first() {
            trace.first_addr.get_or_insert(first);
            trace.addr = Some(first);
        }
        let (addr, tcp) = phase(trace, Phase::Connect, deadline, timeout, async {
            let mut failed = None;
            for &addr in addrs.iter().take(tries) {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        // Requests are small and written at once; Nagle would only delay them.
                        let _ = tcp.set_nodelay(true);
                        return Ok((addr, tcp));
                    }
                    Err(source) => failed = Some(ClientError::Connect { addr, source }),
                }
            }
            Err(failed.unwrap_or_else(|| ClientError::NoAddress {
                host: target.host.name(),
            }))
        })
        .await
        .inspect_err(|e| {
            if let ClientError::Connect { addr, .. } = e {
                trace.addr = Some(*addr);
            }
        })?;
        trace.addr = Some(addr);

        trace.tls = None;
        let stream = if target.tls {
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| target.host.name());
            // Loading the trust store (once per process) is set-up, not handshake time.
            let connector = self.connector().map_err(|e| ClientError::Tls {
                server: name.clone(),
                source: io::Error::other(e),
            })?;
            let tls = phase(
                trace,
                Phase::Tls,
                deadline,
                timeout,
                handshake(&connector, name, tcp),
            )
            .await?;
            let (_, conn) = tls.get_ref();
            trace.tls = Some(TlsInfo {
                version: tls_version_name(conn.protocol_version()),
                earliest_cert_expiry: conn.peer_certificates().and_then(|chain| {
                    crate::probe::cert::earliest_not_after(chain.iter().map(|c| c.as_ref()))
                }),
            });
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };

        let (response, sender, conn) =
            phase(trace, Phase::Processing, deadline, timeout, async move {
                let http_err = |source| ClientError::Http {
                    phase: Phase::Processing,
                    source,
                };
                let mut builder = hyper::client::conn::http1::Builder::new();
                if !close {
                    // A kept connection keeps its read buffer while idle; hyper would let it
                    // grow to about 400 KiB (the largest body read), per target.
                    builder.max_buf_size(KEPT_READ_BUFFER);
                }
                let (mut sender, connection) = builder
                    .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .map_err(http_err)?;
                // Errors of the connection task also fail the response future or the body,
                // where they are reported; the task's own result adds nothing.
                let conn = ConnTask(tokio::spawn(async move {
                    let _ = connection.await;
                }));
                let response = sender.send_request(request).await.map_err(http_err)?;
                Ok((response, sender, conn))
            })
            .await?;
        let headers_at = Instant::now();
        trace.headers_at = Some(headers_at);
        let conn = match keep {
            Some(k) => {
                k.conn = Some(KeptConn {
                    target,
                    addr,
                    tls: trace.tls.clone(),
                    sender,
                    _task: conn,
                });
                None
            }
            None => Some(conn),
        };
        Ok(Hop {
            response,
            conn,
            headers_at,
        })
    }
}

/// Runs one phase under the call's deadline, adding its time to the trace even on failure.
async fn phase<T>(
    trace: &mut Trace,
    phase: Phase,
    deadline: Instant,
    timeout: Duration,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    trace.enter(phase);
    let began = Instant::now();
    let out = tokio::time::timeout_at(deadline, work).await;
    trace.phases.add(phase, began.elapsed());
    out.unwrap_or(Err(ClientError::Timeout { phase, timeout }))
}

impl Response {
    /// Status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// HTTP version of the response.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL that answered (after redirects).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The `Content-Length` header, if present and valid.
    pub fn content_length(&self) -> Option<u64> {
        self.headers
            .get(header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Reads the next non-empty body chunk as it arrives; `None` at the end of the body.
    /// Fails once the body passes the limit or the call's deadline passes; after an error
    /// the body is over and later calls return `None` (`trace.finished_at` stays unset).
    pub async fn chunk(&mut self, trace: &mut Trace) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        if !self.transfer_started {
            self.transfer_started = true;
            trace.enter(Phase::Transfer);
            // A declared length over the limit fails before any of it is read.
            if self.content_length().is_some_and(|n| n > self.limit) {
                self.done = true;
                return Err(ClientError::BodyTooLarge { limit: self.limit });
            }
        }
        loop {
            let frame = tokio::time::timeout_at(self.deadline, self.body.frame()).await;
            let now = Instant::now();
            trace.phases.set(Phase::Transfer, now - self.headers_at);
            let frame = match frame {
                Err(_) => {
                    self.done = true;
                    return Err(ClientError::Timeout {
                        phase: Phase::Transfer,
                        timeout: self.timeout,
                    });
                }
                Ok(None) => {
                    self.done = true;
                    trace.finished_at = Some(now);
                    return Ok(None);
                }
                Ok(Some(Err(source))) => {
                    self.done = true;
                    return Err(ClientError::Http {
                        phase: Phase::Transfer,
                        source,
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing a probe checks.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            trace.body_bytes += data.len() as u64;
            if trace.body_bytes > self.limit {
                self.done = true;
                return Err(ClientError::BodyTooLarge { limit: self.limit });
            }
            trace.first_chunk_at.get_or_insert(now);
            return Ok(Some(data));
        }
    }

    /// Reads the rest of the body into memory (at most the limit).
    pub async fn read_to_end(&mut self, trace: &mut Trace) -> Result<Bytes, ClientError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk(trace).await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the rest of the body without keeping it; returns the bytes read by this call.
    pub async fn discard(&mut self, trace: &mut Trace) -> Result<u64, ClientError> {
        let mut n = 0u64;
        while let Some(chunk) = self.chunk(trace).await? {
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

/// A response to one hop, with the task driving its connection unless a [`KeepAlive`]
/// holds it.
struct Hop {
    response: http::Response<Incoming>,
    conn: Option<ConnTask>,
    headers_at: Instant,
}

/// Largest read buffer of a kept connection: a few reads per body of a node exporter's size,
/// and an idle target costs at most this much. It also bounds the response head, which
/// exporters keep to a few hundred bytes.
pub const KEPT_READ_BUFFER: usize = 8 * 1024;

/// The connection a caller keeps between calls to one origin (see
/// [`HttpClient::send_with`]). Dropping it closes the connection.
#[derive(Default)]
pub struct KeepAlive {
    conn: Option<KeptConn>,
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("addr", &self.conn.as_ref().map(|c| c.addr))
            .finish()
    }
}

impl KeepAlive {
    /// Whether a connection is held (idle or not).
    pub fn is_held(&self) -> bool {
        self.conn.is_some()
    }

    /// Takes the held connection if it goes to `target` and can take a request now: not
    /// closed by either side, and with the previous response read to its end. Anything else
    /// is dropped, which closes it.
    fn take_idle(&mut self, target: &Target) -> Option<KeptConn> {
        self.conn
            .take()
            .filter(|c| c.target == *target && c.sender.is_ready())
    }
}

struct KeptConn {
    target: Target,
    addr: SocketAddr,
    tls: Option<TlsInfo>,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    _task: ConnTask,
}

/// The task that drives a connection; aborted on drop so that an abandoned endless body
/// cannot keep a socket open.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A host as it appears in a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IP address literal: no lookup needed.
    Ip(IpAddr),
    /// A name to resolve.
    Domain(String),
}

impl Host {
    /// Parses `Url::host_str` output (IPv6 literals come in brackets).
    pub fn parse(host: &str) -> Host {
        if let Some(v6) = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
        {
            return Host::Ip(IpAddr::V6(v6));
        }
        match host.parse::<Ipv4Addr>() {
            Ok(v4) => Host::Ip(IpAddr::V4(v4)),
            Err(_) => Host::Domain(host.to_string()),
        }
    }

    /// The name to verify a TLS certificate against.
    fn name(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Domain(d) => d.clone(),
        }
    }
}

/// Where one hop goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    host: Host,
    port: u16,
    tls: bool,
}

impl Target {
    fn from_url(url: &Url) -> Result<Target, ClientError> {
        let invalid = |reason| ClientError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid("only http and https URLs can be probed")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| invalid("the URL has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("the URL has no port"))?;
        Ok(Target {
            host: Host::parse(host),
            port,
            tls,
        })
    }
}

/// Picks the address to connect to: the first IPv4 one, else the first one.
pub fn pick_address(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    preference_order(addrs).first().copied()
}

/// The addresses in the order to try them: IPv4 ones first, each family in resolver order.
pub fn preference_order(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut ordered: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    ordered.extend(addrs.iter().copied().filter(SocketAddr::is_ipv6));
    ordered
}

/// The target's addresses in [`preference_order`]; never empty.
async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, ClientError> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Domain(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|source| ClientError::Resolve {
                    host: name.clone(),
                    source,
                })?
                .collect();
            let ordered = preference_order(&addrs);
            if ordered.is_empty() {
                return Err(ClientError::NoAddress { host: name.clone() });
            }
            Ok(ordered)
        }
    }
}

async fn handshake(
    connector: &TlsConnector,
    name: String,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let server_name = ServerName::try_from(name.clone()).map_err(|e| ClientError::Tls {
        server: name.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, e),
    })?;
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|source| ClientError::Tls {
            server: name,
            source,
        })
}

fn tls_version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        Some(rustls::ProtocolVersion::TLSv1_1) => "TLS 1.1",
        Some(rustls::ProtocolVersion::TLSv1_0) => "TLS 1.0",
        _ => "unknown",
    }
}

/// Builds the hyper request for one hop: origin-form target, `Host`, `User-Agent`,
/// `Content-Length`, and `Connection: close` when `close` (a probe measures a fresh
/// connection each run).
fn build_request(
    method: &Method,
    url: &Url,
    headers: &[(String, String)],
    body: Option<&Bytes>,
    close: bool,
) -> Result<http::Request<Full<Bytes>>, ClientError> {
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let uri: http::Uri = path.parse().map_err(|_| ClientError::InvalidUrl {
        url: url.to_string(),
        reason: "the path is not a valid request target",
    })?;
    let mut map = HeaderMap::new();
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    map.insert(header::HOST, header_value("host", &host)?);
    map.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if !url.username().is_empty() || url.password().is_some() {
        let user = percent_decode(url.username());
        let pass = percent_decode(url.password().unwrap_or(""));
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut value = header_value("authorization", &format!("Basic {token}"))?;
        value.set_sensitive(true);
        map.insert(header::AUTHORIZATION, value);
    }
    let mut overridden: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        let header_name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| ClientError::InvalidHeader {
                name: name.clone(),
                reason: "not a valid header name",
            })?;
        if header_name == header::CONTENT_LENGTH || header_name == header::CONNECTION {
            // Framing and connection handling are the client's; a wrong value would break them.
            continue;
        }
        let mut value = header_value(name, value)?;
        value.set_sensitive(true);
        if !overridden.contains(&header_name) {
            // The first occurrence replaces a default; later ones add values.
            map.remove(&header_name);
            overridden.push(header_name.clone());
        }
        map.append(header_name, value);
    }
    if let Some(b) = body {
        map.insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    if close {
        map.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut request = http::Request::new(Full::new(body.cloned().unwrap_or_default()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Ok(request)
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value).map_err(|_| ClientError::InvalidHeader {
        name: name.to_string(),
        reason: "the value has characters not allowed in HTTP headers",
    })
}

/// Decodes `%XX` escapes of URL user info; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Tells whether two URLs share scheme, host and port: credentials go to that origin only.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Tells whether a status asks to be redirected (with a `Location`).
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Tells whether following this redirect turns the request into a body-less GET (as
/// browsers and Go's client do for 301, 302 and 303; 307 and 308 keep method and body).
pub fn changes_to_get(status: StatusCode, method: &Method) -> bool {
    matches!(status.as_u16(), 301..=303) && method != Method::GET && method != Method::HEAD
}

/// Resolves a `Location` header against the URL that sent it.
pub fn resolve_location(base: &Url, location: &HeaderValue) -> Result<Url, ClientError> {
    let text = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let bad = |reason| ClientError::BadRedirect {
        location: text.clone(),
        reason,
    };
    let loc = location
        .to_str()
        .map_err(|_| bad("the Location header is not ASCII"))?;
    let next = base
        .join(loc.trim())
        .map_err(|_| bad("the Location header is not a valid URL"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad("only http and https redirects can be followed"));
    }
    if next.host_str().is_none_or(str::is_empty) {
        return Err(bad("the redirect URL has no host"));
    }
    Ok(next)
}

/// A plain or TLS connection, so that hyper sees one stream type.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn ipv4_is_preferred_unless_only_ipv6_resolves() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v4b: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(pick_address(&[v6, v4, v4b]), Some(v4));
        assert_eq!(pick_address(&[v6]), Some(v6));
        assert_eq!(pick_address(&[]), None);
        assert_eq!(preference_order(&[v6, v4, v4b]), vec![v4, v4b, v6]);
    }

    #[test]
    fn hosts_are_ip_literals_or_names() {
        assert_eq!(
            Host::parse("[::1]"),
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            Host::parse("127.0.0.1"),
            Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            Host::parse("example.com"),
            Host::Domain("example.com".into())
        );
    }

    #[test]
    fn targets_know_scheme_ports() {
        let t = Target::from_url(&url("https://example.com/x")).unwrap();
        assert_eq!((t.port, t.tls), (443, true));
        let t = Target::from_url(&url("http://[::1]:8080/")).unwrap();
        assert_eq!(t.host, Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!((t.port, t.tls), (8080, false));
        let e = Target::from_url(&url("ftp://example.com/")).unwrap_err();
        assert_eq!(e.kind(), "invalid_url");
    }

    #[test]
    fn relative_and_absolute_locations_resolve() {
        let base = url("http://a.example:8080/dir/page?q=1");
        let loc = |s: &'static str| resolve_location(&base, &HeaderValue::from_static(s));
        assert_eq!(
            loc("/other").unwrap().as_str(),
            "http://a.example:8080/other"
        );
        assert_eq!(
            loc("next").unwrap().as_str(),
            "http://a.example:8080/dir/next"
        );
        assert_eq!(loc("//b.example/x").unwrap().as_str(), "http://b.example/x");
        assert_eq!(
            loc("https://c.example/").unwrap().as_str(),
            "https://c.example/"
        );
        assert_eq!(loc("ftp://c.example/").unwrap_err().kind(), "invalid_url");
        assert_eq!(loc("http://").unwrap_err().kind(), "invalid_url");
    }

    #[test]
    fn see_other_turns_posts_into_gets_but_307_keeps_them() {
        assert!(changes_to_get(StatusCode::SEE_OTHER, &Method::POST));
        assert!(changes_to_get(StatusCode::FOUND, &Method::PUT));
        assert!(!changes_to_get(StatusCode::FOUND, &Method::HEAD));
        assert!(!changes_to_get(
            StatusCode::TEMPORARY_REDIRECT,
            &Method::POST
        ));
        assert!(!changes_to_get(
            StatusCode::PERMANENT_REDIRECT,
            &Method::POST
        ));
        assert!(is_redirect(StatusCode::MOVED_PERMANENTLY));
        assert!(!is_redirect(StatusCode::NOT_MODIFIED));
    }

    #[test]
    fn origins_differ_by_scheme_host_or_port() {
        let base = url("https://h.example/metrics");
        assert!(same_origin(&base, &url("https://h.example:443/other?x=1")));
        assert!(!same_origin(&base, &url("http://h.example/metrics")));
        assert!(!same_origin(&base, &url("https://h.example:8443/metrics")));
        assert!(!same_origin(&base, &url("https://other.example/metrics")));
    }

    #[test]
    fn requests_carry_defaults_and_overrides() {
        let body = Bytes::from_static(b"{}");
        let r = build_request(
            &Method::POST,
            &url("http://h.example:81/p?x=1#frag"),
            &[
                ("x-api-key".into(), "k".into()),
                ("content-length".into(), "999".into()),
                ("connection".into(), "keep-alive".into()),
            ],
            Some(&body),
            true,
        )
        .unwrap();
        assert_eq!(r.uri(), "/p?x=1");
        let h = r.headers();
        assert_eq!(h[header::HOST], "h.example:81");
        assert_eq!(h[header::USER_AGENT], USER_AGENT);
        assert_eq!(h[header::CONTENT_LENGTH], "2");
        assert_eq!(h[header::CONNECTION], "close");
        assert_eq!(h["x-api-key"], "k");

        let r = build_request(
            &Method::GET,
            &url("https://h.example/"),
            &[
                ("user-agent".into(), "custom/1".into()),
                ("host".into(), "virtual.example".into()),
                ("connection".into(), "close".into()),
            ],
            None,
            false,
        )
        .unwrap();
        let h = r.headers();
        assert_eq!(h[header::USER_AGENT], "custom/1");
        assert_eq!(h.get_all(header::USER_AGENT).iter().count(), 1);
        assert_eq!(h[header::HOST], "virtual.example");
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        // A kept connection is the client's to close: no `Connection` header, whoever asks.
        assert!(h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn url_user_info_becomes_basic_auth() {
        let r = build_request(
            &Method::GET,
            &url("http://us%40er:p%3Ass@h/"),
            &[],
            None,
            true,
        )
        .unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            r.headers()[header::AUTHORIZATION],
            format!("Basic {expected}").as_str()
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn bad_headers_are_named_without_their_value() {
        let e = build_request(
            &Method::GET,
            &url("http://h/"),
            &[("authorization".into(), "Bearer sec\nret".into())],
            None,
            true,
        )
        .unwrap_err();
        assert_eq!(e.kind(), "invalid_request");
        let text = e.to_string();
        assert!(
            text.contains("authorization") && !text.contains("sec"),
            "{text}"
        );
    }

    #[test]
    fn debug_output_hides_header_values() {
        let mut r = Request::new(Method::GET, url("http://h/"), Duration::from_secs(1));
        r.headers
            .push(("authorization".into(), "Bearer hunter2".into()));
        let text = format!("{r:?}");
        assert!(
            text.contains("authorization") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        let refused = ClientError::Connect {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(refused.kind(), "connect");
        assert_eq!(
            refused.to_string(),
            "connect to 127.0.0.1:9 refused: is the service listening?"
        );
        let timeout = ClientError::Timeout {
            phase: Phase::Transfer,
            timeout: Duration::from_secs(2),
        };
        assert_eq!(timeout.phase(), Some(Phase::Transfer));
        assert!(timeout.to_string().contains("reading the response body"));
        let loop_ = ClientError::TooManyRedirects {
            max: 10,
            last: "http://h/".into(),
        };
        assert_eq!(loop_.kind(), "redirect_loop");
    }

    #[test]
    fn phases_accumulate_per_phase() {
        let mut p = Phases::default();
        p.add(Phase::Connect, Duration::from_millis(2));
        p.add(Phase::Connect, Duration::from_millis(3));
        p.set(Phase::Transfer, Duration::from_millis(7));
        assert_eq!(p.get(Phase::Connect), Duration::from_millis(5));
        let names: Vec<&str> = p.iter().map(|(ph, _)| ph.as_str()).collect();
        assert_eq!(
            names,
            ["resolve", "connect", "tls", "processing", "transfer"]
        );
    }
}
