//! What an edge reads from its core link, with deliveries ready to pass on.
//!
//! A `CoreFrame::Deliver` is the message a client gets in `ServerFrame::Deliver`, behind
//! the list of the edge's sessions that should get it; the message is encoded the same
//! way in both. So the edge need not decode the message into a
//! [`Message`](crate::Message) (an allocation per string) and encode it again for each
//! client: [`read_core_frame`] reads the sessions and checks the message in place (every
//! check decoding would make), then copies its bytes behind a new length prefix and
//! variant into an [`Encoded`]`<ServerFrame>`, which every recipient session's lane
//! writes as it is.
//!
//! A body the in-place reader does not find ordinary (a name of 128 bytes or more, an
//! unusual varint, any error) is decoded in full instead, so errors are always the
//! codec's, and what is forwarded is the same either way (the property tests compare
//! both with decoding and encoding).

use crate::codec::{self, Encoded};
use crate::error::DecodeError;
use crate::frames::client::ServerFrame;
use crate::frames::link::{CoreFrame, DeliverParts};
use crate::ids::SessionId;
use crate::lanes::ConversationId;

/// `ServerFrame::Deliver`'s variant index: postcard writes it as this one byte.
const SERVER_DELIVER_VARIANT: u8 = 1;

/// A frame from the core, as an edge acts on it.
#[derive(Debug)]
pub enum CoreIn {
    /// A delivery, ready to pass on.
    Deliver(Forward),
    /// Any other frame, decoded.
    Frame(CoreFrame),
}

/// A delivery for the edge's sessions, encoded for its clients.
#[derive(Debug)]
pub struct Forward {
    first_session: SessionId,
    more_sessions: Vec<SessionId>,
    /// The conversation the message belongs to: it picks the lane.
    pub conversation: ConversationId,
    /// The client's frame, `ServerFrame::Deliver` of the core's message.
    pub frame: Encoded<ServerFrame>,
}

impl Forward {
    /// The sessions to give the message to (at least one).
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        std::iter::once(self.first_session).chain(self.more_sessions.iter().copied())
    }
}

/// Reads one frame body from the core (as [`codec::FrameDecoder::next_body`] gives it):
/// a delivery is checked and re-framed for clients without being decoded; anything else
/// is decoded. Accepts and refuses exactly the bodies decoding a [`CoreFrame`] would.
pub fn read_core_frame(body: &[u8]) -> Result<CoreIn, DecodeError> {
    if let Some(parts) = DeliverParts::read_fast(body)
        && parts.remaining == 0
        && let Ok(frame) =
            Encoded::from_body_parts(&[&[SERVER_DELIVER_VARIANT], parts.message_bytes])
    {
        return Ok(CoreIn::Deliver(Forward {
            first_session: parts.first_session,
            more_sessions: parts.more_sessions,
            conversation: ConversationId::direct_between(parts.message.from, parts.message.to),
            frame,
        }));
    }
    match codec::decode_body::<CoreFrame>(body)? {
        CoreFrame::Deliver { sessions, message } => {
            let conversation = ConversationId::direct(&message.from, &message.to);
            let frame = Encoded::new(&ServerFrame::Deliver(message))
                .map_err(|_| DecodeError::Invalid("delivery too large to forward"))?;
            // Validation has checked the list is not empty.
            let mut sessions = sessions.into_iter();
            let first_session = sessions
                .next()
                .ok_or(DecodeError::Invalid("delivery session list size"))?;
            Ok(CoreIn::Deliver(Forward {
                first_session,
                more_sessions: sessions.collect(),
                conversation,
                frame,
            }))
        }
        frame => Ok(CoreIn::Frame(frame)),
    }
}
