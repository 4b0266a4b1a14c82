//! Schema and validation of `kind = "grpc"` probes: one `grpc.health.v1.Health/Check` per run,
//! configured as the blackbox exporter's `grpc` module is (`service`, `tls` and `tls_config`,
//! `preferred_ip_protocol` and `ip_protocol_fallback`), plus request `metadata`.
//!
//! The target is `host:port` (the port may be left out: 443 with TLS, 80 without), parsed here
//! into a [`GrpcTarget`] so that a probe run never meets a malformed one.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ip::IpProtocol;
use super::keypath::join_key;
use super::{Checker, ConfigDuration, HeadersConfig, TlsConfig};
use crate::secret::HeaderText;

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_probe_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_true() -> bool {
    true
}

/// A gRPC probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// `host:port` of the gRPC server (port left out: 443 with TLS, 80 without); leave it
    /// out to discover the targets instead.
    pub target: Option<String>,
    /// The service whose health to ask for; empty asks about the server as a whole.
    #[serde(default)]
    pub service: String,
    /// Connect with TLS.
    #[serde(default)]
    pub tls: bool,
    /// TLS options, used when `tls = true`.
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// The address family tried first (`ip4` or `ip6`).
    #[serde(default)]
    pub preferred_ip_protocol: IpProtocol,
    /// Use the other family when the target has no address of the preferred one.
    #[serde(default = "default_true")]
    pub ip_protocol_fallback: bool,
    /// Request metadata (gRPC's request headers).
    #[serde(default)]
    pub metadata: HeadersConfig,
    /// How often to probe.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Deadline for one probe: resolving, connecting and the health check.
    #[serde(default = "default_probe_timeout")]
    pub timeout: ConfigDuration,
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `job` label of this probe's series; unset: `agent.job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Discovered targets instead of `target` (see `config::discovery`): one probe per
    /// target, its `__address__` as `host:port`.
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

/// Where a gRPC probe connects: a host (name or IP literal) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// The host name, or an IP literal (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl GrpcTarget {
    /// The host as an IP address, when it is a literal (no lookup needed).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port` as an HTTP/2 `:authority` (IPv6 literals in brackets).
    pub fn authority(&self) -> String {
        match self.host.parse::<Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", self.host, self.port),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A validated gRPC probe.
#[derive(Debug, Clone)]
pub struct GrpcProbeSettings {
    /// Name.
    pub name: String,
    /// The target as configured, for the `instance` label.
    pub target_text: String,
    /// The target, parsed.
    pub target: GrpcTarget,
    /// The service asked about; empty: the server as a whole.
    pub service: String,
    /// TLS options; `None`: plaintext HTTP/2.
    pub tls: Option<TlsConfig>,
    /// The address family tried first.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether the other family may be used.
    pub ip_protocol_fallback: bool,
    /// Request metadata (names lower-cased; credentials held as secrets).
    pub metadata: Vec<(String, HeaderText)>,
    /// Period.
    pub interval: Duration,
    /// Deadline.
    pub timeout: Duration,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
}

/// Parses `host:port`, `[v6]:port`, `host` or a bare IPv6 literal; the port defaults to
/// `default_port`. The error says what is wrong with the text.
pub fn parse_target(text: &str, default_port: u16) -> Result<GrpcTarget, String> {
    if text.is_empty() {
        return Err("must not be empty; give host:port".into());
    }
    if text.contains("://") {
        return Err(format!(
            "{text:?} is a URL; give host:port (set tls = true for TLS)"
        ));
    }
    if text.contains('/') || text.chars().any(char::is_whitespace) {
        return Err(format!("{text:?} is not host:port"));
    }
    let port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    };
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{text:?}: an IPv6 address in [ ] lacks its ]"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => default_port,
            _ => match after.strip_prefix(':') {
                Some(p) => port(p)?,
                None => return Err(format!("{text:?} is not [host]:port")),
            },
        };
        return Ok(GrpcTarget {
            host: host.to_string(),
            port,
        });
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok(GrpcTarget {
            host: text.to_string(),
            port: default_port,
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, p)) => (host, port(p)?),
        None => (text, default_port),
    };
    if host.is_empty() || host.contains(':') {
        return Err(format!(
            "{text:?} is not host:port (write an IPv6 address in brackets: [::1]:50051)"
        ));
    }
    Ok(GrpcTarget {
        host: host.to_string(),
        port,
    })
}

/// Metadata names gRPC itself sends; a configured value would be overwritten or break the call.
fn reserved_metadata(name: &str) -> bool {
    name.starts_with("grpc-")
        || name.starts_with(':')
        || matches!(name, "content-type" | "te" | "host" | "user-agent")
}

/// Validates one `kind = "grpc"` probe; errors name `{key}.<field>`.
pub(super) fn validate_grpc_probe(
    c: &mut Checker<'_>,
    key: &str,
    g: &GrpcProbeConfig,
) -> Option<GrpcProbeSettings> {
    let interval = c.positive(format!("{key}.interval"), g.interval);
    let timeout = c.positive(format!("{key}.timeout"), g.timeout);
    let default_port = if g.tls { 443 } else { 80 };
    let text = super::probe::single_target(
        c,
        key,
        "target",
        g.target.as_deref(),
        super::discovery::has_discovery!(g),
        super::probe::DISCOVERED_HOST_PORT,
    );
    let target = text.and_then(|text| match parse_target(text, default_port) {
        Ok(t) => Some(t),
        Err(message) => {
            c.fail(format!("{key}.target"), message);
            None
        }
    });
    let metadata_key = format!("{key}.metadata");
    let metadata = c.headers(&metadata_key, &g.metadata);
    for (name, _) in &metadata {
        if reserved_metadata(name) {
            c.fail(
                join_key(&metadata_key, name),
                "is set by gRPC itself; remove it",
            );
        } else if name.ends_with("-bin") {
            c.fail(
                join_key(&metadata_key, name),
                "binary (-bin) metadata is not supported; send a text value under another name",
            );
        }
    }
    let tls = if g.tls {
        let tls_key = format!("{key}.tls_config");
        c.tls(&tls_key, &g.tls_config);
        c.tls_files(&tls_key, &g.tls_config);
        Some(g.tls_config.clone())
    } else {
        if g.tls_config != TlsConfig::default() {
            c.fail(
                format!("{key}.tls_config"),
                "is set but tls = false; set tls = true to connect with TLS, or remove it",
            );
        }
        None
    };
    let labels = c.labels(&format!("{key}.labels"), &g.labels);
    for reserved in ["probe", "instance", "phase", "serving_status", "version"] {
        if g.labels.contains_key(reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    Some(GrpcProbeSettings {
        name: g.name.clone(),
        target_text: text?.to_string(),
        target: target?,
        service: g.service.clone(),
        tls,
        preferred_ip_protocol: g.preferred_ip_protocol,
        ip_protocol_fallback: g.ip_protocol_fallback,
        metadata,
        interval,
        timeout,
        labels,
    })
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::{ProbeSettings, Settings};
    use super::*;

    const GRPC: &str = r#"
        [[remote_write]]
        url = "http://127.0.0.1:9090/api/v1/write"

        [[probe]]
        name = "health"
        kind = "grpc"
        target = "grpc.example.com:50051"
    "#;

    fn parse(toml: &str) -> Result<Settings, String> {
        crate::config::tests::parse_in_jail(toml, &[], &[])
    }

    fn grpc(s: &Settings) -> &GrpcProbeSettings {
        match &s.probes[0] {
            ProbeSettings::Grpc(g) => g,
            other => panic!("not a grpc probe: {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_blackbox_exporter() {
        let s = parse(GRPC).unwrap();
        let g = grpc(&s);
        assert_eq!(
            g.target,
            GrpcTarget {
                host: "grpc.example.com".into(),
                port: 50051
            }
        );
        assert_eq!(g.service, "");
        assert!(g.tls.is_none());
        assert_eq!(g.preferred_ip_protocol, IpProtocol::Ip6);
        assert!(g.ip_protocol_fallback);
        assert_eq!(g.timeout, Duration::from_secs(10));
        assert_eq!(g.interval, Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let s = parse(&format!(
            "{GRPC}service = \"shop.Cart\"\ntls = true\ntls_config = {{ server_name = \"cart\" }}\n\
             preferred_ip_protocol = \"ip4\"\nip_protocol_fallback = false\n\
             metadata = {{ \"X-Tenant\" = \"a\", authorization = \"Bearer t-1\" }}\n\
             labels = {{ team = \"shop\" }}\njob = \"grpc\"\n"
        ))
        .unwrap();
        let g = grpc(&s);
        assert_eq!(g.service, "shop.Cart");
        assert_eq!(
            g.tls.as_ref().and_then(|t| t.server_name.as_deref()),
            Some("cart")
        );
        assert_eq!(g.preferred_ip_protocol, IpProtocol::Ip4);
        assert!(!g.ip_protocol_fallback);
        assert!(g
            .metadata
            .iter()
            .any(|(n, v)| n == "x-tenant" && v.expose() == "a"));
        // A credential is held as a secret and never printed.
        assert!(!format!("{:?}", g.metadata).contains("t-1"));
        assert!(g.labels.contains(&("job".into(), "grpc".into())));
        assert!(g.labels.contains(&("team".into(), "shop".into())));
    }

    #[test]
    fn the_port_defaults_by_tls() {
        let plain = parse(&GRPC.replace(":50051", "")).unwrap();
        assert_eq!(grpc(&plain).target.port, 80);
        let tls = parse(&format!("{}tls = true\n", GRPC.replace(":50051", ""))).unwrap();
        assert_eq!(grpc(&tls).target.port, 443);
    }

    #[test]
    fn targets_parse_or_say_what_is_wrong() {
        let t = |s: &str| parse_target(s, 80);
        assert_eq!(t("[::1]:9").unwrap().host, "::1");
        assert_eq!(t("[::1]:9").unwrap().authority(), "[::1]:9");
        assert_eq!(t("::1").unwrap().port, 80);
        assert_eq!(t("127.0.0.1:50051").unwrap().authority(), "127.0.0.1:50051");
        assert!(t("http://h:1").unwrap_err().contains("tls = true"));
        assert!(t("h:0").unwrap_err().contains("not a port"));
        assert!(t("h:x").unwrap_err().contains("not a port"));
        assert!(t("").unwrap_err().contains("empty"));
        assert!(t("[::1").unwrap_err().contains("lacks"));
        assert!(t("a:b:1").unwrap_err().contains("brackets"));
        assert!(t("h/p:1").is_err());
    }

    #[test]
    fn mistakes_name_their_key() {
        let e = parse(&GRPC.replace("grpc.example.com:50051", "https://x:1")).unwrap_err();
        assert!(e.starts_with("probe[0].target: "), "{e}");
        let e = parse(&format!(
            "{GRPC}tls_config = {{ insecure_skip_verify = true }}\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("probe[0].tls_config: is set but tls = false"),
            "{e}"
        );
        let e = parse(&format!(
            "{GRPC}metadata = {{ \"grpc-timeout\" = \"1S\" }}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("probe[0].metadata.grpc-timeout: "), "{e}");
        let e = parse(&format!("{GRPC}metadata = {{ \"trace-bin\" = \"AAA\" }}\n")).unwrap_err();
        assert!(e.contains("-bin"), "{e}");
        let e = parse(&format!("{GRPC}preferred_ip_protocol = \"ip5\"\n")).unwrap_err();
        assert!(
            e.starts_with("probe[0].preferred_ip_protocol: ") && e.contains("ip4"),
            "{e}"
        );
        let e = parse(&format!("{GRPC}servce = \"x\"\n")).unwrap_err();
        assert!(e.contains("servce"), "{e}");
        let e = parse(&format!(
            "{GRPC}tls = true\ntls_config = {{ ca_file = \"/nope\" }}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("probe[0].tls_config.ca_file: "), "{e}");
        let e = parse(&format!("{GRPC}labels = {{ serving_status = \"x\" }}\n")).unwrap_err();
        assert!(e.contains("set by pushprobe"), "{e}");
    }
}
