//! Every frame on the wire, in two families: client↔edge ([`client`]) and edge↔core
//! ([`link`]).
//!
//! Where frames travel:
//! - The **control stream** (bidirectional, opened by the dialing side) carries the
//!   handshake (`Hello`/`Welcome`, `EdgeHello`/`CoreWelcome`), acknowledgements, session
//!   attach/detach and per-request answers.
//! - **Lanes** (unidirectional streams, [`crate::lanes`]) carry message traffic; a
//!   conversation always uses the same lane, so its order holds while a loss on one lane
//!   does not stall the others. Each lane starts with the one byte
//!   [`STREAM_KIND_LANE`].

pub mod client;
pub mod link;

use crate::error::DecodeError;

/// The first byte of every unidirectional stream that is a message lane.
pub const STREAM_KIND_LANE: u8 = 1;

/// The protocol version spoken by this crate; the major version is also in the ALPN.
pub const PROTOCOL_VERSION: u16 = 1;

/// ALPN for client↔edge connections.
pub const ALPN_CLIENT: &[u8] = b"quichat/1";
/// ALPN for edge↔core connections.
pub const ALPN_CORE: &[u8] = b"quichat-core/1";

/// Capability bits a peer announces in its hello, so newer frame kinds are only sent to
/// peers that understand them.
pub type Capabilities = u64;

/// Capability: "I read lane copies" — QUIC datagrams carrying a second copy of lane
/// frames (see [`crate::copies`]). A peer sends copies only to a peer that announced it.
pub const CAP_LANE_COPIES: Capabilities = 1;

/// A frame family that can check its own fields after decoding: lengths and orderings
/// serde cannot express. The codec calls it on every decoded frame, so a frame that comes
/// out of the decoder is valid.
pub trait Validate {
    /// How many variants the frame enum has. The decoder checks a frame's leading variant
    /// index against it first, so a frame kind this version does not know is reported as
    /// [`DecodeError::UnknownVariant`] (postcard itself cannot tell it from other field
    /// errors).
    const VARIANTS: u32;

    /// Checks every field against the protocol's limits.
    fn validate(&self) -> Result<(), DecodeError>;

    /// A shortcut past postcard for the hottest frames: decodes a frame body whose
    /// fields are all ordinary and returns it with the number of bytes left after it.
    /// `None` means "not handled here" (another kind of frame, or anything unusual or
    /// wrong), and the codec asks postcard, which then decides, errors included. So it
    /// must return `Some` only with the frame and count postcard would give for `body`;
    /// the property tests compare the two.
    #[doc(hidden)]
    fn decode_fast(_body: &[u8]) -> Option<(Self, usize)>
    where
        Self: Sized,
    {
        None
    }
}

/// Checks a string field's length in bytes.
pub(crate) fn check_len(s: &str, max: usize, what: &'static str) -> Result<(), DecodeError> {
    if s.len() > max {
        Err(DecodeError::Invalid(what))
    } else {
        Ok(())
    }
}

/// Checks a list of ack ranges: bounded in number, each well-ordered.
pub(crate) fn check_ranges(ranges: &[crate::ids::IdRange]) -> Result<(), DecodeError> {
    if ranges.len() > crate::limits::ACK_RANGES_MAX {
        return Err(DecodeError::Invalid("too many ack ranges"));
    }
    if ranges.iter().any(|r| r.first > r.last) {
        return Err(DecodeError::Invalid("ack range with first > last"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Validate;
    use super::client::{ClientFrame, ServerFrame};
    use super::link::{CoreFrame, EdgeFrame};

    // `VARIANTS` is written by hand; serde numbers variants in declaration order, so the
    // last variant's index must be `VARIANTS - 1`. Encoding one of each checks it.
    #[test]
    fn variant_counts_match_the_enums() {
        fn last_index<T: serde::Serialize>(frame: &T) -> u8 {
            postcard::to_allocvec(frame).unwrap()[0]
        }
        assert_eq!(
            u32::from(last_index(&ClientFrame::Ack(super::client::Ack {
                ranges: vec![]
            }))),
            ClientFrame::VARIANTS - 1
        );
        assert_eq!(
            u32::from(last_index(&ServerFrame::Synced)),
            ServerFrame::VARIANTS - 1
        );
        assert_eq!(
            u32::from(last_index(&EdgeFrame::Ack {
                session: crate::SessionId(1),
                ranges: vec![]
            })),
            EdgeFrame::VARIANTS - 1
        );
        assert_eq!(
            u32::from(last_index(&CoreFrame::Kick {
                session: crate::SessionId(1),
                code: crate::ErrorCode::NoError
            })),
            CoreFrame::VARIANTS - 1
        );
    }
}
