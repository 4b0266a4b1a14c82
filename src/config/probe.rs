//! `[[probe]]`: the probes to run, one table each, whose `kind` picks the schema; the
//! `kind = "http"` schema and its validation live here, `kind = "openai"` in
//! [`openai`](super::openai), `kind = "grpc"` in [`grpc`](super::grpc). What every kind shares (a unique name, a timeout within the
//! interval) is checked once, in [`validate_probes`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::discovery::{
    has_discovery, validate_discovery, DiscoveryKeys, DiscoverySettings, DnsSdConfig, FileSdConfig,
    HttpSdConfig, StaticConfig, TARGET_SOURCES,
};
use super::dns::{validate_dns_probe, DnsProbeConfig, DnsProbeSettings};
use super::grpc::{validate_grpc_probe, GrpcProbeConfig, GrpcProbeSettings};
use super::http_checks::{validate_http_checks, HeaderMatchConfig, HttpChecks, JsonCheckConfig};
use super::icmp::{validate_icmp_probe, IcmpProbeConfig, IcmpProbeSettings};
use super::load::describe_figment_error;
use super::oauth2::{validate_oauth2, OAuth2Config};
use super::openai::{validate_openai_probe, OpenAiProbeConfig, OpenAiProbeSettings};
use super::tcp::{validate_tcp_probe, TcpProbeConfig, TcpProbeSettings};
use super::{
    default_true, validate_buckets, Auth, BasicAuthConfig, ByteSize, Checker, ConfigDuration,
    ConnectHeadersConfig, HeadersConfig, TlsConfig, UrlConfig,
};
use crate::http_client::proxy::ProxySettings;
use crate::pricing::PriceTable;
use crate::scrape::relabel::RelabelConfig;

/// Gathers a probe table's discovery keys (fields of the same names).
macro_rules! discovery_keys {
    ($p:expr) => {
        DiscoveryKeys {
            static_configs: &$p.static_configs,
            file_sd_configs: &$p.file_sd_configs,
            http_sd_configs: &$p.http_sd_configs,
            dns_sd_configs: &$p.dns_sd_configs,
            relabel_configs: &$p.relabel_configs,
        }
    };
}
use crate::secret::{HeaderText, Secret};

fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_probe_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_method() -> String {
    "GET".into()
}

/// One probe; `kind` selects what it does.
// Read once per configuration: variant sizes cost nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeConfig {
    /// An HTTP(S) request checked for status and timed by phase.
    Http(HttpProbeConfig),
    /// An OpenAI-compatible API: model list, chat and streamed chat.
    Openai(OpenAiProbeConfig),
    /// An ICMP echo request ("ping").
    Icmp(IcmpProbeConfig),
    /// A TCP connection, optionally TLS, with a scripted line dialogue.
    Tcp(TcpProbeConfig),
    /// A DNS question to one server, checked for response code and records.
    Dns(DnsProbeConfig),
    /// A gRPC server's `grpc.health.v1` health check.
    Grpc(GrpcProbeConfig),
}

/// The probe kinds `kind` accepts.
pub(super) const PROBE_KINDS: &[&str] = &["http", "openai", "icmp", "tcp", "dns", "grpc"];

// serde's derived `tag = "kind"` buffers the table before picking a variant, and an error
// inside the variant then loses its field name ("probe[0]: not a duration"). Reading the
// table as a figment value first and deserializing the variant from it keeps the field in
// the path ("probe[0].interval: not a duration").
impl<'de> Deserialize<'de> for ProbeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = <figment::value::Value as Deserialize>::deserialize(d)?;
        ProbeConfig::from_value(value).map_err(|e| D::Error::custom(describe_figment_error(*e)))
    }
}

impl ProbeConfig {
    /// Reads one `[[probe]]` table by its `kind`; an error's path runs from the table
    /// (`interval`, `kind`), so the loader can name the key and its line.
    pub(super) fn from_value(value: figment::value::Value) -> Result<Self, Box<figment::Error>> {
        use serde::de::Error as _;
        let at_kind = |mut e: figment::Error| {
            e.path = vec!["kind".to_string()];
            e
        };
        let Some(mut table) = value.into_dict() else {
            return Err(Box::new(figment::Error::custom(
                "each [[probe]] must be a table",
            )));
        };
        let kind = match table.remove("kind") {
            Some(figment::value::Value::String(_, kind)) => kind,
            Some(_) => {
                return Err(Box::new(at_kind(figment::Error::custom(format!(
                    "must be a string, one of: {}",
                    PROBE_KINDS.join(", ")
                )))))
            }
            None => return Err(Box::new(figment::Error::missing_field("kind"))),
        };
        let body = figment::value::Value::from(table);
        let probe = match kind.as_str() {
            "http" => body.deserialize().map(ProbeConfig::Http),
            "openai" => body.deserialize().map(ProbeConfig::Openai),
            "icmp" => body.deserialize().map(ProbeConfig::Icmp),
            "tcp" => body.deserialize().map(ProbeConfig::Tcp),
            "dns" => body.deserialize().map(ProbeConfig::Dns),
            "grpc" => body.deserialize().map(ProbeConfig::Grpc),
            other => Err(at_kind(figment::Error::unknown_variant(other, PROBE_KINDS))),
        };
        probe.map_err(Box::new)
    }
}

/// Most `retries` a probe may set: more attempts than this hide an outage more than they
/// ride out a blip.
pub const MAX_RETRIES: u32 = 10;

/// One `[[probe]]` table: the keys every kind shares, read here before the kind's own schema
/// (so that every kind has them without declaring them), and the kind's probe.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeEntry {
    /// The probe, by its `kind`.
    #[serde(flatten)]
    pub probe: ProbeConfig,
    /// Attempts made after a failed one within a run; the run succeeds if one attempt does.
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

// The shared keys belong to the table, the rest to the kind: code that reads the kind's
// settings (`entry.name()`, `entry.interval()`) reads through the entry.
impl std::ops::Deref for ProbeEntry {
    type Target = ProbeConfig;

    fn deref(&self) -> &ProbeConfig {
        &self.probe
    }
}

impl<'de> Deserialize<'de> for ProbeEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = <figment::value::Value as Deserialize>::deserialize(d)?;
        ProbeEntry::from_value(value).map_err(|e| D::Error::custom(describe_figment_error(*e)))
    }
}

impl ProbeEntry {
    /// Reads one `[[probe]]` table: the shared keys, then the kind's schema from the rest.
    pub(super) fn from_value(value: figment::value::Value) -> Result<Self, Box<figment::Error>> {
        let mut table = match value {
            figment::value::Value::Dict(tag, dict) => (tag, dict),
            other => return ProbeConfig::from_value(other).map(ProbeEntry::from),
        };
        let retries = match table.1.remove("retries") {
            None => 0,
            Some(v) => v.deserialize::<u32>().map_err(|mut e| {
                e.path = vec!["retries".to_string()];
                Box::new(e)
            })?,
        };
        let probe = ProbeConfig::from_value(figment::value::Value::Dict(table.0, table.1))?;
        Ok(ProbeEntry { probe, retries })
    }
}

impl From<ProbeConfig> for ProbeEntry {
    fn from(probe: ProbeConfig) -> Self {
        ProbeEntry { probe, retries: 0 }
    }
}

impl ProbeConfig {
    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            ProbeConfig::Http(p) => &p.name,
            ProbeConfig::Openai(p) => &p.name,
            ProbeConfig::Icmp(p) => &p.name,
            ProbeConfig::Tcp(p) => &p.name,
            ProbeConfig::Dns(p) => &p.name,
            ProbeConfig::Grpc(p) => &p.name,
        }
    }

    /// How often it runs, as configured.
    pub fn interval(&self) -> ConfigDuration {
        match self {
            ProbeConfig::Http(p) => p.interval,
            ProbeConfig::Openai(p) => p.interval,
            ProbeConfig::Icmp(p) => p.interval,
            ProbeConfig::Tcp(p) => p.interval,
            ProbeConfig::Dns(p) => p.interval,
            ProbeConfig::Grpc(p) => p.interval,
        }
    }

    /// The deadline of one request, as configured.
    pub fn timeout(&self) -> ConfigDuration {
        match self {
            ProbeConfig::Http(p) => p.timeout,
            ProbeConfig::Openai(p) => p.timeout,
            ProbeConfig::Icmp(p) => p.timeout,
            ProbeConfig::Tcp(p) => p.timeout,
            ProbeConfig::Dns(p) => p.timeout,
            ProbeConfig::Grpc(p) => p.timeout,
        }
    }
}

/// An HTTP probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// Target URL (http or https); leave it out to discover the targets instead.
    pub url: Option<UrlConfig>,
    /// How often to probe.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Deadline for one probe, all phases included.
    #[serde(default = "default_probe_timeout")]
    pub timeout: ConfigDuration,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// Request body.
    pub body: Option<String>,
    /// Status codes that count as success; empty means any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Follow redirects (up to 10), as the blackbox exporter does.
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// HTTP basic authentication (`password` or `password_file`).
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline.
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token; re-read when it changes.
    pub bearer_token_file: Option<PathBuf>,
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
    /// OAuth 2.0 client credentials (see `config::oauth2`): the probe sends the token.
    /// Boxed, so that an HTTP probe's schema stays about the size of the other kinds'.
    pub oauth2: Option<Box<OAuth2Config>>,
    /// Latency histogram upper bounds in seconds.
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `job` label of this probe's series; unset: `agent.job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    // The response checks and body options (see `config::http_checks`).
    /// Fail when the body matches any of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_body_matches_regexp: Vec<String>,
    /// Fail unless the body matches every one of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_body_not_matches_regexp: Vec<String>,
    /// Fail when a value of the header matches the regular expression.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_header_matches: Vec<HeaderMatchConfig>,
    /// Fail unless a value of the header matches the regular expression.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_header_not_matches: Vec<HeaderMatchConfig>,
    /// Fail unless the JSON body holds the expected value at each pointer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_if_body_json: Vec<JsonCheckConfig>,
    /// Accepted response versions (`HTTP/1.0`, `HTTP/1.1`, …); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_http_versions: Vec<String>,
    /// Fail when the final response came over TLS.
    #[serde(default)]
    pub fail_if_ssl: bool,
    /// Fail unless the final response came over TLS.
    #[serde(default)]
    pub fail_if_not_ssl: bool,
    /// Most (decoded) body bytes read; a larger body fails the run. Default 1MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size_limit: Option<ByteSize>,
    /// `gzip`, `deflate` or `identity`: sent as `Accept-Encoding`, and the body decoded so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// `ip4` or `ip6`: the address family tried first (default `ip4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<String>,
    /// Whether the other family is used when the preferred one has no address.
    #[serde(default = "default_true")]
    pub ip_protocol_fallback: bool,
    /// Discovered targets instead of `url` (see `config::discovery`): one probe per target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Target groups with their labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_configs: Vec<StaticConfig>,
    /// Target files, watched for changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// HTTP SD endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_sd_configs: Vec<HttpSdConfig>,
    /// DNS lookups giving the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_sd_configs: Vec<DnsSdConfig>,
    /// Target relabeling; `__address__` ends up as the probed URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<RelabelConfig>,
}

/// The URL a probe with discovered targets is validated with; each target replaces it.
pub(super) const DISCOVERED_URL: &str = "http://discovered.invalid/";

/// The stand-in target of a discovered `tcp` or `grpc` probe, validated before each target
/// replaces it.
pub(super) const DISCOVERED_HOST_PORT: &str = "discovered.invalid:1";
/// The stand-in host of a discovered `icmp` probe.
pub(super) const DISCOVERED_HOST: &str = "discovered.invalid";

/// The single target of a probe (`url`, `target`, `server`), or `stand_in` when its targets
/// are discovered: exactly one of the two is set. Errors name `{key}.{field}`.
pub(super) fn single_target<'a>(
    c: &mut Checker<'_>,
    key: &str,
    field: &str,
    value: Option<&'a str>,
    discovered: bool,
    stand_in: &'a str,
) -> Option<&'a str> {
    match value {
        Some(_) if discovered => {
            c.fail(
                format!("{key}.{field}"),
                format!("set either {field} or discovered targets ({TARGET_SOURCES}), not both"),
            );
            None
        }
        Some(v) => Some(v),
        None if discovered => Some(stand_in),
        None => {
            c.fail(
                format!("{key}.{field}"),
                format!("missing: set {field}, or {TARGET_SOURCES}"),
            );
            None
        }
    }
}

/// A probe whose targets are discovered: its settings (with a stand-in target) and where
/// the targets come from.
#[derive(Debug, Clone)]
pub struct ProbeDiscovery {
    /// The probe's settings; [`ProbeSettings::with_target`] makes each target's.
    pub probe: ProbeSettings,
    /// Static groups, file and HTTP discovery, relabel rules.
    pub discovery: DiscoverySettings,
    /// What a target starts from (the probe's job, interval and timeout; scheme http).
    pub defaults: crate::discovery::TargetDefaults,
}

/// Why a discovered target cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("probe {probe}: target {target:?}: {message}")]
pub struct TargetError {
    /// The probe.
    pub probe: String,
    /// The target's address (password redacted).
    pub target: String,
    /// What is wrong.
    pub message: String,
}

/// The labels of a discovered target's series: the probe's own, then the target's (which
/// win) without the names the probe kind sets itself (`reserved`), and `instance`: the
/// target's when its labels or relabeling set one (see [`relabeled_instance`]), else
/// `default` (`None`: the probe names its target itself, see
/// [`series_labels`](crate::probe::series_labels)).
fn target_labels(
    own: &[(String, String)],
    target: &crate::discovery::Target,
    reserved: &[&str],
    default: Option<String>,
) -> Vec<(String, String)> {
    let mut map: BTreeMap<String, String> = own.iter().cloned().collect();
    for l in target.labels.iter() {
        if l.name != "instance" && !reserved.contains(&l.name) {
            map.insert(l.name.to_string(), l.value.to_string());
        }
    }
    if let Some(instance) = relabeled_instance(target).or(default) {
        map.insert("instance".to_string(), instance);
    }
    map.into_iter().collect()
}

/// The target's `instance` (password redacted) when its labels or relabeling set it to
/// something other than its `__address__`; `None` when it is the address (discovery's
/// default), which leaves each kind to name its target as a configured probe does (an http
/// probe by its URL).
fn relabeled_instance(target: &crate::discovery::Target) -> Option<String> {
    let instance = target.labels.get("instance")?;
    (instance != target.address).then(|| crate::secret::redact_url_text(instance))
}

/// What a discovered target's probe aims at: its `__param_target` when relabeling set one
/// (as a blackbox exporter scrape job does, whose `__address__` is then the exporter), else
/// its `__address__`.
pub fn probed_address(target: &crate::discovery::Target) -> &str {
    target
        .params
        .iter()
        .find(|(name, _)| name == "target")
        .map_or(target.address.as_str(), |(_, value)| value.as_str())
}

/// A validated probe.
// Built once per configuration: variant sizes cost nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ProbeSettings {
    /// HTTP probe.
    Http(HttpProbeSettings),
    /// OpenAI-compatible API probe.
    Openai(OpenAiProbeSettings),
    /// ICMP echo probe.
    Icmp(IcmpProbeSettings),
    /// TCP probe.
    Tcp(TcpProbeSettings),
    /// DNS probe.
    Dns(DnsProbeSettings),
    /// gRPC health-check probe.
    Grpc(GrpcProbeSettings),
}

impl ProbeSettings {
    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            ProbeSettings::Http(p) => &p.name,
            ProbeSettings::Openai(p) => &p.name,
            ProbeSettings::Icmp(p) => &p.name,
            ProbeSettings::Tcp(p) => &p.name,
            ProbeSettings::Dns(p) => &p.name,
            ProbeSettings::Grpc(p) => &p.name,
        }
    }

    /// How often it runs.
    pub fn interval(&self) -> Duration {
        match self {
            ProbeSettings::Http(p) => p.interval,
            ProbeSettings::Openai(p) => p.interval,
            ProbeSettings::Icmp(p) => p.interval,
            ProbeSettings::Tcp(p) => p.interval,
            ProbeSettings::Dns(p) => p.interval,
            ProbeSettings::Grpc(p) => p.interval,
        }
    }

    /// Deadline of one run.
    pub fn timeout(&self) -> Duration {
        match self {
            ProbeSettings::Http(p) => p.timeout,
            ProbeSettings::Openai(p) => p.timeout,
            ProbeSettings::Icmp(p) => p.timeout,
            ProbeSettings::Tcp(p) => p.timeout,
            ProbeSettings::Dns(p) => p.timeout,
            ProbeSettings::Grpc(p) => p.timeout,
        }
    }

    /// The labels added to every series of the probe (its `labels` and its `job`).
    pub fn labels(&self) -> &[(String, String)] {
        match self {
            ProbeSettings::Http(p) => &p.labels,
            ProbeSettings::Openai(p) => &p.labels,
            ProbeSettings::Icmp(p) => &p.labels,
            ProbeSettings::Tcp(p) => &p.labels,
            ProbeSettings::Dns(p) => &p.labels,
            ProbeSettings::Grpc(p) => &p.labels,
        }
    }

    /// This probe aimed at one discovered target, its interval and timeout, and its labels
    /// on every series. The kind's arm takes the target from [`probed_address`]: an http or
    /// openai probe as its URL (a URL, or `host:port` with `__scheme__` and
    /// `__metrics_path__`), a tcp or grpc probe as its `host:port`, an icmp probe as its host,
    /// a dns probe as its server. What every kind shares is set once after it: the target's
    /// labels, interval and timeout, and the `instance` of `target_labels`.
    pub fn with_target(
        &self,
        target: &crate::discovery::Target,
    ) -> Result<ProbeSettings, TargetError> {
        let address = probed_address(target);
        let fail = |message: &str| TargetError {
            probe: self.name().to_string(),
            target: crate::secret::redact_url_text(address),
            message: message.to_string(),
        };
        let url = || {
            let probed = crate::discovery::Target {
                address: address.to_string(),
                ..target.clone()
            };
            probed
                .probe_url()
                .ok_or_else(|| fail("is neither a URL nor host:port"))
        };
        // Only an openai probe's series carry no `instance` of its own (a configured one has
        // the agent's): a discovered one is named by its address.
        let mut default_instance = None;
        let mut s = match self {
            ProbeSettings::Http(p) => {
                let mut s = p.clone();
                s.url = url()?;
                ProbeSettings::Http(s)
            }
            ProbeSettings::Openai(p) => {
                let url = url()?;
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(fail("must not hold credentials"));
                }
                let mut s = p.clone();
                s.provider = super::openai::provider_label(&url);
                s.base_url = url;
                default_instance = Some(address.to_string());
                ProbeSettings::Openai(s)
            }
            ProbeSettings::Tcp(p) => {
                let (host, port) = super::tcp::split_target(address).map_err(|m| fail(&m))?;
                let mut s = p.clone();
                (s.target, s.host, s.port) = (address.to_string(), host, port);
                ProbeSettings::Tcp(s)
            }
            ProbeSettings::Grpc(p) => {
                let default_port = if p.tls.is_some() { 443 } else { 80 };
                let parsed =
                    super::grpc::parse_target(address, default_port).map_err(|m| fail(&m))?;
                let mut s = p.clone();
                (s.target_text, s.target) = (address.to_string(), parsed);
                ProbeSettings::Grpc(s)
            }
            ProbeSettings::Icmp(p) => {
                let mut s = p.clone();
                s.target = super::icmp::target_problem(address).map_err(|m| fail(&m))?;
                ProbeSettings::Icmp(s)
            }
            ProbeSettings::Dns(p) => {
                let (host, port) =
                    crate::dns::split_host_port(address, 53).map_err(|m| fail(&m))?;
                let mut s = p.clone();
                s.server = super::dns::DnsServer::Given { host, port };
                ProbeSettings::Dns(s)
            }
        };
        let labels = target_labels(
            self.labels(),
            target,
            self.own_label_names(),
            default_instance,
        );
        let (own, interval, timeout) = s.shared_mut();
        (*own, *interval, *timeout) = (labels, target.interval, target.timeout);
        Ok(s)
    }

    /// The label names the kind sets on its series itself, which a discovered target's
    /// labels do not override (`instance` aside: see [`target_labels`]).
    fn own_label_names(&self) -> &'static [&'static str] {
        match self {
            ProbeSettings::Http(_) => &["probe", "phase", "code", "error"],
            ProbeSettings::Openai(_) => &[
                "probe", "provider", "model", "check", "outcome", "reason", "kind",
            ],
            ProbeSettings::Tcp(_) => &["probe", "version"],
            ProbeSettings::Grpc(_) => &["probe", "phase", "serving_status", "version"],
            ProbeSettings::Icmp(_) | ProbeSettings::Dns(_) => &["probe", "phase"],
        }
    }

    /// The labels, interval and timeout, which every kind has.
    fn shared_mut(&mut self) -> (&mut Vec<(String, String)>, &mut Duration, &mut Duration) {
        match self {
            ProbeSettings::Http(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
            ProbeSettings::Openai(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
            ProbeSettings::Icmp(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
            ProbeSettings::Tcp(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
            ProbeSettings::Dns(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
            ProbeSettings::Grpc(p) => (&mut p.labels, &mut p.interval, &mut p.timeout),
        }
    }
}

/// The discovery of each `[[probe]]` that has some (matched with its validated settings by
/// name); errors name `probe[i].<key>`.
pub(super) fn validate_probe_discovery(
    c: &mut Checker<'_>,
    configs: &[ProbeEntry],
    probes: &mut Vec<ProbeSettings>,
) -> Vec<ProbeDiscovery> {
    let mut out = Vec::new();
    for (i, p) in configs.iter().map(|e| &e.probe).enumerate() {
        let key = format!("probe[{i}]");
        let (targets, keys, has) = match p {
            ProbeConfig::Http(h) => (&h.targets, discovery_keys!(h), has_discovery!(h)),
            ProbeConfig::Openai(o) => (&o.targets, discovery_keys!(o), has_discovery!(o)),
            ProbeConfig::Icmp(i) => (&i.targets, discovery_keys!(i), has_discovery!(i)),
            ProbeConfig::Tcp(t) => (&t.targets, discovery_keys!(t), has_discovery!(t)),
            ProbeConfig::Dns(d) => (&d.targets, discovery_keys!(d), has_discovery!(d)),
            ProbeConfig::Grpc(g) => (&g.targets, discovery_keys!(g), has_discovery!(g)),
        };
        if !has {
            if !keys.relabel_configs.is_empty() {
                c.fail(
                    format!("{key}.relabel_configs"),
                    format!("applies to discovered targets only; add {TARGET_SOURCES}"),
                );
            }
            continue;
        }
        let first = (!targets.is_empty()).then(|| {
            crate::discovery::Group::of(format!("{key}.targets"), targets, Default::default())
        });
        let discovery = validate_discovery(c, &key, keys, first);
        let Some(pos) = probes.iter().position(|s| s.name() == p.name()) else {
            continue;
        };
        let probe = probes.remove(pos);
        let defaults = crate::discovery::TargetDefaults {
            job: probe
                .labels()
                .iter()
                .find(|(n, _)| n == "job")
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            scheme: "http".to_string(),
            metrics_path: String::new(),
            params: BTreeMap::new(),
            interval: probe.interval(),
            timeout: probe.timeout(),
            // Only URL-taking kinds accept a URL; the others want host[:port].
            address_may_be_url: matches!(probe, ProbeSettings::Http(_) | ProbeSettings::Openai(_)),
        };
        let built = crate::discovery::build_targets(
            &discovery.static_groups,
            &discovery.relabel,
            &defaults,
        );
        for e in &built.errors {
            c.fail(format!("{key}.static_configs"), e.clone());
        }
        for t in &built.targets {
            if let Err(e) = probe.with_target(t) {
                c.fail(format!("{key}.static_configs"), e.to_string());
            }
        }
        out.push(ProbeDiscovery {
            probe,
            discovery,
            defaults,
        });
    }
    out
}

/// A validated HTTP probe.
#[derive(Debug, Clone)]
pub struct HttpProbeSettings {
    /// Name.
    pub name: String,
    /// Target.
    pub url: reqwest::Url,
    /// Period.
    pub interval: Duration,
    /// Deadline.
    pub timeout: Duration,
    /// Method.
    pub method: http::Method,
    /// Headers (names lower-cased; credentials held as secrets).
    pub headers: Vec<(String, HeaderText)>,
    /// Body.
    pub body: Option<String>,
    /// Accepted status codes; empty means 2xx.
    pub valid_status_codes: Vec<u16>,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// Credentials, set on every run (files re-read when they change).
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// The proxies requests go through.
    pub proxy: ProxySettings,
    /// Histogram bounds.
    pub buckets: Arc<[f64]>,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
    /// Response checks, body options and address family.
    pub checks: HttpChecks,
}

/// Validates the `[[probe]]` tables; errors name `probe[i].<key>`. `default_job` is the
/// `job` of probes that set none (`None`: none is added, an external label gives it).
pub(super) fn validate_probes(
    c: &mut Checker<'_>,
    probes: &[ProbeEntry],
    pricing: &Arc<PriceTable>,
    default_job: Option<&str>,
) -> Vec<ProbeSettings> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in probes.iter().enumerate() {
        let key = format!("probe[{i}]");
        check_retries(c, &key, entry);
        let p = &entry.probe;
        if p.name().is_empty() {
            c.fail(format!("{key}.name"), "must not be empty");
        } else if !names.insert(p.name()) {
            c.fail(
                format!("{key}.name"),
                format!("{:?} is used by another probe", p.name()),
            );
        }
        check_timeout_within_interval(c, &key, p);
        let settings = match p {
            ProbeConfig::Http(h) => validate_http_probe(c, &key, h).map(|mut s| {
                add_job(c, &key, h.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Http(s)
            }),
            ProbeConfig::Openai(o) => validate_openai_probe(c, &key, o, pricing).map(|mut s| {
                add_job(c, &key, o.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Openai(s)
            }),
            ProbeConfig::Icmp(p) => validate_icmp_probe(c, &key, p).map(|mut s| {
                add_job(c, &key, p.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Icmp(s)
            }),
            ProbeConfig::Tcp(t) => validate_tcp_probe(c, &key, t).map(|mut s| {
                add_job(c, &key, t.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Tcp(s)
            }),
            ProbeConfig::Dns(d) => validate_dns_probe(c, &key, d).map(|mut s| {
                add_job(c, &key, d.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Dns(s)
            }),
            ProbeConfig::Grpc(g) => validate_grpc_probe(c, &key, g).map(|mut s| {
                add_job(c, &key, g.job.as_deref(), default_job, &mut s.labels);
                ProbeSettings::Grpc(s)
            }),
        };
        out.extend(settings);
    }
    out
}

/// Gives a probe's series their `job`: the probe's own `job` key, else a `job` among its
/// `labels` (the way to set it before the key existed), else `default_job`.
fn add_job(
    c: &mut Checker<'_>,
    key: &str,
    own: Option<&str>,
    default_job: Option<&str>,
    labels: &mut Vec<(String, String)>,
) {
    let in_labels = labels.iter().any(|(name, _)| name == "job");
    match own {
        Some("") => c.fail(
            format!("{key}.job"),
            "must not be empty (leave it out for agent.job)",
        ),
        Some(_) if in_labels => c.fail(
            format!("{key}.labels.job"),
            format!("{key}.job sets the job already; remove one of them"),
        ),
        Some(job) => labels.push(("job".to_string(), job.to_string())),
        None if in_labels => {}
        None => labels.extend(default_job.map(|job| ("job".to_string(), job.to_string()))),
    }
}

/// Refuses a timeout longer than the interval, as scrapes do: runs would then overrun and
/// the probe would report less often than configured, without a word.
fn check_timeout_within_interval(c: &mut Checker<'_>, key: &str, p: &ProbeConfig) {
    let (interval, timeout) = (p.interval(), p.timeout());
    // A zero is reported under its own key; comparing with it would only add noise.
    if interval.0.is_zero() || timeout.0.is_zero() || timeout <= interval {
        return;
    }
    c.fail(
        format!("{key}.timeout"),
        format!(
            "{timeout} is longer than {key}.interval ({interval}); shorten the timeout or \
             lengthen the interval"
        ),
    );
}

/// The `retries` of each probe, by name (`0` for those that set none).
pub(super) fn probe_retries(probes: &[ProbeEntry]) -> BTreeMap<String, u32> {
    probes
        .iter()
        .map(|p| (p.name().to_string(), p.retries))
        .collect()
}

/// Refuses more retries than [`MAX_RETRIES`], and attempts that could not all fit in the
/// interval: each attempt has the whole timeout, so `retries + 1` timeouts must fit, or the
/// run would overrun into the next.
fn check_retries(c: &mut Checker<'_>, key: &str, p: &ProbeEntry) {
    if p.retries == 0 {
        return;
    }
    if p.retries > MAX_RETRIES {
        c.fail(
            format!("{key}.retries"),
            format!("{} is more than {MAX_RETRIES}", p.retries),
        );
        return;
    }
    let (interval, timeout) = (p.interval().0, p.timeout().0);
    let attempts = p.retries + 1;
    let worst = timeout.saturating_mul(attempts);
    if !interval.is_zero() && worst > interval {
        c.fail(
            format!("{key}.retries"),
            format!(
                "{attempts} attempts of up to {} (the timeout) take up to {}, longer than \
                 {key}.interval ({}); lower retries or the timeout, or lengthen the interval",
                p.timeout(),
                ConfigDuration(worst),
                p.interval()
            ),
        );
    }
}

/// Validates one `kind = "http"` probe.
fn validate_http_probe(
    c: &mut Checker<'_>,
    key: &str,
    h: &HttpProbeConfig,
) -> Option<HttpProbeSettings> {
    let url = single_target(
        c,
        key,
        "url",
        h.url.as_ref().map(|u| u.as_str()),
        has_discovery!(h),
        DISCOVERED_URL,
    )
    .and_then(|u| c.url(format!("{key}.url"), u));
    let interval = c.positive(format!("{key}.interval"), h.interval);
    let timeout = c.positive(format!("{key}.timeout"), h.timeout);
    let method = match http::Method::from_bytes(h.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            c.fail(
                format!("{key}.method"),
                format!("{:?} is not an HTTP method", h.method),
            );
            None
        }
    };
    let headers = c.headers(&format!("{key}.headers"), &h.headers);
    for code in &h.valid_status_codes {
        if !(100..=599).contains(code) {
            c.fail(
                format!("{key}.valid_status_codes"),
                format!("{code} is not an HTTP status code"),
            );
        }
    }
    let auth = c.auth(key, &h.basic_auth, &h.bearer_token, &h.bearer_token_file);
    c.tls(&format!("{key}.tls"), &h.tls);
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(h));
    c.tls_files(&format!("{key}.tls"), &h.tls);
    // OAuth2 is one more kind of credentials, refused beside the others; like them, its
    // token replaces an Authorization header.
    let oauth2 = h.oauth2.as_ref().and_then(|o| {
        let other =
            h.basic_auth.is_some() || h.bearer_token.is_some() || h.bearer_token_file.is_some();
        validate_oauth2(c, &format!("{key}.oauth2"), o, other, timeout)
    });
    let auth = oauth2.map(|o| Auth::OAuth2(Box::new(o))).or(auth);
    let buckets = validate_buckets(c, &format!("{key}.buckets"), h.buckets.as_deref());
    let labels = c.labels(&format!("{key}.labels"), &h.labels);
    let checks = validate_http_checks(c, key, h);
    for reserved in ["probe", "instance", "phase", "code", "error"] {
        if h.labels.contains_key(reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    Some(HttpProbeSettings {
        name: h.name.clone(),
        url: url?,
        interval,
        timeout,
        method: method?,
        headers,
        body: h.body.clone(),
        valid_status_codes: h.valid_status_codes.clone(),
        follow_redirects: h.follow_redirects,
        auth,
        tls: h.tls.clone(),
        proxy,
        buckets,
        labels,
        checks,
    })
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::{parse, GOOD};

    #[test]
    fn errors_inside_a_probe_name_the_field() {
        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"soon\"")).unwrap_err();
        assert!(e.starts_with("probe[0].interval: "), "{e}");
        assert!(
            e.contains("not a duration") && e.contains("pushprobe.toml"),
            "{e}"
        );
        let e = parse(&GOOD.replace("kind = \"http\"", "kind = \"htp\"")).unwrap_err();
        assert!(e.contains("htp") && e.contains("http"), "{e}");
    }

    #[test]
    fn durations_are_bounded_and_name_their_key() {
        let e = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"18446744073709551615ms\""))
            .unwrap_err();
        assert!(e.starts_with("probe[0].timeout: "), "{e}");
        assert!(e.contains("too large"), "{e}");
        let e = parse(
            &GOOD
                .replace("interval = \"30s\"", "interval = \"2h\"")
                .replace("timeout = \"5s\"", "timeout = \"11m\""),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "probe[0].timeout: 11m is longer than 10m (the longest a timeout may be) \
             (in pushprobe.toml)"
        );
        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"25h\"")).unwrap_err();
        assert_eq!(
            e,
            "probe[0].interval: 1d1h is longer than 1d (the longest an interval may be) \
             (in pushprobe.toml)"
        );
        parse(
            &GOOD
                .replace("interval = \"30s\"", "interval = \"24h\"")
                .replace("timeout = \"5s\"", "timeout = \"10m\""),
        )
        .unwrap();
    }

    #[test]
    fn unknown_kind_names_the_key_and_the_kinds() {
        let e = parse(&GOOD.replace("kind = \"http\"", "kind = \"gopher\"")).unwrap_err();
        assert!(
            e.starts_with(
                "probe[0].kind: unknown probe kind \"gopher\"; expected one of: http, openai, icmp, tcp, dns, grpc"
            ),
            "{e}"
        );
        assert!(e.contains("pushprobe.toml"), "{e}");
    }

    #[test]
    fn retries_are_a_key_of_every_kind_and_must_fit_the_interval() {
        let s = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\nretries = 2")).unwrap();
        assert_eq!(s.retries_of(s.probes[0].name()), 2);
        assert_eq!(s.retries_of("no such probe"), 0);
        assert!(
            toml::to_string(&s.file).unwrap().contains("retries = 2"),
            "the entry serializes back with its kind's keys and its retries"
        );
        assert_eq!(parse(GOOD).map(|s| s.retries_of(s.probes[0].name())), Ok(0));
        // 6 attempts of 5s do not fit in 30s.
        let e =
            parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\nretries = 6")).unwrap_err();
        assert_eq!(
            e,
            "probe[0].retries: 7 attempts of up to 5s (the timeout) take up to 35s, longer \
             than probe[0].interval (30s); lower retries or the timeout, or lengthen the \
             interval (in pushprobe.toml)"
        );
        let e =
            parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"1s\"\nretries = 11")).unwrap_err();
        assert!(e.starts_with("probe[0].retries: 11 is more than 10"), "{e}");
        let e = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\nretries = \"two\""))
            .unwrap_err();
        assert!(e.starts_with("probe[0].retries: "), "{e}");
        // The openai kind reads it as well, without declaring it.
        let openai = "[[probe]]\nname = \"ai\"\nkind = \"openai\"\n\
                      base_url = \"https://api.example.com/v1\"\napi_key_file = \"key\"\n\
                      model = \"m\"\nchecks = [\"models\"]\ninterval = \"60s\"\n\
                      timeout = \"20s\"\nretries = 2\n";
        let s = super::super::tests::parse_in_jail(openai, &[], &[("key", "sk-1\n")]).unwrap();
        assert_eq!(s.retries_of("ai"), 2);
    }

    #[test]
    fn a_timeout_longer_than_the_interval_is_refused() {
        let e = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"45s\"")).unwrap_err();
        assert_eq!(
            e,
            "probe[0].timeout: 45s is longer than probe[0].interval (30s); shorten the timeout \
             or lengthen the interval (in pushprobe.toml)"
        );
        // The default timeout (10s) against a shorter interval.
        let e = parse(
            &GOOD
                .replace("timeout = \"5s\"\n", "")
                .replace("\"30s\"", "\"2s\""),
        )
        .unwrap_err();
        assert!(
            e.starts_with("probe[0].timeout: 10s is longer than probe[0].interval (2s)"),
            "{e}"
        );
        let openai = "[[probe]]\nname = \"ai\"\nkind = \"openai\"\n\
                      base_url = \"https://api.example.com/v1\"\napi_key_file = \"key\"\n\
                      model = \"m\"\nchecks = [\"models\"]\ninterval = \"10s\"\ntimeout = \"30s\"\n";
        let e = super::super::tests::parse_in_jail(openai, &[], &[("key", "sk-1\n")]).unwrap_err();
        assert!(
            e.starts_with("probe[0].timeout: 30s is longer than probe[0].interval (10s)"),
            "{e}"
        );
        // Equal is fine: a run may take the whole interval.
        parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"30s\"")).unwrap();
    }

    #[test]
    fn discovered_probes_take_targets_instead_of_url_and_each_gets_its_own_url_and_labels() {
        let discovered = GOOD
            .replace("url = \"http://127.0.0.1:8080/health\"", "")
            .replace(
                "timeout = \"5s\"",
                "timeout = \"5s\"\njob = \"web\"\nlabels = { team = \"t\" }\n\
             targets = [\"h:8080\", \"https://x.example/up\"]\n\
             [[probe.static_configs]]\ntargets = [\"skip:1\"]\nlabels = { skip = \"yes\" }\n\
             [[probe.relabel_configs]]\nsource_labels = [\"skip\"]\nregex = \"yes\"\n\
             action = \"drop\"\n",
            );
        let s = parse(&discovered).unwrap();
        assert!(
            s.probes.is_empty(),
            "a discovered probe runs per target only"
        );
        let d = &s.probe_discovery[0];
        assert_eq!(d.defaults.job, "web");
        let built = crate::discovery::build_targets(
            &d.discovery.static_groups,
            &d.discovery.relabel,
            &d.defaults,
        );
        assert_eq!(built.targets.len(), 2, "{built:?}");
        let urls: Vec<(String, Vec<(String, String)>)> = built
            .targets
            .iter()
            .map(|t| match d.probe.with_target(t).unwrap() {
                super::ProbeSettings::Http(h) => (h.url.to_string(), h.labels),
                other => panic!("{other:?}"),
            })
            .collect();
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            urls,
            [
                (
                    "http://h:8080/".to_string(),
                    l(&[("job", "web"), ("team", "t")])
                ),
                (
                    "https://x.example/up".to_string(),
                    l(&[("job", "web"), ("team", "t")])
                ),
            ]
        );

        let both = GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\ntargets = [\"h:1\"]");
        let e = parse(&both).unwrap_err();
        assert!(
            e.contains("probe[0].url: set either url or discovered targets"),
            "{e}"
        );
        let none = GOOD.replace("url = \"http://127.0.0.1:8080/health\"", "");
        let e = parse(&none).unwrap_err();
        assert!(e.contains("probe[0].url: missing"), "{e}");
        let stray = GOOD.replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\n[[probe.relabel_configs]]\naction = \"drop\"\nsource_labels = [\"a\"]",
        );
        let e = parse(&stray).unwrap_err();
        assert!(
            e.contains("probe[0].relabel_configs: applies to discovered targets only"),
            "{e}"
        );
    }

    #[test]
    fn a_discovered_openai_probe_takes_its_api_root_from_the_address() {
        let openai = "[[probe]]\nname = \"ai\"\nkind = \"openai\"\napi_key_file = \"key\"\n\
                      model = \"m\"\nchecks = [\"models\"]\n\
                      targets = [\"https://a.example/v1\", \"http://b.example:4000/v1\"]\n";
        let s = super::super::tests::parse_in_jail(openai, &[], &[("key", "sk-1\n")]).unwrap();
        let d = &s.probe_discovery[0];
        let built = crate::discovery::build_targets(
            &d.discovery.static_groups,
            &d.discovery.relabel,
            &d.defaults,
        );
        let got: Vec<(String, String, Option<String>)> = built
            .targets
            .iter()
            .map(|t| match d.probe.with_target(t).unwrap() {
                super::ProbeSettings::Openai(o) => (
                    o.base_url.to_string(),
                    o.provider.clone(),
                    o.labels
                        .iter()
                        .find(|(n, _)| n == "instance")
                        .map(|(_, v)| v.clone()),
                ),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got[0].0, "https://a.example/v1");
        assert_eq!(got[0].1, "a.example");
        assert_eq!(got[0].2.as_deref(), Some("https://a.example/v1"));
        assert_eq!(got[1].1, "b.example:4000");
    }

    /// The settings of each target of a probe's static targets.
    fn per_target(s: &crate::config::Settings) -> Vec<super::ProbeSettings> {
        let d = &s.probe_discovery[0];
        let built = crate::discovery::build_targets(
            &d.discovery.static_groups,
            &d.discovery.relabel,
            &d.defaults,
        );
        assert!(built.errors.is_empty(), "{built:?}");
        built
            .targets
            .iter()
            .map(|t| d.probe.with_target(t).unwrap())
            .collect()
    }

    fn instance(labels: &[(String, String)]) -> Option<&str> {
        labels
            .iter()
            .find(|(n, _)| n == "instance")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn tcp_icmp_dns_and_grpc_probes_take_discovered_targets() {
        const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";
        let probe = |kind: &str, rest: &str| {
            format!("{RW}[[probe]]\nname = \"p\"\nkind = \"{kind}\"\n{rest}")
        };
        let targets = "[[probe.static_configs]]\ntargets = [\"127.0.0.1:7001\", \"[::1]:7002\"]\n\
                       labels = { zone = \"a\" }\n";
        let s = parse(&probe("tcp", targets)).unwrap();
        assert!(s.probes.is_empty());
        let got: Vec<(String, u16, Option<String>)> = per_target(&s)
            .into_iter()
            .map(|p| match p {
                super::ProbeSettings::Tcp(t) => {
                    assert!(t.labels.contains(&("zone".into(), "a".into())));
                    assert_eq!(instance(&t.labels), None, "the probe sets instance itself");
                    (t.target, t.port, None)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("127.0.0.1:7001".to_string(), 7001, None),
                ("[::1]:7002".to_string(), 7002, None)
            ]
        );

        let s = parse(&probe("grpc", targets)).unwrap();
        match &per_target(&s)[1] {
            super::ProbeSettings::Grpc(g) => {
                assert_eq!((g.target.host.as_str(), g.target.port), ("::1", 7002));
                assert_eq!(g.target_text, "[::1]:7002");
            }
            other => panic!("{other:?}"),
        }

        let s = parse(&probe(
            "dns",
            &format!("query_name = \"example.com\"\n{targets}"),
        ))
        .unwrap();
        match &per_target(&s)[0] {
            super::ProbeSettings::Dns(d) => assert_eq!(
                d.server,
                crate::config::dns::DnsServer::Given {
                    host: "127.0.0.1".into(),
                    port: 7001
                }
            ),
            other => panic!("{other:?}"),
        }

        let s = parse(&probe("icmp", "targets = [\"127.0.0.1\", \"127.0.0.2\"]\n")).unwrap();
        let hosts: Vec<String> = per_target(&s)
            .into_iter()
            .map(|p| match p {
                super::ProbeSettings::Icmp(i) => i.target,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(hosts, ["127.0.0.1", "127.0.0.2"]);
    }

    /// Every kind's series carry the `instance` relabeling gives a target, and the target's
    /// other labels; without one, each kind names its target as a configured probe does.
    #[test]
    fn every_kind_takes_a_relabeled_instance() {
        const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";
        let rules = "[[probe.relabel_configs]]\nsource_labels = [\"__address__\"]\n\
                     regex = \"127\\\\.0\\\\.0\\\\.(\\\\d+).*\"\ntarget_label = \"instance\"\n\
                     replacement = \"edge-$1\"\n";
        for (kind, rest, address, own) in [
            ("http", "", "127.0.0.1:7001", "http://127.0.0.1:7001/"),
            ("tcp", "", "127.0.0.1:7001", "127.0.0.1:7001"),
            ("grpc", "", "127.0.0.1:7001", "127.0.0.1:7001"),
            ("icmp", "", "127.0.0.1", "127.0.0.1"),
            (
                "dns",
                "query_name = \"example.com\"\n",
                "127.0.0.1:7001",
                "127.0.0.1:7001",
            ),
        ] {
            let config = |rules: &str| {
                format!(
                    "{RW}[[probe]]\nname = \"p\"\nkind = \"{kind}\"\n{rest}\
                     [[probe.static_configs]]\ntargets = [\"{address}\"]\n\
                     labels = {{ zone = \"a\" }}\n{rules}"
                )
            };
            let s = parse(&config(rules)).unwrap();
            let probe = &per_target(&s)[0];
            assert_eq!(instance(probe.labels()), Some("edge-1"), "{kind}");
            assert!(
                probe.labels().contains(&("zone".into(), "a".into())),
                "{kind}"
            );
            let series = series_labels_of(probe);
            assert_eq!(
                series.iter().filter(|(n, _)| n == "instance").count(),
                1,
                "{kind}: {series:?}"
            );
            assert_eq!(instance(&series), Some("edge-1"), "{kind}: {series:?}");

            let s = parse(&config("")).unwrap();
            let probe = &per_target(&s)[0];
            assert_eq!(instance(probe.labels()), None, "{kind}: the kind names it");
            assert_eq!(instance(&series_labels_of(probe)), Some(own), "{kind}");
        }

        let openai = "[[probe]]\nname = \"ai\"\nkind = \"openai\"\napi_key_file = \"key\"\n\
                      model = \"m\"\nchecks = [\"models\"]\n\
                      targets = [\"https://a.example/v1\"]\n\
                      [[probe.relabel_configs]]\ntarget_label = \"instance\"\n\
                      replacement = \"gateway-a\"\n";
        let s = super::super::tests::parse_in_jail(openai, &[], &[("key", "sk-1\n")]).unwrap();
        assert_eq!(instance(per_target(&s)[0].labels()), Some("gateway-a"));
    }

    /// The labels a probe built from `settings` starts its series with.
    fn series_labels_of(settings: &super::ProbeSettings) -> Vec<(String, String)> {
        let own = match settings {
            super::ProbeSettings::Http(h) => h.url.to_string(),
            super::ProbeSettings::Tcp(t) => t.target.clone(),
            super::ProbeSettings::Grpc(g) => g.target_text.clone(),
            super::ProbeSettings::Icmp(i) => i.target.clone(),
            super::ProbeSettings::Dns(d) => match &d.server {
                crate::config::DnsServer::Given { host, port } => format!("{host}:{port}"),
                other => panic!("{other:?}"),
            },
            super::ProbeSettings::Openai(_) => String::new(),
        };
        crate::probe::series_labels(settings.name(), || own, settings.labels())
    }

    /// A blackbox exporter job's relabel rules, copied as they are: what is probed is
    /// `__param_target` (the `__address__` they point at the exporter is not), and the
    /// `instance` they set is the series'.
    #[test]
    fn blackbox_relabel_rules_work_as_they_are() {
        const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";
        let blackbox = "[[probe.relabel_configs]]\nsource_labels = [\"__address__\"]\n\
                        target_label = \"__param_target\"\n\
                        [[probe.relabel_configs]]\nsource_labels = [\"__param_target\"]\n\
                        target_label = \"instance\"\n\
                        [[probe.relabel_configs]]\ntarget_label = \"__address__\"\n\
                        replacement = \"127.0.0.1:9115\"\n";
        let http = format!(
            "{RW}[[probe]]\nname = \"web\"\nkind = \"http\"\n\
             targets = [\"https://x.example/health\", \"h:8080\"]\n{blackbox}"
        );
        let got: Vec<(String, Option<String>)> = per_target(&parse(&http).unwrap())
            .into_iter()
            .map(|p| match p {
                super::ProbeSettings::Http(h) => {
                    (h.url.to_string(), instance(&h.labels).map(str::to_string))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "https://x.example/health".to_string(),
                    Some("https://x.example/health".to_string())
                ),
                ("http://h:8080/".to_string(), Some("h:8080".to_string())),
            ]
        );
        let tcp = format!(
            "{RW}[[probe]]\nname = \"ssh\"\nkind = \"tcp\"\n\
             targets = [\"bastion-1.example.com:22\"]\n{blackbox}"
        );
        match &per_target(&parse(&tcp).unwrap())[0] {
            super::ProbeSettings::Tcp(t) => {
                assert_eq!(t.target, "bastion-1.example.com:22");
                assert_eq!(t.port, 22);
                assert_eq!(instance(&t.labels), Some("bastion-1.example.com:22"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_target_kinds_take_one_target_or_discovery_and_bad_addresses_are_refused() {
        const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";
        let probe = |kind: &str, rest: &str| {
            format!("{RW}[[probe]]\nname = \"p\"\nkind = \"{kind}\"\n{rest}")
        };
        let e = parse(&probe("tcp", "target = \"h:1\"\ntargets = [\"h:2\"]\n")).unwrap_err();
        assert!(
            e.contains(
                "probe[0].target: set either target or discovered targets (targets, \
                        static_configs, file_sd_configs, http_sd_configs or dns_sd_configs), \
                        not both"
            ),
            "{e}"
        );
        let e = parse(&probe("grpc", "")).unwrap_err();
        assert!(
            e.contains("probe[0].target: missing: set target, or targets"),
            "{e}"
        );
        let e = parse(&probe(
            "dns",
            "query_name = \"x\"\nserver = \"127.0.0.1\"\ntargets = [\"127.0.0.1:53\"]\n",
        ))
        .unwrap_err();
        assert!(
            e.contains("probe[0].server: set either server or discovered"),
            "{e}"
        );
        // A tcp target needs a port; an icmp target must be a bare host.
        let e = parse(&probe("tcp", "targets = [\"h\"]\n")).unwrap_err();
        assert!(e.contains("probe p: target \"h\""), "{e}");
        let e = parse(&probe("icmp", "targets = [\"h:1\"]\n")).unwrap_err();
        assert!(e.contains("probe p: target \"h:1\""), "{e}");
        let e = parse(&probe("icmp", "targets = [\"http://h/\"]\n")).unwrap_err();
        assert!(e.contains("is not host[:port]"), "{e}");
    }

    #[test]
    fn dns_sd_configs_are_validated_with_their_key_paths() {
        const RW: &str = "[[remote_write]]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n";
        let scrape =
            |sd: &str| format!("{RW}[[scrape]]\njob = \"j\"\n[[scrape.dns_sd_configs]]\n{sd}");
        let s = parse(&scrape(
            "names = [\"_m._tcp.example\"]\nserver = \"127.0.0.1:5353\"\n",
        ))
        .unwrap();
        let d = &s.scrapes[0].discovery.dns[0];
        assert_eq!(d.record_type, crate::dns::RecordType::SRV);
        assert_eq!(d.refresh_interval, std::time::Duration::from_secs(30));
        assert!(s.scrapes[0].discovery.is_dynamic());
        let s = parse(&scrape(
            "names = [\"h.example\"]\ntype = \"a\"\nport = 9100\n",
        ))
        .unwrap();
        let d = &s.scrapes[0].discovery.dns[0];
        assert_eq!((d.record_type, d.port), (crate::dns::RecordType::A, 9100));
        assert_eq!(d.server, crate::config::dns::DnsServer::ResolvConf);
        for (sd, want) in [
            (
                "names = []\n",
                "scrape[0].dns_sd_configs[0].names: list at least one",
            ),
            (
                "names = [\"h\"]\ntype = \"AAAA\"\n",
                "scrape[0].dns_sd_configs[0].port: missing",
            ),
            (
                "names = [\"h\"]\ntype = \"TXT\"\n",
                "scrape[0].dns_sd_configs[0].type: \"TXT\" is not one of",
            ),
            (
                "names = [\"h\"]\nserver = \"a b\"\n",
                "scrape[0].dns_sd_configs[0].server",
            ),
            (
                "names = [\"h\"]\nrefresh_interval = \"0s\"\n",
                "scrape[0].dns_sd_configs[0].refresh_interval",
            ),
            (
                "names = [\"h\"]\nport = 0\ntype = \"A\"\n",
                "scrape[0].dns_sd_configs[0].port: 0 is not a port",
            ),
        ] {
            let e = parse(&scrape(sd)).unwrap_err();
            assert!(e.contains(want), "{sd:?}: {e}");
        }
    }
}
