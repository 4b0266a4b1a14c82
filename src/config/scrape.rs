//! `[[scrape]]`: Prometheus-style scrape jobs whose samples pushprobe forwards with remote
//! write, so an edge host needs no Prometheus agent next to its exporters.
//!
//! The keys and defaults are Prometheus' `scrape_config` ones where TOML allows it. Targets
//! come from `targets` (with `labels`), `static_configs`, `file_sd_configs` and
//! `http_sd_configs` (see [`discovery`](super::discovery)), through `relabel_configs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::discovery::{
    validate_discovery, DiscoveryKeys, DiscoverySettings, DnsSdConfig, FileSdConfig, HttpSdConfig,
    StaticConfig,
};
use super::oauth2::{validate_oauth2, OAuth2Config};
use super::{
    Auth, BasicAuthConfig, ByteSize, Checker, ConfigDuration, ConnectHeadersConfig, TlsConfig,
    UrlConfig,
};
use crate::http_client::proxy::ProxySettings;
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
    #[serde(default)]
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
    /// OAuth 2.0 client credentials (see `config::oauth2`); excludes the keys above.
    pub oauth2: Option<OAuth2Config>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The `http://` proxy requests go through (see docs/proxies.md); user info: its
    /// credentials.
    pub proxy_url: Option<UrlConfig>,
    /// Hosts, domains, IP addresses and CIDR ranges reached directly, comma-separated.
    pub no_proxy: Option<String>,
    /// Take the proxy from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy_from_environment: bool,
    /// Headers sent with every `CONNECT`.
    #[serde(default)]
    pub proxy_connect_header: ConnectHeadersConfig,
    /// File holding the password of `proxy_url`'s user.
    pub proxy_password_file: Option<PathBuf>,
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
    /// Exposition formats to ask for, most preferred first, with Prometheus 3's names
    /// (`PrometheusProto`, `OpenMetricsText1.0.0`, `OpenMetricsText0.0.1`,
    /// `PrometheusText1.0.0`, `PrometheusText0.0.4`). Unset: OpenMetrics 1.0, then text 0.0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_protocols: Option<Vec<String>>,
    /// Keep a native histogram's classic buckets beside it (protobuf format), as Prometheus'
    /// `always_scrape_classic_histograms` does.
    #[serde(default)]
    pub always_scrape_classic_histograms: bool,
    /// Target groups with their labels, as Prometheus' `static_configs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_configs: Vec<StaticConfig>,
    /// Target files, watched for changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// HTTP SD endpoints, asked every `refresh_interval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// DNS lookups (SRV, A, AAAA, MX) giving the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_sd_configs: Vec<DnsSdConfig>,
    /// Target relabeling, before any scrape (`__address__`, `__meta_*`, `hashmod`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<RelabelConfig>,
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
    /// Scrape period (the job's, unless `__scrape_interval__` was relabeled).
    pub interval: Duration,
    /// Scrape deadline (the job's, unless `__scrape_timeout__` was relabeled).
    pub timeout: Duration,
}

impl ScrapeTargetSettings {
    /// The scrape target a discovered target stands for; `None` when its address is not
    /// `host[:port]`.
    pub fn from_target(t: &crate::discovery::Target) -> Option<ScrapeTargetSettings> {
        Some(ScrapeTargetSettings {
            address: t.address.clone(),
            url: t.scrape_url()?,
            labels: t.labels.clone(),
            interval: t.interval,
            timeout: t.timeout,
        })
    }
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
    /// The proxies requests go through.
    pub proxy: ProxySettings,
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
    /// The `Accept` header of every scrape, from `scrape_protocols`.
    pub accept: String,
    /// Native histograms keep their classic buckets too.
    pub always_scrape_classic_histograms: bool,
    /// Where targets come from, and their relabeling; the static ones are in `targets`.
    pub discovery: DiscoverySettings,
    /// What a discovered target starts from (job, scheme, path, params, timing).
    pub defaults: crate::discovery::TargetDefaults,
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
    if s.targets.is_empty()
        && s.static_configs.is_empty()
        && s.file_sd_configs.is_empty()
        && s.http_sd_configs.is_empty()
        && s.dns_sd_configs.is_empty()
    {
        c.fail(
            format!("{key}.targets"),
            "list at least one host:port (or use static_configs, file_sd_configs, \
             http_sd_configs or dns_sd_configs)",
        );
    }
    for name in s.params.keys() {
        if name.is_empty() {
            c.fail(format!("{key}.params"), "parameter names must not be empty");
        }
    }
    let extra = c.labels(&format!("{key}.labels"), &s.labels);
    let auth = c.auth(key, &s.basic_auth, &s.bearer_token, &s.bearer_token_file);
    // OAuth2 is one more kind of credentials, refused beside the others.
    let oauth2 = s.oauth2.as_ref().and_then(|o| {
        let other =
            s.basic_auth.is_some() || s.bearer_token.is_some() || s.bearer_token_file.is_some();
        validate_oauth2(c, &format!("{key}.oauth2"), o, other, timeout)
    });
    let auth = oauth2.map(|o| Auth::OAuth2(Box::new(o))).or(auth);
    c.tls(&format!("{key}.tls"), &s.tls);
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(s));
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
    let accept = match &s.scrape_protocols {
        None => crate::scrape::ACCEPT_HEADER.to_string(),
        Some(names) => scrape_protocols(c, &format!("{key}.scrape_protocols"), names),
    };

    let mut seen = std::collections::HashSet::new();
    for (t, address) in s.targets.iter().enumerate() {
        let tkey = format!("{key}.targets[{t}]");
        // A target written with user info may hold a password: it is never quoted whole.
        let shown = crate::secret::redact_url_text(address);
        if !seen.insert(address.as_str()) {
            c.fail(tkey, format!("{shown:?} is listed twice"));
        } else if target_url(s, address).is_none() {
            c.fail(
                tkey,
                format!("{shown:?} is not host:port (no scheme, path or user info)"),
            );
        }
    }
    // `targets` and `labels` are one more static group, listed first.
    let first = (!s.targets.is_empty()).then(|| {
        crate::discovery::Group::of(
            format!("{key}.targets"),
            &s.targets,
            extra.iter().cloned().collect(),
        )
    });
    let discovery = validate_discovery(
        c,
        key,
        DiscoveryKeys {
            static_configs: &s.static_configs,
            file_sd_configs: &s.file_sd_configs,
            http_sd_configs: &s.http_sd_configs,
            dns_sd_configs: &s.dns_sd_configs,
            relabel_configs: &s.relabel_configs,
        },
        first,
    );
    let defaults = crate::discovery::TargetDefaults {
        job: s.job.clone(),
        scheme: s.scheme.as_str().to_string(),
        metrics_path: s.metrics_path.clone(),
        params: s.params.clone(),
        interval,
        timeout,
        address_may_be_url: false,
    };
    let built =
        crate::discovery::build_targets(&discovery.static_groups, &discovery.relabel, &defaults);
    for e in &built.errors {
        c.fail(format!("{key}.static_configs"), e.clone());
    }
    let targets: Vec<ScrapeTargetSettings> = built
        .targets
        .iter()
        .filter_map(ScrapeTargetSettings::from_target)
        .collect();
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
        proxy,
        metric_relabel,
        sample_limit: s.sample_limit,
        body_size_limit: s.body_size_limit.0,
        normalize_le_quantile: s.normalize_le_quantile,
        enable_compression: s.enable_compression,
        accept,
        always_scrape_classic_histograms: s.always_scrape_classic_histograms,
        discovery,
        defaults,
    })
}

/// Checks a `scrape_protocols` list and builds its `Accept` header.
fn scrape_protocols(c: &mut Checker<'_>, key: &str, names: &[String]) -> String {
    use crate::scrape::ScrapeProtocol;
    if names.is_empty() {
        c.fail(
            key,
            "list at least one protocol, e.g. [\"PrometheusProto\"]",
        );
        return String::new();
    }
    let mut protocols = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match ScrapeProtocol::from_name(name) {
            Some(p) if protocols.contains(&p) => {
                c.fail(format!("{key}[{i}]"), format!("{name:?} is listed twice"))
            }
            Some(p) => protocols.push(p),
            None => c.fail(
                format!("{key}[{i}]"),
                format!(
                    "unknown protocol {name:?}; use one of {}",
                    ScrapeProtocol::ALL
                        .iter()
                        .map(|p| p.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
    crate::scrape::accept_header(&protocols)
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
    fn scrape_protocols_build_the_accept_header_and_bad_names_are_refused() {
        let job = "[[scrape]]\njob = \"j\"\ntargets = [\"127.0.0.1:8080\"]\n";
        let s = parse(&format!("{RW}{job}")).unwrap();
        assert_eq!(s.scrapes[0].accept, crate::scrape::ACCEPT_HEADER);
        assert!(!s.scrapes[0].always_scrape_classic_histograms);
        let s = parse(&format!(
            "{RW}{job}scrape_protocols = [\"PrometheusProto\", \"PrometheusText0.0.4\"]\nalways_scrape_classic_histograms = true\n"
        ))
        .unwrap();
        assert_eq!(
            s.scrapes[0].accept,
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited;q=0.6,text/plain;version=0.0.4;q=0.5,*/*;q=0.4"
        );
        assert!(s.scrapes[0].always_scrape_classic_histograms);
        let e = parse(&format!(
            "{RW}{job}scrape_protocols = [\"PrometheusProto\", \"Protobuf\", \"PrometheusProto\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("scrape[0].scrape_protocols[1]")
                && e.contains("unknown protocol \"Protobuf\""),
            "{e}"
        );
        assert!(
            e.contains("scrape[0].scrape_protocols[2]") && e.contains("listed twice"),
            "{e}"
        );
        let e = parse(&format!("{RW}{job}scrape_protocols = []\n")).unwrap_err();
        assert!(e.contains("scrape[0].scrape_protocols"), "{e}");
    }

    #[test]
    fn native_histogram_keys_are_validated_and_the_example_loads() {
        let s = parse(RW).unwrap();
        assert!(s.agent.native_histograms.is_none());
        let s = parse(&format!(
            "[agent]\nnative_histograms = true\nnative_histogram_bucket_factor = 2.0\n{RW}"
        ))
        .unwrap();
        assert_eq!(s.agent.native_histograms.map(|n| n.schema), Some(0));
        let e = parse(&format!(
            "[agent]\nnative_histograms = true\nnative_histogram_bucket_factor = 1.0\n{RW}"
        ))
        .unwrap_err();
        assert!(e.contains("agent.native_histogram_bucket_factor"), "{e}");

        // In a jail: other tests set PUSHPROBE_ variables, which loading reads.
        figment::Jail::expect_with(|_| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/native-histograms.toml");
            let s = crate::config::load(&path, true)
                .unwrap()
                .validate("examples/native-histograms.toml")
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(s.agent.native_histograms.map(|n| n.schema), Some(3));
            assert!(s.scrapes[0]
                .accept
                .starts_with("application/vnd.google.protobuf"));
            assert!(s.scrapes[0].always_scrape_classic_histograms);
            Ok(())
        });
    }

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

    #[test]
    fn static_configs_and_relabel_configs_build_the_static_targets() {
        let s = parse(&format!(
            r#"{RW}
[[scrape]]
job = "node"
targets = ["a:9100"]
labels = {{ env = "prod" }}

[[scrape.static_configs]]
targets = ["b:9100", "c:9100"]
labels = {{ rack = "r1" }}

[[scrape.relabel_configs]]
source_labels = ["__address__"]
regex = "c:.*"
action = "drop"

[[scrape.relabel_configs]]
source_labels = ["__address__"]
regex = "(.*):9100"
target_label = "__param_host"
"#
        ))
        .unwrap();
        let job = &s.scrapes[0];
        assert!(!job.discovery.is_dynamic());
        let got: Vec<(String, String)> = job
            .targets
            .iter()
            .map(|t| (t.url.to_string(), t.labels.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "http://a:9100/metrics?host=a".to_string(),
                    r#"{env="prod",instance="a:9100",job="node"}"#.to_string()
                ),
                (
                    "http://b:9100/metrics?host=b".to_string(),
                    r#"{instance="b:9100",job="node",rack="r1"}"#.to_string()
                ),
            ]
        );
        let e = parse(&format!(
            "{RW}[[scrape]]\njob = \"j\"\n[[scrape.file_sd_configs]]\nfiles = [\"t.txt\", \"*/x.json\"]\n\
             [[scrape.http_sd_configs]]\nurl = \"ftp://x\"\n[[scrape.relabel_configs]]\naction = \"hashmod\"\n"
        ))
        .unwrap_err();
        for want in [
            "scrape[0].file_sd_configs[0].files[0]: \"t.txt\" must end in .json, .yml or .yaml",
            "scrape[0].file_sd_configs[0].files[1]: only the file name may be a glob",
            "scrape[0].http_sd_configs[0].url",
            "scrape[0].relabel_configs[0].",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}
