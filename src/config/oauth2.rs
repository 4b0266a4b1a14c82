//! The `oauth2` block (Prometheus' keys): OAuth 2.0 client credentials (RFC 6749 §4.4) for
//! remote write, the Pushgateway, scrape jobs and HTTP probes. The schema, its validation into
//! [`OAuth2Settings`], and the check that a section uses one kind of credentials only.
//!
//! The client secret is a [`Secret`], so `config check` and `Debug` never show it; a
//! `client_secret_file` is opened here, so a wrong path fails at start, as a
//! [`SecretFile`](crate::auth::SecretFile): each token request uses its current contents, so a
//! rotated secret is picked up, and the last good one is kept if the file goes away.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keypath::join_key;
use super::{Checker, ConnectHeadersConfig, TlsConfig, UrlConfig};
use crate::auth::SecretSource;
use crate::http_client::proxy::ProxySettings;
use crate::secret::Secret;

/// Form parameters the token request sets itself; `endpoint_params` may not replace them
/// (`grant_type` may be, as in Prometheus, for token endpoints that want another grant name).
pub const RESERVED_PARAMS: &[&str] = &["scope", "client_id", "client_secret"];

/// The `oauth2` block of a section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The client's identifier at the token endpoint.
    pub client_id: String,
    /// The client secret, inline (prefer `client_secret_file`).
    pub client_secret: Option<Secret>,
    /// File whose contents (trailing newline removed) are the client secret; re-read before
    /// every token request.
    pub client_secret_file: Option<PathBuf>,
    /// The token endpoint, e.g. `https://auth.example.com/oauth2/token`.
    pub token_url: UrlConfig,
    /// Scopes asked for (sent space-separated as `scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Extra form parameters of the token request (e.g. `audience`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoint_params: BTreeMap<String, String>,
    /// TLS options of the connection to the token endpoint (not the receiver's).
    #[serde(default)]
    pub tls: TlsConfig,
    /// The `http://` proxy token requests go through (see docs/proxies.md); user info: its
    /// credentials. The section's own proxy keys do not apply to the token endpoint.
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
}

/// A validated `oauth2` block: what a token source needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Settings {
    /// The block's key path, e.g. `remote_write[0].oauth2`, for every message about it.
    pub key: String,
    /// Client identifier.
    pub client_id: String,
    /// Client secret, inline or from a file re-read when it changes.
    pub client_secret: SecretSource,
    /// Token endpoint.
    pub token_url: reqwest::Url,
    /// Scopes asked for.
    pub scopes: Vec<String>,
    /// Extra form parameters, in name order.
    pub endpoint_params: Vec<(String, String)>,
    /// TLS options for the token endpoint.
    pub tls: TlsConfig,
    /// The proxies token requests go through.
    pub proxy: ProxySettings,
    /// Longest one token request may take (the section's request timeout).
    pub timeout: Duration,
}

/// Validates `section.oauth2` (at `key`, e.g. `remote_write[0].oauth2`); `other_auth` says
/// whether the section also sets `basic_auth`, `bearer_token` or `bearer_token_file`, which
/// cannot go with it. `timeout` bounds each token request.
pub(super) fn validate_oauth2(
    c: &mut Checker<'_>,
    key: &str,
    o: &OAuth2Config,
    other_auth: bool,
    timeout: Duration,
) -> Option<OAuth2Settings> {
    if other_auth {
        c.fail(
            key,
            "cannot be used with basic_auth, bearer_token or bearer_token_file; keep only one way to authenticate",
        );
    }
    if o.client_id.is_empty() {
        c.fail(format!("{key}.client_id"), "must not be empty");
    }
    let client_secret = match (&o.client_secret, &o.client_secret_file) {
        (Some(s), None) => {
            if s.is_empty() {
                c.fail(format!("{key}.client_secret"), "must not be empty");
            }
            Some(SecretSource::Inline(s.clone()))
        }
        (None, Some(path)) => c.secret_file(format!("{key}.client_secret_file"), path),
        _ => {
            c.fail(key, "give exactly one of client_secret, client_secret_file");
            None
        }
    };
    let token_url = c.url(format!("{key}.token_url"), o.token_url.as_str());
    for scope in &o.scopes {
        // RFC 6749 §3.3: scopes are space-separated, so one cannot hold a space.
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            c.fail(
                format!("{key}.scopes"),
                format!("{scope:?} is not a scope: scopes are non-empty and have no spaces"),
            );
        }
    }
    for name in o.endpoint_params.keys() {
        if RESERVED_PARAMS.contains(&name.as_str()) {
            c.fail(
                join_key(&format!("{key}.endpoint_params"), name),
                "is set by pushprobe from client_id, client_secret and scopes; use those keys",
            );
        }
    }
    c.tls(&format!("{key}.tls"), &o.tls);
    c.no_server_name(&format!("{key}.tls"), &o.tls);
    if token_url.as_ref().is_some_and(|u| u.scheme() == "https") {
        c.tls_files(&format!("{key}.tls"), &o.tls);
    }
    let proxy = super::proxy::validate_proxy(c, key, &super::proxy::proxy_config!(o));
    Some(OAuth2Settings {
        key: key.to_string(),
        client_id: o.client_id.clone(),
        client_secret: client_secret?,
        token_url: token_url?,
        scopes: o.scopes.clone(),
        endpoint_params: o
            .endpoint_params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tls: o.tls.clone(),
        proxy,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, parse_in_jail, GOOD};
    use super::*;
    use crate::auth::Auth;

    /// `GOOD` with `block` added to its remote_write table.
    fn with_rw(block: &str) -> String {
        GOOD.replace(
            "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
            &format!("headers = {{ \"X-Scope-OrgID\" = \"team-a\" }}\n{block}"),
        )
    }

    #[test]
    fn a_block_with_a_secret_file_validates_and_never_prints_the_secret() {
        let toml = with_rw(
            r#"oauth2 = { client_id = "agent-1", client_secret_file = "secret", token_url = "https://auth.example.com/token", scopes = ["metrics:write", "b"], endpoint_params = { audience = "mimir" } }"#,
        );
        let s = parse_in_jail(&toml, &[], &[("secret", "cs-very-secret\n")]).unwrap();
        let Some(Auth::OAuth2(o)) = &s.remote_write[0].auth else {
            panic!("oauth2 credentials");
        };
        assert_eq!(o.key, "remote_write[0].oauth2");
        assert_eq!(o.client_id, "agent-1");
        assert_eq!(o.client_secret.current().expose(), "cs-very-secret");
        assert_eq!(o.scopes, ["metrics:write", "b"]);
        assert_eq!(o.endpoint_params, [("audience".into(), "mimir".into())]);
        assert_eq!(o.timeout, Duration::from_secs(30));

        let inline = with_rw(
            r#"oauth2 = { client_id = "a", client_secret = "cs-inline-secret", token_url = "http://127.0.0.1:1/token" }"#,
        );
        let s = parse(&inline).unwrap();
        let shown = format!("{:?} {}", s, toml::to_string(&s.file).unwrap_or_default());
        assert!(!shown.contains("cs-inline-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn bad_blocks_name_their_keys() {
        for (block, want) in [
            (
                r#"oauth2 = { client_id = "a", token_url = "http://h/t" }"#,
                "remote_write[0].oauth2: give exactly one of client_secret, client_secret_file",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret = "s", client_secret_file = "f", token_url = "http://h/t" }"#,
                "remote_write[0].oauth2: give exactly one of",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret = "s", token_url = "ftp://h/t" }"#,
                "remote_write[0].oauth2.token_url: scheme must be http or https",
            ),
            (
                r#"oauth2 = { client_id = "", client_secret = "s", token_url = "http://h/t" }"#,
                "remote_write[0].oauth2.client_id: must not be empty",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret = "s", token_url = "http://h/t", scopes = ["a b"] }"#,
                "remote_write[0].oauth2.scopes: \"a b\" is not a scope",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret = "s", token_url = "http://h/t", endpoint_params = { scope = "x" } }"#,
                "remote_write[0].oauth2.endpoint_params.scope: is set by pushprobe",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret_file = "/nonexistent/cs", token_url = "http://h/t" }"#,
                "remote_write[0].oauth2.client_secret_file: cannot read /nonexistent/cs",
            ),
            (
                "bearer_token = \"t\"\noauth2 = { client_id = \"a\", client_secret = \"s\", token_url = \"http://h/t\" }",
                "remote_write[0].oauth2: cannot be used with basic_auth, bearer_token or bearer_token_file",
            ),
            (
                r#"oauth2 = { client_id = "a", client_secret = "s", token_url = "http://h/t", client_secret_typo = "x" }"#,
                "client_secret_typo",
            ),
        ] {
            let e = parse(&with_rw(block)).unwrap_err();
            assert!(e.contains(want), "{block}\n{e}");
            assert!(!e.contains("cs-"), "{e}");
        }
    }

    #[test]
    fn every_http_section_takes_the_block() {
        let block = r#"oauth2 = { client_id = "a", client_secret = "s", token_url = "http://127.0.0.1:1/t" }"#;
        let toml = format!(
            "{}\n[[pushgateway]]\nurl = \"http://127.0.0.1:9091\"\njob = \"j\"\n{block}\n\n\
             [[scrape]]\njob = \"node\"\ntargets = [\"127.0.0.1:9100\"]\n{block}\n",
            GOOD.replace("timeout = \"5s\"", &format!("timeout = \"5s\"\n{block}"))
        );
        let s = parse(&toml).unwrap();
        let key = |auth: &Option<Auth>| match auth {
            Some(Auth::OAuth2(o)) => o.key.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(key(&s.pushgateway[0].auth), "pushgateway[0].oauth2");
        assert_eq!(key(&s.scrapes[0].auth), "scrape[0].oauth2");
        let crate::config::ProbeSettings::Http(p) = &s.probes[0] else {
            panic!("an http probe");
        };
        assert_eq!(key(&p.auth), "probe[0].oauth2");
    }
}
