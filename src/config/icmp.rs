//! Schema and validation of `kind = "icmp"` probes: one echo request per run, with the
//! blackbox exporter's keys (`preferred_ip_protocol`, `ip_protocol_fallback`,
//! `source_ip_address`, `payload_size`, `dont_fragment`, `ttl`) and the choice of socket.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ip::IpProtocol;
use super::{default_true, Checker, ConfigDuration};

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_payload_size() -> usize {
    DEFAULT_PAYLOAD_SIZE
}

/// Default payload: 56 bytes, as `ping` sends (64 bytes of ICMP).
pub const DEFAULT_PAYLOAD_SIZE: usize = 56;
/// The largest payload an IPv4 echo request carries (65535 − 20 − 8).
pub const MAX_PAYLOAD_SIZE: usize = 65_507;

/// The kind of socket the probe sends its echo request on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IcmpSocket {
    /// An unprivileged ICMP socket where `net.ipv4.ping_group_range` allows it, else a raw
    /// socket (which needs CAP_NET_RAW).
    #[default]
    Auto,
    /// An unprivileged ICMP datagram socket only (Linux: the process' group must be in
    /// `net.ipv4.ping_group_range`).
    Unprivileged,
    /// A raw socket only (needs CAP_NET_RAW, or root).
    Raw,
}

impl IcmpSocket {
    /// The key's value, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IcmpSocket::Auto => "auto",
            IcmpSocket::Unprivileged => "unprivileged",
            IcmpSocket::Raw => "raw",
        }
    }
}

/// An ICMP echo ("ping") probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// Host name or IP address to ping (no port, no scheme).
    pub target: Option<String>,
    /// How often to probe.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Deadline for one run: resolution, socket and the wait for the reply.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// The address family tried first when `target` is a name.
    #[serde(default)]
    pub preferred_ip_protocol: IpProtocol,
    /// Use the other family when the name has no address of the preferred one.
    #[serde(default = "default_true")]
    pub ip_protocol_fallback: bool,
    /// Local address to send from.
    pub source_ip_address: Option<String>,
    /// Bytes of payload after the 8-byte ICMP header.
    #[serde(default = "default_payload_size")]
    pub payload_size: usize,
    /// Set IPv4's Don't Fragment bit (needs a raw socket; IPv6 never fragments on the way).
    #[serde(default)]
    pub dont_fragment: bool,
    /// TTL (IPv4) or hop limit (IPv6) of the request; unset: the system's default.
    pub ttl: Option<u32>,
    /// `auto`, `unprivileged` or `raw`.
    #[serde(default)]
    pub socket: IcmpSocket,
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `job` label of this probe's series; unset: `agent.job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Discovered targets instead of `target` (see `config::discovery`): one probe per
    /// target, its `__address__` as the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Target groups with their labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_configs: Vec<super::discovery::StaticConfig>,
    /// Target files, watched for changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_sd_configs: Vec<super::discovery::FileSdConfig>,
    /// HTTP SD endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_sd_configs: Vec<super::discovery::HttpSdConfig>,
    /// DNS lookups giving the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_sd_configs: Vec<super::discovery::DnsSdConfig>,
    /// Target relabeling, before each target becomes `target`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<crate::scrape::relabel::RelabelConfig>,
}

/// A validated ICMP probe.
#[derive(Debug, Clone)]
pub struct IcmpProbeSettings {
    /// Name.
    pub name: String,
    /// Host name or IP address, as configured (brackets around IPv6 removed).
    pub target: String,
    /// Period.
    pub interval: Duration,
    /// Deadline of one run.
    pub timeout: Duration,
    /// Family tried first.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether the other family may be used.
    pub ip_protocol_fallback: bool,
    /// Local address to send from.
    pub source_ip_address: Option<IpAddr>,
    /// Payload bytes.
    pub payload_size: usize,
    /// IPv4 Don't Fragment.
    pub dont_fragment: bool,
    /// TTL / hop limit of the request.
    pub ttl: Option<u8>,
    /// Socket kind.
    pub socket: IcmpSocket,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
}

/// Validates one `kind = "icmp"` probe.
pub(super) fn validate_icmp_probe(
    c: &mut Checker<'_>,
    key: &str,
    p: &IcmpProbeConfig,
) -> Option<IcmpProbeSettings> {
    let interval = c.positive(format!("{key}.interval"), p.interval);
    let timeout = c.positive(format!("{key}.timeout"), p.timeout);
    let target = super::probe::single_target(
        c,
        key,
        "target",
        p.target.as_deref(),
        super::discovery::has_discovery!(p),
        super::probe::DISCOVERED_HOST,
    )
    .and_then(|text| match target_problem(text) {
        Ok(t) => Some(t),
        Err(problem) => {
            c.fail(format!("{key}.target"), problem);
            None
        }
    });
    let source = p.source_ip_address.as_deref().and_then(|s| {
        let parsed = s.parse::<IpAddr>();
        if parsed.is_err() {
            c.fail(
                format!("{key}.source_ip_address"),
                format!("{s:?} is not an IP address"),
            );
        }
        parsed.ok()
    });
    if p.payload_size > MAX_PAYLOAD_SIZE {
        c.fail(
            format!("{key}.payload_size"),
            format!(
                "{} is larger than {MAX_PAYLOAD_SIZE}, the most an echo request carries",
                p.payload_size
            ),
        );
    }
    let ttl = p.ttl.and_then(|t| match u8::try_from(t) {
        Ok(t) if t > 0 => Some(t),
        _ => {
            c.fail(format!("{key}.ttl"), format!("{t} is not within 1..=255"));
            None
        }
    });
    if p.dont_fragment && p.socket == IcmpSocket::Unprivileged {
        c.fail(
            format!("{key}.dont_fragment"),
            "needs a raw socket (an unprivileged ICMP socket cannot set the IPv4 header): \
             set socket = \"raw\" or \"auto\", or remove dont_fragment",
        );
    }
    let labels = c.labels(&format!("{key}.labels"), &p.labels);
    for reserved in ["probe", "instance", "phase"] {
        if p.labels.contains_key(reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    Some(IcmpProbeSettings {
        name: p.name.clone(),
        target: target?,
        interval,
        timeout,
        preferred_ip_protocol: p.preferred_ip_protocol,
        ip_protocol_fallback: p.ip_protocol_fallback,
        source_ip_address: source,
        payload_size: p.payload_size,
        dont_fragment: p.dont_fragment,
        ttl,
        socket: p.socket,
        labels,
    })
}

/// The target to resolve (an IPv6 address may come in brackets), or why it is not one.
pub(super) fn target_problem(target: &str) -> Result<String, String> {
    let bare = target
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(target);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_string());
    }
    if bare.is_empty() {
        return Err("must not be empty: a host name or an IP address".into());
    }
    if bare.contains("://") || bare.contains('/') || bare.contains(':') {
        return Err(format!(
            "{target:?} is not a host name or IP address: give the host alone, without a \
             scheme, port or path"
        ));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name = bare.strip_suffix('.').unwrap_or(bare);
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("{target:?} is not a valid host name"));
    }
    Ok(bare.to_string())
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::parse;
    use super::super::ProbeSettings;
    use super::*;

    const ICMP: &str = r#"
        [[remote_write]]
        url = "http://127.0.0.1:9090/api/v1/write"
        [[probe]]
        name = "gw"
        kind = "icmp"
        target = "192.0.2.1"
    "#;

    fn settings(toml: &str) -> IcmpProbeSettings {
        match parse(toml).unwrap().probes.remove(0) {
            ProbeSettings::Icmp(s) => s,
            other => panic!("not an icmp probe: {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_blackbox_exporter() {
        let s = settings(ICMP);
        assert_eq!(s.target, "192.0.2.1");
        assert_eq!(s.preferred_ip_protocol, IpProtocol::Ip6);
        assert!(s.ip_protocol_fallback);
        assert_eq!(s.payload_size, DEFAULT_PAYLOAD_SIZE);
        assert_eq!(s.socket, IcmpSocket::Auto);
        assert_eq!(s.ttl, None);
        assert!(!s.dont_fragment);
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(&format!(
            "{ICMP}preferred_ip_protocol = \"ip4\"\nip_protocol_fallback = false\n\
             source_ip_address = \"127.0.0.1\"\npayload_size = 8\ndont_fragment = true\n\
             ttl = 3\nsocket = \"raw\"\ninterval = \"5s\"\ntimeout = \"2s\"\n\
             labels = {{ site = \"a\" }}\n"
        ));
        assert_eq!(s.preferred_ip_protocol, IpProtocol::Ip4);
        assert!(!s.ip_protocol_fallback);
        assert_eq!(s.source_ip_address, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((s.payload_size, s.dont_fragment, s.ttl), (8, true, Some(3)));
        assert_eq!(s.socket, IcmpSocket::Raw);
        assert!(s.labels.contains(&("site".to_string(), "a".to_string())));
    }

    #[test]
    fn targets_are_hosts_or_addresses() {
        assert_eq!(target_problem("[::1]").unwrap(), "::1");
        assert_eq!(target_problem("::1").unwrap(), "::1");
        assert_eq!(
            target_problem("gw-1.example.com.").unwrap(),
            "gw-1.example.com."
        );
        for bad in [
            "",
            "http://example.com",
            "example.com:80",
            "a..b",
            "exa mple",
        ] {
            assert!(target_problem(bad).is_err(), "{bad:?} accepted");
        }
        let e = parse(&ICMP.replace("192.0.2.1", "https://192.0.2.1/")).unwrap_err();
        assert!(
            e.starts_with("probe[0].target: ") && e.contains("without a scheme"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("ttl = 0", "probe[0].ttl: 0 is not within 1..=255"),
            ("ttl = 256", "probe[0].ttl: 256 is not within 1..=255"),
            (
                "payload_size = 65508",
                "probe[0].payload_size: 65508 is larger",
            ),
            (
                "source_ip_address = \"here\"",
                "probe[0].source_ip_address: \"here\" is not an IP address",
            ),
            (
                "socket = \"unprivileged\"\ndont_fragment = true",
                "probe[0].dont_fragment: needs a raw socket",
            ),
            (
                "labels = { phase = \"x\" }",
                "probe[0].labels.phase: is set by",
            ),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{ICMP}{extra}\n")).unwrap_err();
            assert!(e.starts_with(want), "{extra}: {e}");
        }
        let e = parse(&format!("{ICMP}socket = \"privileged\"\n")).unwrap_err();
        assert!(
            e.starts_with("probe[0].socket: ") && e.contains("raw"),
            "{e}"
        );
        let e = parse(&format!("{ICMP}port = 7\n")).unwrap_err();
        assert!(e.contains("port"), "{e}");
    }
}
