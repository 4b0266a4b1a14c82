//! Credentials for outbound requests, in one place.
//!
//! Every client (remote write, Pushgateway, scrapes, HTTP and AI probes) turns its configured
//! credentials into an `Authorization` value here, marked sensitive so that hyper and reqwest
//! keep it out of their `Debug` output and HTTP/2 compression tables, together with the texts a
//! log line or an error must never contain (the password or token, and the encoded pair a
//! receiver may echo back). The configuration resolves [`Auth`] from inline values or files;
//! nothing else builds an `Authorization` header. [`oauth2`] fetches, caches and refreshes
//! OAuth 2.0 client-credentials tokens.

pub mod oauth2;

use base64::Engine as _;
use http::HeaderValue;

use crate::secret::Secret;

/// Credentials for a request, resolved from the configuration (files read at start).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: Bearer …`.
    Bearer(Secret),
}

/// Why credentials cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The value contains a byte a header cannot carry (a newline, a control character); the
    /// value itself is never quoted, as it is a credential.
    #[error(
        "credentials have characters not allowed in a header (a newline or control character?)"
    )]
    NotAHeaderValue,
}

impl Auth {
    /// The `Authorization` header's text (`Basic <base64>` or `Bearer <token>`), kept secret.
    pub fn header_text(&self) -> Secret {
        match self {
            Auth::Basic { username, password } => {
                Secret::new(format!("Basic {}", encode_pair(username, password)))
            }
            Auth::Bearer(token) => Secret::new(format!("Bearer {}", token.expose())),
        }
    }

    /// The `Authorization` header's value, marked sensitive.
    pub fn header_value(&self) -> Result<HeaderValue, AuthError> {
        let mut value = HeaderValue::from_str(self.header_text().expose())
            .map_err(|_| AuthError::NotAHeaderValue)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The texts these credentials put on the wire that must be scrubbed from anything logged:
    /// the password or token, and for basic auth the encoded pair. Empty texts are left out.
    pub fn secrets(&self) -> Vec<Secret> {
        let all = match self {
            Auth::Basic { username, password } => {
                vec![
                    password.clone(),
                    Secret::new(encode_pair(username, password)),
                ]
            }
            Auth::Bearer(token) => vec![token.clone()],
        };
        all.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

/// `base64(username:password)`, as RFC 7617 encodes basic credentials.
fn encode_pair(username: &str, password: &Secret) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_values_are_encoded_and_sensitive() {
        let basic = Auth::Basic {
            username: "Aladdin".into(),
            password: Secret::new("open sesame"),
        };
        // RFC 7617's own example.
        let v = basic.header_value().unwrap();
        assert_eq!(v, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
        let bearer = Auth::Bearer(Secret::new("tok"));
        let v = bearer.header_value().unwrap();
        assert_eq!(v, "Bearer tok");
        assert!(v.is_sensitive());
        assert_eq!(bearer.header_text().expose(), "Bearer tok");
    }

    #[test]
    fn secrets_list_what_a_receiver_could_echo() {
        let basic = Auth::Basic {
            username: "u".into(),
            password: Secret::new("p"),
        };
        let texts: Vec<String> = basic.secrets().iter().map(|s| s.expose().into()).collect();
        assert_eq!(texts, ["p", "dTpw"]);
        // An empty password leaves only the encoded pair to scrub.
        let empty = Auth::Basic {
            username: "u".into(),
            password: Secret::new(""),
        };
        assert_eq!(empty.secrets().len(), 1);
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_refused_without_quoting_it() {
        let bad = Auth::Bearer(Secret::new("sec\nret"));
        let err = bad.header_value().unwrap_err();
        assert!(!err.to_string().contains("sec"), "{err}");
        // Debug never shows the credential either.
        assert!(!format!("{bad:?}").contains("sec\\nret"));
    }
}
