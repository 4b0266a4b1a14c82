//! The request/response side of remote write, and the only part of [`super`] that knows
//! reqwest: the HTTP client of an endpoint, the headers every write request carries, and one
//! attempt (authorize, POST a body, read the status, `Retry-After` and a bounded part of the
//! receiver's message) turned into an [`Answer`] for [`super::retry`] to judge. Credentials
//! are set on every attempt, retries included, so rotated ones are used from the next request.
//!
//! Whatever a receiver says goes into logs, so it is made safe here, where it is read: the
//! message is cut to one short line and every credential text in it is replaced, because some
//! proxies echo the request headers in their error pages; and transport errors are described
//! without their URL, which may hold user info.

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use http::Method;

use super::retry::{reauthorize, Outcome};
use crate::auth::{AuthError, Authorizer};
use crate::config::{RemoteWriteSettings, RESERVED_HEADERS};
use crate::http_client::pooled;
use crate::secret::Secret;

/// Protocol version header value for remote write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// `User-Agent` of every write request.
pub const USER_AGENT_VALUE: &str = crate::http_client::USER_AGENT;

/// Most bytes of a response body read, so a misbehaving receiver cannot make us buffer an
/// arbitrarily large error page.
const MAX_BODY_READ: usize = 16 * 1024;

/// Most characters of a receiver's error message put in a log line.
const MAX_MESSAGE_CHARS: usize = 512;

/// Sends write requests to one endpoint: its URL, client, headers and credentials.
pub(crate) struct WriteService {
    url: reqwest::Url,
    client: reqwest::Client,
    /// Every request's headers but the credentials' (credential headers marked sensitive).
    headers: HeaderMap,
    /// Credential texts of `headers`, scrubbed from receiver messages before logging: some
    /// proxies echo the request headers in their error pages.
    header_secrets: Vec<Secret>,
    /// Sets the credentials of each attempt; its current texts are scrubbed too.
    authorizer: Authorizer,
}

impl WriteService {
    /// Builds the client, headers and credentials for `settings`' endpoint; the error says
    /// what is wrong.
    pub(crate) fn new(settings: &RemoteWriteSettings) -> Result<Self, String> {
        let (headers, header_secrets) = request_headers(settings)?;
        let builder = pooled::builder(&settings.url, &settings.tls, &[b"h2", b"http/1.1"])
            .map_err(|e| e.to_string())?;
        let client = pooled::build(builder.timeout(settings.timeout))?;
        let authorizer = Authorizer::new(settings.auth.as_ref()).map_err(|e| e.to_string())?;
        Ok(WriteService {
            url: settings.url.clone(),
            client,
            headers,
            header_secrets,
            authorizer,
        })
    }

    /// Sends one request and reads (a bounded part of) the answer. A `401` is sent once more
    /// when the credentials changed on refusal (see [`super::retry::reauthorize`]).
    pub(crate) async fn attempt(&self, body: Bytes) -> Answer {
        let answer = self.send_once(&body).await;
        if answer.outcome == Outcome::Status(401) {
            let changed = self.authorizer.refused();
            if reauthorize(answer.outcome, changed, false) {
                return self.send_once(&body).await;
            }
        }
        answer
    }

    /// The headers of one attempt carrying `body`: the fixed ones and fresh credentials.
    pub(crate) async fn attempt_headers(&self, body: &[u8]) -> Result<HeaderMap, AuthError> {
        let mut headers = self.headers.clone();
        self.authorizer
            .apply(&Method::POST, &self.url, &mut headers, body)
            .await?;
        Ok(headers)
    }

    /// Whether the endpoint's credentials can change while the agent runs.
    pub(crate) fn credentials_rotate(&self) -> bool {
        self.authorizer.can_rotate()
    }

    /// Every credential text a receiver could echo, longest first, so that a secret that
    /// contains another is replaced whole.
    pub(crate) fn secrets(&self) -> Vec<Secret> {
        let mut secrets = self.header_secrets.clone();
        secrets.extend(self.authorizer.secrets());
        secrets.retain(|s| !s.is_empty());
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        secrets
    }

    async fn send_once(&self, body: &Bytes) -> Answer {
        let headers = match self.attempt_headers(body).await {
            Ok(h) => h,
            Err(e) => {
                return Answer {
                    outcome: Outcome::Credentials,
                    retry_after: None,
                    message: redact(format!("credentials: {e}"), &self.secrets()),
                }
            }
        };
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    outcome: Outcome::Transport,
                    retry_after: None,
                    message: pooled::describe_error(&e),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Reading the body lets the connection be reused; a failure while reading does not
        // change what the status said.
        let mut raw = Vec::new();
        while raw.len() < MAX_BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Answer {
            outcome: Outcome::Status(status),
            retry_after,
            message: receiver_message(&raw, &self.secrets()),
        }
    }
}

/// What one attempt got back.
pub(crate) struct Answer {
    /// The status, or no answer at all.
    pub(crate) outcome: Outcome,
    /// The `Retry-After` header, if the receiver sent a readable one.
    pub(crate) retry_after: Option<String>,
    /// The receiver's message or the transport error, made safe to log.
    pub(crate) message: String,
}

/// Builds the headers every request carries (protocol headers, then the user's; credentials
/// are added per attempt by the [`Authorizer`]) and lists the credential texts among them.
pub(crate) fn request_headers(
    settings: &RemoteWriteSettings,
) -> Result<(HeaderMap, Vec<Secret>), String> {
    let mut h = HeaderMap::new();
    let mut secrets = Vec::new();
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    h.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static(REMOTE_WRITE_VERSION),
    );
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value_text) in &settings.headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "header {name} is set by pushprobe and cannot be overridden"
            ));
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        // The value is not quoted in the error: it may be a credential.
        let mut value = HeaderValue::from_str(value_text.expose())
            .map_err(|_| format!("header {name} has characters not allowed in a header"))?;
        if crate::secret::is_credential_header(name.as_str()) {
            value.set_sensitive(true);
            secrets.push(Secret::new(value_text.expose()));
        }
        h.insert(name, value);
    }
    secrets.retain(|s| !s.is_empty());
    Ok((h, secrets))
}

/// Replaces every credential text in `message`.
fn redact(mut message: String, secrets: &[Secret]) -> String {
    for s in secrets {
        if message.contains(s.expose()) {
            message = message.replace(s.expose(), "<redacted>");
        }
    }
    message
}

/// A receiver's response body as one short log-safe line, credentials removed.
fn receiver_message(raw: &[u8], secrets: &[Secret]) -> String {
    // Redacted before truncating, so a credential cut in half is still caught.
    let text = redact(String::from_utf8_lossy(raw).into_owned(), secrets);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() || raw.len() >= MAX_BODY_READ {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_messages_are_one_short_redacted_line() {
        let secrets = [Secret::new("hunter2")];
        assert_eq!(
            receiver_message(b"  bad\nthing hunter2\r\n", &secrets),
            "bad thing <redacted>"
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        let msg = receiver_message(long.as_bytes(), &[]);
        assert_eq!(msg.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(msg.ends_with('…'));
        assert_eq!(receiver_message(&[0xff, b'o', b'k'], &[]), "\u{fffd}ok");
    }
}
