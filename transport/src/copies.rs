//! Lane copies on quinn (the format and the merge are in [`protocol::copies`]).
//!
//! - Sending: a [`WriterGroup`](crate::WriterGroup) given a [`Copier`] (see
//!   [`WriterGroup::with_copies`](crate::WriterGroup::with_copies)) sends each small batch
//!   of lane frames a second time in a QUIC datagram, [`COPY_DELAY`] after the stream
//!   write, while the [`CopyPolicy`] says so. The delay keeps the copy out of the packet
//!   that carries the stream write (quinn would otherwise pack both into one packet, and
//!   one loss would take both).
//! - Receiving: a [`CopyRouter`] reads the connection's datagrams and hands each copy to
//!   the reader of its lane; [`LaneRecv`] merges a lane's stream with its copies.
//!
//! Copies cost bandwidth and CPU (each small lane write is sent twice), so the default
//! policy, [`CopyPolicy::Auto`], sends them only while the connection is losing packets.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use protocol::copies::{self, CopyHeader, LaneMerge};
use protocol::frames::Validate;
use protocol::frames::{CAP_LANE_COPIES, Capabilities};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::deadline::Deadline;
use crate::framed::{FramedRecv, StreamError};

/// How long after the stream write its copy is sent: long enough that quinn has sent the
/// stream's packet (so the two never share a packet), short enough to stay far below a
/// loss recovery (a round trip and a half). The wait is a [`Deadline`] on the runtime's
/// 1 ms timer, so a copy leaves 2–3 ms after its write.
pub const COPY_DELAY: Duration = Duration::from_millis(2);
/// Largest batch of frames copied, in bytes: a copy must fit one datagram on any path
/// (quinn guarantees a little over a kilobyte). Bigger writes are a busy lane, where
/// copies would double the traffic and loss recovery is not what limits latency.
pub const COPY_FRAME_BYTES_MAX: usize = 1000;
/// Copies waiting for their send time, per connection; beyond it the oldest are dropped.
const COPIES_PENDING_MAX: usize = 256;
/// Copies waiting for their lane's reader, per lane; beyond it new copies are dropped.
const LANE_COPY_QUEUE: usize = 64;
/// Copies for lanes whose stream has not been seen yet (its first packet was lost), per
/// connection; beyond it the oldest are dropped.
const ORPHANS_MAX: usize = 64;
/// How often [`CopyPolicy::Auto`] reads the connection's loss counters.
const LOSS_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How far back [`CopyPolicy::Auto`] looks at the connection's losses.
const LOSS_WINDOW: Duration = Duration::from_secs(10);
/// The share of packets lost over [`LOSS_WINDOW`], in thousandths, from which
/// [`CopyPolicy::Auto`] sends copies.
const LOSS_PERMILLE_MIN: u64 = 5;

/// When a connection sends lane copies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyPolicy {
    /// Never.
    Off,
    /// While the connection is losing packets: at least 0.5 % of the packets sent in the
    /// last 10 s were declared lost.
    #[default]
    Auto,
    /// For every small lane write.
    Always,
}

impl CopyPolicy {
    /// What to announce in a hello: a peer reads copies unless its policy is `Off`.
    pub fn capabilities(self) -> Capabilities {
        if self == CopyPolicy::Off {
            0
        } else {
            CAP_LANE_COPIES
        }
    }

    /// Whether copies travel on a connection whose peer announced `peer`: both sides must
    /// have announced them.
    pub fn agreed(self, peer: Capabilities) -> bool {
        self.capabilities() & peer & CAP_LANE_COPIES != 0
    }
}

impl fmt::Display for CopyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyPolicy::Off => "off",
            CopyPolicy::Auto => "auto",
            CopyPolicy::Always => "always",
        })
    }
}

/// A copy policy that is not `off`, `auto` or `always`.
#[derive(Debug, thiserror::Error)]
#[error("lane copy policy must be off, auto or always, not {0:?}")]
pub struct BadCopyPolicy(String);

impl FromStr for CopyPolicy {
    type Err = BadCopyPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(CopyPolicy::Off),
            "auto" => Ok(CopyPolicy::Auto),
            "always" => Ok(CopyPolicy::Always),
            other => Err(BadCopyPolicy(other.to_owned())),
        }
    }
}

/// Counters of a connection's copies, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct CopyStats {
    /// Copy datagrams handed to quinn.
    pub sent: AtomicU64,
    /// Frames in them.
    pub frames_sent: AtomicU64,
    /// Copies received and handed to a lane reader.
    pub received: AtomicU64,
    /// Frames a lane reader took from a copy before its stream brought them.
    pub frames_used: AtomicU64,
}

/// Whether a connection is losing packets, from quinn's counters.
#[derive(Debug)]
struct LossWatch {
    /// (when, packets sent, packets lost), oldest first, covering [`LOSS_WINDOW`].
    samples: VecDeque<(Instant, u64, u64)>,
    lossy: bool,
}

impl LossWatch {
    fn new() -> Self {
        Self {
            samples: VecDeque::new(),
            lossy: false,
        }
    }

    fn lossy(&mut self, conn: &quinn::Connection, now: Instant) -> bool {
        if self
            .samples
            .back()
            .is_some_and(|&(at, _, _)| now.duration_since(at) < LOSS_SAMPLE_EVERY)
        {
            return self.lossy;
        }
        let path = conn.stats().path;
        // Probes for a larger MTU are expected to be lost now and then: not a lossy path.
        let sent = path.sent_packets.saturating_sub(path.sent_plpmtud_probes);
        self.samples.push_back((now, sent, path.lost_packets));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(at, _, _)| now.duration_since(at) >= LOSS_WINDOW)
        {
            self.samples.pop_front();
        }
        if let (Some(&(_, sent0, lost0)), Some(&(_, sent1, lost1))) =
            (self.samples.front(), self.samples.back())
        {
            let (sent, lost) = (sent1.saturating_sub(sent0), lost1.saturating_sub(lost0));
            self.lossy = lost > 0 && lost * 1000 >= sent * LOSS_PERMILLE_MIN;
        }
        self.lossy
    }
}

/// The sending side of lane copies for one connection, driven by its writer task.
pub struct Copier {
    conn: quinn::Connection,
    policy: CopyPolicy,
    watch: LossWatch,
    /// Datagrams waiting for their send time, oldest first.
    pending: VecDeque<(Instant, Bytes)>,
    timer: Option<Deadline>,
    stats: Arc<CopyStats>,
}

impl fmt::Debug for Copier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Copier")
            .field("policy", &self.policy)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Copier {
    /// Copies for `conn` under `policy`. Give it only a peer that announced
    /// [`protocol::frames::CAP_LANE_COPIES`].
    pub fn new(conn: &quinn::Connection, policy: CopyPolicy) -> Self {
        Self {
            conn: conn.clone(),
            policy,
            watch: LossWatch::new(),
            pending: VecDeque::new(),
            timer: None,
            stats: Arc::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CopyStats> {
        &self.stats
    }

    /// Whether lane writes should be copied now.
    pub(crate) fn active(&mut self, now: Instant) -> bool {
        match self.policy {
            CopyPolicy::Off => false,
            CopyPolicy::Always => true,
            CopyPolicy::Auto => self.watch.lossy(&self.conn, now),
        }
    }

    /// Schedules a copy of `frames` (`count` frames, the first numbered `first`) written
    /// to `stream` just now.
    pub(crate) fn schedule(
        &mut self,
        stream: quinn::StreamId,
        first: u64,
        count: u64,
        frames: &[u8],
        now: Instant,
    ) {
        let mut datagram = BytesMut::with_capacity(frames.len() + 20);
        copies::encode_header(
            CopyHeader {
                stream: u64::from(stream),
                first,
            },
            &mut datagram,
        );
        datagram.extend_from_slice(frames);
        if self.pending.len() == COPIES_PENDING_MAX {
            self.pending.pop_front();
        }
        self.pending
            .push_back((now + COPY_DELAY, datagram.freeze()));
        self.stats.frames_sent.fetch_add(count, Ordering::Relaxed);
    }

    /// Sends the copies that are due; registers the task to be woken for the next one.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) {
        loop {
            let now = Instant::now();
            while let Some((due, _)) = self.pending.front() {
                if *due > now {
                    break;
                }
                if let Some((_, datagram)) = self.pending.pop_front() {
                    // A copy is only ever a shortcut: if it cannot be sent (the peer's
                    // limit shrank, the connection is closing), the stream still carries
                    // the frames.
                    if self.conn.send_datagram(datagram).is_ok() {
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let Some(&(due, _)) = self.pending.front() else {
                self.timer = None;
                return;
            };
            let timer = match &mut self.timer {
                Some(timer) if timer.at() == due => timer,
                slot => slot.insert(Deadline::new(due)),
            };
            if Pin::new(timer).poll(cx).is_pending() {
                return;
            }
        }
    }
}

/// A copy on its way to a lane reader: its first frame's number and the frames' bytes.
#[derive(Debug)]
struct Copy {
    first: u64,
    frames: Bytes,
}

/// Routes a connection's copy datagrams to the readers of their lanes. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct CopyRouter {
    inner: Arc<Mutex<Routes>>,
    stats: Arc<CopyStats>,
}

#[derive(Debug, Default)]
struct Routes {
    lanes: HashMap<u64, mpsc::Sender<Copy>>,
    /// Copies for streams no reader has registered yet, oldest first.
    orphans: VecDeque<(u64, Copy)>,
}

impl CopyRouter {
    /// Starts reading `conn`'s datagrams as lane copies; the task ends with the
    /// connection. Announce [`protocol::frames::CAP_LANE_COPIES`] to the peer only with a
    /// router running.
    pub fn spawn(conn: &quinn::Connection) -> Self {
        let router = Self::default();
        let task = router.clone();
        let conn = conn.clone();
        tokio::spawn(async move { task.run(&conn).await });
        router
    }

    /// Reads `conn`'s datagrams as lane copies until the connection ends: the task of
    /// [`CopyRouter::spawn`], for a caller that polls it within a task of its own (an
    /// edge keeps one task per client connection).
    pub async fn run(&self, conn: &quinn::Connection) {
        while let Ok(datagram) = conn.read_datagram().await {
            self.route(datagram);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<CopyStats> {
        &self.stats
    }

    fn route(&self, datagram: Bytes) {
        // Only the header is read here; the lane's reader decodes the frames, so a bad
        // frame closes the connection from the reader, as on the stream.
        let Ok((CopyHeader { stream, first }, header_len)) = copies::decode_header(&datagram)
        else {
            tracing::debug!("dropping a malformed lane copy");
            return;
        };
        let copy = Copy {
            first,
            frames: datagram.slice(header_len..),
        };
        let mut routes = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match routes.lanes.get(&stream) {
            Some(tx) => {
                // A reader that is behind does not need copies: its stream is ahead.
                if tx.try_send(copy).is_ok() {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                if routes.orphans.len() == ORPHANS_MAX {
                    routes.orphans.pop_front();
                }
                routes.orphans.push_back((stream, copy));
            }
        }
    }

    /// Registers the reader of `stream`; copies that arrived before it are handed over.
    fn register(&self, stream: u64) -> mpsc::Receiver<Copy> {
        let (tx, rx) = mpsc::channel(LANE_COPY_QUEUE);
        let mut routes = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let orphans = std::mem::take(&mut routes.orphans);
        for (id, copy) in orphans {
            if id == stream {
                if tx.try_send(copy).is_ok() {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                routes.orphans.push_back((id, copy));
            }
        }
        routes.lanes.insert(stream, tx);
        rx
    }

    fn unregister(&self, stream: u64) {
        let mut routes = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        routes.lanes.remove(&stream);
    }
}

/// A lane read as frames, merged with its copies: every frame once, in stream order, from
/// the stream or from a copy, whichever came first.
#[derive(Debug)]
pub struct LaneRecv<T> {
    stream: FramedRecv,
    stream_id: u64,
    /// The stream's kind byte was read and checked.
    kind_read: bool,
    kind: u8,
    /// `None` without copies (the peer was not offered them), or once the router is gone.
    copies: Option<(CopyRouter, mpsc::Receiver<Copy>)>,
    merge: LaneMerge<T>,
    frame_bytes_max: usize,
    /// The stream ended cleanly between frames.
    ended: bool,
}

impl<T> Drop for LaneRecv<T> {
    fn drop(&mut self) {
        if let Some((router, _)) = &self.copies {
            router.unregister(self.stream_id);
        }
    }
}

impl<T: DeserializeOwned + Validate> LaneRecv<T> {
    /// Reads `recv`, a lane whose first byte must be `kind`, with frames up to
    /// `frame_bytes_max`; with `router`, merged with the copies of this stream.
    pub fn new(
        recv: quinn::RecvStream,
        kind: u8,
        frame_bytes_max: usize,
        router: Option<&CopyRouter>,
    ) -> Self {
        let stream_id = u64::from(recv.id());
        let copies = router.map(|r| (r.clone(), r.register(stream_id)));
        Self {
            stream: FramedRecv::with_max(recv, frame_bytes_max),
            stream_id,
            kind_read: false,
            kind,
            copies,
            merge: LaneMerge::new(),
            frame_bytes_max,
            ended: false,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly. The stream's
    /// errors are as [`FramedRecv::next`]'s; a malformed copy is a [`StreamError::Decode`]
    /// too (the peer broke the protocol either way).
    pub async fn next(&mut self) -> Result<Option<T>, StreamError> {
        loop {
            if let Some(frame) = self.merge.poll_frame() {
                return Ok(Some(frame));
            }
            if self.ended {
                return Ok(None);
            }
            let Self {
                stream,
                kind_read,
                kind,
                copies,
                merge,
                ..
            } = self;
            let from_stream = async {
                if !*kind_read {
                    stream.expect_kind(*kind).await?;
                    *kind_read = true;
                }
                stream.next::<T>().await
            };
            let from_copy = async {
                match copies {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = from_stream => match frame? {
                    Some(frame) => merge.handle_stream_frame(frame),
                    None => self.ended = true,
                },
                copy = from_copy => match copy {
                    Some(copy) => self.take_copy(copy)?,
                    None => self.copies = None,
                },
            }
        }
    }

    fn take_copy(&mut self, copy: Copy) -> Result<(), StreamError> {
        let frames = copies::decode_frames::<T>(copy.first, &copy.frames, self.frame_bytes_max)?;
        let before = self.merge.stats().from_copies;
        self.merge.handle_copy(copy.first, frames);
        if let Some((router, _)) = &self.copies {
            let used = self.merge.stats().from_copies - before;
            router.stats.frames_used.fetch_add(used, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The underlying stream, e.g. to stop it.
    pub fn stream_mut(&mut self) -> &mut quinn::RecvStream {
        self.stream.stream_mut()
    }
}
