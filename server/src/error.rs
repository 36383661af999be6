//! [`CoreError`]: why a core could not start. Errors met while running are handled where
//! they happen (an edge is closed with an [`protocol::ErrorCode`]; a failed commit is
//! retried) and only logged.

use std::net::SocketAddr;

use crate::store::StoreError;

/// Why [`crate::Core::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A certificate or key could not be loaded, or TLS refused them.
    #[error("TLS setup: {0}")]
    Tls(#[from] transport::tls::TlsError),
    /// The store could not be opened or read, or the first id reservation failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A file or directory could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The writer thread stopped unexpectedly.
    #[error("the store writer thread stopped")]
    WriterGone,
}
