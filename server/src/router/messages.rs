//! Submits and acknowledgements: the heart of the delivery semantics.
//!
//! A submitted message gets the next id, is pushed at once to the recipient's live
//! sessions (one `Deliver` per edge) and joins the accumulating batch. The sender hears
//! `Accepted` when the first of two things happens: the batch holding it is committed, or
//! every known device of the recipient acknowledged it. In the second case, if the batch
//! has not been handed to the writer yet, the message is taken out of it: it never
//! touches the disk.

use protocol::frames::link::Submit;
use protocol::limits::DELIVER_SESSIONS_MAX;
use protocol::{
    ConversationId, CoreFrame, DeviceId, ErrorCode, IdRange, Message, MessageId, SessionId,
};

use super::sessions::{Delivery, SessionKey, UserEntry};
use super::{Channel, EdgeId, Now, Router};
use crate::stats::Counters;
use crate::store::AckOp;

/// Where a pending message is in the commit pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// In the accumulating batch: may still be dropped if every device acknowledges it.
    Accumulating,
    /// Handed to the writer: it will be on disk (acknowledgements become `AckOp`s).
    Committing,
}

/// A message not yet committed: the pending overlay replay reads after the store.
#[derive(Debug)]
pub(crate) struct PendingMessage {
    /// The message as delivered.
    pub(crate) message: Message,
    /// When it expires undelivered (ms since the Unix epoch).
    pub(crate) expires_at_ms: u64,
    /// Devices of the recipient that acknowledged it (sorted).
    pub(crate) acked_by: Vec<DeviceId>,
    /// Accumulating or committing.
    pub(crate) stage: Stage,
    /// The submitting session, for `Accepted`.
    pub(crate) sender: SessionKey,
    /// Whether `Accepted` was sent.
    pub(crate) accepted: bool,
}

impl PendingMessage {
    /// Whether every known device acknowledged it (at least one device must be known).
    fn acked_by_all(&self, user: &UserEntry) -> bool {
        !user.devices.is_empty()
            && user
                .devices
                .keys()
                .all(|d| self.acked_by.binary_search(d).is_ok())
    }
}

impl Router {
    /// A message from a session at an edge.
    pub(super) fn on_submit(&mut self, now: Now, edge: EdgeId, submit: Submit) {
        let sender = SessionKey {
            edge,
            session: submit.session,
        };
        if self.config.shard_map.shard_of(&submit.to) != self.config.shard {
            return self.reject(sender, submit, ErrorCode::Unavailable);
        }
        if self.pending.len() >= self.config.pending_max
            || self.pending_bytes + submit.text.len() > self.config.pending_bytes_max
        {
            tracing::warn!(pending = self.pending.len(), "pending limit reached");
            return self.reject(sender, submit, ErrorCode::Unavailable);
        }
        let inbox_max = self.config.inbox_max;
        let inbox_len = match self.user_entry(&submit.to, now) {
            Ok(entry) => entry.inbox_len(),
            Err(e) => {
                tracing::error!(error = %e, user = %submit.to, "loading recipient");
                return self.reject(sender, submit, e.code());
            }
        };
        if inbox_len >= inbox_max {
            return self.reject(sender, submit, ErrorCode::InboxFull);
        }
        let Some(id) = self.ids.assign() else {
            // The reservation is not on disk yet (the disk is slow or failing).
            return self.reject(sender, submit, ErrorCode::Unavailable);
        };
        let reservation = self.ids.reservation_wanted();
        self.pipeline.request_reservation(reservation);

        let message = Message {
            id,
            from: submit.from,
            from_name: submit.from_name,
            to: submit.to,
            key: submit.key,
            sent_at_ms: submit.sent_at_ms,
            text: submit.text,
        };
        self.push_live(&message);

        let Some(entry) = self.users.get_mut(&message.to) else {
            return; // Loaded above; unreachable.
        };
        entry.pending.insert(id);
        entry.accumulating_len += 1;
        self.pipeline.add_message(id);
        self.pending_bytes += message.text.len();
        self.pending.insert(
            id,
            PendingMessage {
                // The core's clock, not the edge's stamp: an edge with a skewed clock must
                // not shorten (or stretch) how long a message is kept.
                expires_at_ms: now.unix_ms.saturating_add(self.config.ttl_ms),
                message,
                acked_by: Vec::new(),
                stage: Stage::Accumulating,
                sender,
                accepted: false,
            },
        );
        Counters::add(&self.counters.submitted, 1);
    }

    /// Sends one `Deliver` per edge to the recipient's live sessions. Replaying sessions
    /// are skipped: they will read the message from the pending overlay or the store.
    fn push_live(&mut self, message: &Message) {
        let Some(entry) = self.users.get(&message.to) else {
            return;
        };
        let mut by_edge: Vec<(EdgeId, Vec<SessionId>)> = Vec::new();
        for key in &entry.sessions {
            let live = self
                .sessions
                .get(key)
                .is_some_and(|s| s.delivery == Delivery::Live);
            if !live {
                continue;
            }
            match by_edge
                .iter_mut()
                .find(|(e, list)| *e == key.edge && list.len() < DELIVER_SESSIONS_MAX)
            {
                Some((_, list)) => list.push(key.session),
                None => by_edge.push((key.edge, vec![key.session])),
            }
        }
        let conversation = ConversationId::direct(&message.from, &message.to);
        for (edge, sessions) in by_edge {
            let Some(lanes) = self.edges.get(&edge).map(|e| e.lanes) else {
                continue;
            };
            let frame = CoreFrame::Deliver {
                sessions,
                message: message.clone(),
            };
            self.send(edge, Channel::Lane(conversation.lane(lanes)), frame);
        }
    }

    /// Refuses a submit.
    fn reject(&mut self, sender: SessionKey, submit: Submit, code: ErrorCode) {
        Counters::add(&self.counters.rejected, 1);
        let frame = CoreFrame::Rejected {
            session: sender.session,
            key: submit.key,
            code,
        };
        self.send(sender.edge, Channel::Control, frame);
    }

    /// Tells the sender its message is safe, once.
    pub(super) fn accept(&mut self, id: MessageId) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        if pending.accepted {
            return;
        }
        pending.accepted = true;
        let sender = pending.sender;
        let frame = CoreFrame::Accepted {
            session: sender.session,
            key: pending.message.key,
            id,
        };
        Counters::add(&self.counters.accepted, 1);
        self.send(sender.edge, Channel::Control, frame);
    }

    /// A session acknowledges ids.
    pub(super) fn on_ack(
        &mut self,
        now: Now,
        edge: EdgeId,
        session: SessionId,
        ranges: &[IdRange],
    ) {
        let Some(s) = self.sessions.get(&SessionKey { edge, session }) else {
            tracing::debug!(
                edge = edge.0,
                session = session.0,
                "ack from an unknown session"
            );
            return;
        };
        let (user, device) = (s.user.clone(), s.device);
        self.replay_acked(SessionKey { edge, session }, ranges);
        let Ok(entry) = self.user_entry(&user, now) else {
            return; // Attached users are in memory; a reload failure only costs a resend.
        };
        let touched: Vec<MessageId> = ranges
            .iter()
            .flat_map(|r| entry.pending.range(r.first..=r.last).copied())
            .collect();
        let durable = (entry.durable_len > 0).then_some(entry.durable_max);

        for id in touched {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            if let Err(at) = pending.acked_by.binary_search(&device) {
                pending.acked_by.insert(at, device);
            }
            let Some(entry) = self.users.get(&user) else {
                continue;
            };
            if !pending.acked_by_all(entry) {
                continue;
            }
            let stage = pending.stage;
            self.accept(id);
            if stage == Stage::Accumulating {
                self.drop_unwritten(id);
            }
        }

        // Ids that may be on disk (or committing) need the store to record the ack. Ids
        // above `durable_max` are pending and accumulating: their acks travel inside the
        // appended record instead, so acking a message that never reached the disk costs
        // no write at all.
        if let Some(max) = durable {
            let clipped: Vec<IdRange> = ranges
                .iter()
                .filter(|r| r.first.0 <= max)
                .map(|r| IdRange {
                    first: r.first,
                    last: MessageId(r.last.0.min(max)),
                })
                .collect();
            if !clipped.is_empty() {
                let dropped = self.pipeline.add_ack(AckOp {
                    user,
                    device,
                    ranges: clipped,
                });
                if dropped > 0 {
                    tracing::debug!(dropped, "acknowledgements dropped: the disk is behind");
                    Counters::add(&self.counters.acks_dropped, dropped as u64);
                }
            }
        }
    }

    /// Removes a message from the pending overlay.
    pub(super) fn take_pending(&mut self, id: MessageId) -> Option<PendingMessage> {
        let pending = self.pending.remove(&id)?;
        self.pending_bytes = self
            .pending_bytes
            .saturating_sub(pending.message.text.len());
        Some(pending)
    }

    /// Takes a fully acknowledged message out of the accumulating batch: it is in the
    /// recipient's hands, so it never needs the disk.
    fn drop_unwritten(&mut self, id: MessageId) {
        let Some(pending) = self.take_pending(id) else {
            return;
        };
        self.pipeline.remove_message(id);
        if let Some(entry) = self.users.get_mut(&pending.message.to) {
            entry.pending.remove(&id);
            entry.accumulating_len = entry.accumulating_len.saturating_sub(1);
        }
        Counters::add(&self.counters.skipped_disk, 1);
    }
}
