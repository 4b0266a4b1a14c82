//! [`Secret`]: the one type that holds passwords, tokens and API keys.
//!
//! Its `Debug`, `Display` and `Serialize` never show the value, so a secret cannot reach a log
//! line or `config check` output by accident; only [`Secret::expose`] reveals it.
//!
//! Credentials also hide in two places that are not typed as secrets in the file: request
//! headers and URLs. [`is_credential_header`] names the headers whose value is a credential,
//! [`HeaderText`] holds a configured header value as a [`Secret`] when it is one, and
//! [`redact_url`] / [`redact_url_text`] print a URL with its password replaced, for every URL
//! that reaches `config check`, a log line, an error or a label.

use std::fmt;

/// A credential whose value is never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the value, for building a request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Tells whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if FINGERPRINTS.with(std::cell::Cell::get) {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.0.hash(&mut h);
            return s.serialize_str(&format!("<redacted:{:016x}>", h.finish()));
        }
        s.serialize_str("<redacted>")
    }
}

thread_local! {
    /// Set while [`with_fingerprints`] runs.
    static FINGERPRINTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every [`Secret`] serializing as a hash of its value instead of a fixed
/// placeholder, so that comparing two serialized configurations (a reload's difference) sees a
/// changed password without the value ever being written out. What `f` serializes must stay
/// in memory: a hash of a short secret can be guessed.
pub(crate) fn with_fingerprints<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            FINGERPRINTS.with(|c| c.set(false));
        }
    }
    FINGERPRINTS.with(|c| c.set(true));
    let _reset = Reset;
    f()
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Whether a header named `name` carries a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, any name ending in `-Key` or `-Token` (`X-Api-Key`,
/// `X-Auth-Token`), or one that says auth, secret, password or apikey; case-insensitive. The
/// configuration redacts these values and remote write marks them sensitive by this one rule.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || name.ends_with("-key")
        || name.ends_with("-token")
        // Gateways' own spellings: X-Auth, X-Vault-Secret, X-Password, X-Apikey.
        || ["auth", "secret", "password", "apikey"]
            .iter()
            .any(|w| name.contains(w))
}

/// A configured header value: plain text, or a [`Secret`] when its header names a credential
/// (see [`is_credential_header`]), so that it prints as `<redacted>` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub enum HeaderText {
    /// A value that may be shown (`X-Scope-OrgID = "team-a"`).
    Plain(String),
    /// A credential, never shown.
    Secret(Secret),
}

impl HeaderText {
    /// Holds `value` as a secret when the header `name` names a credential.
    pub fn for_header(name: &str, value: impl Into<String>) -> Self {
        if is_credential_header(name) {
            HeaderText::Secret(Secret::new(value))
        } else {
            HeaderText::Plain(value.into())
        }
    }

    /// Returns the value, for building the request header and nothing else.
    pub fn expose(&self) -> &str {
        match self {
            HeaderText::Plain(v) => v,
            HeaderText::Secret(s) => s.expose(),
        }
    }
}

// Tests and callers that build settings by hand write `("x-org", "a".into())`; such a value
// is plain, and the consumer still decides by the header's name what to mark sensitive.
impl From<&str> for HeaderText {
    fn from(value: &str) -> Self {
        HeaderText::Plain(value.to_string())
    }
}

impl From<String> for HeaderText {
    fn from(value: String) -> Self {
        HeaderText::Plain(value)
    }
}

impl fmt::Debug for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderText::Plain(v) => fmt::Debug::fmt(v, f),
            HeaderText::Secret(s) => fmt::Debug::fmt(s, f),
        }
    }
}

impl fmt::Display for HeaderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderText::Plain(v) => f.write_str(v),
            HeaderText::Secret(s) => fmt::Display::fmt(s, f),
        }
    }
}

/// Headers as the HTTP client takes them, values exposed: the client marks every value
/// sensitive, so none of them is printed from there on.
pub fn expose_headers(headers: &[(String, HeaderText)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), value.expose().to_string()))
        .collect()
}

/// What replaces a URL's password when it is printed (the blackbox exporter's choice; the
/// HTTP probe's `instance` label has always used it).
pub const URL_PASSWORD_MASK: &str = "xxxxx";

/// A URL as text with its password, if any, replaced by [`URL_PASSWORD_MASK`]; the one way a
/// configured URL is printed, logged or used as a label.
pub fn redact_url(url: &reqwest::Url) -> String {
    if url.password().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    // Setting a password only fails for URLs that cannot have one (no host), and those have
    // no password to hide either.
    let _ = u.set_password(Some(URL_PASSWORD_MASK));
    u.to_string()
}

/// [`redact_url`] for a URL as written, which may not parse: the text comes back unchanged
/// unless it holds `user:password@`, whose password is then replaced. Used where the text is
/// printed before (or instead of) being parsed, as in `config check` and error messages.
pub fn redact_url_text(text: &str) -> String {
    // The user info sits between the scheme's `//` (if any) and the last `@` of the authority,
    // which ends at the first `/`, `?` or `#` after it.
    let start = text.find("//").map_or(0, |i| i + 2);
    let rest = &text[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return text.to_string();
    };
    format!(
        "{}{URL_PASSWORD_MASK}{}",
        &text[..start + colon + 1],
        &text[start + at..]
    )
}

/// What is wrong with a credential's text, described without revealing it.
pub fn describe_defect(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty")
    } else if value.ends_with('\n') || value.ends_with('\r') {
        Some("ends with a newline")
    } else if value.trim() != value {
        Some("has leading or trailing whitespace")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn credential_headers_are_recognised() {
        for name in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Api-Key",
            "x-auth-token",
            "Private-Token",
            "X-Auth",
            "X-Vault-Secret",
            "X-Apikey",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in [
            "X-Scope-OrgID",
            "Accept",
            "X-Keyboard",
            "Tokens",
            "x-gateway",
        ] {
            assert!(!is_credential_header(name), "{name}");
        }
    }

    #[test]
    fn header_text_hides_credentials_only() {
        let key = HeaderText::for_header("X-Api-Key", "k-123");
        assert!(!format!("{key:?} {key}").contains("k-123"));
        assert_eq!(key.expose(), "k-123");
        let org = HeaderText::for_header("X-Scope-OrgID", "team-a");
        assert_eq!(format!("{org:?} {org}"), "\"team-a\" team-a");
    }

    #[test]
    fn url_passwords_are_replaced() {
        let u = reqwest::Url::parse("http://user:pw-secret@host:9090/p?q=1").unwrap();
        assert_eq!(redact_url(&u), "http://user:xxxxx@host:9090/p?q=1");
        let u = reqwest::Url::parse("http://host/p").unwrap();
        assert_eq!(redact_url(&u), "http://host/p");
        for (text, want) in [
            ("http://u:pw@h/x@y", "http://u:xxxxx@h/x@y"),
            ("https://u:p:w@h", "https://u:xxxxx@h"),
            ("u:pw@h:1", "u:xxxxx@h:1"),
            ("http://u@h/", "http://u@h/"),
            ("http://h/?a=b:c@d", "http://h/?a=b:c@d"),
            ("not a url", "not a url"),
            ("http://u:p@w@h/", "http://u:xxxxx@h/"),
        ] {
            assert_eq!(redact_url_text(text), want, "{text}");
        }
    }

    #[test]
    fn defects_are_named() {
        assert_eq!(describe_defect(""), Some("is empty"));
        assert_eq!(describe_defect("k\n"), Some("ends with a newline"));
        assert_eq!(
            describe_defect(" k"),
            Some("has leading or trailing whitespace")
        );
        assert_eq!(describe_defect("k"), None);
    }
}
