//! The connection under a hop: where a URL goes ([`Host`] and port, plain or TLS), name
//! resolution with IPv4 preferred, the TCP connect, the rustls handshake and what it
//! established, and the connection a caller keeps between calls ([`KeepAlive`]).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{ClientError, TlsInfo};
use crate::config::IpProtocol;

/// Largest read buffer of a kept connection's HTTP/1.1 layer: a few reads per body of a node
/// exporter's size. It also bounds the response head, which exporters keep to a few hundred
/// bytes. (The buffers exist only while a request is under way: see [`KeepAlive`].)
pub const KEPT_READ_BUFFER: usize = 8 * 1024;

/// The connection a caller keeps between calls to one origin (see
/// [`HttpClient::send_with`](super::HttpClient::send_with)). Dropping it closes the connection.
///
/// Between calls it holds the bare stream, not an HTTP/1.1 connection: hyper's read and write
/// buffers (8 KiB each at least) and the task driving them exist only while a request is under
/// way, and hand the stream back once the response has been read and the connection is idle.
/// A scraper keeps one connection per target, so idle buffers would cost 16 KiB and more per
/// target for the seconds between scrapes.
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

    /// Takes the held connection's stream if it goes to `target` and can take a request now:
    /// its previous response was read to the end with the connection left open by both sides
    /// (its task has handed the stream back), the server has not closed it since, and nothing
    /// unasked-for arrived on it. Anything else is dropped, which closes it.
    pub(super) fn take_idle(&mut self, target: &Target) -> Option<IdleConn> {
        let KeptConn {
            target: kept_for,
            addr,
            tls,
            mut task,
        } = self.conn.take()?;
        if kept_for != *target || !task.0.is_finished() {
            return None;
        }
        // Finished: the output is there, and taking it does not wait.
        let stream = (&mut task.0).now_or_never()?.ok()??;
        stream.is_open_and_quiet().then_some(IdleConn {
            target: kept_for,
            addr,
            tls,
            stream,
        })
    }

    /// Holds the connection whose request `task` drives, closing the one held before, if any.
    pub(super) fn hold(
        &mut self,
        target: Target,
        addr: SocketAddr,
        tls: Option<TlsInfo>,
        task: ConnTask<Option<Stream>>,
    ) {
        self.conn = Some(KeptConn {
            target,
            addr,
            tls,
            task,
        });
    }
}

/// A connection held between calls, with what a hop on it reports.
struct KeptConn {
    /// Where it goes: only a request to the same target may use it.
    target: Target,
    /// The address it is connected to.
    addr: SocketAddr,
    /// What its TLS handshake established, reported again by every hop on it.
    tls: Option<TlsInfo>,
    /// Drives the latest request; ends with the stream once the connection is idle and
    /// reusable, with `None` once it is not. Dropping it closes the connection.
    task: ConnTask<Option<Stream>>,
}

/// A kept connection taken for a request: its stream, idle, and what a hop on it reports.
pub(super) struct IdleConn {
    /// Where it goes.
    pub(super) target: Target,
    /// The address it is connected to.
    pub(super) addr: SocketAddr,
    /// What its TLS handshake established.
    pub(super) tls: Option<TlsInfo>,
    /// The stream, between two requests.
    pub(super) stream: Stream,
}

/// The task that drives a connection; aborted on drop so that an abandoned endless body
/// cannot keep a socket open.
pub(super) struct ConnTask<T = ()>(pub(super) JoinHandle<T>);

impl<T> Drop for ConnTask<T> {
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
    pub(super) fn name(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Domain(d) => d.clone(),
        }
    }
}

/// Where one hop goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// The host to connect to.
    pub(super) host: Host,
    /// The port, the scheme's default unless the URL names one.
    pub(super) port: u16,
    /// Whether the connection speaks TLS (https).
    pub(super) tls: bool,
}

impl Target {
    /// Where `url` goes; an error for a URL that is not http or https or lacks a host.
    pub(super) fn from_url(url: &Url) -> Result<Target, ClientError> {
        let invalid = |reason| ClientError::InvalidUrl {
            url: crate::secret::redact_url(url),
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
    IpPreference::default().order(addrs)
}

/// Which address family a call connects over: `preferred` first, the other one only with
/// `fallback`. The default (IPv4 first, IPv6 when there is no IPv4 address) is what
/// [`preference_order`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPreference {
    /// The family tried first.
    pub preferred: IpProtocol,
    /// Whether the other family is used when the preferred one has no address.
    pub fallback: bool,
}

impl Default for IpPreference {
    fn default() -> Self {
        IpPreference {
            preferred: IpProtocol::Ip4,
            fallback: true,
        }
    }
}

impl IpPreference {
    /// `addrs` in the order to try them: the preferred family first, each family in resolver
    /// order; without `fallback`, the preferred family only (possibly none).
    pub fn order(self, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut ordered: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| self.preferred.matches(&a.ip()))
            .collect();
        if self.fallback {
            ordered.extend(
                addrs
                    .iter()
                    .copied()
                    .filter(|a| !self.preferred.matches(&a.ip())),
            );
        }
        ordered
    }
}

/// The target's addresses in the order `ip` gives; never empty.
pub(super) async fn resolve(
    target: &Target,
    ip: IpPreference,
) -> Result<Vec<SocketAddr>, ClientError> {
    let (name, addrs) = match &target.host {
        Host::Ip(addr) => (addr.to_string(), vec![SocketAddr::new(*addr, target.port)]),
        Host::Domain(name) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), target.port))
                .await
                .map_err(|source| ClientError::Resolve {
                    host: name.clone(),
                    source,
                })?
                .collect();
            (name.clone(), addrs)
        }
    };
    if addrs.is_empty() {
        return Err(ClientError::NoAddress {
            host: name,
            family: None,
        });
    }
    let ordered = ip.order(&addrs);
    if ordered.is_empty() {
        return Err(ClientError::NoAddress {
            host: name,
            family: Some(ip.preferred.as_str()),
        });
    }
    Ok(ordered)
}

/// Connects to the first of `addrs` that accepts; the last failure when none does.
pub(super) async fn connect(
    addrs: impl IntoIterator<Item = SocketAddr>,
    host: &Host,
) -> Result<(SocketAddr, TcpStream), ClientError> {
    let mut failed = None;
    for addr in addrs {
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
        host: host.name(),
        family: None,
    }))
}

/// The TLS handshake with the server, checking its certificate against `name`.
pub(super) async fn handshake(
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

/// The protocol version as the blackbox exporter labels it.
fn tls_version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        Some(rustls::ProtocolVersion::TLSv1_1) => "TLS 1.1",
        Some(rustls::ProtocolVersion::TLSv1_0) => "TLS 1.0",
        _ => "unknown",
    }
}

/// What the handshake of `tls` established, for the trace.
pub(crate) fn tls_info(tls: &TlsStream<TcpStream>) -> TlsInfo {
    let (_, conn) = tls.get_ref();
    TlsInfo {
        version: tls_version_name(conn.protocol_version()),
        earliest_cert_expiry: conn
            .peer_certificates()
            .and_then(|chain| super::cert::earliest_not_after(chain.iter().map(|c| c.as_ref()))),
    }
}

/// A plain or TLS connection, so that hyper sees one stream type.
pub(super) enum Stream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle stream can carry a request: the server has not closed it (the read
    /// side is not at its end) and sent nothing unasked-for. Looks without waiting, and
    /// without consuming anything: on a TLS stream, pending bytes may be records rustls has
    /// yet to read (a TLS 1.3 session ticket), so only the end of the stream counts there.
    fn is_open_and_quiet(&self) -> bool {
        let (tcp, tls) = match self {
            Stream::Plain(s) => (s, false),
            Stream::Tls(s) => (s.get_ref().0, true),
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_peek(&mut cx, &mut buf) {
            // Nothing to read: idle, as it should be.
            Poll::Pending => true,
            Poll::Ready(Ok(0)) => false,
            Poll::Ready(Ok(_)) => tls,
            Poll::Ready(Err(_)) => false,
        }
    }
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
    fn the_preferred_family_goes_first_and_alone_without_fallback() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let v6b: SocketAddr = "[fe80::1]:80".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let ip6 = |fallback| IpPreference {
            preferred: IpProtocol::Ip6,
            fallback,
        };
        assert_eq!(ip6(true).order(&[v4, v6, v6b]), vec![v6, v6b, v4]);
        assert_eq!(ip6(true).order(&[v4]), vec![v4]);
        assert_eq!(ip6(false).order(&[v4, v6]), vec![v6]);
        assert!(ip6(false).order(&[v4]).is_empty());
        let ip4_only = IpPreference {
            preferred: IpProtocol::Ip4,
            fallback: false,
        };
        assert!(ip4_only.order(&[v6]).is_empty());
    }

    #[tokio::test]
    async fn an_address_of_the_wrong_family_is_refused_without_fallback() {
        let target = Target::from_url(&url("http://127.0.0.1:80/")).unwrap();
        let only_v6 = IpPreference {
            preferred: IpProtocol::Ip6,
            fallback: false,
        };
        let e = resolve(&target, only_v6).await.unwrap_err();
        assert_eq!(e.kind(), "resolve");
        assert!(e.to_string().contains("no ip6 address"), "{e}");
        let fallback = IpPreference {
            fallback: true,
            ..only_v6
        };
        assert_eq!(resolve(&target, fallback).await.unwrap().len(), 1);
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
}
