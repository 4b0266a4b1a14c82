//! Keys shared by every section that opens HTTP connections (remote write, Pushgateway,
//! probes, scrapes): the URL and `headers` as written, `tls` and the credentials, and
//! [`Auth`], the credentials once resolved. The [`Checker`](super::checker::Checker)
//! validates them.
//!
//! A URL may hold a password and a header may hold a token, so [`UrlConfig`] and
//! [`HeadersConfig`] print (`Debug`, and `Serialize` for `config check`) with those replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::{is_credential_header, redact_url_text, Secret};

/// A URL as written in the file; printed with its password replaced.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct UrlConfig(String);

impl UrlConfig {
    /// The URL as written, for parsing.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UrlConfig {
    fn from(text: &str) -> Self {
        UrlConfig(text.to_string())
    }
}

impl fmt::Debug for UrlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url_text(&self.0), f)
    }
}

impl Serialize for UrlConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url_text(&self.0))
    }
}

/// Request headers as written in the file (name → value); the value of a header that names
/// a credential prints as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct HeadersConfig(BTreeMap<String, String>);

impl HeadersConfig {
    /// The headers as written, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// The value as printed: the value itself, or `<redacted>` for a credential.
    fn shown<'a>(name: &str, value: &'a str) -> &'a str {
        if is_credential_header(name) {
            "<redacted>"
        } else {
            value
        }
    }
}

impl<const N: usize> From<[(&str, &str); N]> for HeadersConfig {
    fn from(pairs: [(&str, &str); N]) -> Self {
        HeadersConfig(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl fmt::Debug for HeadersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, v)| (n, Self::shown(n, v))))
            .finish()
    }
}

impl Serialize for HeadersConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, v)| (n, Self::shown(n, v))))
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

/// Credentials once resolved; they live in [`crate::auth`], which every client builds its
/// `Authorization` header with.
pub use crate::auth::Auth;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_print_without_credentials() {
        let url = UrlConfig::from("http://u:pw-1@h:9090/w");
        assert_eq!(format!("{url:?}"), "\"http://u:xxxxx@h:9090/w\"");
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            "\"http://u:xxxxx@h:9090/w\""
        );
        assert_eq!(url.as_str(), "http://u:pw-1@h:9090/w");
        let headers = HeadersConfig::from([("X-Api-Key", "k-1"), ("X-Scope-OrgID", "team-a")]);
        let printed = format!("{headers:?} {}", serde_json::to_string(&headers).unwrap());
        assert!(!printed.contains("k-1"), "{printed}");
        assert!(printed.contains("team-a"), "{printed}");
    }
}
