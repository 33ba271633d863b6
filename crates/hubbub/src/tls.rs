//! TLS (`wss://`) with rustls: TLS 1.3 and 1.2 only, the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

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
    /// The certificate in use, replaceable while the server runs (`None`
    /// for a configuration from [`TlsConfig::from_rustls`]).
    current: Option<Arc<Current>>,
    /// The files it was loaded from, for [`TlsConfig::reload`].
    files: Option<(PathBuf, PathBuf)>,
}

/// Hands every new TLS handshake the certificate in force.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses PEM into a certificate and key that match.
fn certified(cert_chain: &[u8], key: &[u8]) -> Result<CertifiedKey, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("certificate PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("key PEM: {e}")))?;
    certified_der(certs, key)
}

fn certified_der(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    if cert_chain.is_empty() {
        return Err(tls_error("no certificate in the chain"));
    }
    let certified = CertifiedKey::from_der(cert_chain, key, &provider()).map_err(tls_error)?;
    certified.keys_match().map_err(tls_error)?;
    Ok(certified)
}

/// The acceptor for the certificate in force, offering `alpn`.
fn acceptor(current: &Arc<Current>, alpn: &[&[u8]]) -> Result<TlsAcceptor, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))
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
        Self::from_certified(certified(cert_chain, key)?)
    }

    /// From PEM files; [`TlsConfig::reload`] reads them again.
    ///
    /// # Errors
    /// [`Error::is_tls`] when a file cannot be read or holds no usable
    /// certificate or key.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let mut config = Self::from_pem(&read(cert_path)?, &read(key_path)?)?;
        config.files = Some((cert_path.to_owned(), key_path.to_owned()));
        Ok(config)
    }

    /// From DER certificates and key.
    ///
    /// # Errors
    /// [`Error::is_tls`] when the key does not match the certificate.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        Self::from_certified(certified_der(cert_chain, key)?)
    }

    /// From a rustls configuration of your own (client certificates,
    /// certificate resolvers…). It cannot be reloaded by hubbub.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            current: None,
            files: None,
        }
    }

    fn from_certified(certified: CertifiedKey) -> Result<Self, Error> {
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        Ok(Self {
            acceptor: acceptor(&current, &[b"http/1.1"])?,
            current: Some(current),
            files: None,
        })
    }

    /// Offers HTTP/2 by ALPN (`h2`, then `http/1.1`) when `on`: a
    /// connection that chooses `h2` is served by hyper's HTTP/2 server, its
    /// WebSockets opened as streams (RFC 8441; see [`crate::http2`] for the
    /// limits of one connection) and its plain requests answered as on
    /// HTTP/1.1. Off by default, and for a configuration from
    /// [`TlsConfig::from_rustls`], whose own ALPN list decides (`h2` in it
    /// is served the same way).
    ///
    /// # Errors
    /// [`Error::is_tls`] if rustls refuses the configuration.
    #[cfg(feature = "http2")]
    pub fn http2(mut self, on: bool) -> Result<Self, Error> {
        if let Some(current) = &self.current {
            let alpn: &[&[u8]] = if on {
                &crate::http2::ALPN
            } else {
                &[b"http/1.1"]
            };
            self.acceptor = acceptor(current, alpn)?;
        }
        Ok(self)
    }

    /// Reads the certificate and key again from the files this
    /// configuration was made from, and uses them for every new connection
    /// (open ones keep theirs). On any error the old certificate stays.
    ///
    /// # Errors
    /// [`Error::is_tls`] when the files cannot be read or do not match, or
    /// when the configuration did not come from files.
    pub fn reload(&self) -> Result<(), Error> {
        let Some((cert, key)) = &self.files else {
            return Err(tls_error(
                "this TLS configuration was not loaded from files",
            ));
        };
        self.replace(&read(cert)?, &read(key)?)
    }

    /// Uses a new certificate and key (PEM) for every new connection.
    ///
    /// # Errors
    /// [`Error::is_tls`] as for [`TlsConfig::from_pem`], or for a
    /// configuration from [`TlsConfig::from_rustls`].
    pub fn replace(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), Error> {
        let Some(current) = &self.current else {
            return Err(tls_error(
                "a rustls configuration of your own cannot be replaced here",
            ));
        };
        let fresh = certified(cert_chain, key)?;
        *current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// The files this configuration was loaded from, if any.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }
}
