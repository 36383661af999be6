//! The edge's errors.
//!
//! [`EdgeError`] is what [`crate::Edge::start`] can fail with: all configuration or
//! environment problems, found before any client is accepted. Once running, the edge
//! does not fail as a whole: a bad client is closed with a code ([`SessionEnd`]), and a
//! lost core link is retried.

use protocol::ErrorCode;

use crate::auth::AuthError;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The configuration is invalid (unparseable, out of range, inconsistent).
    #[error("invalid edge configuration: {0}")]
    Config(String),
    /// The token key could not be loaded.
    #[error("token verification key: {0}")]
    Auth(#[from] AuthError),
    /// A certificate or key could not be loaded, or rustls refused them.
    #[error("TLS: {0}")]
    Tls(#[from] transport::tls::TlsError),
    /// The client-facing UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Why the edge ends a client's connection: the close code and a reason saying what was
/// wrong, both sent to the client as a QUIC application close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionEnd {
    pub(crate) code: ErrorCode,
    pub(crate) reason: String,
}

impl SessionEnd {
    pub(crate) fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// Closes `conn` with this code and reason.
    pub(crate) fn close(&self, conn: &quinn::Connection) {
        transport::close(conn, self.code, &self.reason);
    }
}
