//! Credentials for outbound requests, in one place.
//!
//! Every client (remote write, Pushgateway, scrapes, HTTP and AI probes) authorizes each
//! request through an [`Authorizer`], built once from the configuration's resolved [`Auth`]:
//!
//! - [`Authorizer::apply`] runs on **every attempt**, retries included, and sets the
//!   credential headers from the credentials' *current* value: a file-based secret is checked
//!   for a change on each use ([`SecretFile`]), a signing scheme signs this exact body, a token
//!   scheme refreshes its token when it is about to expire.
//! - [`Authorizer::refused`] runs after a `401`: it drops whatever is cached (a token, a file's
//!   last reading) and says whether one more attempt could succeed; the caller retries that
//!   request once, and only then counts it as refused.
//! - [`Authorizer::secrets`] lists the texts currently on the wire, for scrubbing receiver
//!   messages and errors before they are logged.
//!
//! Header values are marked sensitive, so hyper and reqwest keep them out of their `Debug`
//! output and HTTP/2 compression tables. An [`AuthError`] tells a configuration error (the
//! operator must fix something) from a temporary one (a token endpoint down): remote write keeps
//! its samples queued and retries either with backoff, probes fail with the reason.
//!
//! Kinds: basic and bearer credentials here; OAuth 2.0 client-credentials tokens in
//! [`oauth2`], fetched from a token endpoint, cached and refreshed.
//!
//! Adding a credential kind: a variant of [`Auth`] (resolved by the configuration), a variant
//! of the private `Scheme` below built in [`Authorizer::new`], and its arms in `apply`,
//! `refused` and `secrets`; the clients need no change.

pub mod aws_credentials;
pub mod oauth2;
mod secret_file;
pub mod sigv4;

use std::sync::Arc;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::Method;
use reqwest::Url;

use crate::config::SigV4Settings;
use crate::secret::Secret;

pub use self::secret_file::SecretFile;
pub(crate) use self::secret_file::Stamp;

/// Credentials for a request as the configuration resolved them; files are read through a
/// [`SecretFile`], which picks up a rotated file without a restart.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password (`password` or `password_file`).
        password: SecretSource,
    },
    /// `Authorization: Bearer …` (`bearer_token` or `bearer_token_file`).
    Bearer(SecretSource),
    OAuth2(Box<crate::config::OAuth2Settings>),
    SigV4(SigV4Settings),
}

/// Where a secret's value comes from: inline in the configuration, or a file re-read when it
/// changes.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretSource {
    /// The value written in the configuration (or the environment).
    Inline(Secret),
    /// A file, re-read when it changes.
    File(SecretFile),
}

impl SecretSource {
    /// The current value: the file's latest good reading, or the inline value.
    pub fn current(&self) -> Secret {
        match self {
            SecretSource::Inline(s) => s.clone(),
            SecretSource::File(f) => f.current(),
        }
    }

    /// The value last used, without looking for a change.
    fn last_read(&self) -> Secret {
        match self {
            SecretSource::Inline(s) => s.clone(),
            SecretSource::File(f) => f.last_read(),
        }
    }

    /// Re-reads a file now (after a refusal); tells whether the value changed. An inline
    /// value never changes.
    fn reload(&self) -> bool {
        match self {
            SecretSource::Inline(_) => false,
            SecretSource::File(f) => f.reload(),
        }
    }
}

impl From<Secret> for SecretSource {
    fn from(s: Secret) -> Self {
        SecretSource::Inline(s)
    }
}

/// Why a request cannot be authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The value contains a byte a header cannot carry (a newline, a control character); the
    /// value itself is never quoted, as it is a credential.
    #[error(
        "credentials have characters not allowed in a header (a newline or control character?)"
    )]
    NotAHeaderValue,
    /// The configuration must be fixed (a client refused by its token endpoint, a missing
    /// profile); retrying unchanged will not help, though a rotated file may.
    #[error("{key}: {message}")]
    Config {
        /// The configuration key at fault, e.g. `remote_write[0].oauth2.client_secret_file`.
        key: String,
        /// What is wrong and what to do; never a secret.
        message: String,
    },
    /// The credentials could not be obtained now (a token or metadata endpoint down, timing
    /// out or answering 5xx); the next attempt may succeed.
    #[error("{endpoint}: {message}")]
    Temporary {
        /// The endpoint that failed (URL without user info).
        endpoint: String,
        /// What went wrong; never a secret.
        message: String,
    },
}

impl AuthError {
    /// Whether the failure is expected to go away by itself, so retrying later makes sense.
    pub fn is_temporary(&self) -> bool {
        matches!(self, AuthError::Temporary { .. })
    }
}

/// The runtime side of [`Auth`]: authorizes each request, refreshing what rotates. Cheap to
/// clone (shared state behind an `Arc`); [`Authorizer::none`] sends no credentials.
#[derive(Clone, Debug, Default)]
pub struct Authorizer(Option<Arc<Scheme>>);

/// A credential kind at run time, with whatever it caches.
#[derive(Debug)]
enum Scheme {
    /// Basic authentication.
    Basic {
        username: String,
        password: SecretSource,
    },
    /// A bearer token.
    Bearer(SecretSource),
    OAuth2(oauth2::TokenSource),
    SigV4(Box<sigv4::SigV4Signer>),
}

impl Authorizer {
    /// An authorizer that adds nothing to requests.
    pub fn none() -> Self {
        Authorizer(None)
    }

    /// Builds the authorizer of `auth` (none when `None`); a kind that needs set-up (an
    /// HTTP client of its own) fails here with what to fix.
    pub fn new(auth: Option<&Auth>) -> Result<Self, AuthError> {
        let Some(auth) = auth else {
            return Ok(Self::none());
        };
        let scheme = match auth {
            Auth::Basic { username, password } => Scheme::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            Auth::Bearer(token) => Scheme::Bearer(token.clone()),
            Auth::OAuth2(settings) => {
                let source = oauth2::TokenSource::new((**settings).clone()).map_err(|message| {
                    AuthError::Config {
                        key: settings.key.clone(),
                        message,
                    }
                })?;
                Scheme::OAuth2(source)
            }
            Auth::SigV4(settings) => Scheme::SigV4(Box::new(sigv4::SigV4Signer::from_settings(
                settings,
                aws_credentials::process_env(),
            )?)),
        };
        Ok(Authorizer(Some(Arc::new(scheme))))
    }

    /// Whether the credentials can change while the agent runs (a file, a token, a
    /// credentials provider): a refusal may then be a rotation in progress, worth waiting out.
    pub fn can_rotate(&self) -> bool {
        match self.0.as_deref() {
            None => false,
            Some(Scheme::Basic { password: s, .. }) | Some(Scheme::Bearer(s)) => {
                matches!(s, SecretSource::File(_))
            }
            // Every token is a new credential; a gateway may be slow to accept one.
            Some(Scheme::OAuth2(_)) => true,
            // AWS refuses a bad signature with 403, not 401, and fresh credentials are
            // fetched before the old ones expire: a 401 is not a rotation to wait out.
            Some(Scheme::SigV4(_)) => false,
        }
    }

    /// Whether any credentials are configured.
    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// Sets the credential headers of one request attempt to `method url` carrying `body`
    /// (the exact bytes sent, compressed if they are): call it again for every retry.
    pub async fn apply(
        &self,
        method: &Method,
        url: &Url,
        headers: &mut HeaderMap,
        body: &[u8],
    ) -> Result<(), AuthError> {
        // Signing kinds use all of these; header kinds only the credentials.
        let _ = (method, url, body);
        let Some(scheme) = &self.0 else {
            return Ok(());
        };
        let value = match &**scheme {
            Scheme::Basic { username, password } => {
                basic_header_value(username, &password.current())?
            }
            Scheme::Bearer(token) => bearer_header_value(&token.current())?,
            Scheme::OAuth2(source) => source
                .authorization()
                .await
                .map_err(|e| e.to_auth_error())?,
            // The signature covers the other headers, so it sets its own headers last.
            Scheme::SigV4(signer) => {
                return signer
                    .apply(method, url, headers, body)
                    .await
                    .map_err(sigv4::SigV4Error::into_auth_error)
            }
        };
        // Configured credentials win over a hand-written Authorization header.
        headers.insert(AUTHORIZATION, value);
        Ok(())
    }

    /// [`Authorizer::apply`] for the probes' and scrapes' client, whose requests list their
    /// headers as pairs: each header the credentials set replaces any pair of that name.
    pub async fn apply_to_pairs(
        &self,
        method: &Method,
        url: &Url,
        pairs: &mut Vec<(String, String)>,
        body: &[u8],
    ) -> Result<(), AuthError> {
        if self.0.is_none() {
            return Ok(());
        }
        let mut set = HeaderMap::new();
        self.apply(method, url, &mut set, body).await?;
        for name in set.keys() {
            pairs.retain(|(n, _)| !n.eq_ignore_ascii_case(name.as_str()));
        }
        for (name, value) in &set {
            // Built from text above, so the bytes are UTF-8.
            let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
            pairs.push((name.as_str().to_string(), text));
        }
        Ok(())
    }

    /// Called after the receiver answered `401`: drops what is cached and tells whether one
    /// more attempt may succeed (new credentials were found). The caller retries the request
    /// once when it says so, and counts the request as refused otherwise.
    pub fn refused(&self) -> bool {
        match self.0.as_deref() {
            None => false,
            Some(Scheme::Basic { password, .. }) => password.reload(),
            Some(Scheme::Bearer(token)) => token.reload(),
            // A new token may be accepted where the cached one was not.
            Some(Scheme::OAuth2(source)) => {
                source.invalidate();
                true
            }
            // AWS refuses a bad signature with 403, which is not retried; a 401 from a proxy
            // in front is not something new AWS credentials would change.
            Some(Scheme::SigV4(_)) => false,
        }
    }

    /// The texts these credentials currently put on the wire, to be scrubbed from anything
    /// logged (the password or token, and for basic auth the encoded pair); none is empty.
    /// Files are not checked for a change here: that is for the next request or a refusal.
    pub fn secrets(&self) -> Vec<Secret> {
        let all = match self.0.as_deref() {
            None => Vec::new(),
            Some(Scheme::Basic { username, password }) => {
                let password = password.last_read();
                let pair = Secret::new(encode_pair(username, &password));
                vec![password, pair]
            }
            Some(Scheme::Bearer(token)) => vec![token.last_read()],
            Some(Scheme::OAuth2(source)) => source.secrets(),
            // The credentials and signatures last used: fetching new ones is for a request.
            Some(Scheme::SigV4(signer)) => signer.secrets(),
        };
        all.into_iter().filter(|s| !s.is_empty()).collect()
    }
}

impl Auth {
    /// The `Authorization` header's text (`Basic <base64>` or `Bearer <token>`) with the
    /// credentials' current value, kept secret; empty for OAuth2 and SigV4, whose header
    /// only an [`Authorizer`] can make (a fetched token; a signature per request).
    pub fn header_text(&self) -> Secret {
        match self {
            Auth::SigV4(_) => Secret::default(),
            Auth::Basic { username, password } => Secret::new(format!(
                "Basic {}",
                encode_pair(username, &password.current())
            )),
            Auth::Bearer(token) => Secret::new(format!("Bearer {}", token.current().expose())),
            Auth::OAuth2(_) => Secret::default(),
        }
    }

    /// The `Authorization` header's value, marked sensitive; SigV4 has no fixed one.
    pub fn header_value(&self) -> Result<HeaderValue, AuthError> {
        if let Auth::SigV4(_) = self {
            return Err(AuthError::Config {
                key: "sigv4".into(),
                message: "signs each request; it is supported on remote_write only".into(),
            });
        }
        sensitive_value(self.header_text().expose())
    }
}

/// `Basic base64(username:password)`, marked sensitive.
fn basic_header_value(username: &str, password: &Secret) -> Result<HeaderValue, AuthError> {
    sensitive_value(&format!("Basic {}", encode_pair(username, password)))
}

/// `Bearer <token>`, marked sensitive.
fn bearer_header_value(token: &Secret) -> Result<HeaderValue, AuthError> {
    sensitive_value(&format!("Bearer {}", token.expose()))
}

/// A header value marked sensitive; its text is never quoted in the error.
fn sensitive_value(text: &str) -> Result<HeaderValue, AuthError> {
    let mut value = HeaderValue::from_str(text).map_err(|_| AuthError::NotAHeaderValue)?;
    value.set_sensitive(true);
    Ok(value)
}

/// `base64(username:password)`, as RFC 7617 encodes basic credentials.
fn encode_pair(username: &str, password: &Secret) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(username: &str, password: &str) -> Auth {
        Auth::Basic {
            username: username.into(),
            password: Secret::new(password).into(),
        }
    }

    async fn applied(auth: &Auth) -> Result<HeaderMap, AuthError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer hand-written"),
        );
        let url: Url = "http://127.0.0.1:9/w".parse().unwrap();
        Authorizer::new(Some(auth))?
            .apply(&Method::POST, &url, &mut headers, b"body")
            .await?;
        Ok(headers)
    }

    #[tokio::test]
    async fn basic_and_bearer_values_are_encoded_and_sensitive() {
        // RFC 7617's own example.
        let h = applied(&basic("Aladdin", "open sesame")).await.unwrap();
        let v = h.get(AUTHORIZATION).unwrap();
        assert_eq!(v, "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(v.is_sensitive());
        let bearer = Auth::Bearer(Secret::new("tok").into());
        let h = applied(&bearer).await.unwrap();
        assert_eq!(h.get(AUTHORIZATION).unwrap(), "Bearer tok");
        assert!(h.get(AUTHORIZATION).unwrap().is_sensitive());
        assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(bearer.header_text().expose(), "Bearer tok");
    }

    #[tokio::test]
    async fn no_credentials_leave_the_headers_alone() {
        let a = Authorizer::new(None).unwrap();
        assert!(!a.is_configured());
        let mut h = HeaderMap::new();
        let url: Url = "http://127.0.0.1:9/".parse().unwrap();
        a.apply(&Method::GET, &url, &mut h, b"").await.unwrap();
        assert!(h.is_empty());
        assert!(!a.refused());
        assert!(a.secrets().is_empty());
    }

    #[tokio::test]
    async fn pairs_get_the_credentials_instead_of_a_hand_written_header() {
        let a = Authorizer::new(Some(&Auth::Bearer(Secret::new("t").into()))).unwrap();
        let url: Url = "http://127.0.0.1:9/".parse().unwrap();
        let mut pairs = vec![
            ("Authorization".to_string(), "Bearer old".to_string()),
            ("accept".to_string(), "*/*".to_string()),
        ];
        a.apply_to_pairs(&Method::GET, &url, &mut pairs, b"")
            .await
            .unwrap();
        assert_eq!(
            pairs,
            [
                ("accept".to_string(), "*/*".to_string()),
                ("authorization".to_string(), "Bearer t".to_string())
            ]
        );
    }

    #[test]
    fn secrets_list_what_a_receiver_could_echo() {
        let a = Authorizer::new(Some(&basic("u", "p"))).unwrap();
        let texts: Vec<String> = a.secrets().iter().map(|s| s.expose().into()).collect();
        assert_eq!(texts, ["p", "dTpw"]);
        // An empty password leaves only the encoded pair to scrub.
        let empty = Authorizer::new(Some(&basic("u", ""))).unwrap();
        assert_eq!(empty.secrets().len(), 1);
    }

    #[tokio::test]
    async fn a_value_that_cannot_be_a_header_is_refused_without_quoting_it() {
        let bad = Auth::Bearer(Secret::new("sec\nret").into());
        let err = applied(&bad).await.unwrap_err();
        assert_eq!(err, AuthError::NotAHeaderValue);
        assert!(!err.is_temporary());
        assert!(!err.to_string().contains("sec"), "{err}");
        // Debug never shows the credential either.
        assert!(!format!("{bad:?}").contains("sec\\nret"));
    }

    #[tokio::test]
    async fn a_rotated_file_is_sent_from_the_next_request_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old-token\n").unwrap();
        let file = SecretFile::open("bearer_token_file", &path).unwrap();
        let auth = Auth::Bearer(SecretSource::File(file));
        assert_eq!(
            applied(&auth).await.unwrap().get(AUTHORIZATION).unwrap(),
            "Bearer old-token"
        );
        std::fs::write(&path, "new-token-longer\n").unwrap();
        assert_eq!(
            applied(&auth).await.unwrap().get(AUTHORIZATION).unwrap(),
            "Bearer new-token-longer"
        );
        let a = Authorizer::new(Some(&auth)).unwrap();
        assert_eq!(a.secrets()[0].expose(), "new-token-longer");
        // Nothing changed since: a refusal finds nothing newer to try.
        assert!(!a.refused());
    }

    #[test]
    fn errors_tell_configuration_from_temporary() {
        let config = AuthError::Config {
            key: "remote_write[0].oauth2.client_id".into(),
            message: "the token endpoint refused the client (invalid_client)".into(),
        };
        assert!(!config.is_temporary());
        assert!(config
            .to_string()
            .starts_with("remote_write[0].oauth2.client_id: "));
        let temporary = AuthError::Temporary {
            endpoint: "http://127.0.0.1:9/token".into(),
            message: "answered 503".into(),
        };
        assert!(temporary.is_temporary());
    }
}
