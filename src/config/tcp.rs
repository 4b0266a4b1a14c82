//! Schema and validation of `kind = "tcp"` probes: a TCP connection to `host:port`, optionally
//! TLS from the start or upgraded by a `starttls` step, and a scripted line dialogue
//! (`query_response`), with the blackbox exporter's meaning for every key.
//!
//! Also the pure pieces the probe shares with its schema: the address family preference
//! ([`IpProtocol`]), the target's host and port ([`split_target`]), and the `${1}` references
//! of a `send` text ([`group_refs`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ip::IpProtocol;
use super::{default_true, Checker, ConfigDuration, TlsConfig};
use crate::http_client::Host;

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

/// One step of a `query_response` dialogue, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryStepConfig {
    /// Read lines until one matches this regular expression.
    pub expect: Option<String>,
    /// Then write this text and a newline; `${1}` or `${name}` insert a group of `expect`'s match.
    pub send: Option<String>,
    /// Then upgrade the connection to TLS (with `tls_config`).
    #[serde(default)]
    pub starttls: bool,
}

/// A TCP probe, as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// Where to connect: `host:port` (an IPv6 address in brackets: `[::1]:25`); leave it
    /// out to discover the targets instead.
    pub target: Option<String>,
    /// How often to probe.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Deadline for one probe: resolution, connection, handshakes and the whole dialogue.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Speak TLS from the first byte.
    #[serde(default)]
    pub tls: bool,
    /// TLS options, for `tls = true` and for `starttls` steps.
    #[serde(default, skip_serializing_if = "is_default_tls")]
    pub tls_config: TlsConfig,
    /// The address family tried first.
    #[serde(default)]
    pub preferred_ip_protocol: IpProtocol,
    /// Use the other family when the preferred one has no address.
    #[serde(default = "default_true")]
    pub ip_protocol_fallback: bool,
    /// The local address connections are made from.
    pub source_ip_address: Option<String>,
    /// The dialogue, step by step.
    #[serde(default)]
    pub query_response: Vec<QueryStepConfig>,
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

fn is_default_tls(tls: &TlsConfig) -> bool {
    tls.ca_file.is_none()
        && tls.cert_file.is_none()
        && tls.key_file.is_none()
        && tls.server_name.is_none()
        && !tls.insecure_skip_verify
}

/// One validated step of a dialogue.
#[derive(Debug, Clone)]
pub struct QueryStep {
    /// The pattern a line must match, if the step waits for one.
    pub expect: Option<regex::bytes::Regex>,
    /// The text written (before `${…}` expansion), without its newline.
    pub send: Option<String>,
    /// Whether the step ends with a TLS handshake.
    pub starttls: bool,
}

/// A validated TCP probe.
#[derive(Debug, Clone)]
pub struct TcpProbeSettings {
    /// Name.
    pub name: String,
    /// The target as configured: the `instance` label.
    pub target: String,
    /// The host part of the target.
    pub host: Host,
    /// The port part of the target.
    pub port: u16,
    /// Period.
    pub interval: Duration,
    /// Deadline of one run.
    pub timeout: Duration,
    /// TLS from the first byte.
    pub tls: bool,
    /// TLS options (for `tls` and `starttls`).
    pub tls_config: TlsConfig,
    /// The family tried first.
    pub preferred_ip_protocol: IpProtocol,
    /// Whether the other family may be used.
    pub ip_protocol_fallback: bool,
    /// Local address to connect from.
    pub source_ip_address: Option<IpAddr>,
    /// The dialogue.
    pub query_response: Vec<QueryStep>,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
}

/// Splits `host:port` (`[v6]:port` for an IPv6 address); the error says what is wrong.
pub fn split_target(target: &str) -> Result<(Host, u16), String> {
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(format!("{target:?} has no port; write host:port"));
    };
    let port: u16 = match port.parse() {
        Ok(0) | Err(_) => {
            return Err(format!(
                "{port:?} is not a port (1 to 65535); write host:port"
            ))
        }
        Ok(p) => p,
    };
    if host.is_empty() {
        return Err(format!("{target:?} has no host; write host:port"));
    }
    if host.starts_with('[') {
        return match Host::parse(host) {
            Host::Ip(ip) => Ok((Host::Ip(ip), port)),
            Host::Domain(_) => Err(format!("{host} is not an IPv6 address")),
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{target:?}: an IPv6 address goes in brackets, e.g. [::1]:{port}"
        ));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '[' || c == ']') {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok((Host::parse(host), port))
}

/// The capture groups a `send` text refers to, as `regex`'s expansion reads them: `$name`,
/// `${name}`, `$1`, `${1}`; `$$` is a literal `$`, and a `$` followed by nothing a name can
/// start with stays as it is.
pub fn group_refs(template: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
        } else if let Some(braced) = rest.strip_prefix('{') {
            if let Some(end) = braced.find('}') {
                refs.push(braced[..end].to_string());
                rest = &braced[end + 1..];
            }
        } else {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if len > 0 {
                refs.push(rest[..len].to_string());
                rest = &rest[len..];
            }
        }
    }
    refs
}

/// Whether `regex` has a group called `name` (a number or a group name).
fn has_group(regex: &regex::bytes::Regex, name: &str) -> bool {
    match name.parse::<usize>() {
        Ok(n) => n < regex.captures_len(),
        Err(_) => regex.capture_names().any(|n| n == Some(name)),
    }
}

/// Validates one `kind = "tcp"` probe; errors name `probe[i].<key>`.
pub(super) fn validate_tcp_probe(
    c: &mut Checker<'_>,
    key: &str,
    t: &TcpProbeConfig,
) -> Option<TcpProbeSettings> {
    let text = super::probe::single_target(
        c,
        key,
        "target",
        t.target.as_deref(),
        super::discovery::has_discovery!(t),
        super::probe::DISCOVERED_HOST_PORT,
    );
    let target = text.and_then(|text| match split_target(text) {
        Ok(hp) => Some(hp),
        Err(message) => {
            c.fail(format!("{key}.target"), message);
            None
        }
    });
    let interval = c.positive(format!("{key}.interval"), t.interval);
    let timeout = c.positive(format!("{key}.timeout"), t.timeout);
    let source_ip_address = t.source_ip_address.as_deref().and_then(|s| {
        s.parse::<IpAddr>()
            .map_err(|_| {
                c.fail(
                    format!("{key}.source_ip_address"),
                    format!("{s:?} is not an IP address"),
                )
            })
            .ok()
    });
    let query_response = validate_steps(c, key, t);
    let uses_tls = t.tls || t.query_response.iter().any(|s| s.starttls);
    if !uses_tls && !is_default_tls(&t.tls_config) {
        c.fail(
            format!("{key}.tls_config"),
            "has no effect: set tls = true, or add a query_response step with starttls = true",
        );
    }
    c.tls(&format!("{key}.tls_config"), &t.tls_config);
    c.tls_files(&format!("{key}.tls_config"), &t.tls_config);
    let labels = c.labels(&format!("{key}.labels"), &t.labels);
    for reserved in ["probe", "instance", "version"] {
        if t.labels.contains_key(reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    let (host, port) = target?;
    Some(TcpProbeSettings {
        name: t.name.clone(),
        target: text?.to_string(),
        host,
        port,
        interval,
        timeout,
        tls: t.tls,
        tls_config: t.tls_config.clone(),
        preferred_ip_protocol: t.preferred_ip_protocol,
        ip_protocol_fallback: t.ip_protocol_fallback,
        source_ip_address,
        query_response: query_response?,
        labels,
    })
}

/// Validates the `query_response` steps; `None` when any is wrong.
fn validate_steps(c: &mut Checker<'_>, key: &str, t: &TcpProbeConfig) -> Option<Vec<QueryStep>> {
    let mut steps = Vec::new();
    let mut ok = true;
    let mut tls = t.tls;
    for (i, step) in t.query_response.iter().enumerate() {
        let at = format!("{key}.query_response[{i}]");
        if step.expect.is_none() && step.send.is_none() && !step.starttls {
            c.fail(&at, "does nothing: give expect, send or starttls = true");
            ok = false;
        }
        let expect = match step.expect.as_deref() {
            None => None,
            Some("") => {
                c.fail(
                    format!("{at}.expect"),
                    "must not be empty (leave it out to not wait for a line)",
                );
                ok = false;
                None
            }
            Some(pattern) => match regex::bytes::Regex::new(pattern) {
                Ok(re) => Some(re),
                Err(e) => {
                    c.fail(
                        format!("{at}.expect"),
                        format!("invalid regular expression {pattern:?}: {e}"),
                    );
                    ok = false;
                    None
                }
            },
        };
        if let Some(send) = &step.send {
            for name in group_refs(send) {
                let known = match (&expect, &step.expect) {
                    (Some(re), _) => has_group(re, &name),
                    // The pattern is reported already.
                    (None, Some(_)) => true,
                    (None, None) => false,
                };
                if !known {
                    let why = if step.expect.is_none() {
                        "but the step has no expect to take it from".to_string()
                    } else {
                        "but expect has no such group".to_string()
                    };
                    c.fail(
                        format!("{at}.send"),
                        format!("refers to group ${{{name}}} {why} (write $$ for a literal $)"),
                    );
                    ok = false;
                }
            }
        }
        if step.starttls {
            if tls {
                c.fail(
                    format!("{at}.starttls"),
                    if t.tls {
                        "the connection is TLS from the start (tls = true)"
                    } else {
                        "the connection was upgraded to TLS by an earlier step"
                    },
                );
                ok = false;
            }
            tls = true;
        }
        steps.push(QueryStep {
            expect,
            send: step.send.clone(),
            starttls: step.starttls,
        });
    }
    ok.then_some(steps)
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::{parse, parse_in_jail};
    use super::*;
    use crate::config::ProbeSettings;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const TCP: &str =
        "[[probe]]\nname = \"smtp\"\nkind = \"tcp\"\ntarget = \"mail.example.com:25\"\n";

    fn tcp(extra: &str) -> Result<TcpProbeSettings, String> {
        let s = parse(&format!("{TCP}{extra}"))?;
        match s.probes.into_iter().next() {
            Some(ProbeSettings::Tcp(t)) => Ok(t),
            other => panic!("not a tcp probe: {other:?}"),
        }
    }

    #[test]
    fn targets_are_host_and_port() {
        assert_eq!(
            split_target("mail.example.com:25"),
            Ok((Host::Domain("mail.example.com".into()), 25))
        );
        assert_eq!(
            split_target("127.0.0.1:6379"),
            Ok((Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)), 6379))
        );
        assert_eq!(
            split_target("[::1]:22"),
            Ok((Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), 22))
        );
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:70000",
            ":25",
            "::1:25",
            "[nope]:25",
            "exa mple:25",
        ] {
            assert!(split_target(bad).is_err(), "{bad}");
        }
        assert!(split_target("::1:25").unwrap_err().contains("[::1]:25"));
    }

    #[test]
    fn group_references_follow_the_expansion_syntax() {
        assert_eq!(group_refs("EHLO ${1}"), vec!["1"]);
        assert_eq!(group_refs("$1 $name ${host}x"), vec!["1", "name", "host"]);
        assert_eq!(
            group_refs("cost: $$5, $ alone, ${unclosed"),
            Vec::<String>::new()
        );
        assert_eq!(group_refs("no refs"), Vec::<String>::new());
    }

    #[test]
    fn defaults_follow_the_blackbox_exporter() {
        let t = tcp("").unwrap();
        assert_eq!(t.preferred_ip_protocol, IpProtocol::Ip6);
        assert!(t.ip_protocol_fallback);
        assert!(!t.tls);
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.interval, Duration::from_secs(30));
        assert_eq!(t.port, 25);
        assert!(t.query_response.is_empty());
    }

    #[test]
    fn a_dialogue_is_read_step_by_step() {
        let t = tcp(
            "source_ip_address = \"127.0.0.1\"\npreferred_ip_protocol = \"ip4\"\n\
             [[probe.query_response]]\nexpect = \"^220 (\\\\S+)\"\nsend = \"EHLO ${1}\"\n\
             [[probe.query_response]]\nexpect = \"^250 \"\nsend = \"STARTTLS\"\n\
             [[probe.query_response]]\nexpect = \"^220\"\nstarttls = true\n",
        )
        .unwrap();
        assert_eq!(t.query_response.len(), 3);
        assert_eq!(t.query_response[0].send.as_deref(), Some("EHLO ${1}"));
        assert!(t.query_response[2].starttls);
        assert_eq!(t.source_ip_address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(t.preferred_ip_protocol, IpProtocol::Ip4);
    }

    #[test]
    fn bad_steps_name_their_key() {
        let e = tcp(
            "[[probe.query_response]]\nsend = \"a\"\n[[probe.query_response]]\nexpect = \"(\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("probe[0].query_response[1].expect: invalid regular expression \"(\""),
            "{e}"
        );
        let e = tcp("[[probe.query_response]]\nsend = \"HELO ${1}\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "probe[0].query_response[0].send: refers to group ${1} but the step has no expect"
            ),
            "{e}"
        );
        let e =
            tcp("[[probe.query_response]]\nexpect = \"^(a)\"\nsend = \"${2} ${1}\"\n").unwrap_err();
        assert!(e.contains("group ${2} but expect has no such group"), "{e}");
        assert!(!e.contains("${1}"), "{e}");
        let e = tcp("[[probe.query_response]]\nstarttls = false\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].query_response[0]: does nothing"),
            "{e}"
        );
        let e = tcp("tls = true\n[[probe.query_response]]\nstarttls = true\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].query_response[0].starttls: the connection is TLS"),
            "{e}"
        );
        let e = tcp("[[probe.query_response]]\nexpect = \"\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].query_response[0].expect: must not be empty"),
            "{e}"
        );
        let e = tcp("[[probe.query_response]]\nexpct = \"x\"\n").unwrap_err();
        assert!(e.contains("expct"), "{e}");
        // Named groups count too.
        tcp("[[probe.query_response]]\nexpect = \"^(?P<host>\\\\S+)\"\nsend = \"${host} $$1\"\n")
            .unwrap();
    }

    #[test]
    fn other_keys_are_checked() {
        let e = parse(&TCP.replace("mail.example.com:25", "mail.example.com")).unwrap_err();
        assert!(
            e.starts_with("probe[0].target: \"mail.example.com\" has no port"),
            "{e}"
        );
        let e = tcp("source_ip_address = \"here\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].source_ip_address: \"here\" is not an IP"),
            "{e}"
        );
        let e = tcp("preferred_ip_protocol = \"ip5\"\n").unwrap_err();
        assert!(e.starts_with("probe[0].preferred_ip_protocol"), "{e}");
        let e = tcp("[probe.tls_config]\ninsecure_skip_verify = true\n").unwrap_err();
        assert!(e.starts_with("probe[0].tls_config: has no effect"), "{e}");
        let e = tcp("tls = true\n[probe.tls_config]\nca_file = \"missing.pem\"\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].tls_config.ca_file: missing.pem is not a readable"),
            "{e}"
        );
        let e = tcp("labels = { instance = \"x\" }\n").unwrap_err();
        assert!(
            e.starts_with("probe[0].labels.instance: is set by pushprobe"),
            "{e}"
        );
        let t = parse_in_jail(
            &format!("{TCP}tls = true\njob = \"mail\"\n[probe.tls_config]\nserver_name = \"mx\"\n"),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            t.probes[0].labels(),
            &[("job".to_string(), "mail".to_string())]
        );
    }
}
