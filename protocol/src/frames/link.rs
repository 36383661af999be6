//! Frames between an edge relay and a core shard (mutual TLS, ALPN
//! [`super::ALPN_CORE`]). The edge speaks for its clients: every frame names the edge
//! session it concerns, and `Submit` carries the sender identity the edge verified.

use serde::{Deserialize, Serialize};

use super::client::Message;
use super::{Capabilities, Validate, check_len, check_ranges};
use crate::codec::Reader;
use crate::error::{DecodeError, ErrorCode};
use crate::ids::{DeviceId, IdRange, MessageId, SenderKey, SessionId, ShardId, UserId};
use crate::limits::{
    DELIVER_SESSIONS_MAX, DISPLAY_NAME_BYTES_MAX, EDGE_NAME_BYTES_MAX, LANES_MAX,
    TEXT_BYTES_MAX_CEILING,
};

/// A frame an edge sends to a core shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeFrame {
    /// First frame on the control stream.
    EdgeHello(EdgeHello),
    /// A device connected at this edge (control stream). The core replays what is stored
    /// for it, then sends `Synced`, then live deliveries.
    Attach(Attach),
    /// A session ended (control stream).
    Detach {
        /// The session that ended.
        session: SessionId,
    },
    /// A message from a session, with the verified sender stamped on (on a lane).
    Submit(Submit),
    /// A session acknowledges delivered ids (control stream).
    Ack {
        /// The acknowledging session.
        session: SessionId,
        /// Sorted inclusive id ranges.
        ranges: Vec<IdRange>,
    },
}

/// The edge's opening frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeHello {
    /// [`super::PROTOCOL_VERSION`] of the edge.
    pub version: u16,
    /// A name for logs.
    pub edge: String,
    /// Optional features the edge understands.
    pub capabilities: Capabilities,
}

/// A device's session at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// The edge's session id.
    pub session: SessionId,
    /// The verified user.
    pub user: UserId,
    /// The device.
    pub device: DeviceId,
}

/// A message submitted by a session at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submit {
    /// The sending session, to route `Accepted`/`Rejected` back.
    pub session: SessionId,
    /// The verified sender (from the token, never from the client).
    pub from: UserId,
    /// The verified display name.
    pub from_name: String,
    /// The recipient.
    pub to: UserId,
    /// The sender-side identity.
    pub key: SenderKey,
    /// When the edge received it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The text (already checked by the edge against the configured limit).
    pub text: String,
}

/// A frame a core shard sends to an edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreFrame {
    /// Answer to `EdgeHello`.
    CoreWelcome(CoreWelcome),
    /// One copy of a message for this edge, with the edge's sessions that should get it
    /// (on a lane).
    Deliver {
        /// The recipient sessions at this edge.
        sessions: Vec<SessionId>,
        /// The message.
        message: Message,
    },
    /// A submitted message is safe (control stream).
    Accepted {
        /// The submitting session.
        session: SessionId,
        /// The sender's key.
        key: SenderKey,
        /// The message's id.
        id: MessageId,
    },
    /// A submitted message was refused (control stream).
    Rejected {
        /// The submitting session.
        session: SessionId,
        /// The sender's key.
        key: SenderKey,
        /// Why.
        code: ErrorCode,
    },
    /// Everything stored for an attached session when it attached has been sent. It
    /// travels on the control stream, so it can overtake replayed deliveries still in
    /// flight on lanes: it means "sent", not "received".
    Synced {
        /// The session.
        session: SessionId,
    },
    /// The core ends a session (slow consumer, replaced by a newer connection, …).
    Kick {
        /// The session.
        session: SessionId,
        /// Why.
        code: ErrorCode,
    },
}

/// The core's answer to `EdgeHello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreWelcome {
    /// Which shard this is.
    pub shard: ShardId,
    /// [`super::PROTOCOL_VERSION`] of the core.
    pub version: u16,
    /// Lanes the core will use towards the edge.
    pub lanes: u8,
    /// Optional features the core understands.
    pub capabilities: Capabilities,
}

impl Validate for EdgeFrame {
    const VARIANTS: u32 = 5;

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            EdgeFrame::EdgeHello(h) => {
                check_len(&h.edge, EDGE_NAME_BYTES_MAX, "edge name too long")
            }
            EdgeFrame::Attach(_) | EdgeFrame::Detach { .. } => Ok(()),
            EdgeFrame::Submit(s) => {
                check_len(
                    &s.from_name,
                    DISPLAY_NAME_BYTES_MAX,
                    "display name too long",
                )?;
                check_len(&s.text, TEXT_BYTES_MAX_CEILING, "text too long")
            }
            EdgeFrame::Ack { ranges, .. } => check_ranges(ranges),
        }
    }
}

impl Validate for CoreFrame {
    const VARIANTS: u32 = 6;

    #[inline]
    fn decode_fast(body: &[u8]) -> Option<(Self, usize)> {
        // `Deliver` (variant 1, a one-byte varint) is nearly all the traffic.
        match body {
            [1, rest @ ..] => {
                let mut r = Reader::new(rest)?;
                let count = usize::try_from(r.u64()?).ok()?;
                // Each id takes at least a byte: a longer list cannot be there (postcard
                // would report it truncated), so this bounds the allocation too.
                if count > r.remaining() {
                    return None;
                }
                let mut sessions = Vec::with_capacity(count);
                for _ in 0..count {
                    sessions.push(SessionId(r.u64()?));
                }
                let message = Message::read_fast(&mut r)?;
                Some((CoreFrame::Deliver { sessions, message }, r.remaining()))
            }
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            CoreFrame::CoreWelcome(w) => {
                if w.lanes == 0 || w.lanes > LANES_MAX {
                    return Err(DecodeError::Invalid("lane count out of range"));
                }
                Ok(())
            }
            CoreFrame::Deliver { sessions, message } => {
                if sessions.is_empty() || sessions.len() > DELIVER_SESSIONS_MAX {
                    return Err(DecodeError::Invalid("delivery session list size"));
                }
                message.validate()
            }
            CoreFrame::Accepted { .. }
            | CoreFrame::Rejected { .. }
            | CoreFrame::Synced { .. }
            | CoreFrame::Kick { .. } => Ok(()),
        }
    }
}
