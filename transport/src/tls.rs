//! rustls and quinn configurations: TLS 1.3 only, the `ring` provider for the whole
//! workspace (its keys expanded at first use, `lazy_keys`), server authentication for
//! clients and mutual TLS between edges and cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::profile::TransportProfile;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("reading {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The file holds no certificate (or no private key).
    #[error("{0} holds no usable certificate or key")]
    Empty(PathBuf),
    /// rustls refused the configuration (bad key, bad root, …).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no roots).
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// quinn refused the rustls configuration (it needs TLS 1.3 and a QUIC cipher suite).
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// Whether a server asks clients for certificates.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// Anyone may connect (clients authenticate with a token instead).
    None,
    /// Clients must present a certificate chaining to one of these roots (mutual TLS).
    Required(Vec<CertificateDer<'static>>),
}

/// `ring`, with TLS 1.3 keys that expand at their first use (`lazy_keys`: the record
/// layer's keys and the next 1-RTT keys, which QUIC connections rarely or never use,
/// cost an idle connection about 2 KiB otherwise).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    crate::lazy_keys::provider()
}

/// Reads every certificate from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            detail: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(path.to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn roots(certs: Vec<CertificateDer<'static>>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

/// A quinn server configuration presenting `certs`/`key`, speaking `alpn`.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[u8],
    client_auth: ClientAuth,
    profile: &TransportProfile,
) -> Result<quinn::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Required(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    // 0-RTT is not accepted yet: only idempotent frames may ride it, which needs the
    // capability negotiation described in DESIGN.md. Keep it off until then.
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(profile.to_quinn());
    Ok(config)
}

/// A quinn client configuration trusting `roots`, speaking `alpn`, optionally presenting
/// a client certificate (mutual TLS).
pub fn client_config(
    roots_certs: Vec<CertificateDer<'static>>,
    alpn: &[u8],
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    profile: &TransportProfile,
) -> Result<quinn::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(roots_certs)?);
    let mut tls = match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(profile.to_quinn());
    Ok(config)
}
