//! `sigv4 = { … }` on a `[[remote_write]]` endpoint: AWS Signature Version 4, as Prometheus'
//! `sigv4` block, for Amazon Managed Service for Prometheus. The schema and its validation
//! into [`SigV4Settings`]; the credentials chain itself lives in
//! [`crate::auth::aws_credentials`].
//!
//! The region is optional here: when the block leaves it out it is taken, when the sender
//! starts, from `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's `region`, and the agent
//! refuses to start when none gives one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Checker;
use crate::auth::aws_credentials::AwsCredentialsSettings;
use crate::auth::sigv4::DEFAULT_SERVICE;
use crate::auth::SecretSource;
use crate::secret::Secret;

/// AWS SigV4 signing of every request to the endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigV4Config {
    /// AWS region, e.g. `eu-west-1`; unset: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's.
    pub region: Option<String>,
    /// Access key id; with `secret_key` or `secret_key_file`. Unset: the default chain.
    pub access_key: Option<String>,
    /// Secret access key, inline (prefer `secret_key_file`).
    pub secret_key: Option<Secret>,
    /// File holding the secret access key, read again on every request.
    pub secret_key_file: Option<PathBuf>,
    /// Profile of the shared credentials and config files to read (instead of the chain).
    pub profile: Option<String>,
    /// Role to assume with STS, with the credentials found.
    pub role_arn: Option<String>,
    /// Service name signed for; `aps` (Amazon Managed Service for Prometheus) by default.
    pub service: Option<String>,
}

/// A validated `sigv4` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SigV4Settings {
    /// The region, if the block gives it (else found at start from the environment).
    pub region: Option<String>,
    /// The service signed for.
    pub service: String,
    /// Where credentials come from.
    pub credentials: AwsCredentialsSettings,
}

/// Whether `text` looks like an AWS region or service name: lower-case letters, digits and
/// dashes (`eu-west-1`, `us-gov-west-1`, `aps`).
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Validates `<key>.sigv4`; errors name the key.
pub(super) fn validate_sigv4(
    c: &mut Checker<'_>,
    key: &str,
    cfg: &SigV4Config,
) -> Option<SigV4Settings> {
    let key = format!("{key}.sigv4");
    let errors = c.errors.len();
    if let Some(region) = &cfg.region {
        if !is_name(region) {
            c.fail(
                format!("{key}.region"),
                format!("{region:?} is not an AWS region name (like \"eu-west-1\")"),
            );
        }
    }
    let service = cfg
        .service
        .clone()
        .unwrap_or_else(|| DEFAULT_SERVICE.into());
    if !is_name(&service) {
        c.fail(
            format!("{key}.service"),
            format!("{service:?} is not an AWS service name (like \"aps\")"),
        );
    }
    if cfg.secret_key.is_some() && cfg.secret_key_file.is_some() {
        c.fail(
            key.clone(),
            "use only one of secret_key and secret_key_file",
        );
    }
    let has_secret = cfg.secret_key.is_some() || cfg.secret_key_file.is_some();
    match (&cfg.access_key, has_secret) {
        (Some(_), false) => c.fail(
            format!("{key}.access_key"),
            "needs secret_key or secret_key_file",
        ),
        (None, true) => c.fail(
            format!("{key}.access_key"),
            "is required with secret_key or secret_key_file",
        ),
        (Some(id), true) if id.trim().is_empty() || id.trim() != id => c.fail(
            format!("{key}.access_key"),
            "is empty or has surrounding whitespace",
        ),
        _ => {}
    }
    if cfg.access_key.is_some() && cfg.profile.is_some() {
        c.fail(
            format!("{key}.profile"),
            "conflicts with access_key: give keys or a profile, not both",
        );
    }
    if cfg.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
        c.fail(format!("{key}.profile"), "is empty");
    }
    if let Some(arn) = &cfg.role_arn {
        if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
            c.fail(
                format!("{key}.role_arn"),
                format!("{arn:?} is not a role ARN (like \"arn:aws:iam::123456789012:role/name\")"),
            );
        }
    }
    if let Some(secret) = &cfg.secret_key {
        if let Some(defect) = crate::secret::describe_defect(secret.expose()) {
            c.fail(format!("{key}.secret_key"), defect);
        }
    }
    // Read now so that a bad path fails at start; re-read whenever it changes.
    let secret_file = cfg
        .secret_key_file
        .as_ref()
        .and_then(|path| c.secret_file(format!("{key}.secret_key_file"), path));
    if c.errors.len() > errors {
        return None;
    }
    let static_keys = match (&cfg.access_key, &cfg.secret_key, secret_file) {
        (Some(id), Some(s), _) => Some((id.clone(), SecretSource::Inline(s.clone()))),
        (Some(id), None, Some(file)) => Some((id.clone(), file)),
        _ => None,
    };
    Some(SigV4Settings {
        region: cfg.region.clone(),
        service,
        credentials: AwsCredentialsSettings {
            static_keys,
            profile: cfg.profile.clone(),
            role_arn: cfg.role_arn.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{parse, GOOD};
    use super::SigV4Settings;
    use crate::auth::Auth;

    fn sigv4(s: &crate::config::Settings) -> &SigV4Settings {
        match &s.remote_write[0].auth {
            Some(Auth::SigV4(v)) => v,
            other => panic!("not sigv4: {other:?}"),
        }
    }

    fn with(block: &str) -> String {
        GOOD.replace(
            "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
            &format!("headers = {{ \"X-Scope-OrgID\" = \"team-a\" }}\nsigv4 = {block}"),
        )
    }

    #[test]
    fn a_block_defaults_to_the_aps_service_and_the_chain() {
        let s = parse(&with("{ region = \"eu-west-1\" }")).unwrap();
        let v = sigv4(&s);
        assert_eq!(v.service, "aps");
        assert_eq!(v.region.as_deref(), Some("eu-west-1"));
        assert_eq!(v.credentials, Default::default());
        let s = parse(&with(
            "{ access_key = \"AKID\", secret_key = \"sk-inline\", role_arn = \"arn:aws:iam::1:role/w\", service = \"execute-api\" }",
        ))
        .unwrap();
        let v = sigv4(&s);
        assert_eq!(v.service, "execute-api");
        assert!(v.credentials.static_keys.is_some());
        assert!(!format!("{s:?}").contains("sk-inline"));
    }

    #[test]
    fn wrong_blocks_are_refused_with_the_key_named() {
        for (block, want) in [
            (
                "{ access_key = \"A\" }",
                "remote_write[0].sigv4.access_key: needs secret_key",
            ),
            (
                "{ secret_key = \"s\" }",
                "remote_write[0].sigv4.access_key: is required",
            ),
            (
                "{ access_key = \"A\", secret_key = \"s\", secret_key_file = \"f\" }",
                "use only one of secret_key and secret_key_file",
            ),
            (
                "{ access_key = \"A\", secret_key = \"s\", profile = \"p\" }",
                "sigv4.profile: conflicts with access_key",
            ),
            (
                "{ region = \"EU West\" }",
                "sigv4.region: \"EU West\" is not an AWS region",
            ),
            ("{ service = \"\" }", "sigv4.service"),
            (
                "{ role_arn = \"role/x\" }",
                "sigv4.role_arn: \"role/x\" is not a role ARN",
            ),
            (
                "{ access_key = \"A\", secret_key = \"s\\n\" }",
                "sigv4.secret_key: ends with a newline",
            ),
            (
                "{ access_key = \"A\", secret_key_file = \"/nonexistent/sk\" }",
                "sigv4.secret_key_file",
            ),
            ("{ regoin = \"x\" }", "regoin"),
        ] {
            let e = parse(&with(block)).unwrap_err();
            assert!(e.contains(want), "{block}: {e}");
        }
    }

    #[test]
    fn sigv4_excludes_other_credentials() {
        let e = parse(&with("{ region = \"eu-west-1\" }\nbearer_token = \"t\"")).unwrap_err();
        assert!(
            e.contains("remote_write[0].sigv4: conflicts with basic_auth, bearer_token"),
            "{e}"
        );
        let e = parse(&GOOD.replace(
            "headers = { \"X-Scope-OrgID\" = \"team-a\" }",
            "headers = { Authorization = \"x\" }\nsigv4 = { region = \"eu-west-1\" }",
        ))
        .unwrap_err();
        assert!(e.contains("remote_write[0].headers.authorization"), "{e}");
    }
}
