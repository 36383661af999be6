//! [`Inbound`]: every stream the edge sends on, read by the driver's own task.
//!
//! The control stream (answers to sends) and the edge's lanes (deliveries) are polled
//! in place rather than by reader tasks feeding queues: a frame then reaches the
//! [`Delivery`](protocol::delivery::Delivery) without a hand-off between tasks, each of
//! which costs a wake-up (and, on a multi-threaded runtime, often a thread switch). Why,
//! and what it measured: `docs/ARCHITECTURE.md`, "The client reads its streams in its
//! driver task".
//!
//! Backpressure is the same as with queues, one step earlier: while the game is behind
//! on events the driver stops polling the lanes, so their data stays in QUIC's receive
//! buffers and flow control pushes back to the edge. The control stream is always
//! polled, so answers keep flowing even then.

use std::task::{Context, Poll};

use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use protocol::ServerFrame;
use protocol::frames::STREAM_KIND_LANE;
use protocol::limits::FRAME_BYTES_MAX;
use transport::{CopyRouter, FramedRecv, LaneRecv, StreamError};

/// Frames of one stream, ending after its first error.
type Frames = BoxStream<'static, Result<ServerFrame, StreamError>>;

/// What [`Inbound::poll_frames`] found.
#[derive(Debug)]
pub(crate) enum Arrived {
    /// Frames, in the order each stream gave them (the control stream's first).
    Frames(Vec<ServerFrame>),
    /// The control stream ended (cleanly or not) while the connection is open: the
    /// session cannot go on without it.
    ControlEnded,
}

/// The edge's streams on one connection.
pub(crate) struct Inbound {
    conn: quinn::Connection,
    control: Frames,
    /// Ended once the control stream returned its last item; not polled again.
    control_ended: bool,
    /// Lanes accepted so far; a lane that ends or fails leaves the set.
    lanes: SelectAll<Frames>,
    /// The edge's lanes as it opens them; ends when the connection does.
    accept: BoxStream<'static, quinn::RecvStream>,
    /// Routes lane copies to their lanes, when both sides agreed to copies.
    router: Option<CopyRouter>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("lanes", &self.lanes.len())
            .field("control_ended", &self.control_ended)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// Reads `control` (past the handshake) and every lane the edge opens on `conn` (at
    /// most `LANES_MAX` at once: the transport profile's stream limit).
    pub(crate) fn new(
        conn: &quinn::Connection,
        control: FramedRecv,
        router: Option<CopyRouter>,
    ) -> Self {
        // Fused: `unfold` must not be polled again once it ended (the connection did).
        let accept = stream::unfold(conn.clone(), |conn| async move {
            conn.accept_uni().await.ok().map(|recv| (recv, conn))
        })
        .fuse();
        Self {
            conn: conn.clone(),
            control: stream::try_unfold(control, |mut framed| async move {
                Ok(framed
                    .next::<ServerFrame>()
                    .await?
                    .map(|frame| (frame, framed)))
            })
            .boxed(),
            control_ended: false,
            lanes: SelectAll::new(),
            accept: accept.boxed(),
            router,
        }
    }

    /// Takes the frames that are ready: up to `max` from the control stream and, if
    /// `read_lanes`, up to `max` from the lanes. Pending while there are none. A stream
    /// that breaks the protocol closes the connection (the caller sees it closed next);
    /// other stream errors end just that stream.
    pub(crate) fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        read_lanes: bool,
        max: usize,
    ) -> Poll<Arrived> {
        let mut frames = Vec::new();
        while !self.control_ended && frames.len() < max {
            match self.control.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => frames.push(frame),
                Poll::Ready(Some(Err(e))) => {
                    fail(&self.conn, &e);
                    self.control_ended = true;
                }
                Poll::Ready(None) => self.control_ended = true,
                Poll::Pending => break,
            }
        }
        // Accepting a lane is not reading it, so lanes are accepted even while the game
        // is behind.
        while let Poll::Ready(Some(recv)) = self.accept.poll_next_unpin(cx) {
            self.lanes.push(self.lane(recv));
        }
        let from_control = frames.len();
        while read_lanes && frames.len() - from_control < max {
            match self.lanes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => frames.push(frame),
                // The lane's stream is over; the others go on.
                Poll::Ready(Some(Err(e))) => fail(&self.conn, &e),
                // `None`: no lanes yet (or all ended); a new one wakes `accept`.
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if !frames.is_empty() {
            Poll::Ready(Arrived::Frames(frames))
        } else if self.control_ended {
            Poll::Ready(Arrived::ControlEnded)
        } else {
            Poll::Pending
        }
    }

    /// The frames of one of the edge's lanes, merged with its copies.
    fn lane(&self, recv: quinn::RecvStream) -> Frames {
        let lane = LaneRecv::<ServerFrame>::new(
            recv,
            STREAM_KIND_LANE,
            FRAME_BYTES_MAX,
            self.router.as_ref(),
        );
        stream::try_unfold(lane, |mut lane| async move {
            Ok(lane.next().await?.map(|frame| (frame, lane)))
        })
        .boxed()
    }
}

/// Closes the connection if `e` means the edge broke the protocol; otherwise the stream
/// simply ended (reset, or the connection is going).
fn fail(conn: &quinn::Connection, e: &StreamError) {
    if e.is_protocol_violation() {
        tracing::warn!(error = %e, "edge broke the protocol; closing");
        transport::close(conn, e.code(), &e.to_string());
    } else {
        tracing::debug!(error = %e, "stream ended");
    }
}
