//! Schema and validation of `kind = "openai"` probes and of the top-level `[pricing]` table,
//! with the plain types the probe shares with its schema: [`Check`], [`TokenLimitField`] and
//! the key's [`KeySource`] and [`diagnose_key`] (pure; the probe re-exports them).
//!
//! The API key is never in the file: `api_key_env` names a variable, `api_key_file` a file.
//! Both are checked here, so that `config check` says "api_key_env RELAY_API_KEY is not set",
//! and again at every probe run, because keys are rotated while the agent runs. With neither,
//! the probe sends no `Authorization` header: local servers (vLLM, llama.cpp, Ollama) usually
//! need no key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keypath::join_key;
use super::{
    validate_buckets, Checker, ConfigDuration, ConnectHeadersConfig, HeadersConfig, TlsConfig,
    UrlConfig,
};
use crate::http_client::proxy::ProxySettings;
use crate::pricing::{Price, PriceTable};
use crate::probe::openai::expect::Expect;

/// One request a probe run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// `GET /models`: free; is the configured model listed?
    Models,
    /// `POST /chat/completions`: paid.
    Chat,
    /// `POST /chat/completions` with `"stream": true`: paid; time to first token.
    ChatStream,
    /// `POST /embeddings`: paid; latency, dimensions and input tokens.
    Embeddings,
}

/// The API shape a probe speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI's: `/chat/completions`, `Authorization: Bearer`.
    #[default]
    Openai,
    /// Anthropic's Messages API: `/messages`, `x-api-key` and `anthropic-version`.
    Anthropic,
}

impl Api {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

/// The request field that carries the chat checks' output-token limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLimitField {
    /// `max_tokens`: what most OpenAI-compatible APIs take.
    #[default]
    MaxTokens,
    /// `max_completion_tokens`: what OpenAI's reasoning models require (they refuse
    /// `max_tokens` with a 400).
    MaxCompletionTokens,
}

impl TokenLimitField {
    /// The JSON field name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenLimitField::MaxTokens => "max_tokens",
            TokenLimitField::MaxCompletionTokens => "max_completion_tokens",
        }
    }
}

impl Check {
    /// The `check` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Models => "models",
            Check::Chat => "chat",
            Check::ChatStream => "chat_stream",
            Check::Embeddings => "embeddings",
        }
    }

    /// Whether the check spends tokens (and so pauses when the spend guard engages).
    pub fn is_paid(self) -> bool {
        !matches!(self, Check::Models)
    }
}

/// Where the API key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable, by name.
    Env(String),
    /// A file whose contents (one trailing newline removed) are the key.
    File(PathBuf),
    /// No key: the server needs none, and no `Authorization` header is sent.
    None,
}

/// The state of the key when a check ran, described without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDiagnosis {
    /// Present and well-formed.
    Fine,
    /// The variable is not set (or not valid Unicode).
    Unset,
    /// The file could not be read.
    Unreadable(String),
    /// Present with a defect, as [`crate::secret::describe_defect`] names it.
    Defect(&'static str),
}

impl KeySource {
    /// Names the source for messages: `api_key_env RELAY_API_KEY` or `api_key_file /path`.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Env(v) => format!("api_key_env {v}"),
            KeySource::File(p) => format!("api_key_file {}", p.display()),
            KeySource::None => "no API key (neither api_key_env nor api_key_file is set)".into(),
        }
    }

    /// A sentence about the key's state, for logs and `config check`; never its value.
    pub fn explain(&self, d: &KeyDiagnosis) -> String {
        let src = self.describe();
        if *self == KeySource::None {
            // Nothing is read, so nothing can be wrong with it; a 401 then says why.
            return src;
        }
        match d {
            KeyDiagnosis::Fine => format!("the key from {src} is well-formed"),
            KeyDiagnosis::Unset => format!("{src} is not set"),
            KeyDiagnosis::Unreadable(e) => format!("{src} cannot be read: {e}"),
            KeyDiagnosis::Defect(what) => match self {
                KeySource::Env(_) => format!("{src} is set but {what}"),
                KeySource::File(_) | KeySource::None => format!("{src} {what}"),
            },
        }
    }
}

/// Diagnoses a key read from its source (`None`: unset; `Err`: unreadable file).
pub fn diagnose_key(value: Result<Option<&str>, &str>) -> KeyDiagnosis {
    match value {
        Err(e) => KeyDiagnosis::Unreadable(e.to_string()),
        Ok(None) => KeyDiagnosis::Unset,
        Ok(Some(v)) => match crate::secret::describe_defect(v) {
            Some(d) => KeyDiagnosis::Defect(d),
            None => KeyDiagnosis::Fine,
        },
    }
}

/// Default prompt: short, so a probe costs a few tokens.
pub const DEFAULT_PROMPT: &str = "ping";
/// Default `max_tokens`: enough to see a first token and a rate, cheap enough to run often.
pub const DEFAULT_MAX_TOKENS: u32 = 5;
/// Default response size limit (1 MiB): a model list of thousands of entries fits.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default `anthropic-version` header: the version Anthropic's Messages API documents.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
/// Default text of the embeddings check: short, so it costs a few tokens.
pub const DEFAULT_EMBEDDING_INPUT: &str = "pushprobe embeddings check";

/// Headers an `api = "anthropic"` probe sets itself.
const RESERVED_ANTHROPIC_HEADERS: &[&str] = &["x-api-key", "anthropic-version"];

/// Request headers the probe sets itself.
const RESERVED_AI_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "content-length",
    "host",
    "accept",
];

/// Label names the probe's series carry already.
const RESERVED_AI_LABELS: &[&str] = &[
    "probe",
    "provider",
    "model",
    "check",
    "outcome",
    "reason",
    "kind",
    "phase",
    "served_model",
    "finish_reason",
    "anomaly",
    "resource",
    "requested_model",
    "answering_model",
    "le",
    "instance",
];

fn default_checks() -> Vec<Check> {
    vec![Check::Models, Check::Chat, Check::ChatStream]
}
fn default_prompt() -> String {
    DEFAULT_PROMPT.into()
}
fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}
fn default_ai_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}
fn default_ai_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_stall_threshold() -> ConfigDuration {
    ConfigDuration(crate::probe::openai::timing::DEFAULT_STALL_THRESHOLD)
}

/// The `seed` a probe with `expect` sends when none is configured: any fixed value makes a
/// provider that honours seeds answer the same way each time.
pub const DEFAULT_SEED: i64 = 42;

/// A probe of an OpenAI-compatible API (OpenAI, relays, vLLM, DeepSeek, local servers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProbeConfig {
    /// Unique name; the `probe` label of its series.
    pub name: String,
    /// The API root, e.g. `https://api.example.com/v1`; `/models` and `/chat/completions`
    /// are appended to its path.
    pub base_url: Option<UrlConfig>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// File holding the API key (one trailing newline removed).
    pub api_key_file: Option<PathBuf>,
    /// The model to ask for.
    pub model: String,
    /// Which checks to run, in order: `models` (free), `chat`, `chat_stream` (paid).
    #[serde(default = "default_checks")]
    pub checks: Vec<Check>,
    /// The user message sent by the chat checks.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// `max_tokens` of the chat checks.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The request field that carries `max_tokens`: `max_tokens` (default) or
    /// `max_completion_tokens`, for models that refuse the former.
    #[serde(default)]
    pub token_limit_field: TokenLimitField,
    /// How often to probe.
    #[serde(default = "default_ai_interval")]
    pub interval: ConfigDuration,
    /// Deadline of each check's request, all phases and the body included.
    #[serde(default = "default_ai_timeout")]
    pub timeout: ConfigDuration,
    /// Dollars this probe may spend per UTC day before its paid checks pause.
    pub max_probe_spend_per_day: Option<f64>,
    /// Extra request headers (e.g. for a gateway).
    #[serde(default)]
    pub headers: HeadersConfig,
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
    /// Extra labels on this probe's series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The `job` label of this probe's series; unset: `agent.job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Latency histogram upper bounds in seconds.
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Most response bytes read; a larger or endless body fails the check.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Discovered API roots instead of `base_url` (see `config::discovery`): one probe per
    /// target, `__address__` the API root.
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
    /// Target relabeling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabel_configs: Vec<crate::scrape::relabel::RelabelConfig>,
    /// A pause between two streamed text chunks longer than this counts as a stall.
    #[serde(default = "default_stall_threshold")]
    pub stall_threshold: ConfigDuration,
    /// A check on the chat checks' answer: `{ regex = "…" }` or `{ json_fields = [...] }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<ExpectConfig>,
    /// `temperature` of chat requests; 0 when `expect` is set and this is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// `seed` of chat requests; [`DEFAULT_SEED`] when `expect` is set and this is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// The API shape: `openai` (default) or `anthropic` (Messages API).
    #[serde(default)]
    pub api: Api,
    /// The `anthropic-version` header of `api = "anthropic"`; default `2023-06-01`.
    pub anthropic_version: Option<String>,
    /// The model of the `embeddings` check; default: `model`.
    pub embedding_model: Option<String>,
    /// The text the `embeddings` check embeds; default: a short fixed text.
    pub embedding_input: Option<String>,
    /// The number of dimensions the embedding must have; a different number fails the check.
    pub expected_dimensions: Option<u32>,
}

/// `expect`: exactly one of its keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectConfig {
    /// The answer must contain a match of this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The answer must be a JSON object with these fields (dotted paths) present, not null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_fields: Option<Vec<String>>,
}

/// One `[pricing."MODEL"]` entry: dollars per million tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelPriceConfig {
    /// Input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Output (completion) tokens.
    pub output_per_mtok: f64,
    /// Cached input tokens; input price if absent.
    pub cached_input_per_mtok: Option<f64>,
    /// Input tokens written to the cache (Anthropic); input price if absent.
    pub cache_write_per_mtok: Option<f64>,
    /// Input tokens read from the cache; `cached_input_per_mtok`, then input price, if absent.
    pub cache_read_per_mtok: Option<f64>,
    /// Other names of this model: literal names or globs (`*`, `?`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A validated OpenAI-compatible probe.
#[derive(Debug, Clone)]
pub struct OpenAiProbeSettings {
    /// Name.
    pub name: String,
    /// API root.
    pub base_url: reqwest::Url,
    /// The `provider` label: the base URL's host (and port, if given).
    pub provider: String,
    /// Where the key comes from; read again at each run.
    pub key: KeySource,
    /// Model asked for.
    pub model: String,
    /// Checks in order, without duplicates.
    pub checks: Vec<Check>,
    /// The chat prompt.
    pub prompt: String,
    /// `max_tokens` of chat requests.
    pub max_tokens: u32,
    /// The field `max_tokens` is sent in.
    pub token_limit_field: TokenLimitField,
    /// Period.
    pub interval: Duration,
    /// Deadline of each check.
    pub timeout: Duration,
    /// Daily spend limit in dollars.
    pub max_probe_spend_per_day: Option<f64>,
    /// Extra headers (names lower-cased; credentials held as secrets).
    pub headers: Vec<(String, crate::secret::HeaderText)>,
    /// TLS options.
    pub tls: TlsConfig,
    /// The proxies requests go through.
    pub proxy: ProxySettings,
    /// Extra labels, `job` included.
    pub labels: Vec<(String, String)>,
    /// Histogram bounds.
    pub buckets: Arc<[f64]>,
    /// Response size limit.
    pub max_body_bytes: u64,
    /// The price table shared by every probe.
    pub pricing: Arc<PriceTable>,
    /// Gap between streamed text chunks that counts as a stall.
    pub stall_threshold: Duration,
    /// The answer check, if any.
    pub expect: Option<Expect>,
    /// `temperature` sent with chat requests, if any.
    pub temperature: Option<f64>,
    /// `seed` sent with chat requests, if any.
    pub seed: Option<i64>,
    /// The API shape.
    pub api: Api,
    /// The `anthropic-version` header (sent only with `api = "anthropic"`).
    pub anthropic_version: String,
    /// What the `embeddings` check sends and expects.
    pub embeddings: EmbeddingSettings,
}

/// The `embeddings` check's request and expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSettings {
    /// The model asked for (priced by the `[pricing]` table like any model).
    pub model: String,
    /// The text embedded.
    pub input: String,
    /// The dimension count the embedding must have, if any.
    pub expected_dimensions: Option<u32>,
}

/// Validates `[pricing]`; errors name the entry.
pub(super) fn validate_pricing(
    c: &mut Checker<'_>,
    pricing: &BTreeMap<String, ModelPriceConfig>,
) -> Arc<PriceTable> {
    let entries = pricing.iter().map(|(name, p)| {
        (
            name.as_str(),
            Price {
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
                cached_input_per_mtok: p.cached_input_per_mtok,
                cache_write_per_mtok: p.cache_write_per_mtok,
                cache_read_per_mtok: p.cache_read_per_mtok,
            },
            p.aliases.as_slice(),
        )
    });
    match PriceTable::new(entries) {
        Ok(t) => Arc::new(t),
        Err(errors) => {
            for (entry, e) in errors {
                c.fail(join_key("pricing", &entry), e.to_string());
            }
            Arc::new(PriceTable::default())
        }
    }
}

/// The `provider` label of a base URL: host, plus the port when one is written.
pub fn provider_label(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Checks the key source, reading the variable or file as the probe will.
fn check_key(c: &mut Checker<'_>, key: &str, o: &OpenAiProbeConfig) -> Option<KeySource> {
    let source = match (&o.api_key_env, &o.api_key_file) {
        (None, None) => return Some(KeySource::None),
        (Some(_), Some(_)) => {
            c.fail(key, "use only one of api_key_env, api_key_file");
            return None;
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains(['=', '\0']) {
                c.fail(
                    format!("{key}.api_key_env"),
                    "must be the name of an environment variable",
                );
                return None;
            }
            KeySource::Env(var.clone())
        }
        (None, Some(path)) => KeySource::File(path.clone()),
    };
    let diagnosis = match &source {
        KeySource::Env(var) => diagnose_key(Ok(std::env::var(var).ok().as_deref())),
        KeySource::File(path) => match super::read_secret_file(path) {
            Ok(s) => diagnose_key(Ok(Some(s.expose()))),
            Err(e) => KeyDiagnosis::Unreadable(e.to_string()),
        },
        KeySource::None => KeyDiagnosis::Fine,
    };
    if diagnosis != KeyDiagnosis::Fine {
        let field = match source {
            KeySource::Env(_) => "api_key_env",
            KeySource::File(_) | KeySource::None => "api_key_file",
        };
        let message = match &diagnosis {
            // read_secret_file's message names the path already.
            KeyDiagnosis::Unreadable(e) => e.clone(),
            d => source.explain(d),
        };
        c.fail(format!("{key}.{field}"), message);
    }
    Some(source)
}

/// Validates one `kind = "openai"` probe.
pub(super) fn validate_openai_probe(
    c: &mut Checker<'_>,
    key: &str,
    o: &OpenAiProbeConfig,
    pricing: &Arc<PriceTable>,
) -> Option<OpenAiProbeSettings> {
    let discovered = super::discovery::has_discovery!(o);
    let base_url = match &o.base_url {
        Some(_) if discovered => {
            c.fail(
                format!("{key}.base_url"),
                "set either base_url or discovered targets (targets, static_configs, \
                 file_sd_configs, http_sd_configs, dns_sd_configs), not both",
            );
            None
        }
        Some(u) => c.url(format!("{key}.base_url"), u.as_str()),
        None if discovered => reqwest::Url::parse(super::probe::DISCOVERED_URL).ok(),
        None => {
            c.fail(
                format!("{key}.base_url"),
                "missing: set base_url, or targets, static_configs, file_sd_configs, \
                 http_sd_configs or dns_sd_configs",
            );
            None
        }
    };
    if let Some(u) = &base_url {
        if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
            c.fail(
                format!("{key}.base_url"),
                "must not hold credentials or a #fragment; the key goes in api_key_env or api_key_file",
            );
        }
    }
    let key_source = check_key(c, key, o);
    if o.model.trim().is_empty() {
        c.fail(format!("{key}.model"), "must name the model to probe");
    }
    if o.checks.is_empty() {
        c.fail(
            format!("{key}.checks"),
            "list at least one of \"models\", \"chat\", \"chat_stream\", \"embeddings\"",
        );
    }
    let mut checks = Vec::new();
    for check in &o.checks {
        if checks.contains(check) {
            c.fail(
                format!("{key}.checks"),
                format!("{:?} is listed twice", check.as_str()),
            );
        } else {
            checks.push(*check);
        }
    }
    if o.max_tokens == 0 {
        c.fail(format!("{key}.max_tokens"), "must be > 0");
    }
    if o.prompt.is_empty() && checks.iter().any(|c| c.is_paid()) {
        c.fail(format!("{key}.prompt"), "must not be empty");
    }
    let interval = c.positive(format!("{key}.interval"), o.interval);
    let timeout = c.positive(format!("{key}.timeout"), o.timeout);
    if let Some(limit) = o.max_probe_spend_per_day {
        if !(limit.is_finite() && limit > 0.0) {
            c.fail(
                format!("{key}.max_probe_spend_per_day"),
                "must be a number of dollars > 0 (to run no paid check, set checks = [\"models\"])",
            );
        } else if pricing.lookup(&o.model).is_none() && checks.iter().any(|c| c.is_paid()) {
            c.fail(
                format!("{key}.max_probe_spend_per_day"),
                format!(
                    "model {:?} has no [pricing] entry, so its spend cannot be measured; add one (or an alias)",
                    o.model
                ),
            );
        }
    }
    let headers = c.headers(&format!("{key}.headers"), &o.headers);
    for (name, _) in &headers {
        let reserved = RESERVED_AI_HEADERS.contains(&name.as_str())
            || (o.api == Api::Anthropic && RESERVED_ANTHROPIC_HEADERS.contains(&name.as_str()));
        if reserved {
            c.fail(
                format!("{key}.headers.{name}"),
                "is set by the probe itself (the key comes from api_key_env or api_key_file)",
            );
        }
    }
    let anthropic_version = validate_api(c, key, o, &checks);
    let embeddings = validate_embeddings(c, key, o, &checks, pricing);
    c.tls(&format!("{key}.tls"), &o.tls);
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(o));
    c.tls_files(&format!("{key}.tls"), &o.tls);
    let buckets = validate_buckets(c, &format!("{key}.buckets"), o.buckets.as_deref());
    let labels = c.labels(&format!("{key}.labels"), &o.labels);
    for reserved in RESERVED_AI_LABELS {
        if o.labels.contains_key(*reserved) {
            c.fail(
                format!("{key}.labels.{reserved}"),
                "is set by pushprobe itself",
            );
        }
    }
    if o.max_body_bytes == 0 {
        c.fail(format!("{key}.max_body_bytes"), "must be > 0");
    }
    let stall_threshold = c.positive(format!("{key}.stall_threshold"), o.stall_threshold);
    let expect = validate_expect(c, key, o);
    if let Some(t) = o.temperature {
        if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
            c.fail(format!("{key}.temperature"), "must be a number from 0 to 2");
        }
    }
    if o.api == Api::Anthropic {
        // Anthropic's Messages API takes a temperature from 0 to 1 and has no seed.
        if o.temperature.is_some_and(|t| t > 1.0) {
            c.fail(
                format!("{key}.temperature"),
                "must be from 0 to 1 with api = \"anthropic\"",
            );
        }
        if o.seed.is_some() {
            c.fail(
                format!("{key}.seed"),
                "Anthropic's API has no seed; remove it with api = \"anthropic\"",
            );
        }
    }
    // A canary answer is only comparable run after run when sampling is deterministic.
    let (temperature, seed) = match (&expect, o.api) {
        (Some(_), Api::Openai) => (o.temperature.or(Some(0.0)), o.seed.or(Some(DEFAULT_SEED))),
        (Some(_), Api::Anthropic) => (o.temperature.or(Some(0.0)), None),
        (None, _) => (o.temperature, o.seed),
    };
    let base_url = base_url?;
    Some(OpenAiProbeSettings {
        name: o.name.clone(),
        provider: provider_label(&base_url),
        base_url,
        key: key_source?,
        model: o.model.clone(),
        checks,
        prompt: o.prompt.clone(),
        max_tokens: o.max_tokens,
        token_limit_field: o.token_limit_field,
        interval,
        timeout,
        max_probe_spend_per_day: o.max_probe_spend_per_day,
        headers,
        tls: o.tls.clone(),
        proxy,
        labels,
        buckets,
        max_body_bytes: o.max_body_bytes,
        pricing: pricing.clone(),
        stall_threshold,
        expect,
        temperature,
        seed,
        api: o.api,
        anthropic_version,
        embeddings,
    })
}

/// Checks `api` and `anthropic_version`; returns the version header to send.
fn validate_api(c: &mut Checker<'_>, key: &str, o: &OpenAiProbeConfig, checks: &[Check]) -> String {
    match (o.api, &o.anthropic_version) {
        (Api::Openai, Some(_)) => c.fail(
            format!("{key}.anthropic_version"),
            "applies only with api = \"anthropic\"; remove it or set api",
        ),
        (Api::Anthropic, Some(v)) if v.is_empty() || http::HeaderValue::from_str(v).is_err() => c
            .fail(
                format!("{key}.anthropic_version"),
                "must be a version date such as \"2023-06-01\"",
            ),
        _ => {}
    }
    if o.api == Api::Anthropic && checks.contains(&Check::Embeddings) {
        c.fail(
            format!("{key}.checks"),
            "\"embeddings\" needs api = \"openai\": Anthropic's API has no embeddings endpoint; \
             probe the embeddings provider with its own probe",
        );
    }
    o.anthropic_version
        .clone()
        .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string())
}

/// Checks the `embeddings` check's keys; they are refused without the check, where they
/// would silently do nothing.
fn validate_embeddings(
    c: &mut Checker<'_>,
    key: &str,
    o: &OpenAiProbeConfig,
    checks: &[Check],
    pricing: &PriceTable,
) -> EmbeddingSettings {
    let enabled = checks.contains(&Check::Embeddings);
    for (field, set) in [
        ("embedding_model", o.embedding_model.is_some()),
        ("embedding_input", o.embedding_input.is_some()),
        ("expected_dimensions", o.expected_dimensions.is_some()),
    ] {
        if set && !enabled {
            c.fail(
                format!("{key}.{field}"),
                "applies only to the \"embeddings\" check; add it to checks or remove this key",
            );
        }
    }
    if o.embedding_model
        .as_deref()
        .is_some_and(|m| m.trim().is_empty())
    {
        c.fail(format!("{key}.embedding_model"), "must name a model");
    }
    if o.embedding_input.as_deref() == Some("") {
        c.fail(format!("{key}.embedding_input"), "must not be empty");
    }
    if o.expected_dimensions == Some(0) {
        c.fail(format!("{key}.expected_dimensions"), "must be > 0");
    }
    let model = o.embedding_model.clone().unwrap_or_else(|| o.model.clone());
    if enabled
        && o.max_probe_spend_per_day
            .is_some_and(|l| l.is_finite() && l > 0.0)
        && model != o.model
        && pricing.lookup(&model).is_none()
    {
        c.fail(
            format!("{key}.embedding_model"),
            format!(
                "model {model:?} has no [pricing] entry, so max_probe_spend_per_day cannot measure its spend; add one (or an alias)"
            ),
        );
    }
    EmbeddingSettings {
        model,
        input: o
            .embedding_input
            .clone()
            .unwrap_or_else(|| DEFAULT_EMBEDDING_INPUT.to_string()),
        expected_dimensions: o.expected_dimensions,
    }
}

/// Validates `expect`: exactly one of `regex`, `json_fields`, and it must compile.
fn validate_expect(c: &mut Checker<'_>, key: &str, o: &OpenAiProbeConfig) -> Option<Expect> {
    let e = o.expect.as_ref()?;
    if !o
        .checks
        .iter()
        .any(|c| matches!(c, Check::Chat | Check::ChatStream))
    {
        c.fail(
            format!("{key}.expect"),
            "checks the chat answer, but no chat check is listed in checks",
        );
    }
    let built = match (&e.regex, &e.json_fields) {
        (Some(re), None) => Expect::regex(re).map_err(|m| (format!("{key}.expect.regex"), m)),
        (None, Some(f)) => {
            Expect::json_fields(f).map_err(|m| (format!("{key}.expect.json_fields"), m))
        }
        _ => Err((
            format!("{key}.expect"),
            "set exactly one of regex, json_fields".to_string(),
        )),
    };
    match built {
        Ok(x) => Some(x),
        Err((k, m)) => {
            c.fail(k, m);
            None
        }
    }
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::super::{load, ProbeSettings, Settings};
    use super::*;

    const AI: &str = r#"
        [pricing."deepseek-v3.2"]
        input_per_mtok = 0.42
        output_per_mtok = 1.12
        cached_input_per_mtok = 0.07
        aliases = ["deepseek-chat", "deepseek-v3.2-*"]

        [[probe]]
        name = "relay-deepseek"
        kind = "openai"
        base_url = "https://api.example.com/v1"
        api_key_env = "RELAY_API_KEY"
        model = "deepseek-v3.2"
        max_probe_spend_per_day = 0.50
    "#;

    fn parse_with(toml: &str, key: Option<&str>) -> Result<Settings, String> {
        let env: Vec<(&str, &str)> = key.map(|k| ("RELAY_API_KEY", k)).into_iter().collect();
        crate::config::tests::parse_in_jail(toml, &env, &[])
    }

    fn openai(s: &Settings) -> &OpenAiProbeSettings {
        match &s.probes[0] {
            ProbeSettings::Openai(o) => o,
            other => panic!("not an openai probe: {other:?}"),
        }
    }

    #[test]
    fn key_defects_are_explained_without_the_key() {
        let env = KeySource::Env("RELAY_API_KEY".into());
        let cases = [
            (Ok(None), "api_key_env RELAY_API_KEY is not set"),
            (
                Ok(Some("")),
                "api_key_env RELAY_API_KEY is set but is empty",
            ),
            (
                Ok(Some("sk-123 ")),
                "api_key_env RELAY_API_KEY is set but has leading or trailing whitespace",
            ),
            (
                Ok(Some("sk-123\n")),
                "api_key_env RELAY_API_KEY is set but ends with a newline",
            ),
            (
                Ok(Some("sk-123")),
                "the key from api_key_env RELAY_API_KEY is well-formed",
            ),
        ];
        for (value, want) in cases {
            let got = env.explain(&diagnose_key(value));
            assert_eq!(got, want);
            assert!(!got.contains("sk-123"));
        }
        let file = KeySource::File("/run/key".into());
        assert_eq!(
            file.explain(&diagnose_key(Err("No such file"))),
            "api_key_file /run/key cannot be read: No such file"
        );
    }

    #[test]
    fn openai_probe_validates_with_defaults() {
        let s = parse_with(AI, Some("sk-test-123")).unwrap();
        let o = openai(&s);
        assert_eq!(o.provider, "api.example.com");
        assert_eq!(o.checks, [Check::Models, Check::Chat, Check::ChatStream]);
        assert_eq!((o.prompt.as_str(), o.max_tokens), ("ping", 5));
        assert_eq!(o.token_limit_field, TokenLimitField::MaxTokens);
        assert_eq!(o.interval, Duration::from_secs(60));
        assert_eq!(o.timeout, Duration::from_secs(30));
        assert_eq!(o.max_body_bytes, 1024 * 1024);
        assert_eq!(o.key, KeySource::Env("RELAY_API_KEY".into()));
        assert_eq!(
            o.pricing.lookup("deepseek-chat").unwrap().entry,
            "deepseek-v3.2"
        );
        assert!(!format!("{s:?}").contains("sk-test-123"));
    }

    #[test]
    fn key_problems_are_named_without_the_key() {
        let e = parse_with(AI, None).unwrap_err();
        assert_eq!(
            e,
            "probe[0].api_key_env: api_key_env RELAY_API_KEY is not set (in pushprobe.toml)"
        );
        let e = parse_with(AI, Some("sk-secret \n")).unwrap_err();
        assert!(
            e.contains("api_key_env RELAY_API_KEY is set but ends with a newline"),
            "{e}"
        );
        assert!(!e.contains("sk-secret"));
        let e = parse_with(AI, Some(" sk-secret")).unwrap_err();
        assert!(
            e.contains("is set but has leading or trailing whitespace"),
            "{e}"
        );
        let e = parse_with(
            &AI.replace("api_key_env", "api_key_file = \"k\"\napi_key_env"),
            Some("k"),
        )
        .unwrap_err();
        assert!(e.contains("only one of api_key_env, api_key_file"), "{e}");
    }

    #[test]
    fn without_api_key_env_or_file_the_probe_sends_no_key() {
        // Local servers (vLLM, llama.cpp, Ollama) usually need no key.
        let s = parse_with(&AI.replace("api_key_env = \"RELAY_API_KEY\"", ""), None).unwrap();
        assert_eq!(openai(&s).key, KeySource::None);
        assert_eq!(
            KeySource::None.explain(&KeyDiagnosis::Fine),
            "no API key (neither api_key_env nor api_key_file is set)"
        );
    }

    #[test]
    fn api_key_file_is_read_and_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("key", "sk-file\n")?;
            let toml = AI.replace("api_key_env = \"RELAY_API_KEY\"", "api_key_file = \"key\"");
            jail.create_file("pushprobe.toml", &toml)?;
            let s = load(Path::new("pushprobe.toml"), true)
                .unwrap()
                .validate("pushprobe.toml")
                .unwrap();
            assert_eq!(openai(&s).key, KeySource::File("key".into()));
            jail.create_file("key", "  \n")?;
            let e = load(Path::new("pushprobe.toml"), true)
                .unwrap()
                .validate("pushprobe.toml")
                .unwrap_err();
            assert_eq!(
                e[0].to_string(),
                "probe[0].api_key_file: api_key_file key has leading or trailing whitespace (in pushprobe.toml)"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |from: &str, to: &str| parse_with(&AI.replace(from, to), Some("k")).unwrap_err();
        let e = bad("model = \"deepseek-v3.2\"", "model = \"x\"");
        assert!(e.contains("has no [pricing] entry"), "{e}");
        let e = bad("0.50", "0");
        assert!(
            e.contains("probe[0].max_probe_spend_per_day: must be a number"),
            "{e}"
        );
        let e = bad("model = ", "checks = [\"chat\", \"chat\"]\nmodel = ");
        assert!(e.contains("\"chat\" is listed twice"), "{e}");
        let e = bad("model = ", "checks = [\"images\"]\nmodel = ");
        assert!(e.contains("images"), "{e}");
        assert!(e.contains("embeddings"), "names the accepted values: {e}");
        let e = bad(
            "model = ",
            "headers = { Authorization = \"Bearer x\" }\nmodel = ",
        );
        assert!(
            e.contains("probe[0].headers.authorization: is set by the probe"),
            "{e}"
        );
        let e = bad("model = ", "labels = { model = \"x\" }\nmodel = ");
        assert!(e.contains("probe[0].labels.model"), "{e}");
        let e = bad("output_per_mtok = 1.12", "output_per_mtok = -1.0");
        assert!(
            e.contains("pricing.\"deepseek-v3.2\": output_per_mtok must be a finite number >= 0"),
            "{e}"
        );
        let e = bad("https://api.example.com/v1", "ftp://api.example.com/v1");
        assert!(e.contains("probe[0].base_url"), "{e}");
        let e = bad("model = ", "max_tokens = 0\nmodel = ");
        assert!(e.contains("probe[0].max_tokens: must be > 0"), "{e}");
        let e = bad("model = ", "token_limit_field = \"max_output\"\nmodel = ");
        assert!(e.contains("token_limit_field"), "{e}");
        assert!(
            e.contains("max_completion_tokens"),
            "names the accepted values: {e}"
        );
    }

    #[test]
    fn expect_stall_threshold_temperature_and_seed() {
        let s = parse_with(AI, Some("k")).unwrap();
        let o = openai(&s);
        assert_eq!(o.stall_threshold, Duration::from_secs(2));
        assert_eq!(
            (o.expect.is_none(), o.temperature, o.seed),
            (true, None, None)
        );
        let toml = AI.replace(
            "model = ",
            "expect = { regex = \"(?i)paris\" }\nstall_threshold = \"750ms\"\nmodel = ",
        );
        let s = parse_with(&toml, Some("k")).unwrap();
        let o = openai(&s);
        assert!(matches!(&o.expect, Some(Expect::Regex(r)) if r.as_str() == "(?i)paris"));
        assert_eq!(o.stall_threshold, Duration::from_millis(750));
        // The canary is deterministic by default.
        assert_eq!((o.temperature, o.seed), (Some(0.0), Some(DEFAULT_SEED)));
        let toml = AI.replace(
            "model = ",
            "expect = { json_fields = [\"a\", \"b.c\"] }\nseed = 7\ntemperature = 0.5\nmodel = ",
        );
        let o = parse_with(&toml, Some("k")).unwrap();
        let o = openai(&o);
        assert_eq!(
            o.expect,
            Some(Expect::JsonFields(vec!["a".into(), "b.c".into()]))
        );
        assert_eq!((o.temperature, o.seed), (Some(0.5), Some(7)));
        let bad = |to: &str| {
            parse_with(
                &AI.replace("model = ", &format!("{to}\nmodel = ")),
                Some("k"),
            )
            .unwrap_err()
        };
        let e = bad("expect = { regex = \"(\" }");
        assert!(
            e.contains("probe[0].expect.regex: is not a valid regular expression"),
            "{e}"
        );
        let e = bad("expect = { regex = \"a\", json_fields = [\"b\"] }");
        assert!(
            e.contains("probe[0].expect: set exactly one of regex, json_fields"),
            "{e}"
        );
        let e = bad("expect = {}");
        assert!(e.contains("probe[0].expect: set exactly one"), "{e}");
        let e = bad("expect = { json_fields = [\"a..b\"] }");
        assert!(e.contains("probe[0].expect.json_fields"), "{e}");
        let e = bad("expect = { contains = \"x\" }");
        assert!(e.contains("contains"), "{e}");
        let e = bad("temperature = -1.0");
        assert!(
            e.contains("probe[0].temperature: must be a number from 0 to 2"),
            "{e}"
        );
        let e = bad("stall_threshold = \"0s\"");
        assert!(e.contains("probe[0].stall_threshold"), "{e}");
        let e = bad("checks = [\"models\"]\nexpect = { regex = \"x\" }");
        assert!(e.contains("probe[0].expect: checks the chat answer"), "{e}");
        // An embedding has no answer text to check.
        let e = bad("checks = [\"embeddings\"]\nexpect = { regex = \"x\" }");
        assert!(e.contains("probe[0].expect: checks the chat answer"), "{e}");
        // Anthropic's API: temperature 0 to 1, no seed, and no default seed with expect.
        let anthropic = |extra: &str| {
            AI.replace(
                "model = ",
                &format!("api = \"anthropic\"\n{extra}\nmodel = "),
            )
        };
        let o = parse_with(&anthropic("expect = { regex = \"x\" }"), Some("k")).unwrap();
        assert_eq!((openai(&o).temperature, openai(&o).seed), (Some(0.0), None));
        let e = parse_with(&anthropic("temperature = 1.5"), Some("k")).unwrap_err();
        assert!(
            e.contains("probe[0].temperature: must be from 0 to 1"),
            "{e}"
        );
        let e = parse_with(&anthropic("seed = 3"), Some("k")).unwrap_err();
        assert!(
            e.contains("probe[0].seed: Anthropic's API has no seed"),
            "{e}"
        );
    }

    #[test]
    fn token_limit_field_can_be_max_completion_tokens() {
        let toml = AI.replace(
            "model = ",
            "token_limit_field = \"max_completion_tokens\"\nmodel = ",
        );
        let s = parse_with(&toml, Some("sk-test-123")).unwrap();
        assert_eq!(
            openai(&s).token_limit_field,
            TokenLimitField::MaxCompletionTokens
        );
    }

    #[test]
    fn shipped_example_validates() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELAY_API_KEY", "sk-example");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-relay.toml");
            let s = load(&path, true)
                .unwrap()
                .validate("examples/ai-relay.toml")
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert!(!s.probes.is_empty());
            assert!(!s.remote_write.is_empty());
            Ok(())
        });
    }

    #[test]
    fn anthropic_api_and_its_version() {
        let toml = AI.replace("model = ", "api = \"anthropic\"\nmodel = ");
        let s = parse_with(&toml, Some("sk-ant-1")).unwrap();
        assert_eq!(openai(&s).api, Api::Anthropic);
        assert_eq!(openai(&s).anthropic_version, DEFAULT_ANTHROPIC_VERSION);
        let toml = AI.replace(
            "model = ",
            "api = \"anthropic\"\nanthropic_version = \"2024-01-01\"\nmodel = ",
        );
        let s = parse_with(&toml, Some("sk-ant-1")).unwrap();
        assert_eq!(openai(&s).anthropic_version, "2024-01-01");
        assert_eq!(openai(&parse_with(AI, Some("k")).unwrap()).api, Api::Openai);

        let bad = |extra: &str| {
            parse_with(
                &AI.replace("model = ", &format!("{extra}\nmodel = ")),
                Some("k"),
            )
            .unwrap_err()
        };
        let e = bad("anthropic_version = \"2023-06-01\"");
        assert!(
            e.contains("probe[0].anthropic_version: applies only with api = \"anthropic\""),
            "{e}"
        );
        let e = bad("api = \"anthropic\"\nanthropic_version = \"\"");
        assert!(e.contains("probe[0].anthropic_version: must be"), "{e}");
        let e = bad("api = \"gemini\"");
        assert!(e.contains("gemini") && e.contains("anthropic"), "{e}");
        let e = bad("api = \"anthropic\"\nheaders = { \"X-Api-Key\" = \"k\" }");
        assert!(
            e.contains("probe[0].headers.x-api-key: is set by the probe"),
            "{e}"
        );
        // With the OpenAI shape, x-api-key is an ordinary gateway header.
        let toml = AI.replace("model = ", "headers = { \"X-Api-Key\" = \"k\" }\nmodel = ");
        assert!(parse_with(&toml, Some("k")).is_ok());
        let e = bad("api = \"anthropic\"\nchecks = [\"chat\", \"embeddings\"]");
        assert!(
            e.contains("probe[0].checks: \"embeddings\" needs api = \"openai\""),
            "{e}"
        );
    }

    #[test]
    fn embeddings_keys_default_and_validate() {
        let with = |extra: &str| AI.replace("model = ", &format!("{extra}\nmodel = "));
        let s = parse_with(&with("checks = [\"embeddings\"]"), Some("k")).unwrap();
        let e = &openai(&s).embeddings;
        assert_eq!(e.model, "deepseek-v3.2");
        assert_eq!(e.input, DEFAULT_EMBEDDING_INPUT);
        assert_eq!(e.expected_dimensions, None);
        assert!(Check::Embeddings.is_paid());
        let s = parse_with(
            &with("checks = [\"embeddings\"]\nembedding_model = \"deepseek-chat\"\nembedding_input = \"hi\"\nexpected_dimensions = 1536"),
            Some("k"),
        )
        .unwrap();
        let e = &openai(&s).embeddings;
        assert_eq!(
            (e.model.as_str(), e.input.as_str(), e.expected_dimensions),
            ("deepseek-chat", "hi", Some(1536))
        );

        let bad = |extra: &str| parse_with(&with(extra), Some("k")).unwrap_err();
        let e = bad("expected_dimensions = 3");
        assert!(
            e.contains("probe[0].expected_dimensions: applies only to the \"embeddings\" check"),
            "{e}"
        );
        let e = bad("checks = [\"embeddings\"]\nexpected_dimensions = 0");
        assert!(
            e.contains("probe[0].expected_dimensions: must be > 0"),
            "{e}"
        );
        let e = bad("checks = [\"embeddings\"]\nembedding_input = \"\"");
        assert!(
            e.contains("probe[0].embedding_input: must not be empty"),
            "{e}"
        );
        // A spend limit needs the embedding model priced too.
        let e = bad("checks = [\"embeddings\"]\nembedding_model = \"text-embedding-3-small\"");
        assert!(
            e.contains(
                "probe[0].embedding_model: model \"text-embedding-3-small\" has no [pricing] entry"
            ),
            "{e}"
        );
    }

    #[test]
    fn cache_prices_are_read_and_checked() {
        let toml = AI.replace(
            "cached_input_per_mtok = 0.07",
            "cached_input_per_mtok = 0.07\ncache_write_per_mtok = 0.5\ncache_read_per_mtok = 0.04",
        );
        let s = parse_with(&toml, Some("k")).unwrap();
        let p = openai(&s).pricing.lookup("deepseek-v3.2").unwrap().price;
        assert_eq!(
            (p.cache_write_per_mtok, p.cache_read_per_mtok),
            (Some(0.5), Some(0.04))
        );
        let toml = AI.replace("cached_input_per_mtok = 0.07", "cache_read_per_mtok = -0.1");
        let e = parse_with(&toml, Some("k")).unwrap_err();
        assert!(
            e.contains(
                "pricing.\"deepseek-v3.2\": cache_read_per_mtok must be a finite number >= 0"
            ),
            "{e}"
        );
    }

    #[test]
    fn shipped_anthropic_relay_example_validates() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELAY_API_KEY", "sk-example");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/anthropic-relay.toml");
            let s = load(&path, true)
                .unwrap()
                .validate("examples/anthropic-relay.toml")
                .unwrap_or_else(|e| panic!("{e:?}"));
            let apis: Vec<(Api, &[Check])> = s
                .probes
                .iter()
                .map(|p| match p {
                    ProbeSettings::Openai(o) => (o.api, o.checks.as_slice()),
                    other => panic!("not an openai probe: {other:?}"),
                })
                .collect();
            assert_eq!(apis[0].0, Api::Anthropic);
            assert_eq!(apis[2].1, [Check::Embeddings]);
            Ok(())
        });
    }
}
