//! Probes. A probe run measures its target, records the results into the probe's own
//! [`Registry`], and returns a [`ProbeReport`] for logs and `check`. The agent then turns the
//! registry into samples stamped with the time the run started.
//!
//! - this file: [`Probe`], the runnable probe of any kind, with its report and build error;
//! - [`address`]: the address a name-resolving probe picks, and its blackbox-compatible hash;
//! - [`http`]: the HTTP(S) probe (`kind = "http"`), recorded as the blackbox exporter does;
//! - [`openai`]: the OpenAI-compatible API probe (`kind = "openai"`);
//! - [`icmp`]: the ICMP echo probe (`kind = "icmp"`), recorded as the blackbox exporter does;
//! - [`tcp`]: the TCP probe (`kind = "tcp"`): connect, optional TLS or STARTTLS, and a line
//!   dialogue, recorded as the blackbox exporter's `tcp` prober does;
//! - [`dns`]: the DNS probe (`kind = "dns"`), through the shared [`dns`](crate::dns) client,
//!   recorded as the blackbox exporter does;
//! - [`grpc`]: the gRPC health-check probe (`kind = "grpc"`), recorded as the blackbox
//!   exporter does.
//!
//! The HTTP and OpenAI kinds send their requests through the shared
//! [`http_client`](crate::http_client), which also reads the server's certificate expiry for
//! `probe_ssl_earliest_cert_expiry`; the gRPC kind opens its own HTTP/2 connection with the
//! same TLS settings.
//!
//! What every kind gets without knowing of it lives here too: [`Probe::run_attempts`] makes
//! up to `retries + 1` attempts of a run, and says how each went.

pub mod address;
pub mod dns;
pub mod grpc;
pub mod http;
pub mod icmp;
pub mod openai;
pub mod tcp;

use std::time::Duration;

use crate::config::ProbeSettings;
use crate::series::Registry;

/// What one probe run found, for logs, `once`'s exit code and `check`'s table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// Whether the target met every expectation.
    pub success: bool,
    /// Wall time of the run.
    pub duration: Duration,
    /// Short status: an HTTP status code, or the failure kind (`timeout`, `connect`, …).
    pub status: String,
    /// Why it failed, in words a person can act on; `None` on success.
    pub reason: Option<String>,
    /// Extra facts for `check` (e.g. tokens, cost, phase timings), as name/value pairs. A
    /// measured number's name ends with its unit (`_seconds`, `_dollars`, `_tokens`).
    pub details: Vec<(String, Detail)>,
}

/// The value of one fact in a [`ProbeReport`]: a number kept exact, or prose.
///
/// Numbers stay numbers so that `check --output json` gives scripts values to compare, and
/// only the table rounds them, for display.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// Words: an outcome, an address, a version, a date.
    Text(String),
    /// A count: tokens, models, redirects.
    Count(u64),
    /// A duration, in seconds.
    Seconds(f64),
    /// Money, in US dollars, unrounded.
    Dollars(f64),
    /// A rate, per second (output tokens per second).
    PerSecond(f64),
    /// A yes/no fact (whether the configured model is listed).
    Flag(bool),
}

impl Detail {
    /// The text, when the value is prose.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Detail::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Detail::Text(text)
    }
}

impl From<&str> for Detail {
    fn from(text: &str) -> Self {
        Detail::Text(text.to_string())
    }
}

impl From<Duration> for Detail {
    fn from(d: Duration) -> Self {
        Detail::Seconds(d.as_secs_f64())
    }
}

/// The labels every series of a probe starts with: `probe`, then `instance`, then the rest of
/// the probe's `labels`. The `instance` is the one in `labels` when there is one (a
/// discovered target's, set by [`ProbeSettings::with_target`] from its relabeling), else
/// `own`, what the kind names its target by; configured probes may not set it in `labels`.
pub(crate) fn series_labels(
    name: &str,
    own: impl FnOnce() -> String,
    labels: &[(String, String)],
) -> Vec<(String, String)> {
    let instance = labels
        .iter()
        .find(|(n, _)| n == "instance")
        .map_or_else(own, |(_, v)| v.clone());
    let mut out = vec![
        ("probe".to_string(), name.to_string()),
        ("instance".to_string(), instance),
    ];
    out.extend(labels.iter().filter(|(n, _)| n != "instance").cloned());
    out
}

/// How the attempts of one run went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunAttempts {
    /// RunAttempts that succeeded (0 or 1: a success ends the run).
    pub succeeded: u32,
    /// RunAttempts that failed.
    pub failed: u32,
}

impl RunAttempts {
    /// All attempts made.
    pub fn total(self) -> u32 {
        self.succeeded + self.failed
    }
}

/// The report of a run of several attempts: the last attempt's, with the number of attempts
/// as a detail and, when every one failed, said in the reason.
fn report_of_attempts(mut last: ProbeReport, attempts: RunAttempts) -> ProbeReport {
    let n = attempts.total();
    if n > 1 {
        last.details
            .push(("attempts".into(), Detail::Count(u64::from(n))));
        if !last.success {
            last.reason = Some(format!(
                "all {n} attempts failed; the last: {}",
                last.reason.as_deref().unwrap_or(&last.status)
            ));
        }
    }
    last
}

/// Why a probe could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// TLS options could not be turned into a client configuration.
    #[error("probe {probe}: {source}")]
    Tls {
        /// The probe's name.
        probe: String,
        /// The TLS problem.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The credentials could not be set up.
    #[error("probe {probe}: credentials: {message}")]
    Credentials {
        /// The probe's name.
        probe: String,
        /// What went wrong; never a secret.
        message: String,
    },
}

/// A runnable probe of any kind.
// Probes are built once per configuration and live as long as the agent: variant sizes
// cost nothing worth boxing for, and would otherwise shift as each kind grows.
#[allow(clippy::large_enum_variant)]
pub enum Probe {
    /// HTTP(S) probe.
    Http(http::HttpProbe),
    /// OpenAI-compatible API probe.
    Openai(openai::OpenAiProbe),
    /// ICMP echo probe.
    Icmp(icmp::IcmpProbe),
    /// TCP probe.
    Tcp(tcp::TcpProbe),
    /// DNS probe.
    Dns(dns::DnsProbe),
    /// gRPC health-check probe.
    Grpc(grpc::GrpcProbe),
}

impl Probe {
    /// Builds a probe from validated settings.
    pub fn new(settings: &ProbeSettings) -> Result<Probe, ProbeError> {
        match settings {
            ProbeSettings::Http(s) => Ok(Probe::Http(http::HttpProbe::new(s.clone())?)),
            ProbeSettings::Openai(s) => Ok(Probe::Openai(openai::OpenAiProbe::new(s.clone())?)),
            ProbeSettings::Icmp(s) => Ok(Probe::Icmp(icmp::IcmpProbe::new(s.clone()))),
            ProbeSettings::Tcp(s) => Ok(Probe::Tcp(tcp::TcpProbe::new(s.clone())?)),
            ProbeSettings::Dns(s) => Ok(Probe::Dns(dns::DnsProbe::new(s.clone()))),
            ProbeSettings::Grpc(s) => Ok(Probe::Grpc(grpc::GrpcProbe::new(s.clone())?)),
        }
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            Probe::Http(p) => p.name(),
            Probe::Openai(p) => p.name(),
            Probe::Icmp(p) => p.name(),
            Probe::Tcp(p) => p.name(),
            Probe::Dns(p) => p.name(),
            Probe::Grpc(p) => p.name(),
        }
    }

    /// Runs up to `retries + 1` attempts, one after another, each within the probe's own
    /// timeout and recorded into `registry` (so its gauges end as the last attempt left them,
    /// and its counters count every attempt), until one succeeds. The report is the last
    /// attempt's.
    pub async fn run_attempts(
        &mut self,
        registry: &mut Registry,
        retries: u32,
    ) -> (ProbeReport, RunAttempts) {
        let mut attempts = RunAttempts::default();
        loop {
            let report = self.run(registry).await;
            if report.success {
                attempts.succeeded += 1;
            } else {
                attempts.failed += 1;
            }
            if report.success || attempts.failed > retries {
                return (report_of_attempts(report, attempts), attempts);
            }
            tracing::debug!(
                probe = self.name(),
                attempt = attempts.total(),
                reason = report.reason.as_deref().unwrap_or(""),
                "probe attempt failed; trying again"
            );
        }
    }

    /// Runs once, within the probe's own timeout, recording into `registry`. Never panics on
    /// anything the target sends.
    pub async fn run(&mut self, registry: &mut Registry) -> ProbeReport {
        match self {
            Probe::Http(p) => p.run(registry).await,
            Probe::Openai(p) => p.run(registry).await,
            Probe::Icmp(p) => p.run(registry).await,
            Probe::Tcp(p) => p.run(registry).await,
            Probe::Dns(p) => p.run(registry).await,
            Probe::Grpc(p) => p.run(registry).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(success: bool, reason: Option<&str>) -> ProbeReport {
        ProbeReport {
            success,
            duration: Duration::from_millis(3),
            status: if success { "200" } else { "503" }.into(),
            reason: reason.map(String::from),
            details: vec![],
        }
    }

    #[test]
    fn one_attempt_reports_as_it_was() {
        let r = report(false, Some("status 503"));
        let once = RunAttempts {
            succeeded: 0,
            failed: 1,
        };
        assert_eq!(report_of_attempts(r.clone(), once), r);
    }

    #[test]
    fn several_attempts_are_counted_and_said() {
        let ok = report_of_attempts(
            report(true, None),
            RunAttempts {
                succeeded: 1,
                failed: 1,
            },
        );
        assert!(ok.success && ok.reason.is_none());
        assert_eq!(ok.details, vec![("attempts".to_string(), Detail::Count(2))]);
        let failed = report_of_attempts(
            report(false, Some("status 503")),
            RunAttempts {
                succeeded: 0,
                failed: 3,
            },
        );
        assert_eq!(
            failed.reason.as_deref(),
            Some("all 3 attempts failed; the last: status 503")
        );
        assert_eq!(
            RunAttempts {
                succeeded: 1,
                failed: 2
            }
            .total(),
            3
        );
    }
}
