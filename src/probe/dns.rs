//! DNS probe (`kind = "dns"`): one question to one server per run through the shared
//! [`crate::dns`] client, judged and recorded as the blackbox exporter's `dns` prober does, so that its dashboards and alerts keep working on pushed series.
//!
//! Every series carries `probe` (the probe's name), `instance` (the server as configured, or
//! the resolv.conf name server) and the probe's extra labels. Per run:
//! - `probe_success`, `probe_duration_seconds`;
//! - `probe_dns_lookup_time_seconds` (resolving the server's host name), `probe_ip_protocol`
//!   (4 or 6, 0 when resolution failed) and `probe_ip_addr_hash` (FNV-1a of the address, to
//!   see it change);
//! - `probe_dns_duration_seconds{phase="resolve"|"connect"|"request"}`;
//! - `probe_dns_query_succeeded` (1 when an answer came back, whatever its response code),
//!   `probe_dns_answer_rrs`, `probe_dns_authority_rrs`, `probe_dns_additional_rrs`;
//! - for `query_type = "SOA"` only: `probe_dns_serial`, the serial of the answer's SOA.
//!
//! Success: an answer whose response code is in `valid_rcodes`, not truncated (a truncated
//! answer is asked again over TCP unless `transport_protocol = "udp"`), whose three sections
//! pass their regex checks, in that order; the reason names the first check that failed.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use super::address::ip_hash;
use super::{Detail, ProbeReport};
use crate::config::{DnsProbeSettings, DnsServer, RrValidator};
use crate::dns::resolv_conf::{read_first_nameserver, RESOLV_CONF};
use crate::dns::{self, Answer, Client, DnsError, Question, RecordData, RecordType, Timing};
use crate::series::{LabelError, MetricType, Registry};

/// Whether the probe succeeded, 1 or 0.
pub const PROBE_SUCCESS: &str = "probe_success";
/// Wall time of the run in seconds.
pub const PROBE_DURATION: &str = "probe_duration_seconds";
/// Seconds spent resolving the server's host name.
pub const DNS_LOOKUP_TIME: &str = "probe_dns_lookup_time_seconds";
/// 4 or 6, by the server's address; 0 when resolution failed.
pub const IP_PROTOCOL: &str = "probe_ip_protocol";
/// FNV-1a (32 bits) of the server's address bytes.
pub const IP_ADDR_HASH: &str = "probe_ip_addr_hash";
/// Seconds per `phase` (`resolve`, `connect`, `request`).
pub const DNS_DURATION: &str = "probe_dns_duration_seconds";
/// 1 when the server answered.
pub const DNS_QUERY_SUCCEEDED: &str = "probe_dns_query_succeeded";
/// Records in the answer section.
pub const DNS_ANSWER_RRS: &str = "probe_dns_answer_rrs";
/// Records in the authority section.
pub const DNS_AUTHORITY_RRS: &str = "probe_dns_authority_rrs";
/// Records in the additional section.
pub const DNS_ADDITIONAL_RRS: &str = "probe_dns_additional_rrs";
/// The zone's serial, for SOA queries.
pub const DNS_SERIAL: &str = "probe_dns_serial";

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
        DNS_LOOKUP_TIME,
        MetricType::Gauge,
        "Returns the time taken for probe dns lookup in seconds",
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
        DNS_DURATION,
        MetricType::Gauge,
        "Duration of DNS request by phase",
    ),
    (
        DNS_QUERY_SUCCEEDED,
        MetricType::Gauge,
        "Displays whether or not the query was executed successfully",
    ),
    (
        DNS_ANSWER_RRS,
        MetricType::Gauge,
        "Returns number of entries in the answer resource record list",
    ),
    (
        DNS_AUTHORITY_RRS,
        MetricType::Gauge,
        "Returns number of entries in the authority resource record list",
    ),
    (
        DNS_ADDITIONAL_RRS,
        MetricType::Gauge,
        "Returns number of entries in the additional resource record list",
    ),
    (
        DNS_SERIAL,
        MetricType::Gauge,
        "Returns the serial number of the zone",
    ),
];

/// A DNS probe.
#[derive(Debug)]
pub struct DnsProbe {
    settings: DnsProbeSettings,
    /// `probe`, `instance` and the extra labels, in that order.
    labels: Vec<(String, String)>,
}

/// What one run found, before it is judged and recorded.
#[derive(Debug)]
struct Outcome {
    duration: Duration,
    lookup: Duration,
    server: Option<SocketAddr>,
    timing: Timing,
    result: Result<Answer, DnsError>,
}

/// Whether a run succeeded, and what to say about it.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    success: bool,
    status: String,
    reason: Option<String>,
}

impl DnsProbe {
    /// Builds the probe from validated settings.
    pub fn new(settings: DnsProbeSettings) -> Self {
        let instance = || match &settings.server {
            DnsServer::Given { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            DnsServer::Given { host, port } => format!("{host}:{port}"),
            // The name server of the moment names the series; each run reads the file again.
            DnsServer::ResolvConf => read_first_nameserver(std::path::Path::new(RESOLV_CONF))
                .map_or_else(|_| RESOLV_CONF.to_string(), |a| a.to_string()),
        };
        let labels = super::series_labels(&settings.name, instance, &settings.labels);
        DnsProbe { settings, labels }
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs once: resolve the server, ask the question, within the probe's timeout.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        let started = Instant::now();
        let deadline = started + self.settings.timeout;
        let server = self.server(deadline).await;
        let lookup = started.elapsed();
        let mut timing = Timing::default();
        let (server, result) = match server {
            Err(e) => (None, Err(e)),
            Ok(addr) => {
                let client =
                    Client::new(addr, self.settings.transport).with_timeout(self.settings.timeout);
                let question = Question {
                    name: self.settings.query_name.clone(),
                    record_type: self.settings.query_type,
                    class: self.settings.query_class,
                    recursion_desired: self.settings.recursion_desired,
                };
                let answer = client.exchange_by(&question, deadline, &mut timing).await;
                (Some(addr), answer)
            }
        };
        let outcome = Outcome {
            duration: started.elapsed(),
            lookup,
            server,
            timing,
            result,
        };
        let verdict = judge(&outcome, &self.settings);
        if let Err(e) = self.record(registry, &outcome, &verdict) {
            // Labels were validated with the configuration; this is a programming error,
            // reported instead of panicking in the middle of a run.
            tracing::warn!(probe = %self.settings.name, error = %e, "could not record probe series");
        }
        ProbeReport {
            success: verdict.success,
            duration: outcome.duration,
            status: verdict.status,
            reason: verdict.reason,
            details: details(&outcome),
        }
    }

    /// The server's address: resolved from its host name, or read from resolv.conf.
    async fn server(&self, deadline: Instant) -> Result<SocketAddr, DnsError> {
        match &self.settings.server {
            DnsServer::Given { host, port } => {
                let resolve = dns::resolve_server(
                    host,
                    *port,
                    self.settings.preferred_ip_protocol,
                    self.settings.ip_protocol_fallback,
                );
                match tokio::time::timeout_at(deadline, resolve).await {
                    Ok(r) => r,
                    Err(_) => Err(DnsError::Resolve {
                        server: format!("{host}:{port}"),
                        message: format!("no address within {:?}", self.settings.timeout),
                    }),
                }
            }
            DnsServer::ResolvConf => read_first_nameserver(std::path::Path::new(RESOLV_CONF))
                .map_err(|message| DnsError::Resolve {
                    server: "the default name server".into(),
                    message,
                }),
        }
    }

    fn record(
        &self,
        registry: &mut Registry,
        outcome: &Outcome,
        verdict: &Verdict,
    ) -> Result<(), LabelError> {
        for (name, kind, help) in FAMILIES {
            registry.describe(name, *kind, help);
        }
        let base: Vec<(&str, &str)> = self
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = outcome.result.as_ref().ok();
        let t = &outcome.timing;

        registry.gauge_set(PROBE_SUCCESS, &base, bool_value(verdict.success))?;
        registry.gauge_set(PROBE_DURATION, &base, outcome.duration.as_secs_f64())?;
        registry.gauge_set(DNS_LOOKUP_TIME, &base, outcome.lookup.as_secs_f64())?;
        let ip = outcome.server.map(|a| a.ip());
        registry.gauge_set(
            IP_PROTOCOL,
            &base,
            match ip {
                Some(IpAddr::V4(_)) => 4.0,
                Some(IpAddr::V6(_)) => 6.0,
                None => 0.0,
            },
        )?;
        registry.gauge_set(IP_ADDR_HASH, &base, ip.map_or(0.0, ip_hash))?;
        for (phase, d) in [
            ("resolve", outcome.lookup),
            ("connect", t.connect),
            ("request", t.request),
        ] {
            registry.gauge_set(
                DNS_DURATION,
                &with(&base, &[("phase", phase)]),
                d.as_secs_f64(),
            )?;
        }
        registry.gauge_set(DNS_QUERY_SUCCEEDED, &base, bool_value(answer.is_some()))?;
        let count = |f: fn(&Answer) -> usize| answer.map_or(0.0, |a| f(a) as f64);
        registry.gauge_set(DNS_ANSWER_RRS, &base, count(|a| a.answers.len()))?;
        registry.gauge_set(DNS_AUTHORITY_RRS, &base, count(|a| a.authority.len()))?;
        registry.gauge_set(DNS_ADDITIONAL_RRS, &base, count(|a| a.additional.len()))?;
        if self.settings.query_type == RecordType::SOA {
            registry.gauge_set(
                DNS_SERIAL,
                &base,
                answer.and_then(soa_serial).map_or(0.0, f64::from),
            )?;
        }
        Ok(())
    }
}

/// The serial of the answer section's last SOA record, as blackbox reports it.
fn soa_serial(answer: &Answer) -> Option<u32> {
    answer.answers.iter().rev().find_map(|r| match r.data {
        RecordData::Soa { serial } => Some(serial),
        _ => None,
    })
}

/// Decides success: an answer, complete, with an accepted code, whose sections pass.
fn judge(outcome: &Outcome, settings: &DnsProbeSettings) -> Verdict {
    let answer = match &outcome.result {
        Ok(a) => a,
        Err(e) => {
            return Verdict {
                success: false,
                status: e.kind().to_string(),
                reason: Some(e.to_string()),
            }
        }
    };
    let rcode = answer.rcode_name();
    let fail = |status: String, reason: String| Verdict {
        success: false,
        status,
        reason: Some(reason),
    };
    if !settings
        .valid_rcodes
        .iter()
        .any(|(_, c)| *c == answer.rcode)
    {
        let names: Vec<&str> = settings
            .valid_rcodes
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        return fail(
            rcode.clone(),
            format!("rcode {rcode} not in valid_rcodes [{}]", names.join(", ")),
        );
    }
    if answer.truncated {
        return fail(
            "truncated".into(),
            "answer truncated (TC bit) over UDP, not retried over TCP: transport_protocol = \
             \"udp\"; leave it out to retry, or set \"tcp\""
                .into(),
        );
    }
    for (section, records, validator) in [
        ("answer", &answer.answers, &settings.validate_answer),
        ("authority", &answer.authority, &settings.validate_authority),
        (
            "additional",
            &answer.additional,
            &settings.validate_additional,
        ),
    ] {
        let texts: Vec<String> = records.iter().map(dns::Record::text).collect();
        if let Err(problem) = validate_rrs(&texts, validator) {
            return fail(rcode, format!("{section}: {problem}"));
        }
    }
    Verdict {
        success: true,
        status: rcode,
        reason: None,
    }
}

/// Checks one section's records (in text form) against its regexes, in blackbox's order;
/// `Err` says which check failed and on which record.
fn validate_rrs(records: &[String], v: &RrValidator) -> Result<(), String> {
    if records.is_empty() {
        if let Some(re) = v.fail_if_not_matches.first() {
            return Err(format!(
                "fail_if_not_matches_regexp {:?} set, but no records came back",
                re.as_str()
            ));
        }
        if let Some(re) = v.fail_if_none_matches.first() {
            return Err(format!(
                "fail_if_none_matches_regexp {:?} set, but no records came back",
                re.as_str()
            ));
        }
    }
    for record in records {
        if let Some(re) = v.fail_if_matches.iter().find(|re| re.is_match(record)) {
            return Err(format!(
                "fail_if_matches_regexp {:?} matched {record:?}",
                re.as_str()
            ));
        }
        if let Some(re) = v.fail_if_not_matches.iter().find(|re| !re.is_match(record)) {
            return Err(format!(
                "fail_if_not_matches_regexp {:?} did not match {record:?}",
                re.as_str()
            ));
        }
    }
    if !v.fail_if_all_match.is_empty()
        && records
            .iter()
            .all(|r| v.fail_if_all_match.iter().all(|re| re.is_match(r)))
    {
        let list: Vec<&str> = v
            .fail_if_all_match
            .iter()
            .map(regex::Regex::as_str)
            .collect();
        return Err(format!(
            "fail_if_all_match_regexp {list:?} matched all {} records",
            records.len()
        ));
    }
    if !v.fail_if_none_matches.is_empty()
        && !records
            .iter()
            .any(|r| v.fail_if_none_matches.iter().any(|re| re.is_match(r)))
    {
        let list: Vec<&str> = v
            .fail_if_none_matches
            .iter()
            .map(regex::Regex::as_str)
            .collect();
        return Err(format!(
            "fail_if_none_matches_regexp {list:?} matched none of {} records",
            records.len()
        ));
    }
    Ok(())
}

/// Answer records shown in `check`'s details; the count says how many there were.
const MAX_ANSWERS_SHOWN: usize = 5;

/// Facts for `check` and logs.
fn details(outcome: &Outcome) -> Vec<(String, Detail)> {
    let mut out: Vec<(String, Detail)> = Vec::new();
    if let Some(addr) = outcome.server {
        out.push(("server".into(), addr.to_string().into()));
    }
    let t = &outcome.timing;
    if !t.transport.is_empty() {
        out.push(("transport".into(), t.transport.into()));
    }
    if t.retried_over_tcp {
        out.push(("retried_over_tcp".into(), Detail::Flag(true)));
    }
    if t.ignored > 0 {
        out.push((
            "ignored_messages".into(),
            Detail::Count(u64::from(t.ignored)),
        ));
    }
    if let Ok(a) = &outcome.result {
        out.push(("rcode".into(), a.rcode_name().into()));
        out.push(("answer_rrs".into(), Detail::Count(a.answers.len() as u64)));
        // One detail, so that `check --output json` (an object) keeps every record shown.
        if !a.answers.is_empty() {
            let mut shown: Vec<String> = a
                .answers
                .iter()
                .take(MAX_ANSWERS_SHOWN)
                .map(|r| r.text().replace('\t', " "))
                .collect();
            if a.answers.len() > MAX_ANSWERS_SHOWN {
                shown.push(format!("… {} more", a.answers.len() - MAX_ANSWERS_SHOWN));
            }
            out.push(("answers".into(), shown.join("; ").into()));
        }
    }
    for (name, d) in [
        ("resolve_seconds", outcome.lookup),
        ("connect_seconds", t.connect),
        ("request_seconds", t.request),
    ] {
        if !d.is_zero() {
            out.push((name.into(), d.into()));
        }
    }
    out
}

/// `base` plus `extra` labels.
fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = base.to_vec();
    l.extend_from_slice(extra);
    l
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(patterns: &[&str]) -> Vec<regex::Regex> {
        patterns
            .iter()
            .map(|p| regex::Regex::new(p).unwrap())
            .collect()
    }

    fn records() -> Vec<String> {
        vec![
            "example.com.\t300\tIN\tA\t127.0.0.1".into(),
            "example.com.\t300\tIN\tA\t127.0.0.2".into(),
        ]
    }

    #[test]
    fn no_checks_pass_anything() {
        assert_eq!(validate_rrs(&records(), &RrValidator::default()), Ok(()));
        assert_eq!(validate_rrs(&[], &RrValidator::default()), Ok(()));
    }

    #[test]
    fn each_check_fails_as_blackbox_does() {
        let v = RrValidator {
            fail_if_matches: re(&["127\\.0\\.0\\.2$"]),
            ..Default::default()
        };
        let e = validate_rrs(&records(), &v).unwrap_err();
        assert_eq!(
            e,
            "fail_if_matches_regexp \"127\\\\.0\\\\.0\\\\.2$\" matched \
             \"example.com.\\t300\\tIN\\tA\\t127.0.0.2\""
        );

        let v = RrValidator {
            fail_if_not_matches: re(&["127\\.0\\.0\\.1$"]),
            ..Default::default()
        };
        assert!(validate_rrs(&records(), &v)
            .unwrap_err()
            .starts_with("fail_if_not_matches_regexp"));
        assert!(validate_rrs(&[], &v)
            .unwrap_err()
            .contains("no records came back"));

        let v = RrValidator {
            fail_if_all_match: re(&["\\tA\\t"]),
            ..Default::default()
        };
        assert!(validate_rrs(&records(), &v)
            .unwrap_err()
            .contains("matched all 2 records"));
        // One record not matching is enough to pass.
        let mut mixed = records();
        mixed.push("example.com.\t300\tIN\tTXT\t\"x\"".into());
        assert_eq!(validate_rrs(&mixed, &v), Ok(()));

        let v = RrValidator {
            fail_if_none_matches: re(&["10\\.0\\.0\\.1$"]),
            ..Default::default()
        };
        assert!(validate_rrs(&records(), &v)
            .unwrap_err()
            .contains("matched none of 2 records"));
        assert!(validate_rrs(&[], &v)
            .unwrap_err()
            .contains("no records came back"));
        let v = RrValidator {
            fail_if_none_matches: re(&["127\\.0\\.0\\.2$"]),
            ..Default::default()
        };
        assert_eq!(validate_rrs(&records(), &v), Ok(()));
    }
}
