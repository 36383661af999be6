//! The one table of error codes shared by every quichat crate, and the codec's errors.
//!
//! Codes travel in `Rejected` frames (a business error answers one request; the connection
//! stays up) and as QUIC application close codes (a protocol violation ends the
//! connection). [`ErrorCode::closes_connection`] says which is which.

use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] with its wire number, whether it closes the connection, and a
/// one-line meaning, so every code is listed exactly once.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $num:literal, closes: $closes:literal, $meaning:literal;)*) => {
        /// Every error quichat reports, to a client or between servers.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(from = "u16", into = "u16")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $name,)*
            /// A code this version does not know (sent by a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// The number on the wire.
            pub fn to_u16(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $num,)*
                    ErrorCode::Unknown(n) => n,
                }
            }

            /// Whether this error ends the connection (a protocol or session error) rather
            /// than answering one request.
            pub fn closes_connection(self) -> bool {
                match self {
                    $(ErrorCode::$name => $closes,)*
                    ErrorCode::Unknown(_) => false,
                }
            }

            /// A short sentence saying what the code means, for logs and error messages.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $meaning,)*
                    ErrorCode::Unknown(_) => "an error this version does not know",
                }
            }
        }

        impl From<u16> for ErrorCode {
            fn from(n: u16) -> Self {
                match n {
                    $($num => ErrorCode::$name,)*
                    other => ErrorCode::Unknown(other),
                }
            }
        }
    };
}

error_codes! {
    /// Clean close; nothing went wrong.
    NoError = 0, closes: true, "no error";
    /// The peer sent bytes that are not a valid frame, or a frame in the wrong place.
    ProtocolViolation = 1, closes: true, "protocol violation: malformed or unexpected frame";
    /// A frame's declared length exceeds the limit.
    FrameTooLarge = 2, closes: true, "frame larger than the protocol allows";
    /// The token is missing, malformed, forged, or uses a refused algorithm.
    Unauthenticated = 3, closes: true, "token invalid: bad signature, algorithm or format";
    /// The token's `exp` has passed.
    TokenExpired = 4, closes: true, "token expired";
    /// The peer speaks a protocol version this server does not.
    UnsupportedVersion = 5, closes: true, "unsupported protocol version";
    /// The first frame on the control stream was not `Hello`, or `Hello` came twice.
    HelloExpected = 6, closes: true, "the control stream must start with exactly one Hello";
    /// The sender is over their message rate limit; retry later.
    RateLimited = 10, closes: false, "rate limited: sending too fast";
    /// The text is larger than the configured limit.
    TextTooLarge = 11, closes: false, "text larger than the configured limit";
    /// The text is empty or not valid UTF-8.
    InvalidText = 12, closes: false, "text empty or not valid UTF-8";
    /// The recipient id is not a valid user id.
    InvalidRecipient = 13, closes: false, "recipient is not a valid user id";
    /// The recipient has too many undelivered messages; nothing was stored.
    InboxFull = 14, closes: false, "recipient's inbox is full";
    /// The recipient blocked the sender.
    Blocked = 15, closes: false, "recipient blocked the sender";
    /// The sender is not a member of the group.
    NotMember = 16, closes: false, "not a member of the group";
    /// The client's outbox is full: too many messages await `Accepted`.
    OutboxFull = 17, closes: false, "too many messages waiting to be accepted";
    /// The request did not complete in time (client-side).
    Timeout = 18, closes: false, "timed out";
    /// The receiver could not keep up and was disconnected; it will be replayed from the store.
    SlowConsumer = 20, closes: true, "too slow reading deliveries; reconnect to resume";
    /// The server is overloaded or its core is unreachable; retry with backoff.
    Unavailable = 21, closes: false, "service unavailable; retry later";
    /// Another connection of the same device replaced this one.
    SessionReplaced = 22, closes: true, "this device connected again elsewhere";
    /// The server is shutting down; reconnect.
    ServerShutdown = 23, closes: true, "server shutting down";
    /// The peer is not allowed to do this (e.g. an edge without a valid certificate).
    Forbidden = 24, closes: true, "not allowed";
    /// A bug or a storage failure on the server.
    Internal = 99, closes: false, "internal server error";
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.to_u16()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.meaning(), self.to_u16())
    }
}

/// Why bytes could not be decoded into a frame. Every variant maps to a close code via
/// [`DecodeError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ends before its declared length or its fields are complete.
    #[error("frame truncated")]
    Truncated,
    /// The declared length exceeds the decoder's maximum (checked before allocating).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// The frame's body has bytes left over after the frame.
    #[error("{0} trailing bytes after the frame")]
    TrailingBytes(usize),
    /// The frame names a variant this version does not know.
    #[error("unknown frame or field variant")]
    UnknownVariant,
    /// A text field is not valid UTF-8.
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    /// The length prefix is not a valid varint.
    #[error("malformed length prefix")]
    BadLength,
    /// A field's value is out of range (too long, empty, unordered, …).
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    /// Any other malformation (bad varint, bad bool, …).
    #[error("malformed frame")]
    Malformed,
}

impl DecodeError {
    /// The code a peer is closed with for sending this.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::ProtocolViolation,
        }
    }
}

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> Self {
        use postcard::Error as P;
        match e {
            P::DeserializeUnexpectedEnd => DecodeError::Truncated,
            P::DeserializeBadEnum => DecodeError::UnknownVariant,
            P::DeserializeBadUtf8 => DecodeError::InvalidUtf8,
            // Our own field checks (for example `UserId`) report through serde's custom
            // error; postcard keeps no message, so name the field class generically.
            P::SerdeDeCustom => DecodeError::Invalid("field value out of range"),
            _ => DecodeError::Malformed,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded frame would exceed the limit; the peer would refuse it.
    #[error("encoded frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The serializer failed (a bug: our frames always serialize).
    #[error("frame could not be serialized")]
    Serialize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_numbers() {
        for n in 0..200u16 {
            assert_eq!(ErrorCode::from(n).to_u16(), n);
        }
        assert_eq!(ErrorCode::from(14), ErrorCode::InboxFull);
        assert!(ErrorCode::ProtocolViolation.closes_connection());
        assert!(!ErrorCode::RateLimited.closes_connection());
    }
}
