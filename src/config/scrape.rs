//! `[[scrape]]`: Prometheus-style scrape jobs whose samples pushprobe forwards with remote
//! write, so an edge host needs no Prometheus agent next to its exporters.
//!
//! The keys and defaults are Prometheus' `scrape_config` ones where TOML allows it; static
//! targets only (`host:port`), as `static_configs` has them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Auth, BasicAuthConfig, ByteSize, Checker, ConfigDuration, TlsConfig};
use crate::scrape::relabel::{compile, RelabelConfig, RelabelRule};
use crate::secret::Secret;

/// Default scrape interval: Prometheus' global default, one minute.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);
/// Default scrape timeout (never more than the interval): Prometheus' global default.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest body read from a target; Prometheus has none, but an agent on a small
/// host must not buffer whatever a broken exporter streams.
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

fn default_metrics_path() -> String {
    "/metrics".to_string()
}
fn default_scrape_interval() -> ConfigDuration {
    ConfigDuration(DEFAULT_SCRAPE_INTERVAL)
}
/// Default `sample_limit`: 50 000 samples a scrape, after relabeling. Twenty times a busy
/// host's node exporter, so no ordinary exporter reaches it, while one exposing runaway
/// cardinality fails (`up` = 0) instead of filling the agent's memory and queues: Prometheus
/// has no default (0), and Grafana Agent and Alloy advise setting one.
pub const DEFAULT_SAMPLE_LIMIT: usize = 50_000;

fn default_sample_limit() -> usize {
    DEFAULT_SAMPLE_LIMIT
}

fn default_body_size_limit() -> ByteSize {
    ByteSize(DEFAULT_BODY_SIZE_LIMIT)
}

/// One scrape job as configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of every series scraped; unique across `[[scrape]]` tables.
    pub job: String,
    /// Static targets as `host:port`; each becomes the `instance` label.
    pub targets: Vec<String>,
    /// The HTTP path scraped.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Scheme,
    /// URL query parameters, each with one or more values.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// How often each target is scraped.
    #[serde(default = "default_scrape_interval")]
    pub interval: ConfigDuration,
    /// Deadline of one scrape; default 10s, or the interval when that is shorter.
    pub timeout: Option<ConfigDuration>,
    /// On a clash between an exposed label and a target label, keep the exposed one.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use the timestamps a target exposes instead of the scrape time.
    #[serde(default = "super::default_true")]
    pub honor_timestamps: bool,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline (prefer `bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Relabel rules applied to every scraped series, after the target labels are attached.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Most samples one scrape may keep after relabeling; more fails the scrape. 0: no limit.
    #[serde(default = "default_sample_limit")]
    pub sample_limit: usize,
    /// Most bytes read from one response (uncompressed); more fails the scrape.
    #[serde(default = "default_body_size_limit")]
    pub body_size_limit: ByteSize,
    /// Extra target labels, like `static_configs` labels (they may override `job`/`instance`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Rewrite `le` and `quantile` values to canonical floats (`1` → `1.0`) as Prometheus 3
    /// does; `false` keeps them as exposed, as Prometheus 2 stores them.
    #[serde(default = "super::default_true")]
    pub normalize_le_quantile: bool,
    /// Ask targets for a gzip body (`Accept-Encoding: gzip`), as Prometheus'
    /// `enable_compression` does; a gzip answer is decoded either way.
    #[serde(default = "super::default_true")]
    pub enable_compression: bool,
}

/// One validated target of a job.
#[derive(Debug, Clone)]
pub struct ScrapeTargetSettings {
    /// The target as configured, `host:port`.
    pub address: String,
    /// The full URL scraped, query parameters included.
    pub url: reqwest::Url,
    /// Target labels: `job`, `instance` and the extra labels, sorted, without `__name__`.
    pub labels: crate::series::Labels,
}

/// A validated scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    /// Job name.
    pub job: String,
    /// Its targets.
    pub targets: Vec<ScrapeTargetSettings>,
    /// Scrape period.
    pub interval: Duration,
    /// Scrape deadline, at most `interval`.
    pub timeout: Duration,
    /// Exposed labels win over target labels.
    pub honor_labels: bool,
    /// Exposed timestamps are kept.
    pub honor_timestamps: bool,
    /// Credentials.
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// Compiled metric relabel rules.
    pub metric_relabel: Arc<[RelabelRule]>,
    /// Sample limit after relabeling; 0: none.
    pub sample_limit: usize,
    /// Body size limit in bytes.
    pub body_size_limit: u64,
    /// Canonical `le`/`quantile` values (Prometheus 3) or as exposed (Prometheus 2).
    pub normalize_le_quantile: bool,
    /// Whether scrapes send `Accept-Encoding: gzip`.
    pub enable_compression: bool,
}

/// Validates the `[[scrape]]` tables; errors name `scrape[i].<key>`.
pub(super) fn validate_scrapes(
    c: &mut Checker<'_>,
    scrapes: &[ScrapeConfig],
) -> Vec<ScrapeSettings> {
    let mut out = Vec::new();
    let mut jobs = std::collections::HashSet::new();
    for (i, s) in scrapes.iter().enumerate() {
        let key = format!("scrape[{i}]");
        if s.job.is_empty() {
            c.fail(format!("{key}.job"), "must not be empty");
        } else if !jobs.insert(s.job.as_str()) {
            c.fail(
                format!("{key}.job"),
                format!(
                    "{:?} is used by another [[scrape]]; job names must be unique",
                    s.job
                ),
            );
        }
        if let Some(v) = validate_scrape(c, &key, s) {
            out.push(v);
        }
    }
    out
}

fn validate_scrape(c: &mut Checker<'_>, key: &str, s: &ScrapeConfig) -> Option<ScrapeSettings> {
    let errors_before = c.errors.len();
    let interval = c.positive(format!("{key}.interval"), s.interval);
    let timeout = match s.timeout {
        Some(t) => {
            let t = c.positive(format!("{key}.timeout"), t);
            if t > interval {
                c.fail(
                    format!("{key}.timeout"),
                    format!("must not exceed interval ({})", ConfigDuration(interval)),
                );
            }
            t
        }
        // Prometheus' rule for an unset timeout: the global default, capped by the interval.
        None => DEFAULT_SCRAPE_TIMEOUT.min(interval),
    };
    if !s.metrics_path.starts_with('/') {
        c.fail(format!("{key}.metrics_path"), "must start with /");
    }
    if s.targets.is_empty() {
        c.fail(format!("{key}.targets"), "list at least one host:port");
    }
    for name in s.params.keys() {
        if name.is_empty() {
            c.fail(format!("{key}.params"), "parameter names must not be empty");
        }
    }
    let extra = c.labels(&format!("{key}.labels"), &s.labels);
    let auth = c.auth(key, &s.basic_auth, &s.bearer_token, &s.bearer_token_file);
    c.tls(&format!("{key}.tls"), &s.tls);
    c.tls_files(&format!("{key}.tls"), &s.tls);
    let metric_relabel = match compile(&s.metric_relabel_configs) {
        Ok(rules) => Arc::from(rules),
        Err(e) => {
            c.fail(
                format!("{key}.metric_relabel_configs[{}].{}", e.index, e.field),
                e.message,
            );
            Arc::from(Vec::new())
        }
    };
    if s.body_size_limit.0 == 0 {
        c.fail(format!("{key}.body_size_limit"), "must be > 0");
    }

    let mut targets = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (t, address) in s.targets.iter().enumerate() {
        let tkey = format!("{key}.targets[{t}]");
        // A target written with user info may hold a password: it is never quoted whole.
        let shown = crate::secret::redact_url_text(address);
        if !seen.insert(address.as_str()) {
            c.fail(tkey, format!("{shown:?} is listed twice"));
            continue;
        }
        let Some(url) = target_url(s, address) else {
            c.fail(
                tkey,
                format!("{shown:?} is not host:port (no scheme, path or user info)"),
            );
            continue;
        };
        // Target labels as Prometheus builds them: job and instance first, then the
        // configured labels, which may override both.
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("job".to_string(), s.job.clone());
        labels.insert("instance".to_string(), address.clone());
        for (k, v) in &extra {
            labels.insert(k.clone(), v.clone());
        }
        let labels = crate::series::Labels::from_pairs(labels).unwrap_or_default();
        targets.push(ScrapeTargetSettings {
            address: address.clone(),
            url,
            labels,
        });
    }
    if c.errors.len() > errors_before {
        return None;
    }
    Some(ScrapeSettings {
        job: s.job.clone(),
        targets,
        interval,
        timeout,
        honor_labels: s.honor_labels,
        honor_timestamps: s.honor_timestamps,
        auth,
        tls: s.tls.clone(),
        metric_relabel,
        sample_limit: s.sample_limit,
        body_size_limit: s.body_size_limit.0,
        normalize_le_quantile: s.normalize_le_quantile,
        enable_compression: s.enable_compression,
    })
}

/// Builds `scheme://address/metrics_path?params`, refusing an address that is more than
/// `host:port`.
fn target_url(s: &ScrapeConfig, address: &str) -> Option<reqwest::Url> {
    if address.is_empty() || address.contains(['/', '@', '?', '#']) || address.contains("://") {
        return None;
    }
    let mut url = reqwest::Url::parse(&format!("{}://{address}", s.scheme.as_str())).ok()?;
    // The port is required: a default-port target is written `host:80` in Prometheus too,
    // and an address without one is more often a typo than intended.
    let explicit_port = address
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if url.host().is_none() || !explicit_port {
        return None;
    }
    url.set_path(&s.metrics_path);
    if !s.params.is_empty() {
        let mut q = url.query_pairs_mut();
        for (name, values) in &s.params {
            for v in values {
                q.append_pair(name, v);
            }
        }
    }
    Some(url)
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {

    use super::super::Settings;
    use super::*;

    fn parse(toml: &str) -> Result<Settings, String> {
        crate::config::tests::parse_in_jail(toml, &[], &[("token", "s3cret\n")])
    }

    const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";

    #[test]
    fn sample_limit_zero_still_means_no_limit() {
        let s = parse(&format!(
            "{RW}[[scrape]]\njob = \"big\"\ntargets = [\"127.0.0.1:8080\"]\nsample_limit = 0\n"
        ))
        .unwrap();
        assert_eq!(s.scrapes[0].sample_limit, 0);
    }

    #[test]
    fn minimal_job_takes_prometheus_defaults() {
        let s = parse(&format!(
            "{RW}[[scrape]]\njob = \"node\"\ntargets = [\"127.0.0.1:9100\", \"[::1]:9100\"]\n"
        ))
        .unwrap();
        let job = &s.scrapes[0];
        assert_eq!(job.interval, Duration::from_secs(60));
        assert_eq!(job.timeout, Duration::from_secs(10));
        assert!(!job.honor_labels);
        assert!(job.honor_timestamps);
        assert_eq!(job.sample_limit, DEFAULT_SAMPLE_LIMIT);
        assert_eq!(job.body_size_limit, DEFAULT_BODY_SIZE_LIMIT);
        assert_eq!(job.targets[0].url.as_str(), "http://127.0.0.1:9100/metrics");
        assert_eq!(job.targets[1].url.as_str(), "http://[::1]:9100/metrics");
        assert_eq!(
            job.targets[0].labels.to_string(),
            r#"{instance="127.0.0.1:9100",job="node"}"#
        );
        assert_eq!(s.agent.metadata_interval, Some(Duration::from_secs(60)));
        assert!(job.normalize_le_quantile);
        assert!(
            job.enable_compression,
            "Prometheus asks for gzip by default"
        );
    }

    #[test]
    fn every_key_is_read() {
        let s = parse(&format!(
            r#"{RW}
[agent]
metadata_interval = "0s"

[[scrape]]
job = "app"
targets = ["app.local:8443"]
metrics_path = "/probe"
scheme = "https"
params = {{ module = ["http_2xx"], target = ["a", "b"] }}
interval = "15s"
timeout = "5s"
honor_labels = true
honor_timestamps = false
bearer_token_file = "token"
sample_limit = 5000
body_size_limit = "10MiB"
labels = {{ env = "prod", instance = "app-1" }}
tls = {{ insecure_skip_verify = true }}
normalize_le_quantile = false
enable_compression = false

[[scrape.metric_relabel_configs]]
source_labels = ["__name__"]
regex = "go_.*"
action = "drop"
"#
        ))
        .unwrap();
        let job = &s.scrapes[0];
        assert_eq!(
            job.targets[0].url.as_str(),
            "https://app.local:8443/probe?module=http_2xx&target=a&target=b"
        );
        assert_eq!(
            (job.interval, job.timeout),
            (Duration::from_secs(15), Duration::from_secs(5))
        );
        assert!(job.honor_labels && !job.honor_timestamps);
        assert_eq!(job.sample_limit, 5000);
        assert_eq!(job.body_size_limit, 10 << 20);
        assert_eq!(job.metric_relabel.len(), 1);
        assert!(matches!(&job.auth, Some(Auth::Bearer(t)) if t.current().expose() == "s3cret"));
        assert!(job.tls.insecure_skip_verify);
        assert!(!job.normalize_le_quantile);
        assert!(!job.enable_compression);
        // `labels` may override `instance`, as static_configs labels do.
        assert_eq!(
            job.targets[0].labels.to_string(),
            r#"{env="prod",instance="app-1",job="app"}"#
        );
        assert_eq!(s.agent.metadata_interval, None);
    }

    #[test]
    fn unset_timeout_is_capped_by_a_short_interval() {
        let s = parse(&format!(
            "{RW}[[scrape]]\njob = \"n\"\ntargets = [\"h:1\"]\ninterval = \"2s\"\n"
        ))
        .unwrap();
        assert_eq!(s.scrapes[0].timeout, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse(&format!(
            r#"{RW}
[[scrape]]
job = "a"
targets = ["h:1", "h:1", "http://h:2/metrics", "nohost", "h:x"]
interval = "0s"
metrics_path = "metrics"
body_size_limit = 0
labels = {{ __bad = "x" }}

[[scrape.metric_relabel_configs]]
action = "hashmod"
target_label = "t"

[[scrape]]
job = "a"
targets = []
interval = "5s"
timeout = "10s"
bearer_token = "x"
bearer_token_file = "token"
"#
        ))
        .unwrap_err();
        for want in [
            "scrape[0].interval: must be > 0 (in pushprobe.toml)",
            "scrape[0].targets[1]: \"h:1\" is listed twice",
            "scrape[0].targets[2]: \"http://h:2/metrics\" is not host:port",
            "scrape[0].targets[3]: \"nohost\" is not host:port",
            "scrape[0].targets[4]: \"h:x\" is not host:port",
            "scrape[0].metrics_path: must start with /",
            "scrape[0].body_size_limit: must be > 0",
            "scrape[0].labels.__bad:",
            "scrape[0].metric_relabel_configs[0].modulus: hashmod requires a non-zero modulus",
            "scrape[1].job: \"a\" is used by another [[scrape]]",
            "scrape[1].targets: list at least one host:port",
            "scrape[1].timeout: must not exceed interval (5s)",
            "scrape[1]: use only one of basic_auth, bearer_token, bearer_token_file",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse(&format!(
            "{RW}[[scrape]]\njob = \"a\"\ntargets = [\"h:1\"]\nscrape_interval = \"1m\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("scrape_interval"), "{e}");
    }
}
