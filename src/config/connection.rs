//! Keys shared by every section that opens HTTP connections (remote write, Pushgateway,
//! probes, scrapes): `tls` and the credentials, and [`Auth`], the credentials once resolved.
//! The [`Checker`](super::checker::Checker) validates them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// HTTP basic authentication.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name.
    pub username: String,
    /// Password, inline (prefer `password_file`).
    pub password: Option<Secret>,
    /// File whose contents (trailing newline removed) are the password.
    pub password_file: Option<PathBuf>,
}

/// TLS options for a client connection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, if not the URL's host.
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for testing.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Credentials once resolved; they live in [`crate::auth`], which every client builds its
/// `Authorization` header with.
pub use crate::auth::Auth;
