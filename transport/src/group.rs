//! One writer task for all the send streams of a connection.
//!
//! Each stream keeps its own bounded queue ([`FrameSender`]), its own order and its own
//! flow control, but a single task drains them all. In one turn it takes whatever every
//! queue holds and hands it to quinn before quinn's connection driver runs, so frames
//! queued on different streams at about the same time — a delivery on one lane and an
//! `Accepted` on the control stream — leave in the same UDP datagram instead of one each.
//! This is still batching with no timer: a frame alone goes out at once.
//!
//! It also keeps an idle connection small: one task per connection, not one per stream,
//! and streams added with [`LateAdder::add_lazy`] (the lanes) are only opened when their
//! queue first gets a frame, so a stream that never carries anything costs neither end a
//! QUIC stream (nor the peer a reader). [`crate::LaneSenders`] adds a lane that way only
//! when it is first used, so an unused lane has no queue either.
//!
//! A stream whose peer is not reading (its flow-control window is full) only stops its own
//! queue: the task keeps writing the others and is woken when that stream has room again.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use protocol::codec;
use protocol::error::EncodeError;
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::copies::{COPY_FRAME_BYTES_MAX, Copier};
use crate::deadline::Deadline;
use crate::framed::{FINISH_WAIT, FrameSender, WriterItem, WriterStats};
use crate::queue;

/// The default hold-back on edge↔core links, in microseconds (see
/// [`WriterGroup::with_linger`]).
pub const LINK_LINGER_US_DEFAULT: u64 = 1000;
/// The most bytes a stream's pending buffer gathers before the task stops taking frames
/// from its queue (until quinn accepts some of it).
pub const BATCH_BYTES_MAX: usize = 64 * 1024;
/// The most frames taken from one queue at a time.
const BATCH_FRAMES_MAX: usize = 512;
/// Rounds over all streams in one poll before yielding, so a busy connection cannot keep
/// its worker thread from other tasks.
const ROUNDS_PER_POLL: usize = 16;

/// Streams of one connection being set up to share a writer task: add each stream with
/// [`WriterGroup::add`], then [`WriterGroup::spawn`] the task. Frames queued before the
/// spawn wait in their queues.
pub struct WriterGroup<T> {
    members: Vec<Member<T>>,
    room: Option<Arc<Notify>>,
    linger: Duration,
    /// Sends copies of small lane writes, if the peer reads them.
    copier: Option<Copier>,
    task: Arc<TaskWaker>,
    /// Members added once the task runs (see [`WriterGroup::late_adder`]).
    late: Arc<Late<T>>,
}

impl<T> std::fmt::Debug for WriterGroup<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterGroup")
            .field("streams", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// The future of a stream being opened.
type Opening =
    Pin<Box<dyn Future<Output = Result<quinn::SendStream, quinn::ConnectionError>> + Send>>;

/// A member's stream, which may not exist yet.
enum Stream {
    /// Open: written whenever the buffer holds bytes.
    Open(quinn::SendStream),
    /// Not opened: opened on `conn` once the buffer holds a frame (see
    /// [`LateAdder::add_lazy`]); its kind byte is put in the buffer before that frame.
    Unopened {
        conn: quinn::Connection,
        kind: Option<u8>,
        priority: i32,
    },
    /// Being opened (the peer's stream limit may hold it back); the buffer fills meanwhile.
    Opening { open: Opening, priority: i32 },
}

/// The task's waker, shared by the members' wakers.
#[derive(Default)]
struct TaskWaker(Mutex<Option<Waker>>);

impl TaskWaker {
    fn register(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// What a member's queue and stream wake: a flag saying "poll me", then the task. The task
/// then polls only the members that were woken, not every stream of the connection (a
/// client connection has nine, and most are idle).
struct MemberWake {
    woken: AtomicBool,
    task: Arc<TaskWaker>,
}

impl Wake for MemberWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Members added after the task started, waiting to be taken in by it.
struct Late<T> {
    members: Mutex<Vec<Member<T>>>,
    /// Set when `members` holds something.
    added: AtomicBool,
    /// Live [`LateAdder`]s: the task keeps running, even with no member, while any can
    /// still add one.
    adders: AtomicUsize,
    task: Arc<TaskWaker>,
}

impl<T> Late<T> {
    /// Takes the members added since the last call into `members`.
    fn take_into(&self, members: &mut Vec<Member<T>>) {
        if self.added.swap(false, Ordering::AcqRel) {
            let added =
                std::mem::take(&mut *self.members.lock().unwrap_or_else(|e| e.into_inner()));
            // Exact: a connection gains a member per lane it uses, a few at most, and
            // each spare slot would cost every connection a member's size.
            members.reserve_exact(added.len());
            members.extend(added);
        }
    }
}

/// Adds streams to a group whose task may already run: a stream added this way costs
/// nothing (no queue, no entry in the task) until it is added. [`crate::LaneSenders`]
/// uses it to set a lane up at its first use. The task keeps running while an adder
/// lives.
pub struct LateAdder<T> {
    late: Arc<Late<T>>,
}

impl<T> std::fmt::Debug for LateAdder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateAdder").finish_non_exhaustive()
    }
}

impl<T> LateAdder<T> {
    /// Adds a unidirectional stream of `conn` that is opened only when its queue (of
    /// `queue` frames, at least 1) first gets a frame: then it is given `priority`, and
    /// `kind`, if given, is written ahead of that frame. The peer sees the stream only
    /// from then on; one that never carries a frame is never opened, and finishing it
    /// (or dropping every sender) ends it at once. If the stream cannot be opened (the
    /// connection is gone) or a write fails, its queue closes. The group's task may
    /// already run: the stream joins it at once. If the task has already ended (it ends
    /// only when no adder is left, so only if it was dropped with the runtime) the queue
    /// never drains.
    pub fn add_lazy(
        &self,
        conn: &quinn::Connection,
        kind: Option<u8>,
        priority: i32,
        queue: usize,
    ) -> FrameSender<T> {
        let stream = Stream::Unopened {
            conn: conn.clone(),
            kind,
            priority,
        };
        let (member, sender) = Member::new(&self.late.task, stream, BytesMut::new(), queue);
        self.late
            .members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(member);
        self.late.added.store(true, Ordering::Release);
        self.late.task.wake();
        sender
    }
}

impl<T> Drop for LateAdder<T> {
    fn drop(&mut self) {
        // Counted down before the wake-up, so a task with no member left sees it and ends.
        self.late.adders.fetch_sub(1, Ordering::AcqRel);
        self.late.task.wake();
    }
}

/// One stream of the group.
struct Member<T> {
    /// Set when the queue or the stream woke this member (and at the start).
    wake: Arc<MemberWake>,
    /// `wake` as a [`Waker`], for polling the queue and the stream.
    waker: Waker,
    /// Woken since its stream was last written to (it may have room, or need opening).
    write_due: bool,
    stream: Stream,
    rx: queue::Receiver<WriterItem<T>>,
    /// Encoded bytes not yet accepted by quinn.
    buf: BytesMut,
    /// Frames encoded into `buf`, counted once `buf` is written.
    frames_in_buf: u64,
    /// No more frames will be taken: every sender is gone, or a finish was asked.
    done_reading: bool,
    /// Whoever asked for the finish, answered once the peer has read everything.
    finish: Option<oneshot::Sender<()>>,
    stats: Arc<WriterStats>,
    /// Frames encoded so far: the next frame's number on this stream (lane copies name
    /// frames by it).
    seq: u64,
    /// A lane whose writes may be copied (see [`crate::copies`]).
    copyable: bool,
    /// The frames to copy once they are written: consecutive, the first numbered
    /// `copy_first`, `copy_frames` of them.
    copy: BytesMut,
    copy_first: u64,
    copy_frames: u64,
}

/// What became of a member in one round.
enum Round {
    /// Nothing changed.
    Idle,
    /// Frames were taken or bytes written.
    Progress,
    /// Everything is written and nothing more will come: finish the stream.
    Done,
    /// A write failed (stream stopped, connection lost): drop it.
    Failed,
}

impl<T> Member<T> {
    /// A member writing `stream` from a new queue of `queue` frames (at least 1), with
    /// `buf` already pending, woken through `task`; and the queue's sending side.
    fn new(
        task: &Arc<TaskWaker>,
        stream: Stream,
        buf: BytesMut,
        queue: usize,
    ) -> (Self, FrameSender<T>) {
        // Lanes are the streams opened at their first frame; only they are copied.
        let copyable = matches!(stream, Stream::Unopened { .. });
        let (tx, rx) = queue::queue(queue.max(1));
        let stats = Arc::new(WriterStats::default());
        let wake = Arc::new(MemberWake {
            woken: AtomicBool::new(true),
            task: task.clone(),
        });
        let member = Member {
            waker: Waker::from(wake.clone()),
            wake,
            write_due: true,
            stream,
            rx,
            buf,
            frames_in_buf: 0,
            done_reading: false,
            finish: None,
            stats: stats.clone(),
            seq: 0,
            copyable,
            copy: BytesMut::new(),
            copy_first: 0,
            copy_frames: 0,
        };
        (member, FrameSender::new(tx, stats))
    }
}

impl<T: Serialize> Member<T> {
    /// Takes what the queue holds (while the pending buffer has room). Whether frames
    /// were taken.
    fn take(
        &mut self,
        cx: &mut Context<'_>,
        items: &mut Vec<WriterItem<T>>,
        copying: bool,
    ) -> bool {
        if self.done_reading || self.buf.len() >= BATCH_BYTES_MAX {
            return false;
        }
        match self.rx.poll_recv_many(cx, items, BATCH_FRAMES_MAX) {
            Poll::Ready(0) => {
                self.done_reading = true;
                true
            }
            Poll::Ready(_) => {
                self.encode(items, copying && self.copyable);
                true
            }
            Poll::Pending => false,
        }
    }

    /// Opens the stream if it is not open yet: whether it is open now (`Pending` while
    /// opening), or an error if it cannot be opened (the connection is gone).
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), quinn::ConnectionError>> {
        loop {
            match &mut self.stream {
                Stream::Open(_) => return Poll::Ready(Ok(())),
                Stream::Unopened {
                    conn,
                    kind: _,
                    priority,
                } => {
                    let conn = conn.clone();
                    self.stream = Stream::Opening {
                        open: Box::pin(async move { conn.open_uni().await }),
                        priority: *priority,
                    };
                }
                Stream::Opening { open, priority } => {
                    let send = std::task::ready!(open.as_mut().poll(cx))?;
                    // Fails only if the stream is already closed; writing then reports it.
                    let _ = send.set_priority(*priority);
                    self.stream = Stream::Open(send);
                }
            }
        }
    }

    /// Writes what quinn accepts of the pending buffer, opening the stream first if this
    /// is its first frame.
    fn write(&mut self, cx: &mut Context<'_>) -> Round {
        if !self.buf.is_empty() {
            match self.poll_open(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "stream could not be opened");
                    return Round::Failed;
                }
                // Waiting for the connection (the task is registered): the buffer keeps
                // gathering up to its limit.
                Poll::Pending => return Round::Idle,
            }
        }
        let Stream::Open(send) = &mut self.stream else {
            // Never opened and nothing to write.
            return if self.done_reading {
                Round::Done
            } else {
                Round::Idle
            };
        };
        let mut progress = false;
        while !self.buf.is_empty() {
            match Pin::new(&mut *send).poll_write(cx, &self.buf) {
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    self.buf.advance(n);
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "stream writer stopped");
                    return Round::Failed;
                }
                Poll::Pending => break,
            }
        }
        if self.buf.is_empty() && self.frames_in_buf > 0 {
            self.stats
                .frames
                .fetch_add(self.frames_in_buf, Ordering::Relaxed);
            self.frames_in_buf = 0;
        }
        if self.buf.is_empty() && self.done_reading {
            Round::Done
        } else if progress {
            Round::Progress
        } else {
            Round::Idle
        }
    }

    fn encode(&mut self, items: &mut Vec<WriterItem<T>>, copying: bool) {
        if !copying {
            self.drop_copy();
        }
        for item in items.drain(..) {
            match item {
                // Frames after a finish are dropped, as documented.
                WriterItem::Frame(_) | WriterItem::Encoded(_) if self.done_reading => {}
                WriterItem::Frame(frame) => {
                    self.push_frame(copying, |buf| codec::encode(&*frame, buf));
                }
                WriterItem::Encoded(frame) => self.push_frame(copying, |buf| {
                    buf.extend_from_slice(frame.as_bytes());
                    Ok(())
                }),
                WriterItem::Finish(done) => {
                    self.done_reading = true;
                    self.finish = self.finish.take().or(Some(done));
                }
            }
        }
    }

    /// Appends one frame to the pending buffer with `write` (behind the stream's kind
    /// byte if it is the stream's first), numbers it, and adds it to the copy.
    fn push_frame(
        &mut self,
        copying: bool,
        write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) {
        let start = self.buf.len();
        // The first frame of a stream not opened yet: its kind byte goes first.
        if let Stream::Unopened {
            kind: Some(kind), ..
        } = self.stream
            && start == 0
        {
            self.buf.extend_from_slice(&[kind]);
        }
        let frame_start = self.buf.len();
        match write(&mut self.buf) {
            Ok(()) => {
                self.frames_in_buf += 1;
                if copying {
                    self.copy_frame(frame_start);
                }
                self.seq += 1;
            }
            // Frames are checked where they enter, so this is a bug; drop the one frame
            // rather than the stream.
            Err(e) => {
                self.buf.truncate(start);
                tracing::error!(error = %e, "dropping a frame that cannot be encoded")
            }
        }
    }

    /// Adds the frame just encoded at `buf[start..]` to the copy. A copy holds consecutive
    /// frames up to [`COPY_FRAME_BYTES_MAX`]: when this one does not fit, the copy starts
    /// again from it (a frame too large for any copy is not copied).
    fn copy_frame(&mut self, start: usize) {
        let len = self.buf.len() - start;
        if self.copy.len() + len > COPY_FRAME_BYTES_MAX
            || self.copy_frames as usize == protocol::copies::COPY_FRAMES_MAX
        {
            self.drop_copy();
        }
        if len > COPY_FRAME_BYTES_MAX {
            return;
        }
        if self.copy_frames == 0 {
            self.copy_first = self.seq;
        }
        self.copy.extend_from_slice(&self.buf[start..]);
        self.copy_frames += 1;
    }

    fn drop_copy(&mut self) {
        self.copy.clear();
        self.copy_frames = 0;
    }

    /// Once every frame of the copy is in quinn's hands, hands the copy to `copier`.
    fn schedule_copy(&mut self, copier: &mut Copier, now: Instant) {
        if self.copy_frames == 0 || !self.buf.is_empty() {
            return;
        }
        if let Stream::Open(send) = &self.stream {
            copier.schedule(
                send.id(),
                self.copy_first,
                self.copy_frames,
                &self.copy,
                now,
            );
        }
        self.drop_copy();
    }

    /// Ends the stream cleanly (it may already be reset by the peer); a requested finish
    /// is answered once the peer has read it to the end, or at once if the stream was
    /// never opened (nothing was sent, so there is nothing to wait for).
    fn finish(self) {
        let Member {
            stream, rx, finish, ..
        } = self;
        // Senders see the queue closed from now on.
        drop(rx);
        let Stream::Open(mut send) = stream else {
            if let Some(done) = finish {
                let _ = done.send(());
            }
            return;
        };
        let _ = send.finish();
        if let Some(done) = finish {
            // `stopped` resolves once the peer has read the stream to its end (or stopped
            // it, or the connection is gone): only then is it safe to close the
            // connection. Waiting must not hold up the other streams, so it is a task.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(FINISH_WAIT, send.stopped()).await;
                let _ = done.send(());
            });
        }
    }
}

impl<T: Serialize + Send + 'static> WriterGroup<T> {
    /// An empty group. If `room` is given it is signalled every time the task takes frames
    /// off any queue of the group (see [`crate::LaneSenders::room`]).
    pub fn new(room: Option<Arc<Notify>>) -> Self {
        let task = Arc::<TaskWaker>::default();
        Self {
            late: Arc::new(Late {
                members: Mutex::new(Vec::new()),
                added: AtomicBool::new(false),
                adders: AtomicUsize::new(0),
                task: task.clone(),
            }),
            task,
            members: Vec::new(),
            room,
            linger: Duration::ZERO,
            copier: None,
        }
    }

    /// Lets the task send copies of small lane writes in QUIC datagrams (see
    /// [`crate::copies`]), as `copier`'s policy says. Only streams opened at their first
    /// frame (lanes: [`LateAdder::add_lazy`]) are copied. Give
    /// it only a peer that announced [`protocol::frames::CAP_LANE_COPIES`].
    pub fn with_copies(mut self, copier: Copier) -> Self {
        self.copier = Some(copier);
        self
    }

    /// An adder of streams to this group that works before and after
    /// [`WriterGroup::spawn`]. The task keeps running while any adder lives, even once
    /// every stream added so far has ended.
    pub fn late_adder(&self) -> LateAdder<T> {
        self.late.adders.fetch_add(1, Ordering::AcqRel);
        LateAdder {
            late: self.late.clone(),
        }
    }

    /// Lets the task hold frames back for up to `linger` when it wrote less than
    /// `linger` ago, so a busy connection sends at most one flush per `linger` and packs
    /// everything queued meanwhile into full datagrams. A frame after a quiet spell still
    /// goes out at once. For links that carry many conversations (edge↔core); a player's
    /// connection gains nothing from it. Zero (the default) never holds back.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The notification signalled when frames leave a queue, if the group has one.
    pub fn room(&self) -> Option<&Arc<Notify>> {
        self.room.as_ref()
    }

    /// Adds `send` with a queue of `queue` frames (at least 1). If `kind` is given it is
    /// written first, at once, so the peer learns of the stream immediately. The stream is
    /// finished when every [`FrameSender`] is dropped; if a write fails, its queue closes.
    pub fn add(
        &mut self,
        send: quinn::SendStream,
        kind: Option<u8>,
        queue: usize,
    ) -> FrameSender<T> {
        // Allocated on first use beyond the kind byte: most lanes of an idle connection
        // never carry a frame. Reserving 64 KiB per writer cost about 72 KiB of resident
        // memory per idle client connection at the edge (`quichat-conns`, heaptrack).
        let mut buf = BytesMut::new();
        if let Some(kind) = kind {
            buf.extend_from_slice(&[kind]);
        }
        self.push(Stream::Open(send), buf, queue)
    }

    fn push(&mut self, stream: Stream, buf: BytesMut, queue: usize) -> FrameSender<T> {
        let (member, sender) = Member::new(&self.task, stream, buf, queue);
        // Exact, not doubling: most groups (a client's control stream) stay at one member
        // until a lane is used, and a spare slot costs every idle connection a member.
        self.members.reserve_exact(1);
        self.members.push(member);
        sender
    }

    /// Starts the writer task. It ends when every stream of the group has ended and no
    /// [`LateAdder`] is left.
    pub fn spawn(mut self) {
        // Streams added through an adder before the spawn are members like the others.
        let late = self.late.clone();
        late.take_into(&mut self.members);
        if self.members.is_empty() && late.adders.load(Ordering::Acquire) == 0 {
            return;
        }
        tokio::spawn(self.run());
    }

    async fn run(self) {
        let WriterGroup {
            mut members,
            room,
            linger,
            mut copier,
            task,
            late,
        } = self;
        let mut items = Vec::new();
        // When the task last handed bytes to quinn, and the end of the current hold.
        let mut last_flush: Option<Instant> = None;
        let mut hold: Option<Deadline> = None;
        poll_fn(|cx| {
            // Members wake the task through their own wakers (see `MemberWake`).
            task.register(cx.waker());
            if let Some(copier) = copier.as_mut() {
                copier.poll_send(cx);
            }
            for _ in 0..ROUNDS_PER_POLL {
                // Lanes set up since the last round (each starts woken).
                late.take_into(&mut members);
                let mut took = false;
                let now = copier.as_ref().map(|_| Instant::now());
                let copying = match (copier.as_mut(), now) {
                    (Some(copier), Some(now)) => copier.active(now),
                    _ => false,
                };
                for member in members.iter_mut() {
                    if !member.wake.woken.swap(false, Ordering::AcqRel) {
                        continue;
                    }
                    let waker = member.waker.clone();
                    let mut mcx = Context::from_waker(&waker);
                    if member.take(&mut mcx, &mut items, copying) {
                        took = true;
                        // More may be queued: poll again until the queue says `Pending`
                        // (and so has registered the waker).
                        member.wake.woken.store(true, Ordering::Release);
                    }
                    // Its stream may have room again too: the write below covers that.
                    member.write_due = true;
                }
                if took && let Some(room) = &room {
                    // `notify_one` keeps a permit if nobody waits yet, so the wake-up is
                    // not lost.
                    room.notify_one();
                }
                let pending = members.iter().any(|m| !m.buf.is_empty());
                if pending && hold.is_none() && !linger.is_zero() {
                    let full = members.iter().any(|m| m.buf.len() >= BATCH_BYTES_MAX);
                    if let Some(last) = last_flush
                        && !full
                        && last.elapsed() < linger
                    {
                        hold = Some(Deadline::new(last + linger));
                    }
                }
                if let Some(sleep) = hold.as_mut() {
                    let full = members.iter().any(|m| m.buf.len() >= BATCH_BYTES_MAX);
                    if !full && Pin::new(sleep).poll(cx).is_pending() {
                        // Held: keep gathering; the timer or a queue wakes the task.
                        if took {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    hold = None;
                }
                let mut progress = took;
                if pending {
                    last_flush = Some(Instant::now());
                }
                let mut i = 0;
                while i < members.len() {
                    let member = &mut members[i];
                    if !(member.write_due || !member.buf.is_empty() || member.done_reading) {
                        i += 1;
                        continue;
                    }
                    member.write_due = false;
                    let waker = member.waker.clone();
                    let mut mcx = Context::from_waker(&waker);
                    let round = member.write(&mut mcx);
                    if let (Some(copier), Some(now)) = (copier.as_mut(), now) {
                        member.schedule_copy(copier, now);
                    }
                    match round {
                        Round::Idle => i += 1,
                        Round::Progress => {
                            progress = true;
                            // The buffer shrank: its queue, which is not read while the
                            // buffer is full, may be read again.
                            member.wake.woken.store(true, Ordering::Release);
                            i += 1;
                        }
                        Round::Done => {
                            progress = true;
                            members.swap_remove(i).finish();
                        }
                        Round::Failed => {
                            progress = true;
                            // Dropping it closes its queue: its senders see `Closed`.
                            drop(members.swap_remove(i));
                        }
                    }
                }
                if members.is_empty() {
                    if late.adders.load(Ordering::Acquire) == 0 {
                        // The last adder may have added a member before it went.
                        late.take_into(&mut members);
                        if members.is_empty() {
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    // An adder may still add a stream; it wakes the task when it does,
                    // and when it goes.
                    return Poll::Pending;
                }
                if let Some(copier) = copier.as_mut() {
                    copier.poll_send(cx);
                }
                if !progress {
                    // Every queue and every blocked stream has registered this task.
                    return Poll::Pending;
                }
            }
            // Still busy: let other tasks (quinn's driver among them) run first.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the group's task still runs: it holds one reference to `late` while it
    /// does, the test another.
    async fn task_runs(late: &Arc<Late<u64>>) -> bool {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        Arc::strong_count(late) > 1
    }

    // A connection's lanes are set up after its writer task starts, so the task must not
    // end while they still can be, even with no stream left; and it must end once they
    // cannot, or every closed connection would leave a task behind.
    #[tokio::test]
    async fn the_task_lives_as_long_as_an_adder_and_no_longer() {
        let group = WriterGroup::<u64>::new(None);
        let late = group.late.clone();
        let adder = group.late_adder();
        group.spawn();
        assert!(task_runs(&late).await, "an adder is left: the task waits");
        drop(adder);
        assert!(
            !task_runs(&late).await,
            "no stream and no adder: the task ended"
        );
    }

    // A group with nothing to write and nothing that could add a stream starts no task.
    #[tokio::test]
    async fn an_empty_group_starts_no_task() {
        let group = WriterGroup::<u64>::new(None);
        let late = group.late.clone();
        group.spawn();
        assert!(!task_runs(&late).await);
    }
}
