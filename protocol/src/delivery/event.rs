//! What comes out of a [`super::Delivery`]: frames to transmit, events for the game, and
//! the local send errors.

use crate::error::ErrorCode;
use crate::frames::client::{ClientFrame, Message};
use crate::ids::{MessageId, SenderKey};

/// A frame for the driver to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The frame.
    pub frame: ClientFrame,
    /// The lane to write it on (`Send` frames), or `None` for the control stream (`Ack`).
    pub lane: Option<u8>,
}

/// Something the game should learn about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// A message for this device, shown once.
    Message(Message),
    /// A sent message is safe: on the core's disk or in the recipient's hands.
    Accepted {
        /// The message's sender key, as returned by `send`.
        key: SenderKey,
        /// The id the core gave it.
        id: MessageId,
    },
    /// A sent message will not be delivered (by the core's decision), or the library
    /// gave up waiting for an answer ([`ErrorCode::Timeout`]).
    Rejected {
        /// The message's sender key, as returned by `send`.
        key: SenderKey,
        /// Why.
        code: ErrorCode,
        /// A human-readable detail.
        detail: String,
    },
    /// Everything stored for this device when it connected has been sent by the server
    /// (it may still be in flight on lanes).
    Synced,
}

/// Why a message could not be queued. Nothing was queued; the game may fix and retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The text is empty.
    #[error("text is empty")]
    InvalidText,
    /// The text is longer than the edge's limit (or the protocol ceiling before the first
    /// `Welcome`).
    #[error("text is {len} bytes, the limit is {max}")]
    TextTooLarge {
        /// The text's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Too many messages await the core's answer.
    #[error("outbox full: {max} messages await the server's answer")]
    OutboxFull {
        /// The configured outbox size.
        max: usize,
    },
    /// The server is behind (its answers show a standing queue) and this client already
    /// has as many messages unanswered as it may now: retry after some have been answered.
    #[error("server busy: {in_flight} messages await its answer, the limit is now {window}")]
    Busy {
        /// Messages awaiting the server's answer.
        in_flight: usize,
        /// How many may, for now.
        window: usize,
    },
}

impl SendError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            SendError::InvalidText => ErrorCode::InvalidText,
            SendError::TextTooLarge { .. } => ErrorCode::TextTooLarge,
            SendError::OutboxFull { .. } => ErrorCode::OutboxFull,
            SendError::Busy { .. } => ErrorCode::Unavailable,
        }
    }
}
