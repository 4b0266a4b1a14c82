//! AWS Signature Version 4 for remote write to Amazon Managed Service for Prometheus (and any
//! receiver behind SigV4).
//!
//! [`sign`] is the pure core: credentials, region, service, time and the request (method, URL,
//! headers, the exact body) in, the headers to add out (`Authorization`, `X-Amz-Date`,
//! `X-Amz-Security-Token`). The cryptography is AWS's own `aws-sigv4` crate. [`SigV4Signer`] is
//! the shell the [`super::Authorizer`] calls on every attempt: it fetches current credentials
//! from [`super::aws_credentials`] and signs at the current time, so a retry carries a fresh date and
//! signature. Its clock offset is a test seam for a skewed clock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::aws_credentials::{AwsCredentials, AwsCredentialsProvider, CredentialsError, EnvLookup};
use super::AuthError;
use crate::config::SigV4Settings;
use crate::secret::Secret;

/// The service remote write signs for unless `sigv4.service` says otherwise: Amazon Managed
/// Service for Prometheus.
pub const DEFAULT_SERVICE: &str = "aps";

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No usable credentials (see [`CredentialsError`] for configuration vs temporary).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The signer refused the request (a URL without a host, a header it cannot read); the
    /// message never contains a key or signature.
    #[error("SigV4 signing failed: {0}")]
    Signing(String),
}

impl SigV4Error {
    /// Whether a later attempt may succeed without a configuration change.
    pub fn is_temporary(&self) -> bool {
        matches!(self, SigV4Error::Credentials(e) if e.is_temporary())
    }

    /// The same failure as every credential kind reports it.
    pub fn into_auth_error(self) -> AuthError {
        match self {
            SigV4Error::Credentials(CredentialsError::Temporary(message)) => AuthError::Temporary {
                endpoint: "AWS credentials".into(),
                message,
            },
            SigV4Error::Credentials(CredentialsError::Configuration(message)) => {
                AuthError::Config {
                    key: "sigv4 (AWS credentials)".into(),
                    message,
                }
            }
            SigV4Error::Signing(message) => AuthError::Config {
                key: "sigv4".into(),
                message,
            },
        }
    }
}

/// The headers that sign a request: `Authorization` (marked sensitive), `X-Amz-Date` and, for
/// temporary credentials, `X-Amz-Security-Token` (sensitive). Every header in `headers` is
/// signed except those AWS leaves out (`User-Agent`, `Authorization`); `Host` is signed as the
/// URL gives it. The payload hash covers `body` as given: it must be the exact bytes sent.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
    method: &http::Method,
    url: &reqwest::Url,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    if url.host_str().is_none() {
        // aws-sigv4 needs a host to sign; a URL without one never reaches it.
        return Err("the URL has no host".into());
    }
    let identity = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_string(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        credentials.expiration,
        "pushprobe",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let mut texts = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let value = value
            .to_str()
            .map_err(|_| format!("header {name} is not text and cannot be signed"))?;
        texts.push((name.as_str(), value));
    }
    let request = SignableRequest::new(
        method.as_str(),
        url.as_str(),
        texts.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (added, _params) = instructions.into_parts();
    let mut out = Vec::with_capacity(added.len());
    for header in added {
        let name = HeaderName::from_static(header.name());
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| format!("the signer produced an unusable {name} header"))?;
        value.set_sensitive(header.sensitive() || name == http::header::AUTHORIZATION);
        out.push((name, value));
    }
    Ok(out)
}

/// How far the signer's clock is from the system clock: zero in the agent; tests skew it to
/// show that a receiver refuses a request signed at the wrong time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClockOffset {
    /// The system clock.
    #[default]
    None,
    /// Ahead of the system clock by this much.
    Ahead(Duration),
    /// Behind the system clock by this much.
    Behind(Duration),
}

impl ClockOffset {
    fn apply(self, now: SystemTime) -> SystemTime {
        match self {
            ClockOffset::None => now,
            ClockOffset::Ahead(d) => now + d,
            ClockOffset::Behind(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// Signs each request with current credentials for one region and service.
pub struct SigV4Signer {
    region: String,
    service: String,
    provider: AwsCredentialsProvider,
    clock: ClockOffset,
    /// The secret texts of the credentials last used, for scrubbing receiver messages.
    last_secrets: Mutex<Vec<Secret>>,
    /// The signatures of the last requests signed: a proxy that echoes request headers in its
    /// error page must not put one in a log line either.
    recent_signatures: Mutex<VecDeque<Secret>>,
}

/// How many recent signatures are scrubbed from receiver messages: more than the shards that
/// can be in flight at once.
const RECENT_SIGNATURES: usize = 128;

impl std::fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SigV4Signer {
    /// A signer for `region` and `service` with credentials from `provider`.
    pub fn new(region: String, service: String, provider: AwsCredentialsProvider) -> Self {
        SigV4Signer {
            region,
            service,
            provider,
            clock: ClockOffset::None,
            last_secrets: Mutex::new(Vec::new()),
            recent_signatures: Mutex::new(VecDeque::new()),
        }
    }

    /// The signer of a `sigv4` block. Its region is the block's, else `AWS_REGION`,
    /// `AWS_DEFAULT_REGION` or the profile's `region`; none is a configuration error.
    pub fn from_settings(settings: &SigV4Settings, env: EnvLookup) -> Result<Self, AuthError> {
        let provider = |region: &str| {
            AwsCredentialsProvider::new(settings.credentials.clone(), region.into(), env.clone())
        };
        let region = settings
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            // The profile is read for its region only when nothing else names one.
            .or_else(|| provider("").profile_region())
            .ok_or_else(|| AuthError::Config {
                key: "sigv4.region".into(),
                message: "is not set, nor AWS_REGION, AWS_DEFAULT_REGION or the profile's \
                          region; set it to the workspace's region (e.g. \"eu-west-1\")"
                    .into(),
            })?;
        Ok(SigV4Signer::new(
            region.clone(),
            settings.service.clone(),
            provider(&region),
        ))
    }

    /// The same signer with its clock offset (a test seam).
    pub fn with_clock_offset(mut self, clock: ClockOffset) -> Self {
        self.clock = clock;
        self
    }

    /// The region signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Signs a request in place: adds `Authorization`, `X-Amz-Date` and, for temporary
    /// credentials, `X-Amz-Security-Token` over the headers already in `headers` and the
    /// exact `body`. Called on every attempt, so each carries a fresh date.
    pub async fn apply(
        &self,
        method: &http::Method,
        url: &reqwest::Url,
        headers: &mut HeaderMap,
        body: &[u8],
    ) -> Result<(), SigV4Error> {
        let credentials = self.provider.credentials().await?;
        let signed = sign(
            &credentials,
            &self.region,
            &self.service,
            self.clock.apply(SystemTime::now()),
            method,
            url,
            headers,
            body,
        )
        .map_err(SigV4Error::Signing)?;
        if let Ok(mut last) = self.last_secrets.lock() {
            *last = credential_secrets(&credentials);
        }
        let signature = signed
            .iter()
            .find(|(name, _)| name == http::header::AUTHORIZATION)
            .and_then(|(_, v)| v.to_str().ok())
            .and_then(|v| v.rsplit_once("Signature="))
            .map(|(_, sig)| Secret::new(sig));
        if let (Some(signature), Ok(mut recent)) = (signature, self.recent_signatures.lock()) {
            if recent.len() >= RECENT_SIGNATURES {
                recent.pop_front();
            }
            recent.push_back(signature);
        }
        for (name, value) in signed {
            headers.insert(name, value);
        }
        Ok(())
    }

    /// The secret texts of the credentials last signed with (secret key, session token) and
    /// the signatures of the latest requests.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut out = self
            .last_secrets
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if let Ok(recent) = self.recent_signatures.lock() {
            out.extend(recent.iter().cloned());
        }
        out
    }
}

fn credential_secrets(c: &AwsCredentials) -> Vec<Secret> {
    let mut out = vec![c.secret_access_key.clone()];
    out.extend(c.session_token.clone());
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> AwsCredentials {
        // The AWS SigV4 test suite's credentials.
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
            expiration: None,
        }
    }

    fn at(rfc3339: &str) -> SystemTime {
        super::super::aws_credentials::parse_timestamp(rfc3339).unwrap()
    }

    #[test]
    fn the_aws_test_suite_get_vanilla_case_signs_as_published() {
        // "get-vanilla" from the AWS SigV4 test suite: GET / on example.amazonaws.com,
        // service "service", us-east-1, 2015-08-30T12:36:00Z.
        let url = reqwest::Url::parse("https://example.amazonaws.com/").unwrap();
        let out = sign(
            &example(),
            "us-east-1",
            "service",
            at("2015-08-30T12:36:00Z"),
            &http::Method::GET,
            &url,
            &HeaderMap::new(),
            b"",
        )
        .unwrap();
        let get = |n: &str| out.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("x-amz-date").unwrap(), "20150830T123600Z");
        let auth = get("authorization").unwrap();
        assert!(auth.is_sensitive());
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn the_body_headers_and_session_token_are_signed() {
        let url = reqwest::Url::parse("http://127.0.0.1:9090/api/v1/remote_write").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-encoding", HeaderValue::from_static("snappy"));
        headers.insert("user-agent", HeaderValue::from_static("pushprobe"));
        let mut creds = example();
        creds.session_token = Some(Secret::new("session-tok"));
        let t = at("2026-01-01T00:00:00Z");
        let sig = |body: &[u8]| {
            let out = sign(
                &creds,
                "eu-west-1",
                "aps",
                t,
                &http::Method::POST,
                &url,
                &headers,
                body,
            )
            .unwrap();
            out.into_iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.to_str().unwrap().to_string())
                .unwrap()
        };
        let a = sig(b"one");
        assert_ne!(a, sig(b"two"), "the payload hash covers the body");
        assert!(
            a.contains("SignedHeaders=content-encoding;host;x-amz-date;x-amz-security-token,"),
            "{a}"
        );
        assert!(a.contains("/eu-west-1/aps/aws4_request"), "{a}");
        let out = sign(
            &creds,
            "eu-west-1",
            "aps",
            t,
            &http::Method::POST,
            &url,
            &headers,
            b"",
        )
        .unwrap();
        let token = out
            .iter()
            .find(|(k, _)| k == "x-amz-security-token")
            .unwrap();
        assert!(token.1.is_sensitive());
    }

    #[tokio::test]
    async fn secrets_hold_the_key_the_token_and_recent_signatures() {
        let settings = aws_credentials_settings();
        let signer = SigV4Signer::new(
            "eu-west-1".into(),
            "aps".into(),
            AwsCredentialsProvider::new(
                settings,
                "eu-west-1".into(),
                std::sync::Arc::new(|_| None),
            ),
        );
        let url = reqwest::Url::parse("http://127.0.0.1:9/w").unwrap();
        let mut headers = HeaderMap::new();
        signer
            .apply(&http::Method::POST, &url, &mut headers, b"x")
            .await
            .unwrap();
        let auth = headers
            .get(http::header::AUTHORIZATION)
            .unwrap()
            .to_str()
            .unwrap();
        let signature = auth.rsplit_once("Signature=").unwrap().1;
        let secrets: Vec<String> = signer.secrets().iter().map(|s| s.expose().into()).collect();
        assert!(secrets.contains(&"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string()));
        assert!(secrets.contains(&signature.to_string()), "{secrets:?}");
        assert!(!format!("{signer:?}").contains("wJalr"));
    }

    fn aws_credentials_settings() -> super::super::aws_credentials::AwsCredentialsSettings {
        super::super::aws_credentials::AwsCredentialsSettings {
            static_keys: Some((
                "AKIDEXAMPLE".into(),
                Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").into(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn clock_offsets_move_the_signing_time() {
        let t = at("2026-01-01T00:10:00Z");
        assert_eq!(ClockOffset::None.apply(t), t);
        assert_eq!(
            ClockOffset::Ahead(Duration::from_secs(600)).apply(t),
            at("2026-01-01T00:20:00Z")
        );
        assert_eq!(
            ClockOffset::Behind(Duration::from_secs(600)).apply(t),
            at("2026-01-01T00:00:00Z")
        );
    }
}
