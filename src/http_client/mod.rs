//! The HTTP/1.1 client that probes and scrapes share, timing every phase of a request.
//!
//! General-purpose clients hide their connection pool, DNS cache and TLS session reuse; a
//! probe needs the opposite: a fresh connection per run and a stopwatch on each step. So this
//! client resolves, connects, handshakes and speaks HTTP/1.1 (hyper's connection-level API)
//! itself, and records into a [`Trace`] the phases the blackbox exporter names in
//! `probe_http_duration_seconds{phase}`: `resolve`, `connect`, `tls`, `processing`, `transfer`.
//! The HTTP and OpenAI probes send through it on a new connection each run; scrapes keep one
//! connection per target in a [`KeepAlive`]. Remote write and the Pushgateway push through the
//! pooled client of [`pooled`] instead, with the same [`USER_AGENT`].
//!
//! One [`Request::timeout`] bounds the whole call, redirects and body included; when it runs
//! out, the error names the phase it ran out in. The body is read by the caller, chunk by chunk
//! ([`Response::chunk`], for streamed answers such as server-sent events) or at once
//! ([`Response::read_to_end`], [`Response::discard`]), never beyond [`Request::body_limit`].
//!
//! A call is a loop of hops (this file), one per redirect:
//! - `hop`: one request, on a kept connection or on a new one opened phase by phase;
//! - `connect`: name resolution, TCP connect, TLS handshake, and the kept connection;
//! - `headers`: the request as it goes on the wire (defaults, basic auth, sensitive values);
//! - [`proxy`]: which proxy a URL goes through, and the `CONNECT` tunnel (what each phase
//!   means through a proxy is said there);
//! - `redirect`: which responses redirect, where to, and what the next hop may carry;
//! - `response`: the body, read under the call's deadline and limit;
//! - `trace`: the phases and what the call found; `error`: why a call failed;
//! - [`pooled`]: not part of the probes' client: the pooled reqwest client the push sinks
//!   share, and the one URL-free description of its errors;
//! - [`cert`]: the expiry date of the server's certificates, read from their DER, for the
//!   trace's TLS facts (and formatted for `check`).
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

pub mod cert;
mod connect;
mod error;
mod headers;
mod hop;
pub mod pooled;
pub mod proxy;
mod redirect;
mod response;
mod trace;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header;
use http::Method;
use reqwest::Url;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

pub(crate) use self::connect::tls_info;
pub use self::connect::{
    pick_address, preference_order, Host, IpPreference, KeepAlive, KEPT_READ_BUFFER,
};
pub use self::error::ClientError;
pub use self::redirect::{changes_to_get, is_redirect, resolve_location, same_origin};
pub use self::response::Response;
pub use self::trace::{Phase, Phases, TlsInfo, Trace};

use self::hop::HopRequest;
use self::proxy::ProxySettings;
use crate::config::TlsConfig;
use crate::tls::TlsError;

/// Body size limit probes use unless they set another.
pub const DEFAULT_BODY_LIMIT: u64 = 1024 * 1024;

/// Most redirects followed, as in the blackbox exporter.
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

/// `User-Agent` sent unless the request sets its own.
pub const USER_AGENT: &str = concat!("pushprobe/", env!("CARGO_PKG_VERSION"));

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
    /// The address family to connect over (IPv4 first by default).
    pub ip: IpPreference,
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
            ip: IpPreference::default(),
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &crate::secret::redact_url(&self.url))
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .field("timeout", &self.timeout)
            .field("body_limit", &self.body_limit)
            .field("follow_redirects", &self.follow_redirects)
            .field("max_redirects", &self.max_redirects)
            .field("ip", &self.ip)
            .finish()
    }
}

/// The shared HTTP client: TLS settings shared by every call; a connection is reused only through
/// a caller's [`KeepAlive`].
#[derive(Clone)]
pub struct HttpClient {
    /// Built on first use unless TLS options were given: an http-only probe (the common case)
    /// then never loads the system's trust store, which is most of an idle agent's memory.
    tls: std::sync::OnceLock<TlsConnector>,
    tls_options: TlsConfig,
    server_name: Option<String>,
    /// The proxies requests go through; direct by default.
    proxy: Arc<ProxySettings>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("server_name", &self.server_name)
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
            proxy: Arc::default(),
        };
        if *tls != TlsConfig::default() {
            client.connector()?;
        }
        Ok(client)
    }

    /// The same client, sending through the proxies of `proxy` (see [`proxy`]).
    pub fn with_proxy(mut self, proxy: ProxySettings) -> HttpClient {
        self.proxy = Arc::new(proxy);
        self
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
        // Borrowed until a redirect changes them: a scrape sends its fixed request every
        // interval, and copying its URL and headers each time was about 2 % of the agent's
        // CPU in a profile at 5,000 targets. (Nor do the trace and the response copy the URL.)
        let mut url = Cow::Borrowed(&request.url);
        let mut method = Cow::Borrowed(&request.method);
        let mut body = request.body.as_ref();
        let mut headers = Cow::Borrowed(request.headers.as_slice());
        loop {
            trace.https = url.scheme() == "https";
            if trace.redirects > 0 {
                trace.url = Some(url.as_ref().clone());
            }
            // Only the requested URL's own connection is kept: a redirect elsewhere is rare
            // for a scheduled request, and keeping it would evict the one that matters.
            let keep = if trace.redirects == 0 {
                keep.as_deref_mut()
            } else {
                None
            };
            let hop_request = HopRequest {
                method: &method,
                url: &url,
                headers: &headers,
                body,
                deadline,
                timeout: request.timeout,
                ip: request.ip,
            };
            let hop = self.hop(&hop_request, trace, keep).await?;
            let location = match hop.response.headers().get(header::LOCATION) {
                Some(loc) if request.follow_redirects && is_redirect(hop.response.status()) => {
                    loc.clone()
                }
                _ => {
                    return Ok(Response::new(
                        hop,
                        deadline,
                        request.timeout,
                        request.body_limit,
                    ));
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
                method = Cow::Owned(Method::GET);
                body = None;
            }
            if !same_origin(&next, &url) {
                redirect::drop_credentials(headers.to_mut());
            }
            url = Cow::Owned(next);
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
}
