//! The core's routing logic, sans-IO.
//!
//! [`Router`] is deterministic, in the style of quinn-proto's `Connection`: it never
//! touches sockets, threads or the clock. The driver (`net`, behind [`crate::Core`]) feeds it events with
//! `handle_*(now, …)` and drains what it wants done with `poll_*`:
//!
//! ```text
//!  edge connected / frame / gone ─┐                  ┌─► poll_output: (edge, lane|control, CoreFrame)
//!  commit finished (outcome)  ────┼─► Router ────────┤       or close an edge
//!  timeout / send_full / pump_replay ┘ (reads store) └─► poll_batch: the next WriteBatch
//! ```
//!
//! Like quinn-proto it tells the driver when to come back ([`Router::poll_timeout`])
//! instead of being ticked: an idle core sleeps until its next expiry pass.
//!
//! It reads the [`LogStore`] directly (user state, replay pages, the id reservation): redb
//! serves reads from a snapshot, without waiting for the writer. All writes leave as
//! [`WriteBatch`]es, committed one at a time by the writer thread.
//!
//! # Layout
//! - `ids`: message ids from durably reserved blocks.
//! - `sessions`: edges, sessions and per-user state; attach, detach, edge gone.
//! - `messages`: submit (push at once) and acknowledgements (accept early, drop from the
//!   batch when every device has it).
//! - `commit`: group commit, double-buffered: one batch committing, one accumulating.
//! - `replay`: paging a session through the store and the pending overlay, and sessions
//!   that fell behind (a full lane) catching up.
//! - `upkeep`: the periodic work (expiry, device ageing, forgetting idle users).
//!
//! # Invariants
//! - Ids increase in the order messages are accepted, and batches commit in order, so
//!   every pending (committing or accumulating) id is above every committed id. Replay
//!   relies on it: the store first, then the pending overlay, with one cursor.
//! - Per session, `Deliver` frames leave in increasing id order. A session that misses one
//!   (a full lane) resumes from that id, so it misses nothing and skips nothing.
//! - A message is answered `Accepted` at most once, and only when it is committed or every
//!   known device of the recipient acknowledged it.
//!
//! # Decisions (where this departs from the first design, and why)
//! - **Acks of never-written messages cost no write.** An ack becomes an `AckOp` only for
//!   ids that may be on disk (at most the user's `durable_max`); acks of accumulating
//!   messages travel inside the appended record. Otherwise skipping the append would
//!   still cost one fsync'd `AckOp` per message.
//! - **Replay asks for room, live pushes may lag.** [`Router::pump_replay`] is told how
//!   much room each edge's fullest lane has; the router is the only producer on those
//!   queues, so a page that fits is never refused. Only live pushes can find a lane full,
//!   and then the session falls back to replay ([`Router::handle_send_full`]).
//! - **A full control stream closes the edge** (`SlowConsumer`): `Accepted`, `Synced`
//!   and `Kick` cannot be re-derived from the store the way deliveries can.
//! - **Expiry counts from the core's clock** (`now + ttl`), not the edge's `sent_at_ms`:
//!   a skewed edge clock must not shorten how long a message is kept.
//! - **The writer hands the batch back** with its outcome ([`Router::handle_commit`]), so
//!   the router keeps no copy of the committing batch and can merge a failed one back.
//! - **Pending work is bounded** by count and bytes (`pending_max`,
//!   `pending_bytes_max`); beyond them submits get `Unavailable`.
//! - **The router ages devices like the store** (and refreshes long-attached ones), so
//!   "every known device" means the same on both sides.
//! - **Known duplicate:** a replay may resend a message whose ack is still in an
//!   uncommitted batch. DESIGN allows rare duplicates on the wire; the client drops them.

mod commit;
mod ids;
mod messages;
mod replay;
mod sessions;
mod upkeep;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::codec::Encoded;
use protocol::{CoreFrame, EdgeFrame, ErrorCode, MessageId, SessionId, ShardId, ShardMap};

use crate::stats::{CoreStats, Counters};
use crate::store::{CommitOutcome, LogStore, StoreError, WriteBatch};
pub use commit::ACK_RANGES_WAITING_MAX;
use commit::Pipeline;

/// The default [`RouterConfig::commit_delay`], in milliseconds.
pub const COMMIT_DELAY_MS_DEFAULT: u64 = 10;
/// The default [`RouterConfig::ack_commit_delay`], in milliseconds.
pub const ACK_COMMIT_DELAY_MS_DEFAULT: u64 = 50;
use ids::IdAllocator;
use messages::PendingMessage;
use sessions::{Edge, Session, SessionKey, UserEntry};

/// The time, as the driver read it: a monotonic instant for timers and the wall clock for
/// timestamps that are stored or sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for intervals and retries.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch, for expiry and last-seen times.
    pub unix_ms: u64,
}

impl Now {
    /// This moment plus `d` (both clocks advance together): handy for virtual clocks.
    pub fn after(self, d: Duration) -> Self {
        Self {
            instant: self.instant + d,
            unix_ms: self.unix_ms.saturating_add(d.as_millis() as u64),
        }
    }
}

/// An edge connection, numbered by the driver (never reused within a process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(pub u64);

/// Where on an edge connection a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The control stream: `Accepted`, `Rejected`, `Synced`, `Kick`.
    Control,
    /// A message lane (index below the edge's lane count): `Deliver`.
    Lane(u8),
}

/// Something the router wants the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Queue `frame` on `channel` of `edge` without waiting. If there is no room, hand the
    /// output back with [`Router::handle_send_full`].
    Send {
        /// The edge.
        edge: EdgeId,
        /// Control stream or lane.
        channel: Channel,
        /// The frame.
        frame: CoreFrame,
    },
    /// Queue a delivery replayed from the store on lane `lane` of `edge`, without waiting:
    /// `CoreFrame::Deliver` of message `id` to `session`, encoded already from the stored
    /// bytes (which were never decoded; see [`protocol::EncodedMessage`]). If there is no
    /// room, hand the output back with [`Router::handle_send_full`], as for `Send`.
    SendEncoded {
        /// The edge.
        edge: EdgeId,
        /// The lane.
        lane: u8,
        /// The recipient session.
        session: SessionId,
        /// The message delivered.
        id: MessageId,
        /// The frame.
        frame: Encoded<CoreFrame>,
    },
    /// Close the edge's connection. The router has already forgotten the edge.
    Close {
        /// The edge.
        edge: EdgeId,
        /// The application close code.
        code: ErrorCode,
        /// Why, for the peer's logs.
        reason: &'static str,
    },
}

/// Router settings (the routing part of [`crate::CoreConfig`]).
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// This shard.
    pub shard: ShardId,
    /// Every shard; a submit for a user of another shard is refused with `Unavailable`.
    pub shard_map: ShardMap,
    /// How long an undelivered message is kept, and how long an unseen device is known.
    pub ttl_ms: u64,
    /// Most undelivered messages per recipient (stored plus pending).
    pub inbox_max: u64,
    /// Lanes the core opens towards each edge.
    pub lanes: u8,
    /// Ids reserved on disk per reservation.
    pub id_block: u64,
    /// Messages per replay page.
    pub replay_page: usize,
    /// Lane slots kept free for live traffic: a replay page is only sent if every lane of
    /// the edge has room for the page plus this.
    pub replay_headroom: usize,
    /// Most replay pages sent per [`Router::pump_replay`] call, so one call stays short.
    /// The driver hands each call's frames to the link writers before the next, so a
    /// small budget also lets the first page leave while later ones are read.
    pub replay_pages_per_pump: usize,
    /// Most replayed messages a session may have unacknowledged. Replay waits for acks
    /// beyond it: a device catching up on a large backlog receives it as fast as it
    /// acknowledges, instead of in bursts its edge would have to drop it for (an edge
    /// closes a client whose queue overflows). Keep it below the edge's per-client queue.
    /// The next page is read once a whole page fits in the window again (a window
    /// smaller than a page sends pages of the window's size).
    pub replay_window: usize,
    /// How often the accumulating batch carries an expiry pass.
    pub expire_interval: Duration,
    /// Most messages pending (accumulating or committing) at once; beyond it, submits are
    /// refused with `Unavailable` (the disk cannot keep up, or is failing).
    pub pending_max: usize,
    /// Most text bytes pending at once, with the same policy: memory stays bounded
    /// whatever the message sizes.
    pub pending_bytes_max: usize,
    /// A user with no sessions, nothing pending and no activity for this long is forgotten
    /// (reloaded from the store on next use).
    pub user_idle: Duration,
    /// Wait after a failed commit before retrying; doubles per failure, capped at 32x.
    /// A failed replay read is retried after it too (without doubling: the next input
    /// retries it anyway).
    pub commit_retry: Duration,
    /// How long the accumulating batch waits for acknowledgements before it is handed to
    /// the writer (see the `commit` module): messages every device acknowledges in that
    /// time never touch the disk. Zero commits as soon as the writer is free.
    pub commit_delay: Duration,
    /// How long a batch without messages (acknowledgements, device times, expiry) waits
    /// before it is handed to the writer (see the `commit` module): a lost
    /// acknowledgement costs a redelivery, not a message, and larger batches cost the
    /// writer less per acknowledgement. Never shorter than `commit_delay`.
    pub ack_commit_delay: Duration,
    /// A batch with this many messages, or this many acknowledged ranges, is handed over
    /// without waiting out its delay.
    pub commit_batch_max: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            shard: ShardId(0),
            shard_map: ShardMap::single(),
            ttl_ms: 7 * 24 * 3600 * 1000,
            inbox_max: 10_000,
            lanes: protocol::limits::LANES_DEFAULT,
            id_block: 65_536,
            replay_page: 256,
            replay_headroom: 256,
            // One page (about 0.2 ms of reading and encoding): the router goes back to
            // its inputs between pages, so a device catching up on thousands of messages
            // holds no one else's live traffic for long, and its own first messages leave
            // before the rest are read. 16 pages made a step of about 3 ms; the first
            // message came up to 4.5 ms after `Welcome` (median 1.55 ms, against 0.9 ms
            // with one page; docs/ARCHITECTURE.md).
            replay_pages_per_pump: 1,
            replay_window: 4096,
            expire_interval: Duration::from_secs(30),
            pending_max: 200_000,
            pending_bytes_max: 256 * 1024 * 1024,
            user_idle: Duration::from_secs(60),
            commit_retry: Duration::from_millis(100),
            commit_delay: Duration::from_millis(COMMIT_DELAY_MS_DEFAULT),
            ack_commit_delay: Duration::from_millis(ACK_COMMIT_DELAY_MS_DEFAULT),
            commit_batch_max: 4096,
        }
    }
}

/// The sans-IO core: sessions, message routing, the pending overlay, replay and group
/// commit. See the module doc for how it is driven.
pub struct Router {
    /// Settings.
    config: RouterConfig,
    /// Read-only use: user state, replay pages, reservation at start.
    store: Arc<dyn LogStore>,
    /// Message ids.
    ids: IdAllocator,
    /// Connected edges.
    edges: HashMap<EdgeId, Edge>,
    /// Attached sessions.
    sessions: HashMap<SessionKey, Session>,
    /// Which session holds each online device, to replace an older one.
    devices_online: HashMap<(protocol::UserId, protocol::DeviceId), SessionKey>,
    /// Users of this shard currently in memory.
    users: HashMap<protocol::UserId, UserEntry>,
    /// Messages not yet committed (or committing), by id: the pending overlay.
    pending: BTreeMap<protocol::MessageId, PendingMessage>,
    /// Text bytes of the pending messages.
    pending_bytes: usize,
    /// The accumulating and committing batches.
    pipeline: Pipeline,
    /// Sessions catching up (replaying), served round-robin by [`Router::pump_replay`].
    replay_queue: VecDeque<SessionKey>,
    /// What the driver should do next. Bounded by the work of one input (a submit pushes
    /// one frame per edge of the recipient; a replay pump at most its page budget).
    outbox: VecDeque<Output>,
    /// Counters.
    counters: Arc<Counters>,
    /// When the next expiry pass is due (`None`: at the first [`Router::handle_timeout`]).
    next_expiry: Option<Instant>,
    /// When to read again for sessions whose replay read failed (`None`: none did).
    replay_retry_at: Option<Instant>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("edges", &self.edges.len())
            .field("sessions", &self.sessions.len())
            .field("users", &self.users.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router over `store`. Ids resume above the store's reservation; the first batch
    /// [`Router::poll_batch`] returns reserves the first block, and no id is handed out
    /// before it is committed.
    pub fn new(config: RouterConfig, store: Arc<dyn LogStore>) -> Result<Self, StoreError> {
        let reserved = store.reserved_ids_through()?;
        let mut ids = IdAllocator::new(reserved, config.id_block);
        let mut pipeline = Pipeline::default();
        pipeline.request_reservation(ids.reservation_wanted());
        Ok(Self {
            config,
            store,
            ids,
            edges: HashMap::new(),
            sessions: HashMap::new(),
            devices_online: HashMap::new(),
            users: HashMap::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            pipeline,
            replay_queue: VecDeque::new(),
            outbox: VecDeque::new(),
            counters: Arc::new(Counters::default()),
            next_expiry: None,
            replay_retry_at: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The live counters (shared; read them from any thread).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CoreStats {
        self.counters.snapshot()
    }

    /// Whether message ids are available (the first reservation is committed).
    pub fn ids_ready(&self) -> bool {
        self.ids.has_durable_id()
    }

    /// Messages pending: pushed but neither committed nor dropped yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether a batch is being committed.
    pub fn is_committing(&self) -> bool {
        self.pipeline.is_committing()
    }

    /// Whether nothing waits to be written: no batch committing and none accumulating.
    /// A clean shutdown drains until this holds.
    pub fn is_flushed(&self) -> bool {
        !self.pipeline.is_committing() && self.pipeline.accumulating_is_empty()
    }

    /// A new edge connection with `lanes` lanes from the core to it.
    pub fn handle_edge_connected(&mut self, _now: Now, edge: EdgeId, lanes: u8) {
        self.edges.insert(edge, Edge::new(lanes));
    }

    /// A frame from an edge (the driver has checked it arrived on the right stream).
    pub fn handle_edge_frame(&mut self, now: Now, edge: EdgeId, frame: EdgeFrame) {
        if !self.edges.contains_key(&edge) {
            // Frames still queued from an edge that was closed; its sessions are gone.
            return;
        }
        match frame {
            EdgeFrame::EdgeHello(_) => {
                self.close_edge(edge, ErrorCode::HelloExpected, "EdgeHello after handshake");
            }
            EdgeFrame::Attach(attach) => self.on_attach(now, edge, attach),
            EdgeFrame::Detach { session } => {
                self.remove_session(SessionKey { edge, session });
            }
            EdgeFrame::Submit(submit) => self.on_submit(now, edge, submit),
            EdgeFrame::Ack { session, ranges } => self.on_ack(now, edge, session, &ranges),
        }
    }

    /// The edge's connection ended; its sessions are detached.
    pub fn handle_edge_gone(&mut self, _now: Now, edge: EdgeId) {
        self.forget_edge(edge);
    }

    /// The writer finished committing `batch` (the one [`Router::poll_batch`] returned).
    pub fn handle_commit(
        &mut self,
        now: Now,
        batch: WriteBatch,
        result: Result<CommitOutcome, StoreError>,
    ) {
        self.on_commit(now, batch, result);
    }

    /// Time-driven work: call once at start, and whenever [`Router::poll_timeout`]'s
    /// instant has passed (calling it early or late is harmless). Runs the expiry pass,
    /// device ageing and forgetting idle users when they are due; a batch whose delay ran
    /// out and a failed replay read's retry are then served by [`Router::poll_batch`] and
    /// [`Router::pump_replay`], which the driver calls after every input.
    pub fn handle_timeout(&mut self, now: Now) {
        self.upkeep(now);
    }

    /// When the driver must call [`Router::handle_timeout`] (and then poll) next, if
    /// nothing else happens first: the accumulating batch's delay or a failed commit's
    /// back-off ([`Router::batch_deadline`]), a failed replay read's retry, or the next
    /// expiry pass. An idle router sleeps until its expiry pass (`expire_interval`).
    /// `None` before the first `handle_timeout`: call it at start.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.batch_due_at(), self.replay_retry_at, self.next_expiry]
            .into_iter()
            .flatten()
            .min()
    }

    /// The driver could not queue `output` (the lane or control stream was full). A
    /// delivery sends its sessions back to catching up from the store; a full control
    /// stream means the edge is not reading, and it is closed (`SlowConsumer`).
    pub fn handle_send_full(&mut self, _now: Now, output: Output) {
        match output {
            Output::Send {
                edge,
                channel: Channel::Lane(_),
                frame: CoreFrame::Deliver { sessions, message },
            } => {
                Counters::add(&self.counters.lagged, 1);
                for session in sessions {
                    self.lag(SessionKey { edge, session }, message.id);
                }
            }
            Output::SendEncoded {
                edge, session, id, ..
            } => {
                Counters::add(&self.counters.lagged, 1);
                self.lag(SessionKey { edge, session }, id);
            }
            Output::Send { edge, .. } => {
                self.close_edge(edge, ErrorCode::SlowConsumer, "control stream full");
            }
            Output::Close { .. } => {}
        }
    }

    /// Sends replay pages to sessions that are catching up, while their edge has room.
    /// `room(edge)` is the free space of the edge's fullest lane, in frames; the router
    /// is the only producer on those queues, so that much room is guaranteed. Call after
    /// draining the outputs of each input and after every [`Router::handle_timeout`].
    pub fn pump_replay(&mut self, now: Now, room: &mut dyn FnMut(EdgeId) -> usize) {
        self.pump(now, room);
    }

    /// Whether sessions wait to replay (for lane room, or because a pump's page budget
    /// ran out): the driver pumps again as soon as an edge's lanes drain.
    pub fn replay_waiting(&self) -> bool {
        !self.replay_queue.is_empty()
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.pop_front()
    }

    /// The next batch for the writer, if none is committing and one has accumulated (and
    /// no failed commit is waiting to be retried).
    pub fn poll_batch(&mut self, now: Now) -> Option<WriteBatch> {
        self.next_batch(now, false)
    }

    /// Like [`Router::poll_batch`], without waiting out the commit delay: for a clean
    /// shutdown, which must not leave anything uncommitted.
    pub fn poll_batch_flush(&mut self, now: Now) -> Option<WriteBatch> {
        self.next_batch(now, true)
    }

    /// When the router next wants [`Router::poll_batch`] called even if nothing else
    /// happens: the accumulating batch's commit delay (or retry back-off) runs out.
    pub fn batch_deadline(&self) -> Option<Instant> {
        self.batch_due_at()
    }

    /// Queues a frame for an edge, if the edge is still connected.
    fn send(&mut self, edge: EdgeId, channel: Channel, frame: CoreFrame) {
        if self.edges.contains_key(&edge) {
            self.outbox.push_back(Output::Send {
                edge,
                channel,
                frame,
            });
        }
    }

    /// Forgets an edge and asks the driver to close it.
    fn close_edge(&mut self, edge: EdgeId, code: ErrorCode, reason: &'static str) {
        if self.edges.contains_key(&edge) {
            tracing::warn!(edge = edge.0, %code, reason, "closing edge");
            self.forget_edge(edge);
            self.outbox.push_back(Output::Close { edge, code, reason });
        }
    }
}
