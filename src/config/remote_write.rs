//! `[[remote_write]]`: one receiver each, with its own queue and sender; the schema, the
//! defaults (Prometheus' `queue_config` ones where they apply) and the validation into
//! [`RemoteWriteSettings`].

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::oauth2::{validate_oauth2, OAuth2Config};
use super::sigv4::{validate_sigv4, SigV4Config};
use super::{
    Auth, BasicAuthConfig, ByteSize, Checker, ConfigDuration, ConnectHeadersConfig, HeadersConfig,
    TlsConfig, UrlConfig,
};
use crate::http_client::proxy::ProxySettings;
use crate::remote_write::compression::ZSTD_LEVELS;
use crate::remote_write::protocol::{Protocol, MESSAGE_V1, MESSAGE_V2};
use crate::secret::{HeaderText, Secret};

/// Remote-write headers that pushprobe sets itself and a user may not override.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-encoding",
    "content-type",
    "content-length",
    "x-prometheus-remote-write-version",
    "x-victoriametrics-remote-write-version",
    "user-agent",
    "host",
];

/// One remote-write receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Name used in the agent's own metrics and logs; defaults to the URL's host and path.
    pub name: Option<String>,
    /// The receiver's write endpoint, e.g. `http://127.0.0.1:9090/api/v1/write`.
    pub url: UrlConfig,
    /// Extra request headers (e.g. `X-Scope-OrgID`); reserved remote-write headers are refused.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// Basic authentication.
    pub basic_auth: Option<BasicAuthConfig>,
    /// Bearer token, inline (prefer `bearer_token_file`).
    pub bearer_token: Option<Secret>,
    /// File holding a bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// OAuth 2.0 client credentials (see `config::oauth2`); excludes the keys above.
    pub oauth2: Option<OAuth2Config>,
    /// AWS SigV4 signing (Amazon Managed Service for Prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4: Option<SigV4Config>,
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
    /// Timeout of one write request.
    #[serde(default = "default_rw_timeout")]
    pub timeout: ConfigDuration,
    /// Most samples in one request; unset: `DEFAULT_MAX_SAMPLES_PER_SEND` (10,000), or
    /// `queue_capacity` if that is smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples_per_send: Option<usize>,
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
    /// How request bodies are compressed: `auto` asks the receiver whether it takes zstd.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// zstd level of every body; unset: by body size. Ignored with snappy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// The protobuf message sent, as Prometheus names it: `"prometheus.WriteRequest"`
    /// (remote write 1.0, the default) or `"io.prometheus.write.v2.Request"` (2.0, falling
    /// back to 1.0 for a receiver that does not take it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protobuf_message: Option<String>,
}

/// `compression` of a remote-write endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionConfig {
    /// zstd where the receiver's handshake (`?get_vm_proto_version=1`) answers `1`
    /// (VictoriaMetrics), snappy everywhere else.
    #[default]
    Auto,
    /// Always snappy, as the remote-write specification requires; no handshake.
    Snappy,
    /// zstd from the first request, without a handshake (a receiver known to take it);
    /// snappy from then on if it refuses a zstd body.
    Zstd,
}

/// Most shards a receiver may be given: each is one concurrent request.
pub const MAX_SHARDS: usize = 64;

fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    4
}

fn default_rw_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
/// Most samples in one request unless `max_samples_per_send` says otherwise: vmagent's block
/// size rather than Prometheus' 2,000. zstd and snappy find repeated label text only within
/// one request, so larger requests cost fewer bytes a sample (on the scrape benchmark a
/// quarter fewer with zstd; docs/performance.md). A request is sent at this size only when
/// that many samples are queued or `batch_send_deadline` passes, so an agent with few series
/// still sends what it has on time.
pub const DEFAULT_MAX_SAMPLES_PER_SEND: usize = 10_000;

fn default_batch_send_deadline() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}
fn default_queue_capacity() -> usize {
    100_000
}
/// First retry delay, also the Pushgateway's.
pub(super) fn default_min_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(30))
}
/// Longest retry delay, also the Pushgateway's.
pub(super) fn default_max_backoff() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// Validated remote-write endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWriteSettings {
    /// Name for metrics and logs.
    pub name: String,
    /// Write URL.
    pub url: reqwest::Url,
    /// Extra headers (names lower-cased; credentials held as secrets).
    pub headers: Vec<(String, HeaderText)>,
    /// Credentials.
    pub auth: Option<Auth>,
    /// TLS options.
    pub tls: TlsConfig,
    /// The proxies requests go through.
    pub proxy: ProxySettings,
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
    /// Body compression, as configured (the sender settles it with the receiver).
    pub compression: CompressionConfig,
    /// zstd level of every body, if configured (otherwise by body size).
    pub compression_level: Option<i32>,
    /// The message sent first (2.0 may fall back to 1.0).
    pub protocol: Protocol,
}

/// Default display name of a remote-write URL: host, port and path, never credentials.
pub fn endpoint_name(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

/// Validates the `[[remote_write]]` tables; errors name `remote_write[i].<key>`.
pub(super) fn validate_remote_writes(
    c: &mut Checker<'_>,
    remote_writes: &[RemoteWriteConfig],
) -> Vec<RemoteWriteSettings> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, rw) in remote_writes.iter().enumerate() {
        let key = format!("remote_write[{i}]");
        let Some(s) = validate_remote_write(c, &key, rw) else {
            continue;
        };
        if !names.insert(s.name.clone()) {
            c.fail(
                format!("{key}.name"),
                format!(
                    "{:?} is used by another remote_write; give each a distinct name",
                    s.name
                ),
            );
        }
        out.push(s);
    }
    out
}

/// Validates one receiver; `None` when its URL is unusable.
fn validate_remote_write(
    c: &mut Checker<'_>,
    key: &str,
    rw: &RemoteWriteConfig,
) -> Option<RemoteWriteSettings> {
    let url = c.url(format!("{key}.url"), rw.url.as_str());
    let headers = c.headers(&format!("{key}.headers"), &rw.headers);
    for (name, _) in &headers {
        if RESERVED_HEADERS.contains(&name.as_str()) {
            c.fail(
                format!("{key}.headers.{name}"),
                "is set by pushprobe as the remote-write protocol requires and cannot be overridden",
            );
        }
    }
    let auth = c.auth(key, &rw.basic_auth, &rw.bearer_token, &rw.bearer_token_file);
    let configured_auth = rw.basic_auth.is_some()
        || rw.bearer_token.is_some()
        || rw.bearer_token_file.is_some()
        || rw.oauth2.is_some();
    let sigv4 = rw.sigv4.as_ref().and_then(|s| validate_sigv4(c, key, s));
    if rw.sigv4.is_some() && configured_auth {
        c.fail(
            format!("{key}.sigv4"),
            "conflicts with basic_auth, bearer_token, bearer_token_file or oauth2; a request \
             carries one Authorization header, keep only one of them",
        );
    }
    let configured_auth = configured_auth || rw.sigv4.is_some();
    if configured_auth && headers.iter().any(|(name, _)| name == "authorization") {
        // The configured credentials would silently replace the header: say which one wins
        // instead of sending something the user did not expect.
        c.fail(
            format!("{key}.headers.authorization"),
            "conflicts with basic_auth, bearer_token, bearer_token_file, oauth2 or sigv4; keep only one of them",
        );
    }
    c.tls(&format!("{key}.tls"), &rw.tls);
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(rw));
    c.no_server_name(&format!("{key}.tls"), &rw.tls);
    // The sender reads the TLS files only for an https URL.
    if url.as_ref().is_some_and(|u| u.scheme() == "https") {
        c.tls_files(&format!("{key}.tls"), &rw.tls);
    }
    let timeout = c.positive(format!("{key}.timeout"), rw.timeout);
    // OAuth2 is one more kind of credentials, refused beside the others.
    let oauth2 = rw.oauth2.as_ref().and_then(|o| {
        let other =
            rw.basic_auth.is_some() || rw.bearer_token.is_some() || rw.bearer_token_file.is_some();
        validate_oauth2(c, &format!("{key}.oauth2"), o, other, timeout)
    });
    let auth = oauth2.map(|o| Auth::OAuth2(Box::new(o))).or(auth);
    let batch_send_deadline =
        c.positive(format!("{key}.batch_send_deadline"), rw.batch_send_deadline);
    let min_backoff = c.positive(format!("{key}.min_backoff"), rw.min_backoff);
    let max_backoff = c.positive(format!("{key}.max_backoff"), rw.max_backoff);
    if min_backoff > max_backoff {
        c.fail(format!("{key}.min_backoff"), "must not exceed max_backoff");
    }
    // Unset, it fits a smaller queue rather than refusing it: a queue sized for the old
    // default of 2,000 keeps working.
    let max_samples_per_send = rw
        .max_samples_per_send
        .unwrap_or(DEFAULT_MAX_SAMPLES_PER_SEND.min(rw.queue_capacity).max(1));
    if max_samples_per_send == 0 {
        c.fail(format!("{key}.max_samples_per_send"), "must be > 0");
    }
    if rw.queue_capacity < max_samples_per_send {
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
    if let Some(level) = rw.compression_level {
        if !ZSTD_LEVELS.contains(&level) {
            c.fail(
                format!("{key}.compression_level"),
                format!(
                    "{level} is not a zstd level pushprobe uses; give {} to {} (higher: fewer \
                     bytes for more CPU), or leave it out for the default",
                    ZSTD_LEVELS.start(),
                    ZSTD_LEVELS.end()
                ),
            );
        }
    }
    let protocol = match rw.protobuf_message.as_deref() {
        None => Protocol::V1,
        Some(m) => Protocol::from_message(m).unwrap_or_else(|| {
            c.fail(
                format!("{key}.protobuf_message"),
                format!("{m:?} is not a remote-write message; use {MESSAGE_V1:?} (1.0, the default) or {MESSAGE_V2:?} (2.0)"),
            );
            Protocol::V1
        }),
    };
    let url = url?;
    let name = rw.name.clone().unwrap_or_else(|| endpoint_name(&url));
    Some(RemoteWriteSettings {
        name,
        url,
        headers,
        auth: sigv4.map(Auth::SigV4).or(auth),
        tls: rw.tls.clone(),
        proxy,
        timeout,
        max_samples_per_send,
        batch_send_deadline,
        queue_capacity: rw.queue_capacity,
        min_backoff,
        max_backoff,
        min_shards: rw.min_shards,
        max_shards: rw.max_shards,
        accepts_out_of_order: rw.accepts_out_of_order,
        max_catchup_bytes_per_second: rw.max_catchup_bytes_per_second.map(|b| b.0),
        compression: rw.compression,
        compression_level: rw.compression_level,
        protocol,
    })
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use std::path::Path;

    use super::super::load;
    use super::super::tests::{parse, GOOD};
    use super::*;

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
    fn request_size_defaults_to_ten_thousand_within_a_smaller_queue() {
        let with = |extra: &str| {
            GOOD.replace(
                "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
                &format!("headers = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n{extra}"),
            )
        };
        let size = |extra: &str| parse(&with(extra)).unwrap().remote_write[0].max_samples_per_send;
        assert_eq!(size(""), DEFAULT_MAX_SAMPLES_PER_SEND);
        assert_eq!(size("queue_capacity = 5000"), 5000);
        assert_eq!(size("max_samples_per_send = 2000"), 2000);
        let e = parse(&with("queue_capacity = 5000\nmax_samples_per_send = 6000")).unwrap_err();
        assert!(e.contains("remote_write[0].queue_capacity"), "{e}");
        let e = parse(&with("max_samples_per_send = 0")).unwrap_err();
        assert!(
            e.contains("remote_write[0].max_samples_per_send: must be > 0"),
            "{e}"
        );
    }

    #[test]
    fn compression_defaults_to_auto_and_names_the_key_when_unknown() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.remote_write[0].compression, CompressionConfig::Auto);
        let with = |value: &str| {
            GOOD.replace(
                "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
                &format!("compression = {value:?}"),
            )
        };
        for (text, want) in [
            ("auto", CompressionConfig::Auto),
            ("snappy", CompressionConfig::Snappy),
            ("zstd", CompressionConfig::Zstd),
        ] {
            assert_eq!(
                parse(&with(text)).unwrap().remote_write[0].compression,
                want
            );
        }
        let e = parse(&with("gzip")).unwrap_err();
        assert!(
            e.contains("remote_write[0].compression: unknown value \"gzip\"")
                && e.contains("\"auto\", \"snappy\", \"zstd\""),
            "{e}"
        );
        let e = parse(&GOOD.replace(
            "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
            "headers = { \"X-VictoriaMetrics-Remote-Write-Version\" = \"1\" }",
        ))
        .unwrap_err();
        assert!(
            e.contains("remote_write[0].headers.x-victoriametrics-remote-write-version"),
            "{e}"
        );
    }

    #[test]
    fn compression_level_is_unset_by_default_and_refused_out_of_range() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.remote_write[0].compression_level, None);
        let with = |extra: &str| {
            GOOD.replace(
                "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
                &format!("headers = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n{extra}"),
            )
        };
        for level in [1, 5, 19] {
            let s = parse(&with(&format!("compression_level = {level}"))).unwrap();
            assert_eq!(s.remote_write[0].compression_level, Some(level));
        }
        // Accepted with snappy too (it is ignored there), so switching back is one key.
        let s = parse(&with("compression = \"snappy\"\ncompression_level = 4")).unwrap();
        assert_eq!(s.remote_write[0].compression_level, Some(4));
        for level in [0, -1, 20, 22] {
            let e = parse(&with(&format!("compression_level = {level}"))).unwrap_err();
            assert!(
                e.contains(&format!(
                    "remote_write[0].compression_level: {level} is not a zstd level"
                )) && e.contains("1 to 19"),
                "{e}"
            );
        }
        let e = parse(&with("compression_level = \"high\"")).unwrap_err();
        assert!(e.contains("compression_level"), "{e}");
    }

    #[test]
    fn protobuf_message_defaults_to_1_0_and_names_both_values_when_wrong() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.remote_write[0].protocol, Protocol::V1);
        let with = |value: &str| {
            GOOD.replace(
                "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
                &format!("protobuf_message = {value:?}"),
            )
        };
        let s = parse(&with("io.prometheus.write.v2.Request")).unwrap();
        assert_eq!(s.remote_write[0].protocol, Protocol::V2);
        let s = parse(&with("prometheus.WriteRequest")).unwrap();
        assert_eq!(s.remote_write[0].protocol, Protocol::V1);
        let e = parse(&with("v2")).unwrap_err();
        assert!(
            e.contains("remote_write[0].protobuf_message: \"v2\" is not a remote-write message")
                && e.contains("\"prometheus.WriteRequest\"")
                && e.contains("\"io.prometheus.write.v2.Request\""),
            "{e}"
        );
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
            // Read now (a bad path fails at start) and watched for rotation from then on.
            let Some(Auth::Bearer(token)) = &s.remote_write[0].auth else {
                panic!("bearer_token_file gives a bearer token");
            };
            assert_eq!(token.current(), Secret::new("s3cr3t-token"));
            assert!(matches!(token, crate::auth::SecretSource::File(_)));
            assert!(!format!("{s:?}").contains("s3cr3t"));
            Ok(())
        });
    }
}
