//! Message id allocation: ids come from memory, but only from a block already reserved on
//! disk, so no id is ever handed out twice, even across a crash.

use protocol::MessageId;

/// Hands out increasing message ids from durably reserved blocks.
///
/// Invariant: every id returned by [`IdAllocator::assign`] is `<= durable_through`, and
/// `durable_through` was read from or committed to the store. After a crash the next
/// router starts above the store's reservation, so it is above every id this one gave out.
#[derive(Debug)]
pub(crate) struct IdAllocator {
    /// The next id to hand out.
    next: u64,
    /// Ids up to and including this are reserved on disk.
    durable_through: u64,
    /// The highest reservation requested so far (committed or still in a batch).
    requested_through: u64,
    /// How many ids one reservation adds.
    block: u64,
}

impl IdAllocator {
    /// Resumes above `reserved` (the store's `reserved_ids_through`), reserving `block`
    /// ids at a time.
    pub(crate) fn new(reserved: u64, block: u64) -> Self {
        Self {
            next: reserved.saturating_add(1),
            durable_through: reserved,
            requested_through: reserved,
            block: block.max(2),
        }
    }

    /// The next id, or `None` while the reservation covering it is not yet on disk.
    pub(crate) fn assign(&mut self) -> Option<MessageId> {
        // `u64::MAX` is never handed out, so `next` cannot overflow.
        if !self.has_durable_id() {
            return None;
        }
        let id = self.next;
        self.next += 1;
        Some(MessageId(id))
    }

    /// If fewer than half a block of ids is requested ahead of the next id, a new
    /// reservation to put in the next batch (and records it as requested).
    pub(crate) fn reservation_wanted(&mut self) -> Option<u64> {
        let last = self.last_assigned();
        if self.requested_through.saturating_sub(last) >= self.block / 2 {
            return None;
        }
        self.requested_through = last.saturating_add(self.block).max(self.requested_through);
        Some(self.requested_through)
    }

    /// Whether [`IdAllocator::assign`] would return an id now.
    pub(crate) fn has_durable_id(&self) -> bool {
        self.next <= self.durable_through && self.next != u64::MAX
    }

    /// A batch reserving ids through `through` was committed.
    pub(crate) fn committed(&mut self, through: u64) {
        self.durable_through = self.durable_through.max(through);
    }

    /// The highest id handed out so far (or the starting reservation if none).
    pub(crate) fn last_assigned(&self) -> u64 {
        self.next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_id_is_handed_out_before_its_block_is_durable() {
        // The crash-safety of ids rests on this: an id is only used once the store
        // promises that a restart resumes above it.
        let mut ids = IdAllocator::new(100, 10);
        assert_eq!(ids.assign(), None);
        assert_eq!(ids.reservation_wanted(), Some(110));
        assert_eq!(ids.reservation_wanted(), None, "already requested");
        assert_eq!(ids.assign(), None, "requested is not durable");
        ids.committed(110);
        let got: Vec<u64> = std::iter::from_fn(|| ids.assign()).map(|id| id.0).collect();
        assert_eq!(got, (101..=110).collect::<Vec<_>>());
    }

    #[test]
    fn a_top_up_is_requested_when_half_the_block_is_used() {
        // Topping up early keeps ids flowing while the reservation is being committed.
        let mut ids = IdAllocator::new(0, 10);
        assert_eq!(ids.reservation_wanted(), Some(10));
        ids.committed(10);
        for expected in 1..=5 {
            assert_eq!(ids.assign(), Some(MessageId(expected)));
            assert_eq!(ids.reservation_wanted(), None, "{expected} ids used");
        }
        assert_eq!(ids.assign(), Some(MessageId(6)));
        assert_eq!(ids.reservation_wanted(), Some(16));
    }
}
