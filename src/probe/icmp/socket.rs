//! Opening the socket an ICMP probe sends on: an unprivileged ICMP datagram socket
//! (Linux's "ping socket", allowed to the groups in `net.ipv4.ping_group_range`) or a raw
//! socket (CAP_NET_RAW), chosen by the probe's `socket` key. Everything goes through
//! socket2's safe calls; the socket is then driven by tokio as a datagram socket.
//!
//! On a ping socket the kernel writes the socket's local "port" into the identifier of
//! every request and hands the socket only the replies that carry it. The socket is bound
//! to a random port, so that identifiers stay unpredictable, and the probe matches on it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::packet::Family;
use crate::config::IcmpSocket;

/// How many random ports to try before letting the kernel choose one.
const BIND_ATTEMPTS: usize = 8;

/// The kind of socket a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenedKind {
    /// An unprivileged ICMP datagram socket.
    Unprivileged,
    /// A raw socket.
    Raw,
}

impl OpenedKind {
    /// The name shown in reports (`unprivileged` or `raw`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OpenedKind::Unprivileged => "unprivileged",
            OpenedKind::Raw => "raw",
        }
    }
}

/// What the socket is asked to do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketOptions {
    /// The family of the target.
    pub(crate) family: Family,
    /// The configured kind.
    pub(crate) wanted: IcmpSocket,
    /// Local address to send from.
    pub(crate) source: Option<IpAddr>,
    /// TTL / hop limit of the request.
    pub(crate) ttl: Option<u8>,
    /// IPv4 Don't Fragment (only a raw socket can set it).
    pub(crate) dont_fragment: bool,
}

/// An open socket, ready for one exchange.
#[derive(Debug)]
pub(crate) struct OpenedSocket {
    /// The socket, non-blocking, driven by tokio.
    pub(crate) socket: tokio::net::UdpSocket,
    /// Which kind it is.
    pub(crate) kind: OpenedKind,
    /// The identifier replies carry: the bound port of a ping socket, else a random one.
    pub(crate) ident: u16,
    /// Whether requests are sent with their own IPv4 header (`IP_HDRINCL`, for DF).
    pub(crate) header_included: bool,
}

/// Why no socket could be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// `socket = "unprivileged"` and the kernel refused.
    #[error(
        "an unprivileged ICMP socket is not allowed: {why}; widen net.ipv4.ping_group_range \
         to include the group, or set socket = \"raw\" and grant CAP_NET_RAW \
         (see docs/configuration.md, ICMP privileges)"
    )]
    UnprivilegedRefused {
        /// What the kernel's setting says, when it can be read.
        why: String,
    },
    /// `socket = "raw"` (or DF needed one) and the process lacks CAP_NET_RAW.
    #[error(
        "a raw ICMP socket{needed} needs CAP_NET_RAW (or root): grant it \
         (systemd AmbientCapabilities=CAP_NET_RAW, Kubernetes capabilities.add: [NET_RAW]){alt} \
         (see docs/configuration.md, ICMP privileges)"
    )]
    RawRefused {
        /// Why a raw socket is needed, when the configuration did not ask for one outright.
        needed: &'static str,
        /// The alternative, when there is one.
        alt: &'static str,
    },
    /// `socket = "auto"` and neither kind is allowed.
    #[error(
        "cannot open an ICMP socket: an unprivileged ICMP socket is not allowed ({why}) and a \
         raw socket needs CAP_NET_RAW; either widen net.ipv4.ping_group_range to include the \
         process' group (sysctl net.ipv4.ping_group_range=\"0 2147483647\", or Kubernetes pod \
         sysctls) or grant CAP_NET_RAW (systemd AmbientCapabilities=CAP_NET_RAW, Kubernetes \
         capabilities.add: [NET_RAW]); see docs/configuration.md, ICMP privileges"
    )]
    NeitherAllowed {
        /// What the kernel's setting says, when it can be read.
        why: String,
    },
    /// `source_ip_address` cannot be bound.
    #[error("cannot send from source_ip_address {addr}: {source}")]
    Bind {
        /// The address.
        addr: IpAddr,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
    /// Any other system error.
    #[error("cannot open an ICMP socket ({step}): {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
}

fn io_step(step: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Io { step, source }
}

/// Opens the socket `options` asks for. `random` draws the identifier (raw) or port
/// (unprivileged) candidates. Must run inside a tokio runtime.
pub(crate) fn open(
    options: &SocketOptions,
    mut random: impl FnMut() -> u16,
) -> Result<OpenedSocket, SocketError> {
    // Only a raw socket can write the IPv4 header that carries DF.
    let needs_raw = options.dont_fragment && options.family == Family::V4;
    match (options.wanted, needs_raw) {
        (IcmpSocket::Raw, _) => open_raw(options, random()).map_err(|e| raw_refusal(e, "", "")),
        (IcmpSocket::Auto, true) => open_raw(options, random()).map_err(|e| {
            raw_refusal(
                e,
                " (dont_fragment writes the IPv4 header)",
                ", or remove dont_fragment to use an unprivileged socket",
            )
        }),
        // Validation refuses dont_fragment with socket = "unprivileged"; an IPv6 target
        // ignores it.
        (IcmpSocket::Unprivileged, _) => {
            open_unprivileged(options, &mut random).map_err(|e| match e {
                Refusal::Refused => SocketError::UnprivilegedRefused {
                    why: ping_group_range_why(),
                },
                Refusal::Other(e) => e,
            })
        }
        (IcmpSocket::Auto, false) => match open_unprivileged(options, &mut random) {
            Ok(s) => Ok(s),
            Err(Refusal::Other(e)) => Err(e),
            Err(Refusal::Refused) => open_raw(options, random()).map_err(|e| match e {
                Refusal::Refused => SocketError::NeitherAllowed {
                    why: ping_group_range_why(),
                },
                Refusal::Other(e) => e,
            }),
        },
    }
}

/// A permission refusal (the caller words it) or another error.
enum Refusal {
    Refused,
    Other(SocketError),
}

impl From<SocketError> for Refusal {
    fn from(e: SocketError) -> Self {
        Refusal::Other(e)
    }
}

fn raw_refusal(e: Refusal, needed: &'static str, alt: &'static str) -> SocketError {
    match e {
        Refusal::Refused => SocketError::RawRefused { needed, alt },
        Refusal::Other(e) => e,
    }
}

fn domain_and_protocol(family: Family) -> (Domain, Protocol) {
    match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    }
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn create(family: Family, ty: Type) -> Result<Socket, Refusal> {
    let (domain, protocol) = domain_and_protocol(family);
    Socket::new(domain, ty, Some(protocol)).map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            Refusal::Refused
        } else {
            Refusal::Other(SocketError::Io {
                step: "socket",
                source: e,
            })
        }
    })
}

fn open_unprivileged(
    options: &SocketOptions,
    random: &mut impl FnMut() -> u16,
) -> Result<OpenedSocket, Refusal> {
    let socket = create(options.family, Type::DGRAM)?;
    let local = options.source.unwrap_or(unspecified(options.family));
    let mut bound = false;
    for _ in 0..BIND_ATTEMPTS {
        // Port 0 asks the kernel to choose (in sequence); a random non-zero one keeps
        // identifiers unpredictable. A port another ping socket holds (or, on a kernel that
        // guards low ports here too, a refused one) is simply tried again.
        let port = random().max(1);
        match socket.bind(&SockAddr::from(SocketAddr::new(local, port))) {
            Ok(()) => {
                bound = true;
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                ) =>
            {
                continue
            }
            Err(source) => {
                return Err(SocketError::Bind {
                    addr: local,
                    source,
                }
                .into())
            }
        }
    }
    if !bound {
        socket
            .bind(&SockAddr::from(SocketAddr::new(local, 0)))
            .map_err(|source| SocketError::Bind {
                addr: local,
                source,
            })?;
    }
    let ident = socket
        .local_addr()
        .map_err(io_step("local address"))?
        .as_socket()
        .map(|a| a.port())
        .ok_or(SocketError::Io {
            step: "local address",
            source: io::Error::other("not an IP socket address"),
        })?;
    set_ttl(&socket, options)?;
    Ok(OpenedSocket {
        socket: into_tokio(socket)?,
        kind: OpenedKind::Unprivileged,
        ident,
        header_included: false,
    })
}

fn open_raw(options: &SocketOptions, ident: u16) -> Result<OpenedSocket, Refusal> {
    let socket = create(options.family, Type::RAW)?;
    if let Some(addr) = options.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(addr, 0)))
            .map_err(|source| SocketError::Bind { addr, source })?;
    }
    let header_included = options.dont_fragment && options.family == Family::V4;
    if header_included {
        socket
            .set_header_included_v4(true)
            .map_err(io_step("IP_HDRINCL"))?;
    } else {
        set_ttl(&socket, options)?;
    }
    Ok(OpenedSocket {
        socket: into_tokio(socket)?,
        kind: OpenedKind::Raw,
        ident,
        header_included,
    })
}

fn set_ttl(socket: &Socket, options: &SocketOptions) -> Result<(), SocketError> {
    let Some(ttl) = options.ttl else {
        return Ok(());
    };
    match options.family {
        Family::V4 => socket.set_ttl_v4(u32::from(ttl)).map_err(io_step("IP_TTL")),
        Family::V6 => socket
            .set_unicast_hops_v6(u32::from(ttl))
            .map_err(io_step("IPV6_UNICAST_HOPS")),
    }
}

/// Hands the socket to tokio. A datagram socket's `send_to`/`recv_from` are exactly what
/// both kinds need, so tokio's UDP type drives them.
fn into_tokio(socket: Socket) -> Result<tokio::net::UdpSocket, SocketError> {
    socket
        .set_nonblocking(true)
        .map_err(io_step("non-blocking"))?;
    tokio::net::UdpSocket::from_std(socket.into()).map_err(io_step("register with tokio"))
}

/// Where Linux keeps the range of groups allowed unprivileged ICMP sockets.
const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Words for a refusal: the kernel's range and this process' groups, as far as they can be
/// read (a hardened service may not see /proc/sys).
fn ping_group_range_why() -> String {
    let range = std::fs::read_to_string(PING_GROUP_RANGE).ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    describe_refusal(range.as_deref(), status.as_deref())
}

/// Whether `net.ipv4.ping_group_range` lets this process open unprivileged ICMP sockets;
/// `None` when the range or the process' groups cannot be read.
pub fn ping_group_range_allows_this_process() -> Option<bool> {
    let range = parse_range(&std::fs::read_to_string(PING_GROUP_RANGE).ok()?)?;
    let gids = parse_gids(&std::fs::read_to_string("/proc/self/status").ok()?);
    Some(range_allows(range, &gids))
}

/// Reads `net.ipv4.ping_group_range` ("low high").
pub(crate) fn parse_range(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split_whitespace();
    let low = parts.next()?.parse().ok()?;
    let high = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((low, high))
}

/// The effective group and the supplementary groups from `/proc/self/status`.
pub(crate) fn parse_gids(status: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Gid:") {
            // real, effective, saved, filesystem: the kernel checks the effective one.
            out.extend(
                rest.split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse::<u32>().ok()),
            );
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            out.extend(
                rest.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Whether any of `gids` lies within `range` (an empty range, such as the kernel's default
/// "1 0", allows none).
pub(crate) fn range_allows((low, high): (u32, u32), gids: &[u32]) -> bool {
    gids.iter().any(|g| (low..=high).contains(g))
}

/// The refusal in words, from the texts of the range and of `/proc/self/status`.
pub(crate) fn describe_refusal(range: Option<&str>, status: Option<&str>) -> String {
    let gids = status.map(parse_gids).unwrap_or_default();
    let groups = match gids.first() {
        Some(gid) => format!("group {gid}"),
        None => "its group".to_string(),
    };
    match range.map(|r| (r.trim(), parse_range(r))) {
        Some((text, Some(range))) if !range_allows(range, &gids) => format!(
            "net.ipv4.ping_group_range is \"{text}\", which does not include the process' {groups}"
        ),
        Some((text, _)) => {
            format!("the kernel refused it (net.ipv4.ping_group_range is \"{text}\")")
        }
        None => format!(
            "the kernel refused it (net.ipv4.ping_group_range cannot be read; it must include \
             the process' {groups})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tpushprobe\nUid:\t1000\t1000\t1000\t1000\n\
                          Gid:\t1000\t1001\t1000\t1000\nGroups:\t27 100\n";

    #[test]
    fn the_range_and_groups_are_read_from_their_texts() {
        assert_eq!(parse_range("1\t0\n"), Some((1, 0)));
        assert_eq!(parse_range("0 2147483647"), Some((0, 2_147_483_647)));
        assert_eq!(parse_range("0"), None);
        assert_eq!(parse_range("a b"), None);
        assert_eq!(parse_range("0 1 2"), None);
        assert_eq!(parse_gids(STATUS), vec![1001, 27, 100]);
        assert_eq!(parse_gids("Gid:\n"), Vec::<u32>::new());
    }

    #[test]
    fn the_default_range_allows_nobody() {
        assert!(!range_allows((1, 0), &[0, 1, 1000]));
        assert!(range_allows((0, 2_147_483_647), &[0]));
        assert!(range_allows((100, 100), &[1001, 100]));
        assert!(!range_allows((0, 10), &[]));
    }

    #[test]
    fn refusals_say_what_the_kernel_allows() {
        let why = describe_refusal(Some("1\t0\n"), Some(STATUS));
        assert_eq!(
            why,
            "net.ipv4.ping_group_range is \"1\t0\", which does not include the process' group 1001"
        );
        let why = describe_refusal(None, None);
        assert!(why.contains("cannot be read"), "{why}");
        let why = describe_refusal(Some("0 2147483647"), Some(STATUS));
        assert!(why.starts_with("the kernel refused it"), "{why}");
    }

    #[test]
    fn errors_name_both_ways_out() {
        let e = SocketError::NeitherAllowed {
            why: "net.ipv4.ping_group_range is \"1 0\"".into(),
        }
        .to_string();
        for part in [
            "ping_group_range",
            "CAP_NET_RAW",
            "NET_RAW",
            "AmbientCapabilities",
        ] {
            assert!(e.contains(part), "{part} missing: {e}");
        }
        let e = SocketError::RawRefused {
            needed: "",
            alt: "",
        }
        .to_string();
        assert!(e.starts_with("a raw ICMP socket needs CAP_NET_RAW"), "{e}");
    }
}
