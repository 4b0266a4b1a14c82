//! Schema and validation of `kind = "dns"` probes: one question to one DNS server per run,
//! judged as the blackbox exporter's `dns` prober judges it (accepted response codes, then
//! regexes over each section's records in their text form).
//!
//! Everything that can be checked before a socket opens is checked here: the server's form,
//! the name, the type and class, the response code names and every regex (compiled once,
//! held in the settings).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ip::IpProtocol;
use super::{default_true, Checker, ConfigDuration};
use crate::dns::message::{rcode_by_name, RCODES};
use crate::dns::{DNSClass, RecordType, Transport};

/// The query types `query_type` accepts.
pub const QUERY_TYPES: &[&str] = &[
    "A", "AAAA", "SRV", "MX", "TXT", "NS", "CNAME", "SOA", "PTR", "ANY",
];

/// The classes `query_class` accepts.
pub const QUERY_CLASSES: &[&str] = &["IN", "CH", "HS", "NONE", "ANY"];

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_query_type() -> String {
    "ANY".into()
}
fn default_query_class() -> String {
    "IN".into()
}
fn default_ip_protocol() -> String {
    "ip6".into()
}

/// A DNS probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// The server asked, `host:port` (port 53 when left out); unset: the first
    /// `nameserver` of /etc/resolv.conf.
    pub server: Option<String>,
    /// The name asked about.
    pub query_name: String,
    /// The record type asked for (`A`, `AAAA`, `SRV`, …); `ANY` by default, as blackbox.
    #[serde(default = "default_query_type")]
    pub query_type: String,
    /// The class asked in (`IN` by default).
    #[serde(default = "default_query_class")]
    pub query_class: String,
    /// `udp` or `tcp` only; unset: UDP, asked again over TCP when the answer is truncated.
    pub transport_protocol: Option<String>,
    /// `ip6` (default, as blackbox) or `ip4`: the address family tried first for a server
    /// given by host name.
    #[serde(default = "default_ip_protocol")]
    pub preferred_ip_protocol: String,
    /// Take the other family when the preferred one has no address.
    #[serde(default = "default_true")]
    pub ip_protocol_fallback: bool,
    /// Ask the server to recurse (the `RD` bit).
    #[serde(default = "default_true")]
    pub recursion_desired: bool,
    /// Response codes that count as success; `["NOERROR"]` by default.
    pub valid_rcodes: Option<Vec<String>>,
    /// Checks on the answer section's records.
    #[serde(default)]
    pub validate_answer_rrs: RrValidatorConfig,
    /// Checks on the authority section's records.
    #[serde(default)]
    pub validate_authority_rrs: RrValidatorConfig,
    /// Checks on the additional section's records.
    #[serde(default)]
    pub validate_additional_rrs: RrValidatorConfig,
    /// How often to probe.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Deadline for one run, resolution and a TCP retry included.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `job` label of this probe's series; unset: `agent.job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Discovered targets instead of `server` (see `config::discovery`): one probe per
    /// target, its `__address__` as the server `host:port`.
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
    /// Target relabeling, before each target becomes `server`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<crate::scrape::relabel::RelabelConfig>,
}

/// Regexes over one section's records, each record in its text form
/// (`example.com.\t300\tIN\tA\t127.0.0.1`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrValidatorConfig {
    /// Fail when any record matches any of these.
    #[serde(default)]
    pub fail_if_matches_regexp: Vec<String>,
    /// Fail when any record does not match one of these (or there are no records).
    #[serde(default)]
    pub fail_if_not_matches_regexp: Vec<String>,
    /// Fail when every record matches one of these.
    #[serde(default)]
    pub fail_if_all_match_regexp: Vec<String>,
    /// Fail when no record matches one of these (or there are no records).
    #[serde(default)]
    pub fail_if_none_matches_regexp: Vec<String>,
}

/// Validated regexes over one section's records.
#[derive(Debug, Clone, Default)]
pub struct RrValidator {
    /// Fail when any record matches.
    pub fail_if_matches: Vec<regex::Regex>,
    /// Fail when any record does not match.
    pub fail_if_not_matches: Vec<regex::Regex>,
    /// Fail when all records match.
    pub fail_if_all_match: Vec<regex::Regex>,
    /// Fail when no record matches.
    pub fail_if_none_matches: Vec<regex::Regex>,
}

/// Where a DNS probe's server comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsServer {
    /// Given: a host (name or address) and a port.
    Given {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
    /// The first `nameserver` of /etc/resolv.conf.
    ResolvConf,
}

/// A validated DNS probe.
#[derive(Debug, Clone)]
pub struct DnsProbeSettings {
    /// Name.
    pub name: String,
    /// The server asked.
    pub server: DnsServer,
    /// The name asked about.
    pub query_name: String,
    /// The type asked for.
    pub query_type: RecordType,
    /// The class asked in.
    pub query_class: DNSClass,
    /// How the query travels.
    pub transport: Transport,
    /// The family tried first for a server host name.
    pub preferred_ip_protocol: IpProtocol,
    /// Take the other family when needed.
    pub ip_protocol_fallback: bool,
    /// The `RD` bit.
    pub recursion_desired: bool,
    /// Accepted response codes, with their names as configured (upper-cased).
    pub valid_rcodes: Vec<(String, u16)>,
    /// Answer section checks.
    pub validate_answer: RrValidator,
    /// Authority section checks.
    pub validate_authority: RrValidator,
    /// Additional section checks.
    pub validate_additional: RrValidator,
    /// Period.
    pub interval: Duration,
    /// Deadline.
    pub timeout: Duration,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
}

/// Validates one `kind = "dns"` probe; errors name `probe[i].<key>`.
pub(super) fn validate_dns_probe(
    c: &mut Checker<'_>,
    key: &str,
    d: &DnsProbeConfig,
) -> Option<DnsProbeSettings> {
    let interval = c.positive(format!("{key}.interval"), d.interval);
    let timeout = c.positive(format!("{key}.timeout"), d.timeout);
    let discovered = super::discovery::has_discovery!(d);
    if d.server.is_some() && discovered {
        c.fail(
            format!("{key}.server"),
            format!(
                "set either server or discovered targets ({}), not both",
                super::discovery::TARGET_SOURCES
            ),
        );
    }
    let server = match &d.server {
        // A discovered probe's stand-in; each target names its server.
        None => Some(DnsServer::ResolvConf),
        Some(s) => match crate::dns::split_host_port(s, 53) {
            Ok((host, port)) => Some(DnsServer::Given { host, port }),
            Err(e) => {
                c.fail(format!("{key}.server"), e);
                None
            }
        },
    };
    if d.query_name.is_empty() {
        c.fail(format!("{key}.query_name"), "must not be empty");
    } else if let Err(e) = crate::dns::message::fqdn(&d.query_name) {
        c.fail(format!("{key}.query_name"), e);
    }
    let query_type = upper_choice(c, key, "query_type", &d.query_type, QUERY_TYPES)
        .and_then(|t| t.parse::<RecordType>().ok());
    let query_class = upper_choice(c, key, "query_class", &d.query_class, QUERY_CLASSES)
        .and_then(|t| t.parse::<DNSClass>().ok());
    let transport = match d.transport_protocol.as_deref() {
        None => Some(Transport::UdpThenTcp),
        Some("udp") => Some(Transport::Udp),
        Some("tcp") => Some(Transport::Tcp),
        Some(other) => {
            c.fail(
                format!("{key}.transport_protocol"),
                format!(
                    "{other:?} is not \"udp\" or \"tcp\" (leave it out for UDP with a retry \
                     over TCP when the answer is truncated)"
                ),
            );
            None
        }
    };
    let preferred_ip_protocol = match d.preferred_ip_protocol.as_str() {
        "ip4" => Some(IpProtocol::Ip4),
        "ip6" => Some(IpProtocol::Ip6),
        other => {
            c.fail(
                format!("{key}.preferred_ip_protocol"),
                format!("{other:?} is not \"ip4\" or \"ip6\""),
            );
            None
        }
    };
    let valid_rcodes = validate_rcodes(c, key, d.valid_rcodes.as_deref());
    let validate_answer = validate_rrs(
        c,
        &format!("{key}.validate_answer_rrs"),
        &d.validate_answer_rrs,
    );
    let validate_authority = validate_rrs(
        c,
        &format!("{key}.validate_authority_rrs"),
        &d.validate_authority_rrs,
    );
    let validate_additional = validate_rrs(
        c,
        &format!("{key}.validate_additional_rrs"),
        &d.validate_additional_rrs,
    );
    let labels = c.labels(&format!("{key}.labels"), &d.labels);
    for reserved in ["probe", "instance", "phase"] {
        if d.labels.contains_key(reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    Some(DnsProbeSettings {
        name: d.name.clone(),
        server: server?,
        query_name: d.query_name.clone(),
        query_type: query_type?,
        query_class: query_class?,
        transport: transport?,
        preferred_ip_protocol: preferred_ip_protocol?,
        ip_protocol_fallback: d.ip_protocol_fallback,
        recursion_desired: d.recursion_desired,
        valid_rcodes,
        validate_answer,
        validate_authority,
        validate_additional,
        interval,
        timeout,
        labels,
    })
}

/// `value`, upper-cased, when it is one of `choices`.
fn upper_choice(
    c: &mut Checker<'_>,
    key: &str,
    field: &str,
    value: &str,
    choices: &[&str],
) -> Option<String> {
    let upper = value.to_ascii_uppercase();
    if choices.contains(&upper.as_str()) {
        Some(upper)
    } else {
        c.fail(
            format!("{key}.{field}"),
            format!("{value:?} is not one of {}", choices.join(", ")),
        );
        None
    }
}

fn validate_rcodes(c: &mut Checker<'_>, key: &str, names: Option<&[String]>) -> Vec<(String, u16)> {
    let Some(names) = names else {
        return vec![("NOERROR".into(), 0)];
    };
    if names.is_empty() {
        c.fail(
            format!("{key}.valid_rcodes"),
            "must list at least one response code (leave it out for NOERROR)",
        );
    }
    let mut out = Vec::new();
    for name in names {
        match rcode_by_name(name) {
            Some(code) => out.push((name.to_ascii_uppercase(), code)),
            None => {
                let known: Vec<&str> = RCODES.iter().map(|(n, _)| *n).collect();
                c.fail(
                    format!("{key}.valid_rcodes"),
                    format!(
                        "{name:?} is not a response code; known: {}",
                        known.join(", ")
                    ),
                );
            }
        }
    }
    out
}

fn validate_rrs(c: &mut Checker<'_>, key: &str, v: &RrValidatorConfig) -> RrValidator {
    let mut compile = |field: &str, patterns: &[String]| -> Vec<regex::Regex> {
        patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match regex::Regex::new(p) {
                Ok(re) => Some(re),
                Err(e) => {
                    c.fail(format!("{key}.{field}[{i}]"), format!("not a regex: {e}"));
                    None
                }
            })
            .collect()
    };
    RrValidator {
        fail_if_matches: compile("fail_if_matches_regexp", &v.fail_if_matches_regexp),
        fail_if_not_matches: compile("fail_if_not_matches_regexp", &v.fail_if_not_matches_regexp),
        fail_if_all_match: compile("fail_if_all_match_regexp", &v.fail_if_all_match_regexp),
        fail_if_none_matches: compile(
            "fail_if_none_matches_regexp",
            &v.fail_if_none_matches_regexp,
        ),
    }
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::parse;
    use super::super::ProbeSettings;
    use super::*;

    const DNS: &str = "[[probe]]\nname = \"ns\"\nkind = \"dns\"\nserver = \"127.0.0.1:5353\"\n\
                       query_name = \"example.com\"\n";

    fn settings(extra: &str) -> Result<DnsProbeSettings, String> {
        let s = parse(&format!("{DNS}{extra}"))?;
        match s.probes.into_iter().next() {
            Some(ProbeSettings::Dns(d)) => Ok(d),
            _ => Err("not a dns probe".into()),
        }
    }

    #[test]
    fn defaults_follow_blackbox() {
        let d = settings("").unwrap();
        assert_eq!(
            d.server,
            DnsServer::Given {
                host: "127.0.0.1".into(),
                port: 5353
            }
        );
        assert_eq!(d.query_type, RecordType::ANY);
        assert_eq!(d.query_class, DNSClass::IN);
        assert_eq!(d.transport, Transport::UdpThenTcp);
        assert_eq!(d.preferred_ip_protocol, IpProtocol::Ip6);
        assert!(d.ip_protocol_fallback && d.recursion_desired);
        assert_eq!(d.valid_rcodes, vec![("NOERROR".to_string(), 0)]);
        let d = settings("query_type = \"srv\"\ntransport_protocol = \"tcp\"\n").unwrap();
        assert_eq!(d.query_type, RecordType::SRV);
        assert_eq!(d.transport, Transport::Tcp);
        let no_server = parse(&DNS.replace("server = \"127.0.0.1:5353\"\n", "")).unwrap();
        assert!(
            matches!(&no_server.probes[0], ProbeSettings::Dns(d) if d.server == DnsServer::ResolvConf)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = settings("query_type = \"AXFR\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].query_type: \"AXFR\" is not one of A, AAAA"),
            "{e}"
        );
        let e = settings("query_class = \"XX\"\n").unwrap_err();
        assert!(e.starts_with("probe[0].query_class: "), "{e}");
        let e = settings("transport_protocol = \"quic\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].transport_protocol: \"quic\""),
            "{e}"
        );
        let e = settings("preferred_ip_protocol = \"ip5\"\n").unwrap_err();
        assert!(e.starts_with("probe[0].preferred_ip_protocol: "), "{e}");
        let e = settings("valid_rcodes = [\"NOERROR\", \"NOPE\"]\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].valid_rcodes: \"NOPE\" is not a response code"),
            "{e}"
        );
        let e = settings("[probe.validate_answer_rrs]\nfail_if_matches_regexp = [\"ok\", \"(\"]\n")
            .unwrap_err();
        assert!(
            e.starts_with("probe[0].validate_answer_rrs.fail_if_matches_regexp[1]: not a regex"),
            "{e}"
        );
        let e = parse(&DNS.replace("127.0.0.1:5353", "ns:port")).unwrap_err();
        assert!(e.starts_with("probe[0].server: "), "{e}");
        let e = parse(&DNS.replace("example.com", "a..b")).unwrap_err();
        assert!(e.starts_with("probe[0].query_name: "), "{e}");
        let e = settings("query_nam = \"x\"\n").unwrap_err();
        assert!(e.contains("query_nam"), "{e}");
    }

    #[test]
    fn rcodes_and_regexes_are_kept() {
        let d = settings(
            "valid_rcodes = [\"noerror\", \"NXDOMAIN\"]\n\
             [probe.validate_answer_rrs]\nfail_if_not_matches_regexp = [\"\\tA\\t\"]\n",
        )
        .unwrap();
        assert_eq!(
            d.valid_rcodes,
            vec![("NOERROR".to_string(), 0), ("NXDOMAIN".to_string(), 3)]
        );
        assert_eq!(d.validate_answer.fail_if_not_matches.len(), 1);
        assert!(d.validate_answer.fail_if_not_matches[0].is_match("a.\t1\tIN\tA\t1.2.3.4"));
    }
}
