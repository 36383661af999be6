//! A development PKI: one self-signed CA and the certificates it signs.
//!
//! `quichat dev` and the tests need TLS everywhere without an operator's certificates:
//! [`DevPki::ensure`] writes, once, a CA and certificates for the edge (server, for
//! clients), the core (server, for edges) and the edge's client identity (mutual TLS to
//! the core), all valid for `localhost`, `127.0.0.1` and `::1`. Clients trust `ca.pem`.
//! Never use these in production: the CA key sits next to them.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The server name clients and edges dial when using the dev PKI.
pub const DEV_SERVER_NAME: &str = "localhost";

/// Why the dev PKI could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating a key or certificate failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the files failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Paths of the dev PKI's files (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevPki {
    /// The CA certificate: clients and edges trust it; the core checks edge certificates
    /// against it.
    pub ca_cert: PathBuf,
    /// The edge's server certificate (what game clients see).
    pub edge_cert: PathBuf,
    /// Its key.
    pub edge_key: PathBuf,
    /// The core's server certificate (what edges see).
    pub core_cert: PathBuf,
    /// Its key.
    pub core_key: PathBuf,
    /// The certificate an edge presents to the core (mutual TLS).
    pub edge_client_cert: PathBuf,
    /// Its key.
    pub edge_client_key: PathBuf,
}

impl DevPki {
    /// The paths the PKI uses under `dir`, whether or not they exist.
    pub fn paths(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            edge_cert: dir.join("edge-cert.pem"),
            edge_key: dir.join("edge-key.pem"),
            core_cert: dir.join("core-cert.pem"),
            core_key: dir.join("core-key.pem"),
            edge_client_cert: dir.join("edge-client-cert.pem"),
            edge_client_key: dir.join("edge-client-key.pem"),
        }
    }

    /// Returns the PKI under `dir`, creating `dir` and every file if any is missing. Files
    /// are regenerated together, so they always belong to one CA.
    pub fn ensure(dir: &Path) -> Result<Self, PkiError> {
        let pki = Self::paths(dir);
        if pki.all().iter().all(|p| p.exists()) {
            return Ok(pki);
        }
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_owned(),
            source,
        })?;

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "quichat dev CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let names = vec![
            DEV_SERVER_NAME.to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let leaf =
            |cn: &str, usage: ExtendedKeyUsagePurpose| -> Result<(String, String), PkiError> {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(names.clone())?;
                params.distinguished_name.push(DnType::CommonName, cn);
                params.extended_key_usages = vec![usage];
                let cert = params.signed_by(&key, &ca)?;
                Ok((cert.pem(), key.serialize_pem()))
            };
        let (edge_cert, edge_key) = leaf("quichat dev edge", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (core_cert, core_key) = leaf("quichat dev core", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) = leaf(
            "quichat dev edge (client)",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let files = [
            (&pki.ca_cert, ca.pem()),
            (&pki.edge_cert, edge_cert),
            (&pki.edge_key, edge_key),
            (&pki.core_cert, core_cert),
            (&pki.core_key, core_key),
            (&pki.edge_client_cert, client_cert),
            (&pki.edge_client_key, client_key),
        ];
        for (path, contents) in files {
            fs::write(path, contents).map_err(|source| PkiError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(pki)
    }

    fn all(&self) -> [&PathBuf; 7] {
        [
            &self.ca_cert,
            &self.edge_cert,
            &self.edge_key,
            &self.core_cert,
            &self.core_key,
            &self.edge_client_cert,
            &self.edge_client_key,
        ]
    }
}
