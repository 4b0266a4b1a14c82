//! The request/response side of remote write, and the only part of [`super`] that knows
//! reqwest: the HTTP client of an endpoint, the headers every write request carries, and one
//! attempt (POST a body, read the status, `Retry-After` and a bounded part of the receiver's
//! message) turned into an [`Answer`] for [`super::retry`] to judge.
//!
//! Whatever a receiver says goes into logs, so it is made safe here, where it is read: the
//! message is cut to one short line and every credential text in it is replaced, because some
//! proxies echo the request headers in their error pages; and transport errors are described
//! without their URL, which may hold user info.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
    USER_AGENT,
};

use super::retry::Outcome;
use crate::config::{RemoteWriteSettings, RESERVED_HEADERS};
use crate::http_client::pooled;
use crate::secret::Secret;
use crate::sigv4::aws_credentials::{process_env, AwsCredentialsProvider, EnvLookup};
use crate::sigv4::SigV4Signer;

/// Protocol version header value for remote write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// `User-Agent` of every write request.
pub const USER_AGENT_VALUE: &str = crate::http_client::USER_AGENT;

/// Most bytes of a response body read, so a misbehaving receiver cannot make us buffer an
/// arbitrarily large error page.
const MAX_BODY_READ: usize = 16 * 1024;

/// Most characters of a receiver's error message put in a log line.
const MAX_MESSAGE_CHARS: usize = 512;

/// Sends write requests to one endpoint: its URL, client and headers.
pub(crate) struct WriteService {
    url: reqwest::Url,
    client: reqwest::Client,
    /// Every request's headers, credentials included (marked sensitive).
    headers: HeaderMap,
    /// Credential texts scrubbed from receiver messages before logging: some proxies echo
    /// the request headers in their error pages.
    secrets: Vec<Secret>,
    /// Signs every attempt anew when the endpoint uses AWS SigV4.
    sigv4: Option<Arc<SigV4Signer>>,
}

impl WriteService {
    /// Builds the client and headers for `settings`' endpoint; the error says what is wrong.
    pub(crate) fn new(settings: &RemoteWriteSettings) -> Result<Self, String> {
        let (client, headers, secrets) = endpoint_client(settings)?;
        Ok(WriteService {
            url: settings.url.clone(),
            client,
            headers,
            secrets,
            sigv4: signer(settings, process_env())?,
        })
    }

    /// Sends one request and reads (a bounded part of) the answer. A SigV4 endpoint's request
    /// is signed here, over the exact body sent, so that every retry carries a fresh date.
    pub(crate) async fn attempt(&self, body: Bytes) -> Answer {
        let mut headers = self.headers.clone();
        if let Some(signer) = &self.sigv4 {
            if let Err(e) = signer
                .apply(&http::Method::POST, &self.url, &mut headers, &body)
                .await
            {
                // No request was sent: the samples stay queued and the attempt is retried
                // with backoff, so credentials that come back (or a fixed profile file,
                // read again each time) resume delivery without a restart.
                return Answer {
                    outcome: Outcome::Transport,
                    retry_after: None,
                    message: e.to_string(),
                };
            }
        }
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
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
        let message = match &self.sigv4 {
            Some(signer) => {
                let mut secrets = self.secrets.clone();
                secrets.extend(signer.secrets());
                receiver_message(&raw, &secrets)
            }
            None => receiver_message(&raw, &self.secrets),
        };
        Answer {
            outcome: Outcome::Status(status),
            retry_after,
            message,
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

/// The SigV4 signer of an endpoint with a `sigv4` block: its region is the block's, else
/// `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's `region`; none is an error.
pub(crate) fn signer(
    settings: &RemoteWriteSettings,
    env: EnvLookup,
) -> Result<Option<Arc<SigV4Signer>>, String> {
    let Some(sigv4) = &settings.sigv4 else {
        return Ok(None);
    };
    let region_from_env = || env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let region = sigv4.region.clone().or_else(region_from_env);
    // The profile is only read for its region when neither the block nor the environment
    // names one; the provider below is then rebuilt with the region it found.
    let provider = |region: &str| {
        AwsCredentialsProvider::new(sigv4.credentials.clone(), region.into(), env.clone())
    };
    let region = match region {
        Some(r) => r,
        None => provider("").profile_region().ok_or_else(|| {
            "sigv4.region is not set, nor AWS_REGION, AWS_DEFAULT_REGION or the profile's region; \
             set sigv4.region to the workspace's region (e.g. \"eu-west-1\")"
                .to_string()
        })?,
    };
    let signer = SigV4Signer::new(region.clone(), sigv4.service.clone(), provider(&region));
    Ok(Some(Arc::new(signer)))
}

/// The HTTP client for one remote-write endpoint (its TLS settings and timeout), the headers
/// every request to it carries, and the credential values to scrub from receiver messages;
/// shared by the sample sender and the metadata sender.
pub(crate) fn endpoint_client(
    settings: &RemoteWriteSettings,
) -> Result<(reqwest::Client, HeaderMap, Vec<Secret>), String> {
    let (headers, secrets) = request_headers(settings)?;
    let builder = pooled::builder(&settings.url, &settings.tls, &[b"h2", b"http/1.1"])
        .map_err(|e| e.to_string())?;
    let client = pooled::build(builder.timeout(settings.timeout))?;
    Ok((client, headers, secrets))
}

/// Builds the headers of every request (protocol headers, the user's, then credentials) and
/// lists the credential texts they contain, longest first.
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
    if let Some(auth) = &settings.auth {
        let value = auth.header_value().map_err(|e| e.to_string())?;
        secrets.extend(auth.secrets());
        // Configured credentials win over a hand-written Authorization header.
        h.insert(AUTHORIZATION, value);
    }
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
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
