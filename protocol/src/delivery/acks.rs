//! [`Acks`]: which delivered messages are held by the game, and which acknowledgements
//! wait to go out, coalesced into id ranges.

use std::collections::BTreeSet;

use crate::ids::{IdRange, MessageId};
use crate::limits::ACK_RANGES_MAX;

/// Most ids remembered as "shown but not yet acknowledged". With `auto_ack` these are
/// the messages still queued for the game, so the bound is only reached by a game that
/// acknowledges by hand and never does; then the oldest id is forgotten, which only means
/// a replayed copy of it is acknowledged automatically as a duplicate.
pub const HELD_IDS_MAX: usize = 64 * 1024;

/// Most acknowledgements waiting to be transmitted (they pile up only while
/// disconnected). Beyond it a new acknowledgement is dropped: the core keeps the message
/// and replays it on the next connect, where it is a duplicate and acknowledged again.
pub const PENDING_ACK_IDS_MAX: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// Messages handed to (or queued for) the game and not yet acknowledged. A replayed
    /// copy of one of these is *not* acknowledged on the duplicate's behalf: the game
    /// has not finished with it, and acknowledging would let the core delete it.
    held: BTreeSet<MessageId>,
    /// Acknowledgements to transmit, in the order the game gave them (nearly sorted:
    /// sorting them when a frame is built is cheaper than keeping a tree of them).
    pending: Vec<MessageId>,
}

impl Acks {
    /// A new message was queued for the game.
    pub(crate) fn hold(&mut self, id: MessageId) {
        self.held.insert(id);
        if self.held.len() > HELD_IDS_MAX {
            self.held.pop_first();
        }
    }

    /// Whether the game still holds `id` unacknowledged.
    pub(crate) fn is_held(&self, id: MessageId) -> bool {
        self.held.contains(&id)
    }

    /// Queues an acknowledgement of `id`.
    pub(crate) fn ack(&mut self, id: MessageId) {
        self.held.remove(&id);
        if self.pending.len() < PENDING_ACK_IDS_MAX {
            self.pending.push(id);
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the lowest pending ids that fit in one frame, as at most
    /// [`ACK_RANGES_MAX`] sorted ranges.
    pub(crate) fn take_ranges(&mut self) -> Vec<IdRange> {
        self.pending.sort_unstable();
        self.pending.dedup();
        let mut ranges: Vec<IdRange> = Vec::new();
        let mut taken = 0;
        for &id in &self.pending {
            let full = ranges.len() == ACK_RANGES_MAX;
            match ranges.last_mut() {
                Some(last) if last.last.0.checked_add(1) == Some(id.0) => last.last = id,
                _ if full => break,
                _ => ranges.push(IdRange::single(id)),
            }
            taken += 1;
        }
        self.pending.drain(..taken);
        ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_acks_leave_in_frames_of_at_most_the_range_limit() {
        // A frame with too many ranges would be refused by the decoder at the edge.
        let mut acks = Acks::default();
        // Every other id: each is its own range.
        for i in 0..(ACK_RANGES_MAX as u64 + 10) {
            acks.ack(MessageId(i * 2));
        }
        let first = acks.take_ranges();
        assert_eq!(first.len(), ACK_RANGES_MAX);
        let second = acks.take_ranges();
        assert_eq!(second.len(), 10);
        assert_eq!(second[0].first, MessageId(ACK_RANGES_MAX as u64 * 2));
        assert!(!acks.has_pending());
    }

    #[test]
    fn acknowledgements_given_out_of_order_and_twice_leave_as_sorted_merged_ranges() {
        // The game may acknowledge in any order, and a duplicate's automatic ack may
        // repeat one the game gave: the edge must get sorted, disjoint ranges, each id once.
        let mut acks = Acks::default();
        for id in [9, 3, 4, 12, 3, 10, 5, 11, 1] {
            acks.ack(MessageId(id));
        }
        let ranges = acks.take_ranges();
        let as_pairs: Vec<(u64, u64)> = ranges.iter().map(|r| (r.first.0, r.last.0)).collect();
        assert_eq!(as_pairs, vec![(1, 1), (3, 5), (9, 12)]);
        assert!(!acks.has_pending());
    }

    #[test]
    fn what_does_not_fit_in_a_frame_stays_for_the_next_one_in_order() {
        let mut acks = Acks::default();
        // Every other id from the top down: each its own range, given highest first.
        let count = ACK_RANGES_MAX as u64 + 3;
        for i in (0..count).rev() {
            acks.ack(MessageId(i * 2));
        }
        assert_eq!(acks.take_ranges().len(), ACK_RANGES_MAX);
        // An id below everything left, given now, goes in the next frame with the rest.
        acks.ack(MessageId(1));
        let next: Vec<u64> = acks.take_ranges().iter().map(|r| r.first.0).collect();
        let highest = (count - 1) * 2;
        assert_eq!(next, vec![1, highest - 4, highest - 2, highest]);
        assert!(!acks.has_pending());
    }

    #[test]
    fn the_highest_id_can_be_acknowledged() {
        let mut acks = Acks::default();
        acks.ack(MessageId(u64::MAX));
        assert_eq!(
            acks.take_ranges(),
            vec![IdRange::single(MessageId(u64::MAX))]
        );
        assert!(!acks.has_pending());
    }
}
