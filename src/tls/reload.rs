//! TLS files that rotate: a client certificate resolver that reloads `cert_file`/`key_file`
//! and a server verifier that reloads `ca_file`, each when its files change.
//!
//! Why inside rustls rather than rebuilding the clients: both the pooled reqwest client (remote
//! write, Pushgateway) and the probes' hyper client take one `ClientConfig`; rustls asks the
//! resolver for a certificate and the verifier for a verdict on every handshake, so a reloading
//! pair covers both clients, every new connection, with no client rebuilt, no pool dropped and
//! no rebuild raced against requests in flight. Connections already open keep the identity they
//! were made with (as in Prometheus); the next connection uses the new files.
//!
//! A change is seen by one `stat` per file per handshake. A file that disappears, or is
//! replaced by one that does not parse (or a key that does not match its certificate, as
//! happens between writing the new certificate and the new key), keeps the last good value,
//! logged once per episode naming the key and path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{read_certs, TlsError};
use crate::auth::Stamp;

/// A value loaded from files, reloaded when any of them changes, the last good one kept.
#[derive(Debug)]
struct Reloading<T> {
    /// The files and the option each was given under (`cert_file`, …), for log lines.
    files: Vec<(&'static str, PathBuf)>,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    value: Arc<T>,
    stamps: Vec<Option<Stamp>>,
    failing: bool,
}

impl<T> Reloading<T> {
    /// Loads the value now (errors fail the start).
    fn new(
        files: Vec<(&'static str, PathBuf)>,
        load: impl Fn() -> Result<T, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = files.iter().map(|(_, p)| Stamp::of_path(p)).collect();
        let value = Arc::new(load()?);
        Ok(Reloading {
            files,
            state: Mutex::new(State {
                value,
                stamps,
                failing: false,
            }),
        })
    }

    /// The current value, reloaded first if a file changed (or the last reload failed).
    fn current(&self, load: impl Fn() -> Result<T, TlsError>) -> Arc<T> {
        // Only whole values are assigned under the lock; a poisoned one is still consistent.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stamps: Vec<Option<Stamp>> =
            self.files.iter().map(|(_, p)| Stamp::of_path(p)).collect();
        if stamps == state.stamps && !state.failing {
            return state.value.clone();
        }
        let missing = self.files.iter().zip(&stamps).find(|(_, s)| s.is_none());
        let loaded = match missing {
            Some(((what, path), _)) => Err(TlsError::File {
                what,
                path: path.display().to_string(),
                message: "is missing or not a regular file".into(),
            }),
            None => load(),
        };
        match loaded {
            Ok(value) => {
                if state.failing {
                    tracing::info!(files = %self.describe(), "TLS files readable again; using them for new connections");
                } else {
                    tracing::info!(files = %self.describe(), "TLS files changed; new connections use them");
                }
                state.value = Arc::new(value);
                state.stamps = stamps;
                state.failing = false;
            }
            Err(e) => {
                if !state.failing {
                    tracing::warn!(error = %e, "a TLS file changed but cannot be used; keeping the last good one");
                }
                state.failing = true;
            }
        }
        state.value.clone()
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .files
            .iter()
            .map(|(what, p)| format!("{what} {}", p.display()))
            .collect();
        parts.join(", ")
    }
}

/// Reads `cert_file` and `key_file` into a certified key, checking that they match.
fn load_key_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs("cert_file", cert)?;
    let key_err = |message: String| TlsError::File {
        what: "key_file",
        path: key.display().to_string(),
        message,
    };
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(e.to_string()))?;
    CertifiedKey::from_der(certs, der, provider)
        .map_err(|e| key_err(format!("does not fit cert_file: {e}")))
}

/// The client certificate of mutual TLS, reloaded when `cert_file` or `key_file` changes.
#[derive(Debug)]
pub(super) struct ReloadingClientCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    pair: Reloading<CertifiedKey>,
}

impl ReloadingClientCert {
    /// Loads the pair now; a bad file fails here, naming its option.
    pub(super) fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let pair = Reloading::new(
            vec![("cert_file", cert.into()), ("key_file", key.into())],
            || load_key_pair(cert, key, &provider),
        )?;
        Ok(ReloadingClientCert {
            cert: cert.into(),
            key: key.into(),
            provider,
            pair,
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.pair
            .current(|| load_key_pair(&self.cert, &self.key, &self.provider))
    }
}

impl ResolvesClientCert for ReloadingClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies servers against `ca_file`, reloaded when it changes.
#[derive(Debug)]
pub(super) struct ReloadingRoots {
    ca: PathBuf,
    provider: Arc<CryptoProvider>,
    verifier: Reloading<Arc<WebPkiServerVerifier>>,
}

/// A standard verifier trusting the certificates of `ca`.
fn load_verifier(
    ca: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("ca_file", ca)? {
        roots.add(cert)?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::File {
            what: "ca_file",
            path: ca.display().to_string(),
            message: e.to_string(),
        })
}

impl ReloadingRoots {
    /// Loads `ca` now; a bad file fails here.
    pub(super) fn new(ca: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let verifier = Reloading::new(vec![("ca_file", ca.into())], || {
            load_verifier(ca, &provider)
        })?;
        Ok(ReloadingRoots {
            ca: ca.into(),
            provider,
            verifier,
        })
    }

    fn current(&self) -> Arc<WebPkiServerVerifier> {
        Arc::clone(
            &self
                .verifier
                .current(|| load_verifier(&self.ca, &self.provider)),
        )
    }
}

impl ServerCertVerifier for ReloadingRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current()
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, c.cert.der().to_vec())
    }

    #[test]
    fn the_client_certificate_follows_its_files_and_keeps_the_last_good_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = write_pair(dir.path(), "one");
        let r = ReloadingClientCert::new(&cert, &key, super::super::provider()).unwrap();
        assert_eq!(r.resolve(&[], &[]).unwrap().cert[0].as_ref(), first);
        let (_, _, second) = write_pair(dir.path(), "two");
        assert_eq!(r.current().cert[0].as_ref(), second);
        // A certificate whose key is not there yet: the last good pair stays.
        let other = rcgen::generate_simple_self_signed(vec!["three".into()]).unwrap();
        std::fs::write(&cert, other.cert.pem()).unwrap();
        assert_eq!(r.current().cert[0].as_ref(), second);
        std::fs::remove_file(&key).unwrap();
        assert_eq!(r.current().cert[0].as_ref(), second);
        // The key arrives: the new pair is used.
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert_eq!(r.current().cert[0].as_ref(), other.cert.der().as_ref());
    }

    #[test]
    fn trust_roots_follow_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, _) = write_pair(dir.path(), "ca-one");
        let r = ReloadingRoots::new(&ca, super::super::provider()).unwrap();
        let before = r.current();
        assert!(Arc::ptr_eq(&before, &r.current()));
        write_pair(dir.path(), "ca-two");
        assert!(!Arc::ptr_eq(&before, &r.current()));
        // Garbage keeps the verifier of the last good file.
        let kept = r.current();
        std::fs::write(&ca, "not a certificate").unwrap();
        assert!(Arc::ptr_eq(&kept, &r.current()));
    }
}
