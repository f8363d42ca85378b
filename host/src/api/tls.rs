//! HTTPS for the API (`--tls-cert`, `--tls-key`): rustls with the ring
//! provider, no OpenSSL. The certificate is read again on [`ServerTls::reload`]
//! (SIGHUP): new handshakes use the new one, open connections go on with
//! theirs, and a file that does not load leaves the old one in place.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The server's certificate, replaceable while it serves.
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<CertifiedKey>>>,
    acceptor: TlsAcceptor,
}

#[derive(Debug)]
struct Current(Arc<RwLock<Arc<CertifiedKey>>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ServerTls {
    /// Load the certificate chain and key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let current = Arc::new(RwLock::new(Arc::new(certified_key(cert, key)?)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Current(current.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Read the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified_key(&self.cert, &self.key)?;
        *self.current.write().expect("certificate lock") = Arc::new(fresh);
        Ok(())
    }

    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--tls-cert {}: no PEM certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("--tls-key {} does not match --tls-cert: {e}", key.display()))?;
    Ok(certified)
}

/// What the client commands trust: the webpki roots and `ca_pem`.
pub(crate) fn client_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    crate::runtime::egress::tls_config(ca_pem).map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/e2e/tls")
            .join(name)
    }

    #[test]
    fn a_certificate_loads_and_a_bad_reload_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::copy(file("server.pem"), &cert).unwrap();
        std::fs::copy(file("server.key"), &key).unwrap();
        let tls = ServerTls::load(&cert, &key).expect("loads");
        let before = tls.current.read().unwrap().clone();
        std::fs::write(&key, "not a key").unwrap();
        let err = tls.reload().unwrap_err();
        assert!(err.contains("--tls-key"), "{err}");
        assert!(Arc::ptr_eq(&before, &tls.current.read().unwrap()));
        std::fs::copy(file("server.key"), &key).unwrap();
        tls.reload().expect("reloads");
        assert!(!Arc::ptr_eq(&before, &tls.current.read().unwrap()));
        // A key of another certificate is refused.
        assert!(ServerTls::load(&file("ca.pem"), &key).is_err());
    }
}
