//! TLS for `keyward serve` (rustls with the ring provider, no OpenSSL): the certificate and key
//! from PEM files, reloadable in place (SIGHUP) without touching open connections, and HTTP/2 or
//! HTTP/1.1 chosen by ALPN.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Where the server's certificate chain and private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key: both parse, the key is usable, and it is the
/// key of the chain's first certificate.
pub fn load_pair(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let cert_pem = read(&files.cert, "certificate")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate {} is not PEM: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {} holds no PEM certificate",
            files.cert.display()
        ));
    }
    let key_pem = read(&files.key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "private key {} holds no usable PEM private key: {e}",
            files.key.display()
        )
    })?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key {} is not usable: {e}", files.key.display()))?;
    let pair = CertifiedKey::new(certs, signer);
    match pair.keys_match() {
        Ok(()) => Ok(pair),
        // The provider cannot tell for this key type: the handshake will.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(format!(
                "private key {} does not belong to certificate {}",
                files.key.display(),
                files.cert.display()
            ))
        }
        Err(e) => Err(format!(
            "certificate {} is not usable: {e}",
            files.cert.display()
        )),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// The current certificate and key, handed to every new handshake; [`CertStore::reload`] swaps
/// them for the ones now in the files. Connections already open keep the session they have.
pub struct CertStore {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the pair from `files`.
    pub fn load(files: TlsFiles) -> Result<CertStore, String> {
        let pair = load_pair(&files)?;
        Ok(CertStore {
            files,
            current: RwLock::new(Arc::new(pair)),
        })
    }

    /// The files the pair comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again; on success new handshakes use the new pair, on failure the current
    /// one stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let pair = Arc::new(load_pair(&self.files)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = pair;
        Ok(())
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

/// The acceptor of `certs`: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
pub fn acceptor(certs: Arc<CertStore>) -> Result<TlsAcceptor, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let c = dir.join("c.pem");
        let k = dir.join("k.pem");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        TlsFiles { cert: c, key: k }
    }

    #[test]
    fn bad_pairs_are_clear_errors_and_keep_nothing_half_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            cert: dir.path().join("none.pem"),
            key: dir.path().join("none.key"),
        };
        let err = CertStore::load(missing).unwrap_err();
        assert!(err.starts_with("cannot read certificate"), "{err}");
        let err = CertStore::load(files(dir.path(), "garbage", "garbage")).unwrap_err();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let fake_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = CertStore::load(files(dir.path(), fake_cert, "garbage")).unwrap_err();
        assert!(err.contains("holds no usable PEM private key"), "{err}");
    }
}
