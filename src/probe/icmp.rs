//! ICMP probe (`kind = "icmp"`): one echo request per run, recorded as the blackbox
//! exporter's `icmp` prober records it.
//!
//! A run resolves the target (preferred family first, the other one as fallback), opens a
//! socket (`socket.rs`), sends one echo request with a random identifier, a random sequence
//! and a random cookie at the head of its payload, and waits for the reply that carries all
//! three back, ignoring every other packet: other pingers on the host, late replies to
//! earlier runs, and NATs that hand identifiers to the wrong socket. Everything happens
//! within the probe's timeout. The bytes are built and read by `packet.rs` (pure).
//!
//! Every series carries `probe`, `instance` (the target as configured) and the probe's
//! extra labels. Per run: `probe_success`, `probe_duration_seconds`,
//! `probe_icmp_duration_seconds{phase="resolve|setup|rtt"}` (0 for a phase that did not
//! finish), `probe_ip_protocol` (4 or 6, 0 when resolution failed), `probe_ip_addr_hash`
//! (FNV-1a of the address, to see it change), `probe_dns_lookup_time_seconds`, and
//! `probe_icmp_reply_hop_limit` when the reply's TTL is known: a raw IPv4 socket delivers
//! the IP header, which carries it. Unprivileged sockets and ICMPv6 deliver the ICMP message
//! alone; the TTL would take a control message (`IP_RECVTTL`/`IPV6_RECVHOPLIMIT`) that
//! cannot be read without `unsafe`, so the series is absent there.

pub(crate) mod packet;
pub(crate) mod socket;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use self::packet::{Echo, Family, Match};
use self::socket::{OpenedKind, OpenedSocket, SocketError, SocketOptions};
use super::address::ip_hash;
use super::http::{IP_PROTOCOL, PROBE_DURATION, PROBE_SUCCESS};
use super::{Detail, ProbeReport};
use crate::config::{IcmpProbeSettings, IpProtocol};
use crate::series::{LabelError, MetricType, Registry};

pub use self::socket::ping_group_range_allows_this_process;

/// Seconds per `phase` (`resolve`, `setup`, `rtt`).
pub const ICMP_DURATION: &str = "probe_icmp_duration_seconds";
/// TTL (IPv4) or hop limit (IPv6) of the reply, when the socket reports it.
pub const ICMP_REPLY_HOP_LIMIT: &str = "probe_icmp_reply_hop_limit";
/// FNV-1a hash of the address probed.
pub const IP_ADDR_HASH: &str = "probe_ip_addr_hash";
/// Seconds the resolution took.
pub const DNS_LOOKUP_TIME: &str = "probe_dns_lookup_time_seconds";

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
        ICMP_DURATION,
        MetricType::Gauge,
        "Duration of icmp request by phase",
    ),
    (
        ICMP_REPLY_HOP_LIMIT,
        MetricType::Gauge,
        "Replied packet hop limit (TTL for ipv4)",
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
        DNS_LOOKUP_TIME,
        MetricType::Gauge,
        "Returns the time taken for probe dns lookup in seconds",
    ),
];

/// The phases of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Resolve,
    Setup,
    Rtt,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Setup => "setup",
            Phase::Rtt => "rtt",
        }
    }

    /// What the run was doing, for a timeout's message.
    fn doing(self) -> &'static str {
        match self {
            Phase::Resolve => "resolving the target",
            Phase::Setup => "opening the socket",
            Phase::Rtt => "waiting for the echo reply",
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
enum IcmpError {
    /// The name did not resolve.
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The name resolved, but to no address of an allowed family.
    #[error("{target} has no {family} address{hint}")]
    NoAddress {
        target: String,
        family: &'static str,
        hint: &'static str,
    },
    /// `source_ip_address` and the target are of different families.
    #[error(
        "source_ip_address {source_ip} cannot reach {addr}: they are of different IP versions; \
         set preferred_ip_protocol to match, or change source_ip_address"
    )]
    SourceFamily { source_ip: IpAddr, addr: IpAddr },
    /// No socket.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The request does not fit a datagram.
    #[error("payload_size {0} is too large for an IPv4 datagram")]
    TooLarge(usize),
    /// Sending failed (unreachable network, message too long with DF, …).
    #[error("cannot send the echo request to {addr}: {source}")]
    Send {
        addr: IpAddr,
        #[source]
        source: std::io::Error,
    },
    /// Receiving failed.
    #[error("cannot receive from {addr}: {source}")]
    Receive {
        addr: IpAddr,
        #[source]
        source: std::io::Error,
    },
    /// The deadline passed.
    #[error("timed out after {timeout:?} {}", phase.doing())]
    Timeout { phase: Phase, timeout: Duration },
}

impl IcmpError {
    /// The short status `check` shows.
    fn kind(&self) -> &'static str {
        match self {
            IcmpError::Resolve { .. } | IcmpError::NoAddress { .. } => "resolve",
            IcmpError::SourceFamily { .. } | IcmpError::Socket(_) | IcmpError::TooLarge(_) => {
                "socket"
            }
            IcmpError::Send { .. } => "send",
            IcmpError::Receive { .. } => "receive",
            IcmpError::Timeout { .. } => "timeout",
        }
    }
}

/// What a run found, filled in as it goes so that a timeout keeps what came before it.
#[derive(Debug, Default)]
struct Facts {
    phase: Option<Phase>,
    resolve: Duration,
    setup: Duration,
    rtt: Duration,
    addr: Option<IpAddr>,
    socket: Option<OpenedKind>,
    ident: Option<u16>,
    hop_limit: Option<u8>,
    /// Packets seen and set aside while waiting (not ours, or unreadable).
    ignored: u64,
}

/// An ICMP echo probe.
#[derive(Debug)]
pub struct IcmpProbe {
    settings: IcmpProbeSettings,
    /// `probe`, `instance` and the extra labels, in that order.
    labels: Vec<(String, String)>,
}

impl IcmpProbe {
    /// Builds the probe. Sockets are opened per run: a privilege change (a widened
    /// `ping_group_range`) takes effect without a restart.
    pub fn new(settings: IcmpProbeSettings) -> Self {
        let labels =
            super::series_labels(&settings.name, || settings.target.clone(), &settings.labels);
        IcmpProbe { settings, labels }
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once within the probe's timeout, recording into `registry`.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let started = Instant::now();
        let mut facts = Facts::default();
        let timeout = self.settings.timeout;
        let result = match tokio::time::timeout(timeout, exchange(&self.settings, &mut facts)).await
        {
            Ok(r) => r,
            Err(_) => Err(IcmpError::Timeout {
                phase: facts.phase.unwrap_or(Phase::Resolve),
                timeout,
            }),
        };
        let duration = started.elapsed();
        if let Err(e) = self.record(registry, &facts, result.is_ok(), duration) {
            tracing::warn!(probe = %self.settings.name, error = %e, "could not record probe series");
        }
        let status = match (&result, facts.socket, facts.hop_limit) {
            (Ok(()), Some(kind), Some(ttl)) => format!("reply ({}, ttl {ttl})", kind.as_str()),
            (Ok(()), Some(kind), None) => format!("reply ({})", kind.as_str()),
            (Ok(()), None, _) => "reply".to_string(),
            (Err(e), _, _) => e.kind().to_string(),
        };
        ProbeReport {
            success: result.is_ok(),
            duration,
            status,
            reason: result.err().map(|e| e.to_string()),
            details: details(&facts),
        }
    }

    fn record(
        &self,
        registry: &mut Registry,
        facts: &Facts,
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
        for (phase, d) in [
            (Phase::Resolve, facts.resolve),
            (Phase::Setup, facts.setup),
            (Phase::Rtt, facts.rtt),
        ] {
            let mut labels = base.clone();
            labels.push(("phase", phase.as_str()));
            registry.gauge_set(ICMP_DURATION, &labels, d.as_secs_f64())?;
        }
        match facts.hop_limit {
            Some(h) if success => registry.gauge_set(ICMP_REPLY_HOP_LIMIT, &base, f64::from(h))?,
            _ => registry.remove(ICMP_REPLY_HOP_LIMIT, &base),
        }
        let (protocol, hash) = match facts.addr {
            Some(a @ IpAddr::V4(_)) => (4.0, ip_hash(a)),
            Some(a @ IpAddr::V6(_)) => (6.0, ip_hash(a)),
            None => (0.0, 0.0),
        };
        registry.gauge_set(IP_PROTOCOL, &base, protocol)?;
        registry.gauge_set(IP_ADDR_HASH, &base, hash)?;
        registry.gauge_set(DNS_LOOKUP_TIME, &base, facts.resolve.as_secs_f64())?;
        Ok(())
    }
}

/// Resolve, open, send, wait: the run itself, without its deadline.
async fn exchange(settings: &IcmpProbeSettings, facts: &mut Facts) -> Result<(), IcmpError> {
    facts.phase = Some(Phase::Resolve);
    let started = Instant::now();
    let addrs = resolve(&settings.target).await;
    facts.resolve = started.elapsed();
    let addrs = addrs.map_err(|source| IcmpError::Resolve {
        target: settings.target.clone(),
        source,
    })?;
    let addr = settings
        .preferred_ip_protocol
        .choose(&addrs, settings.ip_protocol_fallback)
        .map(|(addr, _fell_back)| addr)
        .ok_or_else(|| no_address(settings))?;
    facts.addr = Some(addr);

    facts.phase = Some(Phase::Setup);
    let started = Instant::now();
    let family = match addr {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    };
    if let Some(source_ip) = settings.source_ip_address {
        if source_ip.is_ipv4() != addr.is_ipv4() {
            return Err(IcmpError::SourceFamily { source_ip, addr });
        }
    }
    let options = SocketOptions {
        family,
        wanted: settings.socket,
        source: settings.source_ip_address,
        ttl: settings.ttl,
        dont_fragment: settings.dont_fragment,
    };
    let opened = socket::open(&options, || random_u64() as u16)?;
    facts.socket = Some(opened.kind);
    facts.ident = Some(opened.ident);
    let nonce = random_u64();
    let echo = Echo {
        ident: opened.ident,
        seq: (nonce >> 48) as u16,
        payload: packet::payload(random_u64().to_be_bytes(), settings.payload_size),
    };
    let bytes = request_bytes(settings, &opened, family, addr, &echo)?;
    facts.setup = started.elapsed();

    facts.phase = Some(Phase::Rtt);
    let started = Instant::now();
    opened
        .socket
        .send_to(&bytes, SocketAddr::new(addr, 0))
        .await
        .map_err(|source| IcmpError::Send { addr, source })?;
    let with_header = opened.kind == OpenedKind::Raw && family == Family::V4;
    let hop_limit = await_reply(&opened.socket, family, with_header, addr, &echo, facts)
        .await
        .map_err(|source| IcmpError::Receive { addr, source })?;
    facts.rtt = started.elapsed();
    facts.hop_limit = hop_limit;
    Ok(())
}

/// The bytes to send: the echo request, behind its own IPv4 header when the socket writes
/// headers (for DF).
fn request_bytes(
    settings: &IcmpProbeSettings,
    opened: &OpenedSocket,
    family: Family,
    addr: IpAddr,
    echo: &Echo,
) -> Result<Vec<u8>, IcmpError> {
    let icmp = packet::encode_echo_request(family, echo);
    let (true, IpAddr::V4(dst)) = (opened.header_included, addr) else {
        return Ok(icmp);
    };
    let src = match settings.source_ip_address {
        Some(IpAddr::V4(s)) => s,
        // Zero: the kernel fills in the address of the outgoing interface.
        _ => std::net::Ipv4Addr::UNSPECIFIED,
    };
    let ttl = settings.ttl.unwrap_or(DEFAULT_TTL);
    let header = packet::encode_ipv4_header(src, dst, ttl, icmp.len(), settings.dont_fragment)
        .ok_or(IcmpError::TooLarge(settings.payload_size))?;
    Ok([header.as_slice(), &icmp].concat())
}

/// The TTL of a request whose IPv4 header pushprobe writes itself, when `ttl` is unset:
/// Linux's default.
const DEFAULT_TTL: u8 = 64;

/// Receives until the reply to `expected` arrives, counting what it sets aside in
/// `facts.ignored`; returns the reply's hop limit when the socket delivers it. Packets from
/// another address than `target`, unreadable packets and replies to other requests are
/// ignored, never fatal.
async fn await_reply(
    socket: &tokio::net::UdpSocket,
    family: Family,
    with_ip_header: bool,
    target: IpAddr,
    expected: &Echo,
    facts: &mut Facts,
) -> std::io::Result<Option<u8>> {
    // Large enough for any datagram, so a longer packet is never cut to look like ours.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let Some(bytes) = buf.get(..n) else {
            continue;
        };
        if from.ip() != target {
            facts.ignored += 1;
            continue;
        }
        let why = match packet::parse(family, with_ip_header, bytes) {
            Ok(received) => match packet::classify(family, expected, &received) {
                Match::Ours => return Ok(received.hop_limit),
                other => format!("{other:?}"),
            },
            Err(e) => e.to_string(),
        };
        facts.ignored += 1;
        tracing::trace!(%from, reason = %why, "ignored an ICMP packet that is not the reply");
    }
}

/// Resolves `target`: an address as it is, a name through the system resolver.
async fn resolve(target: &str) -> std::io::Result<Vec<IpAddr>> {
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    Ok(tokio::net::lookup_host((target, 0))
        .await?
        .map(|a| a.ip())
        .collect())
}

fn no_address(settings: &IcmpProbeSettings) -> IcmpError {
    let (family, hint) = match (
        settings.preferred_ip_protocol,
        settings.ip_protocol_fallback,
    ) {
        (_, true) => ("IPv4 or IPv6", ""),
        (IpProtocol::Ip4, false) => (
            "IPv4",
            " (ip_protocol_fallback = false: set it to true to allow IPv6)",
        ),
        (IpProtocol::Ip6, false) => (
            "IPv6",
            " (ip_protocol_fallback = false: set it to true, or preferred_ip_protocol = \"ip4\")",
        ),
    };
    IcmpError::NoAddress {
        target: settings.target.clone(),
        family,
        hint,
    }
}

/// Unpredictable bits for identifiers, sequences and cookies: collisions with other pingers,
/// not attackers, are what they guard against. Each `RandomState` carries fresh keys, and
/// the counter and clock make every draw differ.
fn random_u64() -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.finish()
}

/// Facts for `check` and logs.
fn details(facts: &Facts) -> Vec<(String, Detail)> {
    let mut out: Vec<(String, Detail)> = Vec::new();
    if let Some(addr) = facts.addr {
        out.push(("address".into(), addr.to_string().into()));
    }
    if let Some(kind) = facts.socket {
        out.push(("socket".into(), kind.as_str().into()));
    }
    if let Some(ident) = facts.ident {
        out.push(("identifier".into(), Detail::Count(u64::from(ident))));
    }
    for (name, d) in [
        ("resolve_seconds", facts.resolve),
        ("setup_seconds", facts.setup),
        ("rtt_seconds", facts.rtt),
    ] {
        if !d.is_zero() {
            out.push((name.into(), d.into()));
        }
    }
    if let Some(h) = facts.hop_limit {
        out.push(("hop_limit".into(), Detail::Count(u64::from(h))));
    }
    if facts.ignored > 0 {
        out.push(("ignored_packets".into(), Detail::Count(facts.ignored)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::packet::encode_echo_reply;
    use super::*;

    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    #[test]
    fn random_draws_differ() {
        let draws: std::collections::HashSet<u64> = (0..100).map(|_| random_u64()).collect();
        assert_eq!(draws.len(), 100);
    }

    #[test]
    fn timeouts_say_where_the_run_was() {
        let e = IcmpError::Timeout {
            phase: Phase::Rtt,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 1s waiting for the echo reply"
        );
        assert_eq!(e.kind(), "timeout");
    }

    fn expected() -> Echo {
        Echo {
            ident: 4242,
            seq: 17,
            payload: packet::payload([7; 8], 16),
        }
    }

    /// A second socket sends crafted replies to the receiving loop: every reply that is not
    /// ours (another identifier, sequence, payload or sender, a request, garbage) is
    /// ignored, and the one that matches ends the wait.
    #[tokio::test]
    async fn the_wait_ignores_replies_for_other_requests() {
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let family = Family::V4;
        let mine = expected();
        let reply = |e: &Echo| encode_echo_reply(family, e);
        // From another address, though otherwise ours.
        stranger.send_to(&reply(&mine), to).await.unwrap();
        for crafted in [
            reply(&Echo {
                ident: 4243,
                ..expected()
            }),
            reply(&Echo {
                seq: 18,
                ..expected()
            }),
            reply(&Echo {
                payload: packet::payload([8; 8], 16),
                ..expected()
            }),
            packet::encode_echo_request(family, &mine),
            vec![0, 0, 1],
            reply(&mine),
        ] {
            sender.send_to(&crafted, to).await.unwrap();
        }
        let mut facts = Facts::default();
        let hop = tokio::time::timeout(
            Duration::from_secs(30),
            await_reply(
                &receiver,
                family,
                false,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &mine,
                &mut facts,
            ),
        )
        .await
        .expect("the matching reply was not recognised")
        .unwrap();
        assert_eq!(hop, None);
        assert_eq!(facts.ignored, 6);
    }

    /// Only replies that are not ours: the wait goes on until the deadline.
    #[tokio::test]
    async fn replies_for_another_identifier_never_end_the_wait() {
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let other = Echo {
            ident: 1,
            ..expected()
        };
        sender
            .send_to(&encode_echo_reply(Family::V4, &other), to)
            .await
            .unwrap();
        let mut facts = Facts::default();
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            await_reply(
                &receiver,
                Family::V4,
                false,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                &expected(),
                &mut facts,
            ),
        )
        .await;
        assert!(waited.is_err(), "a reply for another identifier was taken");
        assert_eq!(facts.ignored, 1);
    }

    fn settings(target: &str) -> IcmpProbeSettings {
        IcmpProbeSettings {
            name: "p".into(),
            target: target.into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            preferred_ip_protocol: IpProtocol::Ip4,
            ip_protocol_fallback: false,
            source_ip_address: None,
            payload_size: 8,
            dont_fragment: false,
            ttl: None,
            socket: crate::config::IcmpSocket::Auto,
            labels: vec![],
        }
    }

    /// A run that timed out waiting: success 0, the phases it finished, rtt 0, and no hop
    /// limit left over from an earlier successful run.
    #[test]
    fn a_failed_run_records_what_it_measured_and_drops_the_hop_limit() {
        let probe = IcmpProbe::new(settings("127.0.0.1"));
        let mut r = Registry::new();
        let base = [("probe", "p"), ("instance", "127.0.0.1")];
        let ok = Facts {
            addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            hop_limit: Some(64),
            rtt: Duration::from_millis(1),
            ..Facts::default()
        };
        probe
            .record(&mut r, &ok, true, Duration::from_millis(2))
            .unwrap();
        assert_eq!(r.value(ICMP_REPLY_HOP_LIMIT, &base), Some(64.0));
        let timed_out = Facts {
            phase: Some(Phase::Rtt),
            addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            resolve: Duration::from_millis(3),
            ..Facts::default()
        };
        probe
            .record(&mut r, &timed_out, false, Duration::from_secs(5))
            .unwrap();
        assert_eq!(r.value(PROBE_SUCCESS, &base), Some(0.0));
        assert_eq!(r.value(ICMP_REPLY_HOP_LIMIT, &base), None);
        assert_eq!(r.value(IP_PROTOCOL, &base), Some(4.0));
        assert_eq!(r.value(IP_ADDR_HASH, &base), Some(3_668_918_509.0));
        let phase = |p| {
            let mut l = base.to_vec();
            l.push(("phase", p));
            r.value(ICMP_DURATION, &l)
        };
        assert_eq!(phase("resolve"), Some(0.003));
        assert_eq!(phase("rtt"), Some(0.0));
        // Unresolved: protocol and hash are 0, as the blackbox exporter leaves them.
        probe
            .record(&mut r, &Facts::default(), false, Duration::from_secs(5))
            .unwrap();
        assert_eq!(r.value(IP_PROTOCOL, &base), Some(0.0));
        assert_eq!(r.value(IP_ADDR_HASH, &base), Some(0.0));
    }

    #[tokio::test]
    async fn a_target_without_an_address_of_the_family_fails_before_any_socket() {
        let mut probe = IcmpProbe::new(settings("::1"));
        let mut registry = Registry::default();
        let report = probe.run(&mut registry).await;
        assert!(!report.success);
        assert_eq!(report.status, "resolve");
        let reason = report.reason.unwrap();
        assert!(
            reason.contains("has no IPv4 address") && reason.contains("fallback"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn a_source_of_the_other_family_is_refused() {
        let mut s = settings("127.0.0.1");
        s.source_ip_address = Some(V6);
        let report = IcmpProbe::new(s).run(&mut Registry::default()).await;
        assert_eq!(report.status, "socket");
        assert!(report.reason.unwrap().contains("different IP versions"));
    }
}
