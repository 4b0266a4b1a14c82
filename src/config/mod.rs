//! Configuration, in two stages. First the schema: serde structs with
//! `deny_unknown_fields`, read from the file with the `PUSHPROBE_*` environment variables
//! (`__` between nested keys, an index for a list entry) merged in, so a misspelt key is an
//! error; every such problem is reported at once, with its line. Then validation,
//! before any socket opens: [`ConfigFile::validate`] turns the schema into the runtime
//! [`Settings`], reading credential files, and reports every problem at once, each naming its
//! key path (`probe[2].interval`) and the file it came from.
//!
//! One file per section, each holding the section's schema, its runtime settings and its
//! validator:
//! - `[agent]` and `[agent.queue]` in `agent.rs`;
//! - `[[remote_write]]` in `remote_write.rs`;
//! - `[[pushgateway]]` in `pushgateway.rs`;
//! - `[[probe]]`, its `kind` dispatch and `kind = "http"` in `probe.rs`, the http probe's
//!   response checks in [`http_checks`];
//! - `kind = "openai"` probes and `[pricing]` in [`openai`];
//! - `kind = "dns"` probes in [`dns`];
//! - `kind = "grpc"` probes in [`grpc`];
//! - `[[scrape]]` in [`scrape`];
//! - `kind = "tcp"` probes in [`tcp`];
//! - the `oauth2` block those sections share in [`oauth2`].
//!
//! And the shared pieces:
//! - `load.rs`: reading the file and the environment into the schema, and its messages;
//! - `env.rs`: merging the `PUSHPROBE_*` overrides into the file's values;
//! - `keypath.rs`: key paths in the one style of every message, and their lines in the file;
//! - `checker.rs`: the validation helpers every section uses;
//! - `connection.rs`: URLs and headers as written, the `tls` and credential keys, and the
//!   resolved [`Auth`];
//! - `proxy.rs`: the proxy keys (`proxy_url`, `no_proxy`, …) every such section flattens in,
//!   into the [`ProxySettings`](crate::http_client::proxy::ProxySettings) its client routes by;
//! - `secret_file.rs`: [`read_secret_file`], bounded in size and time;
//! - [`duration`] and [`bytesize`]: Prometheus-style durations and byte sizes.

pub mod bytesize;
pub mod discovery;
pub mod dns;
pub mod duration;
pub mod grpc;
pub mod oauth2;
pub mod openai;
pub mod scrape;
pub mod tcp;

mod agent;
mod checker;
mod connection;
mod env;
pub mod http_checks;
mod icmp;
mod ip;
mod keypath;
mod load;
mod probe;
mod proxy;
mod pushgateway;
mod remote_write;
mod secret_file;
pub mod sigv4;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use agent::{
    AgentConfig, AgentSettings, FsyncMode, QueueConfig, DEFAULT_JOB, FALLBACK_INSTANCE,
    MAX_WORKER_THREADS,
};
pub use bytesize::{parse_bytes, ByteSize};
pub use checker::{DEFAULT_BUCKETS, MAX_INTERVAL, MAX_TIMEOUT};
pub use connection::{Auth, BasicAuthConfig, HeadersConfig, TlsConfig, UrlConfig};
pub use dns::{DnsProbeConfig, DnsProbeSettings, DnsServer, RrValidator};
pub use duration::{parse_duration, ConfigDuration, MAX_DURATION};
pub use grpc::{GrpcProbeConfig, GrpcProbeSettings, GrpcTarget};
pub use icmp::{IcmpProbeConfig, IcmpProbeSettings, IcmpSocket};
pub use ip::IpProtocol;
pub use load::{load, Origin, ENV_PREFIX};
pub use oauth2::{OAuth2Config, OAuth2Settings};
pub use openai::{ModelPriceConfig, OpenAiProbeConfig, OpenAiProbeSettings};
pub use probe::{
    probed_address, HttpProbeConfig, HttpProbeSettings, ProbeConfig, ProbeDiscovery, ProbeEntry,
    ProbeSettings, TargetError, MAX_RETRIES,
};
pub use proxy::{ConnectHeadersConfig, ProxyConfig};
pub use pushgateway::{PushMethod, PushgatewayConfig, PushgatewaySettings};
pub use remote_write::{
    endpoint_name, CompressionConfig, RemoteWriteConfig, RemoteWriteSettings, MAX_SHARDS,
    RESERVED_HEADERS,
};
pub use scrape::{ScrapeConfig, ScrapeSettings, ScrapeTargetSettings};
pub use secret_file::{read_secret_file, SecretFileError, MAX_SECRET_FILE_BYTES, SECRET_FIFO_WAIT};
pub use sigv4::{SigV4Config, SigV4Settings};
pub use tcp::{QueryStep, TcpProbeConfig, TcpProbeSettings};

use checker::{validate_buckets, Checker};

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{0}")]
    Load(String),
    /// The file is not valid TOML.
    #[error("TOML syntax: {message} ({origin})")]
    Syntax {
        /// What the parser found.
        message: String,
        /// The file, and the line when the parser gives one.
        origin: Origin,
    },
    /// A key does not fit the schema (unknown, of the wrong type or form, or an environment
    /// override naming no key).
    #[error("{key}: {message} ({origin})")]
    Read {
        /// Key path, e.g. `probe[0].intervall`.
        key: String,
        /// What is wrong and what to do.
        message: String,
        /// The file and line, or the environment variable, it came from.
        origin: Origin,
    },
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
    pub probe: Vec<ProbeEntry>,
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

/// Validated, runtime form of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Agent-wide settings.
    pub agent: AgentSettings,
    /// Receivers.
    pub remote_write: Vec<RemoteWriteSettings>,
    /// Probes.
    pub probes: Vec<ProbeSettings>,
    /// Each probe's `retries`, by name; a probe missing here makes one attempt per run.
    pub probe_retries: BTreeMap<String, u32>,
    /// Pushgateway groups.
    pub pushgateway: Vec<PushgatewaySettings>,
    /// Scrape jobs.
    pub scrapes: Vec<ScrapeSettings>,
    /// Probes whose targets are discovered (not in `probes`).
    pub probe_discovery: Vec<ProbeDiscovery>,
    /// The configuration as read, for `config check` (secrets redacted when printed).
    pub file: ConfigFile,
}

impl Settings {
    /// Whether any sink (remote write or Pushgateway) is configured.
    pub fn has_sinks(&self) -> bool {
        !self.remote_write.is_empty() || !self.pushgateway.is_empty()
    }

    /// Warnings about this agent's identity among others pushing to the same receivers
    /// (`config check` prints them): see the fleet documentation.
    pub fn identity_warnings(&self) -> Vec<String> {
        agent::identity_warnings(&self.file.agent, &self.agent, &self.probes)
    }

    /// The `retries` of the probe named `name` (0 when it sets none).
    pub fn retries_of(&self, name: &str) -> u32 {
        self.probe_retries.get(name).copied().unwrap_or(0)
    }
}

fn default_true() -> bool {
    true
}

impl ConfigFile {
    /// Validates everything and resolves credential files; reports every problem found.
    pub fn validate(self, source_name: &str) -> Result<Settings, Vec<ConfigError>> {
        let mut c = Checker::new(source_name);
        let agent = agent::validate_agent(&mut c, &self.agent);
        let remote_write = remote_write::validate_remote_writes(&mut c, &self.remote_write);
        let pricing = openai::validate_pricing(&mut c, &self.pricing);
        let probe_retries = probe::probe_retries(&self.probe);
        let mut probes = probe::validate_probes(&mut c, &self.probe, &pricing, agent.probe_job());
        let probe_discovery = probe::validate_probe_discovery(&mut c, &self.probe, &mut probes);
        let pushgateway = pushgateway::validate_pushgateways(&mut c, &self.pushgateway);
        let scrapes = scrape::validate_scrapes(&mut c, &self.scrape);
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        Ok(Settings {
            agent,
            remote_write,
            probes,
            probe_retries,
            pushgateway,
            scrapes,
            probe_discovery,
            file: self,
        })
    }
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
pub(crate) mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// Loads and validates `toml` as `pushprobe.toml`, with no environment or extra files.
    pub(crate) fn parse(toml: &str) -> Result<Settings, String> {
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
            let join = |errs: Vec<ConfigError>| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            out = load(Path::new("pushprobe.toml"), true)
                .map_err(join)
                .and_then(|f| f.validate("pushprobe.toml").map_err(join));
            Ok(())
        });
        out
    }

    /// A small valid configuration: one receiver, one HTTP probe.
    pub(crate) const GOOD: &str = r#"
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
        assert_eq!(s.remote_write[0].max_samples_per_send, 10_000);
        assert_eq!(s.remote_write[0].name, "127.0.0.1:9090/api/v1/write");
        assert_eq!(
            s.remote_write[0].headers,
            vec![("x-scope-orgid".into(), "team-a".into())]
        );
        assert_eq!(s.probes[0].interval(), Duration::from_secs(30));
        assert_eq!(s.agent.external_labels.get("cluster"), Some("edge-1"));
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
}
