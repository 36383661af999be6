//! QUIC and TLS plumbing shared by quichat's core, edge relay and client.
//!
//! The wire format lives in `protocol` (sans-IO); this crate is the thin async layer that
//! puts it on quinn streams. It holds no chat logic.
//!
//! # Layout
//!
//! - [`tls`]: rustls/quinn configurations: TLS 1.3 only, the `ring` provider, server
//!   certificates for clients, mutual TLS between edges and cores.
//! - [`profile`]: [`TransportProfile`], the quinn transport settings for each kind of
//!   link (stream limits and windows cost memory up front, so they are chosen per link).
//! - [`pki`]: [`DevPki`], the self-signed CA and certificates `quichat dev` and tests use.
//! - [`framed`]: [`FramedRecv`] (bytes → frames) and [`spawn_writer`] (frames → bytes,
//!   batched adaptively: whatever is queued when the stream is free goes in one write).
//! - [`group`]: [`WriterGroup`], one writer task for every send stream of a connection, so
//!   frames queued on different streams at the same time share datagrams.
//! - [`lanes`]: [`LaneSenders`], a set of unidirectional message lanes, each opened at its
//!   first frame.
//! - [`copies`]: lane copies on lossy links: [`Copier`] (sending, driven by the
//!   [`WriterGroup`]), [`CopyRouter`] and [`LaneRecv`] (receiving: a lane merged with its
//!   copies), [`CopyPolicy`].
//! - [`endpoint`]: [`endpoint::client_endpoint`], a client endpoint without quinn's 3 MB
//!   receive buffer (UDP GRO off: one datagram per buffer), and
//!   [`endpoint::server_endpoint`] for edges and cores; both ask the kernel for large UDP
//!   receive buffers.
//! - [`deadline`]: [`deadline::Deadline`], the short waits of the writers' hold-back and
//!   the copy delay, on the runtime's timer.
//! - `queue`: the bounded queue between a stream's senders and its writer task (smaller
//!   than tokio's channel when idle).
//! - [`close`]/[`close_code`]: application close codes from and to [`ErrorCode`].

pub mod congestion;
pub mod copies;
pub mod deadline;
pub mod endpoint;
pub mod framed;
pub mod group;
pub mod lanes;
mod lazy_keys;
pub mod pki;
pub mod profile;
mod queue;
pub mod tls;

pub use copies::{Copier, CopyPolicy, CopyRouter, CopyStats, LaneRecv};
pub use framed::{
    FrameSender, FramedRecv, StreamError, TrySendError, spawn_writer, spawn_writer_notifying,
    write_frame,
};
pub use group::WriterGroup;
pub use lanes::LaneSenders;
pub use pki::DevPki;
pub use profile::TransportProfile;

use protocol::ErrorCode;

/// Closes `conn` with `code` as the application error code and `reason` as its text
/// (truncated to 512 bytes, on a character boundary).
pub fn close(conn: &quinn::Connection, code: ErrorCode, reason: &str) {
    let mut end = reason.len().min(512);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    conn.close(
        quinn::VarInt::from_u32(u32::from(code.to_u16())),
        &reason.as_bytes()[..end],
    );
}

/// The application error code and reason a connection was closed with by the peer (or
/// locally), if it was an application close.
pub fn close_code(err: &quinn::ConnectionError) -> Option<(ErrorCode, String)> {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = u16::try_from(close.error_code.into_inner()).unwrap_or(u16::MAX);
            Some((
                ErrorCode::from(code),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ))
        }
        _ => None,
    }
}
