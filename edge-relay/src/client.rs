//! One client connection, from the QUIC handshake to `Detach`.
//!
//! [`serve`] runs the handshake ([`crate::handshake`]), registers the session, then runs,
//! until the connection ends:
//! - the control reader: `Ack`s go to the core link; anything else is a violation;
//! - the lane acceptor, which starts a reader task per lane the client opens: each `Send`
//!   is checked (rate, size), stamped with the verified sender, and put into the
//!   session's in-flight map;
//! - the pump ([`crate::pump`]), which writes the in-flight map to the core.
//!
//! The control reader, the lane acceptor and the pump are futures of the connection's
//! own task, not tasks of their own: an idle connection then costs one task (plus
//! quinn's and the writer's), which matters at tens of thousands of connections. They
//! still run independently: the task polls each when it is woken.
//!
//! A protocol violation on any stream closes this client alone, with the code from
//! [`transport::StreamError::code`] and a reason naming the stream and the problem.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::ErrorCode;
use protocol::frames::STREAM_KIND_LANE;
use protocol::frames::client::{ClientFrame, Rejected, SendMessage, ServerFrame};
use protocol::frames::link::{Attach, Submit};
use protocol::limits::FRAME_BYTES_MAX;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use transport::{Copier, CopyRouter, FramedRecv, LaneRecv, LaneSenders, StreamError, WriterGroup};

use crate::error::SessionEnd;
use crate::handshake::{self, Welcomed};
use crate::inflight::InFlight;
use crate::limits::{CLIENT_CONTROL_QUEUE_FRAMES, CONTROL_PRIORITY, LANE_PRIORITY, Refusal};
use crate::pump;
use crate::session::Session;
use crate::shared::Shared;
use crate::stats::Counters;
use crate::upstream::LinkCommand;

/// Serves one incoming connection. `permit` is its place under the connection limit,
/// released when the returned future ends.
///
/// The returned future lives as long as the connection, so its size is paid per idle
/// client: the handshake and the session's setup run in a box of their own ([`start`]),
/// freed once the session is running, and only what the running session needs is kept
/// ([`run`]). Inline, the handshake's state (a `quinn::Incoming` alone is 384 bytes, and
/// an argument's room is kept for the whole life of an `async fn`) made this future
/// 2.9 KiB (`rustc -Zprint-type-sizes`).
pub(crate) fn serve(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    let start = Box::pin(start(shared.clone(), incoming));
    run(shared, start, permit)
}

/// A session, welcomed, registered and attached at its core.
struct Started {
    session: Arc<Session>,
    /// The control stream, read by [`read_control`] from now on.
    control_recv: FramedRecv,
    /// Routes the client's lane copies to the lane readers, if both sides use copies.
    router: Option<CopyRouter>,
}

/// Runs the handshake, sets up the session's writers, registers it and attaches it at
/// its core. `None` if the client was refused or left.
async fn start(shared: Arc<Shared>, incoming: quinn::Incoming) -> Option<Started> {
    let remote = incoming.remote_address();
    let Some(welcomed) = handshake::run(&shared, incoming).await else {
        Counters::bump(&shared.counters.refused);
        return None;
    };
    let Welcomed {
        conn,
        identity,
        device,
        session: id,
        control_send,
        control_recv,
        copies,
    } = welcomed;

    // Fails only if the stream is already gone; the writer then reports it.
    let _ = control_send.set_priority(CONTROL_PRIORITY);
    // One writer task for the control stream and every lane of this client.
    let mut group = WriterGroup::new(None);
    // The client's copies are read (and its deliveries copied) only if both sides
    // announced lane copies.
    let router = copies.then(CopyRouter::default);
    if copies {
        group = group.with_copies(Copier::new(&conn, shared.settings.lane_copies));
    }
    let control = group.add(control_send, None, CLIENT_CONTROL_QUEUE_FRAMES);
    let lanes = match LaneSenders::open_in(
        &mut group,
        &conn,
        shared.settings.lanes,
        shared.settings.client_queue_frames,
        LANE_PRIORITY,
    )
    .await
    {
        Ok(lanes) => lanes,
        Err(e) => {
            tracing::debug!(%remote, error = %e, "client left while lanes opened");
            return None;
        }
    };
    group.spawn();
    let session = Arc::new(Session {
        id,
        home_link: shared.link_index(&identity.user),
        user: identity.user,
        name: identity.name,
        device,
        conn,
        control,
        lanes,
        inflight: InFlight::new(shared.settings.inflight_per_session),
        wake: Notify::new(),
        closed_slow: AtomicBool::new(false),
    });
    shared.registry.insert(session.clone());
    Counters::bump(&shared.counters.clients_total);
    shared
        .counters
        .clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(%remote, session = id.0, user = %session.user, "client welcomed");
    // Fails only once the link task stopped: the edge is shutting down.
    let _ = shared.links[session.home_link]
        .command(LinkCommand::Attach(Attach {
            session: id,
            user: session.user.clone(),
            device,
        }))
        .await;
    Some(Started {
        session,
        control_recv,
        router,
    })
}

/// Runs a started session until the connection ends, then unregisters and detaches it.
async fn run(
    shared: Arc<Shared>,
    start: Pin<Box<impl Future<Output = Option<Started>>>>,
    _permit: OwnedSemaphorePermit,
) {
    let Some(Started {
        session,
        control_recv,
        router,
    }) = start.await
    else {
        return;
    };
    // The first to end ends the session; dropping the others stops them (and the lane
    // readers with the acceptor). The futures are written inside `select!`, not bound
    // and pinned first: moved into a pinned local, each was kept twice in this future
    // (about 1.5 KiB more per connection).
    let ended = tokio::select! {
        _ = session.conn.closed() => None,
        result = read_control(&shared, &session, control_recv) => Some(result),
        result = accept_lanes(&shared, &session, router.as_ref()) => Some(result),
        () = route_copies(router.as_ref(), &session.conn) => None,
        never = pump::run(&session, &shared.links) => match never {},
    };
    let id = session.id;
    if let Some(result) = ended {
        let end = match result {
            Err(end) => end,
            Ok(()) => SessionEnd::new(ErrorCode::NoError, "client finished its control stream"),
        };
        tracing::debug!(session = id.0, code = %end.code, reason = %end.reason, "closing client");
        end.close(&session.conn);
    }
    shared.registry.remove(id);
    let _ = shared.links[session.home_link]
        .command(LinkCommand::Detach(id))
        .await;
    shared
        .counters
        .clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Routes the client's lane copies to the lane readers until the connection ends; never
/// ends without copies.
async fn route_copies(router: Option<&CopyRouter>, conn: &quinn::Connection) {
    match router {
        Some(router) => router.run(conn).await,
        None => std::future::pending().await,
    }
}

/// Reads the client's control stream after `Hello`: acknowledgements only.
async fn read_control(
    shared: &Shared,
    session: &Session,
    mut recv: FramedRecv,
) -> Result<(), SessionEnd> {
    let home = &shared.links[session.home_link];
    loop {
        match recv.next::<ClientFrame>().await {
            Ok(Some(ClientFrame::Ack(ack))) => {
                if !ack.ranges.is_empty() {
                    let command = LinkCommand::Ack {
                        session: session.id,
                        ranges: ack.ranges,
                    };
                    // Waits only when the link's queue is full, in a box: inline, the
                    // wait's state would be part of this future, which every idle session
                    // keeps. A closed queue means the edge is shutting down.
                    if let Err(TrySendError::Full(command)) = home.try_command(command) {
                        let _ = Box::pin(home.command(command)).await;
                    }
                }
            }
            Ok(Some(ClientFrame::Hello(_))) => {
                return Err(SessionEnd::new(
                    ErrorCode::HelloExpected,
                    "Hello sent twice",
                ));
            }
            Ok(Some(ClientFrame::Send(_))) => {
                return Err(SessionEnd::new(
                    ErrorCode::ProtocolViolation,
                    "Send belongs on a lane, not on the control stream",
                ));
            }
            Ok(None) => return Ok(()),
            Err(e) => return stream_failed("control stream", e),
        }
    }
}

/// Accepts the client's lanes (at most the announced number) and runs a reader on each.
async fn accept_lanes(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    router: Option<&CopyRouter>,
) -> Result<(), SessionEnd> {
    let mut readers = JoinSet::new();
    let mut opened = 0u32;
    loop {
        tokio::select! {
            recv = session.conn.accept_uni() => {
                let Ok(recv) = recv else { return Ok(()) };
                if opened >= u32::from(shared.settings.lanes) {
                    return Err(SessionEnd::new(
                        ErrorCode::ProtocolViolation,
                        format!("opened more than the {} lanes announced", shared.settings.lanes),
                    ));
                }
                let lane = LaneRecv::new(recv, STREAM_KIND_LANE, FRAME_BYTES_MAX, router);
                readers.spawn(read_lane(shared.clone(), session.clone(), lane, opened));
                opened += 1;
            }
            Some(result) = readers.join_next() => {
                if let Ok(Err(end)) = result {
                    return Err(end);
                }
            }
        }
    }
}

/// Reads one of the client's lanes: `Send` frames only.
async fn read_lane(
    shared: Arc<Shared>,
    session: Arc<Session>,
    mut recv: LaneRecv<ClientFrame>,
    index: u32,
) -> Result<(), SessionEnd> {
    let name = format!("lane {index}");
    loop {
        match recv.next().await {
            Ok(Some(ClientFrame::Send(message))) => accept_send(&shared, &session, message).await,
            Ok(Some(ClientFrame::Hello(_))) => {
                return Err(SessionEnd::new(
                    ErrorCode::HelloExpected,
                    format!("Hello sent again, on {name}"),
                ));
            }
            Ok(Some(ClientFrame::Ack(_))) => {
                return Err(SessionEnd::new(
                    ErrorCode::ProtocolViolation,
                    format!("Ack belongs on the control stream, not on {name}"),
                ));
            }
            Ok(None) => return Ok(()),
            Err(e) => return stream_failed(&name, e),
        }
    }
}

/// A stream error from the client: a violation closes the client with its code and a
/// reason; a lost connection or reset stream simply ends the reader.
fn stream_failed(stream: &str, e: StreamError) -> Result<(), SessionEnd> {
    if e.is_protocol_violation() {
        Err(SessionEnd::new(e.code(), format!("{stream}: {e}")))
    } else {
        Ok(())
    }
}

/// Checks one `Send`, stamps it, and queues it for the core; or answers `Rejected`.
async fn accept_send(shared: &Shared, session: &Session, message: SendMessage) {
    let checked = shared
        .limiter
        .check(&session.user)
        .and_then(|()| crate::limits::check_text(&message.text, shared.settings.text_bytes_max));
    if let Err(Refusal { code, detail }) = checked {
        Counters::bump(&shared.counters.rejected);
        // Waits for room: a client that does not read its answers slows its own sending.
        // An error means the client is going away; nothing to answer then.
        let _ = session
            .control
            .send(ServerFrame::Rejected(Rejected {
                key: message.key,
                code,
                detail,
            }))
            .await;
        return;
    }
    // The sender is always the verified token identity, never anything the client said.
    let submit = Submit {
        session: session.id,
        from: session.user.clone(),
        from_name: session.name.clone(),
        to: message.to,
        key: message.key,
        sent_at_ms: now_ms(),
        text: message.text,
    };
    // Back-pressure: while the in-flight map is full this lane (and, as they reach this
    // point, the client's other lanes) stops being read until the core answers.
    let Some(slot) = session.inflight.reserve().await else {
        return;
    };
    let link = shared.link_index(&submit.to);
    session.inflight.insert(link, submit, slot);
    Counters::bump(&shared.counters.messages_in);
    session.wake.notify_one();
}

/// The edge's clock, in milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
