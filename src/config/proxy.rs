//! The proxy keys every section that opens HTTP connections shares (remote write,
//! Pushgateway, probes, scrapes), with Prometheus' names and meaning: `proxy_url`,
//! `no_proxy`, `proxy_from_environment` and `proxy_connect_header`; plus
//! `proxy_password_file`, the password of `proxy_url`'s user kept out of the file. Each
//! section declares the keys in its own table (so that a misspelt key is still reported with
//! the section's list of keys, which `serde(flatten)` would lose), gathers them into a
//! [`ProxyConfig`] with `proxy_config!`, and [`validate_proxy`] turns that into the
//! [`ProxySettings`] both HTTP clients route by.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::keypath::join_key;
use super::{read_secret_file, Checker, UrlConfig};
use crate::auth::Auth;
use crate::http_client::proxy::{NoProxy, Proxy, ProxySettings};
use crate::secret::{is_credential_header, HeaderText, Secret};

/// Gathers a section's proxy keys (fields of the same names) into a [`ProxyConfig`].
macro_rules! proxy_config {
    ($section:expr) => {
        $crate::config::ProxyConfig {
            proxy_url: $section.proxy_url.clone(),
            no_proxy: $section.no_proxy.clone(),
            proxy_from_environment: $section.proxy_from_environment,
            proxy_connect_header: $section.proxy_connect_header.clone(),
            proxy_password_file: $section.proxy_password_file.clone(),
        }
    };
}
pub(super) use proxy_config;

/// The proxy keys of one section. Everything unset: requests go direct.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyConfig {
    /// The `http://` proxy every request goes through (user info: its credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<UrlConfig>,
    /// Comma-separated hosts, domains, IP addresses and CIDR ranges reached directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    /// Take the proxy from `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (or their lowercase
    /// forms) instead of `proxy_url`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy_from_environment: bool,
    /// Headers sent with every `CONNECT` (a header's value, or a list of values).
    #[serde(skip_serializing_if = "ConnectHeadersConfig::is_empty")]
    pub proxy_connect_header: ConnectHeadersConfig,
    /// File holding the password of `proxy_url`'s user (a pushprobe addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_password_file: Option<PathBuf>,
}

/// `proxy_connect_header` as written: name → value or list of values; the values of a header
/// that names a credential print as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnectHeadersConfig(BTreeMap<String, HeaderValues>);

/// One header's value, or several (Prometheus writes a list).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum HeaderValues {
    One(String),
    Many(Vec<String>),
}

impl HeaderValues {
    fn values(&self) -> &[String] {
        match self {
            HeaderValues::One(v) => std::slice::from_ref(v),
            HeaderValues::Many(v) => v,
        }
    }
}

impl ConnectHeadersConfig {
    /// Whether no header is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> BTreeMap<&str, Vec<&str>> {
        self.0
            .iter()
            .map(|(name, values)| {
                let shown = values
                    .values()
                    .iter()
                    .map(|v| {
                        if is_credential_header(name) {
                            "<redacted>"
                        } else {
                            v.as_str()
                        }
                    })
                    .collect();
                (name.as_str(), shown)
            })
            .collect()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for ConnectHeadersConfig {
    fn from(pairs: [(&str, &str); N]) -> Self {
        ConnectHeadersConfig(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), HeaderValues::One(v.to_string())))
                .collect(),
        )
    }
}

impl fmt::Debug for ConnectHeadersConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown(), f)
    }
}

impl Serialize for ConnectHeadersConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

/// Validates the proxy keys of the section at `key`, reading the process environment when
/// `proxy_from_environment` is set.
pub(super) fn validate_proxy(c: &mut Checker<'_>, key: &str, p: &ProxyConfig) -> ProxySettings {
    validate_proxy_with(c, key, p, &|name| std::env::var(name).ok())
}

/// [`validate_proxy`] with the environment given as a lookup, for tests.
fn validate_proxy_with(
    c: &mut Checker<'_>,
    key: &str,
    p: &ProxyConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> ProxySettings {
    if p.proxy_from_environment && p.proxy_url.is_some() {
        c.fail(
            format!("{key}.proxy_from_environment"),
            "cannot be set together with proxy_url; keep only one of them",
        );
        return ProxySettings::default();
    }
    if p.proxy_url.is_none() && !p.proxy_from_environment {
        for (field, set) in [
            ("no_proxy", p.no_proxy.is_some()),
            ("proxy_connect_header", !p.proxy_connect_header.is_empty()),
            ("proxy_password_file", p.proxy_password_file.is_some()),
        ] {
            if set {
                c.fail(
                    format!("{key}.{field}"),
                    "has no effect without proxy_url or proxy_from_environment; set one of them",
                );
            }
        }
        return ProxySettings::default();
    }
    let connect_headers = connect_headers(c, key, &p.proxy_connect_header);
    if p.proxy_from_environment {
        for (field, set) in [
            ("no_proxy", p.no_proxy.is_some()),
            ("proxy_password_file", p.proxy_password_file.is_some()),
        ] {
            if set {
                c.fail(
                    format!("{key}.{field}"),
                    "cannot be set with proxy_from_environment, which reads it from the \
                     environment; set proxy_url instead",
                );
            }
        }
        return from_environment(c, key, connect_headers, env);
    }
    let Some(url_text) = &p.proxy_url else {
        return ProxySettings::default();
    };
    let url_key = format!("{key}.proxy_url");
    let Some(mut proxy) = parse_proxy_url(url_text.as_str())
        .map_err(|problem| c.fail(url_key.clone(), problem))
        .ok()
    else {
        return ProxySettings::default();
    };
    if let Some(path) = &p.proxy_password_file {
        let file_key = format!("{key}.proxy_password_file");
        match &mut proxy.auth {
            Some(Auth::Basic { password, .. }) if password.current().is_empty() => {
                match read_secret_file(path) {
                    Ok(s) if s.is_empty() => {
                        c.fail(file_key, format!("{} is empty", path.display()))
                    }
                    Ok(s) => *password = s.into(),
                    Err(e) => c.fail(file_key, e.to_string()),
                }
            }
            Some(_) => c.fail(
                file_key,
                "proxy_url already holds a password; keep only one of them",
            ),
            None => c.fail(
                file_key,
                "needs the user name in proxy_url, e.g. http://user@proxy.example:3128",
            ),
        }
    }
    proxy.connect_headers = connect_headers;
    ProxySettings {
        http: Some(proxy.clone()),
        https: Some(proxy),
        no_proxy: NoProxy::parse(p.no_proxy.as_deref().unwrap_or_default()),
    }
}

/// The proxies named by `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (the upper-case name
/// first, as Go reads them); a variable that does not hold a usable proxy is an error.
fn from_environment(
    c: &mut Checker<'_>,
    key: &str,
    connect_headers: Vec<(String, HeaderText)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> ProxySettings {
    let var = |upper: &str| {
        [upper.to_string(), upper.to_ascii_lowercase()]
            .into_iter()
            .find_map(|name| env(&name).filter(|v| !v.is_empty()).map(|v| (name, v)))
    };
    let mut proxy = |upper: &str| {
        let (name, value) = var(upper)?;
        // Environment proxies are often written without a scheme (`proxy:3128`).
        let text = if value.contains("://") {
            value
        } else {
            format!("http://{value}")
        };
        match parse_proxy_url(&text) {
            Ok(mut p) => {
                p.connect_headers = connect_headers.clone();
                Some(p)
            }
            Err(problem) => {
                c.fail(
                    format!("{key}.proxy_from_environment"),
                    format!("the environment variable {name}: {problem}"),
                );
                None
            }
        }
    };
    let http = proxy("HTTP_PROXY");
    let https = proxy("HTTPS_PROXY");
    let no_proxy = var("NO_PROXY").map(|(_, v)| v).unwrap_or_default();
    ProxySettings {
        http,
        https,
        no_proxy: NoProxy::parse(&no_proxy),
    }
}

/// Reads a proxy URL: `http://` only, with a host; user info becomes its basic credentials.
/// The message never quotes the URL's password.
fn parse_proxy_url(text: &str) -> Result<Proxy, String> {
    let url = reqwest::Url::parse(text).map_err(|e| {
        format!(
            "{:?} is not a valid URL: {e}",
            crate::secret::redact_url_text(text)
        )
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "scheme {:?} is not supported: only http:// proxies are (an https target is \
             still reached through a CONNECT tunnel, encrypted end to end)",
            url.scheme()
        ));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err("the proxy URL has no host".into());
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let auth = (!url.username().is_empty() || url.password().is_some()).then(|| Auth::Basic {
        username: decode(url.username()),
        password: Secret::new(decode(url.password().unwrap_or_default())).into(),
    });
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = reqwest::Url::parse(&format!("http://{host}:{port}"))
        .map_err(|e| format!("the proxy's host and port do not form a URL: {e}"))?;
    Ok(Proxy {
        url: bare,
        auth,
        connect_headers: Vec::new(),
    })
}

/// Reads `proxy_connect_header`: valid names and values, credentials held as secrets.
fn connect_headers(
    c: &mut Checker<'_>,
    key: &str,
    headers: &ConnectHeadersConfig,
) -> Vec<(String, HeaderText)> {
    let mut out = Vec::new();
    for (name, values) in &headers.0 {
        let k = join_key(&format!("{key}.proxy_connect_header"), name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.fail(k, "not a valid HTTP header name");
            continue;
        }
        for value in values.values() {
            if http::HeaderValue::from_str(value).is_err() {
                c.fail(
                    k.clone(),
                    "value has characters not allowed in an HTTP header",
                );
            } else {
                out.push((
                    name.to_ascii_lowercase(),
                    HeaderText::for_header(name, value.as_str()),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &ProxyConfig, env: &[(&str, &str)]) -> (ProxySettings, Vec<String>) {
        let mut c = Checker::new("test.toml");
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let s = validate_proxy_with(&mut c, "remote_write[0]", p, &lookup);
        (s, c.errors.iter().map(ToString::to_string).collect())
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn proxy_url_credentials_become_basic_auth_and_never_print() {
        let p = ProxyConfig {
            proxy_url: Some(UrlConfig::from("http://us%40er:pa%3Ass@proxy.example:3128")),
            no_proxy: Some("internal.example".into()),
            proxy_connect_header: ConnectHeadersConfig::from([("Proxy-Authorization", "tok")]),
            ..ProxyConfig::default()
        };
        let printed = format!("{p:?} {}", serde_json::to_string(&p).unwrap());
        assert!(
            !printed.contains("pa%3Ass") && !printed.contains("tok"),
            "{printed}"
        );
        let (s, errors) = check(&p, &[]);
        assert!(errors.is_empty(), "{errors:?}");
        let proxy = s.route(&url("https://api.example/")).unwrap();
        assert_eq!(proxy.url.as_str(), "http://proxy.example:3128/");
        assert_eq!(
            proxy.auth,
            Some(Auth::Basic {
                username: "us@er".into(),
                password: Secret::new("pa:ss").into(),
            })
        );
        assert_eq!(proxy.connect_headers.len(), 1);
        assert!(s.route(&url("http://internal.example/")).is_none());
        assert!(!format!("{s:?}").contains("pa:ss"));
    }

    #[test]
    fn only_http_proxies_and_consistent_keys_are_accepted() {
        for (bad, expect) in [
            ("socks5://p:1080", "only http:// proxies"),
            ("https://p:3128", "only http:// proxies"),
            ("http://u:secret@", "not a valid URL"),
        ] {
            let p = ProxyConfig {
                proxy_url: Some(UrlConfig::from(bad)),
                ..ProxyConfig::default()
            };
            let (s, errors) = check(&p, &[]);
            assert!(s.is_direct());
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("remote_write[0].proxy_url"),
                "{errors:?}"
            );
            assert!(errors[0].contains(expect), "{errors:?}");
            assert!(!errors[0].contains("secret"), "{errors:?}");
        }
        let both = ProxyConfig {
            proxy_url: Some(UrlConfig::from("http://p:3128")),
            proxy_from_environment: true,
            ..ProxyConfig::default()
        };
        let (_, errors) = check(&both, &[]);
        assert!(errors[0].contains("proxy_from_environment"), "{errors:?}");
        let orphan = ProxyConfig {
            no_proxy: Some("x".into()),
            ..ProxyConfig::default()
        };
        let (_, errors) = check(&orphan, &[]);
        assert!(errors[0].contains("remote_write[0].no_proxy"), "{errors:?}");
        let no_user = ProxyConfig {
            proxy_url: Some(UrlConfig::from("http://p:3128")),
            proxy_password_file: Some("/nonexistent".into()),
            ..ProxyConfig::default()
        };
        let (_, errors) = check(&no_user, &[]);
        assert!(errors[0].contains("needs the user name"), "{errors:?}");
    }

    #[test]
    fn proxy_password_file_fills_in_the_user_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let p = ProxyConfig {
            proxy_url: Some(UrlConfig::from("http://agent@p:3128")),
            proxy_password_file: Some(file),
            ..ProxyConfig::default()
        };
        let (s, errors) = check(&p, &[]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s.http.unwrap().auth,
            Some(Auth::Basic {
                username: "agent".into(),
                password: Secret::new("s3cret").into(),
            })
        );
    }

    #[test]
    fn environment_proxies_are_read_only_when_asked() {
        let env = [
            ("HTTP_PROXY", "http://a:3128"),
            ("https_proxy", "b:3129"),
            ("no_proxy", "direct.example"),
        ];
        let (s, errors) = check(&ProxyConfig::default(), &env);
        assert!(errors.is_empty() && s.is_direct());
        let p = ProxyConfig {
            proxy_from_environment: true,
            ..ProxyConfig::default()
        };
        let (s, errors) = check(&p, &env);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.http.as_ref().unwrap().name(), "a:3128");
        assert_eq!(s.https.as_ref().unwrap().name(), "b:3129");
        assert!(s.route(&url("https://direct.example/")).is_none());
        let (_, errors) = check(&p, &[("HTTPS_PROXY", "socks5://user:pw@c:1080")]);
        assert!(errors[0].contains("HTTPS_PROXY"), "{errors:?}");
        assert!(!errors[0].contains("pw@"), "{errors:?}");
    }
}
