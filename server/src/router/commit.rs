//! Group commit, double-buffered.
//!
//! At most one batch is committing (owned by the writer thread) and one is accumulating
//! (owned here). When the writer reports a commit, the accumulating batch, if not empty,
//! is handed over at once. Under load batches grow while the disk is busy; at low load a
//! message is committed on its own immediately. A message sits in the accumulating batch
//! only by id: its record is built at hand-over, so acknowledgements that arrive before
//! then travel inside the record, and a message acknowledged by every device is simply
//! removed.
//!
//! **Commit delay.** A batch is handed over only once its oldest message has waited
//! `commit_delay` (or it holds `commit_batch_max` messages, or an id reservation, which
//! gates new ids). Online recipients acknowledge within a round trip, and a message every
//! device acknowledged while it waits here is dropped from the batch: it never costs an
//! insert, a delete or a share of an fsync. The sender is not kept waiting by this for an
//! online recipient (`Accepted` comes with the acknowledgement); for an offline one
//! `Accepted` comes `commit_delay` later. Zero turns it off.
//!
//! **Acknowledgement delay.** Everything else in a batch (acknowledgements, device
//! times, an expiry pass) waits `ack_commit_delay`, or until the batch holds
//! `commit_batch_max` acknowledged ranges, or goes along with a message's commit. The
//! two clocks are apart: a message's delay counts from the message, never from an
//! older acknowledgement waiting in the batch, or at a steady trickle of traffic (where
//! acknowledgements always wait) every message would be written at once and its
//! acknowledgement, a round trip later, would cost a second write. None of these is a
//! promise to a sender: a crash that loses them only means some messages are delivered
//! again, and the client drops what it has already shown. Waiting lets a catching-up
//! device's acknowledgements go in a few large commits, each a cursor pass over a long
//! run of its log, instead of one small commit per disk turn (`cargo bench --bench store
//! -- "drain acks"`: 10,000 ids in commits of 2,048 cost half of what they cost in
//! commits of 256). Consecutive ranges of one device are merged as they arrive.
//!
//! A failed commit is merged back into the accumulating batch (it comes first, so the
//! order of appends and acks is kept) and retried after a back-off.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use protocol::{DeviceId, IdRange, MessageId, UserId};

use super::messages::Stage;
use super::{Now, Router};
use crate::stats::Counters;
use crate::store::{AckOp, CommitOutcome, StoreError, StoredMessage, WriteBatch};

/// Most acknowledged ranges the accumulating batch holds. It is handed over at
/// `commit_batch_max` ranges, but not while another batch is committing: with the disk
/// stalled, acks in scattered ranges would otherwise grow it without bound. Beyond this
/// they are dropped (counted in `acks_dropped`): a dropped ack costs a redelivery, never
/// a message. A device acknowledging in order adds no ranges (they merge).
pub const ACK_RANGES_WAITING_MAX: usize = 65_536;

/// Acknowledged ids as sorted, disjoint ranges: a lookup is a binary search, however many
/// ranges a device sent.
#[derive(Debug, Default)]
pub(crate) struct AckedIds(Vec<IdRange>);

impl AckedIds {
    /// Whether `id` is in one of the ranges.
    pub(crate) fn contains(&self, id: MessageId) -> bool {
        let after = self.0.partition_point(|r| r.first <= id);
        after
            .checked_sub(1)
            .and_then(|i| self.0.get(i))
            .is_some_and(|r| r.last >= id)
    }
}

/// The accumulating batch, and whether another is committing.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    /// Sequence number the accumulating batch will carry (starts at 1).
    seq: u64,
    /// The last committed batch's sequence number (0: none yet).
    committed_seq: u64,
    /// The committing batch's sequence number.
    committing: Option<u64>,
    /// Message ids in the accumulating batch.
    ids: BTreeSet<MessageId>,
    /// Devices seen, latest time per device.
    devices_seen: HashMap<(UserId, DeviceId), u64>,
    /// Acknowledgements, in arrival order; consecutive ranges of one device merged.
    acks: Vec<AckOp>,
    /// Ranges in `acks`.
    ack_ranges: usize,
    /// The acknowledgements of the committing batch (a copy: the writer owns the batch).
    /// With `acks`, what the store does not know yet; replay skips them.
    committing_acks: Vec<AckOp>,
    /// The id reservation to record.
    reserve: Option<u64>,
    /// The expiry pass to run.
    expire_before_ms: Option<u64>,
    /// Consecutive failed commits.
    failures: u32,
    /// No hand-over before this (after a failure).
    retry_at: Option<Instant>,
    /// When the accumulating batch got its first entry (seen at the first
    /// [`Router::next_batch`] after it).
    oldest: Option<Instant>,
    /// When it got its first message, the same way: the commit delay counts from here.
    oldest_message: Option<Instant>,
}

impl Pipeline {
    /// The sequence number of the batch now accumulating.
    pub(crate) fn accumulating_seq(&self) -> u64 {
        self.seq.max(1)
    }

    /// The sequence number of the last committed batch.
    pub(crate) fn committed_seq(&self) -> u64 {
        self.committed_seq
    }

    pub(crate) fn is_committing(&self) -> bool {
        self.committing.is_some()
    }

    pub(crate) fn accumulating_is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.devices_seen.is_empty()
            && self.acks.is_empty()
            && self.reserve.is_none()
            && self.expire_before_ms.is_none()
    }

    pub(crate) fn request_reservation(&mut self, through: Option<u64>) {
        if let Some(through) = through {
            self.reserve = Some(self.reserve.map_or(through, |r| r.max(through)));
        }
    }

    pub(crate) fn device_seen(&mut self, user: &UserId, device: DeviceId, ms: u64) {
        let seen = self
            .devices_seen
            .entry((user.clone(), device))
            .or_insert(ms);
        *seen = (*seen).max(ms);
    }

    pub(crate) fn add_message(&mut self, id: MessageId) {
        self.ids.insert(id);
    }

    pub(crate) fn remove_message(&mut self, id: MessageId) {
        self.ids.remove(&id);
    }

    /// Adds a device's acknowledgements, extending the previous entry when the same
    /// device goes on where it stopped (a catching-up device acknowledges in order).
    ///
    /// Returns how many ranges were dropped because the batch holds [`ACK_RANGES_WAITING_MAX`].
    pub(crate) fn add_ack(&mut self, ack: AckOp) -> usize {
        let AckOp {
            user,
            device,
            ranges,
        } = ack;
        let continues = self
            .acks
            .last()
            .is_some_and(|last| last.user == user && last.device == device);
        if !continues {
            self.acks.push(AckOp {
                user,
                device,
                ranges: Vec::with_capacity(ranges.len()),
            });
        }
        let mut dropped = 0;
        let Some(last) = self.acks.last_mut() else {
            return dropped;
        };
        for range in ranges {
            match last.ranges.last_mut() {
                Some(prev) if prev.last.0.checked_add(1) == Some(range.first.0) => {
                    prev.last = range.last;
                }
                _ if self.ack_ranges >= ACK_RANGES_WAITING_MAX => dropped += 1,
                _ => {
                    last.ranges.push(range);
                    self.ack_ranges += 1;
                }
            }
        }
        if last.ranges.is_empty() {
            self.acks.pop();
        }
        dropped
    }

    /// The ids `device` of `user` acknowledged that are not committed yet (accumulating
    /// or committing): replay must not send them again, since the store still has them.
    pub(crate) fn uncommitted_acks(&self, user: &UserId, device: DeviceId) -> AckedIds {
        let mut ranges: Vec<IdRange> = self
            .committing_acks
            .iter()
            .chain(&self.acks)
            .filter(|ack| ack.user == *user && ack.device == device)
            .flat_map(|ack| ack.ranges.iter().copied())
            .filter(|r| r.first <= r.last)
            .collect();
        ranges.sort_unstable_by_key(|r| r.first);
        let mut merged: Vec<IdRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(prev) if range.first.0 <= prev.last.0.saturating_add(1) => {
                    prev.last = prev.last.max(range.last);
                }
                _ => merged.push(range),
            }
        }
        AckedIds(merged)
    }

    pub(crate) fn expire_before(&mut self, ms: u64) {
        self.expire_before_ms = Some(self.expire_before_ms.map_or(ms, |e| e.max(ms)));
    }
}

impl Router {
    /// When the accumulating batch is due by its delays alone: once its oldest message
    /// has waited the commit delay, and at the latest once its oldest entry of any kind
    /// has waited the longer of the two delays (see the module docs).
    fn delay_due_at(&self) -> Option<Instant> {
        let p = &self.pipeline;
        let longest = self.config.commit_delay.max(self.config.ack_commit_delay);
        let any = p.oldest.map(|oldest| oldest + longest);
        let message = p
            .oldest_message
            .map(|oldest| oldest + self.config.commit_delay);
        match (any, message) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }

    /// When the accumulating batch becomes due, if it waits only for its delay.
    pub(super) fn batch_due_at(&self) -> Option<Instant> {
        let p = &self.pipeline;
        if p.committing.is_some() || p.accumulating_is_empty() {
            return None;
        }
        match (self.delay_due_at(), p.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands the accumulating batch to the writer, if it may.
    ///
    /// `flush` ignores the commit delay (a clean shutdown).
    pub(super) fn next_batch(&mut self, now: Now, flush: bool) -> Option<WriteBatch> {
        let p = &mut self.pipeline;
        if p.accumulating_is_empty() {
            // Everything in it was acknowledged away: the delay restarts with the next.
            p.oldest = None;
            p.oldest_message = None;
            return None;
        }
        p.oldest.get_or_insert(now.instant);
        if p.ids.is_empty() {
            // Its messages were acknowledged away: their delay restarts with the next.
            p.oldest_message = None;
        } else {
            p.oldest_message.get_or_insert(now.instant);
        }
        if p.committing.is_some() {
            return None;
        }
        if p.retry_at.is_some_and(|at| now.instant < at) {
            return None;
        }
        let full = p.ids.len() >= self.config.commit_batch_max
            || p.ack_ranges >= self.config.commit_batch_max;
        let due = flush
            || full
            || p.reserve.is_some()
            || self.delay_due_at().is_some_and(|at| now.instant >= at);
        if !due {
            return None;
        }
        let p = &mut self.pipeline;
        p.retry_at = None;
        p.oldest = None;
        p.oldest_message = None;
        p.ack_ranges = 0;
        let mut batch = WriteBatch {
            reserve_ids_through: p.reserve.take(),
            devices_seen: p
                .devices_seen
                .drain()
                .map(|((u, d), ms)| (u, d, ms))
                .collect(),
            appends: Vec::with_capacity(p.ids.len()),
            acks: std::mem::take(&mut p.acks),
            expire_before_ms: p.expire_before_ms.take(),
        };
        // Deterministic order, so tests and replays of a run see the same batches.
        batch.devices_seen.sort_unstable();
        for id in std::mem::take(&mut p.ids) {
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            pending.stage = Stage::Committing;
            batch.appends.push(StoredMessage {
                message: pending.message.clone(),
                expires_at_ms: pending.expires_at_ms,
                acked_by: pending.acked_by.clone(),
            });
            if let Some(entry) = self.users.get_mut(&pending.message.to) {
                entry.accumulating_len = entry.accumulating_len.saturating_sub(1);
                entry.durable_len += 1;
                entry.durable_max = entry.durable_max.max(id.0);
            }
        }
        self.pipeline.committing_acks.clone_from(&batch.acks);
        let seq = self.pipeline.accumulating_seq();
        self.pipeline.committing = Some(seq);
        self.pipeline.seq = seq + 1;
        Some(batch)
    }

    /// The writer reports on the committing batch.
    pub(super) fn on_commit(
        &mut self,
        now: Now,
        batch: WriteBatch,
        result: Result<CommitOutcome, StoreError>,
    ) {
        let Some(seq) = self.pipeline.committing.take() else {
            tracing::error!("commit reported while none was running");
            return;
        };
        // Committed, or merged back into the accumulating batch below.
        self.pipeline.committing_acks.clear();
        match result {
            Ok(outcome) => self.committed(seq, batch, outcome),
            Err(e) => {
                Counters::add(&self.counters.commit_failures, 1);
                let p = &mut self.pipeline;
                p.failures = p.failures.saturating_add(1);
                let backoff =
                    self.config.commit_retry * (1u32 << p.failures.min(6).saturating_sub(1));
                p.retry_at = Some(now.instant + backoff);
                tracing::error!(error = %e, failures = p.failures, "commit failed; will retry");
                self.merge_back(batch);
            }
        }
    }

    /// A batch is durable: accept its messages and account for deletions.
    fn committed(&mut self, seq: u64, batch: WriteBatch, outcome: CommitOutcome) {
        self.pipeline.committed_seq = seq;
        self.pipeline.failures = 0;
        Counters::add(&self.counters.commits, 1);
        if let Some(through) = batch.reserve_ids_through {
            self.ids.committed(through);
        }
        let mut bytes = 0u64;
        for stored in &batch.appends {
            let id = stored.message.id;
            bytes += stored.message.text.len() as u64;
            self.accept(id);
            self.take_pending(id);
            if let Some(entry) = self.users.get_mut(&stored.message.to) {
                entry.pending.remove(&id);
            }
        }
        Counters::add(&self.counters.committed, batch.appends.len() as u64);
        Counters::add(&self.counters.committed_bytes, bytes);
        for (user, _) in outcome.deleted {
            if let Some(entry) = self.users.get_mut(&user) {
                entry.durable_len = entry.durable_len.saturating_sub(1);
            }
        }
    }

    /// Puts a failed batch back in front of the accumulating one.
    fn merge_back(&mut self, batch: WriteBatch) {
        let p = &mut self.pipeline;
        p.request_reservation(batch.reserve_ids_through);
        for (user, device, ms) in &batch.devices_seen {
            p.device_seen(user, *device, *ms);
        }
        let newer = std::mem::replace(&mut p.acks, batch.acks);
        p.acks.extend(newer);
        p.ack_ranges = p.acks.iter().map(|a| a.ranges.len()).sum();
        if let Some(ms) = batch.expire_before_ms {
            p.expire_before(ms);
        }
        for stored in batch.appends {
            let id = stored.message.id;
            let Some(pending) = self.pending.get_mut(&id) else {
                continue;
            };
            pending.stage = Stage::Accumulating;
            self.pipeline.add_message(id);
            if let Some(entry) = self.users.get_mut(&stored.message.to) {
                entry.durable_len = entry.durable_len.saturating_sub(1);
                entry.accumulating_len += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(user: &str, device: u64, ranges: &[(u64, u64)]) -> AckOp {
        AckOp {
            user: UserId::new(user).unwrap_or_else(|e| panic!("{e}")),
            device: DeviceId(device),
            ranges: ranges
                .iter()
                .map(|&(first, last)| IdRange {
                    first: MessageId(first),
                    last: MessageId(last),
                })
                .collect(),
        }
    }

    #[test]
    fn uncommitted_acks_answer_for_one_device_whatever_order_the_ranges_came_in() {
        let mut p = Pipeline {
            committing_acks: vec![ack("bob", 1, &[(40, 45)])],
            ..Pipeline::default()
        };
        p.add_ack(ack("bob", 1, &[(10, 12), (30, 30)]));
        p.add_ack(ack("bob", 2, &[(50, 60)]));
        p.add_ack(ack("ann", 1, &[(20, 25)]));
        p.add_ack(ack("bob", 1, &[(11, 14), (3, 3), (9, 2)]));
        let acked = p.uncommitted_acks(
            &UserId::new("bob").unwrap_or_else(|e| panic!("{e}")),
            DeviceId(1),
        );
        let ids: Vec<u64> = (0..70)
            .filter(|&id| acked.contains(MessageId(id)))
            .collect();
        assert_eq!(ids, vec![3, 10, 11, 12, 13, 14, 30, 40, 41, 42, 43, 44, 45]);
    }

    #[test]
    fn a_device_acknowledging_in_order_adds_no_ranges() {
        let mut p = Pipeline::default();
        for first in (1..=1000).step_by(10) {
            assert_eq!(p.add_ack(ack("bob", 1, &[(first, first + 9)])), 0);
        }
        assert_eq!(p.acks.len(), 1);
        assert_eq!(p.ack_ranges, 1);
        assert_eq!(
            p.acks[0].ranges,
            vec![IdRange {
                first: MessageId(1),
                last: MessageId(1000)
            }]
        );
    }
}
