//! One edge connection: handshake, then readers that feed the router.
//!
//! The edge opens the control stream and sends `EdgeHello`; the core answers
//! `CoreWelcome` and opens its lanes. Then the control stream carries `Attach`, `Detach`
//! and `Ack`, and the edge's lanes (unidirectional streams starting with
//! [`STREAM_KIND_LANE`]) carry `Submit`. A frame that does not decode, or arrives where it
//! does not belong, closes the connection with the matching code: one bad edge never
//! affects the others.

use std::sync::Arc;
use std::time::Duration;

use protocol::frames::link::CoreWelcome;
use protocol::frames::{PROTOCOL_VERSION, STREAM_KIND_LANE};
use protocol::{CoreFrame, EdgeFrame, ErrorCode, ShardId};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use transport::{FrameSender, FramedRecv, LaneSenders, StreamError};

use super::driver::{EdgeLink, Input};
use crate::router::EdgeId;

/// Stream priorities: the control stream goes before message lanes, so `Accepted` and
/// `Synced` are not stuck behind a burst of deliveries.
const CONTROL_PRIORITY: i32 = 10;
const LANE_PRIORITY: i32 = 0;

/// What every edge connection needs to know.
pub(crate) struct EdgeContext {
    /// The router's input (bounded: readers wait when it is full).
    pub(crate) inputs: mpsc::Sender<Input>,
    pub(crate) shard: ShardId,
    pub(crate) lanes: u8,
    pub(crate) lane_queue: usize,
    pub(crate) control_queue: usize,
    pub(crate) hello_timeout: Duration,
    /// Hold-back of each edge link's writer (see `transport::WriterGroup::with_linger`).
    pub(crate) linger: Duration,
    /// Signalled whenever an edge link's writer takes frames off its queues (see
    /// `Driver::room`).
    pub(crate) room: Arc<Notify>,
}

/// A handshake that failed: the code and reason to close with.
type Refusal = (ErrorCode, String);

/// Runs one edge connection to its end.
pub(crate) async fn serve(incoming: quinn::Incoming, edge: EdgeId, ctx: Arc<EdgeContext>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // Includes edges without a valid client certificate.
            tracing::info!(error = %e, "edge connection refused during the handshake");
            return;
        }
    };
    let (control, recv, lanes) =
        match tokio::time::timeout(ctx.hello_timeout, handshake(&conn, &ctx)).await {
            Ok(Ok(parts)) => parts,
            Ok(Err((code, reason))) => return transport::close(&conn, code, &reason),
            Err(_) => {
                return transport::close(&conn, ErrorCode::HelloExpected, "no EdgeHello in time");
            }
        };
    tracing::info!(edge = edge.0, remote = %conn.remote_address(), "edge connected");
    let link = EdgeLink {
        control,
        lanes,
        conn: conn.clone(),
    };
    if ctx
        .inputs
        .send(Input::Connected { edge, link })
        .await
        .is_err()
    {
        return; // Shutting down.
    }
    let mut readers = JoinSet::new();
    readers.spawn(read_control(recv, edge, conn.clone(), ctx.inputs.clone()));
    readers.spawn(accept_lanes(conn.clone(), edge, ctx.inputs.clone()));
    let why = conn.closed().await;
    tracing::info!(edge = edge.0, reason = %why, "edge disconnected");
    // Dropping the set aborts the readers (and, through theirs, the lane readers).
    drop(readers);
    let _ = ctx.inputs.send(Input::Gone { edge }).await;
}

/// `EdgeHello` → `CoreWelcome`, then the core's lanes.
async fn handshake(
    conn: &quinn::Connection,
    ctx: &EdgeContext,
) -> Result<(FrameSender<CoreFrame>, FramedRecv, LaneSenders<CoreFrame>), Refusal> {
    let lost = |e: &dyn std::fmt::Display| (ErrorCode::NoError, format!("connection lost: {e}"));
    let (mut send, recv) = conn.accept_bi().await.map_err(|e| lost(&e))?;
    let mut recv = FramedRecv::new(recv);
    let hello = match recv.next::<EdgeFrame>().await {
        Ok(Some(EdgeFrame::EdgeHello(hello))) => hello,
        Ok(Some(_)) | Ok(None) => {
            return Err((
                ErrorCode::HelloExpected,
                "the first frame must be EdgeHello".into(),
            ));
        }
        Err(e) => return Err((refusal_code(&e), e.to_string())),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err((
            ErrorCode::UnsupportedVersion,
            format!(
                "edge speaks version {}, this core {PROTOCOL_VERSION}",
                hello.version
            ),
        ));
    }
    let welcome = CoreFrame::CoreWelcome(CoreWelcome {
        shard: ctx.shard,
        version: PROTOCOL_VERSION,
        lanes: ctx.lanes,
        capabilities: 0,
    });
    transport::write_frame(&mut send, &welcome)
        .await
        .map_err(|e| lost(&e))?;
    let _ = send.set_priority(CONTROL_PRIORITY);
    // One writer task for the control stream and every lane: an `Accepted` and a
    // `Deliver` queued together share a datagram.
    let mut group = transport::WriterGroup::new(Some(ctx.room.clone())).with_linger(ctx.linger);
    let control = group.add(send, None, ctx.control_queue);
    let lanes = LaneSenders::open_in(&mut group, conn, ctx.lanes, ctx.lane_queue, LANE_PRIORITY)
        .await
        .map_err(|e| lost(&e))?;
    group.spawn();
    tracing::debug!(edge = %hello.edge, "edge hello");
    Ok((control, recv, lanes))
}

fn refusal_code(e: &StreamError) -> ErrorCode {
    if e.is_protocol_violation() {
        e.code()
    } else {
        ErrorCode::NoError
    }
}

/// Closes `conn` if `e` is the peer's fault; a lost connection needs no close.
fn close_on(conn: &quinn::Connection, e: &StreamError) {
    if e.is_protocol_violation() {
        tracing::warn!(error = %e, "closing edge for a bad frame");
        transport::close(conn, e.code(), &e.to_string());
    }
}

/// Reads the control stream: `Attach`, `Detach`, `Ack`.
async fn read_control(
    mut recv: FramedRecv,
    edge: EdgeId,
    conn: quinn::Connection,
    inputs: mpsc::Sender<Input>,
) {
    loop {
        let frame = match recv.next::<EdgeFrame>().await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return transport::close(&conn, ErrorCode::NoError, "control stream finished");
            }
            Err(e) => return close_on(&conn, &e),
        };
        match frame {
            EdgeFrame::Attach(_) | EdgeFrame::Detach { .. } | EdgeFrame::Ack { .. } => {}
            EdgeFrame::EdgeHello(_) => {
                return transport::close(&conn, ErrorCode::HelloExpected, "EdgeHello twice");
            }
            EdgeFrame::Submit(_) => {
                return transport::close(
                    &conn,
                    ErrorCode::ProtocolViolation,
                    "Submit belongs on a lane",
                );
            }
        }
        if inputs.send(Input::Frame { edge, frame }).await.is_err() {
            return;
        }
    }
}

/// Accepts the edge's lanes, each read by its own task.
async fn accept_lanes(conn: quinn::Connection, edge: EdgeId, inputs: mpsc::Sender<Input>) {
    // QUIC's stream limit (the transport profile) bounds how many lanes are open at once.
    let mut lanes = JoinSet::new();
    while let Ok(stream) = conn.accept_uni().await {
        lanes.spawn(read_lane(
            FramedRecv::new(stream),
            edge,
            conn.clone(),
            inputs.clone(),
        ));
        // Reap finished lanes so the set does not grow with every stream ever opened.
        while lanes.try_join_next().is_some() {}
    }
}

/// Reads one lane: `Submit` only.
async fn read_lane(
    mut recv: FramedRecv,
    edge: EdgeId,
    conn: quinn::Connection,
    inputs: mpsc::Sender<Input>,
) {
    if let Err(e) = recv.expect_kind(STREAM_KIND_LANE).await {
        return close_on(&conn, &e);
    }
    loop {
        let frame = match recv.next::<EdgeFrame>().await {
            Ok(Some(frame @ EdgeFrame::Submit(_))) => frame,
            Ok(Some(_)) => {
                return transport::close(
                    &conn,
                    ErrorCode::ProtocolViolation,
                    "only Submit belongs on a lane",
                );
            }
            Ok(None) => return, // The edge finished this lane.
            Err(e) => return close_on(&conn, &e),
        };
        if inputs.send(Input::Frame { edge, frame }).await.is_err() {
            return;
        }
    }
}
