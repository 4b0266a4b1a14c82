//! Builds rustls client configurations from [`TlsConfig`], for both the remote-write sender
//! and the probes, so that trust roots, client certificates and `insecure_skip_verify` mean
//! the same everywhere.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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
    } else {
        builder.with_root_certificates(root_store(tls)?)
    };
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = read_certs("cert_file", cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
                what: "key_file",
                path: key.display().to_string(),
                message: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
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

fn root_store(tls: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.ca_file {
        for cert in read_certs("ca_file", ca)? {
            roots.add(cert)?;
        }
    } else {
        // Unreadable system certificates are skipped: a host with a partly broken store can
        // still reach servers whose roots are intact.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    Ok(roots)
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
