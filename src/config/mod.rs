//! Configuration: the TOML schema (read with figment: defaults, then the file, then
//! `PUSHPROBE_*` environment variables with `__` between nested keys), and its validation into
//! the runtime [`Settings`] before any socket opens.
//!
//! Every validation error names the key path (`probe[2].interval`) and the file it came from.

pub mod bytesize;
pub mod duration;
pub mod openai;
pub mod scrape;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use bytesize::{parse_bytes, ByteSize};
pub use duration::{parse_duration, ConfigDuration};
pub use openai::{ModelPriceConfig, OpenAiProbeConfig, OpenAiProbeSettings};
pub use scrape::{ScrapeConfig, ScrapeSettings, ScrapeTargetSettings};

use crate::queue::disk::{DiskQueueOptions, FsyncPolicy};
use crate::secret::Secret;
use crate::series::is_valid_label_name;

/// Environment variable prefix for configuration overrides.
pub const ENV_PREFIX: &str = "PUSHPROBE_";

/// Default latency histogram buckets (seconds), as the blackbox-style probes use.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Remote-write headers that pushprobe sets itself and a user may not override.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-type",
    "content-length",
    "x-prometheus-remote-write-version",
    "user-agent",
    "host",
];

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or parsed.
    #[error("{0}")]
    Load(String),
    /// A value is present but wrong.
    #[error("{key}: {message} (in {source_name})")]
    Invalid {
        /// Dotted key path, e.g. `probe[2].interval`.
        key: String,
        /// What is wrong and what to do.
        message: String,
        /// Where the configuration came from.
        source_name: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Agent-wide settings.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Remote-write receivers; each gets its own queue and sender.
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    /// Probes to run.
    #[serde(default)]
    pub probe: Vec<ProbeConfig>,
    /// Pushgateways; each receives the latest results as one group.
    #[serde(default)]
    pub pushgateway: Vec<PushgatewayConfig>,
    /// Model prices for AI probes, by model name: `[pricing."deepseek-v3.2"]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pricing: BTreeMap<String, ModelPriceConfig>,
    /// Scrape jobs whose samples are forwarded (see `config::scrape`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrape: Vec<ScrapeConfig>,
}

/// Agent-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Labels added to every series sent (a series' own label of the same name wins).
    pub external_labels: BTreeMap<String, String>,
    /// How long `run` keeps sending after SIGINT/SIGTERM, and `once` waits for delivery.
    pub drain_timeout: ConfigDuration,
    /// How often the agent's own metrics are recorded.
    pub self_metrics_interval: ConfigDuration,
    /// Address of the optional health/metrics listener (`/-/healthy`, `/-/ready`, `/metrics`)
    /// for `run`, e.g. `0.0.0.0:9465`; unset means no listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Directory for durable state; samples are queued on disk in `<data_dir>/queue` and
    /// survive restarts. Unset: in-memory queues, lost on restart.
    pub data_dir: Option<PathBuf>,
    /// The disk queue (`[agent.queue]`), used when `data_dir` is set.
    pub queue: QueueConfig,
    /// How often the metadata (type, help, unit) of scraped families is sent to each
    /// remote-write receiver; Prometheus' default is 1m. `0s` turns it off.
    pub metadata_interval: ConfigDuration,
    /// Threads that run `run`'s probes, scrapes and sends. Unset: 1, or 2 with `data_dir`,
    /// so that a slow disk sync never holds up every task. A signed integer, so that any
    /// number gets the range message rather than a type error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<i64>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            external_labels: BTreeMap::new(),
            drain_timeout: ConfigDuration(Duration::from_secs(15)),
            self_metrics_interval: ConfigDuration(Duration::from_secs(15)),
            listen: None,
            data_dir: None,
            queue: QueueConfig::default(),
            metadata_interval: ConfigDuration(Duration::from_secs(60)),
            worker_threads: None,
        }
    }
}

/// When the disk queue forces data to stable storage (see `queue::disk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// After every append: a power loss loses nothing; one fsync per append.
    Always,
    /// Every `fsync_interval`: a power loss loses up to one interval.
    Interval,
    /// Left to the kernel: a power loss loses what the page cache held.
    Never,
}

/// Disk queue settings (`[agent.queue]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most bytes the queue may use, as bytes or e.g. "1GiB"; the oldest data goes first.
    pub max_disk_bytes: ByteSize,
    /// Sync policy.
    pub fsync: FsyncMode,
    /// Period of `fsync = "interval"`.
    pub fsync_interval: ConfigDuration,
    /// Samples older than this when sent are dropped (receivers refuse too old samples).
    pub max_sample_age: Option<ConfigDuration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = DiskQueueOptions::default();
        QueueConfig {
            max_disk_bytes: ByteSize(d.max_disk_bytes),
            fsync: FsyncMode::Interval,
            fsync_interval: ConfigDuration(Duration::from_secs(1)),
            max_sample_age: None,
        }
    }
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name.
    pub username: String,
    /// Password, inline (prefer `password_file`).
    pub password: Option<Secret>,
    /// File whose contents (trailing newline removed) are the password.
    pub password_file: Option<PathBuf>,
}

/// TLS options for a client connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, if not the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for testing.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// One remote-write receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Name used in the agent's own metrics and logs; defaults to the URL's host and path.
    pub name: Option<String>,
    /// The receiver's write endpoint, e.g. `http://127.0.0.1:9090/api/v1/write`.
    pub url: String,
    /// Extra request headers (e.g. `X-Scope-OrgID`); reserved remote-write headers are refused.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline (prefer `bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Timeout of one write request.
    #[serde(default = "default_rw_timeout")]
    pub timeout: ConfigDuration,
    /// Most samples in one request.
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// Longest a sample waits for a batch to fill before it is sent anyway.
    #[serde(default = "default_batch_send_deadline")]
    pub batch_send_deadline: ConfigDuration,
    /// Most samples held in memory for this receiver; the oldest are dropped beyond it.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// First retry delay.
    #[serde(default = "default_min_backoff")]
    pub min_backoff: ConfigDuration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: ConfigDuration,
    /// Fewest parallel requests (shards) to this receiver.
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    /// Most parallel requests (shards); used while a backlog drains.
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    /// The receiver stores samples older than a series' newest (VictoriaMetrics; Prometheus
    /// or Mimir with `out_of_order_time_window`): fresh samples are then sent ahead of a
    /// backlog instead of behind it.
    #[serde(default)]
    pub accepts_out_of_order: bool,
    /// Bound on the bytes per second sent while catching up on a backlog; unset: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_catchup_bytes_per_second: Option<ByteSize>,
}

/// Most shards a receiver may be given: each is one concurrent request.
pub const MAX_SHARDS: usize = 64;

/// Most runtime threads `agent.worker_threads` accepts: more than any edge host has cores.
pub const MAX_WORKER_THREADS: usize = 64;

fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    4
}

/// How a push changes the group on the Pushgateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMethod {
    /// `PUT`: replace every metric of the group.
    #[default]
    Put,
    /// `POST`: replace only the metrics with the names pushed, keep the others.
    Post,
}

/// One Pushgateway group to push to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushgatewayConfig {
    /// Name used in the agent's own metrics and logs; defaults to the URL's host and port.
    pub name: Option<String>,
    /// The Pushgateway's base URL, e.g. `http://127.0.0.1:9091` (a route prefix may follow).
    pub url: String,
    /// The group's `job`; `pushprobe exec --job` overrides it.
    pub job: String,
    /// Further grouping-key labels, e.g. `{ instance = "host-1" }`.
    #[serde(default)]
    pub grouping: BTreeMap<String, String>,
    /// `put` replaces the group on each push, `post` merges into it.
    #[serde(default)]
    pub method: PushMethod,
    /// Delete the group when `run`, `once` or `exec` ends.
    #[serde(default)]
    pub delete_on_exit: bool,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline (prefer `bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Timeout of one request.
    #[serde(default = "default_pg_timeout")]
    pub timeout: ConfigDuration,
    /// First retry delay.
    #[serde(default = "default_min_backoff")]
    pub min_backoff: ConfigDuration,
    /// Longest retry delay.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: ConfigDuration,
}

fn default_pg_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_rw_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_max_samples_per_send() -> usize {
    2000
}
fn default_batch_send_deadline() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_queue_capacity() -> usize {
    100_000
}
fn default_min_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(30))
}
fn default_max_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_probe_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_method() -> String {
    "GET".into()
}
fn default_true() -> bool {
    true
}

/// One probe; `kind` selects what it does.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeConfig {
    /// An HTTP(S) request checked for status and timed by phase.
    Http(HttpProbeConfig),
    /// An OpenAI-compatible API: model list, chat and streamed chat.
    Openai(OpenAiProbeConfig),
}

/// The probe kinds `kind` accepts.
const PROBE_KINDS: &[&str] = &["http", "openai"];

// serde's derived `tag = "kind"` buffers the table before picking a variant, and an error
// inside the variant then loses its field name ("probe.0: not a duration"). Reading the table
// as a figment value first and deserializing the variant from it keeps the field in the
// message ("probe.0: interval: not a duration").
impl<'de> Deserialize<'de> for ProbeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = <figment::value::Value as Deserialize>::deserialize(d)?;
        let Some(mut table) = value.into_dict() else {
            return Err(D::Error::custom("each [[probe]] must be a table"));
        };
        let kind = match table.remove("kind") {
            Some(figment::value::Value::String(_, kind)) => kind,
            Some(_) => {
                return Err(D::Error::custom(
                    "kind: must be a string (\"http\" or \"openai\")",
                ))
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        let body = figment::value::Value::from(table);
        let field_error = |e: figment::Error| D::Error::custom(describe_figment_error(e));
        match kind.as_str() {
            "http" => body
                .deserialize()
                .map(ProbeConfig::Http)
                .map_err(field_error),
            "openai" => body
                .deserialize()
                .map(ProbeConfig::Openai)
                .map_err(field_error),
            other => Err(D::Error::unknown_variant(other, PROBE_KINDS)),
        }
    }
}

impl ProbeConfig {
    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            ProbeConfig::Http(p) => &p.name,
            ProbeConfig::Openai(p) => &p.name,
        }
    }
}

/// An HTTP probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// Target URL (http or https).
    pub url: String,
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
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// Status codes that count as success; empty means any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Follow redirects (up to 10), as the blackbox exporter does.
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Latency histogram upper bounds in seconds.
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Loads the configuration from `path` (if it exists or was given explicitly) and the
/// environment, without validating it.
pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile, ConfigError> {
    if explicit && !path.exists() {
        return Err(ConfigError::Load(format!(
            "config file {} does not exist (give --config or set PUSHPROBE_CONFIG)",
            path.display()
        )));
    }
    figment_for(path)
        .extract()
        .map_err(|e| ConfigError::Load(describe_figment_error(e)))
}

/// The figment stack: file, then `PUSHPROBE_*` environment (`__` separates nested keys).
pub fn figment_for(path: &Path) -> Figment {
    Figment::new().merge(Toml::file(path)).merge(
        Env::prefixed(ENV_PREFIX)
            .ignore(&["config", "log_format", "log_level"])
            .split("__"),
    )
}

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (in {s})"))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Validated, runtime form of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Agent-wide settings.
    pub agent: AgentSettings,
    /// Receivers.
    pub remote_write: Vec<RemoteWriteSettings>,
    /// Probes.
    pub probes: Vec<ProbeSettings>,
    /// Pushgateway groups.
    pub pushgateway: Vec<PushgatewaySettings>,
    /// Scrape jobs.
    pub scrapes: Vec<ScrapeSettings>,
    /// The configuration as read, for `config check` (secrets redacted when printed).
    pub file: ConfigFile,
}

/// Validated agent settings.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// External labels, validated.
    pub external_labels: crate::series::Labels,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Self-metrics period.
    pub self_metrics_interval: Duration,
    /// Health/metrics listener address, if any.
    pub listen: Option<std::net::SocketAddr>,
    /// Directory for durable state; `None` means in-memory queues.
    pub data_dir: Option<PathBuf>,
    /// Disk queue settings, validated (used when `data_dir` is set).
    pub disk_queue: DiskQueueOptions,
    /// Period of the scrape-metadata sends; `None`: not sent.
    pub metadata_interval: Option<Duration>,
    /// Threads that run `run`'s tasks; 1 means a single-threaded runtime.
    pub worker_threads: usize,
}

/// Credentials for a request, resolved from files at start.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer …`.
    Bearer(Secret),
}

/// Validated remote-write endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWriteSettings {
    /// Name for metrics and logs.
    pub name: String,
    /// Write URL.
    pub url: reqwest::Url,
    /// Extra headers (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// Credentials.
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// Request timeout.
    pub timeout: Duration,
    /// Batch size limit.
    pub max_samples_per_send: usize,
    /// Batch age limit.
    pub batch_send_deadline: Duration,
    /// Queue bound in samples.
    pub queue_capacity: usize,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Fewest parallel requests.
    pub min_shards: usize,
    /// Most parallel requests.
    pub max_shards: usize,
    /// Whether fresh samples may be sent ahead of older queued ones.
    pub accepts_out_of_order: bool,
    /// Catch-up byte rate bound, if any.
    pub max_catchup_bytes_per_second: Option<u64>,
}

/// A validated Pushgateway group.
#[derive(Debug, Clone)]
pub struct PushgatewaySettings {
    /// Name for metrics and logs.
    pub name: String,
    /// Base URL.
    pub url: reqwest::Url,
    /// The group's job name, never empty.
    pub job: String,
    /// Grouping-key labels other than `job`, in name order (values may be empty).
    pub grouping: Vec<(String, String)>,
    /// `PUT` or `POST`.
    pub method: PushMethod,
    /// Delete the group at exit.
    pub delete_on_exit: bool,
    /// Credentials.
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// Request timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

/// A validated probe.
#[derive(Debug, Clone)]
pub enum ProbeSettings {
    /// HTTP probe.
    Http(HttpProbeSettings),
    /// OpenAI-compatible API probe.
    Openai(OpenAiProbeSettings),
}

impl ProbeSettings {
    /// The probe's name.
    pub fn name(&self) -> &str {
        match self {
            ProbeSettings::Http(p) => &p.name,
            ProbeSettings::Openai(p) => &p.name,
        }
    }

    /// How often it runs.
    pub fn interval(&self) -> Duration {
        match self {
            ProbeSettings::Http(p) => p.interval,
            ProbeSettings::Openai(p) => p.interval,
        }
    }

    /// Deadline of one run.
    pub fn timeout(&self) -> Duration {
        match self {
            ProbeSettings::Http(p) => p.timeout,
            ProbeSettings::Openai(p) => p.timeout,
        }
    }
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
    /// Headers (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Option<String>,
    /// Accepted status codes; empty means 2xx.
    pub valid_status_codes: Vec<u16>,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// TLS options.
    pub tls: TlsConfig,
    /// Histogram bounds.
    pub buckets: Arc<[f64]>,
    /// Extra labels.
    pub labels: Vec<(String, String)>,
}

/// Collects validation errors so that one run reports all of them.
struct Checker<'a> {
    source_name: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            source_name: self.source_name.to_string(),
        });
    }

    fn positive(&mut self, key: String, d: ConfigDuration) -> Duration {
        if d.0.is_zero() {
            self.fail(key, "must be > 0");
        }
        d.0
    }

    fn url(&mut self, key: String, text: &str) -> Option<reqwest::Url> {
        match reqwest::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                self.fail(
                    key,
                    format!(
                        "scheme must be http or https with a host, got {:?}",
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.fail(key, format!("not a valid URL: {e}"));
                None
            }
        }
    }

    fn headers(&mut self, key: &str, headers: &BTreeMap<String, String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in headers {
            let k = format!("{key}.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.fail(k, "not a valid HTTP header name");
            } else if http::HeaderValue::from_str(value).is_err() {
                self.fail(k, "value has characters not allowed in an HTTP header");
            } else {
                out.push((name.to_ascii_lowercase(), value.clone()));
            }
        }
        out
    }

    fn tls(&mut self, key: &str, tls: &TlsConfig) {
        for (field, path) in [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    self.fail(
                        format!("{key}.{field}"),
                        format!("{} is not a readable file", p.display()),
                    );
                }
            }
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            self.fail(key.to_string(), "cert_file and key_file go together");
        }
    }

    /// Resolves credentials (reading their files now, so a bad path fails at start) and
    /// refuses more than one method.
    fn auth(
        &mut self,
        key: &str,
        basic_auth: &Option<BasicAuthConfig>,
        bearer_token: &Option<Secret>,
        bearer_token_file: &Option<PathBuf>,
    ) -> Option<Auth> {
        let mut auth = None;
        let methods = [
            basic_auth.is_some(),
            bearer_token.is_some(),
            bearer_token_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            self.fail(
                key,
                "use only one of basic_auth, bearer_token, bearer_token_file",
            );
        }
        if let Some(b) = basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), None) => Some(p.clone()),
                (None, Some(f)) => match read_secret_file(f) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.fail(format!("{key}.basic_auth.password_file"), e);
                        None
                    }
                },
                _ => {
                    self.fail(
                        format!("{key}.basic_auth"),
                        "give exactly one of password, password_file",
                    );
                    None
                }
            };
            if let Some(password) = password {
                auth = Some(Auth::Basic {
                    username: b.username.clone(),
                    password,
                });
            }
        }
        if let Some(t) = bearer_token {
            auth = Some(Auth::Bearer(t.clone()));
        }
        if let Some(f) = bearer_token_file {
            match read_secret_file(f) {
                Ok(s) if s.is_empty() => self.fail(
                    format!("{key}.bearer_token_file"),
                    format!("{} is empty", f.display()),
                ),
                Ok(s) => auth = Some(Auth::Bearer(s)),
                Err(e) => self.fail(format!("{key}.bearer_token_file"), e),
            }
        }
        auth
    }

    /// The sinks' HTTP client verifies the URL's own host name, so a `server_name` there would
    /// be silently ignored: refuse it instead.
    fn no_server_name(&mut self, key: &str, tls: &TlsConfig) {
        if tls.server_name.is_some() {
            self.fail(
                format!("{key}.server_name"),
                "is supported for probes only; use a url whose host the certificate covers",
            );
        }
    }

    fn labels(&mut self, key: &str, labels: &BTreeMap<String, String>) -> Vec<(String, String)> {
        for (name, value) in labels {
            if !is_valid_label_name(name) || name.starts_with("__") {
                self.fail(
                    format!("{key}.{name}"),
                    "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __",
                );
            } else if value.is_empty() {
                self.fail(format!("{key}.{name}"), "label value must not be empty");
            }
        }
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Reads a secret file, stripping one trailing newline (editors add one).
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    match std::fs::read_to_string(path) {
        Ok(mut s) => {
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            Ok(Secret::new(s))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Default display name of a remote-write URL: host, port and path, never credentials.
pub fn endpoint_name(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

impl ConfigFile {
    /// Validates everything and resolves credential files; reports every problem found.
    pub fn validate(self, source_name: &str) -> Result<Settings, Vec<ConfigError>> {
        let mut c = Checker {
            source_name,
            errors: Vec::new(),
        };
        let ext = c.labels("agent.external_labels", &self.agent.external_labels);
        let external_labels = crate::series::Labels::from_pairs(ext).unwrap_or_default();
        if self
            .agent
            .data_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            c.fail(
                "agent.data_dir",
                "must not be empty (leave it out for memory queues)",
            );
        }
        let agent = AgentSettings {
            external_labels,
            drain_timeout: self.agent.drain_timeout.0,
            self_metrics_interval: c.positive(
                "agent.self_metrics_interval".into(),
                self.agent.self_metrics_interval,
            ),
            listen: self.agent.listen.as_deref().and_then(|text| {
                // A socket address, not a host name: the listener binds before any DNS is
                // consulted, and `localhost` resolving to ::1 only would surprise a probe.
                match text.parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        c.fail(
                            "agent.listen",
                            format!("{text:?} is not an IP:port address, e.g. \"0.0.0.0:9465\""),
                        );
                        None
                    }
                }
            }),
            data_dir: self.agent.data_dir.clone(),
            disk_queue: validate_queue(&mut c, &self.agent.queue),
            metadata_interval: Some(self.agent.metadata_interval.0).filter(|d| !d.is_zero()),
            worker_threads: match self.agent.worker_threads {
                None if self.agent.data_dir.is_some() => 2,
                None => 1,
                Some(n) => match usize::try_from(n) {
                    Ok(n) if (1..=MAX_WORKER_THREADS).contains(&n) => n,
                    _ => {
                        c.fail(
                            "agent.worker_threads",
                            format!(
                                "must be between 1 and {MAX_WORKER_THREADS}, got {n}; leave it \
                                 out for 1 (2 with data_dir)"
                            ),
                        );
                        1
                    }
                },
            },
        };

        let mut remote_write = Vec::new();
        let mut rw_names = std::collections::HashSet::new();
        for (i, rw) in self.remote_write.iter().enumerate() {
            let key = format!("remote_write[{i}]");
            let url = c.url(format!("{key}.url"), &rw.url);
            let headers = c.headers(&format!("{key}.headers"), &rw.headers);
            for (name, _) in &headers {
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    c.fail(
                        format!("{key}.headers.{name}"),
                        "is set by pushprobe as the remote-write protocol requires and cannot be overridden",
                    );
                }
            }
            let auth = c.auth(
                &key,
                &rw.basic_auth,
                &rw.bearer_token,
                &rw.bearer_token_file,
            );
            c.tls(&format!("{key}.tls"), &rw.tls);
            c.no_server_name(&format!("{key}.tls"), &rw.tls);
            let timeout = c.positive(format!("{key}.timeout"), rw.timeout);
            let batch_send_deadline =
                c.positive(format!("{key}.batch_send_deadline"), rw.batch_send_deadline);
            let min_backoff = c.positive(format!("{key}.min_backoff"), rw.min_backoff);
            let max_backoff = c.positive(format!("{key}.max_backoff"), rw.max_backoff);
            if min_backoff > max_backoff {
                c.fail(format!("{key}.min_backoff"), "must not exceed max_backoff");
            }
            if rw.max_samples_per_send == 0 {
                c.fail(format!("{key}.max_samples_per_send"), "must be > 0");
            }
            if rw.queue_capacity < rw.max_samples_per_send {
                c.fail(
                    format!("{key}.queue_capacity"),
                    "must be at least max_samples_per_send",
                );
            }
            if rw.min_shards == 0 {
                c.fail(format!("{key}.min_shards"), "must be > 0");
            }
            if rw.max_shards < rw.min_shards {
                c.fail(format!("{key}.max_shards"), "must be at least min_shards");
            }
            if rw.max_shards > MAX_SHARDS {
                c.fail(
                    format!("{key}.max_shards"),
                    format!("must be at most {MAX_SHARDS}"),
                );
            }
            if rw.max_catchup_bytes_per_second == Some(ByteSize(0)) {
                c.fail(
                    format!("{key}.max_catchup_bytes_per_second"),
                    "must be > 0 (leave it out for no bound)",
                );
            }
            let Some(url) = url else { continue };
            let name = rw.name.clone().unwrap_or_else(|| endpoint_name(&url));
            if !rw_names.insert(name.clone()) {
                c.fail(
                    format!("{key}.name"),
                    format!("{name:?} is used by another remote_write; give each a distinct name"),
                );
            }
            remote_write.push(RemoteWriteSettings {
                name,
                url,
                headers,
                auth,
                tls: rw.tls.clone(),
                timeout,
                max_samples_per_send: rw.max_samples_per_send,
                batch_send_deadline,
                queue_capacity: rw.queue_capacity,
                min_backoff,
                max_backoff,
                min_shards: rw.min_shards,
                max_shards: rw.max_shards,
                accepts_out_of_order: rw.accepts_out_of_order,
                max_catchup_bytes_per_second: rw.max_catchup_bytes_per_second.map(|b| b.0),
            });
        }

        let pricing = openai::validate_pricing(&mut c, &self.pricing);
        let mut probes = Vec::new();
        let mut probe_names = std::collections::HashSet::new();
        for (i, p) in self.probe.iter().enumerate() {
            let key = format!("probe[{i}]");
            if p.name().is_empty() {
                c.fail(format!("{key}.name"), "must not be empty");
            } else if !probe_names.insert(p.name().to_string()) {
                c.fail(
                    format!("{key}.name"),
                    format!("{:?} is used by another probe", p.name()),
                );
            }
            match p {
                ProbeConfig::Http(h) => {
                    if let Some(s) = validate_http_probe(&mut c, &key, h) {
                        probes.push(ProbeSettings::Http(s));
                    }
                }
                ProbeConfig::Openai(o) => {
                    if let Some(s) = openai::validate_openai_probe(&mut c, &key, o, &pricing) {
                        probes.push(ProbeSettings::Openai(s));
                    }
                }
            }
        }

        let mut pushgateway = Vec::new();
        let mut pg_names = std::collections::HashSet::new();
        for (i, pg) in self.pushgateway.iter().enumerate() {
            let key = format!("pushgateway[{i}]");
            if let Some(s) = validate_pushgateway(&mut c, &key, pg) {
                if !pg_names.insert(s.name.clone()) {
                    c.fail(
                        format!("{key}.name"),
                        format!(
                            "{:?} is used by another pushgateway; give each a distinct name",
                            s.name
                        ),
                    );
                }
                pushgateway.push(s);
            }
        }

        let scrapes = scrape::validate_scrapes(&mut c, &self.scrape);

        if c.errors.is_empty() {
            Ok(Settings {
                agent,
                remote_write,
                probes,
                pushgateway,
                scrapes,
                file: self,
            })
        } else {
            Err(c.errors)
        }
    }
}

/// Turns `[agent.queue]` into disk queue options; errors name `agent.queue.<key>`.
fn validate_queue(c: &mut Checker<'_>, q: &QueueConfig) -> DiskQueueOptions {
    let fsync = match q.fsync {
        FsyncMode::Always => FsyncPolicy::Always,
        FsyncMode::Never => FsyncPolicy::Never,
        FsyncMode::Interval => {
            FsyncPolicy::Interval(c.positive("agent.queue.fsync_interval".into(), q.fsync_interval))
        }
    };
    let opts = DiskQueueOptions {
        max_disk_bytes: q.max_disk_bytes.0,
        fsync,
        max_sample_age: q
            .max_sample_age
            .map(|a| c.positive("agent.queue.max_sample_age".into(), a)),
        ..DiskQueueOptions::default()
    };
    if let Err(crate::queue::QueueError::InvalidOptions { field, message }) = opts.validate() {
        // Zero durations were reported above, under their own keys.
        if field == "max_disk_bytes" {
            c.fail(format!("agent.queue.{field}"), message);
        }
    }
    opts
}

fn validate_http_probe(
    c: &mut Checker<'_>,
    key: &str,
    h: &HttpProbeConfig,
) -> Option<HttpProbeSettings> {
    let url = c.url(format!("{key}.url"), &h.url);
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
    c.tls(&format!("{key}.tls"), &h.tls);
    let buckets = validate_buckets(c, &format!("{key}.buckets"), h.buckets.as_deref());
    let labels = c.labels(&format!("{key}.labels"), &h.labels);
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
        tls: h.tls.clone(),
        buckets,
        labels,
    })
}

fn validate_pushgateway(
    c: &mut Checker<'_>,
    key: &str,
    pg: &PushgatewayConfig,
) -> Option<PushgatewaySettings> {
    let url = c.url(format!("{key}.url"), &pg.url);
    if let Some(u) = &url {
        if u.query().is_some() || u.fragment().is_some() {
            c.fail(
                format!("{key}.url"),
                "give the base URL only; pushprobe appends /metrics/job/<job>/...",
            );
        }
    }
    if pg.job.is_empty() {
        c.fail(format!("{key}.job"), "must not be empty");
    }
    for name in pg.grouping.keys() {
        if name == "job" {
            c.fail(
                format!("{key}.grouping.job"),
                "the job is set with `job`, not in `grouping`",
            );
        } else if !is_valid_label_name(name) || name.starts_with("__") {
            c.fail(
                format!("{key}.grouping.{name}"),
                "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __",
            );
        }
    }
    let auth = c.auth(key, &pg.basic_auth, &pg.bearer_token, &pg.bearer_token_file);
    c.tls(&format!("{key}.tls"), &pg.tls);
    c.no_server_name(&format!("{key}.tls"), &pg.tls);
    let timeout = c.positive(format!("{key}.timeout"), pg.timeout);
    let min_backoff = c.positive(format!("{key}.min_backoff"), pg.min_backoff);
    let max_backoff = c.positive(format!("{key}.max_backoff"), pg.max_backoff);
    if min_backoff > max_backoff {
        c.fail(format!("{key}.min_backoff"), "must not exceed max_backoff");
    }
    let url = url?;
    let name = pg.name.clone().unwrap_or_else(|| endpoint_name(&url));
    Some(PushgatewaySettings {
        name,
        url,
        job: pg.job.clone(),
        grouping: pg
            .grouping
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        method: pg.method,
        delete_on_exit: pg.delete_on_exit,
        auth,
        tls: pg.tls.clone(),
        timeout,
        min_backoff,
        max_backoff,
    })
}

/// Checks histogram bounds: finite, strictly ascending, not empty.
fn validate_buckets(c: &mut Checker<'_>, key: &str, buckets: Option<&[f64]>) -> Arc<[f64]> {
    let Some(b) = buckets else {
        return Arc::from(DEFAULT_BUCKETS);
    };
    if b.is_empty() {
        c.fail(key, "must list at least one bucket bound");
    } else if b.iter().any(|v| !v.is_finite()) {
        c.fail(key, "bounds must be finite numbers (+Inf is implicit)");
    } else if b.windows(2).any(|w| w[0] >= w[1]) {
        c.fail(key, "bounds must be strictly ascending");
    }
    Arc::from(b)
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
pub(crate) mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Settings, String> {
        parse_in_jail(toml, &[], &[])
    }

    /// Loads and validates `toml` as `pushprobe.toml` inside a figment jail with the given
    /// environment and extra files, joining every error into one string (for the config
    /// modules' tests).
    pub(crate) fn parse_in_jail(
        toml: &str,
        env: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Settings, String> {
        let mut out = Err(String::new());
        figment::Jail::expect_with(|jail| {
            jail.create_file("pushprobe.toml", toml)?;
            for (k, v) in env {
                jail.set_env(k, v);
            }
            for (name, contents) in files {
                jail.create_file(name, contents)?;
            }
            out = load(Path::new("pushprobe.toml"), true)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    f.validate("pushprobe.toml").map_err(|errs| {
                        errs.iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                });
            Ok(())
        });
        out
    }

    const GOOD: &str = r#"
        [agent]
        external_labels = { cluster = "edge-1" }
        [[remote_write]]
        url = "http://127.0.0.1:9090/api/v1/write"
        headers = { "X-Scope-OrgID" = "team-a" }
        [[probe]]
        name = "api"
        kind = "http"
        url = "http://127.0.0.1:8080/health"
        interval = "30s"
        timeout = "5s"
    "#;

    #[test]
    fn good_config_validates_with_defaults() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.remote_write[0].max_samples_per_send, 2000);
        assert_eq!(s.remote_write[0].name, "127.0.0.1:9090/api/v1/write");
        assert_eq!(
            s.remote_write[0].headers,
            vec![("x-scope-orgid".into(), "team-a".into())]
        );
        assert_eq!(s.probes[0].interval(), Duration::from_secs(30));
        assert_eq!(s.agent.external_labels.get("cluster"), Some("edge-1"));
    }

    #[test]
    fn disk_queue_keys_validate_and_default() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.agent.data_dir, None);
        assert_eq!(s.agent.disk_queue, DiskQueueOptions::default());

        let toml = format!(
            "{}\n[agent.queue]\nmax_disk_bytes = \"256MiB\"\nfsync = \"always\"\nmax_sample_age = \"2h\"\n",
            GOOD.replace("[agent]", "[agent]\n        data_dir = \"/var/lib/pushprobe\"")
        );
        let s = parse(&toml).unwrap();
        assert_eq!(
            s.agent.data_dir.as_deref(),
            Some(Path::new("/var/lib/pushprobe"))
        );
        assert_eq!(s.agent.disk_queue.max_disk_bytes, 256 << 20);
        assert_eq!(s.agent.disk_queue.fsync, FsyncPolicy::Always);
        assert_eq!(
            s.agent.disk_queue.max_sample_age,
            Some(Duration::from_secs(7200))
        );

        let toml = format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = 1048576\nfsync_interval = \"250ms\"\n"
        );
        let s = parse(&toml).unwrap();
        assert_eq!(s.agent.disk_queue.max_disk_bytes, 1 << 20);
        assert_eq!(
            s.agent.disk_queue.fsync,
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
    }

    #[test]
    fn shard_and_catch_up_keys_default_and_validate() {
        let s = parse(GOOD).unwrap();
        let rw = &s.remote_write[0];
        assert_eq!((rw.min_shards, rw.max_shards), (1, 4));
        assert!(!rw.accepts_out_of_order);
        assert_eq!(rw.max_catchup_bytes_per_second, None);
        let with = |extra: &str| {
            GOOD.replace(
                "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
                &format!("headers = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n{extra}"),
            )
        };
        let s = parse(&with(
            "min_shards = 2\nmax_shards = 8\naccepts_out_of_order = true\nmax_catchup_bytes_per_second = \"1MiB\"",
        ))
        .unwrap();
        let rw = &s.remote_write[0];
        assert_eq!((rw.min_shards, rw.max_shards), (2, 8));
        assert!(rw.accepts_out_of_order);
        assert_eq!(rw.max_catchup_bytes_per_second, Some(1 << 20));
        let e = parse(&with("min_shards = 0")).unwrap_err();
        assert!(e.contains("remote_write[0].min_shards: must be > 0"), "{e}");
        let e = parse(&with("min_shards = 5\nmax_shards = 2")).unwrap_err();
        assert!(e.contains("remote_write[0].max_shards"), "{e}");
        let e = parse(&with("max_shards = 1000")).unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
        let e = parse(&with("max_catchup_bytes_per_second = 0")).unwrap_err();
        assert!(
            e.contains("remote_write[0].max_catchup_bytes_per_second"),
            "{e}"
        );
    }

    #[test]
    fn disk_queue_errors_name_the_key() {
        let e = parse(&format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = \"10KiB\"\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("agent.queue.max_disk_bytes: "), "{e}");
        let e = parse(&format!("{GOOD}\n[agent.queue]\nfsync_interval = \"0s\"\n")).unwrap_err();
        assert_eq!(
            e,
            "agent.queue.fsync_interval: must be > 0 (in pushprobe.toml)"
        );
        let e = parse(&format!("{GOOD}\n[agent.queue]\nfsync = \"sometimes\"\n")).unwrap_err();
        assert!(
            e.contains("agent.queue.fsync") && e.contains("sometimes"),
            "{e}"
        );
        let e = parse(&format!(
            "{GOOD}\n[agent.queue]\nmax_disk_bytes = \"1.5GiB\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("agent.queue.max_disk_bytes") && e.contains("unknown unit"),
            "{e}"
        );
    }

    #[test]
    fn errors_inside_a_probe_name_the_field() {
        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"soon\"")).unwrap_err();
        assert!(e.starts_with("probe.0: interval: "), "{e}");
        assert!(
            e.contains("not a duration") && e.contains("pushprobe.toml"),
            "{e}"
        );
        let e = parse(&GOOD.replace("kind = \"http\"", "kind = \"htp\"")).unwrap_err();
        assert!(e.contains("htp") && e.contains("http"), "{e}");
    }

    #[test]
    fn server_name_is_refused_where_it_cannot_apply() {
        let e = parse(&GOOD.replace(
            "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
            "tls = { server_name = \"metrics.internal\" }",
        ))
        .unwrap_err();
        assert!(
            e.starts_with("remote_write[0].tls.server_name: is supported for probes only"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\nintervall = \"1s\""))
            .unwrap_err();
        assert!(e.contains("intervall"), "{e}");
    }

    #[test]
    fn errors_name_key_and_file() {
        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"0s\"")).unwrap_err();
        assert_eq!(e, "probe[0].interval: must be > 0 (in pushprobe.toml)");
        let e = parse(&GOOD.replace("X-Scope-OrgID", "Content-Type")).unwrap_err();
        assert!(
            e.starts_with("remote_write[0].headers.content-type: is set by pushprobe"),
            "{e}"
        );
        let e = parse(&GOOD.replace("interval = \"30s\"", "interval = \"30\"")).unwrap_err();
        assert!(
            e.contains("missing unit") && e.contains("pushprobe.toml"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("pushprobe.toml", GOOD)?;
            jail.set_env("PUSHPROBE_AGENT__EXTERNAL_LABELS__CLUSTER", "edge-9");
            jail.set_env("PUSHPROBE_CONFIG", "ignored.toml");
            let s = load(Path::new("pushprobe.toml"), true)
                .unwrap()
                .validate("pushprobe.toml")
                .unwrap();
            assert_eq!(s.agent.external_labels.get("cluster"), Some("edge-9"));
            Ok(())
        });
    }

    #[test]
    fn secret_files_are_read_and_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("token", "s3cr3t-token\n")?;
            jail.create_file(
                "pushprobe.toml",
                r#"
                [[remote_write]]
                url = "http://127.0.0.1:9090/api/v1/write"
                bearer_token_file = "token"
                basic_auth = { username = "u", password = "pw-inline" }
            "#,
            )?;
            let errs = load(Path::new("pushprobe.toml"), true)
                .unwrap()
                .validate("pushprobe.toml")
                .unwrap_err();
            assert!(errs[0].to_string().contains("only one of"));
            jail.create_file(
                "pushprobe.toml",
                r#"
                [[remote_write]]
                url = "http://127.0.0.1:9090/api/v1/write"
                bearer_token_file = "token"
            "#,
            )?;
            let s = load(Path::new("pushprobe.toml"), true)
                .unwrap()
                .validate("pushprobe.toml")
                .unwrap();
            assert_eq!(
                s.remote_write[0].auth,
                Some(Auth::Bearer(Secret::new("s3cr3t-token")))
            );
            assert!(!format!("{s:?}").contains("s3cr3t"));
            Ok(())
        });
    }

    #[test]
    fn pushgateway_is_validated_with_defaults() {
        let with_pg = format!(
            "{GOOD}\n[[pushgateway]]\nurl = \"http://127.0.0.1:9091\"\njob = \"nightly\"\ngrouping = {{ instance = \"host-1\", path = \"/var/tmp\" }}\n"
        );
        let s = parse(&with_pg).unwrap();
        let pg = &s.pushgateway[0];
        assert_eq!(pg.job, "nightly");
        assert_eq!(pg.method, PushMethod::Put);
        assert!(!pg.delete_on_exit);
        assert_eq!(pg.timeout, Duration::from_secs(10));
        assert_eq!(pg.name, "127.0.0.1:9091/");
        assert_eq!(
            pg.grouping,
            vec![
                ("instance".into(), "host-1".into()),
                ("path".into(), "/var/tmp".into())
            ]
        );

        let e = parse(&with_pg.replace("job = \"nightly\"", "job = \"\"\nmethod = \"post\""))
            .unwrap_err();
        assert_eq!(
            e,
            "pushgateway[0].job: must not be empty (in pushprobe.toml)"
        );
        let e = parse(&with_pg.replace("instance =", "job =")).unwrap_err();
        assert!(e.contains("pushgateway[0].grouping.job"), "{e}");
        let e = parse(
            &with_pg
                .replace("\"put\"", "")
                .replace("job = \"nightly\"", "job = \"n\"\nmethod = \"patch\""),
        )
        .unwrap_err();
        assert!(e.contains("patch"), "{e}");
        let e = parse(&format!(
            "{with_pg}bearer_token = \"t\"\nbasic_auth = {{ username = \"u\", password = \"p\" }}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("pushgateway[0]: use only one of"), "{e}");
    }

    #[test]
    fn listen_is_an_optional_socket_address() {
        assert_eq!(parse(GOOD).unwrap().agent.listen, None);
        let with = |v: &str| GOOD.replace("[agent]", &format!("[agent]\nlisten = {v:?}"));
        assert_eq!(
            parse(&with("0.0.0.0:9465")).unwrap().agent.listen,
            Some("0.0.0.0:9465".parse().unwrap())
        );
        let e = parse(&with("localhost:9465")).unwrap_err();
        assert!(
            e.starts_with("agent.listen: \"localhost:9465\" is not an IP:port"),
            "{e}"
        );
    }

    #[test]
    fn worker_threads_default_to_one_and_are_bounded() {
        assert_eq!(parse(GOOD).unwrap().agent.worker_threads, 1);
        let with = |v: &str| GOOD.replace("[agent]", &format!("[agent]\nworker_threads = {v}"));
        assert_eq!(parse(&with("4")).unwrap().agent.worker_threads, 4);
        // With a disk queue, a second thread keeps a slow sync from holding up every task.
        let disk = GOOD.replace("[agent]", "[agent]\ndata_dir = \"/var/lib/pushprobe\"");
        assert_eq!(parse(&disk).unwrap().agent.worker_threads, 2);
        let one = disk.replace("[agent]", "[agent]\nworker_threads = 1");
        assert_eq!(parse(&one).unwrap().agent.worker_threads, 1);
        for bad in ["0", "65", "-1", "70000"] {
            let e = parse(&with(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "agent.worker_threads: must be between 1 and 64, got {bad}"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_buckets_and_labels_are_refused() {
        let e = parse(&GOOD.replace("timeout = \"5s\"", "timeout = \"5s\"\nbuckets = [1.0, 0.5]"))
            .unwrap_err();
        assert!(
            e.contains("probe[0].buckets: bounds must be strictly ascending"),
            "{e}"
        );
        let e = parse(&GOOD.replace("cluster = ", "\"bad-name\" = ")).unwrap_err();
        assert!(e.contains("agent.external_labels.bad-name"), "{e}");
    }
}
