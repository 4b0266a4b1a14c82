//! `dns_sd_configs`: targets from DNS records, as Prometheus' DNS service discovery finds
//! them. Every `refresh_interval` each name is looked up (`SRV`, `A`, `AAAA` or `MX`) with
//! the project's own [`dns::Client`](crate::dns::Client), asking the configured `server` or
//! the first `nameserver` of /etc/resolv.conf.
//!
//! - an SRV record gives `target:port` (the record's target name and port, not resolved
//!   further, as Prometheus does), with `__meta_dns_srv_record_target` and
//!   `__meta_dns_srv_record_port`;
//! - an A or AAAA record gives `address:port` with the configured port;
//! - an MX record gives `exchange:port`, with `__meta_dns_mx_record_target`;
//! - every target has `__meta_dns_name`, the name looked up.
//!
//! Answers are outside input: an SRV record with port 0 or an empty (root) target, and
//! records of another type (a CNAME on the way), are skipped. `NXDOMAIN` is an empty set; a
//! transport failure or another response code fails the refresh, which keeps the last good
//! set and is counted.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Group, LabelMap, Provider, Refreshed, ADDRESS_LABEL};
use crate::config::discovery::DnsSdSettings;
use crate::config::dns::DnsServer;
use crate::config::IpProtocol;
use crate::dns::resolv_conf::{read_first_nameserver, RESOLV_CONF};
use crate::dns::{Answer, Client, RecordData, RecordType, Transport};

/// The name looked up.
pub const NAME_LABEL: &str = "__meta_dns_name";
/// An SRV record's target name.
pub const SRV_TARGET_LABEL: &str = "__meta_dns_srv_record_target";
/// An SRV record's port.
pub const SRV_PORT_LABEL: &str = "__meta_dns_srv_record_port";
/// An MX record's exchange.
pub const MX_TARGET_LABEL: &str = "__meta_dns_mx_record_target";

/// Longest one lookup may take (less when the refresh interval is shorter).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// `NXDOMAIN`: the name does not exist, which is an empty set rather than a failure.
const NXDOMAIN: u16 = 3;

/// A name without its final dot (`a.example.` → `a.example`).
fn bare(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// `host:port`, with an IPv6 address in brackets.
fn join(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Turns the answer to `name`'s lookup into its group (pure). `port` is the port of A,
/// AAAA and MX targets. Returns the group and a note per skipped record.
pub fn group_from_answer(
    name: &str,
    record_type: RecordType,
    port: u16,
    answer: &Answer,
) -> Result<(Group, Vec<String>), String> {
    if answer.rcode != 0 && answer.rcode != NXDOMAIN {
        return Err(format!(
            "looking up {name} ({record_type}) answered {}",
            answer.rcode_name()
        ));
    }
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for r in answer
        .answers
        .iter()
        .filter(|r| r.record_type == record_type)
    {
        let mut labels = LabelMap::new();
        let address = match &r.data {
            RecordData::Srv {
                port: srv_port,
                target,
                ..
            } => {
                let host = bare(target);
                if *srv_port == 0 || host.is_empty() {
                    skipped.push(format!(
                        "{name}: SRV record {:?} has no usable target and port; skipped",
                        r.data_text
                    ));
                    continue;
                }
                labels.insert(SRV_TARGET_LABEL.to_string(), target.clone());
                labels.insert(SRV_PORT_LABEL.to_string(), srv_port.to_string());
                join(host, *srv_port)
            }
            RecordData::A(ip) => join(&ip.to_string(), port),
            RecordData::Aaaa(ip) => join(&ip.to_string(), port),
            RecordData::Mx { exchange, .. } => {
                let host = bare(exchange);
                if host.is_empty() {
                    skipped.push(format!("{name}: MX record with an empty exchange; skipped"));
                    continue;
                }
                labels.insert(MX_TARGET_LABEL.to_string(), exchange.clone());
                join(host, port)
            }
            _ => continue,
        };
        labels.insert(ADDRESS_LABEL.to_string(), address);
        targets.push(labels);
    }
    Ok((
        Group {
            source: format!("dns {name}"),
            targets,
            labels: LabelMap::from([(NAME_LABEL.to_string(), name.to_string())]),
        },
        skipped,
    ))
}

/// The provider of one `dns_sd_configs` entry.
#[derive(Debug)]
pub struct DnsProvider {
    settings: DnsSdSettings,
}

impl DnsProvider {
    /// A provider for `settings`; sockets open per refresh.
    pub fn new(settings: DnsSdSettings) -> DnsProvider {
        DnsProvider { settings }
    }

    /// The server of this refresh: resolved each time, so a changed resolv.conf or server
    /// address is followed.
    async fn server(&self) -> Result<SocketAddr, String> {
        match &self.settings.server {
            DnsServer::Given { host, port } => {
                crate::dns::resolve_server(host, *port, IpProtocol::Ip4, true)
                    .await
                    .map_err(|e| e.to_string())
            }
            DnsServer::ResolvConf => read_first_nameserver(std::path::Path::new(RESOLV_CONF)),
        }
    }

    async fn lookup(&self) -> Result<(Vec<Group>, Vec<String>), String> {
        let timeout = MAX_TIMEOUT.min(self.settings.refresh_interval);
        let server = tokio::time::timeout(timeout, self.server())
            .await
            .map_err(|_| format!("no address for the DNS server within {timeout:?}"))??;
        let client = Client::new(server, Transport::UdpThenTcp).with_timeout(timeout);
        let mut groups = Vec::new();
        let mut notes = Vec::new();
        for name in &self.settings.names {
            let answer = client
                .query(name, self.settings.record_type)
                .await
                .map_err(|e| e.to_string())?;
            let (group, skipped) =
                group_from_answer(name, self.settings.record_type, self.settings.port, &answer)?;
            groups.push(group);
            notes.extend(skipped);
        }
        Ok((groups, notes))
    }
}

impl Provider for DnsProvider {
    fn mechanism(&self) -> &'static str {
        "dns"
    }

    fn interval(&self) -> Duration {
        self.settings.refresh_interval
    }

    fn refresh(&mut self) -> BoxFuture<'_, Refreshed> {
        Box::pin(async move {
            match self.lookup().await {
                Ok((groups, skipped)) => {
                    // A skipped record is the answer's fault, not a failed refresh.
                    for note in skipped {
                        tracing::warn!(note = %note, "DNS discovery skipped a record");
                    }
                    Refreshed {
                        groups: Some(groups),
                        errors: Vec::new(),
                    }
                }
                Err(e) => Refreshed {
                    groups: None,
                    errors: vec![e],
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Record;

    fn record(record_type: RecordType, data: RecordData, text: &str) -> Record {
        Record {
            name: "_x._tcp.example.".into(),
            ttl: 60,
            class: "IN".into(),
            record_type,
            data,
            data_text: text.into(),
        }
    }

    fn answer(rcode: u16, answers: Vec<Record>) -> Answer {
        Answer {
            rcode,
            truncated: false,
            authoritative: true,
            recursion_available: false,
            answers,
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }

    fn srv(port: u16, target: &str) -> Record {
        record(
            RecordType::SRV,
            RecordData::Srv {
                priority: 0,
                weight: 0,
                port,
                target: target.into(),
            },
            &format!("0 0 {port} {target}"),
        )
    }

    #[test]
    fn srv_answers_become_targets_with_meta_labels_and_bad_records_are_skipped() {
        let a = answer(
            0,
            vec![
                srv(9100, "a.example."),
                srv(0, "b.example."),
                srv(9100, "."),
                srv(9200, ""),
                record(
                    RecordType::CNAME,
                    RecordData::Name("c.example.".into()),
                    "c.example.",
                ),
                srv(9300, "c.example."),
            ],
        );
        let (g, skipped) = group_from_answer("_x._tcp.example", RecordType::SRV, 0, &a).unwrap();
        let addresses: Vec<&str> = g
            .targets
            .iter()
            .map(|t| t[ADDRESS_LABEL].as_str())
            .collect();
        assert_eq!(addresses, ["a.example:9100", "c.example:9300"]);
        assert_eq!(g.targets[0][SRV_TARGET_LABEL], "a.example.");
        assert_eq!(g.targets[0][SRV_PORT_LABEL], "9100");
        assert_eq!(g.labels[NAME_LABEL], "_x._tcp.example");
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("0 0 0 b.example."), "{skipped:?}");
    }

    #[test]
    fn address_and_mx_answers_take_the_configured_port() {
        let a = answer(
            0,
            vec![
                record(
                    RecordType::A,
                    RecordData::A([10, 0, 0, 1].into()),
                    "10.0.0.1",
                ),
                record(
                    RecordType::AAAA,
                    RecordData::Aaaa("2001:db8::1".parse().unwrap()),
                    "2001:db8::1",
                ),
            ],
        );
        let (g, _) = group_from_answer("h.example", RecordType::A, 8080, &a).unwrap();
        assert_eq!(g.targets.len(), 1);
        assert_eq!(g.targets[0][ADDRESS_LABEL], "10.0.0.1:8080");
        assert!(!g.targets[0].contains_key(SRV_TARGET_LABEL));
        let (g, _) = group_from_answer("h.example", RecordType::AAAA, 8080, &a).unwrap();
        assert_eq!(g.targets[0][ADDRESS_LABEL], "[2001:db8::1]:8080");
        let mx = answer(
            0,
            vec![record(
                RecordType::MX,
                RecordData::Mx {
                    preference: 10,
                    exchange: "mail.example.".into(),
                },
                "10 mail.example.",
            )],
        );
        let (g, _) = group_from_answer("example", RecordType::MX, 25, &mx).unwrap();
        assert_eq!(g.targets[0][ADDRESS_LABEL], "mail.example:25");
        assert_eq!(g.targets[0][MX_TARGET_LABEL], "mail.example.");
    }

    #[test]
    fn nxdomain_is_empty_and_other_codes_fail() {
        let (g, _) =
            group_from_answer("gone.example", RecordType::SRV, 0, &answer(3, vec![])).unwrap();
        assert!(g.targets.is_empty());
        let e = group_from_answer("x.example", RecordType::SRV, 0, &answer(2, vec![])).unwrap_err();
        assert!(e.contains("x.example") && e.contains("SERVFAIL"), "{e}");
    }
}
