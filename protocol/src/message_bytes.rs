//! A message kept in its wire encoding, for a core replaying what it stored.
//!
//! A core stores each undelivered message as a record that begins with the message
//! encoded exactly as `CoreFrame::Deliver` carries it (postcard writes a struct's fields
//! one after another, and the message is the record's first field). So a replay need not
//! decode a stored message into a [`Message`] (an allocation per string) for the link
//! writer to encode it again: [`EncodedMessage::take_from`] reads the fields routing needs
//! in place, checks the rest as decoding would, and keeps the bytes;
//! [`EncodedMessage::deliver_frame`] puts them behind a `Deliver` header for one session.
//!
//! Bytes the in-place reader does not find ordinary (a name of 128 bytes or more, an
//! unusual varint) are decoded in full instead, so what is accepted and refused is always
//! the codec's, and the bytes kept are the same either way.

use bytes::Bytes;

use crate::codec::{self, Encoded, Reader};
use crate::error::{DecodeError, EncodeError};
use crate::frames::client::{Message, MessageFields};
use crate::frames::link::CoreFrame;
use crate::ids::{MessageId, SessionId, UserId};
use crate::lanes::ConversationId;

/// `CoreFrame::Deliver`'s variant index: postcard writes it as this one byte.
const CORE_DELIVER_VARIANT: u8 = 1;

/// Most bytes a `Deliver` header for one session takes: the variant, the list's length
/// and the session id (a `u64` varint, at most 10 bytes).
const DELIVER_HEAD_BYTES_MAX: usize = 1 + 1 + 10;

/// A message's encoding, checked to read as a valid [`Message`], with the fields routing
/// needs. Cheap to clone (the bytes are shared).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedMessage {
    bytes: Bytes,
    id: MessageId,
    to: UserId,
    conversation: ConversationId,
}

impl EncodedMessage {
    /// Encodes `message`.
    pub fn new(message: &Message) -> Result<Self, EncodeError> {
        let bytes = postcard::to_allocvec(message).map_err(|_| EncodeError::Serialize)?;
        Ok(Self {
            bytes: Bytes::from(bytes),
            id: message.id,
            to: message.to.clone(),
            conversation: ConversationId::direct(&message.from, &message.to),
        })
    }

    /// Reads the message encoded at the front of `bytes` and copies its encoding out.
    /// Returns it and the bytes after it. Accepts and refuses exactly the encodings
    /// decoding a [`Message`] (and [`Message::validate`]) would.
    pub fn take_from(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        if let Some(mut reader) = Reader::new(bytes)
            && let Some(fields) = MessageFields::read_fast(&mut reader)
            && fields.validate().is_ok()
        {
            let (encoding, rest) = bytes.split_at(bytes.len() - reader.remaining());
            let message = Self {
                bytes: Bytes::copy_from_slice(encoding),
                id: fields.id,
                to: UserId::from_checked(fields.to),
                conversation: ConversationId::direct_between(fields.from, fields.to),
            };
            return Ok((message, rest));
        }
        let (message, rest): (Message, &[u8]) = postcard::take_from_bytes(bytes)?;
        message.validate()?;
        let encoding = &bytes[..bytes.len() - rest.len()];
        let message = Self {
            bytes: Bytes::copy_from_slice(encoding),
            id: message.id,
            conversation: ConversationId::direct(&message.from, &message.to),
            to: message.to,
        };
        Ok((message, rest))
    }

    /// The message's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The recipient.
    pub fn to(&self) -> &UserId {
        &self.to
    }

    /// The conversation the message belongs to: it picks the lane.
    pub fn conversation(&self) -> ConversationId {
        self.conversation
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message, decoded (for tests and logs; the bytes were checked when read).
    pub fn decode(&self) -> Result<Message, DecodeError> {
        let message: Message = postcard::from_bytes(&self.bytes)?;
        message.validate()?;
        Ok(message)
    }

    /// `CoreFrame::Deliver` of this message to `session`, encoded: the same bytes as
    /// encoding the frame with the decoded message.
    pub fn deliver_frame(&self, session: SessionId) -> Result<Encoded<CoreFrame>, EncodeError> {
        let mut head = [0u8; DELIVER_HEAD_BYTES_MAX];
        head[0] = CORE_DELIVER_VARIANT;
        // The session list: one entry.
        head[1] = 1;
        let session_len = codec::write_varint(session.0, &mut head[2..]);
        Encoded::from_body_parts(&[&head[..2 + session_len], &self.bytes])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SenderKey;
    use proptest::prelude::*;

    fn message(from: &str, from_name: &str, text: &str, id: u64) -> Message {
        Message {
            id: MessageId(id),
            from: UserId::new(from).unwrap(),
            from_name: from_name.to_owned(),
            to: UserId::new("bob").unwrap(),
            key: SenderKey {
                epoch: id.wrapping_mul(31),
                counter: id,
            },
            sent_at_ms: 1_700_000_000_000,
            text: text.to_owned(),
        }
    }

    #[test]
    fn a_deliver_frame_is_the_encoding_of_the_decoded_frame() {
        let m = message("alice", "Alice", "gg", 42);
        let encoded = EncodedMessage::new(&m).unwrap();
        for session in [0, 1, 127, 128, u64::MAX] {
            let frame = encoded.deliver_frame(SessionId(session)).unwrap();
            let expected = Encoded::new(&CoreFrame::Deliver {
                sessions: vec![SessionId(session)],
                message: m.clone(),
            })
            .unwrap();
            assert_eq!(frame.as_bytes(), expected.as_bytes(), "session {session}");
        }
    }

    #[test]
    fn take_from_keeps_the_message_and_leaves_what_follows() {
        let m = message("alice", "Alice", "see you", 7);
        let mut bytes = postcard::to_allocvec(&m).unwrap();
        bytes.extend_from_slice(&[9, 8, 7]);
        let (taken, rest) = EncodedMessage::take_from(&bytes).unwrap();
        assert_eq!(rest, &[9, 8, 7]);
        assert_eq!(taken.id(), MessageId(7));
        assert_eq!(taken.to().as_str(), "bob");
        assert_eq!(taken.conversation(), ConversationId::direct(&m.from, &m.to));
        assert_eq!(taken.decode().unwrap(), m);
        assert_eq!(taken, EncodedMessage::new(&m).unwrap());
    }

    #[test]
    fn a_long_display_name_takes_the_decoding_path_to_the_same_result() {
        // 128 bytes: a two-byte length, which the in-place reader leaves to postcard.
        let m = message("alice", &"A".repeat(128), "hi", 3);
        let bytes = postcard::to_allocvec(&m).unwrap();
        let (taken, rest) = EncodedMessage::take_from(&bytes).unwrap();
        assert!(rest.is_empty());
        assert_eq!(taken, EncodedMessage::new(&m).unwrap());
    }

    #[test]
    fn bad_bytes_are_refused_as_decoding_refuses_them() {
        let m = message("alice", "Alice", "hello", 5);
        let bytes = postcard::to_allocvec(&m).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                EncodedMessage::take_from(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        // A display name over the ceiling decodes but fails validation.
        let long = message("alice", &"A".repeat(300), "hello", 5);
        let bytes = postcard::to_allocvec(&long).unwrap();
        assert!(EncodedMessage::take_from(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn take_from_agrees_with_decoding(
            text in "\\PC{0,40}",
            id in any::<u64>(),
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            // A valid encoding, a few bytes changed, maybe cut short, maybe followed by more.
            let mut bytes = postcard::to_allocvec(&message("alice", "Alice", &text, id)).unwrap();
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if tail.is_empty() {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend_from_slice(&tail);
            let decoded = postcard::take_from_bytes::<Message>(&bytes)
                .ok()
                .filter(|(m, _)| m.validate().is_ok());
            match (EncodedMessage::take_from(&bytes), decoded) {
                (Ok((taken, rest)), Some((message, decoded_rest))) => {
                    prop_assert_eq!(rest, decoded_rest);
                    prop_assert_eq!(taken.as_bytes(), &bytes[..bytes.len() - rest.len()]);
                    prop_assert_eq!(taken.id(), message.id);
                    prop_assert_eq!(taken.to(), &message.to);
                    prop_assert_eq!(
                        taken.conversation(),
                        ConversationId::direct(&message.from, &message.to)
                    );
                    prop_assert_eq!(taken.decode().unwrap(), message);
                }
                (Err(_), None) => {}
                (taken, decoded) => prop_assert!(
                    false,
                    "take_from {:?}, decoding {:?}",
                    taken.map(|t| t.0),
                    decoded.map(|d| d.0)
                ),
            }
        }

        #[test]
        fn take_from_reads_every_valid_message(
            from in "[a-z][a-z0-9_]{0,20}",
            name in "\\PC{0,140}",
            text in "\\PC{0,300}",
            id in any::<u64>(),
        ) {
            let m = message(&from, &name, &text, id);
            prop_assume!(m.validate().is_ok());
            let bytes = postcard::to_allocvec(&m).unwrap();
            let (taken, rest) = EncodedMessage::take_from(&bytes).unwrap();
            prop_assert!(rest.is_empty());
            prop_assert_eq!(taken.as_bytes(), &bytes[..]);
            prop_assert_eq!(taken.decode().unwrap(), m);
        }
    }
}
