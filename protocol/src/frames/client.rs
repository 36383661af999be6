//! Frames between a game client and its edge relay.

use serde::{Deserialize, Serialize};

use super::{Capabilities, Validate, check_len, check_ranges};
use crate::codec::Reader;
use crate::error::{DecodeError, ErrorCode};
use crate::ids::{DeviceId, IdRange, MessageId, SenderKey, SessionId, UserId, check_user_id};
use crate::limits::{
    DETAIL_BYTES_MAX, DISPLAY_NAME_BYTES_MAX, LANES_MAX, TEXT_BYTES_MAX_CEILING, TOKEN_BYTES_MAX,
};

/// A frame a client sends to its edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// First frame on the control stream: who I am.
    Hello(Hello),
    /// A message to send (on a lane).
    Send(SendMessage),
    /// Acknowledges delivered messages by id (on the control stream).
    Ack(Ack),
}

/// The client's opening frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`super::PROTOCOL_VERSION`] of the client.
    pub version: u16,
    /// A JWT minted by the game's backend: `sub` is the user id, `name` the display name.
    pub token: String,
    /// The device's stable id, kept by the client library.
    pub device: DeviceId,
    /// Optional features the client understands.
    pub capabilities: Capabilities,
}

/// A message from the client. The sender is never named here: the edge stamps the
/// verified identity from the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    /// The recipient.
    pub to: UserId,
    /// The sender-side identity; re-sends after a reconnect carry the same key.
    pub key: SenderKey,
    /// The text, valid UTF-8 (the decoder checks), at most the configured limit.
    pub text: String,
}

/// Acknowledges messages the client has shown to the game (or dropped as duplicates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Sorted inclusive ranges of acknowledged ids.
    pub ranges: Vec<IdRange>,
}

/// A frame the edge sends to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Answer to `Hello`: the session is open.
    Welcome(Welcome),
    /// A message for this client (on a lane).
    Deliver(Message),
    /// A sent message is safe: on the core's disk or in the recipient's hands.
    Accepted(Accepted),
    /// A sent message was refused; it will not be delivered.
    Rejected(Rejected),
    /// Everything stored for this device when it connected has been sent.
    Synced,
}

/// The edge's answer to a good `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The verified user id (the token's `sub`).
    pub user: UserId,
    /// The verified display name (the token's `name`, or the user id).
    pub name: String,
    /// This connection's session at the edge.
    pub session: SessionId,
    /// Limits the edge enforces, so the client can check before sending.
    pub limits: Limits,
    /// Optional features the edge understands.
    pub capabilities: Capabilities,
}

/// Limits an edge announces to its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest text accepted, in bytes.
    pub text_bytes_max: u32,
    /// Sustained messages per second allowed per user.
    pub send_per_second: u32,
    /// Burst of messages allowed above the sustained rate.
    pub send_burst: u32,
    /// Number of lanes the client should use for sending.
    pub lanes: u8,
}

/// A delivered message, as the recipient sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The core's id for the message; acknowledge it with this.
    pub id: MessageId,
    /// The verified sender.
    pub from: UserId,
    /// The sender's display name at the time of sending.
    pub from_name: String,
    /// The recipient.
    pub to: UserId,
    /// The sender-side identity, used by the recipient to show each message once.
    pub key: SenderKey,
    /// When the edge received it, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The text.
    pub text: String,
}

/// A sent message is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Which message (the sender's key).
    pub key: SenderKey,
    /// The id the core gave it.
    pub id: MessageId,
}

/// A sent message was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// Which message (the sender's key).
    pub key: SenderKey,
    /// Why.
    pub code: ErrorCode,
    /// A human-readable detail, at most [`DETAIL_BYTES_MAX`] bytes.
    pub detail: String,
}

impl Validate for ClientFrame {
    const VARIANTS: u32 = 3;

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ClientFrame::Hello(h) => check_len(&h.token, TOKEN_BYTES_MAX, "token too long"),
            ClientFrame::Send(s) => check_len(&s.text, TEXT_BYTES_MAX_CEILING, "text too long"),
            ClientFrame::Ack(a) => check_ranges(&a.ranges),
        }
    }
}

impl Validate for ServerFrame {
    const VARIANTS: u32 = 5;

    #[inline]
    fn decode_fast(body: &[u8]) -> Option<(Self, usize)> {
        // `Deliver` (variant 1, a one-byte varint) is nearly all the traffic.
        match body {
            [1, rest @ ..] => {
                let mut r = Reader::new(rest)?;
                let message = Message::read_fast(&mut r)?;
                Some((ServerFrame::Deliver(message), r.remaining()))
            }
            _ => None,
        }
    }

    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ServerFrame::Welcome(w) => {
                check_len(&w.name, DISPLAY_NAME_BYTES_MAX, "display name too long")?;
                if w.limits.lanes == 0 || w.limits.lanes > LANES_MAX {
                    return Err(DecodeError::Invalid("lane count out of range"));
                }
                Ok(())
            }
            ServerFrame::Deliver(m) => m.validate(),
            ServerFrame::Accepted(_) | ServerFrame::Synced => Ok(()),
            ServerFrame::Rejected(r) => check_len(&r.detail, DETAIL_BYTES_MAX, "detail too long"),
        }
    }
}

impl Message {
    /// Reads a message laid out as postcard lays it out (fields in declaration order), if
    /// every field is ordinary; `None` otherwise (see [`Validate::decode_fast`]).
    #[inline]
    pub(crate) fn read_fast(r: &mut Reader<'_>) -> Option<Self> {
        MessageFields::read_fast(r).map(|fields| fields.to_message())
    }

    /// Checks the message's fields against the protocol ceilings.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_message(&self.from_name, &self.text)
    }
}

/// The checks of [`Message::validate`] on its two free-form fields (the ids are checked
/// when they are read).
fn check_message(from_name: &str, text: &str) -> Result<(), DecodeError> {
    check_len(from_name, DISPLAY_NAME_BYTES_MAX, "display name too long")?;
    check_len(text, TEXT_BYTES_MAX_CEILING, "text too long")
}

/// A message's fields borrowed from its encoding, ids checked: what reading a [`Message`]
/// sees before it copies anything out. An edge passing a delivery on reads this far and
/// no further ([`crate::forward`]).
pub(crate) struct MessageFields<'a> {
    pub(crate) id: MessageId,
    pub(crate) from: &'a str,
    pub(crate) from_name: &'a str,
    pub(crate) to: &'a str,
    pub(crate) key: SenderKey,
    pub(crate) sent_at_ms: u64,
    pub(crate) text: &'a str,
}

impl<'a> MessageFields<'a> {
    /// Reads the fields as postcard lays them out, if every field is ordinary; `None`
    /// otherwise (see [`Validate::decode_fast`]). Both ids are checked as [`UserId`]s.
    #[inline]
    pub(crate) fn read_fast(r: &mut Reader<'a>) -> Option<Self> {
        let id = MessageId(r.u64()?);
        let [from, from_name, to] = r.short_strs()?;
        check_user_id(from).ok()?;
        check_user_id(to).ok()?;
        // A struct literal naming every field: a field added to `Message` (or
        // `SenderKey`) fails the build here until it is read in its place.
        let key = SenderKey {
            epoch: r.u64()?,
            counter: r.u64()?,
        };
        let sent_at_ms = r.u64()?;
        let text = r.str()?;
        Some(MessageFields {
            id,
            from,
            from_name,
            to,
            key,
            sent_at_ms,
            text,
        })
    }

    /// The checks of [`Message::validate`].
    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        check_message(self.from_name, self.text)
    }

    /// The message, its strings copied out.
    pub(crate) fn to_message(&self) -> Message {
        Message {
            id: self.id,
            from: UserId::from_checked(self.from),
            from_name: self.from_name.to_owned(),
            to: UserId::from_checked(self.to),
            key: self.key,
            sent_at_ms: self.sent_at_ms,
            text: self.text.to_owned(),
        }
    }
}
