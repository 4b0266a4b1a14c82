//! [`Secret`]: the one type that holds passwords, tokens and API keys.
//!
//! Its `Debug`, `Display` and `Serialize` never show the value, so a secret cannot reach a log
//! line or `config check` output by accident; only [`Secret::expose`] reveals it.

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
        s.serialize_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
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
