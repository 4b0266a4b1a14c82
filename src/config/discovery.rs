//! The discovery keys `[[scrape]]` and `[[probe]]` share, with Prometheus' names and shapes:
//! `static_configs`, `file_sd_configs`, `http_sd_configs`, `dns_sd_configs` and
//! `relabel_configs` (target relabeling). `validate_discovery` turns them into [`DiscoverySettings`]; the
//! [`discovery`](crate::discovery) room runs them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oauth2::{validate_oauth2, OAuth2Config};
use super::{
    Auth, BasicAuthConfig, Checker, ConfigDuration, ConnectHeadersConfig, TlsConfig, UrlConfig,
};
use crate::discovery::{Group, LabelMap};
use crate::http_client::proxy::ProxySettings;
use crate::scrape::relabel::{compile, RelabelConfig, RelabelRule};
use crate::secret::Secret;

/// Default `file_sd_configs` `refresh_interval`: Prometheus' five minutes (changed files are
/// noticed within seconds anyway).
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(300);
/// Default `http_sd_configs` `refresh_interval`: Prometheus' one minute.
pub const DEFAULT_HTTP_REFRESH: Duration = Duration::from_secs(60);

/// Default `dns_sd_configs` `refresh_interval`: Prometheus' 30 seconds.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);

/// The record types `dns_sd_configs` `type` accepts.
pub const DNS_SD_TYPES: &[&str] = &["SRV", "A", "AAAA", "MX"];

fn default_dns_refresh() -> ConfigDuration {
    ConfigDuration(DEFAULT_DNS_REFRESH)
}
fn default_dns_type() -> String {
    "SRV".into()
}
fn default_file_refresh() -> ConfigDuration {
    ConfigDuration(DEFAULT_FILE_REFRESH)
}
fn default_http_refresh() -> ConfigDuration {
    ConfigDuration(DEFAULT_HTTP_REFRESH)
}

/// The keys that give a probe discovered targets, for messages.
pub(super) const TARGET_SOURCES: &str =
    "targets, static_configs, file_sd_configs, http_sd_configs or dns_sd_configs";

/// Whether a probe table (with the discovery fields) lists any target source.
macro_rules! has_discovery {
    ($p:expr) => {
        !$p.targets.is_empty()
            || !$p.static_configs.is_empty()
            || !$p.file_sd_configs.is_empty()
            || !$p.http_sd_configs.is_empty()
            || !$p.dns_sd_configs.is_empty()
    };
}
pub(super) use has_discovery;

/// One `static_configs` entry: targets sharing labels.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Addresses (`host:port`; for probes also URLs).
    pub targets: Vec<String>,
    /// Labels of every target of this entry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `file_sd_configs` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Target files (`.json`, `.yml`, `.yaml`); the last part of a path may be a glob.
    pub files: Vec<PathBuf>,
    /// How often every file is read again, changed or not.
    #[serde(default = "default_file_refresh")]
    pub refresh_interval: ConfigDuration,
}

/// One `http_sd_configs` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSdConfig {
    /// The endpoint answering with Prometheus' HTTP SD format.
    pub url: UrlConfig,
    /// How often it is asked.
    #[serde(default = "default_http_refresh")]
    pub refresh_interval: ConfigDuration,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline (prefer `bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// OAuth 2.0 client credentials; excludes the keys above.
    pub oauth2: Option<OAuth2Config>,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsConfig,
    /// The `http://` proxy requests go through.
    pub proxy_url: Option<UrlConfig>,
    /// Hosts reached directly, comma-separated.
    pub no_proxy: Option<String>,
    /// Take the proxy from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`.
    #[serde(default)]
    pub proxy_from_environment: bool,
    /// Headers sent with every `CONNECT`.
    #[serde(default)]
    pub proxy_connect_header: ConnectHeadersConfig,
    /// File holding the password of `proxy_url`'s user.
    pub proxy_password_file: Option<PathBuf>,
}

/// One `dns_sd_configs` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSdConfig {
    /// The names looked up.
    pub names: Vec<String>,
    /// `SRV` (default), `A`, `AAAA` or `MX`.
    #[serde(default = "default_dns_type", rename = "type")]
    pub record_type: String,
    /// The port of each target; required for `A`, `AAAA` and `MX` (SRV records carry theirs).
    pub port: Option<u16>,
    /// How often the names are looked up again.
    #[serde(default = "default_dns_refresh")]
    pub refresh_interval: ConfigDuration,
    /// The DNS server asked, `host:port` (port 53 when left out); pushprobe's own key.
    /// Unset: the first `nameserver` of /etc/resolv.conf.
    pub server: Option<String>,
}

/// A validated `dns_sd_configs` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSdSettings {
    /// The names looked up.
    pub names: Vec<String>,
    /// The record type asked for.
    pub record_type: crate::dns::RecordType,
    /// The port of A, AAAA and MX targets (`0` for SRV when unset: each record has its own).
    pub port: u16,
    /// Refresh period.
    pub refresh_interval: Duration,
    /// The server asked.
    pub server: super::dns::DnsServer,
}

/// A validated `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSdSettings {
    /// Paths or globs.
    pub files: Vec<PathBuf>,
    /// Full re-read period.
    pub refresh_interval: Duration,
}

/// A validated `http_sd_configs` entry.
#[derive(Debug, Clone)]
pub struct HttpSdSettings {
    /// The endpoint.
    pub url: reqwest::Url,
    /// Refresh period.
    pub refresh_interval: Duration,
    /// Credentials.
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// Proxies.
    pub proxy: ProxySettings,
}

/// The validated discovery of one job.
#[derive(Debug, Clone, Default)]
pub struct DiscoverySettings {
    /// `static_configs` (and a scrape's `targets`/`labels`) as groups.
    pub static_groups: Vec<Group>,
    /// `file_sd_configs`.
    pub files: Vec<FileSdSettings>,
    /// `http_sd_configs`.
    pub http: Vec<HttpSdSettings>,
    /// `dns_sd_configs`.
    pub dns: Vec<DnsSdSettings>,
    /// Compiled `relabel_configs`.
    pub relabel: Arc<[RelabelRule]>,
}

impl DiscoverySettings {
    /// Whether targets may change while running (file, HTTP or DNS discovery).
    pub fn is_dynamic(&self) -> bool {
        !self.files.is_empty() || !self.http.is_empty() || !self.dns.is_empty()
    }

    /// Whether any target source is configured.
    pub fn has_sources(&self) -> bool {
        self.is_dynamic() || !self.static_groups.is_empty()
    }
}

/// The discovery keys of one job, as written.
#[derive(Debug, Clone, Copy)]
pub(super) struct DiscoveryKeys<'a> {
    pub static_configs: &'a [StaticConfig],
    pub file_sd_configs: &'a [FileSdConfig],
    pub http_sd_configs: &'a [HttpSdConfig],
    pub dns_sd_configs: &'a [DnsSdConfig],
    pub relabel_configs: &'a [RelabelConfig],
}

/// Validates the discovery keys of the job at `key`; `first` is a group built from the
/// job's own target list (if any), listed before `static_configs`.
pub(super) fn validate_discovery(
    c: &mut Checker<'_>,
    key: &str,
    keys: DiscoveryKeys<'_>,
    first: Option<Group>,
) -> DiscoverySettings {
    let mut static_groups: Vec<Group> = first.into_iter().collect();
    for (i, s) in keys.static_configs.iter().enumerate() {
        let k = format!("{key}.static_configs[{i}]");
        if s.targets.iter().any(String::is_empty) {
            c.fail(format!("{k}.targets"), "a target must not be empty");
        }
        for name in s.labels.keys() {
            if !crate::series::is_valid_label_name(name) {
                c.fail(
                    format!("{k}.labels.{name}"),
                    "label names must match [a-zA-Z_][a-zA-Z0-9_]*",
                );
            }
        }
        static_groups.push(Group::of(
            k,
            &s.targets,
            s.labels
                .iter()
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect::<LabelMap>(),
        ));
    }
    let mut files = Vec::new();
    for (i, f) in keys.file_sd_configs.iter().enumerate() {
        let k = format!("{key}.file_sd_configs[{i}]");
        if f.files.is_empty() {
            c.fail(format!("{k}.files"), "list at least one file or glob");
        }
        for (j, p) in f.files.iter().enumerate() {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            let dir_glob = p
                .parent()
                .is_some_and(|d| d.to_string_lossy().contains(['*', '?']));
            if !matches!(ext, "json" | "yml" | "yaml") && !ext.contains(['*', '?']) {
                c.fail(
                    format!("{k}.files[{j}]"),
                    format!(
                        "{:?} must end in .json, .yml or .yaml",
                        p.display().to_string()
                    ),
                );
            } else if dir_glob {
                c.fail(
                    format!("{k}.files[{j}]"),
                    "only the file name may be a glob, not a directory",
                );
            }
        }
        let refresh = c.positive(format!("{k}.refresh_interval"), f.refresh_interval);
        files.push(FileSdSettings {
            files: f.files.clone(),
            refresh_interval: refresh,
        });
    }
    let mut http = Vec::new();
    for (i, h) in keys.http_sd_configs.iter().enumerate() {
        let k = format!("{key}.http_sd_configs[{i}]");
        let url = c.url(format!("{k}.url"), h.url.as_str());
        let refresh = c.positive(format!("{k}.refresh_interval"), h.refresh_interval);
        let auth = c.auth(&k, &h.basic_auth, &h.bearer_token, &h.bearer_token_file);
        let oauth2 = h.oauth2.as_ref().and_then(|o| {
            let other =
                h.basic_auth.is_some() || h.bearer_token.is_some() || h.bearer_token_file.is_some();
            validate_oauth2(
                c,
                &format!("{k}.oauth2"),
                o,
                other,
                refresh.min(crate::discovery::http::MAX_TIMEOUT),
            )
        });
        let auth = oauth2.map(|o| Auth::OAuth2(Box::new(o))).or(auth);
        c.tls(&format!("{k}.tls"), &h.tls);
        let proxy = super::proxy::validate_proxy(c, &k, &super::proxy::proxy_config!(h));
        c.tls_files(&format!("{k}.tls"), &h.tls);
        if let Some(url) = url {
            http.push(HttpSdSettings {
                url,
                refresh_interval: refresh,
                auth,
                tls: h.tls.clone(),
                proxy,
            });
        }
    }
    let dns = keys
        .dns_sd_configs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| validate_dns_sd(c, &format!("{key}.dns_sd_configs[{i}]"), d))
        .collect();
    let relabel = match compile(keys.relabel_configs) {
        Ok(rules) => Arc::from(rules),
        Err(e) => {
            c.fail(
                format!("{key}.relabel_configs[{}].{}", e.index, e.field),
                e.message,
            );
            Arc::from(Vec::new())
        }
    };
    DiscoverySettings {
        static_groups,
        files,
        http,
        dns,
        relabel,
    }
}

/// Validates one `dns_sd_configs` entry at `k`.
fn validate_dns_sd(c: &mut Checker<'_>, k: &str, d: &DnsSdConfig) -> Option<DnsSdSettings> {
    if d.names.is_empty() {
        c.fail(format!("{k}.names"), "list at least one name to look up");
    }
    for (j, name) in d.names.iter().enumerate() {
        if name.is_empty() {
            c.fail(format!("{k}.names[{j}]"), "must not be empty");
        } else if let Err(e) = crate::dns::message::fqdn(name) {
            c.fail(format!("{k}.names[{j}]"), e);
        }
    }
    let upper = d.record_type.to_ascii_uppercase();
    let record_type = if DNS_SD_TYPES.contains(&upper.as_str()) {
        upper.parse::<crate::dns::RecordType>().ok()
    } else {
        c.fail(
            format!("{k}.type"),
            format!(
                "{:?} is not one of: {}",
                d.record_type,
                DNS_SD_TYPES.join(", ")
            ),
        );
        None
    };
    let port = match (d.port, upper.as_str()) {
        (Some(0), _) => {
            c.fail(format!("{k}.port"), "0 is not a port (1 to 65535)");
            None
        }
        (Some(p), _) => Some(p),
        (None, "SRV") => Some(0),
        (None, _) if record_type.is_some() => {
            c.fail(
                format!("{k}.port"),
                format!("missing: {upper} records carry no port; set the targets' port"),
            );
            None
        }
        (None, _) => None,
    };
    let refresh = c.positive(format!("{k}.refresh_interval"), d.refresh_interval);
    let server = match &d.server {
        None => Some(super::dns::DnsServer::ResolvConf),
        Some(s) => match crate::dns::split_host_port(s, 53) {
            Ok((host, port)) => Some(super::dns::DnsServer::Given { host, port }),
            Err(e) => {
                c.fail(format!("{k}.server"), e);
                None
            }
        },
    };
    Some(DnsSdSettings {
        names: d.names.clone(),
        record_type: record_type?,
        port: port?,
        refresh_interval: refresh,
        server: server?,
    })
}
