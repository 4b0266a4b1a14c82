//! OAuth 2.0 client credentials (RFC 6749 §4.4): a [`TokenSource`] fetches an access token
//! from the configured token endpoint, keeps it until shortly before it expires, and shares
//! one fetch among all the requests that need a token at the same moment.
//!
//! The pure core decides everything that does not need the network: the form of the token
//! request ([`token_request_body`], [`basic_credentials`]), what an answer means
//! ([`judge_answer`]: a token, a refusal to fix in the configuration, a failure to retry, or
//! an answer that is not a token), and how long a token is used ([`reuse_for`]). The shell
//! ([`TokenSource`]) sends the request and caches the result.
//!
//! Choices, and why:
//! - **Client authentication.** RFC 6749 §2.3.1 asks servers to accept the client id and
//!   secret as HTTP basic credentials (each form-encoded first); some accept them only in the
//!   request body. Prometheus (through golang.org/x/oauth2's `AuthStyleAutoDetect`) tries the
//!   header first and, when that is refused, the body, then keeps whichever worked for the
//!   endpoint. pushprobe does the same, but falls back only on a refusal (400/401), never on
//!   a failing endpoint, which says nothing about the style.
//! - **Lifetime.** A token is used until [`EARLY_REFRESH_FRACTION`] of its lifetime (at most
//!   [`MAX_EARLY_REFRESH`]) before `expires_in` runs out. An answer without `expires_in`
//!   (allowed by RFC 6749 §5.1) gets [`DEFAULT_LIFETIME`], and a lifetime is never taken as
//!   longer than [`MAX_LIFETIME`]: a receiver's 401 refreshes a token early anyway.
//! - **No hot loop.** A token that expires at once is still used for [`MIN_REFRESH_INTERVAL`],
//!   and token requests to one endpoint are at least that far apart: a failure is handed to
//!   every caller in that time instead of being retried by each.
//! - **Secrets.** The client secret (a [`SecretSource`](super::SecretSource): a
//!   `client_secret_file` is re-read when it changes) and the token are [`Secret`]s; error messages name the
//!   configuration key and the endpoint (without user info or query), quote an OAuth error
//!   code and description, and never the body of a successful answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::AuthError;
use crate::config::OAuth2Settings;
use crate::http_client::pooled;
use crate::secret::Secret;

/// Lifetime assumed for a token whose answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// Longest lifetime believed: a larger `expires_in` is cut to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Part of a token's lifetime left unused, so that it is refreshed before it runs out.
pub const EARLY_REFRESH_FRACTION: u32 = 10;

/// Most time a token is refreshed ahead of its expiry.
pub const MAX_EARLY_REFRESH: Duration = Duration::from_secs(60);

/// Shortest time a token is used, and between two token requests to one endpoint.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Most bytes of a token endpoint's answer read; a token answer is far smaller.
pub const MAX_TOKEN_BODY: usize = 64 * 1024;

/// Most characters of an endpoint's error text quoted in a message.
const MAX_DETAIL_CHARS: usize = 200;

/// Characters form-encoded in the token request: everything but RFC 3986's unreserved ones.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How the client id and secret travel to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthStyle {
    /// As HTTP basic credentials (RFC 6749 §2.3.1's preferred way).
    Header,
    /// As `client_id` and `client_secret` form parameters.
    Params,
}

/// An access token as the endpoint gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub access_token: Secret,
    /// Its lifetime in seconds, if the endpoint said.
    pub expires_in: Option<u64>,
}

/// What is wrong with a token endpoint's answer, before the endpoint and key are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The endpoint refused the request: the configuration must change (`keys` names what to
    /// check).
    Refused {
        /// The keys to check, e.g. `client_id and client_secret`.
        keys: &'static str,
        /// What the endpoint said.
        detail: String,
    },
    /// The endpoint failed (5xx, 408, 429); worth retrying.
    Unavailable(String),
    /// The answer is not a token (HTML, garbage, too large, no `access_token`).
    BadAnswer(String),
}

/// Why no token could be had; every message names the configuration key and the token
/// endpoint, never the secret or a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The endpoint refused the client: a configuration error.
    #[error(
        "{key}: the token endpoint {endpoint} refused the request ({detail}); check {key}'s {keys}"
    )]
    Refused {
        /// The block's key path, e.g. `remote_write[0].oauth2`.
        key: String,
        /// The token URL without user info or query.
        endpoint: String,
        /// The keys to check.
        keys: &'static str,
        /// What the endpoint said.
        detail: String,
    },
    /// The endpoint failed, timed out or could not be reached; retried later.
    #[error("{key}: the token endpoint {endpoint} is unavailable ({detail}); will retry")]
    Unavailable {
        /// The block's key path.
        key: String,
        /// The token URL without user info or query.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The endpoint answered something that is not a token; retried later.
    #[error("{key}: the token endpoint {endpoint} answered {detail}, not a token; is {key}.token_url the token endpoint?")]
    BadAnswer {
        /// The block's key path.
        key: String,
        /// The token URL without user info or query.
        endpoint: String,
        /// What came back.
        detail: String,
    },
}

impl TokenError {
    /// Whether only a change of configuration helps (the endpoint refused the client), as
    /// opposed to a failure worth retrying with backoff.
    pub fn is_config(&self) -> bool {
        matches!(self, TokenError::Refused { .. })
    }

    /// The same as an [`AuthError`]: a refusal is a configuration error naming the block's
    /// key, anything else a temporary failure of the token endpoint.
    pub fn to_auth_error(&self) -> AuthError {
        match self {
            TokenError::Refused {
                key,
                endpoint,
                keys,
                detail,
            } => AuthError::Config {
                key: key.clone(),
                message: format!(
                    "the token endpoint {endpoint} refused the request ({detail}); check {keys}"
                ),
            },
            TokenError::Unavailable {
                key,
                endpoint,
                detail,
            } => AuthError::Temporary {
                endpoint: endpoint.clone(),
                message: format!("the token request of {key} failed ({detail}); will retry"),
            },
            TokenError::BadAnswer {
                key,
                endpoint,
                detail,
            } => AuthError::Temporary {
                endpoint: endpoint.clone(),
                message: format!(
                    "answered {detail}, not a token; is {key}.token_url the token endpoint?"
                ),
            },
        }
    }
}

/// How long a token with `expires_in` seconds of life is used: its lifetime (or
/// [`DEFAULT_LIFETIME`], capped at [`MAX_LIFETIME`]) less a tenth (at most
/// [`MAX_EARLY_REFRESH`]), and never less than [`MIN_REFRESH_INTERVAL`].
pub fn reuse_for(expires_in: Option<u64>) -> Duration {
    let lifetime = expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME)
        .min(MAX_LIFETIME);
    let early = (lifetime / EARLY_REFRESH_FRACTION).min(MAX_EARLY_REFRESH);
    lifetime.saturating_sub(early).max(MIN_REFRESH_INTERVAL)
}

/// Form-encodes one value (RFC 6749 appendix B).
fn form_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, FORM).to_string()
}

/// The token request's form body: `grant_type=client_credentials`, the scopes, the endpoint
/// parameters (which may replace `grant_type`), and with [`ClientAuthStyle::Params`] the
/// client id and secret. Kept secret, as it may hold the client secret.
pub fn token_request_body(
    settings: &OAuth2Settings,
    style: ClientAuthStyle,
    client_secret: &Secret,
) -> Secret {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let grant = settings
        .endpoint_params
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map_or("client_credentials", |(_, v)| v.as_str());
    pairs.push(("grant_type", grant));
    let scope = settings.scopes.join(" ");
    if !scope.is_empty() {
        pairs.push(("scope", &scope));
    }
    for (k, v) in &settings.endpoint_params {
        if k != "grant_type" {
            pairs.push((k, v));
        }
    }
    if style == ClientAuthStyle::Params {
        pairs.push(("client_id", &settings.client_id));
        pairs.push(("client_secret", client_secret.expose()));
    }
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    Secret::new(body)
}

/// The basic credentials of RFC 6749 §2.3.1: `base64(form(id) ":" form(secret))`.
pub fn basic_credentials(client_id: &str, client_secret: &Secret) -> Secret {
    let pair = format!(
        "{}:{}",
        form_encode(client_id),
        form_encode(client_secret.expose())
    );
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

/// What a token endpoint's answer means: a token, or the [`Problem`]. `complete` is false
/// when the body was cut at [`MAX_TOKEN_BODY`].
pub fn judge_answer(
    status: u16,
    content_type: &str,
    body: &[u8],
    complete: bool,
) -> Result<Token, Problem> {
    let html = looks_like_html(content_type, body);
    if (200..300).contains(&status) {
        if !complete {
            return Err(Problem::BadAnswer(format!(
                "a body larger than {} KiB",
                MAX_TOKEN_BODY / 1024
            )));
        }
        if html {
            return Err(Problem::BadAnswer(format!("an HTML page (HTTP {status})")));
        }
        return parse_token(body);
    }
    let detail = describe_failure(status, body, html);
    match status {
        408 | 429 | 500..=599 => Err(Problem::Unavailable(detail)),
        400 | 401 | 403 => {
            let keys = match oauth_error(body).map(|(code, _)| code) {
                Some(code) if code == "invalid_scope" => "scopes",
                Some(code)
                    if code == "unsupported_grant_type"
                        || code == "invalid_grant"
                        || code == "invalid_request" =>
                {
                    "client_id, client_secret and endpoint_params"
                }
                _ => "client_id and client_secret",
            };
            Err(Problem::Refused { keys, detail })
        }
        300..=399 => Err(Problem::Refused {
            keys: "token_url",
            detail: format!("{detail}; redirects are not followed"),
        }),
        400..=499 => Err(Problem::Refused {
            keys: "token_url",
            detail,
        }),
        _ => Err(Problem::Unavailable(detail)),
    }
}

/// Whether an answer is an HTML page (a login page, a proxy's error page).
fn looks_like_html(content_type: &str, body: &[u8]) -> bool {
    let ct = content_type.to_ascii_lowercase();
    if ct.starts_with("text/html") || ct.starts_with("application/xhtml") {
        return true;
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    body[start..].get(..5).is_some_and(|head| {
        head.eq_ignore_ascii_case(b"<!doc") || head.eq_ignore_ascii_case(b"<html")
    })
}

/// A failed answer in words: the status, and the OAuth error (RFC 6749 §5.2) or the start
/// of a plain-text body; an HTML page is named, not quoted.
fn describe_failure(status: u16, body: &[u8], html: bool) -> String {
    if let Some((code, description)) = oauth_error(body) {
        return match description {
            Some(d) => format!("HTTP {status}, {code}: {d}"),
            None => format!("HTTP {status}, {code}"),
        };
    }
    if html {
        return format!("HTTP {status} with an HTML page");
    }
    let text = one_line(&String::from_utf8_lossy(body));
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// `error` and `error_description` of an OAuth error answer, made fit for a log line.
fn oauth_error(body: &[u8]) -> Option<(String, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    let description = v
        .get("error_description")
        .and_then(|d| d.as_str())
        .map(one_line)
        .filter(|d| !d.is_empty());
    Some((one_line(code), description))
}

/// Text cut to one short line without control characters.
fn one_line(text: &str) -> String {
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_DETAIL_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_DETAIL_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Reads a successful answer's JSON (RFC 6749 §5.1).
fn parse_token(body: &[u8]) -> Result<Token, Problem> {
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(body) else {
        return Err(Problem::BadAnswer(
            "a body that is not a JSON object".into(),
        ));
    };
    // Some endpoints answer an error with 200.
    if let Some(code) = v.get("error").and_then(|c| c.as_str()) {
        return Err(Problem::Refused {
            keys: "client_id and client_secret",
            detail: one_line(code),
        });
    }
    let token = match v.get("access_token") {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        _ => return Err(Problem::BadAnswer("JSON without an access_token".into())),
    };
    if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(Problem::BadAnswer(
            "an access_token with characters a header cannot carry".into(),
        ));
    }
    match v.get("token_type").and_then(|t| t.as_str()) {
        // Servers differ in case (`Bearer`, `bearer`); a missing type is taken as bearer.
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            return Err(Problem::BadAnswer(format!(
                "a token of type {:?} (only bearer tokens can be sent)",
                one_line(t)
            )))
        }
    }
    let expires_in = match v.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(seconds(n.as_f64())?),
        // Some servers send it as a string.
        Some(serde_json::Value::String(s)) => Some(seconds(s.trim().parse::<f64>().ok())?),
        Some(_) => return Err(bad_expiry()),
    };
    Ok(Token {
        access_token: Secret::new(token.clone()),
        expires_in,
    })
}

/// Whole seconds of a numeric `expires_in`; negative counts as already expired.
fn seconds(n: Option<f64>) -> Result<u64, Problem> {
    match n {
        Some(s) if s.is_finite() => Ok(s.max(0.0).min(u64::MAX as f64) as u64),
        _ => Err(bad_expiry()),
    }
}

/// The problem of an `expires_in` that is not a number.
fn bad_expiry() -> Problem {
    Problem::BadAnswer("an expires_in that is not a number of seconds".into())
}

/// The token URL as it may be printed: no user info, query or fragment.
pub fn shown_endpoint(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    // Clearing user info fails only for URLs without a host, which validation refused.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Which style to try next after `tried` got `answer`, when the endpoint's style is not
/// known yet: the body after a refused header, nothing more after that.
pub fn fallback_style(
    tried: ClientAuthStyle,
    answer: &Result<Token, Problem>,
) -> Option<ClientAuthStyle> {
    match (tried, answer) {
        (ClientAuthStyle::Header, Err(Problem::Refused { .. })) => Some(ClientAuthStyle::Params),
        _ => None,
    }
}

/// A token in use, with when to stop using it.
struct Cached {
    /// `Bearer <token>`, marked sensitive.
    header: HeaderValue,
    /// The token, for scrubbing logs.
    token: Secret,
    /// When to fetch a new one.
    refresh_at: Instant,
}

/// What the one fetch in flight at a time keeps between fetches.
#[derive(Default)]
struct FetchState {
    /// When the last token request was sent.
    last_attempt: Option<Instant>,
    /// Its error, handed to callers until [`MIN_REFRESH_INTERVAL`] has passed.
    last_error: Option<TokenError>,
    /// The client authentication the endpoint accepted, once known.
    style: Option<ClientAuthStyle>,
}

/// Shared state of a [`TokenSource`].
struct Inner {
    /// The validated block.
    settings: OAuth2Settings,
    /// The token URL as printed.
    endpoint: String,
    /// The client for token requests (the block's own TLS settings).
    client: reqwest::Client,
    /// The token in use; a plain mutex, held only to read or replace it.
    cached: Mutex<Option<Cached>>,
    /// Held while fetching, so that concurrent callers share one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

/// Fetches, caches and refreshes the access token of one `oauth2` block; cheap to clone.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.inner.settings.key)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// A token source for `settings`; fails only when its TLS settings cannot be loaded.
    pub fn new(settings: OAuth2Settings) -> Result<Self, String> {
        let builder = pooled::builder(
            &settings.token_url,
            &settings.tls,
            &[b"http/1.1"],
            &settings.proxy,
        )
        .map_err(|e| format!("{}.tls: {e}", settings.key))?;
        let client = pooled::build(builder.timeout(settings.timeout))
            .map_err(|e| format!("{}: {e}", settings.key))?;
        Ok(TokenSource {
            inner: Arc::new(Inner {
                endpoint: shown_endpoint(&settings.token_url),
                settings,
                client,
                cached: Mutex::new(None),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
            }),
        })
    }

    /// The token endpoint as printed in messages (no user info or query).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The `Authorization` value (`Bearer <token>`, marked sensitive): the cached token, or a
    /// new one fetched once for all the callers waiting at the time.
    pub async fn authorization(&self) -> Result<HeaderValue, TokenError> {
        if let Some(h) = self.cached_header() {
            return Ok(h);
        }
        let mut state = self.inner.fetch.lock().await;
        // Another caller may have fetched while this one waited for the lock.
        if let Some(h) = self.cached_header() {
            return Ok(h);
        }
        if let Some(last) = state.last_attempt {
            let next = last + MIN_REFRESH_INTERVAL;
            if Instant::now() < next {
                if let Some(e) = &state.last_error {
                    return Err(e.clone());
                }
                // The token was refused right after it was fetched: wait rather than loop.
                tokio::time::sleep_until(next.into()).await;
            }
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch(&mut state).await {
            Ok(token) => {
                state.last_error = None;
                let reuse = reuse_for(token.expires_in);
                tracing::debug!(
                    key = %self.inner.settings.key,
                    endpoint = %self.inner.endpoint,
                    reuse_seconds = reuse.as_secs(),
                    assumed_lifetime = token.expires_in.is_none(),
                    "fetched an OAuth2 access token"
                );
                let mut header =
                    HeaderValue::from_str(&format!("Bearer {}", token.access_token.expose()))
                        .map_err(|_| self.bad_answer("an access_token a header cannot carry"))?;
                header.set_sensitive(true);
                let mut cached = self.lock_cached();
                *cached = Some(Cached {
                    header: header.clone(),
                    token: token.access_token,
                    refresh_at: Instant::now() + reuse,
                });
                Ok(header)
            }
            Err(e) => {
                if e.is_config() {
                    tracing::error!(error = %e, "OAuth2 token request refused; fix the configuration");
                } else {
                    tracing::warn!(error = %e, "OAuth2 token request failed");
                }
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Drops the cached token, after a receiver refused it (401): the next request fetches a
    /// new one (no sooner than [`MIN_REFRESH_INTERVAL`] after the last fetch).
    pub fn invalidate(&self) {
        *self.lock_cached() = None;
    }

    /// The texts to scrub from anything logged: the current token and the client secret.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut out = Vec::new();
        if let Some(c) = self.lock_cached().as_ref() {
            out.push(c.token.clone());
        }
        out.push(self.inner.settings.client_secret.current());
        out.retain(|s| !s.is_empty());
        out
    }

    /// The cached header, while the token is fresh.
    fn cached_header(&self) -> Option<HeaderValue> {
        let cached = self.lock_cached();
        cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.header.clone())
    }

    /// The cache, also after a panic elsewhere poisoned its lock (it holds no invariant a
    /// panic could break).
    fn lock_cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.inner
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One token request, falling back to the other client authentication style when the
    /// endpoint's is not known yet and the first was refused.
    async fn fetch(&self, state: &mut FetchState) -> Result<Token, TokenError> {
        // A file's current contents: a rotated secret is used from this request on.
        let secret = self.inner.settings.client_secret.current();
        let first = state.style.unwrap_or(ClientAuthStyle::Header);
        let mut style = first;
        loop {
            let answer = self.request(style, &secret).await?;
            if state.style.is_none() {
                if let Some(next) = fallback_style(style, &answer) {
                    style = next;
                    continue;
                }
                if answer.is_ok() {
                    state.style = Some(style);
                }
            }
            return answer.map_err(|p| self.error(p, &secret));
        }
    }

    /// Sends the token request in `style` and judges the answer; a transport failure or
    /// timeout is an error at once.
    async fn request(
        &self,
        style: ClientAuthStyle,
        secret: &Secret,
    ) -> Result<Result<Token, Problem>, TokenError> {
        let s = &self.inner.settings;
        let body = token_request_body(s, style, secret);
        let mut req = self
            .inner
            .client
            .post(s.token_url.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            )
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(crate::http_client::USER_AGENT),
            )
            .body(body.expose().to_string());
        if style == ClientAuthStyle::Header {
            let mut v = HeaderValue::from_str(basic_credentials(&s.client_id, secret).expose())
                .map_err(|_| TokenError::Refused {
                    key: s.key.clone(),
                    endpoint: self.inner.endpoint.clone(),
                    keys: "client_id and client_secret",
                    detail: "they hold characters a header cannot carry".into(),
                })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let mut response = req.send().await.map_err(|e| self.unavailable(&e))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut raw = Vec::new();
        let mut complete = true;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    raw.extend_from_slice(&chunk);
                    if raw.len() > MAX_TOKEN_BODY {
                        complete = false;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(self.unavailable(&e)),
            }
        }
        Ok(judge_answer(status, &content_type, &raw, complete))
    }

    /// A transport failure or timeout as an error.
    fn unavailable(&self, e: &reqwest::Error) -> TokenError {
        TokenError::Unavailable {
            key: self.inner.settings.key.clone(),
            endpoint: self.inner.endpoint.clone(),
            detail: pooled::describe_error(e),
        }
    }

    /// A bad answer as an error.
    fn bad_answer(&self, detail: &str) -> TokenError {
        TokenError::BadAnswer {
            key: self.inner.settings.key.clone(),
            endpoint: self.inner.endpoint.clone(),
            detail: detail.to_string(),
        }
    }

    /// A [`Problem`] as an error, with the key and endpoint, and the client secret scrubbed
    /// from what the endpoint said (some echo the request).
    fn error(&self, p: Problem, secret: &Secret) -> TokenError {
        let scrub = |d: String| {
            if secret.is_empty() {
                d
            } else {
                d.replace(secret.expose(), "<redacted>")
            }
        };
        let key = self.inner.settings.key.clone();
        let endpoint = self.inner.endpoint.clone();
        match p {
            Problem::Refused { keys, detail } => TokenError::Refused {
                key,
                endpoint,
                keys,
                detail: scrub(detail),
            },
            Problem::Unavailable(detail) => TokenError::Unavailable {
                key,
                endpoint,
                detail: scrub(detail),
            },
            Problem::BadAnswer(detail) => TokenError::BadAnswer {
                key,
                endpoint,
                detail: scrub(detail),
            },
        }
    }
}

#[cfg(test)]
mod tests;
