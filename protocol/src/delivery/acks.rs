//! [`Acks`]: which delivered messages are held by the game, and which acknowledgements
//! wait to go out, coalesced into id ranges.

use std::collections::BTreeSet;

use crate::ids::{IdRange, MessageId, ranges_from_ids};
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
    /// Acknowledgements to transmit.
    pending: BTreeSet<MessageId>,
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
            self.pending.insert(id);
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the lowest pending ids that fit in one frame, as at most
    /// [`ACK_RANGES_MAX`] sorted ranges.
    pub(crate) fn take_ranges(&mut self) -> Vec<IdRange> {
        let mut ranges = ranges_from_ids(self.pending.iter().copied());
        ranges.truncate(ACK_RANGES_MAX);
        match ranges.last().map(|r| r.last.0.checked_add(1)) {
            Some(Some(next)) => self.pending = self.pending.split_off(&MessageId(next)),
            // The last range ends at `u64::MAX` (or there are none): everything was taken.
            _ => self.pending.clear(),
        }
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
