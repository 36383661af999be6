//! The quichat wire protocol, sans-IO.
//!
//! This crate is deterministic: it never touches sockets, threads or the clock. Bytes go
//! in, frames come out; time is passed in by the caller as `now`. That is what lets it be
//! fuzzed byte by byte and tested with a virtual clock (see the `Pair` harness in
//! [`delivery`]'s tests).
//!
//! # Layout
//!
//! - [`frames`]: every frame, client↔edge ([`frames::client`]) and edge↔core
//!   ([`frames::link`]), with the ALPN strings and the protocol version.
//! - [`codec`]: `varint(len) ‖ postcard(frame)`; [`codec::FrameDecoder`] splits a byte
//!   stream into frames, checking the length before allocating.
//! - [`forward`]: what an edge reads from its core, with deliveries re-framed for its
//!   clients without being decoded ([`forward::read_core_frame`]).
//! - [`error`]: [`ErrorCode`], the one table of codes shared by all crates, and the
//!   codec's errors.
//! - [`ids`]: user, device, session and message ids; [`SenderKey`].
//! - [`lanes`]: conversation ids and the conversation→lane mapping.
//! - [`shard`]: [`ShardMap`], which core shard owns which user.
//! - [`limits`]: every protocol limit, named once.
//! - [`copies`]: lane copies, a second copy of small lane frames in a QUIC datagram on
//!   lossy links, and [`copies::LaneMerge`], which merges them with the stream.
//! - [`delivery`]: the client's delivery state machine: outbox, acknowledgements,
//!   de-duplication, re-send after reconnect.

pub mod codec;
pub mod copies;
pub mod delivery;
pub mod error;
pub mod forward;
pub mod frames;
pub mod ids;
pub mod lanes;
pub mod limits;
pub mod message_bytes;
pub mod shard;

pub use error::{DecodeError, EncodeError, ErrorCode};
pub use frames::client::{ClientFrame, Message, ServerFrame};
pub use frames::link::{CoreFrame, EdgeFrame};
pub use ids::{DeviceId, IdRange, MessageId, SenderKey, SessionId, ShardId, UserId};
pub use lanes::ConversationId;
pub use message_bytes::EncodedMessage;
pub use shard::ShardMap;
