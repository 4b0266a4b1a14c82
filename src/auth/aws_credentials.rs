//! AWS credentials for SigV4 signing, found in the order the AWS SDKs look for them and kept
//! until shortly before they expire.
//!
//! The chain: the `sigv4` block's own `access_key` + `secret_key` / `secret_key_file`; else its
//! `profile` alone; else the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`); the shared credentials and config files (`AWS_SHARED_CREDENTIALS_FILE`,
//! `AWS_CONFIG_FILE`, profile `AWS_PROFILE` or `default`); a web identity token
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, EKS); the container credentials endpoint
//! (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` / `_FULL_URI`, with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`); and the instance metadata service, IMDSv2
//! (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, off with `AWS_EC2_METADATA_DISABLED=true`). With
//! `role_arn`, the credentials found assume that role through STS (`AWS_ENDPOINT_URL_STS`
//! overrides its endpoint).
//!
//! The parsers (profile files, credential JSON, the STS XML answer, the refresh rule) are pure
//! functions; [`AwsCredentialsProvider`] is the I/O shell around them. Endpoints come from
//! outside, so every request has a short timeout and every answer is read bounded; an error
//! says which endpoint or file failed and whether fixing the configuration is the cure
//! ([`CredentialsError::Configuration`]) or the next attempt may succeed
//! ([`CredentialsError::Temporary`]). Keys, tokens and signatures never appear in an error or
//! a log line.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde::Deserialize;

use super::SecretSource;
use crate::config::read_secret_file;
use crate::config::TlsConfig;
use crate::secret::{redact_url, Secret};

/// Credentials are refreshed this long before they expire, as the AWS SDKs do, so that a
/// request is never signed with credentials about to lapse in flight.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Least time between two refreshes while credentials sit inside [`REFRESH_AHEAD`]: an
/// endpoint that keeps handing out the same short-lived credentials is not asked on every
/// request.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait for a metadata endpoint (container or instance): they answer in
/// milliseconds when present, and one that hangs must not hold up the queue.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for an STS AssumeRole answer.
pub const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes read from a credentials endpoint's answer or a shared file.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The instance metadata service's address when `AWS_EC2_METADATA_SERVICE_ENDPOINT` is unset.
const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// The container credentials host for `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
const CONTAINER_HOST: &str = "http://169.254.170.2";

/// A set of AWS credentials; `Debug` shows none of the secrets.
#[derive(Clone, PartialEq)]
pub struct AwsCredentials {
    /// The access key id (`AKIA…`, `ASIA…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials stop working.
    pub expiration: Option<SystemTime>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even the key id stays out: logs name the source instead.
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &"<redacted>")
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Why no credentials could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The configuration, the environment or a file it names is wrong; fixing it is the cure
    /// (files are read again on the next attempt).
    #[error("AWS credentials: {0}")]
    Configuration(String),
    /// An endpoint failed, hung or answered nonsense; a later attempt may succeed.
    #[error("AWS credentials: {0}")]
    Temporary(String),
}

impl CredentialsError {
    /// Whether a later attempt may succeed without a configuration change.
    pub fn is_temporary(&self) -> bool {
        matches!(self, CredentialsError::Temporary(_))
    }
}

/// What the `sigv4` block says about credentials.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsCredentialsSettings {
    /// `access_key` and its secret key (`secret_key`, or `secret_key_file`, re-read when it
    /// changes).
    pub static_keys: Option<(String, SecretSource)>,
    /// `profile`: read this profile of the shared files and nothing else.
    pub profile: Option<String>,
    /// `role_arn`: assume this role with the credentials found.
    pub role_arn: Option<String>,
}

/// Reads an environment variable; the process environment in the agent, a map in tests.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment, empty values read as unset (as the AWS SDKs do).
pub fn process_env() -> EnvLookup {
    Arc::new(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

// ---------------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------------

/// Sections of an INI-style AWS file: section name → key → value. Keys are lower-cased;
/// `#` and `;` start comments; lines that are neither a section, a key nor a comment are
/// skipped, as the AWS CLI does with continuation lines it does not need.
pub fn parse_profile_file(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim();
            // "[profile  x]" and "[profile x]" name the same profile.
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
            continue;
        };
        if let Some(s) = sections.get_mut(section) {
            s.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    sections
}

/// A profile's keys from the credentials file (`[name]`) over those of the config file
/// (`[profile name]`, or `[default]`); `None` when neither file has the profile.
pub fn find_profile(
    name: &str,
    credentials_file: &HashMap<String, HashMap<String, String>>,
    config_file: &HashMap<String, HashMap<String, String>>,
) -> Option<HashMap<String, String>> {
    let from_config = config_file.get(&format!("profile {name}")).or_else(|| {
        (name == "default")
            .then(|| config_file.get("default"))
            .flatten()
    });
    let from_credentials = credentials_file.get(name);
    if from_config.is_none() && from_credentials.is_none() {
        return None;
    }
    let mut keys = from_config.cloned().unwrap_or_default();
    keys.extend(from_credentials.cloned().unwrap_or_default());
    Some(keys)
}

/// Static credentials from a profile's keys; the error says what the profile lacks.
pub fn credentials_from_profile(
    name: &str,
    keys: &HashMap<String, String>,
    files: &str,
) -> Result<AwsCredentials, CredentialsError> {
    let id = keys.get("aws_access_key_id").filter(|v| !v.is_empty());
    let secret = keys.get("aws_secret_access_key").filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: Secret::new(secret.clone()),
            session_token: keys
                .get("aws_session_token")
                .filter(|v| !v.is_empty())
                .map(|t| Secret::new(t.clone())),
            expiration: None,
        }),
        _ => Err(CredentialsError::Configuration(format!(
            "profile {name:?} in {files} has no aws_access_key_id and aws_secret_access_key; \
             pushprobe reads static keys from profiles (for a role, set sigv4.role_arn)"
        ))),
    }
}

/// The JSON the container and instance metadata endpoints answer with.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsJson {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

/// Credentials from a metadata endpoint's JSON answer; `endpoint` names it in the error.
pub fn parse_credentials_json(
    body: &[u8],
    endpoint: &str,
) -> Result<AwsCredentials, CredentialsError> {
    let bad = |what: String| CredentialsError::Temporary(format!("{endpoint} {what}"));
    let json: CredentialsJson = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "answered something that is not credentials JSON ({e})"
        ))
    })?;
    if let Some(code) = json.code.as_deref().filter(|c| *c != "Success") {
        let message = json.message.as_deref().unwrap_or("");
        return Err(bad(format!(
            "answered code {code:?}: {}",
            one_line(message, 200)
        )));
    }
    let (Some(id), Some(secret)) = (
        json.access_key_id.filter(|v| !v.is_empty()),
        json.secret_access_key.filter(|v| !v.is_empty()),
    ) else {
        return Err(bad(
            "answered JSON without AccessKeyId and SecretAccessKey".into()
        ));
    };
    let expiration = match json.expiration.as_deref() {
        Some(text) => Some(
            parse_timestamp(text)
                .ok_or_else(|| bad(format!("answered an unreadable Expiration {text:?}")))?,
        ),
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: id,
        secret_access_key: Secret::new(secret),
        session_token: json.token.filter(|t| !t.is_empty()).map(Secret::new),
        expiration,
    })
}

/// Credentials from an STS `AssumeRoleResponse`, or the error an `ErrorResponse` carries:
/// a refusal (`AccessDenied`, a malformed ARN) is a configuration error, a throttle or an
/// internal error is temporary.
pub fn parse_assume_role_xml(
    status: u16,
    body: &[u8],
    endpoint: &str,
) -> Result<AwsCredentials, CredentialsError> {
    let text = String::from_utf8_lossy(body);
    let doc = roxmltree::Document::parse(&text).map_err(|e| {
        CredentialsError::Temporary(format!(
            "STS at {endpoint} answered status {status} with something that is not XML ({e})"
        ))
    })?;
    let find = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(name))
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    if !(200..300).contains(&status) {
        let code = find("Code").unwrap_or("unknown");
        let message = one_line(find("Message").unwrap_or(""), 300);
        let text =
            format!("STS at {endpoint} refused AssumeRole with status {status}: {code}: {message}");
        let temporary = status >= 500
            || status == 429
            || matches!(
                code,
                "Throttling" | "ThrottlingException" | "RequestExpired"
            );
        return Err(if temporary {
            CredentialsError::Temporary(text)
        } else {
            CredentialsError::Configuration(text)
        });
    }
    let (Some(id), Some(secret), Some(token)) = (
        find("AccessKeyId"),
        find("SecretAccessKey"),
        find("SessionToken"),
    ) else {
        return Err(CredentialsError::Temporary(format!(
            "STS at {endpoint} answered without AccessKeyId, SecretAccessKey and SessionToken"
        )));
    };
    let expiration = match find("Expiration") {
        Some(t) => Some(parse_timestamp(t).ok_or_else(|| {
            CredentialsError::Temporary(format!(
                "STS at {endpoint} answered an unreadable Expiration {t:?}"
            ))
        })?),
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: id.to_string(),
        secret_access_key: Secret::new(secret),
        session_token: Some(Secret::new(token)),
        expiration,
    })
}

/// An RFC 3339 time (`2026-12-06T21:10:00Z`) as a `SystemTime`.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// Whether credentials obtained at `fetched_at` must be fetched again at `now`: never for
/// credentials without an expiry; always once they have expired; within [`REFRESH_AHEAD`] of
/// expiring, at most once per [`MIN_REFRESH_INTERVAL`].
pub fn refresh_due(
    expiration: Option<SystemTime>,
    fetched_at: SystemTime,
    now: SystemTime,
) -> bool {
    let Some(expiration) = expiration else {
        return false;
    };
    if now >= expiration {
        return true;
    }
    let close = expiration
        .duration_since(now)
        .map_or(true, |left| left < REFRESH_AHEAD);
    let rested = now
        .duration_since(fetched_at)
        .is_ok_and(|since| since >= MIN_REFRESH_INTERVAL);
    close && rested
}

/// A remote text cut to one line of at most `max` characters, for an error message.
fn one_line(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The query-string encoding STS form bodies use (RFC 3986 unreserved characters kept).
fn form_encode(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

// ---------------------------------------------------------------------------------------------
// The I/O shell
// ---------------------------------------------------------------------------------------------

/// Credentials last obtained, and when.
struct Cached {
    credentials: AwsCredentials,
    fetched_at: SystemTime,
    source: String,
}

/// Finds credentials through the chain, assumes `role_arn` if set, and caches what it got
/// until [`refresh_due`]; cheap to share behind an `Arc`.
pub struct AwsCredentialsProvider {
    settings: AwsCredentialsSettings,
    /// Region, for the STS endpoint.
    region: String,
    env: EnvLookup,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl AwsCredentialsProvider {
    /// A provider for the `sigv4` block's settings, reading the environment through `env`.
    pub fn new(settings: AwsCredentialsSettings, region: String, env: EnvLookup) -> Self {
        AwsCredentialsProvider {
            settings,
            region,
            env,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Current credentials: the cached ones, or fresh ones when a refresh is due. A failed
    /// refresh keeps credentials that have not yet expired.
    pub async fn credentials(&self) -> Result<AwsCredentials, CredentialsError> {
        // Configured keys are not cached: their file is checked on every use, so a rotated
        // key is signed with from the next request on.
        if self.settings.static_keys.is_some() && self.settings.role_arn.is_none() {
            return self.base().await.map(|(c, _)| c);
        }
        let now = SystemTime::now();
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if !refresh_due(c.credentials.expiration, c.fetched_at, now) {
                return Ok(c.credentials.clone());
            }
        }
        match self.resolve().await {
            Ok((credentials, source)) => {
                if let Some(exp) = credentials.expiration.filter(|e| *e <= now) {
                    return Err(CredentialsError::Temporary(format!(
                        "{source} gave credentials that expired at {}",
                        httpdate::fmt_http_date(exp)
                    )));
                }
                let changed = cache.as_ref().is_none_or(|c| c.source != source);
                if changed {
                    tracing::info!(target: "pushprobe::sigv4", source = %source, "using AWS credentials");
                }
                *cache = Some(Cached {
                    credentials: credentials.clone(),
                    fetched_at: now,
                    source,
                });
                Ok(credentials)
            }
            Err(e) => match cache.as_ref() {
                Some(c) if c.credentials.expiration.is_none_or(|exp| now < exp) => {
                    tracing::warn!(target: "pushprobe::sigv4", error = %e, "refreshing AWS credentials failed; the current ones are still valid and kept");
                    Ok(c.credentials.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// The base credentials, then the role they assume if any, with a name of where they
    /// came from.
    async fn resolve(&self) -> Result<(AwsCredentials, String), CredentialsError> {
        let (base, source) = self.base().await?;
        match &self.settings.role_arn {
            Some(arn) => {
                let assumed = self.assume_role(arn, &base).await?;
                Ok((assumed, format!("role {arn} assumed with {source}")))
            }
            None => Ok((base, source)),
        }
    }

    async fn base(&self) -> Result<(AwsCredentials, String), CredentialsError> {
        if let Some((id, secret)) = &self.settings.static_keys {
            let secret = secret.current();
            if secret.is_empty() {
                return Err(CredentialsError::Configuration(
                    "sigv4.secret_key is empty".into(),
                ));
            }
            let credentials = AwsCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret,
                session_token: None,
                expiration: None,
            };
            return Ok((credentials, "the sigv4 access_key".into()));
        }
        if let Some(profile) = &self.settings.profile {
            let (c, files) = self.profile(profile, true)?.ok_or_else(|| {
                CredentialsError::Configuration(format!("profile {profile:?} is missing"))
            })?;
            return Ok((c, format!("profile {profile:?} of {files}")));
        }
        let mut tried = Vec::new();
        // 1. The environment.
        let id = (self.env)("AWS_ACCESS_KEY_ID");
        let secret = (self.env)("AWS_SECRET_ACCESS_KEY");
        match (id, secret) {
            (Some(id), Some(secret)) => {
                let credentials = AwsCredentials {
                    access_key_id: id,
                    secret_access_key: Secret::new(secret),
                    session_token: (self.env)("AWS_SESSION_TOKEN").map(Secret::new),
                    expiration: None,
                };
                return Ok((credentials, "the environment (AWS_ACCESS_KEY_ID)".into()));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(CredentialsError::Configuration(
                    "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set in the \
                     environment; set both or neither"
                        .into(),
                ))
            }
            (None, None) => tried.push("AWS_ACCESS_KEY_ID (unset)".to_string()),
        }
        // 2. The shared files: a profile named by AWS_PROFILE must exist.
        let (profile, explicit) = match (self.env)("AWS_PROFILE") {
            Some(p) => (p, true),
            None => ("default".to_string(), false),
        };
        match self.profile(&profile, explicit)? {
            Some((c, files)) => return Ok((c, format!("profile {profile:?} of {files}"))),
            None => tried.push(format!("profile {profile:?} (not in the shared files)")),
        }
        // 3. A web identity token (EKS IAM roles for service accounts).
        if let Some(c) = self.web_identity().await? {
            return Ok(c);
        }
        tried.push("a web identity (AWS_WEB_IDENTITY_TOKEN_FILE unset)".into());
        // 4. The container endpoint.
        if let Some(c) = self.container().await? {
            return Ok(c);
        }
        tried.push("the container endpoint (AWS_CONTAINER_CREDENTIALS_*_URI unset)".into());
        // 5. The instance metadata service.
        if (self.env)("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            tried.push("instance metadata (AWS_EC2_METADATA_DISABLED)".into());
            return Err(CredentialsError::Configuration(format!(
                "none found; tried {}",
                tried.join(", ")
            )));
        }
        self.imds().await.map_err(|e| match e {
            CredentialsError::Temporary(m) => CredentialsError::Temporary(format!(
                "none found; tried {}, and {m}",
                tried.join(", ")
            )),
            other => other,
        })
    }

    /// The shared files' paths: the environment's, else `~/.aws/credentials` and `~/.aws/config`.
    fn shared_files(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        let home = (self.env)("HOME").map(PathBuf::from);
        let credentials = (self.env)("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let config = (self.env)("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        (credentials, config)
    }

    /// A profile's static credentials and the files read; `None` when the profile is in
    /// neither file and `explicit` is false. A profile asked for by name that is missing is
    /// a configuration error naming the profile and the files.
    fn profile(
        &self,
        name: &str,
        explicit: bool,
    ) -> Result<Option<(AwsCredentials, String)>, CredentialsError> {
        let (credentials_path, config_path) = self.shared_files();
        let credentials = read_profile_file(credentials_path.as_deref())?;
        let config = read_profile_file(config_path.as_deref())?;
        let files = [credentials_path, config_path]
            .iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ");
        match find_profile(name, &credentials, &config) {
            Some(keys) => credentials_from_profile(name, &keys, &files).map(|c| Some((c, files))),
            None if explicit => Err(CredentialsError::Configuration(format!(
                "profile {name:?} is not in {}; add it or name another profile",
                if files.is_empty() {
                    "any shared file (HOME is unset)".into()
                } else {
                    files
                }
            ))),
            None => Ok(None),
        }
    }

    /// A region from the profile the chain would read (`AWS_PROFILE`, `profile` or `default`).
    pub fn profile_region(&self) -> Option<String> {
        let name = self
            .settings
            .profile
            .clone()
            .or_else(|| (self.env)("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let (credentials_path, config_path) = self.shared_files();
        let credentials = read_profile_file(credentials_path.as_deref()).ok()?;
        let config = read_profile_file(config_path.as_deref()).ok()?;
        find_profile(&name, &credentials, &config)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }

    /// Credentials from the container endpoint, if its variables are set.
    async fn container(&self) -> Result<Option<(AwsCredentials, String)>, CredentialsError> {
        let url = match (
            (self.env)("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            (self.env)("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => format!("{CONTAINER_HOST}{relative}"),
            (None, Some(full)) => full,
            (None, None) => return Ok(None),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| {
            CredentialsError::Configuration(format!(
                "the container credentials URI is not a URL ({e})"
            ))
        })?;
        let shown = format!("the container credentials endpoint {}", redact_url(&url));
        let token = match (self.env)("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(path) => Some(read_secret_file(Path::new(&path)).map_err(|e| {
                CredentialsError::Configuration(format!(
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: {e}"
                ))
            })?),
            None => (self.env)("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(Secret::new),
        };
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                CredentialsError::Configuration(
                    "the container authorization token has characters not allowed in a header"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = metadata_client(&url)?;
        let (status, body) = fetch(client.get(url.clone()).headers(headers), &shown).await?;
        if !(200..300).contains(&status) {
            return Err(CredentialsError::Temporary(format!(
                "{shown} answered status {status}"
            )));
        }
        let c = parse_credentials_json(&body, &shown)?;
        Ok(Some((c, shown)))
    }

    /// Credentials from the instance metadata service, IMDSv2: a session token, the role's
    /// name, then the role's credentials.
    async fn imds(&self) -> Result<(AwsCredentials, String), CredentialsError> {
        let endpoint = (self.env)("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.into());
        let base = reqwest::Url::parse(&endpoint).map_err(|e| {
            CredentialsError::Configuration(format!(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT is not a URL ({e})"
            ))
        })?;
        let shown = format!("the instance metadata endpoint {}", redact_url(&base));
        let join = |path: &str| {
            base.join(path).map_err(|e| {
                CredentialsError::Configuration(format!("{shown}: cannot add {path} ({e})"))
            })
        };
        let client = metadata_client(&base)?;
        let (status, token) = fetch(
            client
                .put(join("/latest/api/token")?)
                .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
            &shown,
        )
        .await?;
        let token = String::from_utf8(token)
            .ok()
            .filter(|_| (200..300).contains(&status))
            .and_then(|t| {
                let mut v = HeaderValue::from_str(t.trim()).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
            .ok_or_else(|| {
                CredentialsError::Temporary(format!(
                    "{shown} gave no IMDSv2 session token (status {status})"
                ))
            })?;
        let token_header = HeaderName::from_static("x-aws-ec2-metadata-token");
        let roles_path = "/latest/meta-data/iam/security-credentials/";
        let (status, roles) = fetch(
            client
                .get(join(roles_path)?)
                .header(token_header.clone(), token.clone()),
            &shown,
        )
        .await?;
        let roles = String::from_utf8_lossy(&roles).into_owned();
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .filter(|_| (200..300).contains(&status))
            .ok_or_else(|| {
                CredentialsError::Temporary(format!(
                    "{shown} names no instance role (status {status}); attach an instance profile"
                ))
            })?
            .to_string();
        let (status, body) = fetch(
            client
                .get(join(&format!("{roles_path}{}", form_encode(&role)))?)
                .header(token_header, token),
            &shown,
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(CredentialsError::Temporary(format!(
                "{shown} answered status {status} for role {role:?}"
            )));
        }
        let c = parse_credentials_json(&body, &shown)?;
        Ok((c, format!("{shown} (role {role:?})")))
    }

    /// Temporary credentials for `role_arn`, from STS AssumeRole signed with `base`.
    async fn assume_role(
        &self,
        role_arn: &str,
        base: &AwsCredentials,
    ) -> Result<AwsCredentials, CredentialsError> {
        let query = format!(
            "Action=AssumeRole&RoleArn={}&RoleSessionName={}&Version=2011-06-15",
            form_encode(role_arn),
            form_encode(&session_name())
        );
        self.sts(query, Some(base)).await
    }

    /// Temporary credentials from a web identity token (EKS IAM roles for service accounts):
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`, if both are set. The token file is
    /// read on each refresh, as the cluster rotates it.
    async fn web_identity(&self) -> Result<Option<(AwsCredentials, String)>, CredentialsError> {
        let (Some(token_file), Some(role_arn)) = (
            (self.env)("AWS_WEB_IDENTITY_TOKEN_FILE"),
            (self.env)("AWS_ROLE_ARN"),
        ) else {
            return Ok(None);
        };
        let token = read_secret_file(Path::new(&token_file)).map_err(|e| {
            CredentialsError::Configuration(format!("AWS_WEB_IDENTITY_TOKEN_FILE: {e}"))
        })?;
        let session = (self.env)("AWS_ROLE_SESSION_NAME").unwrap_or_else(session_name);
        let query = format!(
            "Action=AssumeRoleWithWebIdentity&RoleArn={}&RoleSessionName={}&Version=2011-06-15&WebIdentityToken={}",
            form_encode(&role_arn),
            form_encode(&session),
            form_encode(token.expose())
        );
        let c = self.sts(query, None).await?;
        Ok(Some((c, format!("web identity role {role_arn}"))))
    }

    /// Calls STS with a form `query`, signed with `signer` when given (AssumeRole) and
    /// unsigned otherwise (AssumeRoleWithWebIdentity carries its own token).
    async fn sts(
        &self,
        query: String,
        signer: Option<&AwsCredentials>,
    ) -> Result<AwsCredentials, CredentialsError> {
        let endpoint = (self.env)("AWS_ENDPOINT_URL_STS")
            .or_else(|| (self.env)("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com/", self.region));
        let url = reqwest::Url::parse(&endpoint).map_err(|e| {
            CredentialsError::Configuration(format!(
                "the STS endpoint {endpoint:?} is not a URL ({e})"
            ))
        })?;
        let shown = redact_url(&url);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        if let Some(base) = signer {
            let signed = super::sigv4::sign(
                base,
                &self.region,
                "sts",
                SystemTime::now(),
                &http::Method::POST,
                &url,
                &headers,
                query.as_bytes(),
            )
            .map_err(|e| {
                CredentialsError::Configuration(format!("signing the STS request: {e}"))
            })?;
            headers.extend(signed);
        }
        // Direct, like the AWS SDKs' default: the remote-write endpoint's proxy keys are for
        // the receiver.
        let builder = crate::http_client::pooled::builder(
            &url,
            &TlsConfig::default(),
            &[b"http/1.1"],
            &Default::default(),
        )
        .map_err(|e| CredentialsError::Configuration(format!("STS at {shown}: {e}")))?;
        let client = crate::http_client::pooled::build(builder.timeout(STS_TIMEOUT))
            .map_err(|e| CredentialsError::Configuration(format!("STS at {shown}: {e}")))?;
        let what = format!("STS at {shown}");
        let (status, answer) =
            fetch(client.post(url.clone()).headers(headers).body(query), &what).await?;
        parse_assume_role_xml(status, &answer, &shown)
    }
}

/// A role session name that tells pushprobe's sessions apart in CloudTrail.
fn session_name() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("pushprobe-{secs}")
}

/// Reads and parses a shared AWS file; a file that does not exist is empty.
fn read_profile_file(
    path: Option<&Path>,
) -> Result<HashMap<String, HashMap<String, String>>, CredentialsError> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => {
            return Err(CredentialsError::Configuration(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
        Ok(m) if !m.is_file() || m.len() > 16 * MAX_ANSWER_BYTES as u64 => {
            return Err(CredentialsError::Configuration(format!(
                "{} is not a regular AWS credentials or config file of at most 1 MiB",
                path.display()
            )))
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        CredentialsError::Configuration(format!("cannot read {}: {e}", path.display()))
    })?;
    Ok(parse_profile_file(&text))
}

/// A client for a metadata endpoint: short timeouts, as the endpoint is local or absent.
fn metadata_client(url: &reqwest::Url) -> Result<reqwest::Client, CredentialsError> {
    // Never through a proxy: the endpoint is link-local or on the host.
    let builder = crate::http_client::pooled::builder(
        url,
        &TlsConfig::default(),
        &[b"http/1.1"],
        &Default::default(),
    )
    .map_err(|e| CredentialsError::Configuration(format!("{}: {e}", redact_url(url))))?;
    crate::http_client::pooled::build(
        builder
            .connect_timeout(METADATA_TIMEOUT / 2)
            .timeout(METADATA_TIMEOUT),
    )
    .map_err(CredentialsError::Configuration)
}

/// Sends a request and reads at most [`MAX_ANSWER_BYTES`] of the answer; a transport failure
/// or a timeout is temporary and names `what`.
async fn fetch(
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, Vec<u8>), CredentialsError> {
    let failed = |e: &reqwest::Error| {
        let how = if e.is_timeout() {
            "did not answer in time".to_string()
        } else {
            crate::http_client::pooled::describe_error(e)
        };
        CredentialsError::Temporary(format!("{what} failed: {how}"))
    };
    let mut response = request.send().await.map_err(|e| failed(&e))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(failed(&e)),
        }
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "
# a comment
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret-default

[ci]
aws_access_key_id=AKIDCI
aws_secret_access_key=secret-ci
aws_session_token = token-ci
";
    const CONFIG: &str = "
[default]
region = eu-west-1
[profile   ci]
region = us-east-2
[profile roles]
role_arn = arn:aws:iam::123:role/x
source_profile = default
";

    #[test]
    fn profiles_merge_the_credentials_file_over_the_config_file() {
        let creds = parse_profile_file(CREDENTIALS);
        let config = parse_profile_file(CONFIG);
        let ci = find_profile("ci", &creds, &config).unwrap();
        assert_eq!(ci["region"], "us-east-2");
        let c = credentials_from_profile("ci", &ci, "f").unwrap();
        assert_eq!(c.access_key_id, "AKIDCI");
        assert_eq!(c.secret_access_key.expose(), "secret-ci");
        assert_eq!(c.session_token.unwrap().expose(), "token-ci");
        let default = find_profile("default", &creds, &config).unwrap();
        assert_eq!(default["region"], "eu-west-1");
        assert!(find_profile("nope", &creds, &config).is_none());
        // A profile without static keys is named in the error, its contents are not.
        let roles = find_profile("roles", &creds, &config).unwrap();
        let e = credentials_from_profile("roles", &roles, "~/.aws/config").unwrap_err();
        assert!(!e.is_temporary());
        assert!(
            e.to_string().contains("profile \"roles\" in ~/.aws/config"),
            "{e}"
        );
    }

    #[test]
    fn metadata_json_is_read_and_garbage_is_a_clear_temporary_error() {
        let ok = br#"{"Code":"Success","AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-02T03:04:05Z"}"#;
        let c = parse_credentials_json(ok, "ep").unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(c.expiration, parse_timestamp("2030-01-02T03:04:05+00:00"));
        for (body, want) in [
            (
                &b"<html>oops</html>"[..],
                "ep answered something that is not credentials JSON",
            ),
            (
                br#"{"Code":"Failed","Message":"no role"}"#,
                "answered code \"Failed\": no role",
            ),
            (
                br#"{"AccessKeyId":"A"}"#,
                "without AccessKeyId and SecretAccessKey",
            ),
            (
                br#"{"AccessKeyId":"A","SecretAccessKey":"sec-x","Expiration":"soon"}"#,
                "unreadable Expiration \"soon\"",
            ),
        ] {
            let e = parse_credentials_json(body, "ep").unwrap_err();
            assert!(e.is_temporary());
            assert!(e.to_string().contains(want), "{e}");
            assert!(!e.to_string().contains("sec-x"), "{e}");
        }
    }

    #[test]
    fn sts_answers_and_refusals_are_told_apart() {
        let ok = br#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <Credentials>
      <AccessKeyId>ASIAROLE</AccessKeyId>
      <SecretAccessKey>role-secret</SecretAccessKey>
      <SessionToken>role&amp;token</SessionToken>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;
        let c = parse_assume_role_xml(200, ok, "sts").unwrap();
        assert_eq!(c.access_key_id, "ASIAROLE");
        assert_eq!(c.session_token.unwrap().expose(), "role&token");
        let denied = br#"<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed</Message></Error></ErrorResponse>"#;
        let e = parse_assume_role_xml(403, denied, "sts").unwrap_err();
        assert!(!e.is_temporary());
        assert!(e.to_string().contains("AccessDenied: not allowed"), "{e}");
        let e = parse_assume_role_xml(503, b"<html", "sts").unwrap_err();
        assert!(e.is_temporary(), "{e}");
        let e = parse_assume_role_xml(200, b"<x/>", "sts").unwrap_err();
        assert!(e.is_temporary(), "{e}");
    }

    #[test]
    fn refresh_is_due_ahead_of_expiry_and_not_on_every_call() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = |s| t0 + Duration::from_secs(s);
        // No expiry: never.
        assert!(!refresh_due(None, t0, later(100_000)));
        // An hour left: not yet.
        assert!(!refresh_due(Some(later(3600)), t0, later(10)));
        // Inside the window: once the minimum interval has passed.
        assert!(refresh_due(Some(later(3600)), t0, later(3600 - 60)));
        assert!(!refresh_due(Some(later(120)), t0, t0));
        assert!(refresh_due(Some(later(120)), t0, later(2)));
        // Expired: always.
        assert!(refresh_due(Some(later(1)), later(1), later(1)));
    }

    fn env(pairs: &[(&str, &str)]) -> EnvLookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(move |name| map.get(name).cloned())
    }

    #[tokio::test]
    async fn the_chain_reads_the_environment_then_the_shared_files() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(&creds, CREDENTIALS).unwrap();
        std::fs::write(&config, CONFIG).unwrap();
        let files = [
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ];
        let provider = |settings, pairs: &[(&str, &str)]| {
            let mut all = files.to_vec();
            all.extend_from_slice(pairs);
            AwsCredentialsProvider::new(settings, "eu-west-1".into(), env(&all))
        };
        let p = provider(
            AwsCredentialsSettings::default(),
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "t"),
            ],
        );
        let c = p.credentials().await.unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.session_token.unwrap().expose(), "t");
        let p = provider(AwsCredentialsSettings::default(), &[]);
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIDDEFAULT");
        assert_eq!(p.profile_region().as_deref(), Some("eu-west-1"));
        let p = provider(AwsCredentialsSettings::default(), &[("AWS_PROFILE", "ci")]);
        assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIDCI");
        assert_eq!(p.profile_region().as_deref(), Some("us-east-2"));
        // A missing profile, named by the environment or the config, names itself and the files.
        for p in [
            provider(
                AwsCredentialsSettings::default(),
                &[("AWS_PROFILE", "prod")],
            ),
            provider(
                AwsCredentialsSettings {
                    profile: Some("prod".into()),
                    ..Default::default()
                },
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                    ("AWS_SECRET_ACCESS_KEY", "s"),
                ],
            ),
        ] {
            let e = p.credentials().await.unwrap_err();
            assert!(!e.is_temporary());
            let text = e.to_string();
            assert!(text.contains("profile \"prod\" is not in"), "{text}");
            assert!(text.contains(creds.to_str().unwrap()), "{text}");
            assert!(!text.contains("secret-"), "{text}");
        }
        // Half an environment pair is a configuration error.
        let p = provider(
            AwsCredentialsSettings::default(),
            &[("AWS_ACCESS_KEY_ID", "A")],
        );
        assert!(!p.credentials().await.unwrap_err().is_temporary());
    }

    #[tokio::test]
    async fn configured_keys_come_first_and_their_file_is_read_on_each_use() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret");
        std::fs::write(&key, "first\n").unwrap();
        let p = AwsCredentialsProvider::new(
            AwsCredentialsSettings {
                static_keys: Some((
                    "AKIDCFG".into(),
                    SecretSource::File(
                        super::super::SecretFile::open("secret_key_file", &key).unwrap(),
                    ),
                )),
                ..Default::default()
            },
            "eu-west-1".into(),
            env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
            ]),
        );
        let c = p.credentials().await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.expose()),
            ("AKIDCFG", "first")
        );
        std::fs::write(&key, "second\n").unwrap();
        assert_eq!(
            p.credentials().await.unwrap().secret_access_key.expose(),
            "second"
        );
        assert!(!format!("{c:?}").contains("first"));
    }

    #[tokio::test]
    async fn with_nothing_configured_and_metadata_off_the_error_lists_what_was_tried() {
        let p = AwsCredentialsProvider::new(
            AwsCredentialsSettings::default(),
            "eu-west-1".into(),
            env(&[("AWS_EC2_METADATA_DISABLED", "true")]),
        );
        let e = p.credentials().await.unwrap_err();
        assert!(!e.is_temporary());
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID (unset)"), "{e}");
    }
}
