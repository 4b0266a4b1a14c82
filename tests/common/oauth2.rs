//! The npm package `oauth2-mock-server` as a real, third-party token endpoint, and the check
//! a receiver makes of the tokens it issued: an RS256 signature verified against the keys
//! the server publishes at `/jwks` (it makes a new key each time it starts).

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

use super::{http_client, require_tool, start_server, wait_ready, ChildGuard};

/// A running `oauth2-mock-server`, killed when dropped.
pub struct OAuth2MockServer {
    guard: ChildGuard,
    port: u16,
    dir: TempDir,
    restarts: u32,
}

/// The command line of the server on `port`.
fn command(bin: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    cmd
}

impl OAuth2MockServer {
    /// Starts the server; `None` (test skipped) when it is not installed outside CI.
    pub async fn start() -> Option<OAuth2MockServer> {
        let bin = require_tool("oauth2-mock-server")?;
        let (guard, port, dir) = start_server(
            "oauth2-mock-server",
            "/.well-known/openid-configuration",
            |port, _| command(&bin, port),
        )
        .await;
        Some(OAuth2MockServer {
            guard,
            port,
            dir,
            restarts: 0,
        })
    }

    /// Its token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// Stops it (SIGKILL): the token endpoint refuses connections until [`Self::restart`].
    pub fn kill(&mut self) {
        self.guard.kill_now();
    }

    /// Starts it again on the same port (with a new signing key) and waits until it is ready.
    pub async fn restart(&mut self) {
        self.guard.kill_now();
        self.restarts += 1;
        let name = format!("oauth2-mock-server-restart-{}", self.restarts);
        let bin = require_tool("oauth2-mock-server").expect("found at start");
        self.guard = ChildGuard::spawn(&name, command(&bin, self.port), self.dir.path())
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let url = format!(
            "http://127.0.0.1:{}/.well-known/openid-configuration",
            self.port
        );
        if !wait_ready(&http_client(), &url, &mut self.guard).await {
            self.guard.dump_logs();
            panic!("oauth2-mock-server did not restart on port {}", self.port);
        }
    }

    /// The signing keys it publishes now.
    pub async fn keys(&self) -> Vec<Jwk> {
        let url = format!("http://127.0.0.1:{}/jwks", self.port);
        let text = super::http_get_text(&http_client(), &url)
            .await
            .expect("GET /jwks");
        let v: Value = serde_json::from_str(&text).expect("JWKS is JSON");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| Jwk {
                kid: k["kid"].as_str().unwrap_or_default().to_string(),
                n: b64
                    .decode(k["n"].as_str().expect("n"))
                    .expect("n is base64url"),
                e: b64
                    .decode(k["e"].as_str().expect("e"))
                    .expect("e is base64url"),
            })
            .collect()
    }

    /// The server process, e.g. to read its logs.
    pub fn process(&self) -> &ChildGuard {
        &self.guard
    }
}

/// One RSA public key from `/jwks`.
#[derive(Debug, Clone)]
pub struct Jwk {
    /// Key id, as in the token's header.
    pub kid: String,
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Public exponent, big-endian.
    pub e: Vec<u8>,
}

/// Keys a receiver trusts; the test replaces them to revoke every token issued before.
pub type TrustedKeys = Arc<Mutex<Vec<Jwk>>>;

/// Verifies a compact JWS (`header.payload.signature`) signed with RS256 by one of `keys`
/// and not expired; returns its claims.
pub fn verify_jwt(token: &str, keys: &[Jwk]) -> Result<Value, String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS".into());
    };
    let header: Value = serde_json::from_slice(&b64.decode(h).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} is not RS256", header["alg"]));
    }
    let kid = header["kid"].as_str().unwrap_or_default();
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| format!("unknown key id {kid}"))?;
    let signature = b64.decode(s).map_err(|e| e.to_string())?;
    ring::signature::RsaPublicKeyComponents {
        n: &key.n,
        e: &key.e,
    }
    .verify(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        format!("{h}.{p}").as_bytes(),
        &signature,
    )
    .map_err(|_| "bad signature".to_string())?;
    let claims: Value = serde_json::from_slice(&b64.decode(p).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let now = super::now_ms() / 1000;
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err("expired".into());
    }
    Ok(claims)
}

/// Whether `headers` carry `Authorization: Bearer <token>` with a token `keys` verify.
pub fn bearer_verifies(headers: &http::HeaderMap, keys: &TrustedKeys) -> bool {
    let Some(token) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let keys = keys.lock().expect("keys lock").clone();
    verify_jwt(token, &keys).is_ok()
}
