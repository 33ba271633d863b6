//! TLS (`wss://`) with rustls: TLS 1.3 and 1.2 only, the `ring` provider.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::error::{Error, Kind};

/// A server certificate and key, ready to accept `wss://` connections.
///
/// Only TLS 1.3 and 1.2 are offered; older versions are refused by
/// rustls, which never implemented them.
///
/// ```no_run
/// # async fn f() -> Result<(), hubbub::Error> {
/// let tls = hubbub::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// let server = hubbub::Server::bind_tls("wss://0.0.0.0:8443", tls).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

fn tls_error(what: impl std::fmt::Display) -> Error {
    Error::new(Kind::Tls(what.to_string()))
}

impl TlsConfig {
    /// From PEM text: the certificate chain (leaf first) and the private
    /// key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`Error::is_tls`] when the PEM holds no certificate or no key, or
    /// they do not match.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("certificate PEM: {e}")))?;
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("key PEM: {e}")))?;
        Self::from_der(certs, key)
    }

    /// From PEM files.
    ///
    /// # Errors
    /// [`Error::is_tls`] when a file cannot be read or holds no usable
    /// certificate or key.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))
        };
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// From DER certificates and key.
    ///
    /// # Errors
    /// [`Error::is_tls`] when the key does not match the certificate.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        if cert_chain.is_empty() {
            return Err(tls_error("no certificate in the chain"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(cert_chain, key)
            .map_err(tls_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// From a rustls configuration of your own (client certificates,
    /// certificate resolvers…).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
        }
    }
}
