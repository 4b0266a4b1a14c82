//! Outbound HTTP proxies: which proxy a URL goes through ([`ProxySettings::route`], with the
//! `no_proxy` matcher [`NoProxy`]), and the `CONNECT` tunnel of an https request (the request
//! text, and the proxy's answer read under a size bound, since a proxy may answer anything).
//!
//! Through a proxy, a hop's phases mean:
//! - `resolve`: resolving the proxy's host name (the proxy resolves the target's);
//! - `connect`: the TCP connection to the proxy and, for an https target, the `CONNECT`
//!   tunnel up to the proxy's `200` answer;
//! - `tls`: the handshake with the target itself, through the tunnel (the certificate checked
//!   is the target's);
//! - `processing`, `transfer`: as without a proxy, the proxy's own delay included.
//!
//! An http target is requested from the proxy in absolute form (`GET http://host/path`), with
//! the proxy's credentials in `Proxy-Authorization`. A proxy that cannot be reached, refuses
//! the tunnel, answers something that is not HTTP or closes the tunnel before the target's
//! TLS handshake is done fails the call with [`ClientError::Proxy`], kind `proxy`.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::{Host, Target};
use super::ClientError;
use crate::auth::Auth;
use crate::secret::HeaderText;

/// Most bytes of a proxy's answer to `CONNECT` read before it is refused as garbage: real
/// answers are a status line and a few headers.
pub const MAX_CONNECT_ANSWER: usize = 8 * 1024;

/// The proxies of one client: one for http targets and one for https targets (the same one
/// with `proxy_url`; `HTTP_PROXY` and `HTTPS_PROXY` may differ), and the targets that go
/// direct. The default sends everything direct.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxySettings {
    /// Proxy for `http://` targets.
    pub http: Option<Proxy>,
    /// Proxy for `https://` targets.
    pub https: Option<Proxy>,
    /// Targets that never go through a proxy.
    pub no_proxy: NoProxy,
}

impl ProxySettings {
    /// The proxy `url` goes through, if any.
    pub fn route(&self, url: &Url) -> Option<&Proxy> {
        let proxy = match url.scheme() {
            "http" => self.http.as_ref(),
            "https" => self.https.as_ref(),
            _ => None,
        }?;
        let host = url.host_str()?;
        let port = url.port_or_known_default().unwrap_or(0);
        (!self.no_proxy.matches(host, port)).then_some(proxy)
    }

    /// Whether any target may go through a proxy.
    pub fn is_direct(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }
}

/// One `http://` proxy: where it listens, its credentials and the headers sent with `CONNECT`.
#[derive(Clone, PartialEq)]
pub struct Proxy {
    /// `http://host:port`, without user info.
    pub url: Url,
    /// Sent as `Proxy-Authorization: Basic …`.
    pub auth: Option<Auth>,
    /// Extra headers of each `CONNECT` request (`proxy_connect_header`).
    pub connect_headers: Vec<(String, HeaderText)>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &self.url.as_str())
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("connect_headers", &self.connect_headers)
            .finish()
    }
}

impl Proxy {
    /// The proxy as errors and logs name it: `host:port`.
    pub fn name(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// Where to connect to reach the proxy.
    pub(super) fn target(&self) -> Result<Target, ClientError> {
        Target::from_url(&self.url)
    }

    /// The `Proxy-Authorization` value, marked sensitive.
    pub(super) fn authorization(&self) -> Result<Option<HeaderValue>, ClientError> {
        self.auth
            .as_ref()
            .map(|a| {
                a.header_value().map_err(|_| ClientError::InvalidHeader {
                    name: "proxy-authorization".into(),
                    reason: "the proxy credentials cannot be sent in a header",
                })
            })
            .transpose()
    }
}

/// `no_proxy`: comma-separated host names, domains, IP addresses and CIDR ranges, each
/// optionally with `:port`, as Prometheus (Go's `httpproxy`) reads them: `example.com` matches
/// it and its subdomains, `.example.com` and `*.example.com` only subdomains, `*` everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NoProxy {
    entries: Vec<NoProxyEntry>,
}

#[derive(Clone, Debug, PartialEq)]
enum NoProxyEntry {
    All,
    Ip(IpAddr, Option<u16>),
    Cidr(IpAddr, u8),
    Domain {
        /// With a leading dot.
        suffix: String,
        /// Whether the name without the dot matches too.
        exact_too: bool,
        port: Option<u16>,
    },
}

impl NoProxy {
    /// Reads a `no_proxy` list; entries that are empty are skipped.
    pub fn parse(list: &str) -> NoProxy {
        let entries = list
            .split(',')
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty())
            .map(|e| parse_entry(&e))
            .collect();
        NoProxy { entries }
    }

    /// Whether a request to `host` (as `Url::host_str` gives it) on `port` goes direct.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let ip = match Host::parse(&host) {
            Host::Ip(ip) => Some(ip),
            Host::Domain(_) => None,
        };
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        self.entries.iter().any(|entry| match entry {
            NoProxyEntry::All => true,
            NoProxyEntry::Ip(want, p) => ip == Some(*want) && port_ok(p),
            NoProxyEntry::Cidr(net, bits) => ip.is_some_and(|ip| in_cidr(ip, *net, *bits)),
            NoProxyEntry::Domain {
                suffix,
                exact_too,
                port: p,
            } => {
                ip.is_none()
                    && (host.ends_with(suffix.as_str())
                        || (*exact_too && suffix.get(1..) == Some(host.as_str())))
                    && port_ok(p)
            }
        })
    }
}

fn parse_entry(entry: &str) -> NoProxyEntry {
    if entry == "*" {
        return NoProxyEntry::All;
    }
    if let Some((addr, bits)) = entry.split_once('/') {
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if let (Ok(ip), Ok(bits)) = (addr.parse::<IpAddr>(), bits.parse::<u8>()) {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return NoProxyEntry::Cidr(ip, bits.min(max));
        }
    }
    if let Ok(ip) = entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return NoProxyEntry::Ip(ip, None);
    }
    // `host:port`, `[v6]:port`; a bare IPv6 address was taken above.
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (entry, None),
    };
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return NoProxyEntry::Ip(ip, port);
    }
    let host = host.strip_prefix('*').unwrap_or(host);
    let (suffix, exact_too) = match host.strip_prefix('.') {
        Some(_) => (host.to_string(), false),
        None => (format!(".{host}"), true),
    };
    NoProxyEntry::Domain {
        suffix,
        exact_too,
        port,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The `CONNECT` request that opens a tunnel to `authority` (`host:port`, an IPv6 host in
/// brackets). Header values were checked when the request was built.
pub fn connect_request(
    authority: &str,
    authorization: Option<&HeaderValue>,
    headers: &[(String, HeaderText)],
) -> Vec<u8> {
    let mut out = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(value) = authorization {
        out.extend_from_slice(b"Proxy-Authorization: ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {}\r\n", value.expose()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What is wrong with a proxy's answer to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectAnswerError {
    /// The answer does not start with an HTTP/1.x status line.
    #[error("answered {0:?} instead of an HTTP/1.x status line")]
    NotHttp(String),
    /// The answer's head is longer than [`MAX_CONNECT_ANSWER`].
    #[error("answered more than {MAX_CONNECT_ANSWER} bytes of headers")]
    TooLong,
}

/// The status of a proxy's answer to `CONNECT`, from its head (everything up to the blank
/// line). Only the status line is read: a tunnel's answer has nothing else to act on.
pub fn parse_connect_answer(head: &[u8]) -> Result<u16, ConnectAnswerError> {
    if head.len() > MAX_CONNECT_ANSWER {
        return Err(ConnectAnswerError::TooLong);
    }
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let not_http = || {
        let shown: String = String::from_utf8_lossy(line).chars().take(60).collect();
        ConnectAnswerError::NotHttp(shown)
    };
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(not_http)?;
    let code = rest.get(..3).ok_or_else(not_http)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
        return Err(not_http());
    }
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(not_http)
}

/// Where a complete answer head ends in `buf` (after the blank line), if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Opens a tunnel to `target` through the proxy `tcp` is connected to. Reads the answer a
/// byte at a time: what follows the head belongs to the TLS handshake, which must not be
/// lost in a buffer.
pub(super) async fn tunnel(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    target: &Target,
) -> Result<(), ClientError> {
    let fail = |problem: String| ClientError::Proxy {
        proxy: proxy.name(),
        problem,
    };
    let host = match &target.host {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        other => other.name(),
    };
    let authority = format!("{host}:{}", target.port);
    let request = connect_request(
        &authority,
        proxy.authorization()?.as_ref(),
        &proxy.connect_headers,
    );
    tcp.write_all(&request)
        .await
        .map_err(|e| fail(format!("sending CONNECT failed: {e}")))?;
    let mut head = Vec::with_capacity(256);
    loop {
        if head.len() >= MAX_CONNECT_ANSWER {
            return Err(fail(ConnectAnswerError::TooLong.to_string()));
        }
        let byte = match tcp.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(fail(if head.is_empty() {
                    "closed the connection without answering CONNECT".to_string()
                } else {
                    "closed the connection in the middle of its answer to CONNECT".to_string()
                }));
            }
            Err(e) => return Err(fail(format!("reading its answer to CONNECT failed: {e}"))),
        };
        head.push(byte);
        if head_end(&head).is_some() {
            break;
        }
    }
    let status = parse_connect_answer(&head).map_err(|e| fail(e.to_string()))?;
    match status {
        200..=299 => Ok(()),
        407 => Err(fail(REFUSED_CREDENTIALS.into())),
        // Some proxies (tinyproxy) answer wrong credentials with 401 instead of 407.
        401 => Err(fail(
            "refused the tunnel with 401: check the user and password in proxy_url (or \
             proxy_password_file)"
                .into(),
        )),
        s => Err(fail(format!(
            "refused the tunnel to {authority} with status {s}: check that the proxy allows \
             CONNECT to this host and port"
        ))),
    }
}

/// Turns `request` (origin form) into the request a forwarding proxy takes: the absolute
/// URL as target (without user info or fragment) and the proxy's credentials.
pub(super) fn forward(
    request: &mut http::Request<Full<Bytes>>,
    url: &Url,
    proxy: &Proxy,
) -> Result<(), ClientError> {
    let mut absolute = url.clone();
    absolute.set_fragment(None);
    // Only URLs without a host refuse these, and a hop's URL has one.
    let _ = absolute.set_username("");
    let _ = absolute.set_password(None);
    *request.uri_mut() = absolute
        .as_str()
        .parse()
        .map_err(|_| ClientError::InvalidUrl {
            url: crate::secret::redact_url(url),
            reason: "the URL is not a valid request target for a proxy",
        })?;
    if let Some(value) = proxy.authorization()? {
        request
            .headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, value);
    }
    Ok(())
}

/// A 407 to a forwarded request is the proxy's refusal, not the target's answer.
pub(super) fn refused_forward<B>(
    response: &http::Response<B>,
    proxy: &Proxy,
) -> Result<(), ClientError> {
    if response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        return Err(ClientError::Proxy {
            proxy: proxy.name(),
            problem: REFUSED_CREDENTIALS.into(),
        });
    }
    Ok(())
}

const REFUSED_CREDENTIALS: &str = "answered 407 Proxy Authentication Required: check the user \
     and password in proxy_url (or proxy_password_file)";

/// A TLS handshake through a tunnel that ended without a TLS error (the connection closed or
/// was reset) is the tunnel's failure; a refused certificate stays a TLS error.
pub(super) fn closed_tunnel(e: ClientError, proxy: &Proxy) -> ClientError {
    match e {
        ClientError::Tls { server, source }
            if source
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_none()
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                ) =>
        {
            ClientError::Proxy {
                proxy: proxy.name(),
                problem: format!(
                    "the tunnel closed during the TLS handshake with {server} ({source}): the \
                     proxy or the target ended it"
                ),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn proxy() -> Proxy {
        Proxy {
            url: Url::parse("http://proxy.example:3128").unwrap(),
            auth: None,
            connect_headers: Vec::new(),
        }
    }

    #[test]
    fn no_proxy_reads_hosts_domains_ips_and_ranges() {
        let n = NoProxy::parse(
            " Example.com, .internal,*.corp, 10.0.0.0/8, 192.168.1.5, ::1, h:8080, [fd00::]/16, ,",
        );
        assert!(n.matches("example.com", 80));
        assert!(n.matches("api.example.com", 443));
        assert!(!n.matches("notexample.com", 80));
        assert!(n.matches("db.internal", 80));
        assert!(!n.matches("internal", 80));
        assert!(n.matches("a.corp", 80));
        assert!(!n.matches("corp", 80));
        assert!(n.matches("10.1.2.3", 80));
        assert!(!n.matches("11.1.2.3", 80));
        assert!(n.matches("192.168.1.5", 80));
        assert!(!n.matches("192.168.1.6", 80));
        assert!(n.matches("[::1]", 80));
        assert!(n.matches("[fd00::7]", 80));
        assert!(!n.matches("[fe80::1]", 80));
        assert!(n.matches("h", 8080));
        assert!(!n.matches("h", 9090));
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
        // Nonsense is a domain that matches nothing real, never a panic.
        assert!(!NoProxy::parse("10.0.0.0/999x, :, [, /").matches("10.0.0.1", 80));
        assert!(NoProxy::parse("10.0.0.0/0").matches("1.2.3.4", 80));
        assert!(NoProxy::parse("127.0.0.1:9090").matches("127.0.0.1", 9090));
        assert!(!NoProxy::parse("127.0.0.1:9090").matches("127.0.0.1", 9091));
    }

    #[test]
    fn routes_pick_the_scheme_proxy_unless_no_proxy_matches() {
        let p = proxy();
        let s = ProxySettings {
            http: Some(p.clone()),
            https: None,
            no_proxy: NoProxy::parse("direct.example"),
        };
        assert_eq!(s.route(&Url::parse("http://a.example/").unwrap()), Some(&p));
        assert_eq!(s.route(&Url::parse("https://a.example/").unwrap()), None);
        assert_eq!(
            s.route(&Url::parse("http://direct.example/").unwrap()),
            None
        );
        assert!(ProxySettings::default().is_direct());
    }

    #[test]
    fn connect_requests_carry_authority_credentials_and_headers() {
        let auth = Auth::Basic {
            username: "u".into(),
            password: Secret::new("p").into(),
        };
        let value = auth.header_value().unwrap();
        let text = connect_request(
            "[::1]:443",
            Some(&value),
            &[("x-trace".into(), HeaderText::Plain("1".into()))],
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\
             Proxy-Authorization: Basic dTpw\r\nx-trace: 1\r\n\r\n"
        );
    }

    #[test]
    fn connect_answers_are_read_with_bounds() {
        assert_eq!(
            parse_connect_answer(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            Ok(200)
        );
        assert_eq!(parse_connect_answer(b"HTTP/1.0 200\r\n\r\n"), Ok(200));
        assert_eq!(
            parse_connect_answer(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
            ),
            Ok(407)
        );
        for garbage in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 20\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"",
            b"\xff\xfe\x00\r\n\r\n",
        ] {
            assert!(
                matches!(
                    parse_connect_answer(garbage),
                    Err(ConnectAnswerError::NotHttp(_))
                ),
                "{garbage:?}"
            );
        }
        let long = vec![b'a'; MAX_CONNECT_ANSWER + 1];
        assert_eq!(
            parse_connect_answer(&long),
            Err(ConnectAnswerError::TooLong)
        );
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nrest"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\n"), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    proptest::proptest! {
        #[test]
        fn hostile_answers_and_lists_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            list in "[a-z0-9.:/*\\[\\], ]{0,60}",
            host in "[a-z0-9.:\\[\\]]{0,30}",
            port in proptest::prelude::any::<u16>(),
        ) {
            let _ = parse_connect_answer(&bytes);
            let _ = head_end(&bytes);
            let _ = NoProxy::parse(&list).matches(&host, port);
        }
    }

    #[test]
    fn proxies_print_without_credentials() {
        let mut p = proxy();
        p.auth = Some(Auth::Basic {
            username: "u".into(),
            password: Secret::new("hunter2").into(),
        });
        let text = format!("{p:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(p.name(), "proxy.example:3128");
    }
}
