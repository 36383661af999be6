//! Catching a session up: replay on attach, and again after it fell behind.
//!
//! A replaying session has a cursor, the last id sent to it. Each step reads one page of
//! the store above the cursor; when the store has no more, it sends the user's pending
//! messages above the cursor that this device has not acknowledged, then `Synced`, and
//! marks the session live — all in the same step, so no message submitted in between can
//! be missed. This is sound because every pending id is above every committed id.
//!
//! A session may have at most `replay_window` replayed messages unacknowledged; beyond
//! that it waits, out of the queue, until its acks make room for a whole page (flow
//! control: a device catching up on a large backlog gets it as fast as it acknowledges,
//! a page per store read).
//!
//! Pages are only sent while the edge has room (the driver tells how much), keeping
//! headroom for live traffic. A live push that finds its lane full is not queued: the
//! session goes back to replaying from that message, which is safe (stored or pending),
//! and later frames already queued for it are withdrawn so its order holds.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;

use protocol::{ConversationId, CoreFrame, EncodedMessage, Message, MessageId};

use super::sessions::{Delivery, SessionKey};
use super::{Channel, EdgeId, Now, Output, Router};
use crate::store::StoreError;

/// Store pages a pump may read per page it may send: pages whose every message was
/// acknowledged since (the acknowledgements not on disk yet) are read but send nothing.
const SKIPPED_READS_PER_PAGE: usize = 8;

/// What a replaying session needs after one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// It is live (or gone): nothing more to replay.
    Done,
    /// More to replay: queue it again.
    More,
    /// Its replay window is full: wait for its acknowledgements.
    WindowFull,
}

impl Router {
    /// Serves replaying sessions round-robin while their edges have room.
    pub(super) fn pump(&mut self, now: Now, room: &mut dyn FnMut(EdgeId) -> usize) {
        // This pump retries every queued session it reaches; one it does not reach waits
        // behind the frames it sent (their writer wakes the driver) or behind the rule at
        // the end. So a retry time is owed again only if a read fails again.
        self.replay_retry_at = None;
        let page = self.config.replay_page.max(1);
        let needed = page + self.config.replay_headroom;
        let mut left: HashMap<EdgeId, usize> = HashMap::new();
        let mut blocked: HashSet<EdgeId> = HashSet::new();
        let mut deferred = Vec::new();
        let mut pages = 0;
        // Pages that held only messages acknowledged since (not yet on disk) send nothing
        // and do not count against the budget, or a replay could wait for a wake-up that
        // no written frame will bring; they are bounded apart.
        let mut reads = 0;
        let reads_max = self
            .config
            .replay_pages_per_pump
            .saturating_mul(SKIPPED_READS_PER_PAGE);
        while pages < self.config.replay_pages_per_pump && reads < reads_max {
            let Some(key) = self.replay_queue.pop_front() else {
                break;
            };
            let replaying = self
                .sessions
                .get(&key)
                .is_some_and(|s| matches!(s.delivery, Delivery::Replaying { .. }));
            if !replaying {
                if let Some(s) = self.sessions.get_mut(&key) {
                    s.queued = false;
                }
                continue;
            }
            if blocked.contains(&key.edge) {
                deferred.push(key);
                continue;
            }
            let room_left = *left.entry(key.edge).or_insert_with(|| room(key.edge));
            if room_left < needed {
                blocked.insert(key.edge);
                deferred.push(key);
                continue;
            }
            reads += 1;
            match self.replay_step(now, key) {
                Ok((sent, step)) => {
                    if sent > 0 {
                        pages += 1;
                    }
                    left.insert(key.edge, room_left.saturating_sub(sent));
                    match step {
                        // Live, or waiting for acks (an ack re-queues it): out of the queue.
                        Step::Done | Step::WindowFull => {
                            if let Some(s) = self.sessions.get_mut(&key) {
                                s.queued = false;
                            }
                        }
                        Step::More => self.replay_queue.push_back(key),
                    }
                }
                Err(e) => {
                    // The store could not be read; try again on a later pump, at the
                    // latest after `commit_retry` (`poll_timeout`).
                    tracing::error!(error = %e, "replay read failed");
                    self.replay_retry_at = Some(now.instant + self.config.commit_retry);
                    deferred.push(key);
                }
            }
        }
        self.replay_queue.extend(deferred);
        // Every read this pump allowed found only messages acknowledged since: no frame
        // left, so no lane's writer will wake the driver for the rest. Ask it to come back
        // at once (`poll_timeout`). Not after a failed read, which waits its retry time.
        if pages == 0
            && reads >= reads_max
            && self.replay_retry_at.is_none()
            && !self.replay_queue.is_empty()
        {
            self.replay_retry_at = Some(now.instant);
        }
    }

    /// Sends one page to a replaying session. Returns the frames sent and what the
    /// session needs next.
    fn replay_step(&mut self, now: Now, key: SessionKey) -> Result<(usize, Step), StoreError> {
        let Some(session) = self.sessions.get(&key) else {
            return Ok((0, Step::Done));
        };
        let Delivery::Replaying { mut after } = session.delivery else {
            return Ok((0, Step::Done));
        };
        let (user, device) = (session.user.clone(), session.device);
        let window = self.config.replay_window.max(1);
        let page = self.config.replay_page.max(1).min(window);
        // Wait until a whole page fits. Acknowledgements come back a few messages at a
        // time; reading as few as they free costs a store read per handful of messages
        // (TCP's silly window syndrome): over a 50 ms round trip a drain of 10,000 made
        // 312 reads, most of 1 to 5 messages, instead of 42 (docs/ARCHITECTURE.md).
        if window.saturating_sub(session.replay_unacked.len()) < page {
            return Ok((0, Step::WindowFull));
        }
        let stored = self
            .store
            .replay_encoded(&user, device, after, page, now.unix_ms)?;
        // The device's latest acknowledgements may not be on disk yet (acknowledgements
        // wait for `ack_commit_delay`): the store would replay what it already has.
        let acked = self.pipeline.uncommitted_acks(&user, device);
        let mut sent = 0;
        let full_page = stored.len() >= page;
        for message in stored {
            let id = message.id();
            after = Some(id);
            if acked.contains(id) {
                continue;
            }
            self.replay_deliver_stored(key, message);
            sent += 1;
        }
        if full_page {
            self.set_cursor(key, after);
            return Ok((sent, Step::More));
        }

        // The store is exhausted: the pending overlay, above the cursor.
        let budget = page - sent;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut overlay: Vec<Message> = Vec::new();
        let mut more = false;
        if let Some(entry) = self.users.get(&user) {
            for id in entry.pending.range((lower, Bound::Unbounded)) {
                let Some(pending) = self.pending.get(id) else {
                    continue;
                };
                if pending.acked_by.binary_search(&device).is_ok()
                    || pending.expires_at_ms <= now.unix_ms
                {
                    continue;
                }
                if overlay.len() == budget {
                    more = true;
                    break;
                }
                overlay.push(pending.message.clone());
            }
        }
        for message in overlay {
            after = Some(message.id);
            self.replay_deliver(key, message);
            sent += 1;
        }
        if more {
            self.set_cursor(key, after);
            return Ok((sent, Step::More));
        }

        let Some(session) = self.sessions.get_mut(&key) else {
            return Ok((sent, Step::Done));
        };
        session.delivery = Delivery::Live;
        // Live pushes are not windowed (a device that cannot keep up lags back into
        // replay instead), so the replay bookkeeping can go.
        session.replay_unacked.clear();
        if !session.synced {
            session.synced = true;
            self.send(
                key.edge,
                Channel::Control,
                CoreFrame::Synced {
                    session: key.session,
                },
            );
        }
        Ok((sent, Step::Done))
    }

    /// A session acknowledged `ranges`: they leave its replay window, and a session that
    /// was waiting for room goes back in the replay queue.
    pub(super) fn replay_acked(&mut self, key: SessionKey, ranges: &[protocol::IdRange]) {
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        if session.replay_unacked.is_empty() {
            return;
        }
        for range in ranges {
            let acked: Vec<MessageId> = session
                .replay_unacked
                .range(range.first..=range.last)
                .copied()
                .collect();
            for id in acked {
                session.replay_unacked.remove(&id);
            }
        }
        if matches!(session.delivery, Delivery::Replaying { .. }) && !session.queued {
            session.queued = true;
            self.replay_queue.push_back(key);
        }
    }

    /// Sends one replayed message to one session, on its conversation's lane.
    fn replay_deliver(&mut self, key: SessionKey, message: Message) {
        let Some(lanes) = self.edges.get(&key.edge).map(|e| e.lanes) else {
            return;
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            session.replay_unacked.insert(message.id);
        }
        let lane = ConversationId::direct(&message.from, &message.to).lane(lanes);
        let frame = CoreFrame::Deliver {
            sessions: vec![key.session],
            message,
        };
        self.send(key.edge, Channel::Lane(lane), frame);
    }

    /// Sends one stored message to one session, on its conversation's lane, in the
    /// encoding the store kept: no decoding, and no encoding by the link writer.
    fn replay_deliver_stored(&mut self, key: SessionKey, message: EncodedMessage) {
        let Some(lanes) = self.edges.get(&key.edge).map(|e| e.lanes) else {
            return;
        };
        let frame = match message.deliver_frame(key.session) {
            Ok(frame) => frame,
            Err(e) => {
                // Not for a message the core accepted (its size was checked then); the
                // device gets it on a later replay if the cause goes away.
                tracing::error!(error = %e, id = message.id().0, "stored message not sent");
                return;
            }
        };
        if let Some(session) = self.sessions.get_mut(&key) {
            session.replay_unacked.insert(message.id());
        }
        if self.edges.contains_key(&key.edge) {
            self.outbox.push_back(Output::SendEncoded {
                edge: key.edge,
                lane: message.conversation().lane(lanes),
                session: key.session,
                id: message.id(),
                frame,
            });
        }
    }

    fn set_cursor(&mut self, key: SessionKey, after: Option<MessageId>) {
        if let Some(session) = self.sessions.get_mut(&key) {
            session.delivery = Delivery::Replaying { after };
        }
    }

    /// A delivery of `missed` to `key` could not be queued: the session resumes from it.
    pub(super) fn lag(&mut self, key: SessionKey, missed: MessageId) {
        // Every earlier delivery to this session was queued (deliveries leave in id order
        // and later ones are withdrawn below), so resuming just before `missed` skips
        // nothing and repeats nothing.
        let resume = missed.0.checked_sub(1).filter(|id| *id > 0).map(MessageId);
        let dropped_synced = self.purge_session_outputs(key);
        let Some(session) = self.sessions.get_mut(&key) else {
            return;
        };
        session.delivery = match session.delivery {
            Delivery::Live => Delivery::Replaying { after: resume },
            Delivery::Replaying { after } => Delivery::Replaying {
                after: after.min(resume),
            },
        };
        if dropped_synced {
            // `Synced` promises everything stored at attach was sent; not yet true.
            session.synced = false;
        }
        if !session.queued {
            session.queued = true;
            self.replay_queue.push_back(key);
        }
        tracing::debug!(
            edge = key.edge.0,
            session = key.session.0,
            "session fell behind"
        );
    }
}
