//! A small DNS client: one question to one named server, over UDP, TCP, or UDP with a
//! retry over TCP when the answer comes back truncated (the `TC` bit), as stub resolvers do.
//!
//! - [`message`]: the pure half: a query's bytes, an answer checked against its query (ID
//!   and question) and decoded into plain [`Answer`] data with each record's text form;
//! - [`resolv_conf`]: the system's default server, the first `nameserver` of
//!   `/etc/resolv.conf`;
//! - this file: [`Client`], the transports over tokio sockets, and [`DnsError`].
//!
//! Messages are built and parsed with `hickory-proto`; the sockets are ours, so that every
//! phase is timed and every datagram that is not the answer is seen and counted. Answers are
//! hostile input: a datagram with another ID (stale, spoofed) or another question is
//! ignored and the wait goes on until the deadline; bytes that do not decode are a
//! [`DnsError::Malformed`]; sizes are bounded by the protocol (64 KiB).
//!
//! ```no_run
//! # async fn lookup() -> Result<(), pushprobe::dns::DnsError> {
//! use pushprobe::dns::{Client, RecordType, Transport};
//! let client = Client::new("127.0.0.1:53".parse().unwrap(), Transport::UdpThenTcp);
//! let answer = client.query("_http._tcp.example.com", RecordType::SRV).await?;
//! for record in &answer.answers {
//!     println!("{}", record.text());
//! }
//! # Ok(()) }
//! ```

pub mod message;
pub mod resolv_conf;

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

pub use hickory_proto::rr::{DNSClass, RecordType};
pub use message::{Answer, Question, Record, RecordData};

use message::Decoded;

use crate::config::IpProtocol;

/// The largest DNS message: TCP's length prefix is 16 bits, and no datagram is larger.
pub const MAX_MESSAGE_BYTES: usize = 65_535;

/// The deadline of a query when none is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ignored messages one exchange describes in its error; the count goes on.
const MAX_IGNORED_NOTES: usize = 3;

/// How a query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP only; a truncated answer is returned as it came, with [`Answer::truncated`] set.
    Udp,
    /// TCP only, each message behind a two-byte length.
    Tcp,
    /// UDP, then the same question over TCP when the answer is truncated.
    UdpThenTcp,
}

impl Transport {
    /// `udp`, `tcp` or `udp+tcp`, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::UdpThenTcp => "udp+tcp",
        }
    }
}

/// Why a query got no usable answer. Every variant names the server and what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The name cannot be sent as a DNS name.
    #[error("cannot ask {server} about {name:?}: {message}")]
    InvalidName {
        /// The server that would have been asked.
        server: SocketAddr,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// The server's host name did not resolve to a usable address.
    #[error("cannot resolve DNS server {server}: {message}")]
    Resolve {
        /// The server as written.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// No socket to the server (refused TCP connection, no route, no local address).
    #[error("cannot reach DNS server {server} over {transport}: {source}")]
    Connect {
        /// The server.
        server: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed (e.g. UDP port unreachable, TCP reset).
    #[error("DNS server {server} over {transport}, asking {name}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The name asked about.
        name: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No answer to this query before the deadline.
    #[error("no answer from DNS server {server} over {transport} for {name} within {timeout:?}{}",
        ignored_suffix(*.ignored, .notes))]
    Timeout {
        /// The server.
        server: SocketAddr,
        /// The transport in use when time ran out.
        transport: &'static str,
        /// The name asked about.
        name: String,
        /// The deadline.
        timeout: Duration,
        /// Messages received and ignored (another ID or question).
        ignored: u32,
        /// What the first ignored messages were.
        notes: Vec<String>,
    },
    /// The server answered with bytes that are not a well-formed answer.
    #[error("malformed answer from DNS server {server} over {transport} for {name}: {detail}")]
    Malformed {
        /// The server.
        server: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The name asked about.
        name: String,
        /// What was wrong.
        detail: String,
    },
}

fn ignored_suffix(ignored: u32, notes: &[String]) -> String {
    if ignored == 0 {
        return String::new();
    }
    let plural = if ignored == 1 { "" } else { "s" };
    format!(
        " (ignored {ignored} message{plural} not answering it: {})",
        notes.join("; ")
    )
}

impl DnsError {
    /// A short word for the failure: `resolve`, `connect`, `io`, `timeout`, `malformed`,
    /// `invalid_name`.
    pub fn kind(&self) -> &'static str {
        match self {
            DnsError::InvalidName { .. } => "invalid_name",
            DnsError::Resolve { .. } => "resolve",
            DnsError::Connect { .. } => "connect",
            DnsError::Io { .. } => "io",
            DnsError::Timeout { .. } => "timeout",
            DnsError::Malformed { .. } => "malformed",
        }
    }
}

/// How an exchange went, filled in as it goes so that a failed one is measured too.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    /// Setting up sockets (UDP bind and connect; the TCP handshake), summed over transports.
    pub connect: Duration,
    /// From sending the query to the answer (or the failure), summed over transports.
    pub request: Duration,
    /// Messages received and ignored because they did not answer this query.
    pub ignored: u32,
    /// Whether a truncated UDP answer was asked again over TCP.
    pub retried_over_tcp: bool,
    /// The transport of the last attempt (`udp` or `tcp`); empty before any.
    pub transport: &'static str,
}

/// A DNS client bound to one server.
#[derive(Debug, Clone)]
pub struct Client {
    server: SocketAddr,
    transport: Transport,
    timeout: Duration,
}

impl Client {
    /// A client asking `server` over `transport`, with [`DEFAULT_TIMEOUT`].
    pub fn new(server: SocketAddr, transport: Transport) -> Self {
        Client {
            server,
            transport,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another deadline per query (both transports included).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server asked.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Asks for `name`'s records of `record_type` (class `IN`, recursion desired).
    pub async fn query(&self, name: &str, record_type: RecordType) -> Result<Answer, DnsError> {
        self.exchange(&Question::new(name, record_type), &mut Timing::default())
            .await
    }

    /// Asks `question`, recording phases and ignored messages into `timing`.
    pub async fn exchange(
        &self,
        question: &Question,
        timing: &mut Timing,
    ) -> Result<Answer, DnsError> {
        self.exchange_by(question, Instant::now() + self.timeout, timing)
            .await
    }

    /// Asks `question` with an earlier deadline (what is left of a caller's own budget,
    /// e.g. after resolving the server); a timeout still names the client's timeout.
    pub async fn exchange_by(
        &self,
        question: &Question,
        deadline: Instant,
        timing: &mut Timing,
    ) -> Result<Answer, DnsError> {
        let deadline = deadline.min(Instant::now() + self.timeout);
        let id = random_id();
        let query =
            message::encode_query(id, question).map_err(|message| DnsError::InvalidName {
                server: self.server,
                name: question.name.clone(),
                message,
            })?;
        let mut attempt = Attempt {
            server: self.server,
            id,
            question,
            query: &query,
            deadline,
            timeout: self.timeout,
            notes: Vec::new(),
        };
        match self.transport {
            Transport::Tcp => attempt.tcp(timing).await,
            Transport::Udp => attempt.udp(timing).await,
            Transport::UdpThenTcp => {
                let answer = attempt.udp(timing).await?;
                if !answer.truncated {
                    return Ok(answer);
                }
                timing.retried_over_tcp = true;
                attempt.tcp(timing).await
            }
        }
    }
}

/// One query's state across its transports.
struct Attempt<'a> {
    server: SocketAddr,
    id: u16,
    question: &'a Question,
    query: &'a [u8],
    deadline: Instant,
    timeout: Duration,
    notes: Vec<String>,
}

impl Attempt<'_> {
    fn timeout_error(&self, transport: &'static str, timing: &Timing) -> DnsError {
        DnsError::Timeout {
            server: self.server,
            transport,
            name: self.question.name.clone(),
            timeout: self.timeout,
            ignored: timing.ignored,
            notes: self.notes.clone(),
        }
    }

    fn io_error(&self, transport: &'static str, source: std::io::Error) -> DnsError {
        // Over UDP, "refused" is the ICMP port-unreachable answer to the query: nothing
        // listens there, which is the same failure as a refused TCP connection.
        if source.kind() == std::io::ErrorKind::ConnectionRefused {
            return DnsError::Connect {
                server: self.server,
                transport,
                source,
            };
        }
        DnsError::Io {
            server: self.server,
            transport,
            name: self.question.name.clone(),
            source,
        }
    }

    /// Judges one received message: `Some` ends the wait, `None` ignores it.
    fn judge(
        &mut self,
        bytes: &[u8],
        transport: &'static str,
        timing: &mut Timing,
    ) -> Option<Result<Answer, DnsError>> {
        let note = match message::decode_answer(bytes, self.id, self.question) {
            Decoded::Answer(a) => return Some(Ok(a)),
            Decoded::Malformed(detail) => {
                return Some(Err(DnsError::Malformed {
                    server: self.server,
                    transport,
                    name: self.question.name.clone(),
                    detail,
                }))
            }
            Decoded::OtherId(got) => format!("ID {got}, expected {}", self.id),
            Decoded::OtherQuestion(q) => format!("an answer about {q}"),
        };
        timing.ignored = timing.ignored.saturating_add(1);
        tracing::debug!(server = %self.server, transport, %note, "ignored a DNS message");
        if self.notes.len() < MAX_IGNORED_NOTES {
            self.notes.push(note);
        }
        None
    }

    async fn udp(&mut self, timing: &mut Timing) -> Result<Answer, DnsError> {
        const UDP: &str = "udp";
        timing.transport = UDP;
        let started = Instant::now();
        let local: SocketAddr = match self.server.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let connect_error = |source| DnsError::Connect {
            server: self.server,
            transport: UDP,
            source,
        };
        let socket = UdpSocket::bind(local).await.map_err(connect_error)?;
        // A connected socket receives only the server's datagrams: others never reach us.
        socket.connect(self.server).await.map_err(connect_error)?;
        timing.connect += started.elapsed();

        let sent = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, async {
            socket
                .send(self.query)
                .await
                .map_err(|e| self.io_error(UDP, e))?;
            let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
            loop {
                let n = socket
                    .recv(&mut buf)
                    .await
                    .map_err(|e| self.io_error(UDP, e))?;
                if let Some(done) = self.judge(buf.get(..n).unwrap_or(&[]), UDP, timing) {
                    return done;
                }
            }
        })
        .await;
        timing.request += sent.elapsed();
        match result {
            Ok(done) => done,
            Err(_) => Err(self.timeout_error(UDP, timing)),
        }
    }

    async fn tcp(&mut self, timing: &mut Timing) -> Result<Answer, DnsError> {
        const TCP: &str = "tcp";
        timing.transport = TCP;
        let started = Instant::now();
        let stream = tokio::time::timeout_at(self.deadline, TcpStream::connect(self.server)).await;
        timing.connect += started.elapsed();
        let mut stream = match stream {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(DnsError::Connect {
                    server: self.server,
                    transport: TCP,
                    source,
                })
            }
            Err(_) => return Err(self.timeout_error(TCP, timing)),
        };
        let sent = Instant::now();
        let result = tokio::time::timeout_at(self.deadline, async {
            // The query is a few hundred bytes at most: its length always fits the prefix.
            let len = u16::try_from(self.query.len()).unwrap_or(u16::MAX);
            let mut framed = Vec::with_capacity(self.query.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(self.query);
            stream
                .write_all(&framed)
                .await
                .map_err(|e| self.io_error(TCP, e))?;
            loop {
                let bytes = match read_framed(&mut stream).await {
                    Ok(b) => b,
                    Err(Framing::Io(e)) => return Err(self.io_error(TCP, e)),
                    Err(Framing::Short(detail)) => {
                        return Err(DnsError::Malformed {
                            server: self.server,
                            transport: TCP,
                            name: self.question.name.clone(),
                            detail,
                        })
                    }
                };
                if let Some(done) = self.judge(&bytes, TCP, timing) {
                    return done;
                }
            }
        })
        .await;
        timing.request += sent.elapsed();
        match result {
            Ok(done) => done,
            Err(_) => Err(self.timeout_error(TCP, timing)),
        }
    }
}

enum Framing {
    Io(std::io::Error),
    Short(String),
}

/// Reads one length-prefixed message; the prefix bounds it to 64 KiB.
async fn read_framed(stream: &mut TcpStream) -> Result<Vec<u8>, Framing> {
    let mut prefix = [0u8; 2];
    read_full(stream, &mut prefix, "length prefix").await?;
    let len = usize::from(u16::from_be_bytes(prefix));
    let mut bytes = vec![0u8; len];
    read_full(stream, &mut bytes, "message").await?;
    Ok(bytes)
}

async fn read_full(stream: &mut TcpStream, buf: &mut [u8], what: &str) -> Result<(), Framing> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).unwrap_or(&mut []);
        match stream.read(rest).await {
            Ok(0) => {
                return Err(Framing::Short(format!(
                    "connection closed after {filled} of {} bytes of the {what}",
                    buf.len()
                )))
            }
            Ok(n) => filled += n,
            Err(e) => return Err(Framing::Io(e)),
        }
    }
    Ok(())
}

/// A query ID nobody off the path can guess: std's randomly keyed hasher over a counter
/// and the clock (an ID must be unpredictable, not cryptographically strong; RFC 5452).
fn random_id() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    h.write_u32(nanos);
    (h.finish() & 0xffff) as u16
}

/// Splits `host:port`, `[v6]:port` or a bare host (then `default_port`).
pub fn split_host_port(server: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = server.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number"))?;
            (host.trim_start_matches('[').trim_end_matches(']'), port)
        }
        None => (server, default_port),
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(':') {
        return Err(format!(
            "{server:?} is not host:port (write an IPv6 address as [addr]:port)"
        ));
    }
    Ok((host.to_string(), port))
}

/// Resolves a server's host to one address, preferring `preferred` and, when `fallback`,
/// taking the other IP version if that is all there is (as the blackbox exporter does).
pub async fn resolve_server(
    host: &str,
    port: u16,
    preferred: IpProtocol,
    fallback: bool,
) -> Result<SocketAddr, DnsError> {
    let error = |message: String| DnsError::Resolve {
        server: format!("{host}:{port}"),
        message,
    };
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| error(e.to_string()))?
            .collect(),
    };
    pick_address(&addrs, preferred, fallback).ok_or_else(|| {
        let want = match preferred {
            IpProtocol::Ip4 => "IPv4",
            IpProtocol::Ip6 => "IPv6",
        };
        error(if addrs.is_empty() {
            "no addresses".into()
        } else {
            format!("no {want} address, and ip_protocol_fallback is off")
        })
    })
}

/// The first address of the preferred version, else (with `fallback`) the first at all.
pub fn pick_address(
    addrs: &[SocketAddr],
    preferred: IpProtocol,
    fallback: bool,
) -> Option<SocketAddr> {
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    let (ip, _) = preferred.choose(&ips, fallback)?;
    addrs.iter().find(|a| a.ip() == ip).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:5353", 53),
            Ok(("127.0.0.1".into(), 5353))
        );
        assert_eq!(split_host_port("10.0.0.1", 53), Ok(("10.0.0.1".into(), 53)));
        assert_eq!(split_host_port("[::1]:54", 53), Ok(("::1".into(), 54)));
        assert_eq!(split_host_port("::1", 53), Ok(("::1".into(), 53)));
        assert_eq!(
            split_host_port("ns.example.com", 53),
            Ok(("ns.example.com".into(), 53))
        );
        assert_eq!(
            split_host_port("ns.example.com:5300", 53),
            Ok(("ns.example.com".into(), 5300))
        );
        assert!(split_host_port("ns:port", 53).is_err());
        assert!(split_host_port("", 53).is_err());
        assert!(split_host_port("a b:53", 53).is_err());
    }

    #[test]
    fn addresses_follow_the_preferred_protocol_and_fallback() {
        let v4: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!(pick_address(&[v4, v6], IpProtocol::Ip6, true), Some(v6));
        assert_eq!(pick_address(&[v4], IpProtocol::Ip6, true), Some(v4));
        assert_eq!(pick_address(&[v4], IpProtocol::Ip6, false), None);
        assert_eq!(pick_address(&[v6, v4], IpProtocol::Ip4, false), Some(v4));
        assert_eq!(pick_address(&[], IpProtocol::Ip4, true), None);
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_id()).collect();
        assert!(ids.len() > 32, "{}", ids.len());
    }

    #[test]
    fn timeouts_explain_what_was_ignored() {
        let e = DnsError::Timeout {
            server: "127.0.0.1:53".parse().unwrap(),
            transport: "udp",
            name: "example.com".into(),
            timeout: Duration::from_secs(1),
            ignored: 2,
            notes: vec!["ID 1, expected 2".into(), "ID 3, expected 2".into()],
        };
        assert_eq!(
            e.to_string(),
            "no answer from DNS server 127.0.0.1:53 over udp for example.com within 1s \
             (ignored 2 messages not answering it: ID 1, expected 2; ID 3, expected 2)"
        );
        assert_eq!(e.kind(), "timeout");
    }
}
