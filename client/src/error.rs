//! The client's errors: [`ConnectError`] (reaching the edge), [`SendError`] (one
//! message), and [`Error`], their union for callers who do not branch.

use protocol::ErrorCode;
use protocol::UserId;
use transport::tls::TlsError;

/// Why a connection to the edge could not be made (or was refused).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS configuration could not be built (bad root certificates).
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    /// The local UDP socket could not be opened.
    #[error("opening the UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// quinn refused to dial (for example an invalid server name).
    #[error("dialing the edge: {0}")]
    Dial(#[from] quinn::ConnectError),
    /// The connection failed or was lost without an application code (unreachable,
    /// handshake failure, certificate not trusted, idle timeout).
    #[error("connection: {0}")]
    Connection(quinn::ConnectionError),
    /// The edge closed the connection with a code: a bad or expired token, an
    /// unsupported version, an overloaded server, ….
    #[error("refused by the edge: {code}: {reason}")]
    Refused {
        /// The edge's code.
        code: ErrorCode,
        /// The edge's reason.
        reason: String,
    },
    /// The attempt took longer than the configured connect timeout.
    #[error("timed out")]
    Timeout,
    /// The control stream failed during the handshake (reset or stopped by the edge).
    #[error("control stream: {0}")]
    Stream(String),
    /// The edge broke the protocol during the handshake.
    #[error("protocol violation by the edge: {0}")]
    Protocol(String),
    /// The token names another user than the one this client was connected as (after
    /// [`crate::Client::set_token`]); a client is one user for its whole life.
    #[error("the token is for {got}, this client is {expected}")]
    UserChanged {
        /// The user this client was connected as.
        expected: UserId,
        /// The user the edge verified now.
        got: UserId,
    },
}

impl ConnectError {
    /// The protocol code, when there is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ConnectError::Refused { code, .. } => Some(*code),
            ConnectError::Timeout => Some(ErrorCode::Timeout),
            ConnectError::Protocol(_) => Some(ErrorCode::ProtocolViolation),
            ConnectError::UserChanged { .. } => Some(ErrorCode::Unauthenticated),
            _ => None,
        }
    }

    /// Whether retrying cannot help until something changes (a new token, a new build,
    /// a fixed configuration), so reconnecting stops.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Tls(_) | ConnectError::Dial(_) | ConnectError::UserChanged { .. } => true,
            ConnectError::Refused { code, .. } => code_is_permanent(*code),
            ConnectError::Socket(_)
            | ConnectError::Connection(_)
            | ConnectError::Timeout
            | ConnectError::Stream(_)
            | ConnectError::Protocol(_) => false,
        }
    }

    /// The error for a connection that ended during the handshake: the edge's code if it
    /// closed with one.
    pub(crate) fn from_connection(err: quinn::ConnectionError) -> Self {
        match transport::close_code(&err) {
            Some((code, reason)) => ConnectError::Refused { code, reason },
            None => ConnectError::Connection(err),
        }
    }
}

/// Codes after which reconnecting with the same token and build cannot succeed, or would
/// fight another connection of this device (`SessionReplaced`).
pub(crate) fn code_is_permanent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated
            | ErrorCode::TokenExpired
            | ErrorCode::UnsupportedVersion
            | ErrorCode::Forbidden
            | ErrorCode::SessionReplaced
    )
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Refused before queueing (empty, too large, outbox full): nothing was sent.
    #[error(transparent)]
    Local(#[from] protocol::delivery::SendError),
    /// The server refused it (blocked, inbox full, rate limited, …), or the send timeout
    /// passed ([`ErrorCode::Timeout`]; the message may still arrive).
    #[error("rejected: {code}: {detail}")]
    Rejected {
        /// Why.
        code: ErrorCode,
        /// The server's detail.
        detail: String,
    },
    /// The client was closed before an answer came; the message may or may not arrive.
    #[error("the client was closed before the server answered")]
    Closed,
}

impl SendError {
    /// The protocol code (`None` for [`SendError::Closed`]).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SendError::Local(e) => Some(e.code()),
            SendError::Rejected { code, .. } => Some(*code),
            SendError::Closed => None,
        }
    }
}

/// Any client error, for callers who propagate rather than branch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Sending failed.
    #[error(transparent)]
    Send(#[from] SendError),
}
