//! Frames between an edge relay and a core shard (mutual TLS, ALPN
//! [`super::ALPN_CORE`]). The edge speaks for its clients: every frame names the edge
//! session it concerns, and `Submit` carries the sender identity the edge verified.

use serde::{Deserialize, Serialize};

use super::client::{Message, MessageFields};
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

/// A `CoreFrame::Deliver` body read in place: its sessions, and its message's fields
/// borrowed from the body. Shared by the decoder's shortcut ([`Validate::decode_fast`])
/// and an edge forwarding the message's bytes ([`crate::forward`]), so both read a
/// delivery the same way.
pub(crate) struct DeliverParts<'a> {
    /// The first recipient session (a delivery names at least one).
    pub(crate) first_session: SessionId,
    /// Any further sessions; empty, and so not allocated, in the common case of one.
    pub(crate) more_sessions: Vec<SessionId>,
    /// The message's encoding: the rest of the body up to `remaining` bytes from its end.
    pub(crate) message_bytes: &'a [u8],
    /// The message's fields, read from `message_bytes`.
    pub(crate) message: MessageFields<'a>,
    /// Bytes of the body after the message.
    pub(crate) remaining: usize,
}

impl<'a> DeliverParts<'a> {
    /// Reads a `Deliver` body whose every field is ordinary and passes the frame's
    /// validation; `None` for any other body, left to postcard and the validation to
    /// decide (see [`Validate::decode_fast`]).
    #[inline]
    pub(crate) fn read_fast(body: &'a [u8]) -> Option<Self> {
        // `Deliver` (variant 1, a one-byte varint) is nearly all the traffic.
        let [1, rest @ ..] = body else {
            return None;
        };
        let mut r = Reader::new(rest)?;
        let count = usize::try_from(r.u64()?).ok()?;
        if count == 0 || count > DELIVER_SESSIONS_MAX {
            return None;
        }
        let first_session = SessionId(r.u64()?);
        let mut more_sessions = Vec::new();
        for _ in 1..count {
            more_sessions.push(SessionId(r.u64()?));
        }
        let message_start = r.remaining();
        let message = MessageFields::read_fast(&mut r)?;
        message.validate().ok()?;
        let remaining = r.remaining();
        let message_bytes = &rest[rest.len() - message_start..rest.len() - remaining];
        Some(DeliverParts {
            first_session,
            more_sessions,
            message_bytes,
            message,
            remaining,
        })
    }
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
        let parts = DeliverParts::read_fast(body)?;
        let message = parts.message.to_message();
        let mut sessions = Vec::with_capacity(1 + parts.more_sessions.len());
        sessions.push(parts.first_session);
        sessions.extend_from_slice(&parts.more_sessions);
        Some((CoreFrame::Deliver { sessions, message }, parts.remaining))
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
