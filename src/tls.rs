//! Builds rustls client configurations from [`TlsConfig`], for both the remote-write sender
//! and the probes, so that trust roots, client certificates and `insecure_skip_verify` mean
//! the same everywhere.
//!
//! `ca_file`, `cert_file` and `key_file` rotate without a restart: the configuration holds a
//! verifier and a client-certificate resolver that reload their files when they change (the
//! private `reload` module says how and why), so every new connection of every client uses
//! the current files.

mod reload;

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsConfig;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {message}")]
    File {
        /// Which option (ca_file, cert_file, key_file).
        what: &'static str,
        /// The path given.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider pushprobe uses everywhere (ring: small, no C toolchain beyond cc).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client configuration; `alpn` lists protocols to offer (e.g. `http/1.1`).
pub fn client_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
    } else if let Some(ca) = &tls.ca_file {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(reload::ReloadingRoots::new(
                ca,
                provider(),
            )?))
    } else {
        builder.with_root_certificates(native_roots())
    };
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => builder.with_client_cert_resolver(Arc::new(
            reload::ReloadingClientCert::new(cert, key, provider())?,
        )),
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        what,
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// The `notAfter` (Unix seconds) of the client certificate in `cert_file`: its first
/// certificate, the client's own (any after it are its chain). Read afresh on each call, so a
/// rotated file shows its new date.
pub fn client_cert_not_after(cert_file: &std::path::Path) -> Result<i64, TlsError> {
    let certs = read_certs("cert_file", cert_file)?;
    let leaf = certs.first().ok_or_else(|| TlsError::File {
        what: "cert_file",
        path: cert_file.display().to_string(),
        message: "no PEM certificate found".into(),
    })?;
    crate::http_client::cert::not_after(leaf).map_err(|e| TlsError::File {
        what: "cert_file",
        path: cert_file.display().to_string(),
        message: e.to_string(),
    })
}

/// Builds a client configuration for `url`: the full one for `https`, and for plain `http` one
/// with no trust roots, since no handshake will happen and loading the system's roots is start-up
/// time a short-lived command should not pay.
pub fn client_config_for_url(
    url: &reqwest::Url,
    tls: &TlsConfig,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    if url.scheme() == "https" {
        return client_config(tls, alpn);
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The system's trust roots, loaded once per process and shared: every probe and sender that
/// uses them holds the same store instead of parsing its own copy (about 190 KiB each).
fn native_roots() -> Arc<RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            // Unreadable system certificates are skipped: a host with a partly broken store can
            // still reach servers whose roots are intact.
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// Verifier for `insecure_skip_verify`: accepts any certificate but still checks signatures
/// so the handshake is well-formed.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_are_loaded_once_and_shared() {
        assert!(Arc::ptr_eq(&native_roots(), &native_roots()));
    }

    #[test]
    fn plain_http_needs_no_roots_but_keeps_alpn() {
        let url = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let c = client_config_for_url(&url, &TlsConfig::default(), &[b"http/1.1"]).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_ca_file_names_the_option() {
        let tls = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let e = client_config(&tls, &[]).unwrap_err().to_string();
        assert!(e.starts_with("ca_file /nonexistent/ca.pem"), "{e}");
    }
}
