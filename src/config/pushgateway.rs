//! `[[pushgateway]]`: Pushgateway groups that receive the latest results; the schema and its
//! validation into [`PushgatewaySettings`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keypath::join_key;
use super::oauth2::{validate_oauth2, OAuth2Config};
use super::{
    endpoint_name, Auth, BasicAuthConfig, Checker, ConfigDuration, ConnectHeadersConfig, TlsConfig,
    UrlConfig,
};
use crate::http_client::proxy::ProxySettings;
use crate::secret::Secret;
use crate::series::is_valid_label_name;

fn default_pg_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
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
    pub url: UrlConfig,
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
    /// Timeout of one request.
    #[serde(default = "default_pg_timeout")]
    pub timeout: ConfigDuration,
    /// First retry delay.
    #[serde(default = "super::remote_write::default_min_backoff")]
    pub min_backoff: ConfigDuration,
    /// Longest retry delay.
    #[serde(default = "super::remote_write::default_max_backoff")]
    pub max_backoff: ConfigDuration,
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
    /// The proxies requests go through.
    pub proxy: ProxySettings,
    /// Request timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

/// Validates the `[[pushgateway]]` tables; errors name `pushgateway[i].<key>`.
pub(super) fn validate_pushgateways(
    c: &mut Checker<'_>,
    pushgateways: &[PushgatewayConfig],
) -> Vec<PushgatewaySettings> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, pg) in pushgateways.iter().enumerate() {
        let key = format!("pushgateway[{i}]");
        let Some(s) = validate_pushgateway(c, &key, pg) else {
            continue;
        };
        if !names.insert(s.name.clone()) {
            c.fail(
                format!("{key}.name"),
                format!(
                    "{:?} is used by another pushgateway; give each a distinct name",
                    s.name
                ),
            );
        }
        out.push(s);
    }
    out
}

/// Validates one group; `None` when its URL is unusable.
fn validate_pushgateway(
    c: &mut Checker<'_>,
    key: &str,
    pg: &PushgatewayConfig,
) -> Option<PushgatewaySettings> {
    let url = c.url(format!("{key}.url"), pg.url.as_str());
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
                join_key(&format!("{key}.grouping"), name),
                "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __",
            );
        }
    }
    let auth = c.auth(key, &pg.basic_auth, &pg.bearer_token, &pg.bearer_token_file);
    c.tls(&format!("{key}.tls"), &pg.tls);
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(pg));
    c.no_server_name(&format!("{key}.tls"), &pg.tls);
    // The sink reads the TLS files only for an https URL.
    if url.as_ref().is_some_and(|u| u.scheme() == "https") {
        c.tls_files(&format!("{key}.tls"), &pg.tls);
    }
    let timeout = c.positive(format!("{key}.timeout"), pg.timeout);
    // OAuth2 is one more kind of credentials, refused beside the others.
    let oauth2 = pg.oauth2.as_ref().and_then(|o| {
        let other =
            pg.basic_auth.is_some() || pg.bearer_token.is_some() || pg.bearer_token_file.is_some();
        validate_oauth2(c, &format!("{key}.oauth2"), o, other, timeout)
    });
    let auth = oauth2.map(|o| Auth::OAuth2(Box::new(o))).or(auth);
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
        proxy,
        timeout,
        min_backoff,
        max_backoff,
    })
}

// figment's Jail closures return figment's own (large) error type; that is its API, not ours.
#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::super::tests::{parse, GOOD};
    use super::*;

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
}
