//! A session's pump: the one writer of the session's submits to the core (a future of the
//! session's task).
//!
//! Lane readers put each accepted `Send` into the session's [`crate::inflight`] map and
//! wake the pump. The pump keeps, per core link, a cursor (generation, next sequence
//! number) and sends everything from the cursor on, in arrival order. When a link
//! reconnects its generation changes, the cursor goes back to the start, and everything
//! still awaiting an answer is sent again, still in order, before anything newer. Having
//! a single writer per session is what keeps a conversation's order across a reconnect.

use std::sync::Arc;

use protocol::ConversationId;
use protocol::frames::link::EdgeFrame;
use transport::{StreamError, TrySendError};

use crate::limits::PUMP_BATCH_MAX;
use crate::session::Session;
use crate::upstream::CoreLink;

/// Where a pump is on one link.
#[derive(Clone, Copy, Debug, Default)]
struct Cursor {
    /// The link generation the cursor belongs to (0: none yet).
    generation: u64,
    /// The first sequence number not yet sent on that generation.
    next_seq: u64,
}

/// Runs until dropped (when the session ends).
pub(crate) async fn run(session: &Session, links: &[Arc<CoreLink>]) -> std::convert::Infallible {
    let mut cursors = vec![Cursor::default(); links.len()];
    loop {
        for (index, (link, cursor)) in links.iter().zip(cursors.iter_mut()).enumerate() {
            // A link that is down gets everything when it comes back.
            let Some(upstream) = link.upstream() else {
                continue;
            };
            if cursor.generation != upstream.generation {
                *cursor = Cursor {
                    generation: upstream.generation,
                    next_seq: 0,
                };
            }
            'link: loop {
                let batch = session
                    .inflight
                    .pending(index, cursor.next_seq, PUMP_BATCH_MAX);
                if batch.is_empty() {
                    break;
                }
                for (seq, submit) in batch {
                    let conversation = ConversationId::direct(&submit.from, &submit.to);
                    let lane = upstream
                        .lanes
                        .lane(conversation.lane(upstream.lanes.count()));
                    // Queued at once while the lane has room; only a full lane is waited
                    // on, in a box: inline, the wait's state would be part of this
                    // future, which every idle session keeps (about 0.3 KiB).
                    let sent = match lane.try_send(EdgeFrame::Submit(submit)) {
                        Ok(()) => Ok(()),
                        Err(TrySendError::Full(frame)) => Box::pin(lane.send(frame)).await,
                        Err(TrySendError::Closed(_)) => Err(StreamError::Closed),
                    };
                    if sent.is_err() {
                        // The link dropped; its next generation re-sends from the start.
                        break 'link;
                    }
                    cursor.next_seq = seq + 1;
                }
            }
        }
        session.wake.notified().await;
    }
}
