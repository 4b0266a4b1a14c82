//! The shared validation helpers: a [`Checker`] collects every problem (key path, message,
//! source) instead of stopping at the first, and checks the value types several sections
//! share: durations, URLs, headers, TLS files, credentials, label names, histogram buckets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::keypath::join_key;
use super::{Auth, BasicAuthConfig, ConfigDuration, ConfigError, HeadersConfig, TlsConfig};
use crate::auth::{SecretFile, SecretSource};
use crate::secret::{HeaderText, Secret};
use crate::series::is_valid_label_name;

/// Default latency histogram buckets (seconds), as the blackbox-style probes use.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Longest `timeout`: one request or probe run taking longer is broken, and a limit this size
/// mostly catches a unit typo (`10h` for `10s`).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Longest `…interval`: something done less often than daily is no monitoring.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Collects validation errors so that one run reports all of them.
pub(super) struct Checker<'a> {
    /// Where the configuration came from, for every message.
    pub(super) source_name: &'a str,
    /// The problems found so far.
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker with no errors yet, for the configuration read from `source_name`.
    pub(super) fn new(source_name: &'a str) -> Self {
        Checker {
            source_name,
            errors: Vec::new(),
        }
    }

    /// Records a problem at `key`.
    pub(super) fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            source_name: self.source_name.to_string(),
        });
    }

    /// Reads a duration that must not be zero, within its key's limit.
    pub(super) fn positive(&mut self, key: String, d: ConfigDuration) -> Duration {
        if d.0.is_zero() {
            self.fail(key, "must be > 0");
            return d.0;
        }
        self.bounded(key, d)
    }

    /// Reads a duration within its key's limit: [`MAX_TIMEOUT`] for a `timeout`,
    /// [`MAX_INTERVAL`] for an `…interval`; parsing bounds every other one.
    pub(super) fn bounded(&mut self, key: String, d: ConfigDuration) -> Duration {
        let field = key.rsplit('.').next().unwrap_or_default();
        let limit = if field == "timeout" {
            Some((MAX_TIMEOUT, "a timeout"))
        } else if field.ends_with("interval") {
            Some((MAX_INTERVAL, "an interval"))
        } else {
            None
        };
        if let Some((max, what)) = limit.filter(|(max, _)| d.0 > *max) {
            self.fail(
                key,
                format!(
                    "{d} is longer than {} (the longest {what} may be)",
                    ConfigDuration(max)
                ),
            );
        }
        d.0
    }

    /// Reads an http or https URL with a host.
    pub(super) fn url(&mut self, key: String, text: &str) -> Option<reqwest::Url> {
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

    /// Reads request headers; names come back lower-cased, and the value of a header that
    /// names a credential comes back as a secret.
    pub(super) fn headers(
        &mut self,
        key: &str,
        headers: &HeadersConfig,
    ) -> Vec<(String, HeaderText)> {
        let mut out = Vec::new();
        for (name, value) in headers.iter() {
            let k = join_key(key, name);
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.fail(k, "not a valid HTTP header name");
            } else if http::HeaderValue::from_str(value).is_err() {
                self.fail(k, "value has characters not allowed in an HTTP header");
            } else {
                out.push((
                    name.to_ascii_lowercase(),
                    HeaderText::for_header(name, value),
                ));
            }
        }
        out
    }

    /// Checks that the TLS files exist and that a certificate comes with its key.
    pub(super) fn tls(&mut self, key: &str, tls: &TlsConfig) {
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

    /// Loads the TLS files as the connection will (PEM certificates and key, and their
    /// combination), so that a file that is not valid PEM fails here, under its key, instead
    /// of when the agent starts. Call it after [`Checker::tls`], for connections that read
    /// the files: every probe and scrape, and sinks with an https URL.
    pub(super) fn tls_files(&mut self, key: &str, tls: &TlsConfig) {
        let files = [&tls.ca_file, &tls.cert_file, &tls.key_file];
        let set: Vec<&PathBuf> = files.iter().filter_map(|f| f.as_ref()).collect();
        // Missing files and a lone cert_file were reported by `tls`.
        if set.is_empty()
            || !set.iter().all(|p| p.is_file())
            || tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return;
        }
        match crate::tls::client_config(tls, &[]) {
            Ok(_) => {}
            Err(crate::tls::TlsError::File {
                what,
                path,
                message,
            }) => self.fail(format!("{key}.{what}"), format!("{path}: {message}")),
            Err(e) => self.fail(key.to_string(), e.to_string()),
        }
    }

    /// Resolves credentials (reading their files now, so a bad path fails at start; they are
    /// re-read when they change) and refuses more than one method.
    pub(super) fn auth(
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
            auth = self.basic_auth(key, b);
        }
        if let Some(t) = bearer_token {
            auth = Some(Auth::Bearer(t.clone().into()));
        }
        if let Some(f) = bearer_token_file {
            if let Some(token) = self.secret_file(format!("{key}.bearer_token_file"), f) {
                auth = Some(Auth::Bearer(token));
            }
        }
        auth
    }

    /// Opens a credential file, reading it now so that a bad path fails at start; an empty
    /// file is refused too (systemd hands over an empty credential when its source is missing).
    pub(super) fn secret_file(&mut self, key: String, path: &Path) -> Option<SecretSource> {
        match SecretFile::open(key.clone(), path) {
            Ok(f) => Some(SecretSource::File(f)),
            Err(e) => {
                self.fail(key, e.to_string());
                None
            }
        }
    }

    /// Resolves `basic_auth`, whose password is inline or in a file, never both.
    fn basic_auth(&mut self, key: &str, b: &BasicAuthConfig) -> Option<Auth> {
        let password = match (&b.password, &b.password_file) {
            (Some(p), None) => p.clone().into(),
            (None, Some(f)) => self.secret_file(format!("{key}.basic_auth.password_file"), f)?,
            _ => {
                self.fail(
                    format!("{key}.basic_auth"),
                    "give exactly one of password, password_file",
                );
                return None;
            }
        };
        Some(Auth::Basic {
            username: b.username.clone(),
            password,
        })
    }

    /// The sinks' HTTP client verifies the URL's own host name, so a `server_name` there would
    /// be silently ignored: refuse it instead.
    pub(super) fn no_server_name(&mut self, key: &str, tls: &TlsConfig) {
        if tls.server_name.is_some() {
            self.fail(
                format!("{key}.server_name"),
                "is supported for probes only; use a url whose host the certificate covers",
            );
        }
    }

    /// Checks label names and values; the pairs come back in name order.
    pub(super) fn labels(
        &mut self,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        for (name, value) in labels {
            if !is_valid_label_name(name) || name.starts_with("__") {
                self.fail(
                    join_key(key, name),
                    "label names must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __",
                );
            } else if value.is_empty() {
                self.fail(join_key(key, name), "label value must not be empty");
            }
        }
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Checks histogram bounds: finite, strictly ascending, not empty.
pub(super) fn validate_buckets(
    c: &mut Checker<'_>,
    key: &str,
    buckets: Option<&[f64]>,
) -> Arc<[f64]> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, GOOD};

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
