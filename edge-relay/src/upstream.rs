//! The link to one core shard: connect, handshake, re-attach, reconnect.
//!
//! A [`CoreLink`] is the handle the rest of the edge uses; its task ([`run`]) owns the
//! QUIC connection. The task is the only writer of the link's control stream and the
//! owner of the set of sessions attached to the shard, so attach, detach and ack travel
//! in one ordered queue of [`LinkCommand`]s and a reconnect re-attaches exactly the
//! sessions alive at that moment.
//!
//! Submits do not go through the task: each session's pump (see [`crate::pump`]) writes
//! them to the current [`Upstream`]'s lanes directly, so one slow session never delays
//! another. Each connection has a new *generation*; a pump that sees a new generation
//! re-sends everything still awaiting an answer, in order.
//!
//! ```text
//!   client tasks ──LinkCommand──► link task ──control stream──► core
//!   session pumps ──Submit──────► Upstream lanes ─────────────► core
//!   core ──lanes/control──► readers ──► fanout ──► sessions
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::ErrorCode;
use protocol::forward::read_core_frame;
use protocol::frames::link::{Attach, CoreFrame, CoreWelcome, EdgeFrame, EdgeHello};
use protocol::frames::{PROTOCOL_VERSION, STREAM_KIND_LANE};
use protocol::ids::{IdRange, SessionId, ShardId};
use protocol::limits::LANES_MAX;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use transport::framed::WriterStats;
use transport::{FrameSender, FramedRecv, LaneSenders, WriterGroup, write_frame};

use crate::config::CoreConfig;
use crate::error::SessionEnd;
use crate::fanout;
use crate::limits::{
    CONTROL_PRIORITY, CORE_CONTROL_QUEUE_FRAMES, CORE_HANDSHAKE_TIMEOUT, CORE_LANE_QUEUE_FRAMES,
    LANE_PRIORITY, LINK_COMMAND_QUEUE, RECONNECT_DELAY_MAX, RECONNECT_DELAY_MIN,
};
use crate::session::lock;
use crate::shared::Shared;
use crate::stats::Counters;

/// What client tasks ask a core link to tell the core.
#[derive(Debug)]
pub(crate) enum LinkCommand {
    /// A session started.
    Attach(Attach),
    /// A session ended.
    Detach(SessionId),
    /// A session acknowledged deliveries.
    Ack {
        session: SessionId,
        ranges: Vec<IdRange>,
    },
}

/// One live connection to the core, as the session pumps see it.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// Increases with every (re)connection; a pump re-sends its in-flight messages when
    /// it changes.
    pub(crate) generation: u64,
    /// The lanes submits travel on.
    pub(crate) lanes: LaneSenders<EdgeFrame>,
    conn: quinn::Connection,
    control_stats: Arc<WriterStats>,
}

impl Upstream {
    fn frames_written(&self) -> u64 {
        let lanes: u64 = self
            .lanes
            .used()
            .map(|l| l.stats().frames.load(RELAXED))
            .sum();
        lanes + self.control_stats.frames.load(RELAXED)
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// Traffic totals of connections that have ended.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    frames: u64,
    datagrams: u64,
    bytes: u64,
}

/// The edge's handle on one core shard.
#[derive(Debug)]
pub(crate) struct CoreLink {
    /// The shard this link reaches.
    pub(crate) shard: ShardId,
    commands: mpsc::Sender<LinkCommand>,
    current: Mutex<Option<Arc<Upstream>>>,
    totals: Mutex<Totals>,
}

/// Traffic and state of one link, for [`crate::EdgeStats`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinkStats {
    pub(crate) up: bool,
    pub(crate) frames: u64,
    pub(crate) datagrams: u64,
    pub(crate) bytes: u64,
}

impl CoreLink {
    /// A link to `shard` and the receiving end of its command queue (for [`run`]).
    pub(crate) fn new(shard: ShardId) -> (Arc<Self>, mpsc::Receiver<LinkCommand>) {
        let (commands, rx) = mpsc::channel(LINK_COMMAND_QUEUE);
        let link = Self {
            shard,
            commands,
            current: Mutex::new(None),
            totals: Mutex::default(),
        };
        (Arc::new(link), rx)
    }

    /// The current connection, if the link is up.
    pub(crate) fn upstream(&self) -> Option<Arc<Upstream>> {
        lock(&self.current).clone()
    }

    /// Queues a command, waiting while the queue is full. Ignored once the link task has
    /// stopped (the edge is shutting down).
    ///
    /// This is the channel's own future: wrapped in an `async` block it would hold the
    /// command twice, and sessions await it in futures paid per idle client. Its error
    /// (the link task stopped) needs no handling.
    pub(crate) fn command(
        &self,
        command: LinkCommand,
    ) -> impl Future<Output = Result<(), mpsc::error::SendError<LinkCommand>>> + '_ {
        self.commands.send(command)
    }

    /// Queues a command if the queue has room now.
    pub(crate) fn try_command(
        &self,
        command: LinkCommand,
    ) -> Result<(), mpsc::error::TrySendError<LinkCommand>> {
        self.commands.try_send(command)
    }

    pub(crate) fn stats(&self) -> LinkStats {
        let totals = *lock(&self.totals);
        let mut stats = LinkStats {
            up: false,
            frames: totals.frames,
            datagrams: totals.datagrams,
            bytes: totals.bytes,
        };
        if let Some(up) = self.upstream() {
            let quic = up.conn.stats();
            stats.up = true;
            stats.frames += up.frames_written();
            stats.datagrams += quic.udp_tx.datagrams;
            stats.bytes += quic.udp_tx.bytes;
        }
        stats
    }

    fn set_up(&self, upstream: Upstream) {
        *lock(&self.current) = Some(Arc::new(upstream));
    }

    /// Marks the link down and folds the ended connection's traffic into the totals.
    fn set_down(&self) {
        let Some(up) = lock(&self.current).take() else {
            return;
        };
        let quic = up.conn.stats();
        let mut totals = lock(&self.totals);
        totals.frames += up.frames_written();
        totals.datagrams += quic.udp_tx.datagrams;
        totals.bytes += quic.udp_tx.bytes;
    }
}

/// What a link task needs to dial its core.
#[derive(Clone)]
pub(crate) struct LinkParams {
    pub(crate) core: CoreConfig,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) edge_name: String,
    pub(crate) lanes: u8,
}

/// Why a connection attempt failed (logged; the link retries).
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("resolving the core's address: {0}")]
    Resolve(std::io::Error),
    #[error("the core's address resolved to nothing")]
    NoAddress,
    #[error("binding a UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("control stream: {0}")]
    Stream(#[from] transport::StreamError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("no CoreWelcome within {0:?}")]
    Timeout(Duration),
}

/// A connection that completed the `EdgeHello`/`CoreWelcome` handshake.
struct Connected {
    /// Kept alive as long as the connection: it owns the socket.
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    control_send: quinn::SendStream,
    control_recv: FramedRecv,
    welcome: CoreWelcome,
}

/// How a served connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Lost,
    Shutdown,
}

/// Exponential backoff with jitter between reconnect attempts, so edges that lost the
/// same core do not all come back in the same instant.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = RECONNECT_DELAY_MIN
            .saturating_mul(1 << self.attempt.min(16))
            .min(RECONNECT_DELAY_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        // "Equal jitter": at least half the ceiling, so retries still back off.
        Duration::from_millis(rand::rng().random_range(ceiling_ms / 2..=ceiling_ms))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The link task: connects, serves the connection until it drops, and reconnects with
/// backoff, forever (until shutdown). Commands keep being applied while the link is
/// down, so clients never wait for the core.
pub(crate) async fn run(
    link: Arc<CoreLink>,
    shared: Arc<Shared>,
    params: LinkParams,
    mut commands: mpsc::Receiver<LinkCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The sessions attached to this shard: re-attached on every reconnect. Bounded by the
    // edge's connection limit.
    let mut attached: HashMap<SessionId, Attach> = HashMap::new();
    let mut backoff = Backoff::default();
    let mut generation = 0u64;
    loop {
        let attempt = connect(&params);
        let Some(result) = offline(attempt, &mut commands, &mut attached, &mut shutdown).await
        else {
            return;
        };
        match result {
            Ok(connected) => {
                backoff.reset();
                generation += 1;
                let ended = serve(
                    &link,
                    &shared,
                    &params,
                    connected,
                    generation,
                    &mut attached,
                    &mut commands,
                    &mut shutdown,
                )
                .await;
                link.set_down();
                if ended == Ended::Shutdown {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(shard = link.shard.0, core = %params.core.address, error = %e,
                    "cannot reach the core; retrying");
            }
        }
        let pause = tokio::time::sleep(backoff.next_delay());
        if offline(pause, &mut commands, &mut attached, &mut shutdown)
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Runs `work` while the link is down, applying commands as they come so clients never
/// wait for the core. `None` if the edge is shutting down.
async fn offline<F: Future>(
    work: F,
    commands: &mut mpsc::Receiver<LinkCommand>,
    attached: &mut HashMap<SessionId, Attach>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            command = commands.recv() => {
                // While the link is down, the command only updates the attached set. An
                // Ack is dropped: the core replays unacknowledged messages on re-attach
                // and the client library de-duplicates, so a lost ack costs a duplicate
                // on the wire, never a lost message.
                let _ = apply(attached, command?);
            }
            _ = shutdown.changed() => return None,
        }
    }
}

/// Updates the attached set for `command` and returns the frame to send, if any.
fn apply(attached: &mut HashMap<SessionId, Attach>, command: LinkCommand) -> Option<EdgeFrame> {
    match command {
        LinkCommand::Attach(attach) => {
            attached.insert(attach.session, attach.clone());
            Some(EdgeFrame::Attach(attach))
        }
        LinkCommand::Detach(session) => attached
            .remove(&session)
            .map(|_| EdgeFrame::Detach { session }),
        LinkCommand::Ack { session, ranges } => attached
            .contains_key(&session)
            .then_some(EdgeFrame::Ack { session, ranges }),
    }
}

/// Dials the core and completes the handshake.
async fn connect(params: &LinkParams) -> Result<Connected, LinkError> {
    let addr = tokio::net::lookup_host(&params.core.address)
        .await
        .map_err(LinkError::Resolve)?
        .next()
        .ok_or(LinkError::NoAddress)?;
    let bind: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = transport::endpoint::server_endpoint(None, bind).map_err(LinkError::Bind)?;
    endpoint.set_default_client_config(params.client_config.clone());
    let handshake = async {
        let conn = endpoint.connect(addr, params.core.server_name())?.await?;
        let (mut send, recv) = conn.open_bi().await?;
        // Fails only if the stream is already gone; the write below then reports it.
        let _ = send.set_priority(CONTROL_PRIORITY);
        let hello = EdgeHello {
            version: PROTOCOL_VERSION,
            edge: params.edge_name.clone(),
            capabilities: 0,
        };
        write_frame(&mut send, &EdgeFrame::EdgeHello(hello)).await?;
        let mut recv = FramedRecv::new(recv);
        let welcome = match recv.next::<CoreFrame>().await? {
            Some(CoreFrame::CoreWelcome(w)) if w.version == PROTOCOL_VERSION => w,
            Some(CoreFrame::CoreWelcome(w)) => {
                let reason = format!("core speaks version {}, edge {PROTOCOL_VERSION}", w.version);
                transport::close(&conn, ErrorCode::UnsupportedVersion, &reason);
                return Err(LinkError::Handshake(reason));
            }
            Some(_) => {
                let reason = "the core's first frame was not CoreWelcome";
                transport::close(&conn, ErrorCode::ProtocolViolation, reason);
                return Err(LinkError::Handshake(reason.into()));
            }
            None => return Err(LinkError::Handshake("core ended the control stream".into())),
        };
        Ok((conn, send, recv, welcome))
    };
    let (conn, control_send, control_recv, welcome) =
        tokio::time::timeout(CORE_HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| LinkError::Timeout(CORE_HANDSHAKE_TIMEOUT))??;
    Ok(Connected {
        _endpoint: endpoint,
        conn,
        control_send,
        control_recv,
        welcome,
    })
}

/// Serves one connection until it drops or the edge shuts down.
#[allow(clippy::too_many_arguments)] // The link task's state, lent for one connection.
async fn serve(
    link: &CoreLink,
    shared: &Arc<Shared>,
    params: &LinkParams,
    connected: Connected,
    generation: u64,
    attached: &mut HashMap<SessionId, Attach>,
    commands: &mut mpsc::Receiver<LinkCommand>,
    shutdown: &mut watch::Receiver<bool>,
) -> Ended {
    let Connected {
        _endpoint,
        conn,
        control_send,
        control_recv,
        welcome,
    } = connected;
    tracing::info!(
        shard = link.shard.0,
        core_shard = welcome.shard.0,
        generation,
        sessions = attached.len(),
        "core link up"
    );
    // One writer task for the control stream and every lane: frames for the core queued
    // together (submits on lanes, acks on control) share datagrams.
    let mut group =
        WriterGroup::new(None).with_linger(std::time::Duration::from_micros(params.core.linger_us));
    let control: FrameSender<EdgeFrame> = group.add(control_send, None, CORE_CONTROL_QUEUE_FRAMES);
    let lanes = match LaneSenders::open_in(
        &mut group,
        &conn,
        params.lanes,
        CORE_LANE_QUEUE_FRAMES,
        LANE_PRIORITY,
    )
    .await
    {
        Ok(lanes) => lanes,
        Err(e) => {
            tracing::warn!(error = %e, "core link lost while opening lanes");
            return Ended::Lost;
        }
    };
    group.spawn();
    // Re-attach every live session first: the core then replays what it stores for them.
    for attach in attached.values() {
        if control
            .send(EdgeFrame::Attach(attach.clone()))
            .await
            .is_err()
        {
            return Ended::Lost;
        }
    }
    let control_stats = control.stats().clone();
    link.set_up(Upstream {
        generation,
        lanes,
        conn: conn.clone(),
        control_stats,
    });
    Counters::bump(&shared.counters.core_connects);
    // Every pump re-sends what awaits an answer, on the new lanes.
    shared.registry.wake_all();

    let mut readers = JoinSet::new();
    readers.spawn(read_control(shared.clone(), control_recv));
    readers.spawn(accept_lanes(shared.clone(), conn.clone()));
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return Ended::Shutdown };
                if let Some(frame) = apply(attached, command)
                    && control.send(frame).await.is_err()
                {
                    return Ended::Lost;
                }
            }
            err = conn.closed() => {
                tracing::warn!(shard = link.shard.0, error = %err, "core link lost; reconnecting");
                return Ended::Lost;
            }
            Some(result) = readers.join_next() => {
                let end = match result {
                    Ok(Err(end)) => end,
                    Ok(Ok(())) => SessionEnd::new(ErrorCode::NoError, "core ended its control stream"),
                    Err(e) => SessionEnd::new(ErrorCode::Internal, format!("core reader failed: {e}")),
                };
                tracing::warn!(shard = link.shard.0, code = %end.code, reason = %end.reason,
                    "closing the core link; reconnecting");
                end.close(&conn);
                return Ended::Lost;
            }
            _ = shutdown.changed() => {
                transport::close(&conn, ErrorCode::ServerShutdown, "edge shutting down");
                return Ended::Shutdown;
            }
        }
    }
}

/// Reads the core's control stream: answers, `Synced`, `Kick` (and anything else the
/// core sends there).
async fn read_control(shared: Arc<Shared>, recv: FramedRecv) -> Result<(), SessionEnd> {
    read_core_stream(&shared, recv, "control stream").await
}

/// Accepts the core's lanes and reads them; returns when the connection ends or a lane
/// misbehaves.
async fn accept_lanes(shared: Arc<Shared>, conn: quinn::Connection) -> Result<(), SessionEnd> {
    let mut lanes = JoinSet::new();
    let mut opened = 0u32;
    loop {
        tokio::select! {
            recv = conn.accept_uni() => {
                let Ok(recv) = recv else { return Ok(()) };
                opened += 1;
                if opened > u32::from(LANES_MAX) {
                    return Err(SessionEnd::new(ErrorCode::ProtocolViolation,
                        format!("core opened more than {LANES_MAX} lanes")));
                }
                lanes.spawn(read_lane(shared.clone(), recv));
            }
            Some(result) = lanes.join_next() => {
                if let Ok(Err(end)) = result {
                    return Err(end);
                }
            }
        }
    }
}

async fn read_lane(shared: Arc<Shared>, recv: quinn::RecvStream) -> Result<(), SessionEnd> {
    let mut recv = FramedRecv::new(recv);
    if let Err(e) = recv.expect_kind(STREAM_KIND_LANE).await {
        return Err(core_stream_error("lane", &e));
    }
    read_core_stream(&shared, recv, "lane").await
}

/// Acts on every frame of one of the core's streams until it ends. Deliveries are not
/// decoded, only checked and re-framed for the clients ([`read_core_frame`]).
async fn read_core_stream(
    shared: &Shared,
    mut recv: FramedRecv,
    stream: &str,
) -> Result<(), SessionEnd> {
    loop {
        let body = match recv.next_body().await {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(e) => return Err(core_stream_error(stream, &e)),
        };
        let frame = read_core_frame(&body)
            .map_err(|e| core_stream_error(stream, &transport::StreamError::from(e)))?;
        fanout::dispatch(shared, frame)?;
    }
}

fn core_stream_error(stream: &str, e: &transport::StreamError) -> SessionEnd {
    SessionEnd::new(e.code(), format!("core {stream}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ids::{DeviceId, UserId};

    #[test]
    fn backoff_grows_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        let first = backoff.next_delay();
        assert!(first <= RECONNECT_DELAY_MIN && first >= RECONNECT_DELAY_MIN / 2);
        let later: Vec<Duration> = (0..20).map(|_| backoff.next_delay()).collect();
        assert!(later.iter().all(|d| *d <= RECONNECT_DELAY_MAX));
        assert!(
            later[19] >= RECONNECT_DELAY_MAX / 2,
            "it reaches the ceiling"
        );
        backoff.reset();
        assert!(backoff.next_delay() <= RECONNECT_DELAY_MIN);
    }

    #[test]
    fn the_attached_set_follows_commands_and_gates_acks() {
        // Re-attach after a reconnect must name exactly the live sessions, and an ack for
        // a session the core does not know would be refused by it.
        let mut attached = HashMap::new();
        let attach = Attach {
            session: SessionId(1),
            user: UserId::new("alice").unwrap(),
            device: DeviceId(9),
        };
        assert!(apply(&mut attached, LinkCommand::Attach(attach)).is_some());
        let ack = || LinkCommand::Ack {
            session: SessionId(1),
            ranges: vec![],
        };
        assert!(matches!(
            apply(&mut attached, ack()),
            Some(EdgeFrame::Ack { .. })
        ));
        assert!(apply(&mut attached, LinkCommand::Detach(SessionId(1))).is_some());
        assert!(attached.is_empty());
        assert!(apply(&mut attached, ack()).is_none());
        assert!(
            apply(&mut attached, LinkCommand::Detach(SessionId(1))).is_none(),
            "once"
        );
    }
}
