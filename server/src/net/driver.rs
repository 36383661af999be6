//! The router task: the short loop that drives the sans-IO [`Router`].
//!
//! It waits for the next event — an edge input, a finished commit, room on an edge's
//! lanes while replay waits for it, the router's timeout, shutdown — hands it to the
//! router, then does what the router asks: queue frames on edge streams without waiting
//! (a full lane is reported back, never awaited), close edges, pump replay while lanes
//! have room, and give the next batch to the writer. While replay is waiting it yields
//! between turns, so the frames already queued leave before more pages are read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::{CoreFrame, EdgeFrame, ErrorCode};
use tokio::sync::{Notify, mpsc, oneshot};
use transport::{FrameSender, LaneSenders, TrySendError};

use super::writer::Writer;
use crate::router::{Channel, EdgeId, Now, Output, Router};

/// While a clean shutdown flushes, how long it waits before trying a failed commit again.
const FLUSH_RETRY_WAIT: Duration = Duration::from_millis(50);
/// Most commits a clean shutdown waits for while flushing (a failing disk must not hang
/// shutdown forever).
const FLUSH_COMMITS_MAX: usize = 20;

/// The streams towards one edge.
pub(crate) struct EdgeLink {
    pub(crate) control: FrameSender<CoreFrame>,
    pub(crate) lanes: LaneSenders<CoreFrame>,
    pub(crate) conn: quinn::Connection,
}

/// What edge connections tell the router task.
pub(crate) enum Input {
    /// Handshake done: the edge's streams.
    Connected { edge: EdgeId, link: EdgeLink },
    /// A frame from the edge, already checked to be on the right stream.
    Frame { edge: EdgeId, frame: EdgeFrame },
    /// The connection ended.
    Gone { edge: EdgeId },
}

/// The wall and monotonic clocks, read once.
pub(crate) fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now {
        instant: Instant::now(),
        unix_ms,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A refused frame, put back into the output that asked for it.
fn handed_back<T>(e: TrySendError<T>, output: impl FnOnce(T) -> Output) -> TrySendError<Output> {
    match e {
        TrySendError::Full(frame) => TrySendError::Full(output(frame)),
        TrySendError::Closed(frame) => TrySendError::Closed(output(frame)),
    }
}

/// The router task's state.
pub(crate) struct Driver {
    pub(crate) router: Router,
    pub(crate) writer: Writer,
    pub(crate) links: HashMap<EdgeId, EdgeLink>,
    /// Signalled when an edge link's writer takes frames off its queues: replay that
    /// waited for lane room can go on.
    pub(crate) room: Arc<Notify>,
}

impl Driver {
    /// Runs until `shutdown` fires (or every input sender is gone), then flushes.
    pub(crate) async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut shutdown: oneshot::Receiver<()>,
    ) -> Writer {
        // The first expiry pass, for what aged while the core was down; from then on the
        // router says when it wants the next call (`poll_timeout`): an idle core sleeps.
        self.router.handle_timeout(now());
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                done = self.writer.done.recv() => match done {
                    Some((batch, result)) => self.router.handle_commit(now(), batch, result),
                    None => {
                        tracing::error!("the writer thread stopped; the core stops serving");
                        break;
                    }
                },
                input = inputs.recv() => match input {
                    Some(input) => self.handle_input(input),
                    None => break,
                },
                // Lanes drained while sessions wait to replay: `step` pumps them.
                _ = self.room.notified(), if self.router.replay_waiting() => {}
                // A batch's delay or back-off ran out (`step` hands it over), a failed
                // replay read is due again (`step` pumps), or the expiry pass is due.
                _ = sleep_until(self.router.poll_timeout()) => self.router.handle_timeout(now()),
            }
            if !self.step() {
                break;
            }
            if self.router.replay_waiting() {
                // Let the link writers, quinn and (in `quichat dev`) the edge run before
                // the next replay pages: on one runtime thread the router would otherwise
                // read a device's whole replay window before its first message left the
                // process.
                tokio::task::yield_now().await;
            }
        }
        self.flush().await;
        for (_, link) in self.links.drain() {
            transport::close(&link.conn, ErrorCode::ServerShutdown, "core shutting down");
        }
        self.writer
    }

    fn handle_input(&mut self, input: Input) {
        let now = now();
        match input {
            Input::Connected { edge, link } => {
                self.router
                    .handle_edge_connected(now, edge, link.lanes.count());
                self.links.insert(edge, link);
            }
            Input::Frame { edge, frame } => self.router.handle_edge_frame(now, edge, frame),
            Input::Gone { edge } => {
                self.links.remove(&edge);
                self.router.handle_edge_gone(now, edge);
            }
        }
    }

    /// Does everything the router asks after an event. Returns `false` if the writer is
    /// gone.
    fn step(&mut self) -> bool {
        let now = now();
        self.send_outputs(now);
        let links = &self.links;
        self.router.pump_replay(now, &mut |edge| {
            links.get(&edge).map_or(0, |link| link.lanes.capacity_min())
        });
        self.send_outputs(now);
        self.start_commit(now)
    }

    /// Hands the next batch to the writer, if the router has one. `false` if the writer
    /// is gone.
    fn start_commit(&mut self, now: Now) -> bool {
        let Some(batch) = self.router.poll_batch(now) else {
            return true;
        };
        // Capacity 1 and at most one batch in flight: this never waits.
        if self.writer.batches.send(batch).is_err() {
            tracing::error!("the writer thread stopped; the core stops serving");
            return false;
        }
        true
    }

    /// Queues the router's frames without waiting; a full queue goes back to the router.
    fn send_outputs(&mut self, now: Now) {
        while let Some(output) = self.router.poll_output() {
            let (edge, queued) = match output {
                Output::Send {
                    edge,
                    channel,
                    frame,
                } => {
                    let Some(link) = self.links.get(&edge) else {
                        continue;
                    };
                    let sender = match channel {
                        Channel::Control => &link.control,
                        Channel::Lane(lane) => link.lanes.lane(lane),
                    };
                    let queued = sender.try_send(frame).map_err(|e| {
                        handed_back(e, |frame| Output::Send {
                            edge,
                            channel,
                            frame,
                        })
                    });
                    (edge, queued)
                }
                Output::SendEncoded {
                    edge,
                    lane,
                    session,
                    id,
                    frame,
                } => {
                    let Some(link) = self.links.get(&edge) else {
                        continue;
                    };
                    let queued = link.lanes.lane(lane).try_send_encoded(frame).map_err(|e| {
                        handed_back(e, |frame| Output::SendEncoded {
                            edge,
                            lane,
                            session,
                            id,
                            frame,
                        })
                    });
                    (edge, queued)
                }
                Output::Close { edge, code, reason } => {
                    if let Some(link) = self.links.remove(&edge) {
                        transport::close(&link.conn, code, reason);
                    }
                    continue;
                }
            };
            match queued {
                Ok(()) => {}
                Err(TrySendError::Full(output)) => self.router.handle_send_full(now, output),
                Err(TrySendError::Closed(_)) => {
                    // A stream writer stopped while the connection may live on: what went
                    // to it is lost, so end the connection; the edge's sessions re-attach
                    // and replay.
                    if let Some(link) = self.links.remove(&edge) {
                        transport::close(&link.conn, ErrorCode::Internal, "stream failed");
                    }
                    self.router.handle_edge_gone(now, edge);
                }
            }
        }
    }

    /// Commits what has accumulated, so a clean shutdown loses nothing pending.
    async fn flush(&mut self) {
        for _ in 0..FLUSH_COMMITS_MAX {
            let now = now();
            self.send_outputs(now);
            if self.router.is_flushed() {
                return;
            }
            if !self.router.is_committing() {
                if let Some(batch) = self.router.poll_batch_flush(now) {
                    if self.writer.batches.send(batch).is_err() {
                        return;
                    }
                }
            }
            if self.router.is_committing() {
                match self.writer.done.recv().await {
                    Some((batch, result)) => self.router.handle_commit(now, batch, result),
                    None => return,
                }
            } else {
                // A failed commit waits for its retry time.
                tokio::time::sleep(FLUSH_RETRY_WAIT).await;
            }
        }
        tracing::error!("shutdown gave up flushing: the store keeps failing");
    }
}
