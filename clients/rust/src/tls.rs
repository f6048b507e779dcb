//! [`TlsTrust`]: which server certificates a TLS or wss endpoint accepts, and the two rustls
//! client configurations built from it (one per ALPN the server tells transports apart by).

use std::fmt;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig as RustlsConfig, RootCertStore};

use crate::error::Error;

/// ALPN for Holdfast frames directly inside TLS (the server's `tls_listen`).
pub const ALPN_HOLDFAST: &[u8] = b"holdfast/1";
/// ALPN for WebSocket inside TLS (wss), what browsers offer.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The certificates a TLS endpoint trusts, ready to connect with.
///
/// Build it from PEM ([`TlsTrust::from_pem`], e.g. your own CA or a self-signed server
/// certificate), from DER certificates, or from a [`rustls::RootCertStore`] you filled yourself
/// (e.g. with the `webpki-roots` or `rustls-native-certs` crates for public CAs). The server's
/// name is checked against its certificate as usual; no client certificate is sent (the server
/// asks for none).
///
/// Cloning is cheap (two `Arc`s). Two values are equal when they are clones of one another.
#[derive(Clone)]
pub struct TlsTrust {
    roots: usize,
    /// ALPN `holdfast/1`: frames directly inside TLS.
    frames: Arc<RustlsConfig>,
    /// ALPN `http/1.1`: a WebSocket upgrade inside TLS.
    websocket: Arc<RustlsConfig>,
}

impl TlsTrust {
    /// Trusts every certificate in `pem` (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<TlsTrust, Error> {
        let mut certs = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Invalid(format!("TLS trust PEM: {e}")))?;
            certs.push(cert);
        }
        TlsTrust::from_der(certs)
    }

    /// Trusts the given DER certificates.
    pub fn from_der(
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<TlsTrust, Error> {
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| Error::Invalid(format!("TLS trust certificate: {e}")))?;
        }
        TlsTrust::from_root_store(roots)
    }

    /// Trusts the roots in `roots`.
    pub fn from_root_store(roots: RootCertStore) -> Result<TlsTrust, Error> {
        if roots.is_empty() {
            return Err(Error::Invalid(
                "TLS trust has no certificate: no server could be verified".to_owned(),
            ));
        }
        let count = roots.len();
        let roots = Arc::new(roots);
        let config = |alpn: &[u8]| -> Result<Arc<RustlsConfig>, Error> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = RustlsConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Invalid(format!("TLS protocol versions: {e}")))?
                .with_root_certificates(Arc::clone(&roots))
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        Ok(TlsTrust {
            roots: count,
            frames: config(ALPN_HOLDFAST)?,
            websocket: config(ALPN_HTTP1)?,
        })
    }

    /// The rustls configuration for frames directly inside TLS (ALPN `holdfast/1`).
    pub(crate) fn frames_config(&self) -> Arc<RustlsConfig> {
        Arc::clone(&self.frames)
    }

    /// The rustls configuration for WebSocket inside TLS (ALPN `http/1.1`).
    pub(crate) fn websocket_config(&self) -> Arc<RustlsConfig> {
        Arc::clone(&self.websocket)
    }
}

impl PartialEq for TlsTrust {
    fn eq(&self, other: &TlsTrust) -> bool {
        Arc::ptr_eq(&self.frames, &other.frames)
    }
}

impl Eq for TlsTrust {}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsTrust {{ roots: {} }}", self.roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_broken_pem_is_refused_with_a_named_error() {
        let empty = TlsTrust::from_pem(b"").unwrap_err().to_string();
        assert!(empty.contains("no certificate"), "{empty}");
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(TlsTrust::from_pem(broken), Err(Error::Invalid(_))));
    }
}
